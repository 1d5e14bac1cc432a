"""``gossipbook bench``: performance figures beside same-run baselines."""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from ..core.errors import UsageError

SECTIONS = ("core", "sync", "throughput", "convergence", "scale", "memory")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure performance against same-run baselines",
                       description="Measure gossipbook beside baselines taken in the same run (raw UDP "
                                   "ping-pong, plain dict merges, no-network decode+apply). Figures are "
                                   "medians of repeated runs; latencies come from an HDR histogram.")
    p.add_argument("section", nargs="?", default="core", choices=[*SECTIONS, "all"],
                   help="what to measure (default: core)")
    p.add_argument("--quick", action="store_true", help="smaller workloads (all of them in under 3 minutes)")
    p.add_argument("--nodes", type=int, default=None, help="cluster size for throughput (default 4, and 3)")
    p.add_argument("--ops", type=int, default=None, help="ops per run for core (default 20000, 5000 with --quick)")
    p.add_argument("--repeats", type=int, default=3, help="runs per figure; the median is reported (default 3)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=run)


def _median_run(fn: Callable[[], dict[str, Any]], repeats: int, key: str) -> dict[str, Any]:
    """Run ``fn`` ``repeats`` times; keep the run whose ``key`` is the median."""
    runs = [fn() for _ in range(repeats)]
    runs.sort(key=lambda r: r.get(key) or 0)
    out = dict(runs[len(runs) // 2])
    out["runs"] = [r.get(key) for r in runs]
    return out


def measure(section: str, quick: bool, repeats: int, nodes: int | None, ops: int | None,
            say: Callable[[str], None]) -> Any:
    if section == "core":
        from ..bench.core import run_core
        return run_core(ops or (5_000 if quick else 20_000), repeats, progress=say)
    if section == "sync":
        from ..bench.sync import run_sync
        say("sync: floors, 2 eventual-mode and 3 strong-mode node processes")
        return run_sync(500 if quick else 2000)
    if section == "throughput":
        from ..bench.throughput import STEADY_MIN_S, floor_ops_per_s, run_throughput
        per = 3_000 if quick else 20_000
        floor = floor_ops_per_s(per)
        out = []
        for n in ([nodes] if nodes else [3, 4]):
            say(f"throughput: {n} nodes x {per} ops")
            r = _median_run(lambda n=n: run_throughput(n, per, min_s=STEADY_MIN_S), 1 if quick else repeats,
                            "ops_per_s")
            r["floor_ops_per_s"] = round(floor)
            r["ratio"] = round(r["ops_per_s"] / floor, 3) if r.get("ops_per_s") else None
            # ratio ~ (cores_busy / nodes) x efficiency: every node must fold every op, so with
            # fewer cores than nodes the first factor caps the ratio whatever the code does
            r["floor_cpu_us_per_op"] = round(1e6 / floor, 2)
            if r.get("cpu_us_per_op"):
                r["efficiency"] = round(r["floor_cpu_us_per_op"] / r["cpu_us_per_op"], 3)
            out.append(r)
        return out
    if section == "convergence":
        from ..bench.convergence import run_convergence
        out = []
        for backlog in ([1_000, 10_000] if quick else [1_000, 10_000, 100_000]):
            say(f"convergence: {backlog} ops diverged")
            out.append(_median_run(lambda b=backlog: run_convergence(b), 1 if quick or backlog >= 100_000 else repeats,
                                   "convergence_s"))
        return out
    if section == "scale":
        from ..bench.scale import run_scale
        out = []
        for n in ([2, 4, 8] if quick else [2, 4, 8, 16]):
            say(f"scale: {n} node processes")
            out.append(run_scale(n, 300 if quick else 1000, 500 if quick else 1000))
        return out
    if section == "memory":
        from ..bench.scale import run_memory
        say("memory")
        return run_memory(20_000 if quick else 100_000)
    raise UsageError(f"unknown section {section}")


def run(args: argparse.Namespace) -> int:
    if args.repeats < 1 or (args.ops is not None and args.ops < 100) or (args.nodes is not None and args.nodes < 2):
        raise UsageError("--repeats must be >= 1, --ops >= 100 and --nodes >= 2")
    sections = SECTIONS if args.section == "all" else (args.section,)
    err = Console(stderr=True)
    results: dict[str, Any] = {}
    t0 = time.perf_counter()
    with err.status("bench") as status:
        for sec in sections:
            results[sec] = measure(sec, args.quick, args.repeats, args.nodes, args.ops,
                                   lambda s: status.update(f"bench {s}"))
    from .._compiled import status as build_status

    results["meta"] = {"date": time.strftime("%Y-%m-%d %H:%M"), "python": platform.python_version(),
                       **build_status(),  # compiled: true|false, and why (setup.py, gossipbook/_compiled.py)
                       "quick": args.quick, "repeats": args.repeats, "elapsed_s": round(time.perf_counter() - t0, 1)}
    if args.json:
        print(json.dumps(results, indent=2, default=str))
        return 0
    con = Console()
    for sec in sections:
        for table in _tables(sec, results[sec]):
            con.print(table)
    return 0


#: the columns a terminal table shows per section (everything is in ``--json``)
_COLUMNS = {
    "core": ["name", "ops_per_s", "baseline", "floor_ops_per_s", "ratio"],
    "sync": ["mode", "p50_us", "p99_us", "p999_us", "ratio", "ratio_paced", "ack_p50_us"],
    "sync stages": ["mode", "a_encode_us", "wire_wakeup_us", "b_decode_us", "b_fold_us", "p50_us"],
    "throughput": ["nodes", "ops_per_s", "floor_ops_per_s", "ratio", "cores_busy", "cpu_us_per_op",
                   "floor_cpu_us_per_op", "efficiency", "ops_per_datagram", "bytes_per_op"],
    "convergence": ["backlog", "nodes", "convergence_s", "repair_ops", "revised_trades"],
    "scale": ["nodes", "ops", "msgs_per_op", "p50_us", "p99_us"],
    "memory": ["ops", "mb_per_million_ops", "mb_per_million_after_compaction", "resting_orders"],
}


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return "" if v is None else str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if v and abs(v) < 0.1:
            return f"{v:.2g}"
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.1f}" if abs(v) >= 10 else f"{v:,.2f}"
    return str(v)


def _tables(sec: str, res: Any) -> list[Table]:
    if sec != "sync":
        return [_table(f"bench {sec}", _COLUMNS.get(sec), res if isinstance(res, list) else [res])]
    floors = [("floor: trio RTT/2", "floor_rtt_trio"), ("floor: trio RTT/2, paced",
                                                         "floor_rtt_trio_paced"), ("floor: plain RTT/2", "floor_rtt_plain")]
    rows = [*({"mode": m, **res[m]} for m in ("eventual", "strong") if m in res),
            *({"mode": name, **{q: res[k][q] / 2 for q in ("p50_us", "p99_us", "p999_us") if q in res[k]}}
              for name, k in floors if k in res)]
    out = [_table("bench sync (µs; ratio: p50 / floor p50)", _COLUMNS["sync"], rows)]
    staged = [{"mode": m, **res[m]} for m in ("eventual",) if "b_fold_us" in res.get(m, {})]
    if staged:
        out.append(_table("bench sync: where the eventual hop spends its time (medians, µs)",
                          _COLUMNS["sync stages"], staged))
    return out


def _table(title: str, cols: list[str] | None, rows: list[dict[str, Any]]) -> Table:
    t = Table(title=title)
    if cols is None:
        cols = [k for k in rows[0] if not isinstance(rows[0][k], dict | list)] if rows else []
    for c in cols:
        t.add_column(c.removesuffix("_us").replace("_", " ") + (" µs" if c.endswith("_us") else ""),
                     justify="left" if c in ("mode", "name", "baseline") else "right")
    for r in rows:
        t.add_row(*[_fmt(r.get(c)) for c in cols])
    return t
