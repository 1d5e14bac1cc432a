"""Strong mode with shards in the simulator (``SimConfig(shards=K)``, ``sim/shardsim.py``): clean
seeds pass the per-shard checker, leader-aimed faults strike each shard's leader in turn and the
preferred leaders come back, and the ``shared-term`` break (one term and log record per node for all
its shards) is caught. The issue's sweep: ``gossipbook sim --mode strong --shards 4 --seeds 300``."""

from __future__ import annotations

import dataclasses

import pytest

from gossipbook.core.errors import UsageError
from gossipbook.sim import Simulation, run_seed, scripted
from gossipbook.sim.breaks import check_break

from .conftest import SMALL, explain, run_many

SHARDED = dataclasses.replace(SMALL, mode="strong", shards=3, compact_every=32, duration_s=8, orders=150)


def test_clean_seeds_pass_with_every_shard_committing() -> None:
    results = run_many(range(1, 5), SHARDED)
    assert all(r.ok for r in results), explain(results)
    assert all("--shards 3" in r.command and r.mode == "strong" for r in results)
    assert all(r.counters["strong_committed_entries"] >= r.ops for r in results)
    assert sum(r.counters["seq_snapshots_installed"] for r in results) > 0  # per-shard snapshots travel
    assert sum(r.counters["net_slowed"] + r.counters["net_blocked"] for r in results) > 0  # leader faults struck


def test_the_same_seed_gives_the_same_trace_and_shards_differ_from_one_group() -> None:
    a, b = run_seed(3, SHARDED), run_seed(3, SHARDED)
    assert a.trace_hash == b.trace_hash and a.ok
    assert run_seed(3, dataclasses.replace(SHARDED, shards=1)).trace_hash != a.trace_hash


def test_leader_faults_strike_each_shard_in_turn_and_leaders_come_back() -> None:
    """Three isolations of "the leader", 2 s apart: the first hits shard 0's, the second shard 1's,
    the third shard 2's; each shard elects another leader, then hands leadership back to its
    preferred node (n1, n2, n3) once it is reachable and caught up."""
    cfg = dataclasses.replace(SHARDED, faults=(), orders=200, duration_s=9,
                              script=scripted([(2.0, "leader_isolate", 1.0), (4.0, "leader_isolate", 1.0),
                                               (6.0, "leader_isolate", 1.0)]))
    sim = Simulation(4, cfg).run()
    assert sim.checker.ok, sim.checker.violations
    assert sim.leader_fault_n == 3
    cores = [sim.nodes[n].core for n in sim.ids]
    for s in range(3):
        assert {c.groups[s].seq.leader() for c in cores} == {f"n{s + 1}"}  # back with the preferred node
        assert sum(c.groups[s].seq.counters["became_leader"] for c in cores) >= 1
        assert sum(c.groups[s].seq.counters["transfers_sent"] for c in cores) >= 1
        assert len(sim.strong_checker.parts[s].log) > 20  # every shard committed orders
    assert len({c.replica.digest() for c in cores}) == 1


def test_shared_term_is_caught() -> None:
    """One term and log record per node for all its shards: a node that restarts brings every group
    back with shard 0's state, and the per-shard checker sees its folds conflict."""
    cfg = dataclasses.replace(SHARDED, faults=(), orders=200, bound_s=5,  # (broken: it never converges)
                              script=scripted([(3.0, "crash", "n2"), (4.0, "restart", "n2")]))
    r = run_seed(1, cfg, "shared-term")
    assert not r.ok
    assert {"commit_conflict", "digest_diverged"} & set(r.violation_counts), r.violation_counts
    assert "--break shared-term" in r.command and "--shards 3" in r.command
    assert run_seed(1, cfg).ok  # the same run without the break passes


def test_shared_term_needs_shards_and_strong_mode() -> None:
    assert check_break("shared-term", "strong") == "shared-term"
    with pytest.raises(UsageError):
        check_break("shared-term", "eventual")
    with pytest.raises(ValueError):
        dataclasses.replace(SMALL, shards=2)  # eventual mode has no sequencer groups
