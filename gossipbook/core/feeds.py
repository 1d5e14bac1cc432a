"""Pushed feeds: subscriptions a remote client leases at one node, and the client's side of one.

Theory of operation
-------------------
Node side (``Feeds``, driven by ``NodeCore``). A client sends ``FeedSubscribe``; the node keeps a
subscription keyed by ``(account, sub)`` for ``lease_ms`` and answers ``FeedAck``; then it pushes,
to the address the subscription was made or last renewed from, a **snapshot** (``FeedSnapshot``
parts) followed by **deltas** (``FeedDelta``). Every push carries the subscription's next sequence
number, so a client that sees ``seq`` jump lost a datagram and asks for a fresh snapshot
(``resync``). The client renews with the same message before the lease runs out; a subscription
whose lease passed is swept in ``tick``, so a client that vanished costs nothing after it.

- ``trades``: the account's fills (its own order, side and role, never the counterparty's). A fill
  is pushed when the fold makes it, again when a replay revises or undoes it, and once more when it
  becomes final (checked whenever the stable watermark moves). Changes of one fill not yet pushed
  are merged (the push carries its latest state).
- ``book``: one symbol's top ``depth`` levels per side. The node diffs the levels against what it
  last pushed to that subscription and sends the levels that changed (quantity 0: the level left
  the top ``depth``); book changes are conflated to one pass per ``book_interval_ms``.

Inputs: ``subscribe(msg, dst, now)``, ``on_events(events)`` (the fold's ``TradeExecuted`` /
``TradeRevised``), ``tick(now)``; outputs: ``flush(now)`` (pushes due) and ``next_deadline()``.
What the replica holds is read through a ``FeedSource`` (``ReplicaSource`` for the eventual core).

Rules that hold:
- Pushes go only to ``dst`` as the driver gave it; the driver gives only destinations that proved
  they receive at their address (``ClientGate``'s cookie: ``NodeCore._subscribe``), so a forged
  source address can never be made the target of a feed.
- Per subscription, sequence numbers are gapless from 1: every push takes the next one.
- Everything a client can grow is capped and counted: subscriptions per node and per account
  (``feed_refused``), rows queued per subscription (beyond it the queue is dropped, counted in
  ``feed_drops``, and a snapshot replaces it), fills tracked per account, and pushes: a token bucket
  per subscription and one per node bound messages per second, and each push is at most about
  ``push_bytes`` of rows, so what a subscriber gets is bounded whatever it asks.

Client side (``FeedReceiver``, pure too): checks sequence numbers, assembles snapshot parts, and
says when a fresh snapshot is needed (a gap, an ack showing a push it never saw, a snapshot that
does not come).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from heapq import heapify, heappop, heappush
from typing import Any, NamedTuple, Protocol

import msgpack

from .book import Trade
from .ops import TradeExecuted, TradeRevised
from .wire import FEED_ROWS, MAX_INT, U64, FeedAck, FeedDelta, FeedSnapshot, FeedSubscribe

TRADES, BOOK = "trades", "book"
FEEDS = (TRADES, BOOK)
# reply codes (``wire.REPLY_CODES``): ok, unknown instrument, bad request, rate limited
_OK, _E_UNKNOWN_INSTRUMENT, _E_BAD, _E_LIMIT = 0, 6, 8, 11
_FAR = 1 << 62
# a fill row's fields (``wire.FILL_ROW``)
F_ID, F_SYMBOL, F_ORDER, F_SIDE, F_PRICE, F_QTY, F_ROLE, F_FINAL, F_REVISIONS, F_UNDONE = range(10)
FEED_COUNTERS = ("feed_subscribes", "feed_renewals", "feed_resyncs", "feed_unsubscribes", "feed_refused",
                 "feed_expired", "feed_pushes", "feed_snapshots", "feed_drops", "feed_throttled",
                 "feed_final_untracked")


@dataclass(frozen=True, slots=True)
class FeedLimits:
    """What one node grants feed subscribers (the defaults suit a node with a few hundred clients)."""

    max_subs: int = 1_000  # subscriptions per node
    max_per_account: int = 8
    lease_min_ms: int = 500  # a lease asked for is clamped into [min, max]
    lease_max_ms: int = 60_000
    push_rate: float = 200.0  # push messages per second per subscription (token bucket)
    push_burst: int = 200
    node_push_rate: float = 20_000.0  # ... and per node, all subscriptions together
    node_push_burst: int = 20_000
    queue_rows: int = 1_000  # fills queued per subscription; beyond: dropped, a snapshot instead
    account_rows: int = 1_000  # fills tracked per subscribed account (revisions, finality)
    snapshot_rows: int = 200  # a trades snapshot carries the newest this many fills
    max_depth: int = 50  # book levels per side at most
    book_interval_ms: int = 20  # book changes are pushed at most this often (conflated)
    push_bytes: int = 1_100  # rows per push at most this many msgpack bytes (one datagram)

    def __post_init__(self) -> None:
        if (self.push_rate <= 0 or self.node_push_rate <= 0
                or min(self.max_subs, self.max_per_account, self.lease_min_ms, self.push_burst,
                       self.node_push_burst, self.queue_rows, self.account_rows, self.snapshot_rows,
                       self.max_depth, self.book_interval_ms) < 1
                or self.lease_max_ms < self.lease_min_ms or self.push_bytes < 400):
            raise ValueError("feed limits must be positive (lease_max_ms >= lease_min_ms, push_bytes >= 400)")


class FeedSource(Protocol):
    """What a feed reads from the node's replica."""

    def fill_rows(self, account: str, limit: int) -> list[tuple[Any, ...]]:
        """``account``'s newest ``limit`` fills as ``wire.FILL_ROW`` tuples, oldest first."""
        ...

    def is_final(self, trade_id: str) -> bool: ...

    def watermark(self) -> Any:
        """Anything that changes whenever finality may have moved."""
        ...

    def version(self) -> int:
        """Anything that changes whenever a book may have changed."""
        ...

    def symbols(self) -> Sequence[str]: ...

    def depth(self, symbol: str, n: int) -> list[tuple[int, int, int, int]]:
        """``symbol``'s top ``n`` levels per side as ``wire.LEVEL_ROW`` tuples, bids then asks."""
        ...


