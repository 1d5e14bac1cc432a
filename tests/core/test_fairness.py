"""The fairness meter (issue 18): pairs of orders from different origins whose stamps are closer than
this node can tell the stampers' clocks apart. Against a brute-force count over every pair, with
bounded memory, unknown clocks counted apart, and fed by a real clock bound."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gossipbook.core.clockbound import ClockBound, ClockConfig
from gossipbook.core.fairness import FairnessMeter
from gossipbook.core.ops import CANCEL, NEW, Op

US, MS = 1_000, 1_000_000
T0 = 1_800_000_000 * 1_000_000_000


class Intervals:
    """A stand-in clock bound: a fixed ``[lo, hi]`` (peer minus us) per peer; None: unknown."""

    def __init__(self, iv: dict[str, tuple[int, int] | None]) -> None:
        self.iv = iv

    def peer_interval(self, peer: str, now: int) -> tuple[int, int, str] | None:
        x = self.iv.get(peer)
        return None if x is None else (x[0], x[1], "synced")


def op(origin: str, seq: int, wall: int, symbol: str = "GBX", kind: int = NEW) -> Op:
    return Op(wall, 0, origin, seq, kind, symbol, "", 0, 100, 1, 0, "")


def oracle(placed: list[tuple[str, int, int, str]]) -> tuple[int, int]:
    """(pairs, tied orders) over every pair of placed orders (origin, t, e, symbol)."""
    pairs = 0
    tied: set[int] = set()
    for i, a in enumerate(placed):
        for j in range(i):
            b = placed[j]
            if a[0] != b[0] and a[3] == b[3] and abs(a[1] - b[1]) <= a[2] + b[2]:
                pairs += 1
                tied |= {i, j}
    return pairs, len(tied)


@settings(max_examples=150)
@given(st.lists(st.tuples(st.sampled_from(["me", "p", "q"]), st.integers(0, 400 * US), st.sampled_from(["A", "B"])),
                max_size=40),
       st.integers(-30 * MS, 30 * MS), st.integers(0, 200 * US), st.integers(-MS, MS), st.integers(0, 50 * US))
def test_counts_every_overlapping_pair_once(steps: list[tuple[str, int, str]], p_mid: int, p_half: int,
                                            q_mid: int, q_half: int) -> None:
    """Each origin's stamps grow (an HLC does); arrivals interleave any way; ``recent`` holds all."""
    ivs = {"p": (p_mid - p_half, p_mid + p_half), "q": (q_mid - q_half, q_mid + q_half)}
    m = FairnessMeter("me", recent=64)
    wall = {"me": T0, "p": T0 + p_mid, "q": T0 + q_mid}  # stamps near each other on their own clocks
    seq = {"me": 0, "p": 0, "q": 0}
    placed = []
    for origin, dt, sym in steps:
        wall[origin] += dt
        seq[origin] += 1
        m.observe([op(origin, seq[origin], wall[origin], sym)], T0, Intervals(ivs))  # type: ignore[arg-type]
        if origin == "me":
            placed.append((origin, wall[origin], 0, sym))
        else:
            lo, hi = ivs[origin]
            placed.append((origin, wall[origin] - (lo + hi) // 2, (hi - lo + 1) // 2 + 1, sym))
    pairs, tied = oracle(placed)
    c = m.counters
    assert (c["pairs"], c["tied_orders"], c["orders"]) == (pairs, tied, len(steps))
    assert 0 <= c["tied_orders"] <= c["orders"]
    st_ = m.status()
    assert st_["coin_toss_rate"] == (tied / len(steps) if steps else None)


def test_a_skewed_clock_is_placed_by_its_measured_offset() -> None:
    """p's clock reads 30 ms ahead, measured to +-100 us: its order stamped 30 ms after ours, at the
    same true moment, is a coin toss; one 1 ms later on the true clock is not."""
    m = FairnessMeter("me")
    ivs = Intervals({"p": (30 * MS - 100 * US, 30 * MS + 100 * US)})
    m.observe([op("me", 1, T0)], T0, ivs)  # type: ignore[arg-type]
    m.observe([op("p", 1, T0 + 30 * MS + 50 * US)], T0, ivs)  # type: ignore[arg-type]
    assert (m.counters["pairs"], m.counters["tied_orders"]) == (1, 2)
    m.observe([op("p", 2, T0 + 31 * MS)], T0, ivs)  # type: ignore[arg-type]
    assert (m.counters["pairs"], m.counters["tied_orders"], m.counters["orders"]) == (1, 2, 3)


def test_cancels_other_symbols_and_unknown_clocks_are_not_paired() -> None:
    m = FairnessMeter("me")
    ivs = Intervals({"p": (0, 0), "u": None})
    m.observe([op("me", 1, T0), op("p", 1, T0, kind=CANCEL), op("p", 2, T0, symbol="OTHER"),
               op("u", 1, T0)], T0, ivs)  # type: ignore[arg-type]
    assert m.counters == {"orders": 2, "tied_orders": 0, "pairs": 0, "unknown": 1, "hlc_ahead": 0, "origins_over": 0}
    m.observe([op("me", 2, T0)], T0, None)  # no clock bound at all: own orders still count
    assert m.counters["orders"] == 3


def test_a_stamp_pulled_ahead_by_another_clock_is_not_placed() -> None:
    """logical > 0: the wall is an earlier reading (a faster node's, adopted by the HLC), not the
    stamper's moment: counted apart, never paired."""
    m = FairnessMeter("me")
    ivs = Intervals({"p": (0, 0)})
    m.observe([op("me", 1, T0), op("p", 1, T0)._replace(logical=3)], T0, ivs)  # type: ignore[arg-type]
    assert (m.counters["orders"], m.counters["hlc_ahead"], m.counters["pairs"]) == (1, 1, 0)


def test_memory_is_bounded_per_origin_and_in_origins() -> None:
    m = FairnessMeter("me", recent=4, max_origins=3)
    ivs = Intervals({f"p{i}": (0, 0) for i in range(10)})
    m.observe([op("p1", s, T0 + s) for s in range(1, 1000)], T0, ivs)  # type: ignore[arg-type]
    assert len(m._recent["p1"]) == 4
    m.observe([op(f"p{i}", 1, T0) for i in range(2, 10)], T0, ivs)  # type: ignore[arg-type]
    assert len(m._recent) == 3 and m.counters["origins_over"] == 6
    m.forget("p1")
    assert "p1" not in m._recent


def test_fed_by_a_real_clock_bound() -> None:
    """The interval comes from ClockBound's samples: p's clock 5 ms ahead, samples of 40 us round
    trip; two orders 5 ms apart on the stamps (the same moment) tie, 5.2 ms apart do not."""
    cb = ClockBound("me", ["p"], ClockConfig())
    t = T0
    for _ in range(3):
        cb.add_sample("p", t, t + 20 * US + 5 * MS, t + 20 * US + 5 * MS, t + 40 * US)
        t += 200 * MS
    now = t - 200 * MS + 40 * US
    lo, hi, _ = cb.peer_interval("p", now) or (0, 0, "")
    assert lo <= 5 * MS <= hi and hi - lo <= 41 * US
    m = FairnessMeter("me")
    m.observe([op("me", 1, now), op("p", 1, now + 5 * MS)], now, cb)
    assert m.counters["tied_orders"] == 2
    m.observe([op("p", 2, now + 5 * MS + 200 * US)], now, cb)
    assert m.counters["tied_orders"] == 2 and m.counters["orders"] == 3
