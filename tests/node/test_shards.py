"""Strong-mode shards with real node processes on 127.0.0.1 (issue 21): 4 nodes, 4 shards, one
instrument each. Leaders spread (shard s prefers node s+1); a SIGKILLed node that leads a shard is
replaced and every shard commits again within 2 s; the node restarts from its data dirs (one per
shard), takes its shard back, and every node's books are equal after. A data dir written with
another shard map is refused with one line."""

from __future__ import annotations

import json
import time
from typing import Any

import trio

from gossipbook.config import _shard_lines, load, render_client, write_private
from gossipbook.core.ops import NEW
from gossipbook.core.wire import ClientSubmit
from gossipbook.node.client import Client, Unreachable

from .harness import Cluster, cli


def sharded(make_cluster: Any, n: int = 4, k: int = 4) -> Cluster:
    c = make_cluster(n, data=True)
    text = c.config.read_text().replace('mode = "eventual"', 'mode = "strong"')
    write_private(c.config, text + "\n" + "\n".join(_shard_lines(k, "strong")) + "\n")
    cfg = load(c.config)
    for a in ("alice", "bob"):  # the client files list the new instruments too
        write_private(c.config.parent / "clients" / f"{a}.toml", render_client(cfg, a))
    return c


def status(c: Cluster) -> list[dict[str, Any]]:
    """Every node's status, asked from this process (``gossipbook status --json``'s payload, without
    a CLI start per poll)."""
    from gossipbook.cli.status import gather_status

    return trio.run(gather_status, load(c.config), 1.0)


def shard_leaders(c: Cluster, ids: list[str], want: list[str] | None = None, timeout: float = 15.0) -> list[str]:
    """Each shard's leader, once every node of ``ids`` names the same one for every shard."""
    deadline = time.monotonic() + timeout
    while True:
        st = [s for s in status(c) if s["id"] in ids]
        if all(s["reachable"] and "shards" in s for s in st):
            lead = [{s["shards"][i]["leader"] for s in st} for i in range(len(st[0]["shards"]))]
            if all(len(x) == 1 and None not in x for x in lead):
                got = [x.pop() for x in lead]
                if want is None or got == want:
                    return got
        assert time.monotonic() < deadline, f"shard leaders: {json.dumps(st)[:3000]}\n{c.dump_logs()}"
        time.sleep(0.1)


async def commit_each(cfg: Any, nodes: list[str], limit_s: float = 10.0) -> dict[str, float]:
    """Per symbol of ``cfg``: seconds until an order sent to ``nodes`` in turn is acknowledged."""
    symbols = [i.symbol for i in cfg.instruments]
    took: dict[str, float] = {}
    t0 = time.perf_counter()

    async def one(c: Client, sym: str) -> None:
        i = 0
        while time.perf_counter() - t0 < limit_s:
            node = nodes[i % len(nodes)]
            i += 1
            req = c.new_req()
            try:
                rep = await c.request(node, ClientSubmit(req, NEW, sym, "", i % 2, 10_000 + i, 1, 0, 0, 3000), req,
                                      3.0)
            except Unreachable:
                continue
            if rep.code == 0:
                took[sym] = time.perf_counter() - t0
                return
    async with Client(cfg, retry_s=0.05, account="alice") as c, trio.open_nursery() as n:
        for sym in symbols:
            n.start_soon(one, c, sym)
    assert set(took) == set(symbols), f"not every shard committed within {limit_s} s: {took}"
    return took


