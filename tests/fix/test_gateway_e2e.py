"""End to end on loopback: a 3-node cluster, the FIX gateway in front of it, and FIX initiators written
with simplefix alone (tests/fix/initiator.py) trading through it.

What must hold: two sessions (two accounts) log on, place orders (ExecutionReport New), cross
(both get a Fill with the venue's price and quantity), cancel (Canceled), replace (Replaced, then
the order trades at its new price), mass-cancel (OrderMassCancelReport and a Canceled per order) and
log out; a second Logon for a live session is refused while the first goes on; a gateway restart
keeps sequence numbers and ClOrdID -> order id; and after a partition and heal, a provisional fill
that the replay undoes comes back as an ExecutionReport Trade Cancel (H) whose ExecRefID is the
ExecID of the original fill report.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

import gossipbook as gb
from gossipbook.fix.config import from_dict
from gossipbook.fix.gateway import Gateway

from .initiator import Initiator, field, is_er

PW = "password-1"


def fix_cfg(data_dir: Path, sessions: dict[str, str], node: str = "n1", **gateway: object) -> object:
    return from_dict({"gateway": {"comp_id": "GBX", "data_dir": str(data_dir), "node": node,
                                  "watch_interval_ms": 50, **gateway},
                      "sessions": [{"sender_comp_id": s, "password": PW, "account": a} for s, a in sessions.items()]})


@asynccontextmanager
async def cluster(accounts: tuple[str, ...], faults: bool = False) -> AsyncIterator[tuple[gb.ClusterConfig, dict]]:
    cfg = gb.local_cluster(nodes=3, accounts=accounts)
    filters = {nid: gb.FaultFilter(seed=i) for i, nid in enumerate(cfg.ids)} if faults else {}
    async with trio.open_nursery() as nursery:
        nodes = [await nursery.start(gb.Node(cfg, nid, faults=filters.get(nid)).serve) for nid in cfg.ids]
        for n in nodes:
            await n.ready(timeout=10)
        yield cfg, filters
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def gateway(fix: object, cfg: gb.ClusterConfig) -> AsyncIterator[tuple[Gateway, int]]:
    gw = Gateway(fix, cfg)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        port = await nursery.start(gw.serve, "127.0.0.1", 0)
        yield gw, port
        await gw.shutdown(timeout=3)
        nursery.cancel_scope.cancel()


def D(clordid: str, side: str, qty: str, price: str | None, tif: str = "1") -> list[tuple[int, object]]:
    f: list[tuple[int, object]] = [(11, clordid), (55, "GBX"), (54, "1" if side == "buy" else "2"), (38, qty),
                                   (40, "2" if price else "1"), (59, tif), (60, "20240101-00:00:00")]
    if price:
        f.append((44, price))
    return f


async def test_two_sessions_trade_cancel_replace_mass_cancel(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with cluster(("alice", "bob")) as (cfg, _), \
                gateway(fix_cfg(tmp_path / "gw", {"ALICE": "alice", "BOB": "bob"}), cfg) as (gw, port):
            a = await Initiator.connect(port, "ALICE")
            b = await Initiator.connect(port, "BOB")
            assert field(await a.logon(), 35) == "A" and field(await b.logon(), 35) == "A"

            # a second Logon for the live session ALICE is closed unanswered; ALICE goes on
            dup = await Initiator.connect(port, "ALICE")
            await dup.send("A", [(98, 0), (108, 30), (554, PW)])
            assert await dup.closed_within(5) and not dup.seen
            assert gw.counters["second_logon"] == 1

            # alice rests a sell, bob crosses it: both sides get a Fill
            await a.send("D", D("a1", "sell", "5", "100.25"))
            new = await a.expect(is_er("0", "a1"))
            assert field(new, 39) == "0" and field(new, 151) == "5" and field(new, 1) == "alice"
            oid = field(new, 37)
            await b.send("D", D("b1", "buy", "3", "100.25"))
            await b.expect(is_er("0", "b1"))
            bf = await b.expect(is_er("F", "b1"))
            assert (field(bf, 32), field(bf, 31), field(bf, 39), field(bf, 14)) == ("3", "100.25", "2", "3")
            assert field(bf, 20002) in ("P", "F") and field(bf, 20001)
            af = await a.expect(is_er("F", "a1"), 5)
            assert (field(af, 32), field(af, 39), field(af, 151), field(af, 37)) == ("3", "1", "2", oid)

            # replace: a1's remaining 2 at 100.25 -> OrderQty 6 (3 filled + 3 left) at 100.50
            await a.send("G", [(11, "a2"), (41, "a1"), (55, "GBX"), (54, "2"), (38, "6"), (40, "2"), (44, "100.50"),
                               (60, "20240101-00:00:00")])
            rep = await a.expect(is_er("5", "a2"))
            assert (field(rep, 41), field(rep, 38), field(rep, 44), field(rep, 151)) == ("a1", "6", "100.5", "3")
            # bob lifts it at the new price, naming the order by its new ClOrdID's price
            await b.send("D", D("b2", "buy", "1", "100.50", tif="3"))
            assert field(await b.expect(is_er("F", "b2")), 31) == "100.5"
            assert field(await a.expect(is_er("F", "a2"), 5), 151) == "2"

            # cancel by the newest ClOrdID; an unknown one gets OrderCancelReject
            await a.send("F", [(11, "a3"), (41, "a2"), (55, "GBX"), (54, "2"), (60, "20240101-00:00:00")])
            c = await a.expect(is_er("4", "a3"))
            assert (field(c, 41), field(c, 39), field(c, 151)) == ("a2", "4", "0")
            await a.send("F", [(11, "a4"), (41, "nope"), (55, "GBX"), (54, "2"), (60, "20240101-00:00:00")])
            rj = await a.expect(lambda m: field(m, 35) == "9")
            assert (field(rj, 102), field(rj, 434)) == ("1", "1")

            # mass cancel: two resting bids go
            await b.send("D", D("b3", "buy", "1", "99"))
            await b.send("D", D("b4", "buy", "2", "98"))
            await b.expect(is_er("0", "b4"))
            await b.send("q", [(11, "b5"), (530, "7"), (60, "20240101-00:00:00")])
            r = await b.expect(lambda m: field(m, 35) == "r")
            assert (field(r, 531), field(r, 533)) == ("7", "2")
            canceled = {field(await b.expect(is_er("4")), 11) for _ in range(2)}
            assert canceled == {"b3", "b4"}
            book = await gb.Client(cfg, account="bob").__aenter__()
            try:
                assert (await book.fetch_order_book("GBX")).bids == ()
            finally:
                await book.__aexit__(None, None, None)

            # an off-grid price is an ExecutionReport Rejected naming the tick
            await b.send("D", D("b6", "buy", "1", "100.001"))
            rej = await b.expect(is_er("8", "b6"))
            assert field(rej, 103) == "99" and "tick" in (field(rej, 58) or "")

            # a cancel sent right behind its order (no wait for the ack) finds the order placed
            await b.send("D", D("b7", "buy", "1", "97"))
            await b.send("F", [(11, "b8"), (41, "b7"), (55, "GBX"), (54, "1"), (60, "20240101-00:00:00")])
            assert field(await b.expect(is_er("4", "b8")), 41) == "b7"

            assert field(await a.logout(), 35) == "5" and field(await b.logout(), 35) == "5"
            assert await a.closed_within(5) and await b.closed_within(5)
            st = gw.status()["sessions"]
            assert st["ALICE->GBX"]["app"]["fills"] == 2 and st["BOB->GBX"]["app"]["fills"] == 2
            assert st["ALICE->GBX"]["session"]["rejects_sent"] == 0


async def test_restart_keeps_sequence_numbers_and_order_ids(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with cluster(("alice",)) as (cfg, _):
            fix = fix_cfg(tmp_path / "gw", {"ALICE": "alice"})
            async with gateway(fix, cfg) as (gw, port):
                a = await Initiator.connect(port, "ALICE")
                await a.logon()
                await a.send("D", D("a1", "sell", "5", "101"))
                oid = field(await a.expect(is_er("0", "a1")), 37)
                await a.logout()
                await a.aclose()
                out_before = gw.runtimes["ALICE->GBX"].session.next_out
            async with gateway(fix, cfg) as (gw2, port2):
                assert gw2.runtimes["ALICE->GBX"].session.next_out == out_before
                a2 = await Initiator.connect(port2, "ALICE")
                a2.next_out, a2.next_in = a.next_out, a.next_in
                assert field(await a2.logon(), 34) == str(out_before)
                await a2.send("F", [(11, "a2"), (41, "a1"), (55, "GBX"), (54, "2"), (60, "20240101-00:00:00")])
                c = await a2.expect(is_er("4", "a2"))
                assert field(c, 37) == oid
                await a2.logout()


async def test_partition_revises_a_provisional_fill_into_a_trade_cancel(tmp_path: Path) -> None:
    with trio.fail_after(40):
        async with cluster(("maker", "buyer", "other"), faults=True) as (cfg, filters):
            addr = {nid: cfg.node(nid).addr for nid in cfg.ids}

            def partition(sides: list[list[str]]) -> None:
                for side in sides:
                    for a_ in side:
                        filters[a_].blocked = {addr[b_] for other in sides if other is not side for b_ in other}

            fix = fix_cfg(tmp_path / "gw", {"MAKER": "maker", "BUYER": "buyer"})
            async with gateway(fix, cfg) as (gw, port), gb.Client(cfg, account="other", node="n3") as other:
                m = await Initiator.connect(port, "MAKER")
                b = await Initiator.connect(port, "BUYER")
                await m.logon()
                await b.logon()
                await m.send("D", D("m1", "sell", "2", "100"))
                await m.expect(is_er("0", "m1"))
                with trio.fail_after(5):  # the ask reached n3
                    while (await other.fetch_order_book("GBX")).best_ask is None:
                        await trio.sleep(0.05)
                partition([["n1"], ["n2", "n3"]])
                # at n3 (earlier in HLC order) another account takes the ask; then at n1 the FIX buyer does
                o = await other.create_order("GBX", "buy", "2", "100", time_in_force="ioc")
                assert len(o.fills) == 1
                await trio.sleep(0.05)
                await b.send("D", D("b1", "buy", "2", "100", tif="3"))
                fill = await b.expect(is_er("F", "b1"))
                assert field(fill, 20002) == "P"  # provisional: finality stalls while partitioned
                await m.expect(is_er("F", "m1"))
                partition([["n1", "n2", "n3"]])
                # after the heal n1 folds the n3 buy first: the FIX buyer's fill is undone
                bust = await b.expect(lambda x: field(x, 35) == "8" and field(x, 150) in ("H", "G"), 15)
                assert field(bust, 19) == field(fill, 17) and field(bust, 11) == "b1"
                assert field(bust, 150) == "H" and field(bust, 14) == "0"
                mb = await m.expect(lambda x: field(x, 35) == "8" and field(x, 150) in ("H", "G"), 15)
                assert field(mb, 11) == "m1"
                assert gw.status()["sessions"]["BUYER->GBX"]["app"]["busts"] == 1
                await m.logout()
                await b.logout()


async def test_gaps_both_ways_resends_and_a_drop_copy(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with cluster(("alice", "bob")) as (cfg, _):
            fix = from_dict({"gateway": {"comp_id": "GBX", "data_dir": str(tmp_path / "gw"), "watch_interval_ms": 50},
                             "sessions": [{"sender_comp_id": "ALICE", "password": PW, "account": "alice"},
                                          {"sender_comp_id": "BOB", "password": PW, "account": "bob"},
                                          {"sender_comp_id": "RISK", "password": PW, "drop_copy": ["alice"]}]})
            async with gateway(fix, cfg) as (gw, port):
                a = await Initiator.connect(port, "ALICE")
                b = await Initiator.connect(port, "BOB")
                risk = await Initiator.connect(port, "RISK")
                for s in (a, b, risk):
                    await s.logon()

                # a gap from the client: the gateway asks for a resend, a GapFill closes it, orders go on
                a.next_out += 3
                gap_at = a.next_out - 3
                await a.send("0", [])
                rr = await a.expect(lambda m: field(m, 35) == "2")
                assert (field(rr, 7), field(rr, 16)) == (str(gap_at), "0")
                await a.send("4", [(123, "Y"), (36, a.next_out)], seq=gap_at, poss_dup=True)
                await a.send("D", D("a1", "sell", "4", "100"))
                await a.expect(is_er("0", "a1"))

                # alice leaves; bob trades with her resting order while she is away
                await a.logout()
                await a.aclose()
                await b.send("D", D("b1", "buy", "4", "100", tif="3"))
                await b.expect(is_er("F", "b1"))
                with trio.fail_after(5):
                    while gw.status()["sessions"]["ALICE->GBX"]["session"]["stored_offline"] == 0:
                        await trio.sleep(0.02)

                # she comes back: the gateway's Logon shows the gap, her ResendRequest brings the Fill
                a2 = await Initiator.connect(port, "ALICE")
                a2.next_out, a2.next_in = a.next_out, a.next_in
                expected = a2.next_in
                reply = await a2.logon()
                assert int(field(reply, 34) or 0) > expected
                await a2.send("2", [(7, expected), (16, 0)])
                fill = await a2.expect(is_er("F", "a1"))
                assert field(fill, 43) == "Y" and field(fill, 122) and field(fill, 32) == "4"

                # the drop copy saw alice's reports (New and the Fill), none of bob's, and is read-only
                seen = [await risk.expect(lambda m: field(m, 35) == "8") for _ in range(2)]
                assert {field(m, 150) for m in seen} == {"0", "F"} and {field(m, 1) for m in seen} == {"alice"}
                await risk.send("D", D("r1", "buy", "1", "100"))
                rej = await risk.expect(lambda m: field(m, 35) == "3")
                assert field(rej, 373) == "11"
                st = gw.status()["sessions"]
                assert st["ALICE->GBX"]["session"]["resend_requests_sent"] == 1
                assert st["ALICE->GBX"]["session"]["resent"] >= 1
                await a2.logout()
                await b.logout()
                await risk.logout()


async def test_hostile_connections_are_closed_and_counted(tmp_path: Path) -> None:
    cfg = gb.local_cluster(nodes=1, accounts=("alice",))  # no node runs: the session layer alone is tested
    fix = from_dict({"gateway": {"comp_id": "GBX", "data_dir": str(tmp_path / "gw"), "logon_timeout_s": 1,
                                 "max_connections": 3},
                     "sessions": [{"sender_comp_id": "ALICE", "password": PW, "account": "alice"}]})
    with trio.fail_after(20):
        async with gateway(fix, cfg) as (gw, port):
            junk = await trio.open_tcp_stream("127.0.0.1", port)
            await junk.send_all(b"\x00\xff" * 100 + b"8=FIX.4.4\x019=5\x0135=A\x0110=000\x01")
            assert await junk.receive_some(100) == b""
            eve = await Initiator.connect(port, "EVE")
            await eve.send("A", [(98, 0), (108, 30), (554, PW)])
            assert await eve.closed_within(5) and not eve.seen
            wrong = await Initiator.connect(port, "ALICE")
            lo = await wrong.logon(password="not-the-password")
            assert field(lo, 35) == "5" and "Password" in (field(lo, 58) or "")
            assert await wrong.closed_within(5)
            idle = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(4)]
            assert await idle[3].receive_some(100) == b""  # over max_connections: closed at once
            for s in idle[:3]:
                with trio.fail_after(5):  # no Logon within logon_timeout_s: closed
                    assert await s.receive_some(100) == b""
            c = gw.counters
            assert (c["bad_first_message"], c["unknown_session"], c["refused_max_connections"],
                    c["logon_timeout"]) == (1, 1, 1, 3)
            s = gw.runtimes["ALICE->GBX"].session
            assert s.counters["logon_refused"] == 1 and (s.next_in, s.next_out) == (1, 1)


async def test_a_session_sending_faster_than_orders_run_is_slowed_not_refused(tmp_path: Path) -> None:
    with trio.fail_after(40):
        async with cluster(("alice",)) as (cfg, _):
            fix = fix_cfg(tmp_path / "gw", {"ALICE": "alice"}, app_queue=16)
            async with gateway(fix, cfg) as (gw, port):
                a = await Initiator.connect(port, "ALICE")
                await a.logon()
                n = 150
                await a.send_raw(b"".join(a.build("D", D(f"o{k}", "buy", "1", "90")) for k in range(n)))
                got = {field(await a.expect(lambda m: field(m, 35) == "8", 20), 150) for _ in range(n)}
                assert got == {"0"}  # every order acknowledged New, none answered "gateway busy"
                assert gw.counters["app_queue_full"] == 0
                await a.logout()


async def test_a_crash_between_the_nodes_ack_and_the_commit_is_resumed_under_the_same_request_id(
        tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with cluster(("alice",)) as (cfg, _), gb.Client(cfg, account="alice") as lib:
            fix = fix_cfg(tmp_path / "gw", {"ALICE": "alice"})
            acked = trio.Event()
            async with trio.open_nursery() as doomed:
                gw = Gateway(fix, cfg)  # type: ignore[arg-type]
                port = await doomed.start(gw.serve, "127.0.0.1", 0)
                client = gw.runtimes["ALICE->GBX"].client
                assert client is not None
                real = client.create_order

                async def ack_then_crash(*args: object, **kw: object) -> object:
                    with sqlite3.connect(tmp_path / "gw" / "fix.sqlite3") as db:  # what a crash would leave
                        on_disk = {k for (k,) in db.execute("SELECT key FROM records WHERE kind='intent'")}
                    assert kw["request_id"] in on_disk  # the intent is committed before the node hears of it
                    await real(*args, **kw)  # type: ignore[arg-type]  # the node placed it and answered
                    acked.set()
                    await trio.sleep_forever()  # ... and the gateway dies before it records the answer

                client.create_order = ack_then_crash  # type: ignore[method-assign]
                a = await Initiator.connect(port, "ALICE")
                await a.logon()
                await a.send("D", D("a1", "sell", "5", "101"))
                await acked.wait()
                doomed.cancel_scope.cancel()  # no Logout, no commit of the outcome
            await a.aclose()
            [o] = await lib.fetch_open_orders()  # the venue has the order; the gateway never said so

            async with gateway(fix, cfg) as (gw2, port2):
                rec = gw2.runtimes["ALICE->GBX"].app.orders["a1"]  # type: ignore[union-attr]
                with trio.fail_after(5):
                    while not rec.order_id:
                        await trio.sleep(0.02)
                assert rec.order_id == o.id  # the node answered the same request id with the same order
                assert [x.id for x in await lib.fetch_open_orders()] == [o.id]  # not placed twice
                assert gw2.status()["sessions"]["ALICE->GBX"]["app"]["resumed"] == 1
                # the library's side of it: the same request id is the same order, a malformed one is refused
                assert (await lib.create_order("GBX", "sell", "5", "101", request_id=rec.req)).id == o.id
                with pytest.raises(gb.UsageError, match="request_id must be 1-32"):
                    await lib.create_order("GBX", "sell", "5", "101", request_id="no spaces please")
                # the client logs on again: its ResendRequest brings the ExecutionReport New it never got
                a2 = await Initiator.connect(port2, "ALICE")
                a2.next_out, a2.next_in = a.next_out, a.next_in
                await a2.logon()
                await a2.send("2", [(7, a.next_in), (16, 0)])
                new = await a2.expect(is_er("0", "a1"))
                assert (field(new, 37), field(new, 43)) == (o.id, "Y")
                await a2.logout()
