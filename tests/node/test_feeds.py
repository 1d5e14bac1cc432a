"""Pushed feeds over real loopback sockets (issue 16, the last "Done when" bullet).

A 3-node cluster in one trio run (``gossipbook.Node`` with the nodes' test-only ``FaultFilter``, as
``demos/market_maker.py`` partitions), a remote client subscribed at n1 through
``Client.watch_my_trades`` (UDP, signed with the account's credential, leased):

- crossing orders on both sides of a partition n1 | n2 n3, then the heal: the fill n1 made is
  undone by the replay, and that revision reaches the subscriber within 1 s of the heal; the fill
  that stands reaches it as final within the finality bound; the feed's last word on every fill is
  what the node's ``trades`` query says;
- a subscriber that stops renewing costs nothing after its lease: the node counts the expiry and
  pushes nothing more to it;
- ``watch_order_book`` follows a book another node's orders change.
"""

from __future__ import annotations

from decimal import Decimal

import trio

import gossipbook as gb
from gossipbook.node.client import Client as WireClient

#: finality needs a heartbeat from every member after the heal; members a short partition made
#: suspect or dead rejoin within the fast failure detection's timings (local_cluster: ~0.5 s)
FINALITY_BOUND_S = 3.0


async def _cluster(nursery: trio.Nursery, n: int, accounts: tuple[str, ...]) -> tuple[gb.ClusterConfig, list[gb.Node],
                                                                                   dict[str, gb.FaultFilter]]:
    cfg = gb.local_cluster(nodes=n, accounts=accounts)
    filters = {nid: gb.FaultFilter(seed=i) for i, nid in enumerate(cfg.ids)}
    nodes = [await nursery.start(gb.Node(cfg, nid, faults=filters[nid]).serve) for nid in cfg.ids]
    for node in nodes:
        await node.ready(timeout=10)
    return cfg, nodes, filters


async def _until(what: str, cond: object, timeout: float = 5.0) -> None:
    with trio.move_on_after(timeout) as scope:
        while not cond():  # type: ignore[operator]
            await trio.sleep(0.01)
    assert not scope.cancelled_caught, f"timed out after {timeout} s waiting for {what}"


async def test_a_revised_fill_reaches_a_remote_subscriber_within_1s_of_the_heal_then_final(nursery: trio.Nursery) -> None:
    cfg, nodes, filters = await _cluster(nursery, 3, ("alice", "bob", "carol"))
    addr = {nid: cfg.node(nid).addr for nid in cfg.ids}

    def cut(*sides: list[str]) -> None:
        for side in sides:
            for a in side:
                filters[a].blocked = {addr[b] for other in sides if other is not side for b in other}

    n1 = nodes[0].runner.core
    async with gb.Client(cfg, account="alice", node="n1") as alice, gb.Client(cfg, account="bob", node="n1") as bob, \
            gb.Client(cfg, account="carol", node="n3") as carol:
        await alice.create_order("GBX", "sell", "1", "100", wait="replicated")
        await _until("n3 to hold alice's ask", lambda: len(nodes[2].runner.core.replica.books["GBX"]) == 1)
        seen: list[tuple[float, gb.Fill]] = []

        async def watch() -> None:
            async with alice.watch_my_trades(lease=3.0) as feed:
                async for fill in feed:
                    seen.append((trio.current_time(), fill))

        nursery.start_soon(watch)
        await _until("the subscription at n1", lambda: n1.feeds.stats()["trades"] == 1)

        cut(["n1"], ["n2", "n3"])
        c = await carol.create_order("GBX", "buy", "1", "100", time_in_force="ioc")  # n3's side: stamped first
        assert len(c.fills) == 1
        await trio.sleep(0.05)
        b = await bob.create_order("GBX", "buy", "1", "100", time_in_force="ioc")  # n1's side, later
        assert len(b.fills) == 1
        t1 = b.fills[0].trade_id
        await _until("n1's provisional fill on the feed", lambda: any(f.trade_id == t1 for _t, f in seen))
        assert not next(f for _t, f in seen if f.trade_id == t1).final  # provisional while cut off
        await trio.sleep(0.3)

        healed = trio.current_time()
        cut(["n1", "n2", "n3"])
        await _until("the revision of n1's fill", lambda: any(f.trade_id == t1 and f.undone for _t, f in seen))
        at_revised = next(t for t, f in seen if f.trade_id == t1 and f.undone)
        undone = next(f for _t, f in seen if f.trade_id == t1 and f.undone)
        assert undone.revisions == 1 and not undone.final
        t3 = c.fills[0].trade_id
        await _until("the fill that stands, final", lambda: any(f.trade_id == t3 and f.final for _t, f in seen),
                     timeout=FINALITY_BOUND_S + 2)
        at_final = next(t for t, f in seen if f.trade_id == t3 and f.final)
        print(f"revision on the feed {at_revised - healed:.3f} s after the heal, final {at_final - healed:.3f} s")
        assert at_revised - healed <= 1.0, f"revised fill arrived {at_revised - healed:.3f} s after the heal"
        assert at_final - healed <= FINALITY_BOUND_S, f"final state arrived {at_final - healed:.3f} s after the heal"

        # the feed's last word on every fill is the node's own answer
        last = {f.trade_id: f for _t, f in seen}
        assert last == {f.trade_id: f for f in await alice.fetch_my_trades(node="n1")}
        assert last[t3].side == gb.Side.SELL and last[t3].role == "maker" and last[t3].price == Decimal("100")
        c1 = n1.counters
        assert c1["feed_subscribes"] == 1 and c1["feed_pushes"] >= 3 and c1["feed_refused"] == 0  # snapshot, fill, revision
        nursery.cancel_scope.cancel()


