"""Each deliberately broken core (``--break``) is caught by the checker within a few seeds.

A simulator whose checker never fires proves nothing; these tests run the named variants from
``gossipbook.sim.breaks`` and require a violation *of the kind that variant causes* within 50
seeds, so an unrelated failure cannot pass for the catch.
"""

from __future__ import annotations

import dataclasses

import pytest

from gossipbook import compiled
from gossipbook.core import book, gossip, replica, strong
from gossipbook.sim import BREAKS, broken, run_seed, scripted
from gossipbook.sim.breaks import BOTH_MODES, check_break, stamp_owner_check_removed

from .conftest import SMALL, explain, run_many

# the breaks patch methods of the core's classes, which a compiled build (setup.py) cannot have
# patched: on it these tests skip here and .ci/run runs this file again with GOSSIPBOOK_PURE=1
# (tests/test_compiled_build.py checks that `gossipbook sim --break` still catches them there)
pytestmark = pytest.mark.skipif(compiled(), reason="patches the pure-Python core: run with GOSSIPBOOK_PURE=1")

EXPECTED = {
    "no-replay": {"convergence", "final_disagree", "final_revised"},
    "no-anti-entropy": {"convergence", "lost_ack"},
    "no-dedupe": {"applied_twice", "trade_duplicated"},
    "wrong-tiebreak": {"convergence", "final_disagree", "final_revised"},
    "no-offset-check": {"hlc_offset"},
    # the account invariant itself, not its visible consequence (not_owner_acked) alone
    "no-owner-check": {"not_owner_applied"},
    "no-stp": {"self_trade"},
    # risk limits (issue 17; run_seed turns the risk workload on for these)
    "no-escrow": {"risk_exceeded"},
    "no-risk-check": {"risk_exceeded", "risk_disabled_rested"},
    # run-time membership (issue 20; run_seed turns the membership nemesis on): the fence itself
    "no-fence": {"removed_op_applied"},
}
CONFIGS = {
    # ties in (wall, logical) need coarse clocks that tick together: the skew fault draws them
    "wrong-tiebreak": dataclasses.replace(SMALL, faults=("skew",), orders=300),
    # an op stamped far ahead needs a clock far ahead that still takes orders: a forward step
    "no-offset-check": dataclasses.replace(SMALL, faults=("loss", "reorder"),
                                           script=scripted([(2.0, "clock_step", "n2", 1.2)])),
    # ops above a fence come from the zombie scenario (members.py), drawn only with unskewed clocks
    "no-fence": dataclasses.replace(SMALL, nodes=4, faults=("partition", "loss", "crash", "pause")),
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


@pytest.mark.parametrize("name", sorted(BOTH_MODES))
def test_account_breaks_are_caught_in_strong_mode_too(name: str) -> None:
    cfg = dataclasses.replace(SMALL, mode="strong")
    assert check_break(name, "strong") == name
    results = run_many(range(1, 51), cfg, name, stop_at_failure=True)
    caught = [r for r in results if set(r.violation_counts) & EXPECTED[name]]
    assert caught, f"--mode strong --break {name} passed {len(results)} seeds:\n{explain(results)}"
    assert f"--break {name}" in caught[0].command and "--mode strong" in caught[0].command


@pytest.mark.parametrize("mode", ["eventual", "strong"])
def test_the_folds_owner_check_holds_alone(mode: str) -> None:
    """With only the stamping node's owner check removed, other accounts' cancels and amends reach
    the op-set (the log): the fold must refuse every one of them on every replica. Eventual mode
    still acks them (the stamping node's refusal is what makes the reply honest): not_owner_acked."""
    cfg = dataclasses.replace(SMALL, mode=mode)
    refused = 0
    for seed in range(1, 4):
        with stamp_owner_check_removed():
            r = run_seed(seed, cfg)
        assert "not_owner_applied" not in r.violation_counts, explain([r])
        assert set(r.violation_counts) <= {"not_owner_acked"}, explain([r])
        refused += r.counters["replica_not_owner"]
    assert refused > 0  # the fold's check was exercised
    assert book.Book.owner is BOOK_OWNER


BOOK_OWNER = book.Book.owner


def test_breaks_restore_the_core() -> None:
    before = (replica.Replica._fold_in, replica.Replica.receive, gossip.Gossip.__init__, book.Book.owner,
              replica.Replica._open_order, strong.StrongNodeCore._validate)
    for name in BREAKS:
        with broken(name):
            pass
        assert replica.STP_MODES is book.STP_MODES and strong.STP_MODES is book.STP_MODES
        assert (replica.Replica._fold_in, replica.Replica.receive, gossip.Gossip.__init__, book.Book.owner,
                replica.Replica._open_order, strong.StrongNodeCore._validate) == before
    with stamp_owner_check_removed():
        assert book.Book.owner is not before[3]
    assert (book.Book.owner, replica.Replica._open_order, strong.StrongNodeCore._validate) == before[3:]
    with pytest.raises(RuntimeError), broken("no-replay"):
        raise RuntimeError("boom")
    assert replica.Replica._fold_in is before[0]


def test_an_unknown_break_is_a_usage_error() -> None:
    from gossipbook.core.errors import UsageError

    with pytest.raises(UsageError, match="no-replay"), broken("no-such-break"):
        pass
