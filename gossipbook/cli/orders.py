"""``submit``, ``cancel``, ``amend``, ``book``, ``orders`` and ``trades``: one client request to one
node, acting for the account of the client file given (or ``operator`` with cluster.toml)."""

from __future__ import annotations

import argparse
import time
from typing import Any

import trio
from rich.console import Console
from rich.table import Table

from ..core.book import SIDE_NAMES, SIDES, TIFS
from ..core.errors import UsageError
from ..core.instrument import Instrument
from ..core.ops import AMEND, CANCEL, CANCEL_ALL, NEW
from ..core.wire import LEVELS, REPLY_CODES, ClientQuery, ClientSubmit
from .common import add_config, config, print_json

#: reply code -> process exit code (0 ok; 2 bad input; 3 unreachable; 4 no quorum; 5 timeout;
#: 6 unknown order; 7 clock out of sync; 8 storage unavailable; 9 node not ready yet;
#: 10 the order belongs to another account; 11 rate limited: too many requests, retry later;
#: 13 the node's clock error bound is unknown or over its limit: nothing was stamped, retry later)
EXIT_CODES = {0: 0, 1: 2, 2: 6, 3: 7, 4: 4, 5: 5, 6: 2, 7: 8, 8: 2, 9: 9, 10: 10, 11: 11, 13: 13}
EXIT_CODES[14] = 14  # a risk limit refused the order (core/risk.py: "risk: ... headroom ...")


class Rejected(UsageError):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _common(p: argparse.ArgumentParser, wait: bool = True) -> None:
    add_config(p)
    p.add_argument("--node", "-n", default=None, help="node to send to (default: the first in the config)")
    p.add_argument("--symbol", default=None, help="instrument (default: the first in the config)")
    if wait:
        p.add_argument("--wait", choices=LEVELS, default="accepted",
                       help="ack level to wait for: accepted (durable on that node), replicated (a majority "
                            "holds it) or final (below the stable watermark); default accepted")
        p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the ack (default 5)")
    p.add_argument("--json", action="store_true", help="print JSON")


def add_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("submit", help="submit an order: buy 10 @ 100.25",
                       description="Submit a new order to one node, e.g.: gossipbook submit buy 10 @ 100.25 "
                                   "--tif ioc. Market orders: gossipbook submit sell 5 --tif market.")
    s.add_argument("order", nargs="+", metavar="SIDE QTY [@ PRICE]", help="buy|sell, quantity, '@', price")
    s.add_argument("--tif", choices=list(TIFS), default="gtc", help="time in force (default gtc)")
    _common(s)
    s.set_defaults(func=run_submit)
    c = sub.add_parser("cancel", help="cancel an order by id, or all of yours (--all)",
                       description="Cancel one of your resting orders by its id, or with --all every order of "
                                   "your account (in --symbol only, if given) stamped before the cancel, on every "
                                   "node: the kill switch.")
    c.add_argument("order_id", nargs="?", default=None, help="order id as printed by submit (NODE:SEQ)")
    c.add_argument("--all", action="store_true", help="cancel every order of this account (mass cancel)")
    _common(c)
    c.set_defaults(func=run_cancel)
    a = sub.add_parser("amend", help="amend an order: ID QTY [@ PRICE]",
                       description="Change a resting order's remaining quantity and/or price. A smaller "
                                   "quantity at the same price keeps time priority; anything else loses it.")
    a.add_argument("order_id", help="order id (NODE:SEQ)")
    a.add_argument("change", nargs="+", metavar="QTY [@ PRICE]", help="new remaining quantity, '@', new price")
    _common(a)
    a.set_defaults(func=run_amend)
    b = sub.add_parser("book", help="show a node's order book", description="Show the top levels of a node's book.")
    b.add_argument("--depth", type=int, default=10, help="levels per side (default 10)")
    _common(b, wait=False)
    b.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the node (default 3)")
    b.set_defaults(func=run_book)
    o = sub.add_parser("orders", help="your open orders at one node",
                       description="List the open orders of your account (the client file's) as one node holds "
                                   "them. Nobody sees another account's orders.")
    _common(o, wait=False)
    o.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the node (default 3)")
    o.set_defaults(func=run_orders)
    t = sub.add_parser("trades", help="your fills at one node",
                       description="List your account's fills as one node knows them (since it started): order, "
                                   "side, price, quantity, maker or taker, final or provisional, and revisions. "
                                   "The counterparty is never shown.")
    _common(t, wait=False)
    t.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the node (default 3)")
    t.set_defaults(func=run_trades)


