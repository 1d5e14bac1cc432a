"""``gossipbook cluster``: ``init`` writes a fresh, valid cluster config (and one client file per
account); ``add-node`` and ``remove-node`` change the running cluster's membership (a replicated,
operator-stamped op: core/config_epoch.py; the runbooks are in docs/operations.md)."""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import trio

from ..config import (
    MODES,
    OPERATOR,
    ConfigError,
    check_id,
    from_dict,
    load,
    render,
    render_client,
    write_private,
)
from ..core.errors import UsageError
from .cluster_file import check_writable, drop_nodes, write_atomic
from .orders import Rejected


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cluster", help="cluster configuration (init, add-node, remove-node)",
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
    a = csub.add_parser("add-node", help="add a node to the running cluster (then start it)",
                        description="Stamp the addition of a new node through a member (the operator's "
                                    "credential from cluster.toml), wait until a majority holds it, then print "
                                    "the config the new node starts from (the file's nodes and the new one, "
                                    "join = true) or, with --write, append the new node to the file. Start the "
                                    "new node at once: finality waits for it from the addition on.")
    a.add_argument("--config", "-c", default="cluster.toml", metavar="FILE", help="cluster.toml (default)")
    a.add_argument("--id", required=True, help="the new node's id (never one that was removed)")
    a.add_argument("--addr", required=True, metavar="HOST:PORT", help="where the new node will listen")
    a.add_argument("--data-dir", default=None, help="the new node's data_dir in the printed config")
    a.add_argument("--node", "-n", default=None, help="the member to send it to (default: the first that answers)")
    a.add_argument("--write", action="store_true", help="append the new node to --config instead of printing")
    a.add_argument("--timeout", type=float, default=10.0, help="seconds to keep trying (default 10)")
    a.set_defaults(func=run_add)
    r = csub.add_parser("remove-node", help="remove a member (dead for good, or leaving)",
                        description="Stamp the removal of a member through another member: its ops up to the "
                                    "highest seq that member holds (the fence) are kept and spread, later ones are "
                                    "refused on every replica, and finality and compaction stop waiting for it. "
                                    "Stop the node first (SIGTERM, or it is dead); the command waits (retrying) "
                                    "until every other member has reported since the removed one was last heard, "
                                    "so no op some member holds is cut. A removed id is never used again.")
    r.add_argument("member", nargs="+", help="the id of the member to remove; several (two dead at once) are "
                                              "removed together, none waiting for the others' reports")
    r.add_argument("--config", "-c", default="cluster.toml", metavar="FILE", help="cluster.toml (default)")
    r.add_argument("--node", "-n", default=None, help="the member to send it to (default: the first that answers)")
    r.add_argument("--force", action="store_true",
                   help="fence a member that is still running (cut off, misbehaving) and do not wait for members "
                        "this node holds dead; see docs/operations.md before using it")
    r.add_argument("--timeout", type=float, default=10.0, help="seconds to keep trying (default 10)")
    r.add_argument("--json", action="store_true", help="print the resulting configuration as JSON")
    r.add_argument("--write", action="store_true",
                   help="once the removal is acknowledged, drop the members' [[nodes]] entries from --config "
                        "(every other line kept as it is; the file replaced atomically); checked before anything "
                        "is sent, so an unwritable file changes nothing")
    r.set_defaults(func=run_remove)
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


# ---- membership at run time ------------------------------------------------------------------------
def _operator(path: str) -> Any:
    cfg = load(path)
    if cfg.is_client_file:
        raise UsageError(f"{path} is a client file (account {cfg.account}); membership changes need cluster.toml "
                         f"(the operator's credential)")
    cfg.client_credential()  # one clear line if the operator's credential is missing
    return cfg


async def _member_request(cfg: Any, msg: Any, targets: list[str], timeout: float) -> tuple[str, Any]:
    """Send a membership request to each target in turn until one acknowledges it; refusals that
    may clear by themselves ("not ready": a removal waiting for reports, a node catching up) and
    unreachable nodes are retried until ``timeout``. Returns ``(node, reply)``; ``Rejected`` otherwise."""
    from ..core.node import E_INVALID, E_NOT_READY, E_TIMEOUT, OK
    from ..node.client import Client, Unreachable, new_req
    from .orders import EXIT_CODES

    deadline = time.monotonic() + timeout
    last = "no member answered"
    stamped = False  # a node stamped it but it was not replicated within the wait
    async with Client(cfg) as c:
        i = 0
        while True:
            node = targets[i % len(targets)]
            left = deadline - time.monotonic()
            if left <= 0:
                raise Rejected(f"gave up after {timeout:g} s: {last}", 5)
            try:
                rep = await c.request(node, msg, msg.req, min(3.0, left))
            except Unreachable:
                last = f"{node} did not answer"
                i += 1
                continue
            if rep.code == OK or (stamped and rep.code == E_INVALID and "already" in rep.message):
                return node, rep
            if rep.code == E_TIMEOUT and rep.order_id:  # stamped, not yet replicated: that reply is kept for
                stamped = True                          # this request id, so ask again under a new one
                msg = msg._replace(req=new_req())
            if rep.code in (E_NOT_READY, E_TIMEOUT):  # may clear: wait a little, ask again
                last = f"{node}: {rep.message}"
                await trio.sleep(min(0.3, max(0.0, deadline - time.monotonic())))
                if rep.code == E_NOT_READY and "catching up" in rep.message:
                    i += 1
                continue
            raise Rejected(f"{node}: {rep.message}", EXIT_CODES.get(rep.code, 2))


