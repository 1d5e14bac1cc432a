"""Shared pieces of the simulator tests: small, fast cluster configs and a run helper."""

from __future__ import annotations

import pytest

from gossipbook.sim import FAULTS, RunResult, SimConfig, run_seed


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "seed(n): a simulator seed that once found a bug (replay: see the test)")


#: a small, fast cluster: 3 nodes, 10 virtual seconds of faults and 150 orders, 15 s to converge
SMALL = SimConfig(nodes=3, duration_s=10, orders=150, bound_s=15, faults=FAULTS)
#: the default cluster size, shorter
FIVE = SimConfig(nodes=5, duration_s=10, orders=200, bound_s=20, faults=FAULTS)


def explain(results: list[RunResult]) -> str:
    """Every failing run's first violations and its replay command, for assertion messages."""
    lines = []
    for r in results:
        if not r.ok:
            lines.append(f"seed {r.seed} ({', '.join(r.faults)}): {r.violation_counts}")
            lines += [f"    {v['kind']} at {v['t_s']}s on {v['node']}: {v['evidence']}" for v in r.violations]
            lines.append(f"    replay: {r.command}")
    return "\n".join(lines)


def run_many(seeds: range | list[int], cfg: SimConfig, break_name: str | None = None,
             stop_at_failure: bool = False) -> list[RunResult]:
    out = []
    for s in seeds:
        r = run_seed(s, cfg, break_name)
        out.append(r)
        if stop_at_failure and not r.ok:
            break
    return out
