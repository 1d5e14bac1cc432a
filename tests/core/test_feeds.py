"""Pushed feeds, the pure parts (core/feeds.py; issue 16, "Feeds for remote clients").

What must hold:
- per subscription, the node's pushes carry gapless sequence numbers from 1 and go only to the
  subscription's current destination; a subscriber's view rebuilt from what arrives (snapshots,
  then deltas) equals the truth once pushes stop being lost, whatever was lost, duplicated or
  rate-bounded before: the receiver finds every gap and a fresh snapshot repairs it;
- subscriptions are capped per node and per account (refused with code 11, counted), leases
  expire in ``tick`` (counted) and an expired subscription gets nothing more;
- pushes are rate-bounded per subscription (``feed_throttled``), a queue a slow subscriber fills
  is capped (``feed_drops``) and replaced by a snapshot;
- through ``NodeCore``: a subscription is made only for an address that echoed the address-check
  cookie, is never moved to an unproven address, and its pushes carry the account's fills.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from gossipbook.core.book import Trade
from gossipbook.core.feeds import FeedLimits, FeedReceiver, Feeds
from gossipbook.core.instrument import Instrument, Venue
from gossipbook.core.node import E_ADDRESS, E_RATE_LIMITED, OK, NodeConfig, NodeCore, request_size
from gossipbook.core.ops import TradeExecuted, TradeRevised
from gossipbook.core.wire import ClientSubmit, FeedAck, FeedDelta, FeedSnapshot, FeedSubscribe

MS = 1_000_000
T0 = 1_000_000 * MS
SYMBOLS = ("AAA", "BBB")


class Dest(NamedTuple):
    """A push destination as the driver gives it: the account and an address."""

    account: str
    addr: str


class FakeSource:
    """The truth a feed reads: per account its fills (kept by the same rules as ``AccountFills``,
    written here independently), which trades are final, and the books' levels."""

    def __init__(self) -> None:
        self.fills: dict[str, dict[str, tuple[Any, ...]]] = {}
        self.final: set[str] = set()
        self.wm = 0
        self.ver = 0
        self.levels: dict[str, dict[tuple[int, int], tuple[int, int]]] = {s: {} for s in SYMBOLS}

    # ---- FeedSource
    def fill_rows(self, account: str, limit: int) -> list[tuple[Any, ...]]:
        return [self.row(account, tid) for tid in list(self.fills.get(account, {}))[-limit:]]

    def is_final(self, trade_id: str) -> bool:
        return trade_id in self.final

    def watermark(self) -> int:
        return self.wm

    def version(self) -> int:
        return self.ver

    def symbols(self) -> list[str]:
        return list(SYMBOLS)

    def depth(self, symbol: str, n: int) -> list[tuple[int, int, int, int]]:
        lv = self.levels[symbol]
        bids = sorted(((p, v) for (s, p), v in lv.items() if s == 0), reverse=True)[:n]
        asks = sorted((p, v) for (s, p), v in lv.items() if s == 1)[:n]
        return [(0, p, q, k) for p, (q, k) in bids] + [(1, p, q, k) for p, (q, k) in asks]

    # ---- the truth
    def row(self, account: str, tid: str) -> tuple[Any, ...]:
        t, revisions, undone = self.fills[account][tid]
        taker = t.taker_account == account
        return (tid, t.symbol, t.taker if taker else t.maker, t.taker_side if taker else 1 - t.taker_side, t.price,
                t.qty, int(taker), tid in self.final and not undone, revisions, undone)

    def truth(self, account: str, symbol: str) -> dict[str, tuple[Any, ...]]:
        return {tid: self.row(account, tid) for tid, (t, _r, _u) in self.fills.get(account, {}).items()
                if not symbol or t.symbol == symbol}

    def executed(self, t: Trade) -> TradeExecuted:
        for a in {t.maker_account, t.taker_account}:
            prev = self.fills.setdefault(a, {}).get(t.trade_id)
            self.fills[a][t.trade_id] = [t, prev[1] if prev else 0, False]
        return TradeExecuted(t)

    def revised(self, old: Trade, new: Trade | None) -> TradeRevised:
        for a in {old.maker_account, old.taker_account}:
            row = self.fills[a][old.trade_id]
            row[1] += 1
            if new is None:
                row[2] = True
            else:
                row[0] = new
        return TradeRevised(old, new)