def row_of_dict(r: dict[str, Any]) -> tuple[Any, ...]:
    """A ``fills.AccountFills.rows`` entry as a ``wire.FILL_ROW``."""
    return (str(r["trade_id"]), str(r["symbol"]), str(r["order_id"]), 0 if r["side"] == "buy" else 1,
            int(r["price"]), int(r["qty"]), 1 if r["role"] == "taker" else 0, bool(r["final"]),
            min(int(r["revisions"]), 1 << 32), bool(r["undone"]))


class ReplicaSource:
    """``FeedSource`` over the eventual core's replica and its per-account fills."""

    def __init__(self, replica: Any, fills: Any) -> None:
        self.replica = replica
        self.fills = fills

    def fill_rows(self, account: str, limit: int) -> list[tuple[Any, ...]]:
        return [row_of_dict(r) for r in self.fills.rows(account, self.replica.trade_is_final, limit)]

    def is_final(self, trade_id: str) -> bool:
        return bool(self.replica.trade_is_final(trade_id))

    def watermark(self) -> Any:
        return self.replica.watermark()

    def version(self) -> int:
        return int(self.replica.op_count)

    def symbols(self) -> Sequence[str]:
        return list(self.replica.books)

    def depth(self, symbol: str, n: int) -> list[tuple[int, int, int, int]]:
        book = self.replica.books.get(symbol)
        if book is None:
            return []
        d = book.depth(n)
        return ([(0, p, min(q, U64), min(k, 1 << 32)) for p, q, k in d.bids]
                + [(1, p, min(q, U64), min(k, 1 << 32)) for p, q, k in d.asks])


