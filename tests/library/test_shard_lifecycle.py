"""Order-lifecycle events from a library ``Node`` whose cluster runs strong mode with shards (issue
21): every group's committed entries feed the node's ``OrderTracker``, so orders of shard 1 (named
``<leader>#1:<index>``) get their events as orders of shard 0 do."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import trio

import gossipbook as g

LIFE = (g.OrderAccepted, g.OrderRested, g.OrderFilled, g.OrderCancelled)


async def _collect(node: g.Node, out: list) -> None:
    async for ev in node.events():
        out.append(ev)


async def test_a_node_reports_the_life_of_orders_on_both_shards() -> None:
    cfg = g.local_cluster([g.Instrument("AAA", tick_size=Decimal("1")), g.Instrument("BBB", tick_size=Decimal("1"))],
                          nodes=3, mode="strong")
    cfg = dataclasses.replace(cfg, shards=(("AAA",), ("BBB",)))
    seen: list = []
    async with g.Node(cfg, "n1") as n1, g.Node(cfg, "n2"), g.Node(cfg, "n3"):
        await n1.ready(timeout=15)
        assert len(n1.runner.core.groups) == 2
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_collect, n1, seen)
            await trio.sleep(0.1)
            ids: dict[str, list[str]] = {}
            async with g.Client(cfg, account="alice", node="n2") as alice, \
                    g.Client(cfg, account="bob", node="n3") as bob:
                for sym in ("AAA", "BBB"):
                    rest = await alice.create_order(sym, "sell", "5", "100")
                    take = await bob.create_order(sym, "buy", "2", "100", time_in_force="ioc")
                    await alice.cancel_order(rest.id)
                    ids[sym] = [rest.id, take.id]
            assert "#" not in ids["AAA"][0] and "#1:" in ids["BBB"][0], ids
            with trio.fail_after(10):
                while sum(isinstance(e, g.OrderCancelled) and e.reason == "cancel" for e in seen) < 2:
                    await trio.sleep(0.02)
            nursery.cancel_scope.cancel()
    for sym in ("AAA", "BBB"):
        rest, take = ids[sym]
        mine = [e for e in seen if isinstance(e, LIFE) and e.symbol == sym]
        names = [(type(e).__name__, e.order_id) for e in mine]
        assert names == [("OrderAccepted", rest), ("OrderRested", rest), ("OrderAccepted", take),
                         ("OrderFilled", rest), ("OrderFilled", take), ("OrderCancelled", rest)], (sym, names)
        acc = [e for e in mine if isinstance(e, g.OrderAccepted)]
        assert {e.node for e in acc} <= set(cfg.ids)  # the stamping node, never "n1#1"
        fills = [e for e in mine if isinstance(e, g.OrderFilled)]
        assert {(f.account, f.role, f.amount) for f in fills} == {("alice", "maker", Decimal(2)),
                                                                   ("bob", "taker", Decimal(2))}
        assert next(f for f in fills if f.role == "maker").remaining == Decimal(3)
        cancelled = [e for e in mine if isinstance(e, g.OrderCancelled)]
        assert [c.reason for c in cancelled] == ["cancel"]
    assert not [e for e in seen if isinstance(e, g.Missed)]
