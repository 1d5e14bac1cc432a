"""Venue fingerprints on real sockets (issue 16): three nodes on 127.0.0.1, one started with
another tick size (its cluster.toml differs), is refused by the other two, which say why in one
log line, drop what it sends (counted) and keep trading between themselves; with equal venues
nothing is refused. In-process nodes (one trio run), each test bounded by ``fail_after``."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import trio

import gossipbook as gb
from gossipbook.core.book import BUY, GTC
from gossipbook.core.instrument import Instrument

GBX = Instrument("GBX")
LINE = "refusing n3: venue differs: GBX tick_size 0.01 here, 0.5 at n3"


def dropped(node: gb.Node) -> int:
    return node.runner.status()["counters"]["dropped"].get("venue_mismatch", 0)


async def trade_between_n1_and_n2(cfg: gb.ClusterConfig) -> None:
    async with gb.Client(cfg, account="alice", node="n1") as alice, gb.Client(cfg, account="bob", node="n2") as bob:
        await alice.create_order("GBX", "sell", "1", "100")
        with trio.fail_after(5):
            while not (await bob.fetch_order_book("GBX")).asks:  # n2 has n1's order
                await trio.sleep(0.02)
        o = await bob.create_order("GBX", "buy", "1", "100")
        assert len(o.fills) == 1


async def test_a_node_with_another_tick_is_refused_by_name(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gossipbook")
    cfg = gb.local_cluster([GBX], nodes=3)
    odd = dataclasses.replace(cfg, instruments=[Instrument("GBX", tick_size="0.5")])  # n3's own config
    async with gb.Node(cfg, "n1") as n1, gb.Node(cfg, "n2") as n2, gb.Node(odd, "n3") as n3:
        await n1.ready(timeout=10)
        await n2.ready(timeout=10)
        with trio.fail_after(10):  # both refuse n3, with the difference named
            while not all(n.runner.status()["venue"]["refused"].get("n3") == LINE.split(": ", 2)[2] for n in (n1, n2)):
                await trio.sleep(0.02)
        # n3 is never ready (it refuses its peers too), so no client order reaches it; stamp one in
        # its core and push it, as it would once it took an order
        core3 = n3.runner.core
        assert not core3.ready and set(core3.status()["venue"]["refused"]) == {"n1", "n2"}
        before = dropped(n1) + dropped(n2)
        op, _ = core3.replica.submit_new("GBX", BUY, 200, 1, GTC, n3.runner.clock(), account="alice")
        core3.gossip.local(op)
        await trade_between_n1_and_n2(cfg)  # the matching pair is unaffected
        with trio.fail_after(5):
            while dropped(n1) + dropped(n2) < before + 2:
                await trio.sleep(0.05)
        await trio.sleep(0.3)  # several gossip rounds: n3's op must still be nowhere but at n3
        for n in (n1, n2):
            st = n.runner.status()
            assert "n3" not in st["version_vector"] and not n.runner.core.replica.holds("n3", 1)
            assert st["ops"] == 2 and st["counters"]["dropped"]["venue_mismatch"] > 0
        assert n1.digest == n2.digest and core3.replica.holds("n3", 1)
    for nid in ("n1", "n2"):
        mine = [r.getMessage() for r in caplog.records if r.name == f"gossipbook.{nid}" and "venue" in r.getMessage()]
        assert mine == [LINE], mine  # one line, once
    n3_lines = [r.getMessage() for r in caplog.records if r.name == "gossipbook.n3" and "refusing" in r.getMessage()]
    assert sorted(n3_lines) == [f"refusing {p}: venue differs: GBX tick_size 0.5 here, 0.01 at {p}" for p in ("n1", "n2")]


async def test_equal_venues_refuse_nobody(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gossipbook")
    cfg = gb.local_cluster([GBX], nodes=3)
    async with gb.Node(cfg, "n1") as n1, gb.Node(cfg, "n2") as n2, gb.Node(cfg, "n3") as n3:
        for n in (n1, n2, n3):
            await n.ready(timeout=10)
        await trade_between_n1_and_n2(cfg)
        with trio.fail_after(5):
            while len({n.digest for n in (n1, n2, n3)}) > 1 or n3.runner.status()["ops"] < 2:
                await trio.sleep(0.02)
        for n in (n1, n2, n3):
            st = n.runner.status()
            assert st["venue"] == {"fingerprint": gb.Venue.of([GBX]).fingerprint(), "refused": {}}
            assert "venue_mismatch" not in st["counters"]["dropped"]
    assert not [r for r in caplog.records if "venue" in r.getMessage()]
