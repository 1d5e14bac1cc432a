"""Risk limits and the kill switch through the library (issue 17's follow-up): ``Client.set_risk_limit``,
``disable_account`` / ``enable_account`` and ``fetch_risk`` against a real 3-node cluster on loopback.

What must hold: a limit set through the library refuses an order past it with the library's
``RiskRefused`` (reply code 14) and the node counts the refusal; the kill switch cancels the
account's resting orders on every replica and refuses its new ones until enabled; a client that is
not the operator gets ``NotOwner`` and nothing changes; ``fetch_risk`` shows the limit in ``Decimal``,
the rights each node holds (they add up to the limit) and each node's own use; bad amounts are
one-line ``UsageError``s before anything is sent; a malformed ``risk`` answer is no answer.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
import trio

import gossipbook as gb
from gossipbook.api.risk import merge_risk
from gossipbook.demo.snapshot import risk_fields
from gossipbook.node.client import Client as WireClient
from gossipbook.tui.top import poll

GBX = gb.Instrument("GBX", tick_size=Decimal("0.5"), lot_size=Decimal("1"))


async def _until(what: str, check, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(timeout):
        while not await check():
            await trio.sleep(0.05)


async def test_limits_the_kill_switch_and_fetch_risk_on_three_nodes() -> None:
    cfg = gb.local_cluster([GBX], nodes=3)
    async with gb.Node(cfg, "n1") as n1, gb.Node(cfg, "n2") as n2, gb.Node(cfg, "n3") as n3:
        for n in (n1, n2, n3):
            await n.ready(timeout=15)
        async with gb.Client(cfg, node="n1") as op, gb.Client(cfg, account="alice", node="n1") as alice, \
                gb.Client(cfg, account="bob", node="n1") as bob:
            assert op.account == "operator"
            # not the operator: NotOwner, one line, nothing sent (fetch_risk below finds no limit of bob)
            with pytest.raises(gb.NotOwner, match="only the operator"):
                await alice.set_risk_limit("bob", symbol="GBX", max_open_buy="1")
            with pytest.raises(gb.NotOwner):
                await bob.disable_account("alice")
            # bad amounts: UsageError before anything is sent
            for kw, msg in (({"max_open_buy": 1.5}, "float"), ({"max_open_buy": "-1"}, "0 or more"),
                            ({"max_notional": "0.25"}, "multiple of 0.5"), ({"max_position": "5"}, "needs a symbol"),
                            ({}, "nothing to set")):
                with pytest.raises(gb.UsageError, match=msg):
                    await op.set_risk_limit("alice", symbol="GBX" if "max_position" not in kw else None, **kw)

            acks = await op.set_risk_limit("alice", symbol="GBX", max_open_buy="30", max_notional=Decimal("3000"),
                                           wait="replicated")
            assert len(acks) == 2 and all(a.node == "n1" for a in acks)
            # past the whole limit: refused wherever it is sent, with the library's exception, counted
            before = (await op.status("n1")).raw["counters"].get("risk_refused_open_buy", 0)
            with pytest.raises(gb.RiskRefused, match="open-buy") as ei:
                await alice.create_order("GBX", "buy", "31", "10")
            assert ei.value.code == 14 and ei.value.node == "n1"  # type: ignore[attr-defined]
            assert (await op.status("n1")).raw["counters"]["risk_refused_open_buy"] == before + 1
            resting = await alice.create_order("GBX", "buy", "4", "10")  # 40 notional, 4 open-buy lots
            assert resting.status == "open"

            async def every_node_holds_it() -> bool:
                r = await op.fetch_risk("alice")
                lim = r.accounts["alice"].limit("open-buy", "GBX") if "alice" in r.accounts else None
                return lim is not None and len(lim.limits) == 3 and lim.used.get("n1") == 4
            await _until("limit replicated", every_node_holds_it)
            report = await op.fetch_risk()
            assert report.answered == ("n1", "n2", "n3") and report.unreachable == () and report.mode == "eventual"
            assert set(report.accounts) == {"alice"}  # bob has none: the refused request changed nothing
            acct = report.accounts["alice"]
            assert not acct.disabled and acct.disabled_at == {"n1": False, "n2": False, "n3": False}
            ob, notional = acct.limit("open-buy", "GBX"), acct.limit("notional", "GBX")
            assert ob is not None and notional is not None and acct.limit("open-buy") is None
            assert ob.limit == Decimal(30) and set(ob.limits.values()) == {Decimal(30)}
            assert notional.limit == Decimal(3000) and notional.used["n1"] == Decimal(40)
            assert sum(ob.rights.values()) == ob.limit  # the escrow: rights held add up to the limit
            assert ob.used == {"n1": Decimal(4), "n2": Decimal(0), "n3": Decimal(0)}
            assert ob.headroom["n1"] == ob.rights["n1"] - ob.used["n1"]
            assert all(type(v) is Decimal for v in (*ob.rights.values(), *ob.used.values()))
            # an account sees its own limits only; bob has none
            assert set((await alice.fetch_risk()).accounts) == {"alice"}
            assert (await bob.fetch_risk(node="n2")).accounts == {}

            # the kill switch: alice's resting order goes on every replica, her new orders are refused
            await op.disable_account("alice", wait="replicated")
            async with WireClient(cfg) as wire:  # what gossipbook top reads: status plus the risk query

                async def top_sees_it() -> bool:
                    views = [risk_fields(n) for n in await poll(wire, ["n1", "n2", "n3"], 2.0)]
                    return all(v["risk_limits"] == 2 and v["risk_disabled"] == ("alice",) for v in views)
                await _until("top's view", top_sees_it)

            async def cancelled_everywhere() -> bool:
                return [len(await alice.fetch_open_orders(node=n)) for n in ("n1", "n2", "n3")] == [0, 0, 0]
            await _until("kill switch folded", cancelled_everywhere)
            for n in ("n1", "n3"):
                with pytest.raises(gb.RiskRefused, match="disabled"):
                    await alice.create_order("GBX", "sell", "1", "20", node=n)
            assert (await op.fetch_risk("alice")).accounts["alice"].disabled_at == {"n1": True, "n2": True, "n3": True}
            await op.enable_account("alice", wait="replicated")

            async def takes_orders_again() -> bool:
                return not (await op.fetch_risk("alice", node="n3")).accounts["alice"].disabled
            await _until("enable folded", takes_orders_again)
            again = await alice.create_order("GBX", "sell", "1", "20", node="n3")
            assert again.status == "open"


def test_a_malformed_risk_answer_is_no_answer() -> None:
    venue = gb.Venue.of([GBX])
    good = {"accounts": {"a": {"disabled": False, "limits": [
        {"symbol": "GBX", "limit_kind": "notional", "limit": 10, "used": 3}]}}}
    answers = {"n1": {"accounts": {"a": {"disabled": True, "limits": [{"symbol": "GBX", "limit": "x"}]}}},
               "n2": good, "n3": None, "n4": {"accounts": [1, 2]}}
    merged = merge_risk(venue, ["n1", "n2", "n3", "n4"], answers)
    assert merged == {"a": {"disabled_at": {"n2": False}, "limits": [
        {"symbol": "GBX", "kind": "notional", "limit": {"n2": Decimal("5")}, "rights": {}, "used": {"n2": Decimal("1.5")},
         "headroom": {}}]}}
    assert "malformed" in answers["n1"]["error"] and "malformed" in answers["n4"]["error"]
