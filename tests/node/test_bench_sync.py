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
    assert r["floor_rtt_trio"]["p50_us"] > 0 and r["floor_rtt_plain"]["p50_us"] > 0


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
