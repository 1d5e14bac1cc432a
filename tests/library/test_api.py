"""The library surface (issue 16): ``Node`` and ``Client`` as a program embedding gossipbook uses
them. Real nodes on loopback sockets, one trio run per test; each test takes well under a second
or two.

What must hold: a node's event feeds are bounded and count what they drop (the consumer is told
with ``Missed``), a consumer that raises or never reads changes nothing for the node, a ``Node``
serves once, a float price is refused before anything is sent, and errors come out as the
library's own exceptions, never wrapped in an ``ExceptionGroup``.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
import trio

import gossipbook as gb
from gossipbook.core.book import Trade


def one_node(**kw: object) -> gb.ClusterConfig:
    return gb.local_cluster(nodes=1, accounts=("alice", "bob"), **kw)  # type: ignore[arg-type]


async def trade(cfg: gb.ClusterConfig, n: int = 1) -> None:
    async with gb.Client(cfg, account="alice") as alice, gb.Client(cfg, account="bob") as bob:
        for _ in range(n):
            await alice.create_order("GBX", "sell", "1", "100")
            o = await bob.create_order("GBX", "buy", "1", "100")
            assert len(o.fills) == 1


def test_public_names() -> None:
    for name in gb.__all__:
        assert getattr(gb, name) is not None, name
    assert gb.Venue is gb.api.Venue and gb.Side.BUY == "buy"
    assert issubclass(gb.InvalidOrder, gb.UsageError) and issubclass(gb.UsageError, gb.GossipbookError)
    assert issubclass(gb.NoQuorum, gb.RequestFailed) and issubclass(gb.Unreachable, gb.GossipbookError)


def test_every_public_name_is_documented() -> None:
    doc = (Path(__file__).resolve().parent.parent.parent / "docs" / "library.md").read_text(encoding="utf-8")
    reference = doc.split("## Reference", 1)[1]
    missing = [n for n in gb.__all__ if f"**`{n}" not in reference]
    assert not missing, f"docs/library.md has no reference entry for {missing}"


async def test_feed_drops_are_counted_and_reported_as_missed(nursery: trio.Nursery) -> None:
    cfg = one_node()
    node = await nursery.start(gb.Node(cfg, "n1").serve)
    await node.ready(timeout=5)
    feed = node.events(buffer=2)
    await trade(cfg, 5)  # 5 trades: order-lifecycle and trade events, far more than 2
    assert feed.dropped >= 3
    first = [await feed.__anext__(), await feed.__anext__()]
    assert type(first[0]) is gb.OrderAccepted and type(first[1]) is not gb.Missed
    missed = await feed.__anext__()
    assert type(missed) is gb.Missed and missed.count >= 3
    # after the gap the feed is complete again
    await trade(cfg, 1)
    with trio.fail_after(2):
        ev = await feed.__anext__()
    assert type(ev) in (gb.TradeExecuted, gb.TradeFinal, gb.Missed, gb.OrderAccepted, gb.OrderRested,
                        gb.OrderFilled, gb.OrderCancelled)


def test_feed_missed_sits_where_the_gap_was() -> None:
    node = gb.Node(one_node(), "n1")
    feed = node.events(buffer=2)
    t = Trade("n1:1/0", "GBX", 100, 1, "n1:1", "n1:2", 0)
    evs = [gb.TradeExecuted(t._replace(trade_id=f"n1:{i}/0")) for i in range(6)]
    for ev in evs[:4]:
        node._on_event(ev)  # 0, 1 buffered; 2, 3 dropped
    assert feed.dropped == 2

    async def drain() -> list[object]:
        out = [await feed.__anext__(), await feed.__anext__()]
        node._on_event(evs[4])  # room again: Missed(2) goes in first, then this event
        node._on_event(evs[5])  # buffer full again (Missed + evs[4]): dropped
        out += [await feed.__anext__(), await feed.__anext__(), await feed.__anext__()]
        return out

    got = trio.run(drain)
    assert got == [evs[0], evs[1], gb.Missed(2), evs[4], gb.Missed(1)]
    assert feed.dropped == 3


async def test_raising_or_idle_consumers_never_stop_the_node(nursery: trio.Nursery) -> None:
    cfg = one_node()
    node = await nursery.start(gb.Node(cfg, "n1").serve)
    await node.ready(timeout=5)
    idle = node.events(buffer=1)  # never read
    errors: list[BaseException] = []

    async def bad_consumer() -> None:
        try:
            async for ev in node.events():
                if isinstance(ev, gb.TradeExecuted):
                    raise RuntimeError("consumer bug")
        except RuntimeError as e:
            errors.append(e)

    nursery.start_soon(bad_consumer)
    await trio.sleep(0.05)
    await trade(cfg, 3)
    await trio.sleep(0.1)
    assert errors and node.running
    await trade(cfg, 20)  # still trading, with a full feed nobody reads
    assert idle.dropped > 0 and node.running and node.handler_errors == 0
    assert node.status().trades_final + node.status().trades_provisional == 23


async def test_trade_final_follows_trade_executed(nursery: trio.Nursery) -> None:
    cfg = one_node()
    node = await nursery.start(gb.Node(cfg, "n1").serve)
    await node.ready(timeout=5)
    feed = node.events()
    await trade(cfg, 1)
    seen: list[object] = []
    with trio.fail_after(3):
        async for ev in feed:
            seen.append(ev)
            if type(ev) is gb.TradeFinal:
                break
    executed = [e for e in seen if type(e) is gb.TradeExecuted]
    assert executed and executed[0].trade == seen[-1].trade  # type: ignore[attr-defined]


async def test_serving_twice_is_refused(nursery: trio.Nursery) -> None:
    cfg = one_node()
    node = gb.Node(cfg, "n1")
    scope = trio.CancelScope()

    async def run(*, task_status: trio.TaskStatus[gb.Node]) -> None:
        with scope:
            await node.serve(task_status=task_status)

    await nursery.start(run)
    with pytest.raises(gb.UsageError, match="already served"):
        await node.serve()  # while running
    scope.cancel()
    await node.wait_stopped()
    with pytest.raises(gb.UsageError, match="build a new Node"):
        await node.serve()  # after it stopped


async def test_float_price_refused_before_sending(nursery: trio.Nursery) -> None:
    cfg = one_node()
    node = await nursery.start(gb.Node(cfg, "n1").serve)
    await node.ready(timeout=5)
    async with gb.Client(cfg, account="alice") as c:
        before = node.status().raw["counters"].get("client_submits", 0)
        with pytest.raises(gb.InvalidOrder, match="float"):
            await c.create_order("GBX", "buy", "1", 100.5)  # type: ignore[arg-type]
        with pytest.raises(gb.InvalidOrder, match="float"):
            await c.create_order("GBX", "buy", 1.0, "100")  # type: ignore[arg-type]
        with pytest.raises(gb.InvalidOrder, match="side"):
            await c.create_order("GBX", "gtc", "1", "100")
        with pytest.raises(gb.InvalidOrder, match="time_in_force"):
            await c.create_order("GBX", "buy", "1", "100", time_in_force="sell")
        with pytest.raises(gb.UnknownInstrument):
            await c.create_order("NOPE", "buy", "1", "100")
        assert node.status().raw["counters"].get("client_submits", 0) == before
        o = await c.create_order("GBX", gb.Side.BUY, Decimal("2"), "99.5")
        assert o.price == Decimal("99.50") and o.amount == Decimal("2") and o.status == "open"


async def test_errors_are_the_librarys_own_and_never_wrapped(nursery: trio.Nursery) -> None:
    def cap(inst: gb.Instrument, side: int, price: int, qty: int) -> None:
        if qty > 5:
            raise gb.InvalidOrder("at most 5 lots per order")

    venue = gb.Venue.of([gb.Instrument("GBX")], validate=cap)
    cfg = gb.local_cluster(venue, nodes=1, accounts=("alice", "bob"))
    node = await nursery.start(gb.Node(cfg, "n1", venue=venue).serve)
    await node.ready(timeout=5)
    with pytest.raises(gb.InvalidOrder, match="at most 5 lots") as ei:
        async with gb.Client(cfg, account="alice") as c:
            await c.create_order("GBX", "buy", "6", "100")  # refused by the hook at the node
    assert ei.value.code == 1 and ei.value.node == "n1"  # type: ignore[attr-defined]
    async with gb.Client(cfg, account="alice") as alice, gb.Client(cfg, account="bob") as bob:
        o = await alice.create_order("GBX", "buy", "1", "100")
        with pytest.raises(gb.NotOwner):
            await bob.cancel_order(o.id)
        with pytest.raises(gb.UnknownOrder):
            await alice.cancel_order("n1:999999")
        ack = await alice.amend_order(o.id, "2", "100.5")
        assert ack.order_id == o.id
        [mine] = await alice.fetch_open_orders()
        assert (mine.price, mine.remaining) == (Decimal("100.50"), Decimal("2"))
        await alice.cancel_all_orders()
        assert await alice.fetch_open_orders() == []
    with pytest.raises(ValueError, match="mine"):
        async with gb.Client(cfg, account="alice"):
            raise ValueError("mine")
    with pytest.raises(gb.UsageError, match="already in use"):  # its port is taken: a plain error
        async with gb.Node(cfg, "n1"):
            pass


async def test_unreachable_node() -> None:
    cfg = one_node()  # nothing serves it
    async with gb.Client(cfg, account="alice", timeout=0.3) as c:
        with pytest.raises(gb.Unreachable):
            await c.fetch_order_book("GBX")


def test_venue_must_match_the_config() -> None:
    cfg = one_node()
    other = gb.Venue.of([gb.Instrument("ACME")])
    with pytest.raises(gb.UsageError, match="only in the venue: ACME"):
        gb.Node(cfg, "n1", venue=other)


async def test_watch_my_trades_and_reads(nursery: trio.Nursery) -> None:
    cfg = one_node()
    node = await nursery.start(gb.Node(cfg, "n1").serve)
    await node.ready(timeout=5)
    async with gb.Client(cfg, account="alice") as alice:
        watch = alice.watch_my_trades(interval=0.05)
        got: list[gb.Fill] = []

        async def collect() -> None:
            async for f in watch:
                got.append(f)
                if f.final:
                    return

        async with trio.open_nursery() as n:
            n.start_soon(collect)
            await trio.sleep(0.1)
            await trade(cfg, 1)
            with trio.fail_after(3):
                while not got or not got[-1].final:
                    await trio.sleep(0.02)
        assert got[0].side is gb.Side.SELL and got[0].price == Decimal("100.00") and got[0].role == "maker"
        book = await alice.fetch_order_book("GBX", 5)
        assert book.bids == () and book.asks == () and book.digest == node.digest
        st = await alice.status()
        assert st.id == "n1" and st.ready


async def test_async_with_node_passes_the_body_exception(nursery: trio.Nursery) -> None:
    cfg = one_node()
    with pytest.raises(KeyError):
        async with gb.Node(cfg, "n1") as node:
            await node.ready(timeout=5)
            raise KeyError("body")
    assert not node.running


async def test_strong_mode_node_and_client(nursery: trio.Nursery) -> None:
    cfg = gb.local_cluster(nodes=3, accounts=("alice", "bob"), mode="strong")
    nodes = [await nursery.start(gb.Node(cfg, nid).serve) for nid in cfg.ids]
    for n in nodes:
        await n.ready(timeout=10)
    feed = nodes[0].events()
    async with gb.Client(cfg, account="alice") as alice, gb.Client(cfg, account="bob") as bob:
        with trio.fail_after(10):
            while True:
                try:
                    await alice.create_order("GBX", "sell", "10", "100.25")
                    break
                except (gb.NoQuorum, gb.NotReady):  # a leader is still being elected
                    await trio.sleep(0.1)
        order = await bob.create_order("GBX", "buy", "4", "100.25", wait="final")
        assert order.level is gb.AckLevel.FINAL and order.fills[0].final
    kinds: list[type] = []
    with trio.fail_after(3):
        async for ev in feed:
            kinds.append(type(ev))
            if type(ev) is gb.TradeFinal:
                break
    assert gb.TradeExecuted in kinds
    assert nodes[1].book("GBX").asks == (gb.BookLevel(Decimal("100.25"), Decimal("6"), 1),)
