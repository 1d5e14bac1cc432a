"""Interoperability with a FIX engine nobody here wrote: QuickFIX's C++ library (Debian's
libquickfix-dev), as an initiator (tests/fix/interop/initiator.cpp, driven by tests/fix/quickfix.py),
against the gateway in front of a 3-node cluster on loopback.

What must hold, judged by QuickFIX's own session layer (it logs out or stops on anything it finds
wrong: a bad CompID, SendingTime, sequence number, PossDupFlag without OrigSendingTime, ...):
- two sessions (two accounts) log on, trade with each other (both get the Fill), cancel and replace;
- a gap QuickFIX makes (it skips one MsgSeqNum) is repaired: the gateway asks for a resend, QuickFIX
  answers with a GapFill and its order again (PossDupFlag=Y), and the order is placed exactly once;
- a gap the gateway seems to make (QuickFIX is told to expect lower numbers) is repaired: QuickFIX
  asks for a resend and accepts the gateway's resent execution reports (PossDupFlag=Y);
- after a partition between the nodes two sessions send to, a provisional fill that the replay
  undoes reaches QuickFIX as ExecutionReport Trade Cancel (150=H) whose ExecRefID is the ExecID of
  the original fill report; the fill that stands becomes final (150=I, GbFinality=F).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

import gossipbook as gb
from gossipbook.fix.config import from_dict
from gossipbook.fix.gateway import Gateway

from .quickfix import QuickFix, build_initiator, is_er, msg_type
from .test_gateway_e2e import PW, D, cluster


@pytest.fixture(scope="session")
def quickfix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.getbasetemp()
    # under xdist each worker has its own basetemp below one per-run directory: share the build there
    return build_initiator(base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base)


@asynccontextmanager
async def gateway(tmp: Path, cfg: gb.ClusterConfig, nodes: dict[str, str]) -> AsyncIterator[tuple[Gateway, int]]:
    fix = from_dict({"gateway": {"comp_id": "GBX", "data_dir": str(tmp / "gw"), "watch_interval_ms": 50},
                     "sessions": [{"sender_comp_id": s.upper(), "password": PW, "account": s, "node": n}
                                  for s, n in nodes.items()]})
    gw = Gateway(fix, cfg)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(gw.serve, "127.0.0.1", 0)
        yield gw, port
        await gw.shutdown(timeout=3)
        nursery.cancel_scope.cancel()


def G(clordid: str, orig: str, qty: str, price: str) -> list[tuple[int, object]]:
    return [(11, clordid), (41, orig), (55, "GBX"), (54, "2"), (38, qty), (40, "2"), (44, price),
            (60, "20240101-00:00:00")]


async def test_quickfix_trades_cancels_replaces_and_repairs_gaps_both_ways(quickfix: Path, tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with cluster(("alice", "bob")) as (cfg, _), \
                gateway(tmp_path, cfg, {"alice": "n1", "bob": "n1"}) as (gw, port), \
                QuickFix.start(quickfix, tmp_path, port, {"ALICE": PW, "BOB": PW}) as qf:
            await qf.logged_on("ALICE", "BOB")

            # alice rests a sell, bob crosses it: both sides get the Fill
            await qf.send("ALICE", "D", D("a1", "sell", "5", "100.25"))
            new = await qf.expect("ALICE", is_er("0", "a1"))
            assert (new[39], new[151], new[1]) == ("0", "5", "alice")
            await qf.send("BOB", "D", D("b1", "buy", "3", "100.25"))
            bf = await qf.expect("BOB", is_er("F", "b1"))
            assert (bf[32], bf[31], bf[39], bf[14]) == ("3", "100.25", "2", "3")
            af = await qf.expect("ALICE", is_er("F", "a1"))
            assert (af[32], af[39], af[151], af[37]) == ("3", "1", "2", new[37])

            # replace a1 (2 left) by OrderQty 6 at 100.50; bob lifts 1 at the new price
            await qf.send("ALICE", "G", G("a2", "a1", "6", "100.50"))
            rep = await qf.expect("ALICE", is_er("5", "a2"))
            assert (rep[41], rep[38], rep[44], rep[151]) == ("a1", "6", "100.5", "3")
            await qf.send("BOB", "D", D("b2", "buy", "1", "100.50", tif="3"))
            assert (await qf.expect("BOB", is_er("F", "b2")))[31] == "100.5"
            assert (await qf.expect("ALICE", is_er("F", "a2")))[151] == "2"

            # cancel by the newest ClOrdID
            await qf.send("ALICE", "F", [(11, "a3"), (41, "a2"), (55, "GBX"), (54, "2"), (60, "20240101-00:00:00")])
            c = await qf.expect("ALICE", is_er("4", "a3"))
            assert (c[41], c[39], c[151]) == ("a2", "4", "0")

            # QuickFIX skips a MsgSeqNum: the gateway asks for a resend, QuickFIX gap-fills the hole and
            # sends its order again (PossDupFlag=Y); the order is placed once
            await qf.cmd("skip BOB")
            await qf.send("BOB", "D", D("b3", "buy", "1", "99"))
            await qf.expect("BOB", is_er("0", "b3"))
            assert qf.seen("in", "BOB", msg_type("2")), "the gateway sent no ResendRequest"
            await qf.expect_sent("BOB", lambda m: m.get(35) == "D" and m.get(11) == "b3" and m.get(43) == "Y")
            assert qf.seen("out", "BOB", lambda m: m.get(35) == "4" and m.get(123) == "Y")

            # QuickFIX expects 2 lower than the gateway sends: it asks for a resend and takes the
            # gateway's resent execution reports (PossDupFlag=Y, OrigSendingTime) before the new one
            await qf.cmd("rewind ALICE 2")
            await qf.send("ALICE", "D", D("a4", "sell", "1", "105"))
            await qf.expect("ALICE", is_er("0", "a4"))
            asked = qf.seen("out", "ALICE", msg_type("2"))
            assert asked and asked[-1][16] == "0"
            resent = qf.seen("in", "ALICE", lambda m: m.get(43) == "Y")
            assert resent and all(m.get(122) for m in resent if m.get(35) == "8")
            assert any(int(m[34]) >= int(asked[-1][7]) for m in resent)

            await qf.send("BOB", "D", D("b4", "buy", "1", "98"))  # one more round trip: no late duplicate
            await qf.expect("BOB", is_er("0", "b4"))
            await qf.cmd("logout ALICE")
            await qf.cmd("logout BOB")
            await qf.logged_out("ALICE")
            await qf.logged_out("BOB")
            assert len(qf.seen("in", "BOB", is_er("0", "b3"))) == 1
            st = gw.status()["sessions"]
            assert st["BOB->GBX"]["session"]["resend_requests_sent"] == 1
            assert st["BOB->GBX"]["app"]["orders"] == 4  # b1..b4: the resent b3 was not a new order
            assert st["ALICE->GBX"]["session"]["resend_requests_answered"] == 1
            assert st["ALICE->GBX"]["session"]["resent"] + st["ALICE->GBX"]["session"]["gap_fills_sent"] >= 1
            for s in ("ALICE->GBX", "BOB->GBX"):
                assert st[s]["session"]["rejects_sent"] == 0 and st[s]["session"]["rejects_received"] == 0
            assert not [ln for ln in qf.lines if ln[0] == "error"]


async def test_quickfix_receives_a_trade_cancel_after_a_partition(quickfix: Path, tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with cluster(("alice", "bob", "carol"), faults=True) as (cfg, filters), \
                gateway(tmp_path, cfg, {"alice": "n1", "bob": "n1", "carol": "n3"}) as (gw, port), \
                QuickFix.start(quickfix, tmp_path, port, {"ALICE": PW, "BOB": PW, "CAROL": PW}) as qf, \
                gb.Client(cfg, account="carol", node="n3") as at_n3:
            addr = {nid: cfg.node(nid).addr for nid in cfg.ids}

            def partition(sides: list[list[str]]) -> None:
                for side in sides:
                    for a in side:
                        filters[a].blocked = {addr[b] for other in sides if other is not side for b in other}

            await qf.logged_on("ALICE", "BOB", "CAROL")
            await qf.send("ALICE", "D", D("a1", "sell", "2", "100"))
            await qf.expect("ALICE", is_er("0", "a1"))
            with trio.fail_after(5):  # the ask reached n3
                while (await at_n3.fetch_order_book("GBX")).best_ask is None:
                    await trio.sleep(0.05)
            partition([["n1"], ["n2", "n3"]])
            # carol (through n3, earlier in HLC order) takes the ask, then bob (through n1) does
            await qf.send("CAROL", "D", D("c1", "buy", "2", "100", tif="3"))
            cf = await qf.expect("CAROL", is_er("F", "c1"))
            await trio.sleep(0.05)
            await qf.send("BOB", "D", D("b1", "buy", "2", "100", tif="3"))
            bf = await qf.expect("BOB", is_er("F", "b1"))
            assert bf[20002] == "P" and cf[20002] == "P"  # provisional: finality stalls while partitioned
            await qf.expect("ALICE", is_er("F", "a1"))
            partition([["n1", "n2", "n3"]])

            # after the heal n1 folds carol's buy first: bob's fill is busted, referencing its report
            bust = await qf.expect("BOB", lambda m: m.get(35) == "8" and m.get(150) in ("H", "G"), 15)
            assert (bust[150], bust[19], bust[11], bust[14], bust[20001]) == ("H", bf[17], "b1", "0", bf[20001])
            ab = await qf.expect("ALICE", lambda m: m.get(35) == "8" and m.get(150) in ("H", "G"), 15)
            assert ab[11] == "a1"
            final = await qf.expect("CAROL", is_er("I", "c1"), 20)
            assert (final[19], final[20002]) == (cf[17], "F")
            for s in ("ALICE", "BOB", "CAROL"):
                await qf.cmd(f"logout {s}")
                await qf.logged_out(s)
            assert gw.status()["sessions"]["BOB->GBX"]["app"]["busts"] == 1
            assert not [ln for ln in qf.lines if ln[0] == "error"]
