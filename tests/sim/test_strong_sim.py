"""Strong mode in the simulator: clean seeds pass every check, each broken sequencer is caught.

``SimConfig(mode="strong")`` runs ``StrongNodeCore`` under the same nemesis (plus faults aimed at
the leader) and holds it to ``strong_check.StrongChecker``. Small configs keep this quick; the
300-seed sweep in the issue is ``gossipbook sim --mode strong --nodes 5 --seeds 300``.
"""

from __future__ import annotations

import dataclasses

import pytest

from gossipbook.core.errors import UsageError
from gossipbook.sim import SimConfig, Simulation, run_seed, scripted
from gossipbook.sim.breaks import STRONG_BREAKS, check_break

from .conftest import FIVE, SMALL, explain, run_many

#: compaction every 32 entries, so snapshots are taken, persisted and installed within a short run
STRONG_SMALL = dataclasses.replace(SMALL, mode="strong", compact_every=32)
STRONG_FIVE = dataclasses.replace(FIVE, mode="strong", compact_every=32)
SAFETY = {"commit_conflict", "digest_diverged", "trade_conflict", "lost_ack", "ack_mismatch", "applied_twice",
          "final_ack_trades"}


def test_clean_seeds_pass_and_exercise_elections_and_snapshots() -> None:
    results = run_many(range(1, 9), STRONG_FIVE)
    assert all(r.ok for r in results), explain(results)
    assert all(r.mode == "strong" and "--mode strong" in r.command for r in results)
    assert sum(r.counters["seq_snapshots_installed"] for r in results) > 0  # catch-up by snapshot happened
    assert sum(r.counters["strong_compactions"] for r in results) > 0
    assert sum(r.counters["net_slowed"] + r.counters["net_blocked"] for r in results) > 0  # leader faults struck
    assert all(r.counters["strong_committed_entries"] >= r.ops for r in results)


def test_three_nodes_pass_too() -> None:
    results = run_many(range(1, 9), STRONG_SMALL)
    assert all(r.ok for r in results), explain(results)


def test_the_same_seed_gives_the_same_trace() -> None:
    a, b = run_seed(5, STRONG_SMALL), run_seed(5, STRONG_SMALL)
    assert a.trace_hash == b.trace_hash and a.ok
    assert run_seed(6, STRONG_SMALL).trace_hash != a.trace_hash


def test_a_minority_refuses_with_no_quorum_and_loses_nothing() -> None:
    """n1 and n2 cut off from the other three for 4 s while clients keep sending to every node: the
    minority answers ``no quorum`` (the checker holds each such answer to "never committed"), the
    majority keeps committing, and after the heal everything converges."""
    cfg = dataclasses.replace(STRONG_FIVE, faults=(), orders=300,
                              script=scripted([(2.0, "partition", [["n1", "n2"], ["n3", "n4", "n5"]]),
                                               (6.0, "heal")]))
    sim = Simulation(3, cfg).run()
    assert sim.checker.ok, sim.checker.violations
    refused = sim.strong_checker.refused
    assert refused and {node for node, _t in refused.values()} <= {"n1", "n2"}
    assert sim.workload.rejects.get(4, 0) == len(refused)
    assert len(sim.strong_checker.acks) > 200


#: a break, and a config where it shows within a few seeds (found by sweeping seeds 1-20)
BREAK_RUNS = {
    "vote-any-log": (STRONG_FIVE, range(1, 21)),
    "commit-without-majority": (STRONG_FIVE, range(1, 21)),
    # seeds 1-20 stopped showing it with the accounts commit (9e18188: the seed's streams draw
    # differently); a sweep of 21-120 (before and after issue 14's workload) hits 37 and 114
    "no-term-check": (STRONG_FIVE, range(21, 41)),
}


@pytest.mark.parametrize("name", sorted(BREAK_RUNS))
def test_each_strong_break_is_caught(name: str) -> None:
    cfg, seeds = BREAK_RUNS[name]
    results = run_many(seeds, cfg, name, stop_at_failure=True)
    caught = [r for r in results if set(r.violation_counts) & SAFETY]
    assert caught, f"--break {name} passed {len(results)} seeds:\n{explain(results)}"
    assert f"--break {name}" in caught[0].command and "--mode strong" in caught[0].command


def test_every_strong_break_is_either_swept_or_named_here() -> None:
    # commit-old-term needs Raft's figure-8 schedule, which random faults hit too rarely to test
    # here: tests/core/test_sequencer.py drives that schedule directly
    # joint-majority-skip needs the membership nemesis: tests/sim/test_strong_members_sim.py
    assert set(BREAK_RUNS) | {"commit-old-term", "joint-majority-skip"} == set(STRONG_BREAKS)


def test_breaks_belong_to_their_mode() -> None:
    assert check_break("vote-any-log", "strong") == "vote-any-log"
    with pytest.raises(UsageError, match="strong-mode break"):
        check_break("vote-any-log", "eventual")
    with pytest.raises(UsageError, match="an eventual-mode break"):
        check_break("no-replay", "strong")


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="mode"):
        SimConfig(mode="quorum")
