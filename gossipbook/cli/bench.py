"""``gossipbook bench``: performance figures beside same-run baselines."""

from __future__ import annotations

import argparse
import json
import platform
import time

from rich.console import Console
from rich.table import Table


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure performance against same-run baselines",
                       description="Measure gossipbook against baselines taken in the same run; "
                                   "every figure is a median of repeated runs.")
    p.add_argument("section", nargs="?", default="core", choices=["core"],
                   help="what to measure (default: core)")
    p.add_argument("--quick", action="store_true", help="smaller workloads, for CI and a first look")
    p.add_argument("--ops", type=int, default=None, help="ops per run (default 20000, 5000 with --quick)")
    p.add_argument("--repeats", type=int, default=3, help="runs per figure; the median is reported")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..bench.core import run_core
    from ..core.errors import UsageError

    n = args.ops or (5_000 if args.quick else 20_000)
    if n < 100 or args.repeats < 1:
        raise UsageError("--ops must be at least 100 and --repeats at least 1")
    err = Console(stderr=True)
    with err.status("bench core") as status:
        rows = run_core(n, args.repeats, progress=lambda s: status.update(f"bench core: {s}"))
    meta = {"date": time.strftime("%Y-%m-%d"), "python": platform.python_version(), "ops": n,
            "repeats": args.repeats}
    if args.json:
        print(json.dumps({"core": rows, "meta": meta}, indent=2))
        return 0
    t = Table(title=f"bench core — {n} ops, median of {args.repeats}")
    for col in ("figure", "ops/s", "baseline", "baseline ops/s", "ratio"):
        t.add_column(col, justify="right" if "ops" in col or col == "ratio" else "left")
    for r in rows:
        t.add_row(r["name"], f"{r['ops_per_s']:,}", r["baseline"], f"{r['floor_ops_per_s']:,}", f"{r['ratio']:.3f}")
    Console().print(t)
    return 0