async def _config_of(cfg: Any, node: str) -> dict[str, Any]:
    from ..core.wire import ClientQuery
    from ..node.client import Client, new_req

    async with Client(cfg) as c:
        req = new_req()
        rep = await c.request(node, ClientQuery(req, "status", "", 0), req, 2.0)
        return dict(rep.payload.get("config") or {})


def _targets(cfg: Any, node: str | None, avoid: str = "") -> list[str]:
    if node is not None:
        cfg.node(node)
        if node == avoid:
            raise UsageError(f"send the removal of {avoid} to another member (--node)")
        return [node]
    out = [n.id for n in cfg.nodes if n.id != avoid]
    if not out:
        raise UsageError(f"{cfg.path} names no other member to send this to")
    return out


def run_add(args: argparse.Namespace) -> int:
    from ..config import parse_addr
    from ..core.config_epoch import MEMBER, add_target
    from ..core.wire import ClientSubmit
    from ..node.client import new_req

    cfg = _operator(args.config)
    try:
        check_id(args.id, "--id")
        host, port = parse_addr(args.addr, "--addr")
    except ConfigError as e:
        raise UsageError(str(e)) from None
    if any(n.id == args.id for n in cfg.nodes):
        raise UsageError(f"{args.config} already lists a node {args.id!r}; pick a new id")
    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    addr = f"{host}:{port}"
    msg = ClientSubmit(new_req(), MEMBER, "", add_target(args.id, addr), 0, 0, 0, 0, 1, int(args.timeout * 1000))
    via, _rep = trio.run(_member_request, cfg, msg, _targets(cfg, args.node), args.timeout)
    block = ["", "[[nodes]]", f"id = {json.dumps(args.id)}", f"addr = {json.dumps(addr)}"]
    if args.data_dir:
        block.append(f"data_dir = {json.dumps(args.data_dir)}")
    block += ["join = true  # added at run time: takes orders once it holds its own add op", ""]
    text = Path(args.config).read_text()
    if args.write:
        write_private(Path(args.config), text.rstrip("\n") + "\n" + "\n".join(block))
        print(f"added {args.id} at {addr} (through {via}); appended it to {args.config}. Start it now: "
              f"gossipbook node -c {args.config} --id {args.id}", file=sys.stderr)
    else:
        sys.stdout.write(text.rstrip("\n") + "\n" + "\n".join(block))
        print(f"added {args.id} at {addr} (through {via}); the config above is the new node's "
              f"(it holds secrets: keep it mode 0600). Start it now: gossipbook node -c FILE --id {args.id}",
              file=sys.stderr)
    return 0


def run_remove(args: argparse.Namespace) -> int:
    from ..core.config_epoch import MEMBER
    from ..core.wire import ClientSubmit
    from ..node.client import new_req

    cfg = _operator(args.config)
    try:
        for m in args.member:
            check_id(m, "member")
    except ConfigError as e:
        raise UsageError(str(e)) from None
    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    names = sorted(set(args.member))
    target = ",".join(names)
    if len(target) > 96:
        raise UsageError("too many members in one command (their ids take more than 96 characters)")
    msg = ClientSubmit(new_req(), MEMBER, "", target, 1, 0, 0, 1 if args.force else 0, 1, int(args.timeout * 1000))
    targets = [n for n in _targets(cfg, args.node) if n not in names] if args.node is None else _targets(cfg, args.node)
    if args.node in names:
        raise UsageError(f"send the removal of {args.node} to another member (--node)")
    if not targets:
        raise UsageError(f"{cfg.path} names no other member to send this to")
    path = Path(args.config)
    if args.write:  # before anything is sent: a file we cannot edit is one line and changes nothing
        check_writable(path)
        drop_nodes(path.read_text(encoding="utf-8"), names, str(path))
    via, _rep = trio.run(_member_request, cfg, msg, targets, args.timeout)
    conf = trio.run(_config_of, cfg, via)
    dropped = _write_removal(path, names) if args.write else None
    if args.json:
        print(json.dumps({"removed": names, "via": via, "config": conf,
                          **({"written": dropped} if dropped is not None else {})}, indent=2))
        return 0
    roles = ", ".join(f"{m} {r}" for m, r in sorted(conf.get("roles", {}).items()))
    if "index" in conf:  # strong mode: a configuration entry in the sequencer's log, no fences
        print(f"removed {', '.join(names)} through {via}: configuration epoch {conf.get('epoch', '?')} (log index "
              f"{conf['index']}): {roles}. Stop {', '.join(names)} now if it still runs (a removed follower "
              f"is not told; a removed leader has handed over)")
        return 0
    fences = ", ".join(f"{m}'s above seq {conf.get('fences', {}).get(m, '?')}" for m in names)
    print(f"removed {', '.join(names)} through {via}: ops refused on every replica: {fences}; "
          f"configuration epoch {conf.get('epoch', '?')}: {roles}")
    if dropped is not None:
        rest = [m for m in names if m not in dropped]
        print(f"{args.config}: dropped the [[nodes]] entr{'y' if len(dropped) == 1 else 'ies'} of "
              f"{', '.join(dropped) or 'none'}" + (f" ({', '.join(rest)} not listed there)" if rest else ""),
              file=sys.stderr)
    return 0


def _write_removal(path: Path, names: list[str]) -> list[str]:
    """Drop the removed members' entries from the file, as it is *now* (someone may have edited it
    while the removal waited). The removal is committed whatever happens here, so a failure says so."""
    try:
        text, dropped = drop_nodes(path.read_text(encoding="utf-8"), names, str(path))
        if dropped:
            write_atomic(path, text)
    except (OSError, ConfigError) as e:
        raise Rejected(f"removed {', '.join(names)} from the cluster, but {path} was not updated "
                       f"({getattr(e, 'strerror', None) or e}); remove the [[nodes]] entries by hand", 1) from None
    return dropped
