"""The membership nemesis (gossipbook/sim/members.py): nodes removed dead, added, replaced, and a
running node fenced with --force, under the seed's other faults, checked by the simulator's checker.

Each run must pass every invariant; across the seeds every scenario must have happened and done
what it says (counters: nodes added and removed, ops refused at a fence). The no-fence break is in
test_breaks.py.
"""

from __future__ import annotations

import dataclasses

from gossipbook.sim import run_seed
from gossipbook.sim.cluster import SimConfig, Simulation
from gossipbook.sim.members import SCENARIOS

from .conftest import explain

CFG = SimConfig(nodes=4, duration_s=10, orders=200, bound_s=20, members=True)


def test_membership_changes_keep_every_invariant() -> None:
    results = [run_seed(seed, CFG) for seed in range(1, 9)]
    bad = [r for r in results if not r.ok]
    assert not bad, explain(bad)
    c = {k: sum(r.counters.get(k, 0) for r in results) for k in results[0].counters}
    assert c["members_added"] >= 2 and c["members_removed"] >= 2, c
    assert all("--members" in r.command for r in results)


def test_every_scenario_happens_and_a_zombie_is_refused_at_its_fence() -> None:
    seen: set[str] = set()
    fenced = 0
    for seed in range(1, 40):
        sim = Simulation(seed, dataclasses.replace(CFG, faults=("loss", "crash", "pause"))).run()
        assert sim.checker.ok, [str(v) for v in sim.checker.first()]
        m = sim.members
        assert m is not None
        seen |= set(m.nem.scenarios)
        if "zombie" in m.nem.scenarios:
            fenced += sum(n.core.replica.counters["fenced"] for n in sim.nodes.values() if n.core is not None)
        if seen == set(SCENARIOS) and fenced:
            break
    assert seen == set(SCENARIOS), seen
    assert fenced > 0  # a removed node's later ops reached others, and were refused there


def test_the_other_streams_are_drawn_as_without_membership_changes() -> None:
    """A seed's faults, clocks and orders do not move when the membership nemesis is on, so a
    failing seed of an ordinary sweep replays the same with --members (and vice versa)."""
    plain = Simulation(5, dataclasses.replace(CFG, members=False))
    with_members = Simulation(5, CFG)
    assert plain.plan == with_members.plan
    assert [a.describe() for a in plain.schedule] == [a.describe() for a in with_members.schedule]
    assert plain.workload.arrivals == with_members.workload.arrivals


def test_a_seed_replays_bit_for_bit() -> None:
    a, b = run_seed(3, CFG), run_seed(3, CFG)
    assert a.trace_hash == b.trace_hash and a.counters == b.counters
