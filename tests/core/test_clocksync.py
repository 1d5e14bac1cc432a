"""ClockSync: the NTP bound holds whatever the delay asymmetry; the best (lowest-RTT) sample wins."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gossipbook.core.clocksync import ClockSync, PeerClock

MS = 1_000_000
SEC = 1_000 * MS

offsets = st.integers(-2 * SEC, 2 * SEC)
delays = st.integers(0, 20 * MS)
holds = st.integers(0, MS)
times = st.integers(0, 10**18)


def exchange(theta: int, t1: int, d_out: int, hold: int, d_back: int) -> tuple[int, int, int, int]:
    """The four timestamps of one probe/ack when the peer's clock reads ``theta`` ahead of ours."""
    t2 = t1 + d_out + theta
    t3 = t2 + hold
    t4 = t3 - theta + d_back
    return t1, t2, t3, t4


@given(offsets, times, delays, holds, delays)
def test_single_sample_error_within_half_rtt(theta: int, t1: int, d_out: int, hold: int, d_back: int) -> None:
    cs = ClockSync()
    assert cs.add_sample("p", *exchange(theta, t1, d_out, hold, d_back))
    est = cs.estimate("p")
    assert est is not None
    assert est.rtt_ns == d_out + d_back
    assert abs(est.offset_ns - theta) <= est.uncertainty_ns
    assert est.uncertainty_ns == (d_out + d_back + 1) // 2


@given(offsets, st.lists(st.tuples(times, delays, holds, delays), min_size=1, max_size=30),
       st.integers(1, 10))
def test_estimate_is_lowest_rtt_in_window_and_bounded(theta: int, exs: list[tuple[int, int, int, int]],
                                                      window: int) -> None:
    cs = ClockSync(window=window)
    for t1, d_out, hold, d_back in exs:
        cs.add_sample("p", *exchange(theta, t1, d_out, hold, d_back))
    est = cs.estimate("p")
    assert est is not None
    recent = exs[-window:]
    best_rtt = min(d_out + d_back for _, d_out, _, d_back in recent)
    assert est.rtt_ns == best_rtt
    assert est.samples == len(recent)
    assert abs(est.offset_ns - theta) <= est.uncertainty_ns
    # ties go to the newest sample with that RTT
    newest_best = [e for e in recent if e[1] + e[3] == best_rtt][-1]
    t1, d_out, hold, d_back = newest_best
    expected = ClockSync()
    expected.add_sample("p", *exchange(theta, t1, d_out, hold, d_back))
    assert est.offset_ns == expected.estimate("p").offset_ns  # type: ignore[union-attr]


def test_low_rtt_sample_ages_out_of_the_window() -> None:
    cs = ClockSync(window=3)
    cs.add_sample("p", *exchange(5 * MS, 0, 100, 0, 100))  # rtt 200 ns, the best ever
    for i in range(3):
        cs.add_sample("p", *exchange(5 * MS, (i + 1) * SEC, 4 * MS, 0, MS))  # rtt 5 ms, skewed
    est = cs.estimate("p")
    assert est == PeerClock(offset_ns=5 * MS + (4 * MS - MS) // 2, uncertainty_ns=5 * MS // 2,
                            rtt_ns=5 * MS, samples=3)


def test_impossible_samples_are_rejected_and_counted() -> None:
    cs = ClockSync()
    # the peer claims to have held the probe 10 ms within a 1 ms round trip
    assert not cs.add_sample("p", 0, 100, 100 + 10 * MS, MS)
    assert not cs.add_sample("p", 0, 200, 100, MS)  # t3 before t2
    assert cs.rejected == 2
    assert cs.estimate("p") is None
    assert cs.median_offset() is None


def test_median_odd_even_and_forget() -> None:
    cs = ClockSync()
    for peer, off in (("a", -3 * MS), ("b", 10 * MS), ("c", 1 * MS)):
        cs.add_sample(peer, *exchange(off, 0, 0, 0, 0))
    assert cs.median_offset() == 1 * MS
    cs.add_sample("d", *exchange(2 * MS, 0, 0, 0, 0))
    assert cs.median_offset() == (1 * MS + 2 * MS) // 2
    cs.forget("b")
    cs.forget("d")
    assert cs.median_offset() == (-3 * MS + 1 * MS) // 2
    assert list(cs.estimates()) == ["a", "c"]


@given(st.lists(st.integers(-SEC, SEC), min_size=1, max_size=7), st.integers(1, SEC))
def test_in_sync_flips_exactly_at_half_max_offset(peer_offsets: list[int], max_offset: int) -> None:
    cs = ClockSync()
    for i, off in enumerate(peer_offsets):
        cs.add_sample(f"p{i}", *exchange(off, 0, 0, 0, 0))  # zero delay: exact offsets
    med = cs.median_offset()
    assert med is not None
    s = sorted(peer_offsets)
    n = len(s)
    assert med == (s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) // 2)
    c = sorted([0, *peer_offsets])  # the cluster's median counts our own clock too
    cmed = cs.cluster_median_offset()
    assert cmed == (c[len(c) // 2] if len(c) % 2 else (c[len(c) // 2 - 1] + c[len(c) // 2]) // 2)
    assert cs.in_sync(max_offset) == (2 * abs(cmed) <= max_offset)
    assert cs.in_sync(2 * abs(cmed))
    if cmed != 0:
        assert not cs.in_sync(2 * abs(cmed) - 1)


def test_one_wild_clock_does_not_take_the_healthy_nodes_out() -> None:
    cs = ClockSync()
    cs.add_sample("good", *exchange(1 * MS, 0, 0, 0, 0))
    cs.add_sample("wild", *exchange(700 * MS, 0, 0, 0, 0))
    assert cs.in_sync(500 * MS)  # peers-only median (their mean, 350 ms) would say no
    wild = ClockSync()  # the wild node itself: both others are 700 ms behind it
    wild.add_sample("a", *exchange(-700 * MS, 0, 0, 0, 0))
    wild.add_sample("b", *exchange(-699 * MS, 0, 0, 0, 0))
    assert not wild.in_sync(500 * MS)


def test_in_sync_threshold_concrete() -> None:
    cs = ClockSync()
    for peer in ("a", "b", "c"):
        cs.add_sample(peer, *exchange(-250 * MS, 0, 0, 0, 0))  # we are 250 ms ahead of all of them
    assert cs.in_sync(500 * MS)
    assert not cs.in_sync(500 * MS - 1)
    assert ClockSync().in_sync(1)  # nothing to compare with yet
