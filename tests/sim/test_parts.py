"""The simulator's parts on their own: clocks, partitions, fault plans, schedules, the disk."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gossipbook.core import Op, Timestamp
from gossipbook.core.errors import UsageError
from gossipbook.sim import FAULTS, T0, FaultPlan, NodeClock, parse_faults, random_schedule, scripted
from gossipbook.sim.disk import HLC_LEASE_NS, Disk
from gossipbook.sim.network import SHAPES, Network, partition_links

NODES = ["n1", "n2", "n3", "n4", "n5"]


@given(skew=st.integers(-10**9, 10**9), drift=st.integers(-500_000, 500_000),
       res=st.sampled_from([1, 1000, 10**6, 15_625_000]), t=st.integers(0, 100 * 10**9),
       ahead=st.integers(0, 5 * 10**9))
def test_when_is_the_first_true_time_the_clock_reaches_a_reading(skew: int, drift: int, res: int, t: int,
                                                                ahead: int) -> None:
    c = NodeClock(skew, drift, res)
    now = T0 + t
    target = c.read(now) + ahead
    w = c.when(target, now)
    assert w >= now and c.read(w) >= target
    assert w == now or c.read(w - 1) < target


def test_clock_reads_are_monotonic_and_quantized() -> None:
    c = NodeClock(123_456, 50_000, 1_000_000)
    reads = [c.read(T0 + i * 333_333) for i in range(1000)]
    assert reads == sorted(reads) and all(r % 1_000_000 == 0 for r in reads)
    c.step(-10**9)
    assert c.read(T0 + 10**9) < reads[-1]  # a step backwards is allowed: it is the fault


def _reachable(blocked: set[tuple[str, str]], a: str, b: str) -> bool:
    return (a, b) not in blocked


@pytest.mark.parametrize("shape", SHAPES)
def test_partition_shapes(shape: str) -> None:
    blocked, desc = partition_links(shape, NODES, random.Random(3))
    assert blocked and desc
    pairs = [(a, b) for a in NODES for b in NODES if a != b]
    cut = [p for p in pairs if p in blocked]
    if shape == "oneway":
        assert all((b, a) not in blocked for a, b in cut)  # the other direction still works
    else:
        assert all((b, a) in blocked for a, b in cut)  # symmetric
    if shape == "ring":
        assert all(sum(_reachable(blocked, a, b) for b in NODES if b != a) == 2 for a in NODES)
    if shape == "isolate":
        alone = [a for a in NODES if all((a, b) in blocked for b in NODES if b != a)]
        assert len(alone) == 1
    if shape == "bridge":
        bridge = [a for a in NODES if all((a, b) not in blocked for b in NODES if b != a)]
        assert len(bridge) == 1


def test_network_is_deterministic_and_faults_apply() -> None:
    def draws(seed: int) -> list[list[int]]:
        net = Network(random.Random(seed), NODES)
        net.faults.loss, net.faults.dup = 0.3, 0.3
        return [net.route("n1", "n2") for _ in range(200)]
    a, b = draws(5), draws(5)
    assert a == b
    assert any(d == [] for d in a) and any(len(d) == 2 for d in a)
    net = Network(random.Random(1), NODES)
    net.partition({("n1", "n2")})
    assert net.route("n1", "n2") == [] and net.route("n2", "n1")
    net.heal_all()
    assert net.route("n1", "n2")


def test_parse_faults() -> None:
    assert parse_faults("all") == FAULTS
    assert parse_faults("none") == ()
    assert parse_faults("crash, partition,crash") == ("partition", "crash")
    with pytest.raises(UsageError, match="unknown fault 'x'"):
        parse_faults("partition,x")


def test_a_plan_draws_only_enabled_faults_and_at_least_one() -> None:
    for seed in range(50):
        p = FaultPlan.draw(random.Random(seed), ("crash", "loss"))
        assert p.active() and set(p.active()) <= {"crash", "loss"}
        assert FaultPlan.draw(random.Random(seed), ("pause",)).active() == ["pause"]
    assert FaultPlan.draw(random.Random(1), ()).active() == []


def test_random_schedules_are_well_formed() -> None:
    for seed in range(30):
        rng = random.Random(seed)
        plan = FaultPlan.draw(rng, FAULTS)
        sched = random_schedule(rng, plan, NODES, 60 * 10**9, 500_000_000)
        times = [a.at_ns for a in sched]
        assert times == sorted(times) and all(0 <= t < 60 * 10**9 for t in times)
        down: dict[str, str] = {}
        for a in sched:  # per node: crash/restart and pause/resume alternate, never overlap
            if a.kind in ("crash", "pause"):
                assert a.node not in down
                down[a.node] = a.kind
            elif a.kind in ("restart", "resume"):
                assert down.pop(a.node) == ("crash" if a.kind == "restart" else "pause")


def test_scripted_schedules() -> None:
    s = scripted([(2, "heal"), (1, "partition", "halves"), (1.5, "partition", [["n1"], ["n2", "n3"]]),
                  (3, "crash", "n2"), (4, "restart", "n2"), (5, "clock_step", "n1", -0.25)])
    assert [a.kind for a in s] == ["partition", "partition", "heal", "crash", "restart", "clock_step"]
    assert s.actions[1].groups == (("n1",), ("n2", "n3"))
    assert s.actions[-1].value == -250_000_000
    with pytest.raises(UsageError):
        scripted([(1, "meteor")])


def test_disk_keeps_an_hlc_lease_and_drops_what_the_snapshot_covers() -> None:
    d = Disk()
    op = Op(T0, 0, "n1", 1, 1, "GBX", "", 0, 100, 1, 0, "")
    d.persist([op], Timestamp(T0, 3), 7)
    assert d.hlc_bound == Timestamp(T0 + HLC_LEASE_NS, 0)
    d.persist([], Timestamp(T0 + 1, 0), 7)  # well inside the lease: no write
    assert d.writes == 1
    hlc, inc = d.recover_state("n1")
    assert hlc == Timestamp(T0 + HLC_LEASE_NS, 0) and inc == 8

    class Snap:
        base_vv = {"n1": 1}
        books: dict[str, list[tuple[int, int, str, int]]] = {"GBX": []}
        trades = 0
        chain = b"\0" * 16
        last_key = (T0, 0, "n1")
        reqs: dict[str, str] = {}
        fills: dict[str, list[object]] = {}

    d.write_snapshot(Snap())
    assert not d.ops and d.holds("n1", 1) and not d.holds("n1", 2)


def test_percentiles_and_summary() -> None:
    from gossipbook.sim.run import percentile, summarize

    assert percentile([], 50) is None
    assert percentile([3, 1, 2], 50) == 2 and percentile(list(range(1, 101)), 99) == 99
    assert percentile([5], 99) == 5

    from .conftest import SMALL, run_many

    results = run_many([1, 2], SMALL)
    s = summarize(results)
    assert s["runs"] == 2 and set(s["by_fault"]) <= set(FAULTS) | {"none"}
    assert s["msgs_per_op"] > 0 and s["convergence_s"]["p50"] is not None