def fill_row(t: Trade, account: str, *, final: bool = False, revisions: int = 0, undone: bool = False) -> tuple[Any, ...]:
    """``t`` as ``account`` sees it (its own order, side and role)."""
    taker = t.taker_account == account
    side = t.taker_side if taker else 1 - t.taker_side
    return (t.trade_id, t.symbol, t.taker if taker else t.maker, side, min(t.price, MAX_INT), min(t.qty, MAX_INT),
            1 if taker else 0, final, min(revisions, 1 << 32), undone)


@dataclass(slots=True)
class _Ledger:
    """One subscribed account's fills: their latest state, and those still waiting to be final."""

    rows: OrderedDict[str, tuple[Any, ...]] = field(default_factory=OrderedDict)
    pending: dict[str, None] = field(default_factory=dict)
    subs: set[tuple[str, str]] = field(default_factory=set)


@dataclass(slots=True)
class _Sub:
    key: tuple[str, str]  # (account, sub)
    feed: str
    symbol: str
    depth: int
    dst: Any
    expires: int
    n: int  # unique per subscription made (stale heap entries are told apart by it)
    tokens: float
    at: int  # when ``tokens`` was last refilled
    heap_at: int  # the time of its entry in ``Feeds._leases`` (other entries of it are stale)
    seq: int = 0
    snapshot_due: bool = True
    book_dirty: bool = False
    blocked: bool = False  # waiting for tokens (an entry in ``Feeds._blocked``)
    queue: OrderedDict[str, tuple[Any, ...]] = field(default_factory=OrderedDict)
    view: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)  # book as last pushed


def _size(row: tuple[Any, ...]) -> int:
    return len(msgpack.packb(row, use_bin_type=True))


