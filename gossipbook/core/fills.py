"""Each account's own fills, as the fold reports them: what the ``trades`` query answers.

Theory of operation: the fold reports trades as events (``TradeExecuted``, ``TradeRevised``); this
keeps, per account that took part, the newest ``per_account`` trades with what happened to them
since (revised, undone), so a participant can see its own fills and their revisions, and nothing of
anyone else's: a row names the account's own order, side and role, never the counterparty.

Rules that hold: pure, bounded (``per_account`` rows per account, the oldest dropped first), and a
trade that was undone stays visible as undone until it ages out. Finality is asked of the caller at
query time (eventual mode: the replica's watermark; strong mode: every committed trade is final).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from .book import SIDE_NAMES, Trade
from .ops import TradeExecuted, TradeRevised


class AccountFills:
    """Per account, its newest trades: ``trade_id -> [trade, revisions, undone]``."""

    def __init__(self, per_account: int = 1000) -> None:
        self.per_account = per_account
        self._by_account: dict[str, OrderedDict[str, list[Any]]] = {}

    def record(self, events: Iterable[Any]) -> None:
        for ev in events:
            t = type(ev)
            if t is TradeExecuted:
                self._put(ev.trade, revised=False)
            elif t is TradeRevised:
                if ev.new is None:
                    for acct in self._accounts(ev.old):
                        row = self._by_account.get(acct, {}).get(ev.old.trade_id)
                        if row is not None:
                            row[1] += 1
                            row[2] = True
                else:
                    self._put(ev.new, revised=True)

    def _accounts(self, t: Trade) -> set[str]:
        return {a for a in (t.maker_account, t.taker_account) if a}

    def _put(self, trade: Trade, revised: bool) -> None:
        for acct in self._accounts(trade):
            rows = self._by_account.setdefault(acct, OrderedDict())
            row = rows.get(trade.trade_id)
            if row is None:
                rows[trade.trade_id] = [trade, 1 if revised else 0, False]
                if len(rows) > self.per_account:
                    rows.popitem(last=False)
            else:  # revised, or executed again after a replay undid it
                row[0], row[2] = trade, False
                row[1] += 1 if revised else 0

    def rows(self, account: str, is_final: Callable[[str], bool], limit: int) -> list[dict[str, Any]]:
        """``account``'s newest ``limit`` fills, oldest first."""
        rows = list(self._by_account.get(account, {}).values())[-limit:]
        out = []
        for trade, revisions, undone in rows:
            taker = trade.taker_account == account
            side = trade.taker_side if taker else 1 - trade.taker_side
            out.append({"trade_id": trade.trade_id, "symbol": trade.symbol,
                        "order_id": trade.taker if taker else trade.maker, "side": SIDE_NAMES[side],
                        "price": trade.price, "qty": trade.qty, "role": "taker" if taker else "maker",
                        "final": (not undone) and is_final(trade.trade_id), "revisions": revisions,
                        "undone": undone})
        return out

    def payload(self, node: str, account: str, is_final: Callable[[str], bool], limit: int) -> dict[str, Any]:
        """The "trades" query's answer (prices in ticks, quantities in lots)."""
        total = len(self._by_account.get(account, ()))
        return {"node": node, "account": account, "truncated": total > limit,
                "trades": self.rows(account, is_final, limit)}
