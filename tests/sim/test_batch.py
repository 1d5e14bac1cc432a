"""A batch of seeds with every fault: the CI-sized version of ``gossipbook sim --seeds 500``.

Every run must pass every invariant; a failure prints each failing seed's evidence and the one
command that replays it. Seeds are spread out (not 1..N) so this batch does not only repeat the
seeds the other tests use.
"""

from __future__ import annotations

import os

import pytest

from gossipbook.sim import summarize

from .conftest import FIVE, SMALL, explain, run_many

N = int(os.environ.get("GOSSIPBOOK_SIM_SEEDS", "40"))


def test_five_nodes_all_faults() -> None:
    results = run_many(range(1000, 1000 + N), FIVE)
    assert all(r.ok for r in results), "\n" + explain(results)
    s = summarize(results)
    assert s["convergence_s"]["max"] is not None and s["convergence_s"]["max"] <= FIVE.bound_s
    assert all(r.ops > 0 and r.acked > 0 for r in results)


@pytest.mark.parametrize("fault", ["partition", "loss", "dup", "reorder", "crash", "pause", "skew"])
def test_each_fault_alone(fault: str) -> None:
    import dataclasses

    results = run_many(range(2000, 2006), dataclasses.replace(SMALL, faults=(fault,)))
    assert all(r.ok for r in results), "\n" + explain(results)
    assert all(r.faults == [fault] for r in results)


def test_no_faults_converges_at_once() -> None:
    import dataclasses

    results = run_many(range(3000, 3003), dataclasses.replace(SMALL, faults=()))
    assert all(r.ok and r.faults == [] for r in results), "\n" + explain(results)
    assert all(r.convergence_s is not None and r.convergence_s < 1.0 for r in results)
