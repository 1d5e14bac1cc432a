"""``bench.features`` measures what it says: every op went through the floor's fold, the fairness
meter and the audit trail (counters), and the figures are per-op CPU, not per call."""

from __future__ import annotations

from gossipbook.bench.features import main, run_features
from gossipbook.core.fairness import ORDER_KINDS
from gossipbook.workload.history import make_history


def test_every_op_is_observed_and_written_once() -> None:
    res = run_features(400, rounds=2)
    ops = sorted(make_history(400, origins=4, seed=3, deliver_every=1))
    orders = sum(1 for o in ops if o.kind in ORDER_KINDS)
    f = res["fairness"]
    assert res["ops"] == len(ops) == 400
    # every order placed (the bench's bound knows every peer): none unknown, none over the origin cap
    assert f["orders"] + f["hlc_ahead"] == orders and f["unknown"] == 0 and f["origins_over"] == 0
    assert 0 < f["tied_orders"] <= f["orders"]  # stamps 1 us apart with +-40 us errors: coin tosses
    assert res["audit_rows"] == 400  # one row per op (the last round's trail)
    assert all(len(v) == 2 and min(v) > 0 for v in res["samples"].values())
    assert res["share_of_floor"]["audit"] == round(res["us_per_op"]["audit"] / res["us_per_op"]["floor"], 3)


def test_bad_arguments_are_one_usage_error(capsys) -> None:  # type: ignore[no-untyped-def]
    import pytest
    with pytest.raises(SystemExit) as e:
        main(["--ops", "0"])
    assert e.value.code == 2
    assert "--ops and --rounds must be at least 1" in capsys.readouterr().err
