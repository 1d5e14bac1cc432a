"""Order-lifecycle events (gossipbook/api/lifecycle.py): a property test against a real replica's
fold, and the events a running cluster's ``Node.events()`` carries in both modes."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gossipbook as g
from gossipbook.api.lifecycle import OrderTracker
from gossipbook.core.book import BUY, FOK, GTC, IOC, MATCHING_NAMES, SELL, STP_NAMES
from gossipbook.core.errors import InvalidOrder, NotOwner, UnknownOrder
from gossipbook.core.instrument import Instrument, Venue
from gossipbook.core.ops import TradeExecuted
from gossipbook.core.replica import Replica

INST = Instrument("T", tick_size=Decimal("1"), lot_size=Decimal("1"), min_price=Decimal("1"))
VENUE = Venue.of([INST])
ACCOUNTS = ("a", "b")

action = st.one_of(
    st.tuples(st.just("new"), st.sampled_from(ACCOUNTS), st.sampled_from((BUY, SELL)), st.integers(95, 105),
              st.integers(1, 6), st.sampled_from((GTC, GTC, IOC, FOK))),
    st.tuples(st.just("cancel"), st.sampled_from(ACCOUNTS), st.integers(0, 40)),
    st.tuples(st.just("amend"), st.sampled_from(ACCOUNTS), st.integers(0, 40), st.integers(95, 105),
              st.integers(1, 6)),
    st.tuples(st.just("cancel_all"), st.sampled_from(ACCOUNTS)),
)


def _resting(rep: Replica):
    def resting(symbol: str, oid: str) -> tuple[int, int] | None:
        o = rep.books[symbol].order(oid)
        return None if o is None else (o[1], o[2])
    return resting


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(action, min_size=1, max_size=40), st.integers(1, 4),
       st.sampled_from(STP_NAMES), st.sampled_from(MATCHING_NAMES))
def test_events_account_for_every_order_and_rebuild_the_resting_set(actions, batch, stp, matching) -> None:
    """Whatever the ops, in steps of one or several: every NEW is accepted once; no order fills more
    than its amount (as last amended); and the orders the events leave open are exactly the orders resting in the book
    (open = rested and not since cancelled or filled to zero)."""
    venue = Venue.of([Instrument("T", tick_size=Decimal("1"), lot_size=Decimal("1"), min_price=Decimal("1"),
                                 stp=stp, matching=matching)])
    rep = Replica("n1", venue, members=["n1"])
    tracker = OrderTracker(venue)
    now, ids = 10**18, []
    events, step_ops, step_trades = [], [], []
    for i, a in enumerate(actions):
        now += 1000
        try:
            if a[0] == "new":
                op, evs = rep.submit_new("T", a[2], a[3], a[4], a[5], now, account=a[1])
                ids.append(op.op_id)
            elif a[0] == "cancel":
                op, evs = rep.submit_cancel(ids[a[2] % len(ids)] if ids else "n1:1", now, account=a[1])
            elif a[0] == "amend":
                op, evs = rep.submit_amend(ids[a[2] % len(ids)] if ids else "n1:1", a[3], a[4], now, account=a[1])
            else:
                op, _n = rep.submit_cancel_all("", now, account=a[1])
                evs = []
        except (InvalidOrder, NotOwner, UnknownOrder):
            continue
        step_ops.append(op)
        step_trades += [e.trade for e in evs if isinstance(e, TradeExecuted)]
        if (i + 1) % batch == 0:
            events += tracker.step(step_ops, step_trades, _resting(rep))
            step_ops, step_trades = [], []
    events += tracker.step(step_ops, step_trades, _resting(rep))
    accepted = [e.order_id for e in events if isinstance(e, g.OrderAccepted)]
    assert sorted(accepted) == sorted(ids)
    filled: dict[str, Decimal] = defaultdict(Decimal)
    amount = {e.order_id: e.amount for e in events if isinstance(e, g.OrderAccepted)}
    open_: dict[str, Decimal] = {}
    for e in events:
        if isinstance(e, g.OrderRested):
            open_[e.order_id] = e.remaining
        elif isinstance(e, g.OrderFilled):
            filled[e.order_id] += e.amount
            if e.remaining == 0:
                open_.pop(e.order_id, None)
            elif e.order_id in open_:
                open_[e.order_id] = e.remaining
        elif isinstance(e, g.OrderCancelled):
            assert e.reason in ("cancel", "cancel_all", "unfilled", "self_trade")
            open_.pop(e.order_id, None)
        elif isinstance(e, g.OrderAmended):
            assert e.order_id in open_
            open_[e.order_id] = e.remaining
            amount[e.order_id] = filled[e.order_id] + e.remaining  # an amend may add quantity
    for oid, q in filled.items():
        assert q <= amount[oid]
    book = {oid for _s, _p, oid, _q, _a in rep.books["T"].entries()}
    assert set(open_) == book


def test_an_ioc_remainder_is_reported_unfilled_and_a_full_fill_closes_the_maker() -> None:
    rep = Replica("n1", VENUE, members=["n1"])
    tr = OrderTracker(VENUE)
    sell, _ = rep.submit_new("T", SELL, 100, 3, GTC, 10**18, account="a")
    ev = tr.step([sell], [], _resting(rep))
    assert [type(e).__name__ for e in ev] == ["OrderAccepted", "OrderRested"]
    buy, evs = rep.submit_new("T", BUY, 100, 5, IOC, 10**18 + 1, account="b")
    ev = tr.step([buy], [e.trade for e in evs], _resting(rep))
    assert [type(e).__name__ for e in ev] == ["OrderAccepted", "OrderFilled", "OrderFilled", "OrderCancelled"]
    maker = ev[1]
    assert (maker.order_id, maker.role, maker.amount, maker.remaining) == (sell.op_id, "maker", Decimal(3), Decimal(0))
    assert ev[3].reason == "unfilled" and ev[3].order_id == buy.op_id
    assert len(tr) == 0  # the filled maker is forgotten


async def _collect(node: g.Node, out: list, stop: trio.Event) -> None:
    async for ev in node.events():
        out.append(ev)
        if stop.is_set():
            break


async def _lifecycle_on_a_cluster(mode: str) -> tuple[list, list]:
    gbx = g.Instrument("GBX", tick_size=Decimal("0.5"), lot_size=Decimal("1"))
    cfg = g.local_cluster([gbx], nodes=3, mode=mode)
    seen1: list = []
    seen2: list = []
    async with g.Node(cfg, "n1") as n1, g.Node(cfg, "n2") as n2, g.Node(cfg, "n3") as n3:
        for n in (n1, n2, n3):
            await n.ready(timeout=15)
        async with trio.open_nursery() as nursery:
            stop = trio.Event()
            nursery.start_soon(_collect, n1, seen1, stop)
            nursery.start_soon(_collect, n2, seen2, stop)
            await trio.sleep(0.1)
            async with g.Client(cfg, account="alice", node="n1") as alice, \
                    g.Client(cfg, account="bob", node="n1") as bob:
                rest = await alice.create_order("GBX", "sell", "5", "100")
                await bob.create_order("GBX", "buy", "2", "100", time_in_force="ioc")
                await bob.create_order("GBX", "buy", "1", "99", time_in_force="ioc")  # nothing to take
                await alice.amend_order(rest.id, "2", "101")
                try:
                    await bob.cancel_order(rest.id)
                except g.NotOwner:
                    pass
                await alice.cancel_order(rest.id)
                try:
                    await alice.cancel_order("n1:999999")
                except g.UnknownOrder:
                    pass
            with trio.fail_after(10):
                while not any(isinstance(e, g.OrderCancelled) and e.reason == "cancel" for e in seen2):
                    await trio.sleep(0.02)
            await trio.sleep(0.2)
            stop.set()
            nursery.cancel_scope.cancel()
    return seen1, seen2


def _names(evs: list, keep: tuple[type, ...]) -> list[str]:
    return [type(e).__name__ for e in evs if isinstance(e, keep)]


LIFE = (g.OrderAccepted, g.OrderRested, g.OrderFilled, g.OrderCancelled, g.OrderAmended, g.OrderRejected)


async def test_a_nodes_events_tell_an_orders_whole_life_in_eventual_mode() -> None:
    seen1, seen2 = await _lifecycle_on_a_cluster("eventual")
    want = ["OrderAccepted", "OrderRested", "OrderAccepted", "OrderFilled", "OrderFilled", "OrderAccepted",
            "OrderCancelled", "OrderAmended", "OrderCancelled"]
    # n1 stamped everything: it also heard its two refusals (bob's cancel of alice's order, a cancel of an order
    # that never existed)
    assert _names(seen1, LIFE) == want[:8] + ["OrderRejected", "OrderCancelled", "OrderRejected"]
    rejected = [e for e in seen1 if isinstance(e, g.OrderRejected)]
    assert rejected[0].account == "bob" and "belongs to another account" in rejected[0].message
    assert rejected[1].account == "alice" and "n1:999999" in rejected[1].message
    assert _names(seen2, LIFE) == want  # n2 folded the same ops it received; refusals never became ops
    cancelled = [e for e in seen2 if isinstance(e, g.OrderCancelled)]
    assert [c.reason for c in cancelled] == ["unfilled", "cancel"]
    amended = next(e for e in seen2 if isinstance(e, g.OrderAmended))
    assert (amended.price, amended.remaining) == (Decimal("101"), Decimal("2"))
    fills = [e for e in seen2 if isinstance(e, g.OrderFilled)]
    assert {(f.account, f.role, f.amount) for f in fills} == {("alice", "maker", Decimal(2)), ("bob", "taker", Decimal(2))}
    assert next(f for f in fills if f.role == "maker").remaining == Decimal(3)


async def test_strong_mode_reports_the_same_life_from_the_committed_log() -> None:
    seen1, seen2 = await _lifecycle_on_a_cluster("strong")
    names2 = _names(seen2, LIFE)
    assert names2 == ["OrderAccepted", "OrderRested", "OrderAccepted", "OrderFilled", "OrderFilled",
                      "OrderAccepted", "OrderCancelled", "OrderAmended", "OrderCancelled"]
    assert names2 == [n for n in _names(seen1, LIFE) if n != "OrderRejected"]
    assert "OrderRejected" in _names(seen1, LIFE)


def test_the_kill_switch_cancels_every_order_of_the_account_it_disables() -> None:
    rep = Replica("n1", VENUE, members=["n1"])
    tr = OrderTracker(VENUE)
    now = 10**18
    a1, _ = rep.submit_new("T", BUY, 95, 2, GTC, now, account="a")
    a2, _ = rep.submit_new("T", SELL, 105, 1, GTC, now + 1, account="a")
    b1, _ = rep.submit_new("T", BUY, 94, 1, GTC, now + 2, account="b")
    tr.step([a1, a2, b1], [], _resting(rep))
    halt, _ = rep.submit_halt("a", True, now + 3, account="operator")
    ev = tr.step([halt], [], _resting(rep))
    assert sorted((e.order_id, e.reason) for e in ev) == [(a1.op_id, "kill_switch"), (a2.op_id, "kill_switch")]
    assert all(isinstance(e, g.OrderCancelled) and e.account == "a" for e in ev)
    assert len(tr) == 1  # b's order still rests
