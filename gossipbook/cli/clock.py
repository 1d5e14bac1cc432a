"""``gossipbook clock``: each node's clock against the time reference (``report``), and the clock
checker over simulated clocks (``check``)."""

from __future__ import annotations

import argparse
from typing import Any

import trio
from rich.console import Console
from rich.table import Table

from ..core.errors import UsageError
from .common import add_config, config, print_json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("clock", help="clock error bounds: per node (report) or the simulated checker (check)",
                       description="Time you can prove: each node's offset to the cluster's time reference, its "
                                   "error bound, measured drift and status (report), or the clock checker run "
                                   "over simulated clocks (check).")
    s = p.add_subparsers(dest="clock_command", metavar="SUBCOMMAND")
    r = s.add_parser("report", help="each node's offset, bound, drift, status and RTS 25 verdict",
                     description="Ask every node for its clock: offset_us (reference minus node), bound_us "
                                 "(the reference is within offset +- bound), drift_ppm, status (synced, "
                                 "free-running, unsynced), rts25_ok (bound <= 100 µs at 1 µs granularity). "
                                 "Exit 3 if a node is unreachable, 13 if one is not within its own limit.")
    add_config(r)
    r.add_argument("--timeout", type=float, default=1.5, help="seconds to wait for each node (default 1.5)")
    r.add_argument("--json", action="store_true", help="print JSON")
    r.set_defaults(func=run_report)
    c = s.add_parser("check", help="the clock checker: is the true offset always inside the reported bound?",
                     description="Simulate clusters with skewed, drifting clocks and asymmetric, jittery links "
                                 "(gossipbook/sim/clockcheck.py) and check every reading against the truth. "
                                 "Exit 1 on a violation.")
    c.add_argument("--seeds", type=int, default=20, help="seeds 1..N (default 20)")
    c.add_argument("--seed", type=int, default=None, help="run only this seed")
    c.add_argument("--duration", type=float, default=30.0, help="simulated seconds per seed (default 30)")
    c.add_argument("--break", dest="brk", default=None, help="a deliberate mutation: no-drift, rtt-not-halved")
    c.add_argument("--json", action="store_true", help="print JSON")
    c.set_defaults(func=run_check)
    b = s.add_parser("bench", help="bounds and errors on loopback against injected skew and drift",
                     description="Start 3 node processes (time_source n1; n2 skewed +30 ms, drifting +40 ppm; "
                                 "n3 -20 ms, -25 ppm), poll their status, compare each reported offset with "
                                 "the injected truth, and measure the one-way trio UDP floor in the same run "
                                 "(gossipbook/bench/clock.py). Exit 1 if the truth ever left the bound.")
    b.add_argument("--duration", type=float, default=60.0, help="seconds of polling (default 60)")
    b.add_argument("--json", action="store_true", help="print JSON")
    b.set_defaults(func=run_bench)
    p.set_defaults(func=lambda _a: p.print_help() or 0)


def _row(n: dict[str, Any]) -> dict[str, Any]:
    c = n.get("clock") or {}
    return {"id": n["id"], "reachable": n["reachable"], "status": c.get("status"), "reference": c.get("reference"),
            "offset_us": c.get("offset_us"), "bound_us": c.get("bound_us"), "drift_ppm": c.get("drift_ppm"),
            "max_error_us": c.get("max_error_us"), "rts25_ok": c.get("rts25_ok"),
            "takes_orders": c.get("takes_orders")}


def run_report(args: argparse.Namespace) -> int:
    from .status import gather_status

    cfg = config(args)
    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    rows = [_row(n) for n in trio.run(gather_status, cfg, args.timeout)]
    code = 3 if not all(r["reachable"] for r in rows) else (
        13 if any(r["takes_orders"] is False for r in rows) else 0)
    if args.json:
        print_json({"nodes": rows})
        return code
    t = Table(title=f"clocks of {cfg.path}")
    for col in ("node", "status", "reference", "offset µs", "bound µs", "drift ppm", "limit µs", "RTS 25"):
        t.add_column(col)

    def num(v: Any, fmt: str) -> str:
        return "" if v is None else format(v, fmt)

    for r in rows:
        if not r["reachable"]:
            t.add_row(r["id"], "[red]unreachable[/]", *[""] * 6)
            continue
        if r["status"] is None:  # a strong-mode node (or an older one): no clock bound
            t.add_row(r["id"], "-", *[""] * 6)
            continue
        st = r["status"] if r["takes_orders"] else f"[red]{r['status']}[/]"
        t.add_row(r["id"], st, r["reference"] or "", num(r["offset_us"], "+.1f"), num(r["bound_us"], ".1f"),
                  num(r["drift_ppm"], "+.2f"), num(r["max_error_us"], ".0f"), "yes" if r["rts25_ok"] else "no")
    Console().print(t)
    return code


def run_check(args: argparse.Namespace) -> int:
    from ..core.clockbound import BREAKS
    from ..sim.clockcheck import run_seed

    if args.brk is not None and args.brk not in BREAKS:
        raise UsageError(f"unknown --break {args.brk!r}; known: {', '.join(BREAKS)}")
    if args.seeds < 1 or args.duration <= 0:
        raise UsageError("--seeds and --duration must be positive")
    seeds = [args.seed] if args.seed is not None else list(range(1, args.seeds + 1))
    runs = [run_seed(s, breaks=[args.brk] if args.brk else [], duration_s=args.duration) for s in seeds]
    bad = [r for r in runs if not r.ok]
    if args.json:
        print_json({"break": args.brk, "results": [r.to_json() for r in runs], "failed": [r.seed for r in bad],
                    "max_ratio": max(r.max_ratio for r in runs), "checks": sum(r.checks for r in runs)})
    else:
        for r in runs:
            j = r.to_json()
            print(f"seed {r.seed}: {'ok' if r.ok else 'VIOLATION'} nodes={r.nodes} reference={r.reference} "
                  f"checks={r.checks} max |error|/bound={j['max_ratio']} bound p50/p99 = "
                  f"{j['bound_p50_us']:.0f}/{j['bound_p99_us']:.0f} µs resets={r.resets} hash={r.trace_hash}")
            for v in r.violations:
                print(f"  {v}")
        print(f"{len(runs) - len(bad)}/{len(runs)} seeds ok; {sum(r.checks for r in runs)} readings checked; "
              f"max |error|/bound {max(r.max_ratio for r in runs):.4f}")
    return 1 if bad else 0


def run_bench(args: argparse.Namespace) -> int:
    from ..bench.clock import run_clock_bench

    if args.duration <= 0:
        raise UsageError("--duration must be positive")
    res = run_clock_bench(args.duration)
    if args.json:
        print_json(res)
    else:
        print(f"{res['samples']} samples over {res['duration_s']:.0f} s ({res['statuses']}): bound p50 "
              f"{res['bound_p50_us']:.1f} µs, p99 {res['bound_p99_us']:.1f} µs; |error| p50 {res['error_p50_us']:.1f} "
              f"µs, p99 {res['error_p99_us']:.1f} µs, max {res['error_max_us']:.1f} µs; max |error|/bound "
              f"{res['max_error_over_bound']}; one-way trio floor p50 {res['floor_one_way_p50_us']:.1f} µs "
              f"(bound p50 = {res['bound_p50_over_floor']}x floor)")
    return 1 if res["violations"] else 0
