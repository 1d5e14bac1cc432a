"""The fairness meter counts in bulk where it can (core/fairness.py, "How it stays cheap"); these
properties hold it to the straightforward meter it replaced -- every new order walked against each
other origin's recent orders one by one -- on arbitrary streams: stamps out of order, intervals that
change between calls, small windows that evict, several symbols, cancels, pulled-ahead stamps,
unknown clocks and too many origins. Same counters after every call, and the same tied marks."""

from __future__ import annotations

from collections import deque
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gossipbook.core.fairness import ORDER_KINDS, FairnessMeter
from gossipbook.core.ops import CANCEL, NEW, Op

from .test_fairness import Intervals  # the stand-in clock bound

US = 1_000
T0 = 1_800_000_000 * 1_000_000_000


class OneByOne:
    """The meter as first written (one comparison per recent order), kept here as the reference."""

    def __init__(self, node_id: str, recent: int, max_origins: int) -> None:
        self.node_id, self.recent, self.max_origins = node_id, recent, max_origins
        self._recent: dict[str, deque[list[Any]]] = {}
        self.counters = {"orders": 0, "tied_orders": 0, "pairs": 0, "unknown": 0, "hlc_ahead": 0, "origins_over": 0}

    def observe(self, ops: list[Op], now: int, bound: Any) -> None:
        c = self.counters
        placed: dict[str, Any] = {}
        for op in ops:
            if op.kind not in ORDER_KINDS:
                continue
            if op.logical:
                c["hlc_ahead"] += 1
                continue
            if op.origin == self.node_id:
                t, e = op.wall, 0
            else:
                if op.origin not in placed:
                    iv = bound.peer_interval(op.origin, now)
                    placed[op.origin] = None if iv is None else ((iv[0] + iv[1]) // 2, (iv[1] - iv[0] + 1) // 2 + 1)
                p = placed[op.origin]
                if p is None:
                    c["unknown"] += 1
                    continue
                t, e = op.wall - p[0], p[1]
            mine = self._recent.get(op.origin)
            if mine is None:
                if len(self._recent) >= self.max_origins:
                    c["origins_over"] += 1
                    continue
                mine = self._recent[op.origin] = deque(maxlen=self.recent)
            c["orders"] += 1
            entry = [t, e, op.symbol, False]
            for other, theirs in self._recent.items():
                if other == op.origin or not theirs:
                    continue
                if theirs[0][0] - t > e + theirs[0][1]:
                    continue
                for x in reversed(theirs):
                    gap, reach = t - x[0], e + x[1]
                    if gap > reach:
                        break
                    if gap >= -reach and x[2] == op.symbol:
                        c["pairs"] += 1
                        for y in (x, entry):
                            if not y[3]:
                                y[3] = True
                                c["tied_orders"] += 1
            mine.append(entry)


ORIGINS = ["me", "p", "q", "r", "s"]
# in units of ``scale`` ns: at 1 ns the interval ends often meet exactly (the walk's < and <= matter)
INTERVAL = st.one_of(st.none(), st.tuples(st.integers(-200, 200), st.integers(0, 120))
                     .map(lambda m: (m[0] - m[1], m[0] + m[1])))
STEP = st.tuples(st.sampled_from(ORIGINS), st.integers(-60, 120), st.sampled_from(["A", "B", "C"]),
                 st.sampled_from([NEW, NEW, NEW, CANCEL]), st.integers(0, 9))
CALL = st.tuples(st.lists(STEP, max_size=12), st.fixed_dictionaries({o: INTERVAL for o in ORIGINS[1:]}))


def _scaled(iv: tuple[int, int] | None, scale: int) -> tuple[int, int] | None:
    return None if iv is None else (iv[0] * scale, iv[1] * scale)


@settings(max_examples=80, deadline=None)
@given(calls=st.lists(CALL, max_size=10), recent=st.integers(1, 8), max_origins=st.integers(1, 5),
       scale=st.sampled_from([1, 2, US]))
def test_same_answers_as_the_one_by_one_meter(calls: list[Any], recent: int, max_origins: int, scale: int) -> None:
    fast, ref = FairnessMeter("me", recent, max_origins), OneByOne("me", recent, max_origins)
    wall = dict.fromkeys(ORIGINS, T0)
    seq = 0
    for steps, ivs in calls:
        ivs = {o: _scaled(iv, scale) for o, iv in ivs.items()}
        ops = []
        for origin, dt, sym, kind, logical in steps:
            wall[origin] += dt * scale  # may step back: arrival order is not stamp order
            seq += 1
            ops.append(Op(wall[origin], int(logical == 0), origin, seq, kind, sym, "", 0, 100, 1, 0, ""))
        fast.observe(ops, T0, Intervals(ivs))  # type: ignore[arg-type]
        ref.observe(ops, T0, Intervals(ivs))
        assert fast.counters == ref.counters
    for origin, theirs in ref._recent.items():  # the same window per origin, with the same marks
        o = fast._recent[origin]
        assert [x[0] + x[1] for x in theirs] == o.up and [x[2] for x in theirs] == o.sym
        untied = {o.pos0 + i for i in range(len(o)) if not theirs[i][3]}
        assert untied == {p for ps in o.untied.values() for p in ps}
    assert sorted(fast._recent) == sorted(ref._recent)


def test_a_dense_burst_is_counted_in_bulk_and_agrees() -> None:
    """Every order of three peers overlapping every other (stamps 1 µs apart, ±40 µs): the bulk path."""
    fast, ref = FairnessMeter("me"), OneByOne("me", 32, 256)
    ivs = Intervals({p: (-40 * US, 40 * US) for p in ORIGINS[1:]})
    ops = [Op(T0 + i * US, 0, ORIGINS[i % 4], i, NEW, "AB"[i % 7 == 0], "", 0, 100, 1, 0, "") for i in range(2000)]
    for i in range(0, len(ops), 16):
        fast.observe(ops[i:i + 16], T0, ivs)  # type: ignore[arg-type]
        ref.observe(ops[i:i + 16], T0, ivs)
    assert fast.counters == ref.counters
    assert fast.counters["pairs"] > 20 * len(ops)  # dense indeed: ~33 pairs per order (each window 32 deep)


def test_intervals_that_just_touch_are_a_pair_and_one_ns_apart_are_not() -> None:
    """The walk's bounds are inclusive: a peer order (error 1 ns) 1 ns after or before ours touches
    it, 2 ns does not; with our window ascending (bisection) and not (min / walk)."""
    ivs = Intervals({"p": (0, 0)})  # placed at its stamp, error (0 + 1) // 2 + 1 = 1 ns
    for mine, expect in (([0], 1), ([2], 1), ([-1], 0), ([3], 0), ([2, 0, 1], 3), ([0, 9, 3], 1), ([5, 0], 0), ([9, -2], 0)):
        fast, ref = FairnessMeter("me"), OneByOne("me", 32, 256)
        for i, dt in enumerate(mine):  # our orders, then the peer's at T0 + 1
            for m in (fast, ref):
                m.observe([Op(T0 + dt, 0, "me", i, NEW, "A", "", 0, 100, 1, 0, "")], T0, ivs)  # type: ignore[arg-type]
        for m in (fast, ref):
            m.observe([Op(T0 + 1, 0, "p", 1, NEW, "A", "", 0, 100, 1, 0, "")], T0, ivs)  # type: ignore[arg-type]
        assert fast.counters == ref.counters and fast.counters["pairs"] == expect, (mine, fast.counters)
