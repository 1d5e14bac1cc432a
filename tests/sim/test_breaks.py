"""Each deliberately broken core (``--break``) is caught by the checker within a few seeds.

A simulator whose checker never fires proves nothing; these tests run the named variants from
``gossipbook.sim.breaks`` and require a violation *of the kind that variant causes* within 50
seeds, so an unrelated failure cannot pass for the catch.
"""

from __future__ import annotations

import dataclasses

import pytest

from gossipbook.core import gossip, replica
from gossipbook.sim import BREAKS, broken, scripted

from .conftest import SMALL, explain, run_many

EXPECTED = {
    "no-replay": {"convergence", "final_disagree", "final_revised"},
    "no-anti-entropy": {"convergence", "lost_ack"},
    "no-dedupe": {"applied_twice", "trade_duplicated"},
    "wrong-tiebreak": {"convergence", "final_disagree", "final_revised"},
    "no-offset-check": {"hlc_offset"},
}
CONFIGS = {
    # ties in (wall, logical) need coarse clocks that tick together: the skew fault draws them
    "wrong-tiebreak": dataclasses.replace(SMALL, faults=("skew",), orders=300),
    # an op stamped far ahead needs a clock far ahead that still takes orders: a forward step
    "no-offset-check": dataclasses.replace(SMALL, faults=("loss", "reorder"),
                                           script=scripted([(2.0, "clock_step", "n2", 1.2)])),
}


def test_every_break_has_an_expectation() -> None:
    assert set(EXPECTED) == set(BREAKS)


@pytest.mark.parametrize("name", sorted(BREAKS))
def test_each_break_is_caught(name: str) -> None:
    cfg = CONFIGS.get(name, SMALL)
    results = run_many(range(1, 51), cfg, name, stop_at_failure=True)
    caught = [r for r in results if set(r.violation_counts) & EXPECTED[name]]
    assert caught, f"--break {name} passed {len(results)} seeds:\n{explain(results)}"
    assert f"--break {name}" in caught[0].command


def test_breaks_restore_the_core() -> None:
    before = (replica.Replica._fold_in, replica.Replica.receive, gossip.Gossip.__init__)
    for name in BREAKS:
        with broken(name):
            pass
        assert (replica.Replica._fold_in, replica.Replica.receive, gossip.Gossip.__init__) == before
    with pytest.raises(RuntimeError), broken("no-replay"):
        raise RuntimeError("boom")
    assert replica.Replica._fold_in is before[0]


def test_an_unknown_break_is_a_usage_error() -> None:
    from gossipbook.core.errors import UsageError

    with pytest.raises(UsageError, match="no-replay"), broken("no-such-break"):
        pass
