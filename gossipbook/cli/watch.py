"""``gossipbook watch``: follow your account's fills and/or one book as a node pushes them.

A thin shell over the library's pushed feeds (``Client.watch_my_trades``, ``watch_order_book``):
one line per fill or book update, or with ``--json`` one JSON object per line. Ctrl-C ends it
(exit 0, after telling the node); a node that does not answer is one error line and exit 3.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import trio

from ..api.client import Client
from ..api.errors import RequestFailed, Unreachable
from ..api.types import Fill, OrderBook
from ..core.errors import UsageError
from .common import add_config, config
from .orders import EXIT_CODES


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("watch", help="follow your fills and/or a book as the node pushes them",
                       description="Subscribe at one node and print what it pushes: with --trades (the "
                                   "default) your account's fills, each when it is made, again when a replay "
                                   "after a partition heals revises or undoes it, and once more when it is "
                                   "final; with --book SYMBOL that book's top levels after every change. The "
                                   "subscription is a lease the command renews; Ctrl-C ends it.")
    add_config(p)
    p.add_argument("--trades", action="store_true", help="your fills (the default when --book is not given)")
    p.add_argument("--book", metavar="SYMBOL", default=None, help="one instrument's top levels")
    p.add_argument("--depth", type=int, default=10, help="book levels per side, 1 to 50 (default 10)")
    p.add_argument("--node", "-n", default=None, help="node to subscribe at (default: the first in the config)")
    p.add_argument("--history", action="store_true", help="first print the fills the node already holds")
    p.add_argument("--timeout", type=float, default=3.0,
                   help="seconds to wait for the node to accept the subscription (default 3)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=run)


def fill_json(f: Fill, node: str) -> dict[str, Any]:
    return {"type": "fill", "node": node, "trade_id": f.trade_id, "symbol": f.symbol, "order_id": f.order_id,
            "side": str(f.side), "price": str(f.price), "amount": str(f.amount), "role": f.role,
            "status": f.status, "final": f.final, "revisions": f.revisions, "undone": f.undone}


def book_json(b: OrderBook) -> dict[str, Any]:
    return {"type": "book", "node": b.node, "symbol": b.symbol,
            "bids": [[str(lv.price), str(lv.amount), lv.orders] for lv in b.bids],
            "asks": [[str(lv.price), str(lv.amount), lv.orders] for lv in b.asks]}


def fill_line(f: Fill) -> str:
    more = f", revised {f.revisions}x" if f.revisions and not f.undone else ""
    return f"fill {f.trade_id} {f.symbol} {f.side} {f.amount} @ {f.price} ({f.role}): {f.status}{more}"


def book_line(b: OrderBook) -> str:
    def levels(ls: Any) -> str:
        return " ".join(f"{lv.amount}@{lv.price}" for lv in ls[:3]) + (f" +{len(ls) - 3}" if len(ls) > 3 else "") \
            if ls else "-"
    return f"book {b.symbol} bids {levels(b.bids)} | asks {levels(b.asks)}"


def _emit(obj: dict[str, Any] | str) -> None:
    sys.stdout.write((json.dumps(obj) if isinstance(obj, dict) else obj) + "\n")
    sys.stdout.flush()  # a pipe reader sees each update as it comes


async def _watch(args: argparse.Namespace) -> int:
    cfg = config(args)
    failure: list[BaseException] = []
    async with Client(cfg, node=args.node, timeout=args.timeout) as c:
        node = c.node

        async def trades() -> None:
            async with c.watch_my_trades(history=args.history) as feed:
                async for f in feed:
                    _emit(fill_json(f, node) if args.json else fill_line(f))

        async def book() -> None:
            async with c.watch_order_book(args.book, depth=args.depth) as feed:
                async for b in feed:
                    _emit(book_json(b) if args.json else book_line(b))

        async def guarded(fn: Any) -> None:
            try:
                await fn()
            except (RequestFailed, UsageError) as e:  # one line, not a traceback
                failure.append(e)
                nursery.cancel_scope.cancel()

        if args.book is not None:
            c.instrument(args.book)  # an unknown symbol: one error line before anything is sent
        async with trio.open_nursery() as nursery:
            if args.trades or args.book is None:
                nursery.start_soon(guarded, trades)
            if args.book is not None:
                nursery.start_soon(guarded, book)
    if failure:
        e = failure[0]
        if isinstance(e, UsageError):
            raise e
        print(f"gossipbook: error: {e}", file=sys.stderr)
        return 3 if isinstance(e, Unreachable) else EXIT_CODES.get(getattr(e, "code", -1), 1)
    return 0


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.depth <= 50:
        raise UsageError("--depth must be 1 to 50")
    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    try:
        return trio.run(_watch, args)
    except KeyboardInterrupt:  # Ctrl-C is how a watch ends
        return 0
    except BaseExceptionGroup as eg:
        if eg.subgroup(KeyboardInterrupt) is not None and eg.subgroup(lambda e: not isinstance(
                e, KeyboardInterrupt | BaseExceptionGroup)) is None:
            return 0
        raise
