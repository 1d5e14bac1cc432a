"""A deterministic limit order book for one instrument.

Theory of operation: two sorted maps of price level -> ``{order_id: remaining_lots}``; a Python
dict keeps insertion order, which *is* time priority within a level. The book is a pure function of
the sequence of calls made on it: no clock, no counters, ids come from the caller's ops, so every
replica that folds the same ops in the same order holds the same book and makes the same trades.

Rules that hold:
- Price-time priority: better price first, then earlier arrival at that price.
- ``GTC`` rests what it does not fill; ``IOC`` and ``MARKET`` drop the remainder; ``FOK`` fills
  completely or not at all (it trades nothing when the book cannot fill it).
- Amend: a quantity decrease at the same price keeps priority; a price change or a quantity increase
  re-enters the order at the back (and may trade, as a taker, if the new price crosses).
- ``digest()`` depends only on the resting state (orders, prices, quantities, priority), never on
  how the book got there.
- Undo journal: while ``journal`` is a list, every mutation appends a record that ``undo`` can
  reverse exactly (priority order included). Undoing the records of the last calls, newest first,
  gives back the book as it was before them; the replica rolls back this way instead of cloning.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

from sortedcontainers import SortedDict

BUY, SELL = 0, 1
GTC, IOC, FOK, MARKET = 0, 1, 2, 3
SIDES = {"buy": BUY, "sell": SELL}
SIDE_NAMES = ("buy", "sell")
TIFS = {"gtc": GTC, "ioc": IOC, "fok": FOK, "market": MARKET}
TIF_NAMES = ("gtc", "ioc", "fok", "market")

# Undo journal records, flat in the journal list (no object per record: nothing for the garbage
# collector), each ending in a tag that says its length, read from the end:
#   order_id                                    it rested, at the back of its level
#   order_id, lots, _J_SET                      its remaining lots were ``lots`` (it still rests)
#   order_id, lots, side, price, _J_FILLED      it was filled away from the front of its level
#   order_id, lots, side, price, index, _J_CANCEL   it was cancelled from ``index`` in its level
_J_SET, _J_FILLED, _J_CANCEL = -1, -2, -3


class Trade(NamedTuple):
    """One fill. ``trade_id`` is ``"<cause op id>/<n>"``: stable for as long as the fold is."""

    trade_id: str
    symbol: str
    price: int
    qty: int
    maker: str
    taker: str
    taker_side: int


class Level(NamedTuple):
    price: int
    qty: int
    orders: int


class Depth(NamedTuple):
    bids: list[Level]
    asks: list[Level]


class Book:
    """One instrument's book. Not thread-safe, not clock-aware: a pure fold target."""

    __slots__ = ("symbol", "_bids", "_asks", "_where", "journal")

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        #: when a list, each mutation appends an undo record to it (see ``undo``); None: off
        self.journal: list[str | int] | None = None
        # bids keyed by -price so index 0 is always the best level on both sides
        self._bids: SortedDict = SortedDict()
        self._asks: SortedDict = SortedDict()
        self._where: dict[str, tuple[int, int]] = {}  # order_id -> (side, price)

    # --- queries -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, order_id: str) -> bool:
        return order_id in self._where

    def order(self, order_id: str) -> tuple[int, int, int] | None:
        """``(side, price, remaining)`` of a resting order, or None."""
        w = self._where.get(order_id)
        if w is None:
            return None
        side, price = w
        lvl = (self._bids[-price] if side == BUY else self._asks[price])
        return side, price, lvl[order_id]

    def best_bid(self) -> int | None:
        return -self._bids.peekitem(0)[0] if self._bids else None

    def best_ask(self) -> int | None:
        return self._asks.peekitem(0)[0] if self._asks else None

    def depth(self, n: int = 10) -> Depth:
        """Top ``n`` levels per side: price, total lots, order count."""
        bids = [Level(-k, sum(v.values()), len(v)) for k, v in self._bids.items()[:n]]
        asks = [Level(k, sum(v.values()), len(v)) for k, v in self._asks.items()[:n]]
        return Depth(bids, asks)

    def resting(self) -> list[tuple[int, int, str, int]]:
        """Every resting order in priority order: ``(side, price, order_id, remaining)``."""
        out = [(BUY, -k, oid, q) for k, lvl in self._bids.items() for oid, q in lvl.items()]
        out += [(SELL, k, oid, q) for k, lvl in self._asks.items() for oid, q in lvl.items()]
        return out

    def digest(self) -> bytes:
        """16-byte hash of the resting state in canonical (priority) order.

        Strings (symbol, order ids) are caller data and may contain the separators, so each is
        length-prefixed: the encoding is injective and two different states never share an input.
        """
        sym = self.symbol.encode()
        h = hashlib.blake2b(b"%d:%s" % (len(sym), sym), digest_size=16)
        # the same bytes as one ``|side,price,len:oid,qty`` per order in ``resting()`` order, built
        # per level and hashed in one call (a node's status computes this on every query)
        parts: list[bytes] = []
        add = parts.append
        for side, levels, sign in ((BUY, self._bids, -1), (SELL, self._asks, 1)):
            for k, lvl in levels.items():
                pre = b"|%d,%d," % (side, sign * k)
                for oid, q in lvl.items():
                    b = oid.encode()
                    add(b"%s%d:%s,%d" % (pre, len(b), b, q))
        h.update(b"".join(parts))
        return h.digest()

    def clone(self) -> Book:
        """An independent copy (levels hold immutable ints, so copying the dicts suffices)."""
        b = Book(self.symbol)
        b._bids = SortedDict({k: dict(v) for k, v in self._bids.items()})
        b._asks = SortedDict({k: dict(v) for k, v in self._asks.items()})
        b._where = dict(self._where)
        return b

    # --- commands ------------------------------------------------------------------------------
    def submit(self, order_id: str, side: int, price: int, qty: int, tif: int = GTC,
               cause: str | None = None) -> list[Trade]:
        """Enter a new order; returns the trades it made as taker, in fill order.

        ``price`` is ignored for ``MARKET``. The caller guarantees ``order_id`` is fresh and
        ``qty > 0`` (the replica validates before stamping).
        """
        if order_id in self._where:
            return []  # a replayed NEW for a live order changes nothing
        trades: list[Trade] = []
        cause = cause or order_id
        if tif == FOK and self._available(side, price) < qty:
            return trades
        left = self._match(order_id, side, price, qty, tif == MARKET, cause, trades)
        if left and tif == GTC:
            self._rest(order_id, side, price, left)
        return trades

    def cancel(self, order_id: str) -> int:
        """Remove a resting order; returns the lots removed (0 if it was not resting)."""
        w = self._where.pop(order_id, None)
        if w is None:
            return 0
        side, price = w
        levels, key = (self._bids, -price) if side == BUY else (self._asks, price)
        lvl = levels[key]
        j = self.journal
        if j is not None:
            j += (order_id, lvl[order_id], side, price, list(lvl).index(order_id), _J_CANCEL)
        qty = lvl.pop(order_id)
        if not lvl:
            del levels[key]
        return qty

    def amend(self, order_id: str, price: int, qty: int, cause: str) -> list[Trade] | None:
        """Change a resting order's price and/or remaining quantity.

        Returns None when the order is not resting (already filled or cancelled: a no-op), else
        the trades the re-entered order made. ``qty == 0`` cancels.
        """
        w = self._where.get(order_id)
        if w is None:
            return None
        side, old_price = w
        levels, key = (self._bids, -old_price) if side == BUY else (self._asks, old_price)
        lvl = levels[key]
        if qty <= 0:
            self.cancel(order_id)
            return []
        if price == old_price and qty <= lvl[order_id]:
            if self.journal is not None:
                self.journal += (order_id, lvl[order_id], _J_SET)
            lvl[order_id] = qty  # in place: keeps its queue position
            return []
        self.cancel(order_id)
        trades: list[Trade] = []
        left = self._match(order_id, side, price, qty, False, cause, trades)
        if left:
            self._rest(order_id, side, price, left)
        return trades

    def undo(self, journal: list[str | int], start: int = 0) -> None:
        """Reverse the mutations journaled in ``journal[start:]``, newest first, and remove those
        records. Only exact: the book must be as those mutations left it."""
        where = self._where
        i = len(journal)
        while i > start:
            tag = journal[i - 1]
            if type(tag) is str:  # it rested at the back of its level
                i -= 1
                side, price = where.pop(tag)  # type: ignore[arg-type]
                levels, key = (self._bids, -price) if side == BUY else (self._asks, price)
                lvl = levels[key]
                del lvl[tag]
                if not lvl:
                    del levels[key]
            elif tag == _J_SET:  # its remaining lots changed
                i -= 3
                oid, qty = journal[i], journal[i + 1]
                side, price = where[oid]  # type: ignore[index]
                (self._bids[-price] if side == BUY else self._asks[price])[oid] = qty
            else:  # filled away from the front of its level, or cancelled from ``index``
                i -= 5 if tag == _J_FILLED else 6
                oid, qty, side, price, index = journal[i:i + 5]
                levels, key = (self._bids, -price) if side == BUY else (self._asks, price)  # type: ignore[operator]
                lvl = levels.get(key)
                if lvl is None:
                    levels[key] = {oid: qty}
                elif tag == _J_FILLED:
                    levels[key] = {oid: qty, **lvl}
                else:
                    items = list(lvl.items())
                    items.insert(index, (oid, qty))  # type: ignore[arg-type]
                    levels[key] = dict(items)
                where[oid] = (side, price)  # type: ignore[index,assignment]
        del journal[start:]

    # --- internals -----------------------------------------------------------------------------
    def _rest(self, order_id: str, side: int, price: int, qty: int) -> None:
        levels, key = (self._bids, -price) if side == BUY else (self._asks, price)
        lvl = levels.get(key)
        if lvl is None:
            levels[key] = {order_id: qty}
        else:
            lvl[order_id] = qty
        self._where[order_id] = (side, price)
        if self.journal is not None:
            self.journal.append(order_id)

    def _available(self, side: int, limit: int) -> int:
        total = 0
        if side == BUY:
            for p, lvl in self._asks.items():
                if p > limit:
                    break
                total += sum(lvl.values())
        else:
            for k, lvl in self._bids.items():
                if -k < limit:
                    break
                total += sum(lvl.values())
        return total

    def _match(self, taker: str, side: int, limit: int, qty: int, market: bool, cause: str,
               trades: list[Trade]) -> int:
        opp = self._asks if side == BUY else self._bids
        where = self._where
        j = self.journal
        n = len(trades)
        while qty and opp:
            key, lvl = opp.peekitem(0)
            price = key if side == BUY else -key
            if not market and (price > limit if side == BUY else price < limit):
                break
            for maker in list(lvl):
                mq = lvl[maker]
                fill = mq if mq < qty else qty
                trades.append(Trade(f"{cause}/{n}", self.symbol, price, fill, maker, taker, side))
                n += 1
                qty -= fill
                if fill == mq:
                    del lvl[maker]
                    del where[maker]
                    if j is not None:
                        j += (maker, mq, 1 - side, price, _J_FILLED)
                else:
                    lvl[maker] = mq - fill
                    if j is not None:
                        j += (maker, mq, _J_SET)
                if not qty:
                    break
            if not lvl:
                del opp[key]
        return qty