def _pick(cfg: Any, args: argparse.Namespace) -> tuple[str, Instrument]:
    node = args.node or cfg.nodes[0].id
    cfg.node(node)
    venue = cfg.venue()
    inst = venue.get(args.symbol) if args.symbol else cfg.instruments[0]
    return node, inst


def _parse_qty_price(words: list[str], inst: Instrument, need_price: bool) -> tuple[int, int]:
    if len(words) not in (1, 3) or (len(words) == 3 and words[1] != "@"):
        raise UsageError("expected QTY or QTY @ PRICE, e.g. 10 @ 100.25")
    qty = inst.qty_to_lots(words[0])
    if len(words) == 1:
        if need_price:
            raise UsageError("a price is needed: QTY @ PRICE (or --tif market)")
        return qty, 0
    return qty, inst.price_to_ticks(words[2])


async def _send(cfg: Any, node: str, msg: Any, timeout: float) -> tuple[Any, float]:
    from ..node.client import Client

    async with Client(cfg) as c:
        t0 = time.perf_counter()
        rep = await c.request(node, msg, msg.req, timeout)
        return rep, (time.perf_counter() - t0) * 1e3


def _submit(args: argparse.Namespace, cfg: Any, node: str, inst: Instrument, msg: ClientSubmit) -> int:
    rep, lat = trio.run(_send, cfg, node, msg, args.timeout + 1.0)
    trades = [{"trade_id": t[0], "price": str(inst.ticks_to_price(t[1])), "qty": str(inst.lots_to_qty(t[2])),
               "maker": t[3], "taker": t[4]} for t in rep.trades]
    out = {"ok": rep.code == 0, "node": node, "order_id": rep.order_id, "level": LEVELS[rep.level],
           "code": REPLY_CODES.get(rep.code, str(rep.code)), "message": rep.message, "trades": trades,
           "latency_ms": round(lat, 3)}
    if args.json:
        print_json(out)
    elif rep.code == 0 or rep.order_id:
        con = Console()
        verb = {NEW: "order", CANCEL: "cancel of", AMEND: "amend of", CANCEL_ALL: "mass cancel"}[msg.kind]
        con.print(f"{verb} [bold]{rep.order_id}[/] {LEVELS[rep.level]} at {node} ({lat:.2f} ms)"
                  + ("" if rep.code == 0 else f" — {rep.message}"))
        for t in trades:
            con.print(f"  trade {t['trade_id']}: {t['qty']} @ {t['price']} (maker {t['maker']}, taker {t['taker']})")
    if rep.code != 0:
        if args.json:
            return EXIT_CODES.get(rep.code, 1)
        raise Rejected(rep.message, EXIT_CODES.get(rep.code, 1))
    return 0


def run_submit(args: argparse.Namespace) -> int:
    cfg = config(args)
    node, inst = _pick(cfg, args)
    words = args.order
    if not words or words[0].lower() not in SIDES:
        raise UsageError("expected buy|sell QTY @ PRICE, e.g. buy 10 @ 100.25")
    tif = TIFS[args.tif]
    qty, price = _parse_qty_price(words[1:], inst, need_price=tif != TIFS["market"])
    from ..node.client import new_req

    msg = ClientSubmit(new_req(), NEW, inst.symbol, "", SIDES[words[0].lower()], price, qty, tif,
                       LEVELS.index(args.wait), int(args.timeout * 1000))
    return _submit(args, cfg, node, inst, msg)


def run_cancel(args: argparse.Namespace) -> int:
    cfg = config(args)
    node, inst = _pick(cfg, args)
    from ..node.client import new_req

    if args.all == (args.order_id is not None):
        raise UsageError("give an order id, or --all to cancel every order of your account")
    if args.all:
        msg = ClientSubmit(new_req(), CANCEL_ALL, args.symbol or "", "", 0, 0, 0, 0,
                           LEVELS.index(args.wait), int(args.timeout * 1000))
    else:
        msg = ClientSubmit(new_req(), CANCEL, inst.symbol, args.order_id, 0, 0, 0, 0,
                           LEVELS.index(args.wait), int(args.timeout * 1000))
    return _submit(args, cfg, node, inst, msg)


def run_amend(args: argparse.Namespace) -> int:
    cfg = config(args)
    node, inst = _pick(cfg, args)
    qty, price = _parse_qty_price(args.change, inst, need_price=True)
    from ..node.client import new_req

    msg = ClientSubmit(new_req(), AMEND, inst.symbol, args.order_id, 0, price, qty, 0,
                       LEVELS.index(args.wait), int(args.timeout * 1000))
    return _submit(args, cfg, node, inst, msg)


