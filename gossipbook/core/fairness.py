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

from collections import deque
from collections.abc import Iterable
from typing import Any, Protocol

from .ops import AMEND, NEW, Op

#: op kinds that take a place in time priority
ORDER_KINDS = frozenset({NEW, AMEND})
_UNREAD: Any = object()


class PeerClocks(Protocol):
    """What the meter asks of the clock bound (``clockbound.ClockBound`` answers it)."""

    def peer_interval(self, peer: str, now: int) -> tuple[int, int, str] | None: ...


class FairnessMeter:
    """Counts orders of different origins whose time priority this node cannot prove."""

    __slots__ = ("node_id", "recent", "max_origins", "_recent", "counters")

    def __init__(self, node_id: str, recent: int = 32, max_origins: int = 256) -> None:
        if recent < 1 or max_origins < 1:
            raise ValueError("recent and max_origins must be at least 1")
        self.node_id = node_id
        self.recent = recent
        self.max_origins = max_origins
        # origin -> its last orders as [t, e, symbol, tied] (t, e: our clock, ns), in arrival order
        self._recent: dict[str, deque[list[Any]]] = {}
        self.counters: dict[str, int] = {"orders": 0, "tied_orders": 0, "pairs": 0, "unknown": 0,
                                         "hlc_ahead": 0, "origins_over": 0}

    def observe(self, ops: Iterable[Op], now: int, bound: PeerClocks | None) -> None:
        """Ops that entered this node's op-set (its own and peers'), in the order they did."""
        me = self.node_id
        recent = self._recent
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
                mine = recent[origin] = deque(maxlen=self.recent)
            orders += 1
            sym = op.symbol
            entry = [t, e, sym, False]
            for other, theirs in recent.items():
                if other == origin or not theirs:
                    continue
                x = theirs[0]
                if x[0] - t > e + x[1]:
                    continue  # older than all of theirs (a late op, a backlog at a heal): none overlap
                for x in reversed(theirs):
                    gap = t - x[0]
                    reach = e + x[1]
                    if gap > reach:
                        break  # older still: none further back can overlap
                    if gap >= -reach and x[2] == sym:
                        pairs += 1
                        if not x[3]:
                            x[3] = True
                            tied += 1
                        if not entry[3]:
                            entry[3] = True
                            tied += 1
            mine.append(entry)
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
