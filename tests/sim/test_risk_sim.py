"""Risk limits in the simulator (``--risk``): the invariant holds under faults in both modes, the
workload really hits its limits, rights move, and the checker catches a node that ignores them.

``gossipbook sim --risk --nodes 3 --duration 10 --orders 150 --bound 15 --seeds 100`` (and
``--mode strong``) is the long version of the first two tests.
"""

from __future__ import annotations

import dataclasses

from gossipbook.core import BUY, GTC, Op, Replica
from gossipbook.core.risk import DIM_OPEN_BUY, HALT, LIMIT
from gossipbook.sim import run_seed
from gossipbook.sim.checker import Checker

from .conftest import SMALL, explain

RISKY = dataclasses.replace(SMALL, risk=True)


def test_limits_hold_under_faults_eventual() -> None:
    results = [run_seed(s, RISKY) for s in range(1, 5)]
    assert all(r.ok for r in results), explain(results)
    total = {k: sum(r.counters.get(k, 0) for r in results) for k in
             ("client_risk_refused", "replica_risk_transfers_out", "replica_risk_asks_sent", "risk_samples",
              "replica_risk_settled", "client_risk_admin_acked")}
    # the limits bind (refusals), rights move (asks answered by transfers), finality settles orders,
    # the converged view was checked all along, and the operator's limits and kill switch were acked
    assert total["client_risk_refused"] > 0 and total["replica_risk_transfers_out"] > 0, total
    assert total["replica_risk_asks_sent"] > 0 and total["replica_risk_settled"] > 0, total
    assert total["risk_samples"] > 4 * 20 and total["client_risk_admin_acked"] >= 4 * 8, total
    assert all("--risk" in r.command for r in results)


def test_limits_hold_under_faults_strong() -> None:
    results = [run_seed(s, dataclasses.replace(RISKY, mode="strong")) for s in range(1, 4)]
    assert all(r.ok for r in results), explain(results)
    assert sum(r.counters.get("client_risk_refused", 0) for r in results) > 0
    assert sum(r.counters.get("risk_samples", 0) for r in results) > 3 * 10


def test_a_node_that_ignores_its_rights_is_caught() -> None:
    """``--break no-escrow``: each node takes the whole limit as its own; caught within a few seeds."""
    for seed in range(1, 11):
        r = run_seed(seed, SMALL, "no-escrow")
        if "risk_exceeded" in r.violation_counts:
            assert "--break no-escrow" in r.command and "--risk" in r.command
            return
    raise AssertionError("no-escrow passed 10 seeds")


def test_the_checker_flags_an_exceeded_limit_and_a_disabled_account_resting() -> None:
    """Fabricated history: the checker is not a rubber stamp. Two nodes each place 6 lots of a
    5-lot open-buy limit they both held: the converged view has 12 open; a disabled account's
    order resting is flagged too."""
    ck = Checker(["n1", "n2"], 500_000_000)
    ck.oracle = Replica("oracle", members=["n1", "n2"])
    t0 = 10**12
    limit = Op(t0, 0, "n1", 1, LIMIT, "GBX", "alice", 0, 0, 5, DIM_OPEN_BUY, "l", "operator")
    n1, n2 = Replica("n1", members=["n1", "n2"]), Replica("n2", members=["n1", "n2"])
    for r in (n1, n2):
        r.receive([limit], t0)
    ck.ops_taken("n1", [limit], t0, t0)
    a = Op(t0 + 1, 0, "n1", 2, 1, "GBX", "", BUY, 10_000, 6, GTC, "a", "alice")
    b = Op(t0 + 2, 0, "n2", 1, 1, "GBX", "", BUY, 10_000, 6, GTC, "b", "alice")
    ck.risk_stamped("n1", a, n1)
    ck.risk_stamped("n2", b, n2)
    ck.ops_taken("n1", [a], t0, t0)
    ck.ops_taken("n2", [b], t0, t0)
    ck.risk_check(t0)
    assert ck.counts == {"risk_exceeded": 1}, ck.violations
    assert "open-buy exposure in GBX is 12" in ck.violations[0].evidence
    # an order stamped by a node that did not hold the limit does not bind it
    ck2 = Checker(["n1", "n2"], 500_000_000)
    ck2.oracle = Replica("oracle", members=["n1", "n2"])
    ck2.ops_taken("n1", [limit], t0, t0)
    ck2.risk_stamped("n2", b, Replica("n2", members=["n1", "n2"]))
    ck2.ops_taken("n2", [b], t0, t0)
    ck2.risk_check(t0)
    assert ck2.ok
    halt = Op(t0 + 3, 0, "n1", 3, HALT, "", "alice", 0, 0, 0, 0, "h", "operator")
    late = Op(t0 + 4, 0, "n2", 2, 1, "GBX", "", BUY, 10_000, 1, GTC, "c", "alice")
    ck2.ops_taken("n1", [a, halt], t0, t0)
    ck2.oracle.risk.fold_new = lambda oid, op: True  # a fold without the kill switch: the late NEW rests
    ck2.ops_taken("n2", [late], t0, t0)
    ck2.risk_check(t0)
    assert "risk_disabled_rested" in ck2.counts, ck2.violations
