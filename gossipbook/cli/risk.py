"""``gossipbook risk``: pre-trade risk limits (set, show) and the kill switch (disable, enable).

Limits and the kill switch are replicated ops that count only when the operator account signs
them (cluster.toml acts as the operator); ``show`` lets any account see its own limits and the
operator every account's. Quantities are in the instrument's units (``--symbol``, or the one
instrument the cluster has, or instruments that share lot and tick sizes), as ``submit`` takes
them; notional is price x quantity.
"""

from __future__ import annotations

import argparse
from typing import Any

import trio
from rich.console import Console
from rich.table import Table

from ..api.risk import halt_request, limit_requests, merge_risk
from ..config import OPERATOR, ClusterConfig
from ..core.errors import UsageError
from ..core.risk import DIM_NAMES, E_RISK
from ..core.wire import LEVELS, REPLY_CODES, ClientQuery
from .common import add_config, config, print_json

#: reply code -> exit code: as ``submit``'s, and 14 for a risk refusal
EXIT_CODES = {0: 0, 1: 2, 2: 6, 3: 7, 4: 4, 5: 5, 6: 2, 7: 8, 8: 2, 9: 9, 10: 10, 11: 11, 13: 13, E_RISK: 14}


class Rejected(UsageError):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def add_parser(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("risk", help="pre-trade risk limits and the kill switch (operator)",
                       description="Per-account risk limits that hold cluster-wide, partitions included "
                                   "(docs/consistency.md, 'Risk limits'), and the kill switch.")
    rs = r.add_subparsers(dest="risk_command", metavar="SUBCOMMAND", title="subcommands")
    s = rs.add_parser("set", help="set (or --clear) an account's limits",
                      description="Set limits on ACCOUNT's exposure, in --symbol or across every instrument. "
                                  "Quantities in the instrument's units; notional in price x quantity. "
                                  "Needs the operator account (cluster.toml).")
    s.add_argument("account", metavar="ACCOUNT")
    s.add_argument("--max-open-buy", metavar="Q", help="most open (resting) buy quantity")
    s.add_argument("--max-open-sell", metavar="Q", help="most open (resting) sell quantity")
    s.add_argument("--max-position", metavar="Q",
                   help="most net position either way, working orders included (needs --symbol)")
    s.add_argument("--max-notional", metavar="N", help="most notional: working orders plus position, at order prices")
    s.add_argument("--clear", action="append", default=[], choices=list(DIM_NAMES), metavar="KIND",
                   help=f"remove a limit ({', '.join(DIM_NAMES)}); may be repeated")
    _common(s, wait=True)
    s.set_defaults(func=run_set)
    sh = rs.add_parser("show", help="limits, rights per node and use (yours, or every account's as operator)",
                       description="Show risk limits: each limit, the rights each node holds of it and what "
                                   "each node's orders use. Asks every node unless --node is given.")
    sh.add_argument("account", nargs="?", default="", metavar="ACCOUNT")
    _common(sh, wait=False)
    sh.set_defaults(func=run_show)
    for name, verb in (("disable", "cancel every resting order of ACCOUNT cluster-wide and refuse its new "
                                   "orders until 'risk enable'"),
                       ("enable", "let a disabled ACCOUNT trade again")):
        k = rs.add_parser(name, help=verb.split(" and ")[0] if name == "disable" else verb, description=f"The kill "
                          f"switch: {verb}. Needs the operator account (cluster.toml).")
        k.add_argument("account", metavar="ACCOUNT")
        _common(k, wait=True)
        k.set_defaults(func=run_halt, disable=name == "disable")
    r.set_defaults(func=lambda _a: r.print_help() or 0)


def _common(p: argparse.ArgumentParser, wait: bool) -> None:
    add_config(p)
    p.add_argument("--node", "-n", default=None, help="node to ask (default: the first in the config; "
                                                      "show: every node)")
    p.add_argument("--symbol", default=None, help="instrument (default: every instrument)")
    if wait:
        p.add_argument("--wait", choices=LEVELS, default="accepted", help="ack level to wait for (default accepted)")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the node (default 3)")
    p.add_argument("--json", action="store_true", help="print JSON")


def _node(cfg: ClusterConfig, args: argparse.Namespace) -> str:
    node = args.node or cfg.nodes[0].id
    cfg.node(node)
    return node


async def _send(cfg: ClusterConfig, node: str, msgs: list[Any], timeout: float) -> list[Any]:
    from ..node.client import Client

    out = []
    async with Client(cfg) as c:
        for m in msgs:
            rep = await c.request(node, m, m.req, timeout)
            out.append(rep)
            if rep.code != 0:
                break
    return out


def _operator(cfg: ClusterConfig) -> None:
    if cfg.account != OPERATOR:
        raise Rejected(f"risk: only the {OPERATOR} account sets limits and uses the kill switch; "
                       f"{cfg.path} acts for {cfg.account} (use cluster.toml)", 10)


def run_set(args: argparse.Namespace) -> int:
    cfg = config(args)
    _operator(cfg)
    node = _node(cfg, args)
    from ..node.client import new_req

    values = {f: getattr(args, f) for f in ("max_open_buy", "max_open_sell", "max_position", "max_notional")}
    reqs = limit_requests(cfg.venue(), args.account, args.symbol, values, args.clear, new_req=new_req,
                          wait=LEVELS.index(args.wait), timeout_ms=int(args.timeout * 1000), flag="--{}")
    if not reqs:
        raise UsageError("nothing to set: give --max-open-buy, --max-open-sell, --max-position, --max-notional "
                         "or --clear")
    reps = trio.run(_send, cfg, node, [m for m, _ in reqs], args.timeout + 1.0)
    return _report(args, node, reps, [t for _, t in reqs])


def run_halt(args: argparse.Namespace) -> int:
    cfg = config(args)
    _operator(cfg)
    node = _node(cfg, args)
    from ..node.client import new_req

    msg = halt_request(args.account, args.disable, req=new_req(), wait=LEVELS.index(args.wait),
                       timeout_ms=int(args.timeout * 1000))
    reps = trio.run(_send, cfg, node, [msg], args.timeout + 1.0)
    what = "disabled (its resting orders are cancelled as the op folds on each node)" if args.disable else "enabled"
    return _report(args, node, reps, [f"{args.account} {what}"])


def _report(args: argparse.Namespace, node: str, reps: list[Any], texts: list[str]) -> int:
    out = [{"ok": r.code == 0, "what": t, "code": REPLY_CODES.get(r.code, str(r.code)), "message": r.message,
            "level": LEVELS[r.level], "op_node": node} for r, t in zip(reps, texts, strict=False)]
    bad = next((r for r in reps if r.code != 0), None)
    if args.json:
        print_json({"node": node, "results": out})
        return EXIT_CODES.get(bad.code, 1) if bad else 0
    con = Console()
    for o in out:
        if o["ok"]:
            con.print(f"{o['what']}: {o['level']} at {node}")
    if bad is not None:
        raise Rejected(bad.message, EXIT_CODES.get(bad.code, 1))
    return 0


# ---- show ----------------------------------------------------------------------------------------------
async def _gather(cfg: ClusterConfig, nodes: list[str], account: str, timeout: float) -> dict[str, Any]:
    from ..node.client import Client, Unreachable

    got: dict[str, Any] = {}
    async with Client(cfg) as c:
        async def one(nid: str) -> None:
            req = c.new_req()
            try:
                rep = await c.request(nid, ClientQuery(req, "risk", account[:32], 0), req, timeout)
                got[nid] = rep.payload if rep.code == 0 else {"error": rep.message}
            except Unreachable:
                got[nid] = None
        async with trio.open_nursery() as n:
            for nid in nodes:
                n.start_soon(one, nid)
    return got


def run_show(args: argparse.Namespace) -> int:
    cfg = config(args)
    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    nodes = [_node(cfg, args)] if args.node else list(cfg.ids)
    got = trio.run(_gather, cfg, nodes, args.account, args.timeout)
    if all(v is None for v in got.values()):
        raise Rejected(f"no node answered within {args.timeout:g} s", 3)
    merged = merge_risk(cfg.venue(), nodes, got, args.account)

    def text(d: Any) -> Any:
        return {k: text(v) for k, v in d.items()} if isinstance(d, dict) else f"{d:f}"
    accounts = {a: {"disabled": e["disabled_at"], "limits": {
        i: {**lim, "symbol": lim["symbol"] or "*", **{k: text(lim[k]) for k in ("limit", "rights", "used", "headroom")}}
        for i, lim in enumerate(e["limits"])}} for a, e in merged.items()}
    out = {"nodes": {nid: {"reachable": got.get(nid) is not None,
                           **({"mode": got[nid].get("mode"), "counters": got[nid].get("counters", {})}
                              if got.get(nid) and "error" not in got[nid] else {}),
                           **({"error": got[nid]["error"]} if got.get(nid) and "error" in got[nid] else {})}
                     for nid in nodes},
           "accounts": {a: {"disabled": any(e["disabled"].values()), "disabled_at": e["disabled"],
                            "limits": list(e["limits"].values())} for a, e in sorted(accounts.items())}}
    if args.json:
        print_json(out)
        return 0
    con = Console()
    if not accounts:
        con.print("no risk limits" + (f" for {args.account}" if args.account else ""))
        return 0
    t = Table(title="risk limits (rights: as the first node asked sees them; used / headroom: each node's own)")
    for col in ("account", "symbol", "limit", "value", "rights per node", "used at node", "headroom at node"):
        t.add_column(col)
    for a, e in sorted(accounts.items()):
        first = True
        for lim in e["limits"].values():
            vals = set(lim["limit"].values())
            first_rights = next(iter(lim["rights"].values()), {})
            t.add_row(a + (" [red](disabled)[/]" if first and any(e["disabled"].values()) else "") if first else "",
                      lim["symbol"], lim["kind"], " / ".join(sorted(vals)),
                      " ".join(f"{m}:{v}" for m, v in first_rights.items()),
                      " ".join(f"{m}:{v}" for m, v in lim["used"].items()),
                      " ".join(f"{m}:{v}" for m, v in lim["headroom"].items()))
            first = False
        if not e["limits"]:
            t.add_row(a + (" [red](disabled)[/]" if any(e["disabled"].values()) else ""), "", "", "", "", "", "")
    con.print(t)
    return 0
