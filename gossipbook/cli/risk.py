"""``gossipbook risk``: pre-trade risk limits (set, show) and the kill switch (disable, enable).

Limits and the kill switch are replicated ops that count only when the operator account signs
them (cluster.toml acts as the operator); ``show`` lets any account see its own limits and the
operator every account's. Quantities are in the instrument's units (``--symbol``, or the one
instrument the cluster has, or instruments that share lot and tick sizes), as ``submit`` takes
them; notional is price x quantity.
"""

from __future__ import annotations

import argparse
from decimal import Decimal, InvalidOperation
from typing import Any

import trio
from rich.console import Console
from rich.table import Table

from ..config import OPERATOR, ClusterConfig
from ..core.errors import UsageError
from ..core.instrument import Instrument
from ..core.risk import (
    DIM_NAMES,
    DIM_NOTIONAL,
    DIM_OPEN_BUY,
    DIM_OPEN_SELL,
    DIM_POSITION,
    E_RISK,
    HALT,
    LIMIT,
    MAX_LIMIT,
)
from ..core.wire import LEVELS, REPLY_CODES, ClientQuery, ClientSubmit
from .common import add_config, config, print_json

#: reply code -> exit code: as ``submit``'s, and 14 for a risk refusal
EXIT_CODES = {0: 0, 1: 2, 2: 6, 3: 7, 4: 4, 5: 5, 6: 2, 7: 8, 8: 2, 9: 9, 10: 10, 11: 11, 13: 13, E_RISK: 14}
_FLAGS = (("max_open_buy", DIM_OPEN_BUY), ("max_open_sell", DIM_OPEN_SELL), ("max_position", DIM_POSITION),
          ("max_notional", DIM_NOTIONAL))


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


def _units(cfg: ClusterConfig, symbol: str | None) -> tuple[str, Instrument]:
    """The scope ("" for every instrument) and the instrument whose units quantities are in."""
    if symbol:
        return symbol, cfg.venue().get(symbol)
    insts = cfg.instruments
    if len({(i.lot_size, i.tick_size) for i in insts}) > 1:
        raise UsageError("the instruments differ in lot or tick size: give --symbol (a limit without one "
                         "adds up every instrument's lots)")
    return "", insts[0]


def _amount(text: str, unit: Decimal, what: str) -> int:
    try:
        d = Decimal(text)
    except InvalidOperation:
        raise UsageError(f"{what} {text!r} is not a number") from None
    if not d.is_finite() or d < 0:
        raise UsageError(f"{what} must be a number of 0 or more, not {text!r}")
    n = d / unit
    if n != n.to_integral_value():
        raise UsageError(f"{what} {text} is not a multiple of {unit.normalize():f}")
    if n > MAX_LIMIT:
        raise UsageError(f"{what} {text} is too large")
    return int(n)


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
    scope, inst = _units(cfg, args.symbol)
    from ..node.client import new_req

    wait, tmo = LEVELS.index(args.wait), int(args.timeout * 1000)
    msgs, shown = [], []
    for flag, dim in _FLAGS:
        text = getattr(args, flag)
        if text is None:
            continue
        if dim == DIM_POSITION and not scope:
            raise UsageError("--max-position needs --symbol (a position is per instrument)")
        unit = inst.tick_size * inst.lot_size if dim == DIM_NOTIONAL else inst.lot_size
        value = _amount(text, unit, f"--{flag.replace('_', '-')}")
        msgs.append(ClientSubmit(new_req(), LIMIT, scope, args.account, 0, 0, value, dim, wait, tmo))
        shown.append((DIM_NAMES[dim], text))
    for name in args.clear:
        dim = DIM_NAMES.index(name)
        if dim == DIM_POSITION and not scope:
            raise UsageError("--clear position needs --symbol")
        msgs.append(ClientSubmit(new_req(), LIMIT, scope, args.account, 1, 0, 0, dim, wait, tmo))
        shown.append((name, "none"))
    if not msgs:
        raise UsageError("nothing to set: give --max-open-buy, --max-open-sell, --max-position, --max-notional "
                         "or --clear")
    reps = trio.run(_send, cfg, node, msgs, args.timeout + 1.0)
    return _report(args, node, reps, [f"{args.account} {k} {v}" + (f" in {scope}" if scope else "")
                                      for k, v in shown])


def run_halt(args: argparse.Namespace) -> int:
    cfg = config(args)
    _operator(cfg)
    node = _node(cfg, args)
    from ..node.client import new_req

    msg = ClientSubmit(new_req(), HALT, "", args.account, 0 if args.disable else 1, 0, 0, 0,
                       LEVELS.index(args.wait), int(args.timeout * 1000))
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


def _fmt(cfg: ClusterConfig, symbol: str, kind: str, v: int) -> str:
    scope_inst = cfg.venue().instruments.get(symbol) if symbol else cfg.instruments[0]
    if scope_inst is None:
        return str(v)
    if kind == "notional":
        return f"{(v * scope_inst.tick_size * scope_inst.lot_size).normalize():f}"
    return f"{(v * scope_inst.lot_size).normalize():f}"


def run_show(args: argparse.Namespace) -> int:
    cfg = config(args)
    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    nodes = [_node(cfg, args)] if args.node else list(cfg.ids)
    got = trio.run(_gather, cfg, nodes, args.account, args.timeout)
    if all(v is None for v in got.values()):
        raise Rejected(f"no node answered within {args.timeout:g} s", 3)
    accounts: dict[str, Any] = {}
    for nid in nodes:
        p = got.get(nid)
        if not p or "error" in p:
            continue
        for acct, a in p["accounts"].items():
            if args.account and acct != args.account:
                continue
            entry = accounts.setdefault(acct, {"disabled": {}, "limits": {}})
            entry["disabled"][nid] = a["disabled"]
            for row in a["limits"]:
                key = (row["symbol"], row["limit_kind"])
                lim = entry["limits"].setdefault(key, {"symbol": row["symbol"] or "*", "kind": row["limit_kind"],
                                                      "limit": {}, "rights": {}, "used": {}, "headroom": {}})
                kind = row["limit_kind"]

                def f(v: int, sym: str = row["symbol"], kind: str = kind) -> str:
                    return _fmt(cfg, sym, kind, v)
                lim["limit"][nid] = f(row["limit"])
                if "rights" in row:  # eventual: the rights each node holds (this node's view) and its own use
                    lim["rights"][nid] = {m: f(v) for m, v in row["rights"].items()}
                    lim["used"][nid] = f(row["used_here"])
                    lim["headroom"][nid] = f(row["headroom_here"])
                else:  # strong: the exact use at the folded index
                    lim["used"][nid] = f(row["used"])
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
