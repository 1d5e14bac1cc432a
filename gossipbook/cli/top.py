"""``gossipbook top``: the demo's screen watching any running cluster, read-only, refreshed from
``status`` queries (see ``gossipbook/tui/top.py``)."""

from __future__ import annotations

import argparse

import trio

from ..core.errors import UsageError
from .common import add_config, config


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("top", help="watch a running cluster: every node, its links and digests (read-only)",
                       description="Ask every node for its status every --interval seconds and draw the demo's "
                                   "screen: a panel per node, which links are cut (row sees column: suspect, "
                                   "dead or left while that node answers), whether the digests agree. A node "
                                   "that does not answer is shown as down; where the screen has room, each shard's "
                                   "leader, rate and waiting requests (HOT: >= 2x the mean rate) and each node's "
                                   "requests/s since the last poll. Ctrl-C quits. Works with cluster.toml "
                                   "or a client file.")
    add_config(p)
    p.add_argument("--interval", type=float, default=1.0, metavar="S", help="seconds between polls (default 1)")
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="seconds to wait for each node's reply (default: 0.8 x interval, 0.2 to 1)")
    p.add_argument("--once", action="store_true",
                   help="print one frame and exit (exit 3 if a node did not answer), for scripts")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.interval <= 0:
        raise UsageError("--interval must be positive")
    if args.timeout is not None and args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    cfg = config(args)
    from ..tui.top import run_top

    return trio.run(run_top, cfg, args.interval, args.once, None, args.timeout)