def run_book(args: argparse.Namespace) -> int:
    cfg = config(args)
    node, inst = _pick(cfg, args)
    if not 1 <= args.depth <= 1000:
        raise UsageError("--depth must be between 1 and 1000")
    from ..node.client import new_req

    q = ClientQuery(new_req(), "book", inst.symbol, args.depth)
    rep, _lat = trio.run(_send, cfg, node, q, args.timeout)
    if rep.code != 0:
        raise Rejected(rep.message, 2)
    p = rep.payload

    def level(lv: list[int]) -> dict[str, Any]:
        return {"price": str(inst.ticks_to_price(lv[0])), "qty": str(inst.lots_to_qty(lv[1])), "orders": lv[2]}
    out = {"node": node, "symbol": p["symbol"], "digest": p["digest"],
           "bids": [level(lv) for lv in p["bids"]], "asks": [level(lv) for lv in p["asks"]]}
    if args.json:
        print_json(out)
        return 0
    t = Table(title=f"{out['symbol']} at {node} — digest {out['digest'][:12]}")
    for col in ("bid orders", "bid qty", "bid", "ask", "ask qty", "ask orders"):
        t.add_column(col, justify="right")
    for i in range(max(len(out["bids"]), len(out["asks"]))):
        b = out["bids"][i] if i < len(out["bids"]) else None
        a = out["asks"][i] if i < len(out["asks"]) else None
        t.add_row(str(b["orders"]) if b else "", b["qty"] if b else "", f"[green]{b['price']}[/]" if b else "",
                  f"[red]{a['price']}[/]" if a else "", a["qty"] if a else "", str(a["orders"]) if a else "")
    Console().print(t)
    return 0




def _query(args: argparse.Namespace, what: str) -> tuple[Any, str, Any]:
    cfg = config(args)
    node, _inst = _pick(cfg, args)
    from ..node.client import new_req

    rep, _lat = trio.run(_send, cfg, node, ClientQuery(new_req(), what, "", 0), args.timeout)
    if rep.code != 0:
        raise Rejected(rep.message, EXIT_CODES.get(rep.code, 1))
    return cfg, node, rep.payload


def run_orders(args: argparse.Namespace) -> int:
    cfg, node, p = _query(args, "orders")
    venue = cfg.venue()
    rows = []
    for oid, sym, side, price, qty in p["orders"]:
        inst = venue.instruments.get(sym)
        rows.append({"order_id": oid, "symbol": sym, "side": SIDE_NAMES[side],
                     "price": str(inst.ticks_to_price(price)) if inst else price,
                     "qty": str(inst.lots_to_qty(qty)) if inst else qty})
    if args.json:
        print_json({"node": node, "account": p["account"], "orders": rows, "truncated": p["truncated"]})
        return 0
    t = Table(title=f"open orders of {p['account']} at {node}" + (" (first 500)" if p["truncated"] else ""))
    for col in ("order", "symbol", "side", "qty", "price"):
        t.add_column(col, justify="right" if col in ("qty", "price") else "left")
    for r in rows:
        t.add_row(r["order_id"], r["symbol"], r["side"], r["qty"], r["price"])
    Console().print(t if rows else f"no open orders of {p['account']} at {node}")
    return 0


def run_trades(args: argparse.Namespace) -> int:
    cfg, node, p = _query(args, "trades")
    venue = cfg.venue()
    rows = []
    for r in p["trades"]:
        inst = venue.instruments.get(r["symbol"])
        r = dict(r)
        if inst is not None:
            r["price"], r["qty"] = str(inst.ticks_to_price(r["price"])), str(inst.lots_to_qty(r["qty"]))
        r["state"] = "undone" if r["undone"] else "final" if r["final"] else "provisional"
        rows.append(r)
    if args.json:
        print_json({"node": node, "account": p["account"], "trades": rows, "truncated": p["truncated"]})
        return 0
    t = Table(title=f"fills of {p['account']} at {node}")
    for col in ("trade", "order", "side", "qty", "price", "role", "state", "revised"):
        t.add_column(col, justify="right" if col in ("qty", "price", "revised") else "left")
    for r in rows:
        t.add_row(r["trade_id"], r["order_id"], r["side"], r["qty"], r["price"], r["role"], r["state"],
                  str(r["revisions"]))
    Console().print(t if rows else f"no fills of {p['account']} at {node}")
    return 0
