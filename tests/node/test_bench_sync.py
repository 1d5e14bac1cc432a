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
    """Asserts only what is physically true: the nodes cannot have been busier than the machine has
    cores over the window their CPU was measured in (plus the sampling resolution, one clock tick per
    node over that window). Failed once with 2.73 cores on 2 when CPU and wall came from different
    windows (issue 19)."""
    import os

    from gossipbook.bench.throughput import run_throughput
    r = run_throughput(3, 400, timeout_s=60)
    assert r["complete"] and r["ops"] == 1_200 and r["ops_per_s"] > 0
    resolution = 3 / os.sysconf("SC_CLK_TCK") / r["cpu_window_s"]
    # (a loaded box can start the nodes late enough that their work precedes the CPU window: 0 then)
    assert r["cpu_us_per_op"] >= 0 and 0 <= r["cores_busy"] <= (os.cpu_count() or 1) + resolution + 0.01, r


def test_cores_busy_is_the_cpu_over_the_wall_time_it_was_measured_in(monkeypatch) -> None:
    """Deterministic (the test above is a live run): node processes that keep every core of the
    machine busy all the time, and traces that span 1 ms of it. ``cores_busy`` must say "every
    core", not the CPU of the whole window over the 1 ms the traces span."""
    import os
    import time

    import trio

    from gossipbook.bench import throughput
    from gossipbook.cli import status

    cores = os.cpu_count() or 1

    class BusyCluster:
        cfg = None

        def __init__(self, n: int, **_kw) -> None:
            self.n = n

        def __enter__(self) -> BusyCluster:
            return self

        def __exit__(self, *exc) -> None:
            pass

        def cpu_seconds(self) -> float:
            return cores * time.monotonic()  # the physical maximum

        def stop(self) -> dict[str, dict[str, int]]:
            t = time.monotonic_ns()
            return {f"n{i}": {f"r{k}": t + k * 20_000 for k in range(100)} for i in range(self.n)}

    async def gather(_cfg, _timeout, what=None):
        await trio.sleep(0.05)  # a status poll takes a while: the window is longer than the traces
        return [{"reachable": True, "ops": 100, "pending": 0, "counters": {}}]

    monkeypatch.setattr(throughput, "ProcCluster", BusyCluster)
    monkeypatch.setattr(status, "gather_status", gather)
    r = throughput.run_throughput(2, 50, timeout_s=5)
    assert cores - 0.01 <= r["cores_busy"] <= cores + 0.01, r
    assert r["elapsed_s"] <= 0.003 and r["cpu_window_s"] >= 0.04, r


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


def test_throughput_reruns_a_burst_until_it_is_a_steady_state(monkeypatch) -> None:
    """``bench throughput`` reports a run of at least ``min_s``: a shorter one (a burst that fits in
    socket buffers) is run again, scaled to last about 1.25x ``min_s`` (issue 19)."""
    from gossipbook.bench import throughput

    sizes: list[int] = []

    def once(nodes: int, per_node: int, timeout_s: float, fsync: str | None) -> dict:
        sizes.append(per_node)
        return {"complete": True, "elapsed_s": per_node * nodes / 40_000, "ops_per_s": 40_000}

    monkeypatch.setattr(throughput, "_run_once", once)
    r = throughput.run_throughput(4, 3_000, min_s=2.0)
    assert r["elapsed_s"] >= 2.0 and r["attempts"] == 2 and sizes[0] == 3_000 and r["per_node"] == sizes[-1]
    assert 2.0 <= sizes[1] * 4 / 40_000 <= 2.6
    sizes.clear()
    r = throughput.run_throughput(4, 3_000)  # min_s 0: one run, as tests and `ab` take it
    assert r["attempts"] == 1 and sizes == [3_000]
