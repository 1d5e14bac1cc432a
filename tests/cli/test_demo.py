"""``gossipbook demo`` from the command line: headless JSON, plain headless, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ..tui.ptyterm import ROOT, demo_argv


def demo(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *demo_argv(*args)], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)


def test_headless_json_diverges_in_partition_and_converges_after_heal() -> None:
    r = demo("--partition", "--headless", "--json", "--duration", "8", "--partition-at", "1.5", "--heal-at", "4")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    for key in ("nodes", "mode", "partitioned", "diverged_during_partition", "converged",
                "convergence_ms_after_heal", "digests", "orders", "trades", "revised_trades"):
        assert key in out, key
    assert out["nodes"] == 4 and out["mode"] == "eventual" and out["partitioned"] is True
    assert out["split"] == [["n1", "n2"], ["n3", "n4"]]
    assert out["diverged_during_partition"] is True and out["max_distinct_digests"] >= 2
    assert out["converged"] is True and out["all_digests_equal"] is True
    assert 0 < out["convergence_ms_after_heal"] < 4000
    assert len(set(out["digests"].values())) == 1 and sorted(out["digests"]) == ["n1", "n2", "n3", "n4"]
    assert out["orders"]["sent"] > 100 and out["orders"]["acked"] > 100 and out["trades"] > 0
    assert out["ops_exchanged"]["repaired_after_heal"] > 0
    assert out["elapsed_s"] < 8 + 3.5  # ended early: converged after the heal, then a short grace
    assert "Traceback" not in r.stderr


def test_headless_without_a_terminal_prints_events_and_a_summary() -> None:
    r = demo("--nodes", "2", "--duration", "1.5", "--rate", "30")
    assert r.returncode == 0, r.stderr
    assert "2 nodes up on 127.0.0.1" in r.stdout and "summary" in r.stdout
    assert "all 2 digests equal" in r.stdout and "Traceback" not in r.stdout + r.stderr


@pytest.mark.parametrize("args, message", [
    (("--split", "n1,n2"), "--split 'n1,n2' must list at least two non-empty sides"),
    (("--nodes", "12"), "--nodes must be between 2 and 8"),
    (("--partition", "--partition-at", "5", "--heal-at", "2"), "must come after --partition-at"),
])
def test_mistakes_are_one_line(args: tuple[str, ...], message: str) -> None:
    r = demo(*args, timeout=20)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [f"gossipbook: error: {r.stderr.split('error: ', 1)[1].strip()}"]
    assert message in r.stderr