async def leader_hints(cfg: Any) -> None:
    """A client that asked a node not leading the shard learns the leader from the hint; the library
    ``Client`` then sends that shard's next order (and a cancel of it) straight there."""
    from gossipbook.api import Client as LibClient
    from gossipbook.core.ops import CANCEL

    async with Client(cfg, account="alice") as c:
        req = c.new_req()
        rep = await c.request("n1", ClientSubmit(req, NEW, "GBX3", "", 0, 9_000, 1, 0, 0, 3000), req)
        assert rep.code == 0 and "#2:" in rep.order_id
        assert c.leader_for(ClientSubmit("x", NEW, "GBX3", "", 0, 1, 1, 0, 0, 1)) == "n3"
        assert c.leader_for(ClientSubmit("x", CANCEL, "", rep.order_id, 0, 0, 0, 0, 0, 1)) == "n3"
        assert c.leader_for(ClientSubmit("x", NEW, "GBX4", "", 0, 1, 1, 0, 0, 1)) is None  # not learnt yet
    async with LibClient(cfg, account="bob") as lib:
        first = await lib.create_order("GBX4", "buy", 1, "90")  # via n1 (the default), which relays
        assert lib._wire.leader_for(ClientSubmit("x", NEW, "GBX4", "", 0, 1, 1, 0, 0, 1)) == "n4"
        second = await lib.create_order("GBX4", "buy", 1, "90")  # straight to n4
        await lib.cancel_order(first.id)
        await lib.cancel_order(second.id)


def books_equal(c: Cluster, ids: list[str], timeout: float = 10.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        st = [s for s in status(c) if s["id"] in ids]
        if all(s["reachable"] for s in st) and len({json.dumps([(x["commit_index"], x["digest"]) for x in s["shards"]])
                                                     for s in st}) == 1 and len({s["digest"] for s in st}) == 1:
            return st
        assert time.monotonic() < deadline, json.dumps(
            [{k: s.get(k) for k in ("id", "digest", "shards")} for s in st])[:3000]
        time.sleep(0.1)


def test_four_shards_sigkill_a_leading_node_every_shard_commits_within_2s_and_books_agree(make_cluster):
    c = sharded(make_cluster)
    for nid in c.ids:
        c.start(nid)
    cfg = load(c.config)
    assert shard_leaders(c, c.ids, want=["n1", "n2", "n3", "n4"]) == ["n1", "n2", "n3", "n4"]  # spread
    for nid in c.ids:
        trio.run(commit_each, cfg, [nid])  # every shard takes orders, through any node
    st = books_equal(c, c.ids)
    assert all(x["ops"] > 0 for x in st[0]["shards"])
    c.kill("n2")  # leads shard 1
    survivors = ["n1", "n3", "n4"]
    took = trio.run(commit_each, cfg, survivors)
    assert max(took.values()) < 2.0, took
    lead = shard_leaders(c, survivors)
    assert lead[1] in survivors and [lead[0], lead[2], lead[3]] == ["n1", "n3", "n4"]
    trio.run(commit_each, cfg, survivors)
    c.start("n2")  # from its data dirs (shard-1/, shard-2/, shard-3/ beside shard 0's log)
    assert shard_leaders(c, c.ids, want=["n1", "n2", "n3", "n4"], timeout=20) == ["n1", "n2", "n3", "n4"]
    trio.run(commit_each, cfg, ["n2"])
    forwards = sum(x["counters"]["forwards_out"] for x in status(c) if x["id"] == "n1")
    trio.run(leader_hints, cfg)
    # n1 relayed the first GBX3 order and bob's first GBX4 order; bob's second order and both
    # cancels went to n4 directly
    assert sum(x["counters"]["forwards_out"] for x in status(c) if x["id"] == "n1") == forwards + 2
    st = books_equal(c, c.ids)
    assert sum(x["ops"] for x in st[0]["shards"]) == st[0]["ops"]
    assert sorted(p.name for p in (c.tmp / "data" / "n2").iterdir() if p.name.startswith("shard")) == [
        "shard-1", "shard-2", "shard-3", "shards.json"]


def test_a_data_dir_of_another_shard_map_is_refused(make_cluster):
    from gossipbook.node.storage import Storage, open_shards

    c = sharded(make_cluster, n=1, k=2)
    st = Storage.open(load(c.config).node("n1").data_dir, "n1")  # as the node's first start leaves it
    for sub in open_shards(st, (("GBX",), ("GBX2",))):
        sub.close()
    text = c.config.read_text().replace('instruments = ["GBX"]\n\n[[shards]]\ninstruments = ["GBX2"]',
                                        'instruments = ["GBX2"]\n\n[[shards]]\ninstruments = ["GBX"]')
    write_private(c.config, text)
    r = cli("node", "-c", str(c.config), "--id", "n1", timeout=30)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "was written with 2 shards" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
