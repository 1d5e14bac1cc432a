"""``gossipbook cluster init``: write a fresh, valid cluster config (and one client file per account)."""

from __future__ import annotations

import argparse
import secrets
import sys
import tomllib
from pathlib import Path

from ..config import MODES, OPERATOR, ConfigError, check_id, from_dict, render, render_client, write_private
from ..core.errors import UsageError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cluster", help="cluster configuration (init)",
                       description="Manage cluster configuration files.")
    csub = p.add_subparsers(dest="cluster_command", metavar="SUBCOMMAND")
    i = csub.add_parser("init", help="write a new cluster.toml (fresh keys) and client files",
                        description="Make a valid cluster.toml (fresh random peer key, one credential per "
                                    "account, loopback addresses by default, the default instrument). With "
                                    "--out DIR: DIR/cluster.toml and DIR/clients/ACCOUNT.toml, every file mode "
                                    "0600, e.g. gossipbook cluster init --nodes 3 --accounts alice,bob --out "
                                    "venue; without --out the cluster.toml goes to stdout (for scripts), with "
                                    "one operator account.")
    i.add_argument("--nodes", type=int, default=4, help="number of nodes (default 4)")
    i.add_argument("--base-port", type=int, default=7401, help="UDP port of n1; n2 gets the next (default 7401)")
    i.add_argument("--host", default="127.0.0.1", help="address of every node (default 127.0.0.1)")
    i.add_argument("--mode", choices=MODES, default="eventual", help="consistency mode (default eventual)")
    i.add_argument("--shards", type=int, default=1, metavar="K",
                   help="strong mode: K sequencer groups, one instrument each (GBX, GBX2, ...), leaders spread "
                        "over the nodes (default 1; edit [[shards]] to group instruments)")
    i.add_argument("--data-root", default=None, help="give each node a data_dir under this folder")
    i.add_argument("--accounts", default="", metavar="A,B,...",
                   help=f"trading accounts to create besides {OPERATOR} (ids: letters, digits, '-', '_', '.')")
    i.add_argument("--out", default=None, metavar="DIR",
                   help="write DIR/cluster.toml and DIR/clients/<account>.toml (mode 0600) instead of stdout")
    i.add_argument("--force", action="store_true", help="with --out: replace files that exist")
    i.set_defaults(func=run_init)
    p.set_defaults(func=lambda a: (p.print_help(), 0)[1])


def run_init(args: argparse.Namespace) -> int:
    if not 1 <= args.nodes <= 64:
        raise UsageError("--nodes must be between 1 and 64")
    if not 1 <= args.base_port <= 65535 - args.nodes:
        raise UsageError("--base-port leaves no room for that many nodes below 65536")
    if not 1 <= args.shards <= 64:
        raise UsageError("--shards must be from 1 to 64 (sequencer groups, strong mode)")
    names = [a.strip() for a in args.accounts.split(",") if a.strip()]
    try:
        for a in names:
            check_id(a, "--accounts: account id")
    except ConfigError as e:
        raise UsageError(str(e)) from None
    if len(set(names)) != len(names):
        raise UsageError("--accounts names an account twice")
    accounts = {a: secrets.token_bytes(32) for a in [OPERATOR, *[n for n in names if n != OPERATOR]]}
    try:
        text = render(args.nodes, args.base_port, args.host, args.mode, args.data_root, accounts=accounts,
                      shards=args.shards)
    except ConfigError as e:
        raise UsageError(str(e)) from None
    if args.out is None:
        sys.stdout.write(text)
        return 0
    out = Path(args.out)
    targets = [out / "cluster.toml"] + [out / "clients" / f"{a}.toml" for a in accounts]
    existing = [str(t) for t in targets if t.exists()]
    if existing and not args.force:
        raise UsageError(f"{existing[0]} exists (use --force to replace, or another --out)")
    cfg = from_dict(tomllib.loads(text), str(out / "cluster.toml"))
    write_private(out / "cluster.toml", text)
    (out / "clients").mkdir(mode=0o700, exist_ok=True)
    for a in accounts:
        write_private(out / "clients" / f"{a}.toml", render_client(cfg, a))
    print(f"wrote {out / 'cluster.toml'} (nodes and operator: holds the peer key) and "
          f"{len(accounts)} client files in {out / 'clients'} ({', '.join(accounts)}), all mode 0600")
    return 0
