"""Self-trade prevention (issue 14) against a small reference model, for every mode.

``Model`` below is a list-based price-time book written from the rules in ``gossipbook/core/book.py``
and issue 14, independent of ``Book``'s level maps and undo journal:

- a self-match is an incoming order meeting a resting order of its own non-empty account;
- ``off``: it trades; ``cancel-newest``: the incoming remainder is cancelled (the resting order
  stays); ``cancel-oldest``: the resting order is removed and matching goes on; ``cancel-both``: both;
  ``decrement``: ``min`` of the two quantities comes off both without a trade, and whichever reaches
  zero goes;
- a FOK executes only if what it can fill before a self-match would stop it covers it (resting own
  orders that ``cancel-oldest`` would remove are skipped, not counted);
- an order with no account ("") never self-matches.

Random multi-account flows of submits (every time in force), amends and cancels are fed to both;
trades and resting state (priority order, quantities, owners) must be identical. Also: no trade has
equal non-empty maker and taker accounts unless ``off``; and journaled mutations undo exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gossipbook.core import book as B
from gossipbook.core.book import BUY, FOK, GTC, IOC, MARKET, SELL, Book, Trade

SYM = "GBX"
MODES = {"off": B.STP_OFF, "cancel-newest": B.STP_CANCEL_NEWEST, "cancel-oldest": B.STP_CANCEL_OLDEST,
         "cancel-both": B.STP_CANCEL_BOTH, "decrement": B.STP_DECREMENT}


def test_mode_names_match_the_book() -> None:
    assert {B.STP_NAMES[v]: v for v in MODES.values()} == MODES
    assert B.STP_MODES == MODES


# ==== the reference model ===========================================================================
@dataclass
class Resting:
    oid: str
    side: int
    price: int
    qty: int
    acct: str
    t: int  # arrival (time priority): a later re-entry gets a later t


class Model:
    def __init__(self) -> None:
        self.orders: list[Resting] = []
        self.clock = 0

    def _tick(self) -> int:
        self.clock += 1
        return self.clock

    def _opposite(self, side: int) -> list[Resting]:
        """Resting orders an incoming ``side`` order meets, best first."""
        opp = [o for o in self.orders if o.side != side]
        if side == BUY:
            return sorted(opp, key=lambda o: (o.price, o.t))
        return sorted(opp, key=lambda o: (-o.price, o.t))

    @staticmethod
    def _crosses(side: int, limit: int, price: int, market: bool) -> bool:
        return market or (price <= limit if side == BUY else price >= limit)

    def _fok_fillable(self, side: int, limit: int, acct: str, stp: int) -> int:
        total = 0
        for o in self._opposite(side):
            if not self._crosses(side, limit, o.price, False):
                break
            if stp != B.STP_OFF and o.acct == acct:
                if stp == B.STP_CANCEL_OLDEST:
                    continue  # it would be removed, not traded with: skip it
                break  # matching would stop here
            total += o.qty
        return total

    def _match(self, oid: str, side: int, limit: int, qty: int, market: bool, cause: str, acct: str,
               stp: int) -> tuple[int, list[Trade]]:
        trades: list[Trade] = []
        for o in self._opposite(side):
            if not qty:
                break
            if not self._crosses(side, limit, o.price, market):
                break
            if stp != B.STP_OFF and o.acct == acct:
                if stp == B.STP_CANCEL_NEWEST:
                    qty = 0
                    break
                if stp == B.STP_CANCEL_OLDEST:
                    self.orders.remove(o)
                    continue
                if stp == B.STP_CANCEL_BOTH:
                    self.orders.remove(o)
                    qty = 0
                    break
                d = min(o.qty, qty)  # decrement
                o.qty -= d
                qty -= d
                if not o.qty:
                    self.orders.remove(o)
                continue
            fill = min(o.qty, qty)
            trades.append(Trade(f"{cause}/{len(trades)}", SYM, o.price, fill, o.oid, oid, side, o.acct, acct))
            o.qty -= fill
            qty -= fill
            if not o.qty:
                self.orders.remove(o)
        return qty, trades

    def submit(self, oid: str, side: int, price: int, qty: int, tif: int, acct: str, stp: int) -> list[Trade]:
        if not acct:
            stp = B.STP_OFF
        market = tif == MARKET
        if market:
            price = 0
        if tif == FOK and self._fok_fillable(side, price, acct, stp) < qty:
            return []
        left, trades = self._match(oid, side, price, qty, market, oid, acct, stp)
        if left and tif == GTC:
            self.orders.append(Resting(oid, side, price, left, acct, self._tick()))
        return trades

    def cancel(self, oid: str) -> None:
        self.orders = [o for o in self.orders if o.oid != oid]

    def amend(self, oid: str, price: int, qty: int, cause: str, stp: int) -> list[Trade] | None:
        o = next((o for o in self.orders if o.oid == oid), None)
        if o is None:
            return None
        if qty <= 0:
            self.cancel(oid)
            return []
        if price == o.price and qty <= o.qty:
            o.qty = qty  # keeps its place
            return []
        self.cancel(oid)
        left, trades = self._match(oid, o.side, price, qty, False, cause, o.acct, stp if o.acct else B.STP_OFF)
        if left:
            self.orders.append(Resting(oid, o.side, price, left, o.acct, self._tick()))
        return trades

    def entries(self) -> list[tuple[int, int, str, int, str]]:
        bids = sorted((o for o in self.orders if o.side == BUY), key=lambda o: (-o.price, o.t))
        asks = sorted((o for o in self.orders if o.side == SELL), key=lambda o: (o.price, o.t))
        return [(o.side, o.price, o.oid, o.qty, o.acct) for o in bids + asks]


# ==== flows ===============================================================================================
ACCOUNTS = st.sampled_from(["a", "a", "a", "b", "b", ""])
SUBMIT = st.tuples(st.just("new"), st.sampled_from([BUY, SELL]), st.integers(99, 101), st.integers(1, 4),
                   st.sampled_from([GTC, GTC, GTC, GTC, IOC, FOK, FOK, MARKET]), ACCOUNTS)
AMEND = st.tuples(st.just("amend"), st.integers(0, 40), st.integers(99, 101), st.integers(0, 5))
CANCEL = st.tuples(st.just("cancel"), st.integers(0, 40))
FLOW = st.lists(st.one_of(SUBMIT, SUBMIT, SUBMIT, SUBMIT, AMEND, CANCEL), min_size=15, max_size=60)
SHORT = st.lists(st.one_of(SUBMIT, SUBMIT, SUBMIT, SUBMIT, AMEND, CANCEL), min_size=3, max_size=25)


def run_flow(flow: list[tuple], stp: int, book: Book, model: Model | None = None) -> list[Trade]:
    """Feed ``flow`` to ``book`` (and ``model``, checking they agree after every step)."""
    all_trades: list[Trade] = []
    ids: list[str] = []
    for i, step in enumerate(flow):
        oid = f"o{i}"
        if step[0] == "new":
            _, side, price, qty, tif, acct = step
            got = book.submit(oid, side, 0 if tif == MARKET else price, qty, tif, oid, acct, stp)
            want = model.submit(oid, side, price, qty, tif, acct, stp) if model else got
            ids.append(oid)
        elif step[0] == "amend":
            if not ids:
                continue
            _, k, price, qty = step
            target = ids[k % len(ids)]
            got = book.amend(target, price, qty, oid, stp)
            want = model.amend(target, price, qty, oid, stp) if model else got
        else:
            if not ids:
                continue
            target = ids[step[1] % len(ids)]
            book.cancel(target)
            if model:
                model.cancel(target)
            got = want = []
        assert got == want, (i, step)
        if model:
            assert book.entries() == model.entries(), (i, step)
        all_trades += got or []
    return all_trades


@pytest.mark.parametrize("mode", list(MODES))
@given(flow=FLOW)
def test_stp_matches_the_reference_model(mode: str, flow: list[tuple]) -> None:
    stp = MODES[mode]
    book, model = Book(SYM), Model()
    trades = run_flow(flow, stp, book, model)
    # resting state is all the digest sees: equal entries, equal digest with a rebuilt book
    rebuilt = Book(SYM)
    for side, price, oid, qty, acct in model.entries():
        rebuilt._rest(oid, side, price, qty, acct)
    assert rebuilt.digest() == book.digest()
    if stp != B.STP_OFF:
        assert not [t for t in trades if t.maker_account and t.maker_account == t.taker_account]


@given(flow=FLOW)
def test_off_lets_an_account_trade_with_itself_and_nothing_else_changes(flow: list[tuple]) -> None:
    """``off`` is plain price-time matching: the same as a book whose orders carry no account."""
    named, anon = Book(SYM), Book(SYM)
    t1 = run_flow(flow, B.STP_OFF, named)
    t2 = run_flow([s if s[0] != "new" else (*s[:5], "") for s in flow], B.STP_CANCEL_BOTH, anon)
    assert [t[:7] for t in t1] == [t[:7] for t in t2]
    assert [e[:4] for e in named.entries()] == anon.resting()


def _self_cross(stp: int) -> tuple[Book, list[Trade]]:
    """a rests sell 5 @100 and sell 3 @100 (b's 2 in between); a buys 6 @100."""
    b = Book(SYM)
    b.submit("s1", SELL, 100, 5, GTC, "s1", "a", stp)
    b.submit("s2", SELL, 100, 2, GTC, "s2", "b", stp)
    b.submit("s3", SELL, 100, 3, GTC, "s3", "a", stp)
    return b, b.submit("x", BUY, 100, 6, GTC, "x", "a", stp)


def test_each_mode_on_one_example() -> None:
    b, t = _self_cross(B.STP_OFF)
    assert [(x.maker, x.qty) for x in t] == [("s1", 5), ("s2", 1)]
    b, t = _self_cross(B.STP_CANCEL_NEWEST)
    assert t == [] and [e[2:4] for e in b.entries()] == [("s1", 5), ("s2", 2), ("s3", 3)]
    b, t = _self_cross(B.STP_CANCEL_OLDEST)  # s1 goes, trades 2 with b, s3 goes, 4 rests
    assert [(x.maker, x.qty) for x in t] == [("s2", 2)]
    assert [e[2:4] for e in b.entries()] == [("x", 4)]
    b, t = _self_cross(B.STP_CANCEL_BOTH)
    assert t == [] and [e[2:4] for e in b.entries()] == [("s2", 2), ("s3", 3)]
    for stp in (B.STP_DECREMENT, B.STP_CANCEL_BOTH):  # equal quantities: both go, no trade
        b = Book(SYM)
        b.submit("s", SELL, 100, 4, GTC, "s", "a", stp)
        assert b.submit("y", BUY, 100, 4, GTC, "y", "a", stp) == [] and len(b) == 0
    b, t = _self_cross(B.STP_DECREMENT)  # s1 5 off both (1 left), 1 with b
    assert [(x.maker, x.qty) for x in t] == [("s2", 1)]
    assert [e[2:4] for e in b.entries()] == [("s2", 1), ("s3", 3)]
    # a FOK for 2 stops counting at its own s1 (only cancel-oldest skips it: then b's 2 fill it)
    for stp, fills in ((B.STP_CANCEL_NEWEST, []), (B.STP_CANCEL_OLDEST, [("s2", 2)]),
                       (B.STP_DECREMENT, []), (B.STP_OFF, [("s1", 2)])):
        b, _ = _self_cross(B.STP_CANCEL_NEWEST)
        t = b.submit("f", BUY, 100, 2, FOK, "f", "a", stp)
        assert [(x.maker, x.qty) for x in t] == fills, B.STP_NAMES[stp]


# ==== undo =================================================================================================
@pytest.mark.parametrize("mode", list(MODES))
@given(prefix=SHORT, suffix=FLOW)
def test_journaled_stp_mutations_undo_exactly(mode: str, prefix: list[tuple], suffix: list[tuple]) -> None:
    stp = MODES[mode]
    book = Book(SYM)
    run_flow(prefix, stp, book)
    # journal the suffix step by step (ids continue from the prefix's so amends/cancels hit them too)
    book.journal = []
    marks: list[tuple[int, bytes, list]] = []
    flow = prefix + suffix
    ids = [f"o{i}" for i, s in enumerate(prefix) if s[0] == "new"]
    for i, step in enumerate(suffix, start=len(prefix)):
        marks.append((len(book.journal), book.digest(), book.entries()))
        oid = f"o{i}"
        if step[0] == "new":
            _, side, price, qty, tif, acct = step
            book.submit(oid, side, 0 if tif == MARKET else price, qty, tif, oid, acct, stp)
            ids.append(oid)
        elif ids and step[0] == "amend":
            book.amend(ids[step[1] % len(ids)], step[2], step[3], oid, stp)
        elif ids:
            book.cancel(ids[step[1] % len(ids)])
    assert len(flow) == len(prefix) + len(suffix)
    journal = book.journal
    for start, digest, entries in reversed(marks):
        book.undo(journal, start)
        assert len(journal) == start
        assert book.digest() == digest and book.entries() == entries
