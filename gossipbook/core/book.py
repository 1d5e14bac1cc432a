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
- Ownership: every resting order remembers its account (``owner``); trades name both accounts.
- Self-trade prevention (``stp``): an order never trades with a resting order of its own (non-empty)
  account unless ``stp`` is ``STP_OFF``. ``STP_CANCEL_NEWEST`` cancels the incoming order's remainder,
  ``STP_CANCEL_OLDEST`` cancels the resting one and matching goes on, ``STP_CANCEL_BOTH`` does both,
  ``STP_DECREMENT`` takes the smaller quantity off both without a trade. A FOK counts only what it
  could fill before a self-match would stop it (resting orders ``STP_CANCEL_OLDEST`` would remove
  are skipped). Like everything here it depends only on the calls made, so replicas agree on it.
- Matching policy (``matching``, per call, from the instrument): ``PRICE_TIME`` as above, or
  ``PRO_RATA``: levels are still taken best price first, but at one price level the incoming
  quantity ``q`` is shared among the resting orders in proportion to their remaining sizes. With
  ``R`` the level's total: if ``q >= R`` every order fills completely; else order ``i`` gets
  ``floor(q * r_i / R)`` lots and the ``k = q - sum(floor(...))`` lots left over (``k`` < the
  number of orders) go one lot each to the first ``k`` orders in time priority. Trades are listed
  in time priority. Self-trade prevention acts first at each level: the taker's own orders there
  are met in time priority exactly as price-time would meet them (cancel-newest: no trade at this
  level or beyond; cancel-oldest: they go; cancel-both: the first goes and the taker stops;
  decrement: sizes come off both), then what is left is shared among the other orders. A FOK counts
  a level only if no self-match would act there first (cancel-oldest's own orders are skipped).
- ``digest()`` depends only on the resting state (orders, prices, quantities, priority), never on
  how the book got there.
- Undo journal: while ``journal`` is a list, every mutation appends a record that ``undo`` can
  reverse exactly (priority order included). Undoing the records of the last calls, newest first,
  gives back the book as it was before them; the replica rolls back this way instead of cloning.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

from mypy_extensions import mypyc_attr
from sortedcontainers import SortedDict

BUY, SELL = 0, 1
GTC, IOC, FOK, MARKET = 0, 1, 2, 3
SIDES = {"buy": BUY, "sell": SELL}
SIDE_NAMES = ("buy", "sell")
TIFS = {"gtc": GTC, "ioc": IOC, "fok": FOK, "market": MARKET}
TIF_NAMES = ("gtc", "ioc", "fok", "market")
STP_OFF, STP_CANCEL_NEWEST, STP_CANCEL_OLDEST, STP_CANCEL_BOTH, STP_DECREMENT = range(5)
STP_NAMES = ("off", "cancel-newest", "cancel-oldest", "cancel-both", "decrement")
STP_MODES = {name: i for i, name in enumerate(STP_NAMES)}
PRICE_TIME, PRO_RATA = 0, 1
MATCHING_NAMES = ("price-time", "pro-rata")
MATCHING_MODES = {name: i for i, name in enumerate(MATCHING_NAMES)}

# Undo journal records, flat in the journal list (no object per record: nothing for the garbage
# collector), each ending in a tag that says its length, read from the end:
#   order_id                                    it rested, at the back of its level
#   order_id, lots, _J_SET                      its remaining lots were ``lots`` (it still rests)
#   order_id, lots, side, price, account, _J_FILLED   it left the front of its level (filled, or
#                                               removed by self-trade prevention)
#   order_id, lots, side, price, account, index, _J_CANCEL   it was cancelled from ``index`` in its level
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
    maker_account: str = ""
    taker_account: str = ""


class Level(NamedTuple):
    price: int
    qty: int
    orders: int


class Depth(NamedTuple):
    bids: list[Level]
    asks: list[Level]


@mypyc_attr(allow_interpreted_subclasses=True)  # compiled (setup.py), and still subclassable in Python
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
        self._where: dict[str, tuple[int, int, str]] = {}  # order_id -> (side, price, account)

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
        side, price, _acct = w
        lvl = (self._bids[-price] if side == BUY else self._asks[price])
        return side, price, lvl[order_id]

    def owner(self, order_id: str) -> str | None:
        """The account of a resting order ("" for none), or None if it does not rest here."""
        w = self._where.get(order_id)
        return None if w is None else w[2]

    def orders_of(self, account: str) -> list[tuple[int, int, str, int]]:
        """``account``'s resting orders in priority order: ``(side, price, order_id, remaining)``."""
        return [(side, price, oid, q) for side, price, oid, q, a in self.entries() if a == account]
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

    def entries(self) -> list[tuple[int, int, str, int, str]]:
        """``resting()`` with each order's account: what a snapshot keeps."""
        w = self._where
        out = [(BUY, -k, oid, q, w[oid][2]) for k, lvl in self._bids.items() for oid, q in lvl.items()]
        out += [(SELL, k, oid, q, w[oid][2]) for k, lvl in self._asks.items() for oid, q in lvl.items()]
        return out

    def digest(self) -> bytes:
        """16-byte hash of the resting state in canonical (priority) order.

        Strings (symbol, order ids) are caller data and may contain the separators, so each is
        length-prefixed: the encoding is injective and two different states never share an input.
        """
        sym = self.symbol.encode()
        h = hashlib.blake2b(b"%d:%s" % (len(sym), sym), digest_size=16)
        # the same bytes as one ``|side,price,len:oid,qty,len:account`` per order in ``resting()``
        # order, built per level and hashed in one call (a node's status computes this on every query)
        parts: list[bytes] = []
        add = parts.append
        where = self._where
        for side, levels, sign in ((BUY, self._bids, -1), (SELL, self._asks, 1)):
            for k, lvl in levels.items():
                pre = b"|%d,%d," % (side, sign * k)
                for oid, q in lvl.items():
                    b = oid.encode()
                    a = where[oid][2].encode()
                    add(b"%s%d:%s,%d,%d:%s" % (pre, len(b), b, q, len(a), a))
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
               cause: str | None = None, account: str = "", stp: int = STP_CANCEL_NEWEST,
               matching: int = PRICE_TIME) -> list[Trade]:
        """Enter a new order of ``account``; returns the trades it made as taker, in fill order.

        ``price`` is ignored for ``MARKET``. The caller guarantees ``order_id`` is fresh and
        ``qty > 0`` (the replica validates before stamping). ``stp`` and ``matching`` (the
        instrument's policy, ``PRICE_TIME`` or ``PRO_RATA``): see the module's rules.
        """
        if order_id in self._where:
            return []  # a replayed NEW for a live order changes nothing
        trades: list[Trade] = []
        cause = cause or order_id
        if not account:
            stp = STP_OFF
        if matching:  # one branch per call: the price-time path stays as it was
            if tif == FOK and self._available_pro_rata(side, price, account, stp) < qty:
                return trades
            left = self._match_pro_rata(order_id, side, price, qty, tif == MARKET, cause, trades, account, stp)
        else:
            if tif == FOK and self._available(side, price, account, stp) < qty:
                return trades
            left = self._match(order_id, side, price, qty, tif == MARKET, cause, trades, account, stp)
        if left and tif == GTC:
            self._rest(order_id, side, price, left, account)
        return trades

    def cancel(self, order_id: str) -> int:
        """Remove a resting order; returns the lots removed (0 if it was not resting)."""
        w = self._where.pop(order_id, None)
        if w is None:
            return 0
        side, price, acct = w
        levels, key = (self._bids, -price) if side == BUY else (self._asks, price)
        lvl = levels[key]
        j = self.journal
        if j is not None:
            j += (order_id, lvl[order_id], side, price, acct, list(lvl).index(order_id), _J_CANCEL)
        qty = lvl.pop(order_id)
        if not lvl:
            del levels[key]
        return qty

    def cancel_account(self, account: str) -> int:
        """Cancel every resting order of ``account`` (a mass cancel); returns how many."""
        where = self._where
        oids = [oid for oid, w in where.items() if w[2] == account]
        # a fixed order, (side, price) then priority, so the undo journal replays it exactly (the
        # account, third in the key, is the same for all; no lambda: mypyc cannot compile one here)
        oids.sort(key=where.__getitem__)
        for oid in oids:
            self.cancel(oid)
        return len(oids)

    def amend(self, order_id: str, price: int, qty: int, cause: str,
              stp: int = STP_CANCEL_NEWEST, matching: int = PRICE_TIME) -> list[Trade] | None:
        """Change a resting order's price and/or remaining quantity.

        Returns None when the order is not resting (already filled or cancelled: a no-op), else
        the trades the re-entered order made. ``qty == 0`` cancels.
        """
        w = self._where.get(order_id)
        if w is None:
            return None
        side, old_price, account = w
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
        match = self._match_pro_rata if matching else self._match
        left = match(order_id, side, price, qty, False, cause, trades, account, stp if account else STP_OFF)
        if left:
            self._rest(order_id, side, price, left, account)
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
                side, price, _a = where.pop(tag)  # type: ignore[arg-type]
                levels, key = (self._bids, -price) if side == BUY else (self._asks, price)
                lvl = levels[key]
                del lvl[tag]
                if not lvl:
                    del levels[key]
            elif tag == _J_SET:  # its remaining lots changed
                i -= 3
                oid, qty = journal[i], journal[i + 1]
                side, price, _a = where[oid]  # type: ignore[index]
                (self._bids[-price] if side == BUY else self._asks[price])[oid] = qty
            else:  # left the front of its level, or cancelled from ``index``
                i -= 6 if tag == _J_FILLED else 7
                oid, qty, side, price, acct, index = journal[i:i + 6]  # type: ignore[assignment]
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
                where[oid] = (side, price, acct)  # type: ignore[index,assignment]
        del journal[start:]

    # --- internals -----------------------------------------------------------------------------
    def _rest(self, order_id: str, side: int, price: int, qty: int, account: str = "") -> None:
        levels, key = (self._bids, -price) if side == BUY else (self._asks, price)
        lvl = levels.get(key)
        if lvl is None:
            levels[key] = {order_id: qty}
        else:
            lvl[order_id] = qty
        self._where[order_id] = (side, price, account)
        if self.journal is not None:
            self.journal.append(order_id)

    def _available(self, side: int, limit: int, account: str = "", stp: int = STP_OFF) -> int:
        """What a FOK could fill at ``limit``, stopping where self-trade prevention would stop it."""
        total = 0
        where = self._where
        for k, lvl in (self._asks if side == BUY else self._bids).items():
            if (k > limit) if side == BUY else (-k < limit):
                break
            if stp == STP_OFF:
                total += sum(lvl.values())
                continue
            for oid, q in lvl.items():
                if where[oid][2] != account:
                    total += q
                elif stp != STP_CANCEL_OLDEST:
                    return total
        return total

    def _match(self, taker: str, side: int, limit: int, qty: int, market: bool, cause: str,
               trades: list[Trade], account: str = "", stp: int = STP_OFF) -> int:
        """Fill ``qty`` against the opposite side; returns what is left to rest (0 also when
        self-trade prevention cancelled the rest). Every maker removed here is at the front of its
        level when removed (those before it left), which is where ``_J_FILLED`` restores it."""
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
                macct = where[maker][2]
                if stp and macct == account:  # a self-match (stp is off for an empty account)
                    if stp == STP_DECREMENT and mq > qty:
                        if j is not None:
                            j += (maker, mq, _J_SET)
                        lvl[maker] = mq - qty
                        qty = 0
                        break
                    if stp != STP_CANCEL_NEWEST:  # the resting order goes (decrement: all of it)
                        del lvl[maker]
                        del where[maker]
                        if j is not None:
                            j += (maker, mq, 1 - side, price, macct, _J_FILLED)
                    if stp == STP_DECREMENT:
                        qty -= mq
                        if not qty:
                            break
                        continue
                    if stp == STP_CANCEL_OLDEST:
                        continue
                    qty = 0  # cancel-newest / cancel-both: the incoming order's remainder is cancelled
                    break
                fill = mq if mq < qty else qty
                trades.append(Trade(f"{cause}/{n}", self.symbol, price, fill, maker, taker, side, macct, account))
                n += 1
                qty -= fill
                if fill == mq:
                    del lvl[maker]
                    del where[maker]
                    if j is not None:
                        j += (maker, mq, 1 - side, price, macct, _J_FILLED)
                else:
                    lvl[maker] = mq - fill
                    if j is not None:
                        j += (maker, mq, _J_SET)
                if not qty:
                    break
            if not lvl:
                del opp[key]
        return qty

    # --- pro-rata -------------------------------------------------------------------------------
    def _available_pro_rata(self, side: int, limit: int, account: str = "", stp: int = STP_OFF) -> int:
        """What a FOK could fill at ``limit`` under pro-rata: self-trade prevention acts before a
        level's allocation, so a level holding an own order (unless ``STP_CANCEL_OLDEST``, which
        only removes it) adds nothing and ends the count."""
        total = 0
        where = self._where
        for k, lvl in (self._asks if side == BUY else self._bids).items():
            if (k > limit) if side == BUY else (-k < limit):
                break
            if stp == STP_OFF:
                total += sum(lvl.values())
                continue
            here = 0
            for oid, q in lvl.items():
                if where[oid][2] != account:
                    here += q
                elif stp != STP_CANCEL_OLDEST:
                    return total
            total += here
        return total

    def _match_pro_rata(self, taker: str, side: int, limit: int, qty: int, market: bool, cause: str,
                        trades: list[Trade], account: str = "", stp: int = STP_OFF) -> int:
        """``_match`` under pro-rata (the module's rules); returns what is left to rest. A maker
        that leaves its level from anywhere but the front is journaled with its index
        (``_J_CANCEL``), recorded at the moment it left, so ``undo`` puts it back exactly."""
        opp = self._asks if side == BUY else self._bids
        where = self._where
        j = self.journal
        n = len(trades)
        mside = 1 - side
        while qty and opp:
            key, lvl = opp.peekitem(0)
            price = key if side == BUY else -key
            if not market and (price > limit if side == BUY else price < limit):
                break
            if stp:  # the taker's own orders here first, in time priority, as price-time meets them
                idx = 0
                for maker, mq in list(lvl.items()):
                    macct = where[maker][2]
                    if macct != account:
                        idx += 1
                        continue
                    if stp == STP_DECREMENT and mq > qty:
                        if j is not None:
                            j += (maker, mq, _J_SET)
                        lvl[maker] = mq - qty
                        qty = 0
                        break
                    if stp == STP_CANCEL_NEWEST:
                        qty = 0
                        break
                    del lvl[maker]
                    del where[maker]
                    if j is not None:
                        j += (maker, mq, mside, price, macct, idx, _J_CANCEL)
                    if stp == STP_DECREMENT:
                        qty -= mq
                        if not qty:
                            break
                    elif stp == STP_CANCEL_BOTH:
                        qty = 0
                        break
                if not lvl:
                    del opp[key]
                if not qty:
                    break
                if not lvl:
                    continue
            total = sum(lvl.values())
            if qty >= total:  # the whole level fills, front to back
                for maker, mq in list(lvl.items()):
                    macct = where[maker][2]
                    trades.append(Trade(f"{cause}/{n}", self.symbol, price, mq, maker, taker, side, macct, account))
                    n += 1
                    del where[maker]
                    if j is not None:
                        j += (maker, mq, mside, price, macct, _J_FILLED)
                qty -= total
                del opp[key]
                continue
            # q < R: floor shares, then one leftover lot each to the first orders in time priority
            extra = qty
            shares = []
            for mq in lvl.values():
                a = qty * mq // total
                shares.append(a)
                extra -= a
            idx = 0
            for (maker, mq), a in zip(list(lvl.items()), shares, strict=True):
                if extra:
                    a += 1
                    extra -= 1
                if not a:
                    idx += 1
                    continue
                macct = where[maker][2]
                trades.append(Trade(f"{cause}/{n}", self.symbol, price, a, maker, taker, side, macct, account))
                n += 1
                if a == mq:
                    del lvl[maker]
                    del where[maker]
                    if j is not None:
                        j += (maker, mq, mside, price, macct, idx, _J_CANCEL)
                else:
                    lvl[maker] = mq - a
                    idx += 1
                    if j is not None:
                        j += (maker, mq, _J_SET)
            if not lvl:
                del opp[key]
            qty = 0
        return qty