class Feeds:
    """The node's subscription table (see the module header). Counts into ``counters``."""

    def __init__(self, source: FeedSource, limits: FeedLimits | None = None,
                 counters: dict[str, int] | None = None) -> None:
        self.source = source
        self.limits = limits or FeedLimits()
        self.counters = counters if counters is not None else {}
        for k in FEED_COUNTERS:
            self.counters.setdefault(k, 0)
        self._subs: dict[tuple[str, str], _Sub] = {}
        self._per_account: dict[str, int] = {}
        self._ledgers: dict[str, _Ledger] = {}  # accounts with a trades subscription
        self._leases: list[tuple[int, int, tuple[str, str]]] = []  # (expires, n, key), one per sub
        self._blocked: list[tuple[int, int, tuple[str, str]]] = []  # (ready at, n, key)
        self._ready: set[tuple[str, str]] = set()  # work to do, tokens permitting
        self._book_subs: set[tuple[str, str]] = set()
        self._book_seen: int | None = None  # the source version the last book pass looked at
        self._book_pass_at = 0  # no book pass before this
        self._book_due = False  # the version moved and a pass waits for ``_book_pass_at``
        self._wm: Any = None
        self._n = 0
        lim = self.limits
        self._node_tokens = float(lim.node_push_burst)
        self._node_at: int | None = None
        self._short_ns = 0  # how long the last refused ``_take`` must wait for its tokens

    # ---- requests ----------------------------------------------------------------------------------
    def subscribe(self, m: FeedSubscribe, dst: Any, now: int) -> list[tuple[Any, FeedAck]]:
        """Make, renew, resync or end (``lease_ms`` 0) ``dst.account``'s subscription ``m.sub``.
        ``dst`` must be an address that proved it receives there (see the module header)."""
        lim = self.limits
        acct = getattr(dst, "account", "")
        key = (acct, m.sub)
        sub = self._subs.get(key)

        def ack(code: int, message: str, lease: int = 0, snapshot: bool = False) -> list[tuple[Any, FeedAck]]:
            return [(dst, FeedAck(m.req, code, message, m.sub, lease, sub.seq if sub is not None else 0, snapshot))]

        if m.lease_ms == 0:
            if sub is not None:
                self._remove(key)
                self.counters["feed_unsubscribes"] += 1
            return ack(_OK, "unsubscribed")
        refusal = self._check(m)
        if refusal is not None:
            self.counters["feed_refused"] += 1
            return ack(*refusal)
        symbol = m.symbol or (self.source.symbols()[0] if m.feed == BOOK else "")
        depth = m.depth if m.feed == BOOK else 0
        if sub is not None and (sub.feed, sub.symbol, sub.depth) != (m.feed, symbol, depth):
            self._remove(key)  # the same id for another feed: a new subscription
            sub = None
        lease = min(max(m.lease_ms, lim.lease_min_ms), lim.lease_max_ms)
        if sub is None:
            if len(self._subs) >= lim.max_subs:
                self.counters["feed_refused"] += 1
                return ack(_E_LIMIT, f"too many subscriptions at this node (at most {lim.max_subs}); retry later")
            if self._per_account.get(acct, 0) >= lim.max_per_account:
                self.counters["feed_refused"] += 1
                return ack(_E_LIMIT, f"too many subscriptions for account {acct} at this node (at most "
                                     f"{lim.max_per_account}); end one first")
            sub = self._add(key, m.feed, symbol, depth, dst, now, now + lease * 1_000_000)
            self.counters["feed_subscribes"] += 1
        else:
            self.counters["feed_renewals"] += 1
            sub.dst = dst  # the address that just proved itself (a client may have moved)
            if m.resync and not sub.snapshot_due:
                self.counters["feed_resyncs"] += 1
                sub.snapshot_due = True
                sub.queue.clear()
                self._wake_sub(sub)
        sub.expires = now + lease * 1_000_000
        if sub.expires < sub.heap_at:  # a shorter lease than before: its entry must come up sooner
            sub.heap_at = sub.expires
            heappush(self._leases, (sub.expires, sub.n, key))
        return ack(_OK, "ok", lease, sub.snapshot_due)

    def _check(self, m: FeedSubscribe) -> tuple[int, str] | None:
        if m.feed not in FEEDS:
            return _E_BAD, f"unknown feed {m.feed!r} (trades or book)"
        symbols = self.source.symbols()
        if m.symbol and m.symbol not in symbols:
            return _E_UNKNOWN_INSTRUMENT, f"unknown instrument {m.symbol!r}"
        if m.feed == BOOK:
            if not symbols:
                return _E_UNKNOWN_INSTRUMENT, "this venue trades no instrument"
            if not 1 <= m.depth <= self.limits.max_depth:
                return _E_BAD, f"book depth must be 1 to {self.limits.max_depth}, not {m.depth}"
        return None

    def _add(self, key: tuple[str, str], feed: str, symbol: str, depth: int, dst: Any, now: int,
             expires: int) -> _Sub:
        self._n += 1
        lim = self.limits
        sub = _Sub(key, feed, symbol, depth, dst, expires, self._n, float(lim.push_burst), now, expires)
        self._subs[key] = sub
        self._per_account[key[0]] = self._per_account.get(key[0], 0) + 1
        heappush(self._leases, (expires, sub.n, key))  # renewals: ``tick`` moves it on when it comes up
        if feed == TRADES:
            led = self._ledgers.get(key[0])
            if led is None:
                led = self._ledgers[key[0]] = _Ledger()
                for row in self.source.fill_rows(key[0], lim.account_rows):
                    led.rows[row[F_ID]] = row
                    if not row[F_FINAL] and not row[F_UNDONE]:
                        led.pending[row[F_ID]] = None
            led.subs.add(key)
        else:
            self._book_subs.add(key)
        self._ready.add(key)
        return sub

    def _remove(self, key: tuple[str, str]) -> None:
        sub = self._subs.pop(key)
        acct = key[0]
        left = self._per_account[acct] - 1
        if left:
            self._per_account[acct] = left
        else:
            del self._per_account[acct]
        self._ready.discard(key)
        self._book_subs.discard(key)
        if sub.feed == TRADES:
            led = self._ledgers[acct]
            led.subs.discard(key)
            if not led.subs:
                del self._ledgers[acct]
        if len(self._leases) > 2 * len(self._subs) + 64:  # removed subscriptions' entries: rebuild
            self._leases = [(s.heap_at, s.n, k) for k, s in self._subs.items()]
            heapify(self._leases)

    # ---- the fold's events -------------------------------------------------------------------------
    def on_events(self, events: Iterable[Any]) -> None:
        """Trades made, revised or undone by the fold: queued for the accounts' trades feeds."""
        if not self._ledgers:
            return
        for ev in events:
            t = type(ev)
            if t is TradeExecuted:
                self._fill(ev.trade, 0)
            elif t is TradeRevised:
                if ev.new is None:
                    self._undo(ev.old)
                else:
                    self._fill(ev.new, 1)

    def _fill(self, trade: Trade, bump: int) -> None:
        for acct in {trade.maker_account, trade.taker_account}:
            led = self._ledgers.get(acct) if acct else None
            if led is None:
                continue
            tid = trade.trade_id
            prev = led.rows.get(tid)
            final = self.source.is_final(tid)
            row = fill_row(trade, acct, final=final, revisions=(prev[F_REVISIONS] if prev else 0) + bump)
            self._put(led, row)
            if final:
                led.pending.pop(tid, None)
            else:
                led.pending[tid] = None
                if len(led.pending) > self.limits.account_rows:
                    del led.pending[next(iter(led.pending))]
                    self.counters["feed_final_untracked"] += 1
            self._queue(led, row)

    def _undo(self, old: Trade) -> None:
        for acct in {old.maker_account, old.taker_account}:
            led = self._ledgers.get(acct) if acct else None
            if led is None:
                continue
            prev = led.rows.get(old.trade_id) or fill_row(old, acct)
            row = (*prev[:F_FINAL], False, min(prev[F_REVISIONS] + 1, 1 << 32), True)
            self._put(led, row)
            led.pending.pop(old.trade_id, None)
            self._queue(led, row)

    def _put(self, led: _Ledger, row: tuple[Any, ...]) -> None:
        rows = led.rows
        if row[F_ID] not in rows and len(rows) >= self.limits.account_rows:
            old, _ = rows.popitem(last=False)
            led.pending.pop(old, None)
        rows[row[F_ID]] = row  # an update keeps the fill's place (snapshots list fills oldest first)

    def _queue(self, led: _Ledger, row: tuple[Any, ...]) -> None:
        for key in led.subs:
            sub = self._subs[key]
            if sub.snapshot_due or (sub.symbol and sub.symbol != row[F_SYMBOL]):
                continue  # a snapshot on its way carries it; another instrument
            q = sub.queue
            q[row[F_ID]] = row
            q.move_to_end(row[F_ID])
            if len(q) > self.limits.queue_rows:  # the client cannot keep up: start it afresh
                self.counters["feed_drops"] += len(q)
                q.clear()
                sub.snapshot_due = True
            self._wake_sub(sub)

    def _check_final(self) -> None:
        if not self._ledgers:
            return
        wm = self.source.watermark()
        if wm == self._wm:
            return
        self._wm = wm
        is_final = self.source.is_final
        for led in self._ledgers.values():
            if not led.pending:
                continue
            for tid in [t for t in led.pending if is_final(t)]:
                del led.pending[tid]
                row = led.rows.get(tid)
                if row is None or row[F_UNDONE] or row[F_FINAL]:
                    continue
                row = (*row[:F_FINAL], True, *row[F_FINAL + 1:])
                led.rows[tid] = row
                self._queue(led, row)

    # ---- time --------------------------------------------------------------------------------------
    def tick(self, now: int) -> None:
        """Sweep subscriptions whose lease has passed."""
        heap = self._leases
        while heap and heap[0][0] <= now:
            at, n, key = heappop(heap)
            sub = self._subs.get(key)
            if sub is None or sub.n != n or sub.heap_at != at:
                continue  # removed, replaced, or an entry superseded by a sooner one
            if sub.expires > now:  # renewed: its entry moves to the new expiry
                sub.heap_at = sub.expires
                heappush(heap, (sub.expires, n, key))
                continue
            self._remove(key)
            self.counters["feed_expired"] += 1

    def next_deadline(self) -> int:
        d = _FAR
        if self._leases:
            d = self._leases[0][0]
        if self._blocked:
            d = min(d, self._blocked[0][0])
        if self._book_due:
            d = min(d, self._book_pass_at)
        return d

    # ---- pushes ------------------------------------------------------------------------------------
    def flush(self, now: int) -> list[tuple[Any, Any]]:
        """The pushes due now, in order per subscription, within the rate bounds."""
        if not self._subs:
            return []
        self._check_final()
        self._refill_node(now)
        blocked = self._blocked
        while blocked and blocked[0][0] <= now:
            _t, n, key = heappop(blocked)
            sub = self._subs.get(key)
            if sub is not None and sub.n == n:
                sub.blocked = False
                self._ready.add(key)
        if self._book_subs:
            version = self.source.version()
            if version != self._book_seen:
                if now >= self._book_pass_at:
                    self._book_seen = version
                    self._book_pass_at = now + self.limits.book_interval_ms * 1_000_000
                    self._book_due = False
                    for key in self._book_subs:
                        self._subs[key].book_dirty = True
                        self._wake_sub(self._subs[key])
                else:
                    self._book_due = True
        if not self._ready:
            return []
        out: list[tuple[Any, Any]] = []
        depths: dict[tuple[str, int], list[tuple[int, int, int, int]]] = {}
        for key in list(self._ready):
            sub = self._subs[key]
            self._ready.discard(key)
            if not self._pump(sub, now, out, depths):  # out of tokens with work left: wait for them
                self.counters["feed_throttled"] += 1
                sub.blocked = True
                heappush(blocked, (now + max(1, self._short_ns), sub.n, key))
        return out

    def _wake_sub(self, sub: _Sub) -> None:
        if not sub.blocked:
            self._ready.add(sub.key)

    def _refill_node(self, now: int) -> None:
        lim = self.limits
        if self._node_at is None or now < self._node_at:
            self._node_at = now
            return
        self._node_tokens = min(float(lim.node_push_burst),
                                self._node_tokens + (now - self._node_at) * lim.node_push_rate / 1e9)
        self._node_at = now

    def _take(self, sub: _Sub, n: int, now: int) -> bool:
        """Spend ``n`` push tokens of ``sub`` and of the node, if both have them (or, for more than a
        bucket holds, if both are full: one big snapshot may go, then nothing until paid back)."""
        lim = self.limits
        if now > sub.at:
            sub.tokens = min(float(lim.push_burst), sub.tokens + (now - sub.at) * lim.push_rate / 1e9)
            sub.at = now
        need, node_need = min(n, lim.push_burst), min(n, lim.node_push_burst)
        if sub.tokens < need or self._node_tokens < node_need:
            self._short_ns = int(max((need - sub.tokens) / lim.push_rate,
                                     (node_need - self._node_tokens) / lim.node_push_rate) * 1e9)
            return False
        sub.tokens -= n
        self._node_tokens -= n
        return True

    def _pump(self, sub: _Sub, now: int, out: list[tuple[Any, Any]],
              depths: dict[tuple[str, int], list[tuple[int, int, int, int]]]) -> bool:
        """Push what ``sub`` has to push; True when nothing is left, False when tokens ran out."""
        book = sub.feed == BOOK
        if sub.snapshot_due:
            if book:
                levels = self._depth(sub, depths)
                parts = self._pack(levels)
            else:
                led = self._ledgers[sub.key[0]]
                rows = [r for r in led.rows.values() if not sub.symbol or r[F_SYMBOL] == sub.symbol]
                parts = self._pack(rows[-self.limits.snapshot_rows:])
            if not self._take(sub, len(parts), now):
                return False
            total = len(parts)
            for i, rows in enumerate(parts):
                sub.seq += 1
                out.append((sub.dst, FeedSnapshot(sub.key[1], sub.seq, i, total, [] if book else rows,
                                                  rows if book else [])))
            self.counters["feed_pushes"] += total
            self.counters["feed_snapshots"] += 1
            sub.snapshot_due = False
            sub.queue.clear()
            if book:
                sub.view = {(r[0], r[1]): (r[2], r[3]) for r in levels}
                sub.book_dirty = False
        q = sub.queue
        while q:
            if not self._take(sub, 1, now):
                return False
            rows = []
            size = 0
            while q and len(rows) < FEED_ROWS:
                tid, row = next(iter(q.items()))
                s = _size(row)
                if rows and size + s > self.limits.push_bytes:
                    break
                del q[tid]
                rows.append(row)
                size += s
            sub.seq += 1
            out.append((sub.dst, FeedDelta(sub.key[1], sub.seq, rows, [])))
            self.counters["feed_pushes"] += 1
        if sub.book_dirty:
            levels = self._depth(sub, depths)
            now_view = {(r[0], r[1]): (r[2], r[3]) for r in levels}
            changed = [(s, p, q_, n) for (s, p), (q_, n) in now_view.items() if sub.view.get((s, p)) != (q_, n)]
            changed += [(s, p, 0, 0) for (s, p) in sub.view if (s, p) not in now_view]
            if changed:
                parts = self._pack(sorted(changed))
                if not self._take(sub, len(parts), now):
                    return False
                for rows in parts:
                    sub.seq += 1
                    out.append((sub.dst, FeedDelta(sub.key[1], sub.seq, [], rows)))
                self.counters["feed_pushes"] += len(parts)
                sub.view = now_view
            sub.book_dirty = False
        return True

    def _depth(self, sub: _Sub, depths: dict[tuple[str, int], list[tuple[int, int, int, int]]]
               ) -> list[tuple[int, int, int, int]]:
        k = (sub.symbol, sub.depth)
        d = depths.get(k)
        if d is None:
            d = depths[k] = self.source.depth(sub.symbol, sub.depth)
        return d

    def _pack(self, rows: Sequence[tuple[Any, ...]]) -> list[list[tuple[Any, ...]]]:
        """``rows`` cut into pushes of at most ``push_bytes`` (and ``FEED_ROWS`` rows); at least one."""
        parts: list[list[tuple[Any, ...]]] = [[]]
        size = 0
        limit = self.limits.push_bytes
        for row in rows:
            s = _size(row)
            if parts[-1] and (size + s > limit or len(parts[-1]) >= FEED_ROWS):
                parts.append([])
                size = 0
            parts[-1].append(row)
            size += s
        return parts

    # ---- introspection -----------------------------------------------------------------------------
    def stats(self) -> dict[str, int]:
        """Levels for ``status``: subscriptions held, by feed, and accounts holding them."""
        book = len(self._book_subs)
        return {"subscriptions": len(self._subs), "trades": len(self._subs) - book, "book": book,
                "accounts": len(self._per_account)}

    def subscriptions(self) -> list[tuple[str, str, str, str, int]]:
        """``(account, sub, feed, symbol, seq)`` of every subscription held (tests, debugging)."""
        return [(k[0], k[1], s.feed, s.symbol, s.seq) for k, s in self._subs.items()]


