"""``gossipbook sim``: run the deterministic cluster simulator over many seeds and check every run."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..core.errors import UsageError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sim", help="simulate a cluster under seeded faults and check the invariants",
        description="Run N real node cores on virtual time and a simulated network, one seed per run: "
                    "a safety phase with faults and client orders, then a liveness phase with every fault "
                    "healed. Each run is checked against DESIGN.md's invariants; a failing seed prints the "
                    "one command that replays it.")
    p.add_argument("--mode", choices=("eventual", "strong"), default="eventual",
                   help="consistency mode: eventual (the op-set CRDT) or strong (the sequencer); each has "
                        "its own checker (default eventual)")
    p.add_argument("--nodes", type=int, default=5, help="nodes in the cluster (default 5)")
    p.add_argument("--shards", type=int, default=1, metavar="K",
                   help="strong mode: K sequencer groups per node, one instrument each, checked per shard "
                        "(default 1)")
    p.add_argument("--seeds", type=int, default=None,
                   help="number of seeds to run (default 100; 1 when --seed is given)")
    p.add_argument("--seed", type=int, default=None,
                   help="the first seed (default 1); alone, runs just this seed: a replay")
    p.add_argument("--faults", default="all",
                   help="comma-separated faults to draw from: partition,loss,dup,reorder,crash,pause,skew "
                        "(default all; 'none' for none). Each seed draws its own mix and rates.")
    p.add_argument("--duration", type=float, default=60.0,
                   help="virtual seconds of the safety phase (faults and orders; default 60)")
    p.add_argument("--orders", type=int, default=1000, help="client orders per run (default 1000)")
    p.add_argument("--bound", type=float, default=30.0,
                   help="liveness bound: virtual seconds after the heal to converge (default 30)")
    p.add_argument("--break", dest="break_name", default=None, metavar="NAME",
                   help="run a deliberately broken core (the checker should catch it): eventual mode "
                        "no-replay, no-anti-entropy, no-dedupe, wrong-tiebreak, no-offset-check; both modes "
                        "no-owner-check, no-stp, no-risk-check; eventual no-escrow, no-fence; strong mode "
                        "vote-any-log, commit-without-majority, no-term-check, commit-old-term; with --shards "
                        "shared-term")
    p.add_argument("--gossip", action="append", default=[], metavar="KEY=VALUE",
                   help="eventual mode: a [gossip] setting as in cluster.toml (repeatable), e.g. "
                        "--gossip defer_min_ops=30 to put every partition's catch-up through the held path")
    p.add_argument("--risk", action="store_true",
                   help="add two clients trading under risk limits (and a kill switch); the checker holds "
                        "the converged view to the limits (risk_exceeded)")
    p.add_argument("--members", action="store_true",
                   help="the nemesis also changes membership. Eventual: a dead node removed, a node added, "
                        "a dead host replaced, a cut-off node fenced with --force; the checker holds every "
                        "removed member's later ops out (removed_op_applied). Strong (one group): learners "
                        "added and promoted, a follower and the leader removed, a host replaced; one change "
                        "at a time in every log (conf_two_pending), one leader per term")
    p.add_argument("--jobs", type=int, default=1, help="seeds to run in parallel processes (default 1)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--trace", metavar="FILE", default=None,
                   help="write every delivered datagram, event and fault of each run to FILE")
    p.set_defaults(func=run)


def _config(args: argparse.Namespace) -> Any:
    from ..sim import SimConfig, parse_faults
    from ..sim.breaks import check_break

    if not 1 <= args.nodes <= 64:
        raise UsageError("--nodes must be between 1 and 64")
    if args.seeds is not None and args.seeds < 1:
        raise UsageError("--seeds must be at least 1")
    if args.seed is not None and args.seed < 0:
        raise UsageError("--seed must not be negative")
    if not 0 < args.duration <= 3600:
        raise UsageError("--duration must be in (0, 3600] virtual seconds")
    if args.orders < 0:
        raise UsageError("--orders must not be negative")
    if args.bound <= 0:
        raise UsageError("--bound must be positive")
    if args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    check_break(args.break_name, args.mode)
    if args.members and args.shards != 1:
        raise UsageError("--members with --shards: strong-mode membership changes are for one group only "
                         "(docs/operations.md, \"Strong mode\")")
    if args.shards != 1 and (args.mode != "strong" or not 1 <= args.shards <= 64):
        raise UsageError("--shards is 1 to 64 sequencer groups, with --mode strong")
    if args.break_name == "shared-term" and args.shards < 2:
        raise UsageError("--break shared-term needs shards to share a term: add --shards 2 or more")
    return SimConfig(nodes=args.nodes, duration_s=args.duration, orders=args.orders,
                     faults=parse_faults(args.faults), bound_s=args.bound, mode=args.mode,
                     gossip=_gossip(args.gossip) if args.gossip else None, risk=args.risk, shards=args.shards,
                     members=args.members)


def _gossip(items: list[str]) -> Any:
    """``KEY=VALUE`` pairs through the cluster.toml [gossip] reader (same keys, same checks)."""
    from ..config import parse_section
    from ..core.gossip import GossipConfig

    raw: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--gossip wants KEY=VALUE, not {item!r}")
        v = value.strip().lower()
        try:
            raw[key.strip()] = True if v == "true" else False if v == "false" else float(v) if "." in v else int(v)
        except ValueError:
            raise UsageError(f"--gossip {key}: {value!r} is not a number or true/false") from None
    return parse_section(GossipConfig, raw, "--gossip")


def _one(job: tuple[int, Any, str | None, str | None]) -> Any:
    from ..sim import run_seed

    seed, cfg, break_name, trace_path = job
    if trace_path is None:
        return run_seed(seed, cfg, break_name)
    lines: list[str] = [f"# seed {seed}"]
    res = run_seed(seed, cfg, break_name, trace=lines.append)
    lines.append(f"# seed {seed}: {'ok' if res.ok else 'FAILED'} trace hash {res.trace_hash}")
    with open(trace_path, "a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return res


def _results(seeds: list[int], cfg: Any, args: argparse.Namespace) -> Iterator[Any]:
    from ..sim.breaks import needs_pure

    jobs = [(s, cfg, args.break_name, args.trace) for s in seeds]
    pure = needs_pure(args.break_name)
    if not pure and (args.jobs == 1 or len(seeds) == 1 or args.trace):
        yield from map(_one, jobs)
        return
    import multiprocessing

    if pure:  # this break patches the compiled core: its seeds run pure, in fresh processes
        os.environ["GOSSIPBOOK_PURE"] = "1"
    with multiprocessing.get_context("spawn" if pure else "fork").Pool(1 if args.trace else args.jobs) as pool:
        yield from pool.imap(_one, jobs)


def run(args: argparse.Namespace) -> int:
    from ..sim import summarize

    cfg = _config(args)
    first = args.seed if args.seed is not None else 1
    n = args.seeds if args.seeds is not None else (1 if args.seed is not None else 100)
    seeds = list(range(first, first + n))
    if args.trace:
        try:
            open(args.trace, "w", encoding="utf-8").close()
        except OSError as e:
            raise UsageError(f"cannot write the trace file {args.trace}: {e.strerror}") from None
    err = Console(stderr=True)
    results = []
    with Progress(TextColumn("sim"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
                  TimeElapsedColumn(), console=err, transient=True,
                  disable=args.json and not err.is_terminal) as prog:
        task = prog.add_task("seeds", total=len(seeds), status="")
        for res in _results(seeds, cfg, args):
            results.append(res)
            bad = sum(not r.ok for r in results)
            prog.update(task, advance=1, status=f"[red]{bad} failed[/red]" if bad else "[green]all ok[/green]")
    summary = summarize(results)
    failures = [r for r in results if not r.ok]
    if args.json:
        json.dump({"runs": len(results), "failures": len(failures),
                   "config": {"mode": cfg.mode, "nodes": cfg.nodes, "shards": cfg.shards, "duration_s": cfg.duration_s,
                              "orders": cfg.orders,
                              "faults": list(cfg.faults), "bound_s": cfg.bound_s, "break": args.break_name,
                              "seeds": [seeds[0], seeds[-1]]},
                   "summary": summary, "results": [r.to_json() for r in results]},
                  sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print(Console(), results, summary, args)
    return 1 if failures else 0


def _f(x: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def _print(out: Console, results: list[Any], summary: dict[str, Any], args: argparse.Namespace) -> None:
    title = (f"gossipbook sim — {args.mode} mode{f' ({args.shards} shards)' if args.shards > 1 else ''}, "
             f"{summary['runs']} seeds, {args.nodes} nodes, "
             f"{args.duration:g}s + liveness")
    if args.break_name:
        title += f", --break {args.break_name}"
    t = Table(title=title, caption="fault: seeds where it was active; conv / final: virtual seconds from the "
                                   "heal to one digest everywhere / to every op final")
    for col in ("fault", "seeds", "failed", "conv p50", "conv p99", "final p50", "final p99", "msg/op", "B/op"):
        if col == "fault":
            t.add_column(col, no_wrap=True, min_width=9)
        else:
            t.add_column(col, justify="right")

    def row(name: str, s: dict[str, Any]) -> None:
        c, f = s["convergence_s"], s["finality_s"]
        t.add_row(name, str(s["runs"]), f"[red]{s['failures']}[/red]" if s["failures"] else "0",
                  _f(c["p50"], "{:.3f}"), _f(c["p99"], "{:.3f}"), _f(f["p50"], "{:.3f}"), _f(f["p99"], "{:.3f}"),
                  _f(s["msgs_per_op"]), _f(s["bytes_per_op"], "{:.0f}"))

    row("[b]all[/b]", summary)
    for name, s in summary["by_fault"].items():
        row(name, s)
    out.print(t)
    out.print(f"per run: {_f(summary['ops_per_run'], '{:.0f}')} ops, {_f(summary['trades_per_run'], '{:.0f}')} "
              f"trades, {_f(summary['revised_per_run'], '{:.1f}')} revised; "
              f"{_f(summary['wall_s_per_run'], '{:.2f}')} s wall")
    failures = [r for r in results if not r.ok]
    if len(results) == 1:
        r = results[0]
        out.print(f"seed {r.seed}: faults {', '.join(r.faults) or 'none'}; trace hash {r.trace_hash}", soft_wrap=True)
    if not failures:
        out.print(f"[green]all {len(results)} runs passed every check[/green]")
        return
    out.print(f"[red]{len(failures)} of {len(results)} runs broke an invariant[/red]")
    for r in failures[:20]:
        out.print(f"[b]seed {r.seed}[/b] ({', '.join(r.faults) or 'no faults'}):")
        for v in r.violations[:4]:
            out.print(f"  {v['kind']} at {v['t_s']:.3f}s{' on ' + v['node'] if v['node'] else ''}: {v['evidence']}",
                      markup=False, highlight=False, soft_wrap=True)
        out.print(f"  replay: {r.command}", markup=False, highlight=False, soft_wrap=True)
    if len(failures) > 20:
        out.print(f"... and {len(failures) - 20} more (--json lists them all)")
