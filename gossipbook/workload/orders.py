"""A seeded, realistic order flow: limit orders around a drifting mid, some IOC/FOK/market,
cancels and amends of the submitter's own open orders. Pure: a ``random.Random`` drives it."""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..core.book import BUY, FOK, GTC, IOC, MARKET, SELL
from ..core.ops import AMEND, CANCEL, NEW


@dataclass(frozen=True, slots=True)
class Order:
    """One client intent, before any node stamps it."""

    kind: int
    side: int = BUY
    price: int = 0
    qty: int = 0
    tif: int = GTC
    order_id: str = ""


class OrderFlow:
    """Draws the next client action; ``open_orders`` is supplied by the caller (what it can cancel)."""

    def __init__(self, rng: random.Random, mid: int = 10_000, spread: int = 20, max_qty: int = 20) -> None:
        self.rng = rng
        self.mid = mid
        self.spread = spread
        self.max_qty = max_qty

    def next(self, open_orders: list[tuple[str, int]]) -> Order:
        """``open_orders``: ``(order_id, side)`` of orders the submitter may cancel or amend."""
        r = self.rng.random()
        if open_orders and r < 0.15:
            oid, side = self.rng.choice(open_orders)
            return Order(CANCEL, side, order_id=oid)
        if open_orders and r < 0.25:
            oid, side = self.rng.choice(open_orders)
            return Order(AMEND, side, self._price(side), self.rng.randint(1, self.max_qty), order_id=oid)
        self.mid = max(self.spread + 1, self.mid + self.rng.choice((-1, 0, 0, 1)))
        side = self.rng.choice((BUY, SELL))
        t = self.rng.random()
        tif = MARKET if t < 0.03 else FOK if t < 0.06 else IOC if t < 0.15 else GTC
        return Order(NEW, side, 0 if tif == MARKET else self._price(side), self.rng.randint(1, self.max_qty), tif)

    def _price(self, side: int) -> int:
        # mostly passive, sometimes crossing: a book that rests and trades
        off = self.rng.randint(-self.spread // 4, self.spread)
        return self.mid - off if side == BUY else self.mid + off