def trade(n: int, symbol: str = "AAA", maker: str = "alice", taker: str = "bob", qty: int = 1,
          price: int = 100) -> Trade:
    return Trade(f"n1:{n}/0", symbol, price, qty, f"n1:{1000 + n}", f"n1:{n}", n % 2, maker, taker)


def sub_msg(sub: str, feed: str = "trades", symbol: str = "", depth: int = 0, lease_ms: int = 2_000,
            resync: bool = False, req: str = "r") -> FeedSubscribe:
    return FeedSubscribe(req, sub, feed, symbol, depth, lease_ms, resync)


def pushes(out: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    return [(d, m) for d, m in out if type(m) in (FeedSnapshot, FeedDelta)]


class Viewer:
    """A subscriber: a ``FeedReceiver`` and the state rebuilt from what it delivers."""

    def __init__(self) -> None:
        self.rx = FeedReceiver(retry_ns=200 * MS)
        self.fills: dict[str, tuple[Any, ...]] = {}
        self.levels: dict[tuple[int, int], tuple[int, int]] = {}
        self.updates = 0

    def push(self, msg: Any, now: int) -> None:
        up = self.rx.on_push(msg, now)
        if up is None:
            return
        self.updates += 1
        if up.snapshot:
            self.fills, self.levels = {}, {}
        for r in up.fills:
            self.fills[r[0]] = r
        for side, price, q, k in up.levels:
            if (q, k) == (0, 0):
                self.levels.pop((side, price), None)
            else:
                self.levels[(side, price)] = (q, k)


# ---- the table, deterministic cases --------------------------------------------------------------------
def test_caps_refuse_clearly_and_count() -> None:
    src = FakeSource()
    f = Feeds(src, FeedLimits(max_subs=3, max_per_account=2))
    for i, (acct, sub) in enumerate([("alice", "a1"), ("alice", "a2"), ("alice", "a3"), ("bob", "b1"),
                                     ("carol", "c1")]):
        (dst, ack), = f.subscribe(sub_msg(sub, req=f"r{i}"), Dest(acct, "x"), T0)
        assert dst == Dest(acct, "x") and ack.req == f"r{i}"
        if sub in ("a3", "c1"):
            assert ack.code == E_RATE_LIMITED and ack.lease_ms == 0
            assert ("account alice" in ack.message) if sub == "a3" else ("at this node (at most 3)" in ack.message)
        else:
            assert ack.code == OK and ack.lease_ms == 2_000 and ack.snapshot
    assert f.counters["feed_refused"] == 2 and f.counters["feed_subscribes"] == 3
    assert sorted(k[:2] for k in f.subscriptions()) == [("alice", "a1"), ("alice", "a2"), ("bob", "b1")]
    # a renewal of one held is never refused; unsubscribing makes room
    assert f.subscribe(sub_msg("a1"), Dest("alice", "x"), T0)[0][1].code == OK
    assert f.subscribe(sub_msg("a1", lease_ms=0), Dest("alice", "x"), T0)[0][1].message == "unsubscribed"
    assert f.subscribe(sub_msg("c1"), Dest("carol", "x"), T0)[0][1].code == OK
    # bad requests: a clear code, nothing held
    for m, code in [(sub_msg("z", feed="quotes"), 8), (sub_msg("z", feed="book", symbol="NOPE", depth=5), 6),
                    (sub_msg("z", feed="book", symbol="AAA", depth=0), 8),
                    (sub_msg("z", feed="book", symbol="AAA", depth=51), 8)]:
        ack = f.subscribe(m, Dest("dave", "x"), T0)[0][1]
        assert ack.code == code and ack.message and "\n" not in ack.message
    assert f.counters["feed_refused"] == 6 and len(f.subscriptions()) == 3


def test_a_lease_not_renewed_expires_and_its_pushes_stop() -> None:
    src = FakeSource()
    f = Feeds(src, FeedLimits(lease_min_ms=500))
    d = Dest("alice", "x")
    assert f.subscribe(sub_msg("s", lease_ms=1_000), d, T0)[0][1].lease_ms == 1_000
    assert len(pushes(f.flush(T0))) == 1  # the (empty) snapshot
    f.subscribe(sub_msg("s", lease_ms=1_000), d, T0 + 600 * MS)  # renewed: now good until 1.6 s
    f.tick(T0 + 1_200 * MS)
    assert f.counters["feed_expired"] == 0 and f.next_deadline() <= T0 + 1_600 * MS
    f.on_events([src.executed(trade(1))])
    assert [m.seq for _d, m in pushes(f.flush(T0 + 1_200 * MS))] == [2]
    f.tick(T0 + 1_600 * MS)
    assert f.counters["feed_expired"] == 1 and f.subscriptions() == [] and f.stats()["subscriptions"] == 0
    f.on_events([src.executed(trade(2))])
    assert f.flush(T0 + 1_700 * MS) == [] and f.counters["feed_pushes"] == 2
    # a lease asked for is clamped into the limits
    assert f.subscribe(sub_msg("t", lease_ms=1), d, T0)[0][1].lease_ms == 500
    assert f.subscribe(sub_msg("u", lease_ms=600_000), d, T0)[0][1].lease_ms == 60_000


def test_a_gap_is_found_and_a_snapshot_repairs_it() -> None:
    src = FakeSource()
    f = Feeds(src)
    d, v, now = Dest("alice", "x"), Viewer(), T0
    for _d, m in f.subscribe(sub_msg("s"), d, now):
        v.rx.on_ack(m, now)
    for _d, m in pushes(f.flush(now)):
        v.push(m, now)
    assert v.rx.synced and v.rx.last == 1
    lost = []
    for i in range(1, 4):
        f.on_events([src.executed(trade(i))])
        lost += pushes(f.flush(now))
    assert [m.seq for _d, m in lost] == [2, 3, 4]
    v.push(lost[0][1], now)
    v.push(lost[2][1], now)  # 3 never came
    assert not v.rx.synced and v.rx.gaps == 1 and v.rx.resync_due(now)
    assert "n1:3/0" not in v.fills  # nothing delivered past the gap
    for _d, m in f.subscribe(sub_msg("s", resync=True), d, now):
        assert m.snapshot
        v.rx.on_ack(m, now)
        v.rx.asked(now)
    assert f.counters["feed_resyncs"] == 1
    for _d, m in pushes(f.flush(now)):
        v.push(m, now)
    assert v.rx.synced and v.fills == src.truth("alice", "")
    # a lost last push shows in the next renewal's ack (it names a seq never seen)
    f.on_events([src.executed(trade(9))])
    assert len(pushes(f.flush(now))) == 1  # lost
    for _d, m in f.subscribe(sub_msg("s"), d, now):
        v.rx.on_ack(m, now)
    assert v.rx.gaps == 2 and v.rx.resync_due(now)


def test_pushes_are_rate_bounded_and_a_full_queue_becomes_a_snapshot() -> None:
    src = FakeSource()
    lim = FeedLimits(push_rate=100.0, push_burst=5, queue_rows=50, push_bytes=400)
    f = Feeds(src, lim)
    d, now = Dest("alice", "x"), T0
    f.subscribe(sub_msg("s"), d, now)
    assert len(pushes(f.flush(now))) == 1
    sent = []
    for i in range(40):  # 40 fills, one flush each, 1 ms apart: 0.1 token a flush
        f.on_events([src.executed(trade(i))])
        now += MS
        sent += pushes(f.flush(now))
    # the bucket: 4 tokens left after the snapshot, plus 40 ms at 100/s: at most 8 pushes for 40 fills
    assert len(sent) <= 4 + 4 and f.counters["feed_throttled"] >= 1
    assert f.next_deadline() <= now + 10 * MS  # the queue goes out when tokens are back
    for i in range(40, 100):  # more than the queue holds: dropped (counted), and a snapshot instead
        f.on_events([src.executed(trade(i))])
    assert f.counters["feed_drops"] > 0
    now += 1_000 * MS
    out = pushes(f.flush(now))
    assert type(out[0][1]) is FeedSnapshot and f.counters["feed_snapshots"] == 2
    seqs = [m.seq for _d, m in sent + out]
    assert seqs == list(range(2, 2 + len(seqs)))  # gapless through throttling and the reset
    v = Viewer()
    v.rx.synced, v.rx.last = True, out[0][1].seq - 1
    for _d, m in out:
        v.push(m, now)
    assert v.fills == src.truth("alice", "")  # the newest 200 (all 100 here)


def test_book_deltas_rebuild_the_top_levels_and_changes_are_conflated() -> None:
    src = FakeSource()
    f = Feeds(src, FeedLimits(book_interval_ms=20))
    d, v, now = Dest("alice", "x"), Viewer(), T0
    src.levels["AAA"] = {(0, 99): (5, 1), (0, 98): (1, 1), (1, 101): (2, 2)}
    f.subscribe(sub_msg("b", feed="book", symbol="AAA", depth=2), d, now)
    for _d, m in pushes(f.flush(now)):
        v.push(m, now)
    assert v.levels == {(0, 99): (5, 1), (0, 98): (1, 1), (1, 101): (2, 2)}
    for step, change in enumerate([{(0, 100): (3, 1)}, {(1, 101): (1, 1)}, {(0, 100): None}]):
        for k, val in change.items():
            if val is None:
                del src.levels["AAA"][k]
            else:
                src.levels["AAA"][k] = val
        src.ver += 1
        now += MS  # within the 20 ms interval: nothing yet
        assert pushes(f.flush(now)) == [] or step == 0
        now += 25 * MS
        for _d, m in pushes(f.flush(now)):
            v.push(m, now)
        want = {(s, p): (q, k) for s, p, q, k in src.depth("AAA", 2)}
        assert v.levels == want, step
    # a change in another book pushes nothing here
    src.levels["BBB"][(0, 1)] = (1, 1)
    src.ver += 1
    now += 30 * MS
    assert pushes(f.flush(now)) == []


# ---- the table against a model: random requests, trades, books, time and loss ---------------------------
ACCOUNTS = ("alice", "bob")
SUBS = ("s1", "s2")
DROP = st.sampled_from([-1, -1, 0, 1, 2])  # which push of a flush is lost
LIMITS = FeedLimits(max_subs=3, max_per_account=2, lease_min_ms=500, push_rate=50.0, push_burst=2,
                    queue_rows=8, push_bytes=400, book_interval_ms=20)


class FeedMachine(RuleBasedStateMachine):
    """``Feeds`` driven by random subscribes, renewals, resyncs, unsubscribes, trades executed,
    revised, undone and made final, book changes, and time passing with pushes lost or duplicated
    on the way; ``Viewer``s receive. Checked always: gapless seqs per subscription, pushes only
    to live subscriptions' current destination, leases expire. After ``quiesce`` (no more loss,
    renewals and resyncs answered): every viewer holds exactly the truth."""

    @initialize()
    def setup(self) -> None:
        self.src = FakeSource()
        self.f = Feeds(self.src, LIMITS)
        self.now = T0
        self.viewers: dict[tuple[str, str], Viewer] = {}
        self.live: dict[tuple[str, str], dict[str, Any]] = {}  # what the model expects held
        self.last_seq: dict[tuple[str, str], int] = {}
        self.trades: list[Trade] = []
        self.n = 0
        self.req = 0
        self.ask("alice", "s1", "trades", "", 0, 3_000, False, "a")  # something to watch from the start
        self.ask("bob", "s1", "book", "AAA", 2, 3_000, False, "a")

    # -- delivery
    def deliver(self, out: list[tuple[Any, Any]], lose: int = -1, dup: bool = False) -> None:
        """Hand ``out`` to the viewers, all but push number ``lose`` (-1: none), each twice with ``dup``."""
        n = -1
        for dst, m in out:
            key = (dst.account, m.sub)
            if type(m) is FeedAck:
                self.viewers.setdefault(key, Viewer()).rx.on_ack(m, self.now)
                continue
            held = self.live.get(key)
            assert held is not None, f"a push to {key}, which holds no subscription"
            assert dst == held["dst"], f"a push to {dst}, not the subscription's destination {held['dst']}"
            first = m.seq == 1
            assert m.seq == (0 if first else self.last_seq[key]) + 1, (key, m.seq, self.last_seq.get(key))
            self.last_seq[key] = m.seq
            n += 1
            if n == lose:
                continue
            v = self.viewers.setdefault(key, Viewer())
            v.push(m, self.now)
            if dup:
                v.push(m, self.now)

    def ask(self, acct: str, sub: str, feed: str, symbol: str, depth: int, lease_ms: int, resync: bool,
            addr: str) -> FeedAck:
        self.req += 1
        key = (acct, sub)
        held = self.live.get(key)
        fresh = held is None or (held["feed"], held["symbol"], held["depth"]) != (feed, symbol, depth)
        n_acct = sum(1 for k in self.live if k[0] == acct and k != key)
        n_all = sum(1 for k in self.live if k != key)
        out = self.f.subscribe(FeedSubscribe(f"r{self.req}", sub, feed, symbol, depth, lease_ms, resync),
                               Dest(acct, addr), self.now)
        (_dst, ack), = out
        if lease_ms == 0:
            assert ack.code == OK
            self.live.pop(key, None)
        elif fresh and (n_all >= LIMITS.max_subs or n_acct >= LIMITS.max_per_account):
            assert ack.code == E_RATE_LIMITED
            self.live.pop(key, None)  # a held one under another feed was given up first
        else:
            assert ack.code == OK, ack
            if fresh:
                self.last_seq[key] = 0
            self.live[key] = {"feed": feed, "symbol": symbol, "depth": depth, "dst": Dest(acct, addr),
                              "expires": self.now + max(lease_ms, LIMITS.lease_min_ms) * MS}
        if resync and ack.code == OK:
            self.viewers.setdefault(key, Viewer()).rx.asked(self.now)
        self.deliver(out)
        return ack

    # -- rules
    @rule(acct=st.sampled_from(ACCOUNTS), sub=st.sampled_from(SUBS),
          what=st.sampled_from([("trades", "", 0), ("trades", "AAA", 0), ("book", "AAA", 2), ("book", "BBB", 3)]),
          lease=st.sampled_from([500, 3_000]), resync=st.booleans(), addr=st.sampled_from(["a", "b"]))
    def subscribe(self, acct: str, sub: str, what: tuple[str, str, int], lease: int, resync: bool, addr: str) -> None:
        self.ask(acct, sub, *what, lease, resync, addr)

    @precondition(lambda self: bool(self.live))
    @rule(data=st.data())
    def unsubscribe(self, data: st.DataObject) -> None:
        acct, sub = data.draw(st.sampled_from(sorted(self.live)))
        h = self.live[(acct, sub)]
        self.ask(acct, sub, h["feed"], h["symbol"], h["depth"], 0, False, h["dst"].addr)

    @rule(maker=st.sampled_from(ACCOUNTS + ("carol",)), taker=st.sampled_from(ACCOUNTS + ("carol",)),
          symbol=st.sampled_from(SYMBOLS), qty=st.integers(1, 9), many=st.sampled_from([1, 1, 1, 3, 12]),
          lose=DROP)
    def execute(self, maker: str, taker: str, symbol: str, qty: int, many: int, lose: int) -> None:
        for _ in range(many):  # a burst: more than the bucket (2 pushes) and, at 12, than the queue (8)
            self.n += 1
            t = trade(self.n, symbol, maker, taker, qty)
            self.trades.append(t)
            self.f.on_events([self.src.executed(t)])
        self.deliver(self.f.flush(self.now), lose)  # as NodeCore flushes after every input

    def _open(self) -> list[Trade]:
        return [t for t in self.trades if t.trade_id not in self.src.final]

    @precondition(lambda self: bool(self._open()))
    @rule(data=st.data(), how=st.sampled_from(["revise", "undo", "again"]), lose=DROP)
    def replay(self, data: st.DataObject, how: str, lose: int) -> None:
        self._replay(data, how)
        self.deliver(self.f.flush(self.now), lose)

    def _replay(self, data: st.DataObject, how: str) -> None:
        t = data.draw(st.sampled_from(self._open()))
        i = self.trades.index(t)
        acct = t.maker_account
        undone = self.src.fills[acct][t.trade_id][2]
        if how == "again":  # executed again (after a replay undid it)
            if undone:
                self.f.on_events([self.src.executed(t)])
            return
        if undone:
            return
        new = None if how == "undo" else t._replace(qty=t.qty + 1)
        self.f.on_events([self.src.revised(t, new)])
        if new is not None:
            self.trades[i] = new

    @precondition(lambda self: bool(self._open()))
    @rule(data=st.data())
    def finalize(self, data: st.DataObject) -> None:
        t = data.draw(st.sampled_from(self._open()))
        self.src.final.add(t.trade_id)
        self.src.wm += 1

    @rule(symbol=st.sampled_from(SYMBOLS), side=st.integers(0, 1), price=st.integers(95, 105),
          qty=st.integers(0, 5), lose=DROP)
    def book(self, symbol: str, side: int, price: int, qty: int, lose: int) -> None:
        if qty:
            self.src.levels[symbol][(side, price)] = (qty, 1 + qty % 3)
        else:
            self.src.levels[symbol].pop((side, price), None)
        self.src.ver += 1
        self.deliver(self.f.flush(self.now), lose)

    @rule(dt=st.sampled_from([0, 1, 5, 30, 30, 200, 700]), lose=DROP,
          dup=st.booleans())
    def advance(self, dt: int, lose: int, dup: bool) -> None:
        self.now += dt * MS
        self.f.tick(self.now)
        for key in [k for k, h in self.live.items() if h["expires"] <= self.now]:
            del self.live[key]
        self.deliver(self.f.flush(self.now), lose, dup)

    @rule()
    def clients_renew(self) -> None:
        """What each client does now and then: renew, asking for a snapshot if its receiver says so."""
        for key, h in sorted(self.live.items()):
            v = self.viewers.setdefault(key, Viewer())
            self.ask(*key, h["feed"], h["symbol"], h["depth"], 3_000, v.rx.resync_due(self.now), h["dst"].addr)

    # -- invariants
    @invariant()
    def held_as_modelled(self) -> None:
        if hasattr(self, "f"):
            assert sorted((a, s) for a, s, *_ in self.f.subscriptions()) == sorted(self.live)
            assert self.f.next_deadline() > self.now or any(h["expires"] <= self.now for h in self.live.values()) \
                or self.f._blocked or self.f._book_due or not self.live

    def teardown(self) -> None:
        if hasattr(self, "f"):
            self.quiesce()

    def quiesce(self) -> None:
        """No more loss; renew everything held, answer every resync, let tokens refill: then every
        viewer of a live subscription must hold exactly the truth."""
        for _round in range(6):
            self.now += 400 * MS
            for key, h in sorted(self.live.items()):
                v = self.viewers.setdefault(key, Viewer())
                self.ask(*key, h["feed"], h["symbol"], h["depth"], 3_000, v.rx.resync_due(self.now), h["dst"].addr)
            self.f.tick(self.now)
            self.deliver(self.f.flush(self.now))
        c = self.f.counters
        for name in ("feed_throttled", "feed_drops", "feed_expired", "feed_resyncs", "feed_refused"):
            event(f"{name} > 0: {c[name] > 0}")
        event(f"a viewer found a gap: {any(v.rx.gaps for v in self.viewers.values())}")
        for key, h in self.live.items():
            v = self.viewers[key]
            assert v.rx.synced, (key, v.rx.gaps)
            if h["feed"] == "trades":
                assert v.fills == self.src.truth(key[0], h["symbol"]), key
            else:
                assert v.levels == {(s, p): (q, k) for s, p, q, k in self.src.depth(h["symbol"], h["depth"])}, key


TestFeedMachine = FeedMachine.TestCase
TestFeedMachine.settings = settings(max_examples=100, stateful_step_count=50, deadline=None)


# ---- the client's receiver alone ------------------------------------------------------------------------
@given(n=st.integers(1, 30), snap_parts=st.integers(1, 4), fate=st.lists(st.sampled_from("kdsr"), max_size=40))
def test_the_receiver_never_delivers_past_a_gap(n: int, snap_parts: int, fate: list[str]) -> None:
    """A snapshot of ``snap_parts`` parts then ``n`` deltas, each kept, dropped (d), sent twice (r)
    or swapped with the next (s): deltas are delivered only in order and only after a complete
    snapshot, and a receiver that says it is in sync has delivered every push that arrived."""
    stream: list[Any] = [FeedSnapshot("s", 1 + i, i, snap_parts, [], [(0, 100 + i, 1, 1)]) for i in range(snap_parts)]
    stream += [FeedDelta("s", snap_parts + 1 + i, [], [(1, 200 + i, 1, 1)]) for i in range(n)]
    sent: list[Any] = []
    i = 0
    fates = iter(fate)
    while i < len(stream):
        f = next(fates, "k")
        if f == "d":
            i += 1
        elif f == "s" and i + 1 < len(stream):
            sent += [stream[i + 1], stream[i]]
            i += 2
        else:
            sent += [stream[i]] * (2 if f == "r" else 1)
            i += 1
    rx = FeedReceiver()
    got = [u for m in sent if (u := rx.on_push(m, 0)) is not None]
    last = 0
    for u in got:
        if u.snapshot:
            assert [lv[1] for lv in u.levels] == [100 + k for k in range(snap_parts)]
        else:
            assert u.seq == last + 1
        last = u.seq
    delivered = [u.seq for u in got]
    assert delivered == sorted(set(delivered))
    if rx.synced:  # nothing that arrived was skipped (a lost tail is found by the next renewal's ack)
        assert max(m.seq for m in sent) == rx.last == delivered[-1]
        assert set(range(1, rx.last + 1)) <= {m.seq for m in sent}
    elif "d" not in fate and "s" not in fate:
        raise AssertionError("lost nothing, reordered nothing, and still not synced")


# ---- through NodeCore: the address check, and real fills ----------------------------------------------------
def core() -> NodeCore:
    c = NodeCore("n1", ["n1"], Venue.of([Instrument("GBX")]), config=NodeConfig(), recovered=True)
    c.tick(T0)
    c.outbox()
    return c


def test_a_subscription_needs_the_address_check_and_never_moves_to_an_unproven_address() -> None:
    c = core()
    home, spoofed = ("192.0.2.7", 4000), ("198.51.100.9", 53)
    m = FeedSubscribe("r1", "s1", "trades", "", 0, 5_000, False)
    c.receive(m, "cl", spoofed, T0, "alice")
    (dst, ack), = c.outbox()
    assert ack.code == E_ADDRESS and len(ack.message) == 16 and c.feeds.subscriptions() == []
    assert dst.addr == spoofed and dst.budget == 3 * request_size(m, "alice")
    c.receive(m._replace(req="r1#" + "0" * 16), "cl", spoofed, T0, "alice")  # a made-up cookie
    assert c.outbox()[0][1].code == E_ADDRESS and c.counters["client_cookies_bad"] == 1
    assert c.feeds.subscriptions() == [] and c.counters["client_challenges"] == 2
    # from its real address the client gets a cookie and echoes it
    c.receive(m, "cl", home, T0, "alice")
    cookie = c.outbox()[0][1].message
    c.receive(m._replace(req=f"r1#{cookie}"), "cl", home, T0, "alice")
    out = c.outbox()
    assert [type(x) for _d, x in out] == [FeedAck, FeedSnapshot] and out[0][1].code == OK
    assert out[0][1].req == "r1" and all(d.addr == home and d.budget == 0 for d, _x in out)
    # a renewal from elsewhere without that address's cookie changes nothing: pushes stay home
    c.receive(m._replace(req="r2"), "cl", spoofed, T0 + MS, "alice")
    assert c.outbox()[0][1].code == E_ADDRESS
    c.receive(ClientSubmit("o1", 1, "GBX", "", 1, 100, 5, 0, 0, 1000), "cl", home, T0 + 2 * MS, "alice")
    c.receive(ClientSubmit("o2", 1, "GBX", "", 0, 100, 2, 0, 0, 1000), "c2", ("203.0.113.1", 1), T0 + 3 * MS, "bob")
    feed = [(d, x) for d, x in c.outbox() if type(x) is FeedDelta]
    assert len(feed) == 1 and feed[0][0].addr == home
    assert feed[0][1].fills == [("n1:2/0", "GBX", "n1:1", 1, 100, 2, 0, True, 0, False)]  # alice's sell, as maker
    assert c.counters["feed_pushes"] == 2 and c.status()["feeds"]["subscriptions"] == 1
    # an unsubscribe ends it at once
    c.receive(m._replace(req=f"r3#{cookie}", lease_ms=0), "cl", home, T0 + 4 * MS, "alice")
    assert c.outbox()[0][1].message == "unsubscribed" and c.feeds.subscriptions() == []


def proven(c: NodeCore, m: FeedSubscribe, account: str, addr: Any, now: int) -> list[tuple[Any, Any]]:
    """``m`` sent as a client does: answered with an address check, sent again with the cookie."""
    c.receive(m, "cl", addr, now, account)
    (_d, check), = c.outbox()
    assert check.code == E_ADDRESS
    c.receive(m._replace(req=f"{m.req}#{check.message}"), "cl", addr, now, account)
    return c.outbox()


def test_a_trades_snapshot_holds_the_accounts_own_fills_so_far() -> None:
    c = core()
    for i, (acct, side, qty) in enumerate([("alice", 1, 5), ("bob", 0, 2), ("carol", 0, 1)]):
        c.receive(ClientSubmit(f"o{i}", 1, "GBX", "", side, 100, qty, 0, 0, 1000), acct, ("203.0.113.1", i),
                  T0 + (i + 1) * MS, acct)
    c.outbox()
    out = proven(c, FeedSubscribe("r", "s", "trades", "", 0, 5_000, False), "bob", ("192.0.2.7", 1), T0 + 9 * MS)
    snap = [x for _d, x in out if type(x) is FeedSnapshot]
    # bob's buy, as taker, with bob's own order id only; carol's fill is not bob's
    assert len(snap) == 1 and snap[0].fills == [("n1:2/0", "GBX", "n1:2", 0, 100, 2, 1, True, 0, False)]
    out = proven(c, FeedSubscribe("r", "s", "book", "GBX", 5, 5_000, False), "carol", ("192.0.2.8", 1),
                 T0 + 10 * MS)
    snap = [x for _d, x in out if type(x) is FeedSnapshot]
    assert snap[0].levels == [(1, 100, 2, 1)] and snap[0].fills == []
