"""``gossipbook cluster init``: write a fresh, valid cluster config."""

from __future__ import annotations

import argparse
import sys

from ..config import MODES, render
from ..core.errors import UsageError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cluster", help="cluster configuration (init)",
                       description="Manage cluster configuration files.")
    csub = p.add_subparsers(dest="cluster_command", metavar="SUBCOMMAND")
    i = csub.add_parser("init", help="print a new cluster.toml with a fresh random key",
                        description="Print a valid cluster.toml (fresh random key, loopback addresses by "
                                    "default, the default instrument) to stdout: "
                                    "gossipbook cluster init --nodes 4 > cluster.toml")
    i.add_argument("--nodes", type=int, default=4, help="number of nodes (default 4)")
    i.add_argument("--base-port", type=int, default=7401, help="UDP port of n1; n2 gets the next (default 7401)")
    i.add_argument("--host", default="127.0.0.1", help="address of every node (default 127.0.0.1)")
    i.add_argument("--mode", choices=MODES, default="eventual", help="consistency mode (default eventual)")
    i.add_argument("--data-root", default=None, help="give each node a data_dir under this folder")
    i.set_defaults(func=run_init)
    p.set_defaults(func=lambda a: (p.print_help(), 0)[1])


def run_init(args: argparse.Namespace) -> int:
    if not 1 <= args.nodes <= 64:
        raise UsageError("--nodes must be between 1 and 64")
    if not 1 <= args.base_port <= 65535 - args.nodes:
        raise UsageError("--base-port leaves no room for that many nodes below 65536")
    sys.stdout.write(render(args.nodes, args.base_port, args.host, args.mode, args.data_root))
    return 0
