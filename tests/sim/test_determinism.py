"""One seed, one trace: bit for bit, across runs, processes and hash seeds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from gossipbook.sim import SimConfig, Simulation, run_seed

from .conftest import FIVE, SMALL

ROOT = Path(__file__).resolve().parents[2]


def test_same_seed_same_trace_hash() -> None:
    a, b = run_seed(7, FIVE), run_seed(7, FIVE)
    assert a.trace_hash == b.trace_hash
    assert (a.ops, a.trades, a.msgs_per_op, a.convergence_s) == (b.ops, b.trades, b.msgs_per_op, b.convergence_s)


def test_different_seeds_differ() -> None:
    hashes = {run_seed(s, SMALL).trace_hash for s in range(1, 5)}
    assert len(hashes) == 4


def test_the_trace_is_the_hash_input() -> None:
    """The text trace lists the datagrams and events the hash covers, in the same order."""
    lines: list[str] = []
    sim = Simulation(3, SMALL, trace=lines.append).run()
    quiet = Simulation(3, SMALL).run()
    assert sim.trace_hash == quiet.trace_hash  # tracing observes, never perturbs
    assert any("OpBatch[" in line for line in lines)
    assert any("event TradeExecuted" in line for line in lines)
    assert any("liveness phase" in line for line in lines)


def test_same_hash_in_another_process_with_another_hash_seed() -> None:
    """Nothing may depend on set or dict order of strings (PYTHONHASHSEED) or on the process."""
    code = ("import json; from gossipbook.sim import run_seed, SimConfig, FAULTS; "
            "r = run_seed(11, SimConfig(nodes=4, duration_s=5, orders=80, bound_s=15, faults=FAULTS)); "
            "print(json.dumps([r.trace_hash, r.ops]))")
    out = set()
    for hs in ("1", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=hs)
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                           timeout=120)
        assert p.returncode == 0, p.stderr
        out.add(tuple(json.loads(p.stdout)))
    local = run_seed(11, SimConfig(nodes=4, duration_s=5, orders=80, bound_s=15))
    assert out == {(local.trace_hash, local.ops)}
