"""``gossipbook demo``: real nodes on this machine, an order flow, a partition, a live TUI.

Argument parsing and output only: the scenario is ``gossipbook.demo``, the screen ``gossipbook.tui``.
"""

from __future__ import annotations

import argparse
import sys

EXIT_INTERRUPTED = 130
EXIT_DIVERGED = 1


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="watch replicas diverge and converge: N local nodes, an order flow, a partition",
        description="Start N real nodes on 127.0.0.1 (free ports, temp state removed on exit) and send a "
                    "seeded order flow into every node. With --partition the cluster is split (first half | "
                    "second half, or --split) and healed later; a live screen shows each replica's digest, "
                    "books, links and events, and a summary says how long convergence took. With --replace "
                    "the last node is killed for good, the operator removes it and adds a fresh one (the real "
                    "cluster remove-node / add-node commands) while orders keep flowing. Ctrl-C stops it "
                    "cleanly at any time.")
    p.add_argument("--nodes", type=int, default=4, help="how many nodes (2-8, default 4)")
    p.add_argument("--seed", type=int, default=1, help="seed of the order flow and the nodes (default 1)")
    p.add_argument("--rate", type=float, default=20.0, help="orders per second into each node (default 20)")
    p.add_argument("--duration", type=float, default=None,
                   help="seconds to run at most (default 16); a partitioned run ends early once it has "
                        "converged after the heal")
    p.add_argument("--partition", action="store_true", help="split the cluster during the run, then heal it")
    p.add_argument("--split", default=None, metavar="SIDES",
                   help="the sides of the partition, e.g. 'n1,n2|n3,n4' (default: first half | second half; "
                        "implies --partition)")
    p.add_argument("--partition-at", type=float, default=None, metavar="S",
                   help="seconds into the run when the partition starts (default 3)")
    p.add_argument("--heal-at", type=float, default=None, metavar="S",
                   help="seconds into the run when the partition heals (default 10)")
    p.add_argument("--mode", choices=("eventual", "strong"), default="eventual",
                   help="consistency mode (default eventual; strong needs the sequencer)")
    p.add_argument("--replace", action="store_true",
                   help="replace a dead node: kill the last node for good (at 3 s), remove it with 'gossipbook "
                        "cluster remove-node --write' (its role turns removed, the epoch goes up, provisional trades "
                        "become final), add a fresh node with 'cluster add-node --write' and start it (learner, then "
                        "voter, its digest catching up); ends by itself with the time until finality resumed and "
                        "until the new node caught up (needs 3+ nodes, eventual mode; --duration caps it, default 45)")
    p.add_argument("--headless", action="store_true", help="no live screen: print events and a summary")
    p.add_argument("--json", action="store_true", help="print the result as JSON (implies --headless)")
    p.add_argument("--fix", type=int, default=None, metavar="PORT",
                   help="also run a FIX 4.4 gateway on 127.0.0.1:PORT (0: any free port) with sessions FIX1 and "
                        "FIX2, and print the settings to connect a FIX client (docs/fix.md); the run lasts "
                        "--duration (default 600 s with --fix)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..demo.scenario import Scenario, make_options, run_headless
    from ..demo.snapshot import LogEvent
    from .common import print_json

    opts = make_options(nodes=args.nodes, seed=args.seed, rate=args.rate, duration=args.duration,
                        partition=args.partition, split=args.split, partition_at=args.partition_at,
                        heal_at=args.heal_at, mode=args.mode, fix_port=args.fix, replace=args.replace)
    out = Console()
    if opts.fix_port is not None:  # before the run: the screen (or the JSON on stdout) comes after
        from ..demo.scenario import fix_client_settings

        print(f"FIX 4.4 gateway on 127.0.0.1:{opts.fix_port or '<free port>'} once the nodes are up; a FIX "
              f"client's session settings (QuickFIX style):\n{fix_client_settings(opts)}\n",
              file=sys.stderr if args.json else sys.stdout, flush=True)
    headless = args.headless or args.json or not out.is_terminal
    if args.json:
        result = run_headless(opts)
        print_json(result.to_json())
    elif headless:
        from ..tui.panels import event_line, summary

        def show(e: LogEvent) -> None:
            out.print(event_line(e), soft_wrap=True)  # a log line: never cut, never re-wrapped

        result = run_headless(opts, show)
        out.print(summary(result))
    else:
        from ..tui.app import run_tui

        result = run_tui(Scenario(opts), out)
    if result.interrupted:
        print("gossipbook: demo interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0 if result.converged else EXIT_DIVERGED

