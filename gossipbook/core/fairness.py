"""Fairness, measured: how often two orders from different nodes were stamped closer together than
this node can tell the two stampers' clocks apart, so which came first is a coin toss.

Theory of operation
-------------------
Time priority in the book follows the orders' HLC timestamps, each read on its stamping node's
clock. Two orders from different nodes are fairly ordered only if the true order of their
stamping can be shown; when the clocks' uncertainty is wider than the gap between the stamps,
their order is decided by the clocks' error, not by who came first.

This node places every order on its **own** clock: its own orders at their timestamp (error 0),
a peer ``P``'s at ``wall - mid`` with error ``half``, where ``[lo, hi]`` is the interval the clock
bound proves for ``P``'s clock minus ours (``clockbound.ClockBound.peer_interval``, read when the
order reaches this node), ``mid`` its middle and ``half`` its half-width. Our own clock's error
against the reference cancels out of a difference, so it is not counted. Two orders ``a`` and
``b`` from different origins on the same symbol are a **coin toss** when their intervals overlap:
``|t_a - t_b| <= e_a + e_b``.

Cost and memory are bounded: per origin the last ``recent`` orders are kept (a few ints each);
each new order is compared with the other origins' recent orders, newest first, stopping at the
first that is too old to overlap. A pair is counted once, when its second order arrives; pairs
whose first order was pushed out of ``recent`` (a burst, or a partition's backlog arriving at the
heal) are missed, so the counts are a lower bound. An order from a peer whose clock this node
cannot bound yet is counted ``unknown`` and not placed.

How it stays cheap in a dense burst (every recent order of every origin overlapping the new one,
``recent`` x origins comparisons per op if done one by one: 20 µs/op measured): each origin keeps
its orders' interval ends in flat lists (``_Origin``), so the walk's two questions are asked of the
whole window at C speed -- "does the walk stop before the oldest?" (``min`` of the upper ends) and
"does every order it passes reach this one?" (``max`` of the lower ends) -- and, when both say the
window is uniform, the pairs are counted from per-symbol position lists by bisection, and the
orders newly tied are cut from a per-symbol list of untied positions. Anything else takes the
one-by-one walk. The answers are the walk's exactly (tests/core/test_fairness_reference.py holds
it to the one-by-one meter on arbitrary streams).

Only a stamp with ``logical == 0`` is the stamper's clock reading (``hlc.now``: the wall is the
physical time whenever that is ahead of the last stamp). A stamp with ``logical > 0`` carries an
earlier reading, often a faster node's clock whose message pulled the stamper's HLC ahead: the
stamper's own moment cannot be placed from it, so it is counted ``hlc_ahead`` and not placed.
With clocks apart by more than the gap between orders, most of the slower nodes' orders are such:
their time priority then follows the fastest clock, and ``hlc_ahead`` says how many.

Rules that hold:
- Pure: ``now`` and the clock bound are passed in; nothing here reads a clock.
- Counters only grow; ``tied_orders <= orders``; every order observed is counted once in
  ``orders``, ``unknown``, ``hlc_ahead`` or ``origins_over``; at most ``max_origins`` origins are
  tracked.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from typing import Any, Protocol

from .ops import AMEND, NEW, Op

#: op kinds that take a place in time priority
ORDER_KINDS = frozenset({NEW, AMEND})
_UNREAD: Any = object()


class PeerClocks(Protocol):
    """What the meter asks of the clock bound (``clockbound.ClockBound`` answers it)."""

    def peer_interval(self, peer: str, now: int) -> tuple[int, int, str] | None: ...


class _Origin:
    """One origin's last ``recent`` placed orders, oldest first, as parallel lists: the upper end
    ``t + e`` and lower end ``t - e`` of each one's interval on our clock, its symbol; and, by
    position (``pos0`` is the oldest's; positions only grow), each symbol's orders and those of
    them not yet tied. Ascending lists, so a window's tail is found by bisection."""

    __slots__ = ("up", "low", "sym", "pos0", "by_sym", "untied", "desc")

    def __init__(self) -> None:
        self.up: list[int] = []
        self.low: list[int] = []
        self.sym: list[str] = []
        self.pos0 = 0
        self.by_sym: dict[str, list[int]] = {}
        self.untied: dict[str, list[int]] = {}
        #: how many neighbours in ``up`` or ``low`` step down (0: both ascend, as an origin's stamps
        #: do while its measured offset holds still: the walk's end is then found by bisection)
        self.desc = 0

    def __len__(self) -> int:
        return len(self.up)

    def add(self, t: int, e: int, sym: str, tied: bool, cap: int) -> None:
        if len(self.up) >= cap:  # the oldest goes (it is first in its symbol's lists, if there)
            old, p = self.sym[0], self.pos0
            if len(self.up) > 1:
                self.desc -= (self.up[0] > self.up[1]) + (self.low[0] > self.low[1])
            del self.up[0], self.low[0], self.sym[0]
            self.pos0 = p + 1
            mine = self.by_sym[old]
            del mine[0]
            if not mine:
                del self.by_sym[old]
            u = self.untied.get(old)
            if u and u[0] == p:
                del u[0]
        pos = self.pos0 + len(self.up)
        if self.up:
            self.desc += (self.up[-1] > t + e) + (self.low[-1] > t - e)
        self.up.append(t + e)
        self.low.append(t - e)
        self.sym.append(sym)
        self.by_sym.setdefault(sym, []).append(pos)
        if not tied:
            self.untied.setdefault(sym, []).append(pos)

    def tie(self, i: int) -> bool:
        """Mark the order at index ``i`` tied; True if it was not yet."""
        u = self.untied.get(self.sym[i])
        if not u:
            return False
        pos = self.pos0 + i
        k = bisect_left(u, pos)
        if k < len(u) and u[k] == pos:
            del u[k]
            return True
        return False


class FairnessMeter:
    """Counts orders of different origins whose time priority this node cannot prove."""

    __slots__ = ("node_id", "recent", "max_origins", "_recent", "counters")

    def __init__(self, node_id: str, recent: int = 32, max_origins: int = 256) -> None:
        if recent < 1 or max_origins < 1:
            raise ValueError("recent and max_origins must be at least 1")
        self.node_id = node_id
        self.recent = recent
        self.max_origins = max_origins
        # origin -> its last orders (placed on our clock), in arrival order
        self._recent: dict[str, _Origin] = {}
        self.counters: dict[str, int] = {"orders": 0, "tied_orders": 0, "pairs": 0, "unknown": 0,
                                         "hlc_ahead": 0, "origins_over": 0}

    def observe(self, ops: Iterable[Op], now: int, bound: PeerClocks | None) -> None:
        """Ops that entered this node's op-set (its own and peers'), in the order they did.

        For each other origin the orders compared are the walk's: from its newest back to the
        first whose interval ends before this one's starts (``up < t - e``); a pair is one of
        those of the same symbol whose interval starts no later than this one's ends
        (``low <= t + e``). An origin whose oldest order starts after this one ends is skipped."""
        me = self.node_id
        recent = self._recent
        cap = self.recent
        placed: dict[str, tuple[int, int] | None] = {}  # origin -> (mid, error): one read per call
        orders = pairs = tied = unknown = ahead = over = 0
        kinds = ORDER_KINDS
        for op in ops:
            if op.kind not in kinds:
                continue
            if op.logical:
                ahead += 1  # its wall is an earlier (maybe another clock's) reading: not placeable
                continue
            origin = op.origin
            if origin == me:
                t, e = op.wall, 0
            else:
                p = placed.get(origin, _UNREAD)
                if p is _UNREAD:
                    iv = None if bound is None else bound.peer_interval(origin, now)
                    p = placed[origin] = None if iv is None else ((iv[0] + iv[1]) // 2, (iv[1] - iv[0] + 1) // 2 + 1)
                if p is None:
                    unknown += 1
                    continue
                t, e = op.wall - p[0], p[1]
            mine = recent.get(origin)
            if mine is None:
                if len(recent) >= self.max_origins:
                    over += 1
                    continue
                mine = recent[origin] = _Origin()
            orders += 1
            sym = op.symbol
            lo_bound, hi_bound = t - e, t + e  # an order overlaps iff up >= lo_bound and low <= hi_bound
            hit = False
            for other, o in recent.items():
                up = o.up
                if other == origin or not up or o.low[0] > hi_bound or up[-1] < lo_bound:
                    continue  # none, all after it (a late op, a backlog at a heal), or the newest too old
                n = len(up)
                low = o.low
                if not o.desc:  # both ascend: the walk stops after the last that ends before it starts
                    s = bisect_left(up, lo_bound)
                    low_max = low[-1]
                else:
                    if min(up) >= lo_bound:
                        s = 0  # the walk reaches the oldest
                    else:
                        s = n - 1
                        while up[s - 1] >= lo_bound:
                            s -= 1
                    low_max = max(low) if s == 0 else max(low[s:])
                if low_max <= hi_bound:  # every order passed overlaps
                    ps = o.pos0 + s
                    at = o.by_sym.get(sym)
                    k = len(at) - bisect_left(at, ps) if at else 0
                    if k:
                        pairs += k
                        hit = True
                        u = o.untied.get(sym)
                        if u:
                            j = bisect_left(u, ps)
                            if j < len(u):
                                tied += len(u) - j
                                del u[j:]
                    continue
                syms = o.sym
                for i in range(n - 1, s - 1, -1):  # some start after it ends: one by one
                    if low[i] <= hi_bound and syms[i] == sym:
                        pairs += 1
                        hit = True
                        if o.tie(i):
                            tied += 1
            if hit:
                tied += 1
            mine.add(t, e, sym, hit, cap)
        c = self.counters
        c["orders"] += orders
        c["pairs"] += pairs
        c["tied_orders"] += tied
        c["unknown"] += unknown
        c["hlc_ahead"] += ahead
        c["origins_over"] += over

    def forget(self, origin: str) -> None:
        """A member removed: its recent orders no longer pair with anything."""
        self._recent.pop(origin, None)

    def status(self) -> dict[str, Any]:
        """The ``fairness`` section of a node's status (docs/operations.md, Time)."""
        c = self.counters
        return {**c, "coin_toss_rate": c["tied_orders"] / c["orders"] if c["orders"] else None,
                "recent": self.recent}