# ---- the client's side ---------------------------------------------------------------------------
class FeedUpdate(NamedTuple):
    """What a subscription delivers: a whole snapshot (``snapshot``: replace what you hold) or a
    delta (apply it), with the sequence number of its last push."""

    snapshot: bool
    seq: int
    fills: list[tuple[Any, ...]]
    levels: list[tuple[Any, ...]]


class FeedReceiver:
    """One subscription's pushes as its client receives them: in sequence, or not at all.

    ``on_push`` returns a ``FeedUpdate`` for a delta that is the next in sequence and for a
    snapshot once all its parts are in; anything else returns None. A delta that skips a number,
    a snapshot part out of place, a delta newer than a snapshot that arrived before it, or an ack
    naming a push never seen is a **gap**: the receiver
    stops delivering deltas (``synced`` False) until a snapshot arrives, and ``resync_due`` says
    when to ask for one (at once after a gap; again every ``retry_ns`` while none comes).
    Duplicates (a number already delivered) are dropped silently."""

    def __init__(self, retry_ns: int = 1_000_000_000) -> None:
        self.retry_ns = retry_ns
        self.last = 0  # the last sequence number delivered
        self.synced = False
        self.gaps = 0
        self._ahead = 0  # the highest delta seq seen while not synced (it must not be skipped)
        self._asked: int | None = None  # when a snapshot was last asked for (None: ask now)
        #: a snapshot being assembled: [first seq, parts, fills, levels, next part wanted]
        self._snap: list[Any] | None = None

    def on_ack(self, ack: FeedAck, now: int) -> None:
        if ack.code != _OK or not ack.lease_ms:
            return
        if ack.snapshot:  # one is on its way (from ack.seq + 1)
            if self.synced:
                self.synced = False
                self._snap = None
            if self._asked is None:
                self._asked = now
        elif self.synced and ack.seq > self.last:  # a push this receiver never saw
            self._gap()

    def on_push(self, msg: FeedSnapshot | FeedDelta, now: int) -> FeedUpdate | None:
        if type(msg) is FeedSnapshot:
            if msg.part == 0:
                if self.synced and msg.seq <= self.last:
                    return None  # an old snapshot, delivered already
                self._snap = [msg.seq, msg.parts, list(msg.fills), list(msg.levels), 1]
            else:
                s = self._snap
                if s is not None and msg.part < s[4] and msg.seq == s[0] + msg.part:
                    return None  # a part already taken, again
                if s is None or msg.part != s[4] or msg.seq != s[0] + msg.part or msg.parts != s[1]:
                    if not (self.synced and msg.seq <= self.last):
                        self._gap()
                    return None
                s[2].extend(msg.fills)
                s[3].extend(msg.levels)
                s[4] += 1
            s = self._snap
            if s[4] < s[1]:
                return None
            self._snap = None
            self.synced = True
            self._asked = now
            self.last = msg.seq
            if self._ahead > msg.seq:  # a delta after this snapshot came before it, and was let go
                self._gap()
            self._ahead = 0
            return FeedUpdate(True, msg.seq, s[2], s[3])
        if not self.synced:
            self._ahead = max(self._ahead, msg.seq)
            return None
        if msg.seq <= self.last:
            return None
        if msg.seq != self.last + 1:
            self._gap()
            return None
        self.last = msg.seq
        return FeedUpdate(False, msg.seq, list(msg.fills), list(msg.levels))

    def _gap(self) -> None:
        self.gaps += 1
        self.synced = False
        self._snap = None
        self._asked = None

    def lost(self) -> None:
        """The consumer could not take an update (its buffer was full): a gap like any other."""
        self._gap()

    def resync_due(self, now: int) -> bool:
        """Whether to ask the node for a snapshot now."""
        if self.synced:
            return False
        return self._asked is None or now - self._asked >= self.retry_ns

    def asked(self, now: int) -> None:
        """A snapshot was asked for at ``now``."""
        self._asked = now