async def test_a_vanished_subscriber_costs_nothing_after_its_lease(nursery: trio.Nursery) -> None:
    cfg, nodes, _f = await _cluster(nursery, 1, ("alice", "bob"))
    core = nodes[0].runner.core
    async with WireClient(cfg, account="alice") as wire, gb.Client(cfg, account="alice") as alice, \
            gb.Client(cfg, account="bob") as bob:
        sub = wire.subscribe("n1", "trades", lease_s=1.0)
        await sub.open()
        first = await sub.next()
        assert first.snapshot and core.feeds.stats() == {"subscriptions": 1, "trades": 1, "book": 0, "accounts": 1}
        await alice.create_order("GBX", "sell", "1", "100")
        await bob.create_order("GBX", "buy", "1", "100")
        with trio.fail_after(2):
            up = await sub.next()
        assert [r[0] for r in up.fills] and core.counters["feed_pushes"] >= 2
        # the client stops calling next(): nothing renews the lease any more
        gone_at = trio.current_time()
        await _until("the lease to expire", lambda: core.counters["feed_expired"] == 1, timeout=3.0)
        assert trio.current_time() - gone_at >= 0.9  # not before the lease ran out
        assert core.feeds.stats()["subscriptions"] == 0
        pushed, last = core.counters["feed_pushes"], sub.rx.last
        await alice.create_order("GBX", "sell", "1", "100")
        await bob.create_order("GBX", "buy", "1", "100")
        await trio.sleep(0.3)
        assert core.counters["feed_pushes"] == pushed and sub.rx.last == last  # nothing more sent
        wire._subs.clear()  # it vanished: no goodbye on the way out either
    nursery.cancel_scope.cancel()


async def test_watch_order_book_follows_a_book_changed_at_another_node(nursery: trio.Nursery) -> None:
    cfg, nodes, _f = await _cluster(nursery, 2, ("alice", "bob"))
    async with gb.Client(cfg, account="alice", node="n1") as alice, gb.Client(cfg, account="bob", node="n2") as bob:
        books: list[gb.OrderBook] = []

        async def watch() -> None:
            async with bob.watch_order_book("GBX", depth=2) as feed:
                async for book in feed:
                    books.append(book)

        nursery.start_soon(watch)
        await _until("the empty book", lambda: bool(books))
        assert books[0].bids == () and books[0].asks == () and books[0].node == "n2"
        for p in ("99", "98", "97"):
            await alice.create_order("GBX", "buy", "2", p)
        await alice.create_order("GBX", "sell", "1", "101")
        want = ((Decimal("99"), Decimal("2")), (Decimal("98"), Decimal("2")))
        await _until("n2's top two bids", lambda: tuple((lv.price, lv.amount) for lv in books[-1].bids) == want
                     and books[-1].best_ask == Decimal("101"))
        await alice.cancel_all_orders("GBX")
        await _until("the book emptied", lambda: books[-1].bids == () and books[-1].asks == ())
        core = nodes[1].runner.core
        assert core.feeds.stats()["book"] == 1 and core.counters["feed_pushes"] == len(books)
    nursery.cancel_scope.cancel()
