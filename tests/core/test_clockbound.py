"""ClockBound: the interval holds the reference's true clock under skew, drift, asymmetric delay and
silence; status and the order gate follow it; the clock checker catches each deliberate break."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipbook.api.types import NodeStatus
from gossipbook.core.clockbound import (
    E_CLOCK_BOUND,
    FREE_RUNNING,
    MAX_SAMPLE_OFFSET_NS,
    SYNCED,
    UNSYNCED,
    ClockBound,
    ClockConfig,
)
from gossipbook.core.membership import ClockSample
from gossipbook.core.node import NodeConfig, NodeCore
from gossipbook.core.ops import CANCEL, NEW
from gossipbook.core.wire import REPLY_CODES, ClientReply, ClientSubmit
from gossipbook.sim.clock import MS, SEC, T0, US, NodeClock
from gossipbook.sim.clockcheck import run_seed


def exchange(me: NodeClock, peer: NodeClock, t: int, d1: int, hold: int, d2: int) -> tuple[int, int, int, int]:
    """The four readings of one probe sent at true time ``t``."""
    return me.read(t), peer.read(t + d1), peer.read(t + d1 + hold), me.read(t + d1 + hold + d2)


exchanges = st.lists(st.tuples(st.integers(20 * MS, 3 * SEC),  # gap before this probe
                               st.integers(0, 5 * MS), st.integers(0, MS), st.integers(0, 5 * MS),  # d1, hold, d2
                               st.integers(0, 12 * SEC)),  # when we read, after the ack
                     min_size=2, max_size=25)


@settings(max_examples=60)
@given(st.integers(-100 * MS, 100 * MS), st.integers(-200_000, 200_000), st.integers(-200_000, 200_000), exchanges)
def test_interval_holds_the_reference_under_skew_drift_and_asymmetry(skew: int, my_drift: int, ref_drift: int,
                                                                     exs: list[tuple[int, ...]]) -> None:
    """Drifts up to 200 ppm each (400 ppm apart: 8x max_drift_ppm): the measured drift carries it."""
    me, ref = NodeClock(skew_ns=skew, drift_ppb=my_drift), NodeClock(drift_ppb=ref_drift)
    cb = ClockBound("me", ["ref"], ClockConfig(time_source="ref"))
    t = T0
    for gap, d1, hold, d2, wait in exs:
        t += gap
        cb.add_sample("ref", *exchange(me, ref, t, d1, hold, d2))
        t_read = t + d1 + hold + d2 + wait
        r = cb.read(me.read(t_read))
        if r.status != UNSYNCED:
            assert r.earliest <= ref.read(t_read) <= r.latest
            assert r.bound_ns == -(-(r.latest - r.earliest) // 2)


def test_unsynced_until_a_sample_then_the_drift_narrows_and_silence_free_runs() -> None:
    me, ref = NodeClock(skew_ns=30 * MS, drift_ppb=20_000), NodeClock()
    cfg = ClockConfig(time_source="ref", min_span_ns=150 * MS, stale_ns=SEC)
    cb = ClockBound("me", ["ref"], cfg)
    t = T0
    assert cb.read(me.read(t)).status == UNSYNCED  # no sample: no bound claimed
    cb.add_sample("ref", *exchange(me, ref, t, 40 * US, 0, 60 * US))
    first = cb.read(me.read(t + 100 * MS))
    # one sample: synced, its drift only bounded by the 1000 ppm prior (+ max_drift): ~105 µs in 100 ms
    assert first.status == SYNCED and 100 * US + 100 * US <= 2 * first.bound_ns <= 2 * 160 * US
    for i in range(1, 12):
        cb.add_sample("ref", *exchange(me, ref, t + i * 300 * MS, 40 * US, 0, 60 * US))
    t += 11 * 300 * MS
    r = cb.read(me.read(t + 100 * MS))
    truth = ref.read(t + 100 * MS) - me.read(t + 100 * MS)  # -30 ms, minus the 20 ppm we gained since T0
    assert r.status == SYNCED and abs(r.offset_ns - truth) <= r.bound_ns <= 70 * US
    assert abs(r.drift_ppb - (-20_000)) < 10_000  # the reference loses 20 ppm against us: measured
    silent = [cb.read(me.read(t + 100 * MS + k * SEC // 2)) for k in (1, 4, 10, 20)]
    assert [x.status for x in silent] == [SYNCED, FREE_RUNNING, FREE_RUNNING, FREE_RUNNING]
    # the bound grows at least at max_drift_ppm (50 ppm: 50 µs a second) and never shrinks
    assert all(b.bound_ns - a.bound_ns >= 75 * US for a, b in zip(silent, silent[1:], strict=False))
    assert silent[-1].earliest <= ref.read(t + 100 * MS + 10 * SEC) <= silent[-1].latest


def test_a_stepped_clock_contradicts_the_window_and_resets_it() -> None:
    me, ref = NodeClock(), NodeClock()
    cb = ClockBound("me", ["ref"], ClockConfig(time_source="ref"))
    t = T0
    for i in range(6):
        cb.add_sample("ref", *exchange(me, ref, t + i * 200 * MS, 50 * US, 0, 50 * US))
    assert cb.read(me.read(t + SEC + MS)).status == SYNCED
    me.step(5 * MS)  # NTP steps our clock 5 ms ahead: the reference is now 5 ms behind us
    cb.add_sample("ref", *exchange(me, ref, t + 1200 * MS, 50 * US, 0, 50 * US))
    r = cb.read(me.read(t + 1201 * MS))
    assert cb.counters["clock_resets"] == 1
    assert r.status == UNSYNCED or r.earliest <= ref.read(t + 1201 * MS) <= r.latest


def test_queued_samples_are_skipped_counted_and_then_taken() -> None:
    me, ref = NodeClock(), NodeClock()
    cb = ClockBound("me", ["ref"], ClockConfig(time_source="ref"))
    cb.add_sample("ref", *exchange(me, ref, T0, 50 * US, 0, 50 * US))
    for i in range(4):  # 10 ms round trips: delayed in some queue
        cb.add_sample("ref", *exchange(me, ref, T0 + (i + 1) * 200 * MS, 5 * MS, 0, 5 * MS))
    assert cb.counters["clock_samples_queued"] == 3  # the fourth in a row is kept: the path may be slower now
    assert len(cb._filters["ref"].samples) == 2


def test_hostile_samples_are_bounded_and_members_only() -> None:
    cb = ClockBound("me", ["a", "b"], ClockConfig(window=4))
    cb.add_sample("a", T0, T0 + MAX_SAMPLE_OFFSET_NS + SEC, T0 + MAX_SAMPLE_OFFSET_NS + SEC, T0 + 10)
    cb.add_sample("a", T0, T0, T0, T0 + 11 * SEC)  # an 11 s round trip
    assert cb.counters["clock_samples_refused"] == 2
    cb.add_sample("mallory", T0, T0, T0, T0 + 10)  # not a member: no state made for it
    for i in range(100):
        cb.add_sample("b", T0 + i * SEC, T0 + i * SEC + 5, T0 + i * SEC + 5, T0 + i * SEC + 10)
    assert set(cb._filters) == {"b"} and len(cb._filters["b"].samples) == 4


@settings(max_examples=40)
@given(st.lists(st.integers(-100 * MS, 100 * MS), min_size=1, max_size=5), st.data())
def test_median_reference_holds_the_true_median(offsets: list[int], data: st.DataObject) -> None:
    """Some peers never answer (their clock is unknown: +-inf); the rest are measured."""
    ids = [f"p{i}" for i in range(len(offsets))]
    me = NodeClock()
    clocks = {p: NodeClock(skew_ns=o, drift_ppb=data.draw(st.integers(-100_000, 100_000))) for p, o in zip(ids, offsets, strict=True)}
    silent = set(data.draw(st.lists(st.sampled_from(ids), unique=True, max_size=len(ids))))
    cb = ClockBound("me", ids, ClockConfig())
    rng = random.Random(data.draw(st.integers(0, 1000)))
    t = T0
    for _ in range(8):
        for p in ids:
            t += 100 * MS
            if p not in silent:
                cb.add_sample(p, *exchange(me, clocks[p], t, rng.randrange(2 * MS), rng.randrange(MS), rng.randrange(2 * MS)))
    t += 10 * MS
    now = me.read(t)
    r = cb.read(now)
    vals = sorted([0, *(clocks[p].read(t) - now for p in ids)])
    k = len(vals) // 2
    truth2 = 2 * vals[k] if len(vals) % 2 else vals[k - 1] + vals[k]
    if r.status != UNSYNCED:
        assert 2 * (r.earliest - now) <= truth2 <= 2 * (r.latest - now)
    if not silent:
        assert r.status == SYNCED


def test_one_wild_clock_leaves_the_others_a_tight_median() -> None:
    me, good, wild = NodeClock(), NodeClock(skew_ns=20 * US), NodeClock(skew_ns=700 * MS)
    cb = ClockBound("me", ["good", "wild"], ClockConfig())
    for i in range(6):
        t = T0 + i * 200 * MS
        cb.add_sample("good", *exchange(me, good, t, 40 * US, 0, 40 * US))
        cb.add_sample("wild", *exchange(me, wild, t + 50 * MS, 40 * US, 0, 40 * US))
    r = cb.read(me.read(T0 + 1200 * MS))
    assert r.status == SYNCED and r.bound_ns < 200 * US and abs(r.offset_ns) < 250 * US


def test_a_single_node_and_the_time_source_itself_are_exact() -> None:
    assert ClockBound("n1", []).read(T0) == (T0, T0, SYNCED, 0, 0, 0)
    assert ClockBound("n1", ["n2"], ClockConfig(time_source="n1")).read(T0).bound_ns == 0
    with pytest.raises(ValueError, match="not a member"):
        ClockBound("n1", ["n2"], ClockConfig(time_source="n9"))


# ---- the gate in NodeCore ----------------------------------------------------------------------------
def _submit(core: NodeCore, now: int, req: str, kind: int = NEW, order_id: str = "") -> ClientReply:
    core.receive(ClientSubmit(req, kind, "GBX", order_id, 0, 10_000, 1, 0, 0, 1000), "c", ("127.0.0.1", 9), now, "alice")
    replies = [m for _d, m in core.outbox() if isinstance(m, ClientReply) and m.req == req]
    assert len(replies) == 1
    return replies[0]


def test_the_gate_waits_for_sync_refuses_over_the_bound_and_lets_cancels_through() -> None:
    cfg = NodeConfig(clock=ClockConfig(time_source="n2", max_error_ns=300 * US, stale_ns=SEC))
    core = NodeCore("n1", ["n1", "n2"], config=cfg, recovered=True)
    me, ref = NodeClock(skew_ns=-30 * MS), NodeClock()
    rep = _submit(core, me.read(T0), "r1")
    assert rep.code == E_CLOCK_BOUND and REPLY_CODES[rep.code] == "clock bound"
    assert rep.message == "clock not synced with n2 yet: error bound unknown, limit 300 µs"
    assert core.counters["client_rejects"] == 1
    assert core.status()["clock"]["status"] == UNSYNCED and not core.status()["ready"]
    t = T0
    for i in range(4):
        t = T0 + i * 200 * MS
        core.clock.add_sample("n2", *exchange(me, ref, t, 40 * US, 10 * US, 40 * US))
    ok = _submit(core, me.read(t + MS), "r2")
    assert ok.code == 0
    st = core.status()
    assert st["clock"]["status"] == SYNCED and st["ready"] and st["clock"]["rts25_ok"]
    assert abs(st["clock"]["offset_us"] - 30_000) <= st["clock"]["bound_us"]
    assert st["peers"]["n2"]["status"] == SYNCED
    ns = NodeStatus.from_status(st)
    assert (ns.clock_status, ns.clock_bound_us, ns.clock_offset_us) == (SYNCED, st["clock"]["bound_us"],
                                                                        st["clock"]["offset_us"])
    # silence: the bound grows at >= 50 ppm; 300 µs is passed within 6 s
    late = me.read(t + 8 * SEC)
    refused = _submit(core, late, "r3")
    assert refused.code == E_CLOCK_BOUND
    assert re.fullmatch(r"clock error bound \d+ µs over the limit of 300 µs \(free-running vs n2\)", refused.message)
    assert _submit(core, late, "r4", CANCEL, ok.order_id).code == 0  # cancels still go
    assert core.counters["client_rejects"] == 2
    # the same samples again, after the silence: synced, taking orders
    for i in range(3):
        core.clock.add_sample("n2", *exchange(me, ref, t + 8 * SEC + i * 200 * MS, 40 * US, 10 * US, 40 * US))
    assert _submit(core, me.read(t + 9 * SEC), "r5").code == 0


def test_no_limit_no_gate_and_a_lone_node_is_its_own_reference() -> None:
    core = NodeCore("n1", ["n1", "n2"], recovered=True)  # the core's default: no limit (simulator, tests)
    assert _submit(core, T0, "r1").code == 0
    lone = NodeCore("n1", ["n1"], config=NodeConfig(clock=ClockConfig(max_error_ns=US)))
    assert _submit(lone, T0, "r1").code == 0
    assert lone.status()["clock"]["bound_us"] == 0


def test_clock_samples_reach_the_bound_through_membership_events() -> None:
    core = NodeCore("n1", ["n1", "n2"], config=NodeConfig(clock=ClockConfig(time_source="n2")), recovered=True)
    for i in range(3):
        t = T0 + i * 200 * MS
        core.membership._events.append(ClockSample("n2", t, t + 50 * US, t + 50 * US, t + 100 * US))
    core.tick(T0 + 401 * MS)
    assert core.status()["clock"]["status"] == SYNCED


# ---- the clock checker (simulated clocks, every sample checked) --------------------------------------
def test_checker_finds_no_violation_and_the_ratio_stays_at_most_one() -> None:
    runs = [run_seed(s, duration_s=20) for s in range(1, 13)]
    assert all(r.ok for r in runs), [r.violations for r in runs if not r.ok]
    assert sum(r.checks for r in runs) > 10_000
    assert max(r.max_ratio for r in runs) <= 1.0
    assert {r.reference for r in runs} > {"median"}  # both kinds of reference are drawn


@pytest.mark.parametrize("name", ["no-drift", "rtt-not-halved"])
def test_checker_catches_each_break_within_50_seeds(name: str) -> None:
    first = next((s for s in range(1, 51) if not run_seed(s, breaks=[name], duration_s=20).ok), None)
    assert first is not None, f"--break {name} was not caught in 50 seeds"
