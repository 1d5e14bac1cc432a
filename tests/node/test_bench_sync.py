"""``bench sync`` measures what it says in both modes (a small run: the figures live in docs/performance.md)."""

from __future__ import annotations

import pytest

from gossipbook.bench.sync import run_sync


def test_sync_traces_every_order_on_the_other_node_in_both_modes() -> None:
    r = run_sync(n=40, gap_s=0.001)
    for mode, nodes in (("eventual", 2), ("strong", 3)):
        s = r[mode]
        assert s["nodes"] == nodes and s["a"] != s["b"]
        assert s["acked"] == 40 and s["count"] == 40, s  # every order acked, and seen applied at B
        assert 0 < s["p50_us"] <= s["p99_us"] <= s["max_us"] and 0 < s["ack_p50_us"] <= s["ack_p99_us"]
        assert s["ratio"] == round(s["p50_us"] / s["floor_p50_us"], 2)
        assert s["ratio_paced"] == round(s["p50_us"] / s["paced_floor_p50_us"], 2)
    assert r["floor_rtt_trio"]["p50_us"] > 0 and r["floor_rtt_plain"]["p50_us"] > 0
    assert r["floor_rtt_trio_paced"]["count"] == 40
    # where the eventual hop spends its time: four stages, each measured, that roughly add up
    e = r["eventual"]
    parts = [e[k] for k in ("a_encode_us", "wire_wakeup_us", "b_decode_us", "b_fold_us")]
    assert all(p > 0 for p in parts), e
    assert 0.5 * e["p50_us"] <= sum(parts) <= 2 * e["p50_us"], e


def test_a_cluster_that_never_gets_ready_leaves_no_process_behind(monkeypatch) -> None:
    """Found when a wire-version mismatch kept nodes from answering: the failed start left both
    node processes running (and loading the machine) after the benchmark gave up."""
    from gossipbook.bench import procs

    def never_ready(self, timeout: float = 20) -> None:
        raise RuntimeError("benchmark nodes did not start")

    monkeypatch.setattr(procs.ProcCluster, "wait_ready", never_ready)
    pc = procs.ProcCluster(2, trace=False)
    with pytest.raises(RuntimeError, match="did not start"):
        with pc:
            pass
    assert pc.procs and all(p.poll() is not None for p in pc.procs.values())


def test_throughput_accounts_every_op_and_the_cpu_it_took() -> None:
    import os

    from gossipbook.bench.throughput import run_throughput
    r = run_throughput(3, 400, timeout_s=60)
    assert r["complete"] and r["ops"] == 1_200 and r["ops_per_s"] > 0
    assert r["cpu_us_per_op"] > 0 and 0 < r["cores_busy"] <= (os.cpu_count() or 1) + 0.5


def test_convergence_heals_a_diverged_backlog() -> None:
    from gossipbook.bench.convergence import run_convergence
    r = run_convergence(400, timeout_s=60)
    assert "error" not in r, r
    assert r["diverged"] and r["backlog"] == 400 and 0 < r["convergence_s"] < 60


def test_ab_runs_every_revision_in_every_round() -> None:
    """``python -m gossipbook.bench.ab``: how each before/after in docs/performance.md was taken."""
    import subprocess
    from pathlib import Path

    from gossipbook.bench.ab import run
    repo = Path(subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                               check=True).stdout.strip())
    res = run("convergence", ["HEAD", "HEAD~0"], 2, 400, repo)
    for rev in ("HEAD", "HEAD~0"):
        v = res["revisions"][rev]
        assert v["errors"] == 0 and len(v["samples"]) == 2 and v["median"] > 0, v
