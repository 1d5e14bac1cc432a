"""Pro-rata matching (issue 16): hand-computed allocations, the book's reference models extended
with pro-rata and run through the same property tests, the undo journal, and the replica's rollback.

The rule under test (``gossipbook/core/book.py``): levels best price first; at one level an incoming
``q`` against resting sizes ``r_1..r_n`` (time priority, total ``R``) fills everything when
``q >= R``; else order ``i`` gets ``floor(q * r_i / R)`` and the lots left over go one each to the
first orders in time priority. Self-trade prevention acts on the taker's own orders at a level
first, as price-time meets them; what is left is shared among the others.

The reference allocation below works with exact fractions on plain lists (no level maps, no
journal); the models subclass the two existing reference books (``test_book.Model``,
``test_stp.Model``) and replace only how one level is taken.
"""

from __future__ import annotations

import math
import random
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipbook.core import book as B
from gossipbook.core.book import (
    BUY,
    FOK,
    GTC,
    IOC,
    MARKET,
    MATCHING_MODES,
    PRICE_TIME,
    PRO_RATA,
    SELL,
    Book,
    Trade,
)
from gossipbook.core.instrument import Instrument, Venue
from gossipbook.core.ops import TradeExecuted, TradeRevised
from gossipbook.core.replica import Replica
from tests.core import test_book as tb
from tests.core import test_stp as ts

SYM = "GBX"
T0 = 1_000_000_000_000
LATE = 10**15


# ==== the reference allocation =====================================================================
def allocate(q: int, sizes: list[int]) -> list[int]:
    """Each order's share of ``q`` at one level (sizes in time priority), by exact fractions."""
    total = sum(sizes)
    if q >= total:
        return list(sizes)
    shares = [math.floor(Fraction(q * s, total)) for s in sizes]
    left = q - sum(shares)
    assert 0 <= left < len(sizes)
    for i in range(left):
        shares[i] += 1
    assert all(0 <= a <= s for a, s in zip(shares, sizes, strict=True)) and sum(shares) == q
    return shares


class ProRataBook(Book):
    """A ``Book`` whose calls default to pro-rata (what a pro-rata instrument's fold passes)."""

    __slots__ = ()

    def submit(self, *a, **kw) -> list[Trade]:  # type: ignore[no-untyped-def,override]
        kw.setdefault("matching", PRO_RATA)
        return super().submit(*a, **kw)

    def amend(self, *a, **kw) -> list[Trade] | None:  # type: ignore[no-untyped-def,override]
        kw.setdefault("matching", PRO_RATA)
        return super().amend(*a, **kw)


class PlainModel(tb.Model):
    """``test_book``'s naive book with pro-rata levels (orders carry no account)."""

    def _take(self, taker: str, side: int, limit: int, qty: int, market: bool,
              cause: str) -> tuple[list[Trade], int]:
        trades: list[Trade] = []
        while qty > 0:
            makers = self._makers(side, limit, market)
            if not makers:
                break
            level = [m for m in makers if m.price == makers[0].price]  # already in time priority
            for m, a in zip(level, allocate(qty, [m.qty for m in level]), strict=True):
                if a:
                    trades.append(Trade(f"{cause}/{len(trades)}", self.symbol, m.price, a, m.oid, taker, side))
                    m.qty -= a
                    qty -= a
            self.orders = [o for o in self.orders if o.qty > 0]
        return trades, qty


class StpModel(ts.Model):
    """``test_stp``'s account-aware book with pro-rata levels."""

    def _levels(self, side: int, limit: int, market: bool) -> list[list[ts.Resting]]:
        opp = [o for o in self._opposite(side) if self._crosses(side, limit, o.price, market)]
        prices = sorted({o.price for o in opp}, reverse=side == SELL)
        return [[o for o in opp if o.price == p] for p in prices]

    def _fok_fillable(self, side: int, limit: int, acct: str, stp: int) -> int:
        total = 0
        for level in self._levels(side, limit, False):
            mine = [o for o in level if o.acct == acct]
            if stp != B.STP_OFF and mine and stp != B.STP_CANCEL_OLDEST:
                break  # self-trade prevention acts here before any allocation
            total += sum(o.qty for o in level if stp == B.STP_OFF or o.acct != acct)
        return total

    def _match(self, oid: str, side: int, limit: int, qty: int, market: bool, cause: str, acct: str,
               stp: int) -> tuple[int, list[Trade]]:
        trades: list[Trade] = []
        while qty:
            levels = self._levels(side, limit, market)
            if not levels:
                break
            level = levels[0]
            if stp != B.STP_OFF:
                for o in [o for o in level if o.acct == acct]:
                    if stp == B.STP_CANCEL_NEWEST:
                        qty = 0
                        break
                    if stp in (B.STP_CANCEL_OLDEST, B.STP_CANCEL_BOTH):
                        self.orders.remove(o)
                        if stp == B.STP_CANCEL_BOTH:
                            qty = 0
                            break
                        continue
                    d = min(o.qty, qty)  # decrement
                    o.qty -= d
                    qty -= d
                    if not o.qty:
                        self.orders.remove(o)
                    if not qty:
                        break
                if not qty:
                    break
                level = [o for o in level if o.acct != acct]
                if not level:
                    continue
            for o, a in zip(level, allocate(qty, [o.qty for o in level]), strict=True):
                if a:
                    trades.append(Trade(f"{cause}/{len(trades)}", SYM, o.price, a, o.oid, oid, side, o.acct, acct))
                    o.qty -= a
                    qty -= a
            self.orders = [o for o in self.orders if o.qty > 0]
        return qty, trades


# ==== hand-computed allocations ====================================================================
def _level(*sizes: int, side: int = SELL, price: int = 100, acct: str = "") -> ProRataBook:
    b = ProRataBook(SYM)
    for i, q in enumerate(sizes):
        b.submit(f"r{i}", side, price, q, GTC, f"r{i}", acct or f"m{i}")
    return b


def _fills(trades: list[Trade]) -> list[tuple[str, int]]:
    return [(t.maker, t.qty) for t in trades]


def test_allocation_in_proportion_to_size() -> None:
    b = _level(10, 20, 70)
    trades = b.submit("t", BUY, 100, 50, GTC, "op7", "taker")
    assert _fills(trades) == [("r0", 5), ("r1", 10), ("r2", 35)]
    assert [t.trade_id for t in trades] == ["op7/0", "op7/1", "op7/2"]
    assert all(t.price == 100 and t.taker == "t" and t.taker_account == "taker" for t in trades)
    assert b.entries() == [(SELL, 100, "r0", 5, "m0"), (SELL, 100, "r1", 10, "m1"), (SELL, 100, "r2", 35, "m2")]
    # price-time would have filled the oldest order first
    pt = Book(SYM)
    for i, q in enumerate((10, 20, 70)):
        pt.submit(f"r{i}", SELL, 100, q, GTC, f"r{i}", f"m{i}")
    assert _fills(pt.submit("t", BUY, 100, 50, GTC, "op7", "taker")) == [("r0", 10), ("r1", 20), ("r2", 20)]


def test_leftover_lots_go_one_each_in_time_priority() -> None:
    # 3, 3, 4 of 10 hit by 5: floors 1, 1, 2 (4 lots); 1 left over -> the oldest: 2, 1, 2
    assert _fills(_level(3, 3, 4).submit("t", BUY, 100, 5, GTC, "t", "x")) == [("r0", 2), ("r1", 1), ("r2", 2)]
    # 1, 1, 1, 7 hit by 3: floors 0, 0, 0, 2; one left over -> r0 (an order whose floor was 0 still
    # takes a leftover lot in its turn); r1 and r2 trade nothing
    b = _level(1, 1, 1, 7)
    assert _fills(b.submit("t", BUY, 100, 3, GTC, "t", "x")) == [("r0", 1), ("r3", 2)]
    assert [e[2:4] for e in b.entries()] == [("r1", 1), ("r2", 1), ("r3", 5)]
    # 5, 5, 5 hit by 8: floors 2, 2, 2; two left over -> r0, r1: 3, 3, 2
    assert _fills(_level(5, 5, 5).submit("t", BUY, 100, 8, GTC, "t", "x")) == [("r0", 3), ("r1", 3), ("r2", 2)]
    # time priority, not size, picks who gets the leftover: 7, 2 hit by 4 -> floors 3, 0, +1 to r0
    assert _fills(_level(7, 2).submit("t", BUY, 100, 4, GTC, "t", "x")) == [("r0", 4)]


def test_a_size_up_amend_loses_the_leftover_turn() -> None:
    b = _level(3, 3, 4)
    b.amend("r0", 100, 3, "keep")  # same size: keeps priority
    b.amend("r1", 100, 4, "up")  # size up: back of the queue, now 3, 4, 3 in time order r0, r2, r1
    b.amend("r1", 100, 3, "down")  # size down keeps that (new) place
    assert [e[2] for e in b.entries()] == ["r0", "r2", "r1"]
    # 3, 4, 3 (r0, r2, r1) hit by 5: floors 1, 2, 1; 1 left over -> r0
    assert _fills(b.submit("t", BUY, 100, 5, GTC, "t", "x")) == [("r0", 2), ("r2", 2), ("r1", 1)]


def test_levels_are_swept_best_first_and_a_full_level_fills_completely() -> None:
    b = ProRataBook(SYM)
    for oid, price, q in (("a", 100, 2), ("b", 100, 3), ("c", 101, 10), ("d", 101, 30), ("e", 102, 9)):
        b.submit(oid, SELL, price, q, GTC, oid, "m")
    # 5 fill level 100 completely (in time priority), then 20 at 101: 10*20/40 = 5, 30*20/40 = 15
    trades = b.submit("t", BUY, 101, 25, GTC, "t", "x")
    assert [(t.maker, t.price, t.qty) for t in trades] == [("a", 100, 2), ("b", 100, 3), ("c", 101, 5), ("d", 101, 15)]
    assert [e[2:4] for e in b.entries()] == [("c", 5), ("d", 15), ("e", 9)]
    # bids mirror it: a sell sweeps the best (highest) bid level first
    s = ProRataBook(SYM)
    for oid, price, q in (("x", 99, 4), ("y", 100, 1), ("z", 100, 3)):
        s.submit(oid, BUY, price, q, GTC, oid, "m")
    assert [(t.maker, t.price, t.qty) for t in s.submit("t", SELL, 99, 6, GTC, "t", "x")] == [
        ("y", 100, 1), ("z", 100, 3), ("x", 99, 2)]


def test_time_in_force_under_pro_rata() -> None:
    b = _level(10, 20, 70)
    assert b.submit("f", BUY, 100, 101, FOK, "f", "x") == []  # 100 rest: a FOK of 101 trades nothing
    assert [e[3] for e in b.entries()] == [10, 20, 70]
    assert _fills(b.submit("f2", BUY, 100, 10, FOK, "f2", "x")) == [("r0", 1), ("r1", 2), ("r2", 7)]
    trades = b.submit("i", BUY, 101, 100, IOC, "i", "x")  # sweeps what is left, drops the rest
    assert sum(t.qty for t in trades) == 90 and "i" not in b and len(b) == 0
    b = _level(1, 3)
    trades = b.submit("m", BUY, 0, 2, MARKET, "m", "x")
    assert _fills(trades) == [("r0", 1), ("r1", 1)] and "m" not in b  # 0 + 1 leftover, then 1


def test_self_trade_prevention_under_pro_rata() -> None:
    def book() -> ProRataBook:
        b = ProRataBook(SYM)
        b.submit("s0", SELL, 100, 10, GTC, "s0", "b")
        b.submit("own", SELL, 100, 5, GTC, "own", "a")
        b.submit("s1", SELL, 100, 30, GTC, "s1", "c")
        b.submit("far", SELL, 101, 8, GTC, "far", "b")
        return b

    def go(stp: int, qty: int = 20, tif: int = GTC) -> tuple[ProRataBook, list[tuple[str, int]]]:
        b = book()
        return b, _fills(b.submit("t", BUY, 101, qty, tif, "t", "a", stp))

    b, f = go(B.STP_OFF)  # own order shares like any other: 20 of 45 -> 4, 2, 13, +1 leftover to s0
    assert f == [("s0", 5), ("own", 2), ("s1", 13)]
    b, f = go(B.STP_CANCEL_NEWEST)  # the level holds an own order: nothing trades, nothing rests
    assert f == [] and "t" not in b and len(b) == 4
    b, f = go(B.STP_CANCEL_OLDEST)  # own goes, 20 shared over 10 + 30: 5, 15
    assert f == [("s0", 5), ("s1", 15)] and "own" not in b and "t" not in b
    b, f = go(B.STP_CANCEL_BOTH)  # own goes, the taker's remainder is cancelled
    assert f == [] and "own" not in b and "t" not in b and len(b) == 3
    b, f = go(B.STP_DECREMENT)  # 5 off both, the other 15 shared over 10 + 30: 3, 11, +1 to s0
    assert f == [("s0", 4), ("s1", 11)] and "own" not in b
    b, f = go(B.STP_DECREMENT, qty=3)  # own is larger: 3 off it, no trade
    assert f == [] and b.order("own") == (SELL, 100, 2)
    # FOK: a level with an own order counts nothing (cancel-oldest only skips it)
    for stp, fills in ((B.STP_CANCEL_NEWEST, []), (B.STP_DECREMENT, []), (B.STP_CANCEL_BOTH, []),
                       (B.STP_CANCEL_OLDEST, [("s0", 5), ("s1", 15)]), (B.STP_OFF, [("s0", 5), ("own", 2), ("s1", 13)])):
        b, f = go(stp, tif=FOK)
        assert f == fills, B.STP_NAMES[stp]
        if not fills:
            assert len(b) == 4, "a killed FOK changes nothing"


def test_matching_modes_and_instrument_field() -> None:
    assert MATCHING_MODES == {"price-time": PRICE_TIME, "pro-rata": PRO_RATA}
    assert Instrument("X").matching == "price-time"
    i = Instrument("X", matching="pro-rata")
    assert Instrument.from_config(i.to_config()) == i
    with pytest.raises(ValueError, match="matching must be one of price-time, pro-rata, not 'fifo'"):
        Instrument("X", matching="fifo")


# ==== the reference models, both policies ==========================================================
# Budgets are fixed here (not the profile's): these run beside test_book's and test_stp's own, and
# CI's time is shared. Price-time runs in those files; here the same flows run pro-rata.
@settings(max_examples=80)
@given(seq=tb.ops)
def test_pro_rata_book_matches_its_reference_model(seq: list[tuple]) -> None:
    """``test_book``'s differential test (its flows, its checks), pro-rata against ``PlainModel``."""
    book, model = ProRataBook(SYM), PlainModel()
    ids: list[str] = []
    for i, op in enumerate(seq):
        got, want = tb.step([book, model], op, i, ids)
        assert got == want, f"step {i} {op}"
        tb.check_same(book, model, ids)


def test_seeded_pro_rata_sequences_reach_shared_fills() -> None:
    """Fixed seeds through book and model, counting what makes the comparison non-vacuous: fills
    shared over several orders, leftover lots, FOK kills and fills, amends that trade."""
    rng = random.Random(16)
    seen: dict[str, int] = {}
    for _ in range(120):
        book, model, ids = ProRataBook(SYM), PlainModel(), []
        for i, op in enumerate(tb._random_ops(rng)):
            got, want = tb.step([book, model], op, i, ids)
            assert got == want
            trades = got if isinstance(got, list) else []
            prices = [t.price for t in trades]
            if any(prices.count(p) > 1 and any(t.price == p and t.maker in book for t in trades) for p in prices):
                seen["shared_level"] = seen.get("shared_level", 0) + 1  # a level split, some left resting
            if op[0] == "submit" and op[4] == FOK:
                seen["fok_filled" if got else "fok_killed"] = seen.get("fok_filled" if got else "fok_killed", 0) + 1
            if op[0] == "amend" and trades:
                seen["amend_traded"] = seen.get("amend_traded", 0) + 1
        tb.check_same(book, model, ids)
    for key in ("shared_level", "fok_filled", "fok_killed", "amend_traded"):
        assert seen.get(key, 0) > 5, (key, seen)


@settings(max_examples=30)
@pytest.mark.parametrize("mode", list(ts.MODES))
@given(flow=ts.FLOW)
def test_pro_rata_stp_matches_the_reference_model(mode: str, flow: list[tuple]) -> None:
    """``test_stp``'s multi-account differential test, pro-rata, for every STP mode."""
    stp = ts.MODES[mode]
    book, model = ProRataBook(SYM), StpModel()
    trades = ts.run_flow(flow, stp, book, model)
    if stp != B.STP_OFF:
        assert not [t for t in trades if t.maker_account and t.maker_account == t.taker_account]


@settings(max_examples=15)
@pytest.mark.parametrize("mode", list(ts.MODES))
@given(prefix=ts.SHORT, suffix=ts.FLOW)
def test_journaled_pro_rata_mutations_undo_exactly(mode: str, prefix: list[tuple], suffix: list[tuple]) -> None:
    """Every pro-rata mutation (shares taken from the middle of a level, orders leaving from any
    position, STP removals) undoes exactly, newest first, priority order included."""
    stp = ts.MODES[mode]
    book = ProRataBook(SYM)
    ts.run_flow(prefix, stp, book)
    book.journal = []
    marks = []
    ids = [f"o{i}" for i, s in enumerate(prefix) if s[0] == "new"]
    for i, step in enumerate(suffix, start=len(prefix)):
        marks.append((len(book.journal), book.digest(), book.entries(), dict(book._where)))
        oid = f"o{i}"
        if step[0] == "new":
            _, side, price, qty, tif, acct = step
            book.submit(oid, side, 0 if tif == MARKET else price, qty, tif, oid, acct, stp)
            ids.append(oid)
        elif ids and step[0] == "amend":
            book.amend(ids[step[1] % len(ids)], step[2], step[3], oid, stp)
        elif ids:
            book.cancel(ids[step[1] % len(ids)])
    journal = book.journal
    for start, digest, entries, where in reversed(marks):
        book.undo(journal, start)
        assert len(journal) == start
        assert book.digest() == digest and book.entries() == entries and book._where == where


def test_undo_of_a_share_that_empties_an_order_mid_level() -> None:
    """3, 1, 1 hit by 3: floors 1, 0, 0; leftovers to r0 and r1, so r1 leaves from the middle of
    its level while r0 stays: undo must put it back between r0 and r2, not at the front."""
    b = _level(3, 1, 1)
    before = (b.entries(), b.digest(), dict(b._where))
    b.journal = []
    assert _fills(b.submit("t", BUY, 100, 3, GTC, "t", "x")) == [("r0", 2), ("r1", 1)]
    assert [e[2:4] for e in b.entries()] == [("r0", 1), ("r2", 1)]
    b.undo(b.journal)
    assert (b.entries(), b.digest(), dict(b._where)) == before and b.journal == []


@settings(max_examples=30)
@given(tb.ops, tb.ops, st.data())
def test_undo_restores_a_pro_rata_book_exactly(history: list[tuple], after: list[tuple],
                                              data: st.DataObject) -> None:
    """``test_book``'s undo law (its flows queue many orders on one level), pro-rata."""
    book, ids = ProRataBook(SYM), []
    for i, op in enumerate(history):
        tb.step([book], op, i, ids)
    states = [tb._state(book)]
    book.journal = journal = []
    marks = []
    for i, op in enumerate(after):
        marks.append(len(journal))
        tb.step([book], op, len(history) + i, ids)
        states.append(tb._state(book))
    back = data.draw(st.integers(min_value=0, max_value=len(after)))
    for k in range(len(after), len(after) - back, -1):
        book.undo(journal, marks[k - 1])
        assert tb._state(book) == states[k - 1], f"after undoing step {k - 1}"


# ==== the replica: rollback and replay under pro-rata =============================================
PR = Venue.of([Instrument(SYM, matching="pro-rata")])
NODES = ["n1", "n2", "n3"]


def _rep(node: str, venue: Venue = PR) -> Replica:
    return Replica(node, venue, members=NODES + ["r"])


def test_a_late_resting_order_is_replayed_into_the_pro_rata_shares() -> None:
    """A sell stamped before a buy but delivered after it joins the level the buy was shared over:
    the replica rolls back, refolds, and reports every changed fill as revised."""
    n1, n2, n3 = _rep("n1"), _rep("n2"), _rep("n3")
    rest = [n1.submit_new(SYM, SELL, 100, q, GTC, T0 + i, account=f"m{i}")[0] for i, q in enumerate((10, 20, 70))]
    late, _ = n3.submit_new(SYM, SELL, 100, 100, GTC, T0 + 5, account="m3")
    buy, _ = n2.submit_new(SYM, BUY, 100, 50, GTC, T0 + 10, account="t")
    r = _rep("r")
    view: dict[str, Trade] = {}
    for e in r.receive(rest + [buy], LATE):
        if isinstance(e, TradeExecuted):
            view[e.trade.trade_id] = e.trade
    assert sorted((t.maker, t.qty) for t in view.values()) == [(rest[0].op_id, 5), (rest[1].op_id, 10),
                                                                (rest[2].op_id, 35)]
    revised = [e for e in r.receive([late], LATE) if isinstance(e, TradeRevised)]
    assert r.counters["replays"] == 1 and r.counters["replayed_ops"] == 2  # the late op and the buy
    assert revised and r.counters["revised_trades"] == len(revised)
    # 50 of 200: 2.5, 5, 17.5, 25 -> floors 2, 5, 17, 25 (49); the leftover lot to the oldest
    want = [(rest[0].op_id, 3), (rest[1].op_id, 5), (rest[2].op_id, 17), (late.op_id, 25)]
    assert [(t.maker, t.qty) for t in r.trades()] == want
    ref = _rep("ref")
    ref.receive(sorted(rest + [late, buy]), LATE)
    assert r.trades() == ref.trades() and r.digest() == ref.digest()
    # the same ops on a price-time venue trade otherwise: the policy, not the ops, made these fills
    pt = _rep("pt", Venue.of([Instrument(SYM)]))
    pt.receive(sorted(rest + [late, buy]), LATE)
    assert [(t.maker, t.qty) for t in pt.trades()] == [(rest[0].op_id, 10), (rest[1].op_id, 20),
                                                       (rest[2].op_id, 20)]


@st.composite
def pro_rata_history(draw: st.DrawFn) -> list:
    """Ops stamped at three origins of a pro-rata venue: shared levels, every tif, amends, cancels."""
    stp = draw(st.sampled_from(list(ts.MODES)))
    venue = Venue.of([Instrument(SYM, matching="pro-rata", stp=stp)])
    reps = {m: _rep(m, venue) for m in NODES}
    t = T0
    for _ in range(draw(st.integers(5, 30))):
        t += draw(st.sampled_from([0, 1, 3]))
        m = draw(st.sampled_from(NODES))
        r = reps[m]
        kind = draw(st.sampled_from(["new", "new", "new", "amend", "cancel"]))
        acct = draw(st.sampled_from(["a", "b", "c"]))
        mine = [row for row in r.books[SYM].entries()]
        if kind == "new" or not mine:
            r.submit_new(SYM, draw(st.sampled_from([BUY, SELL])), draw(st.integers(100, 102)),
                         draw(st.integers(1, 12)), draw(st.sampled_from([GTC, GTC, GTC, IOC, FOK, MARKET])),
                         t, account=acct)
        else:
            side, price, oid, q, owner = draw(st.sampled_from(mine))
            if kind == "cancel":
                r.submit_cancel(oid, t, account=owner)
            else:
                r.submit_amend(oid, draw(st.integers(100, 102)), draw(st.integers(0, 12)), t, account=owner)
        if draw(st.booleans()):  # gossip a little, so later ops see (and amend) others' orders
            src, dst = draw(st.permutations(NODES))[:2]
            reps[dst].receive(reps[src].ops(), t)
    return venue, sorted({op for r in reps.values() for op in r.ops() if op.origin == r.node_id})


@settings(max_examples=30)
@given(st.data())
def test_pro_rata_fold_is_delivery_order_independent(data: st.DataObject) -> None:
    """Any delivery order of the op-set (rollback and replay through the undo journal) ends in the
    book and trades of the sorted fold: replicas agree under pro-rata."""
    venue, ops = data.draw(pro_rata_history())
    ref = Replica("ref", venue, members=NODES + ["ref"])
    ref.receive(ops, LATE)
    r = Replica("r", venue, members=NODES + ["r"])
    plan = data.draw(st.permutations(ops))
    i = 0
    while i < len(plan):
        k = data.draw(st.integers(1, 4))
        r.receive(plan[i:i + k], LATE)
        i += k
    assert r.digest() == ref.digest()
    assert r.trades() == ref.trades()
    assert r.books[SYM].entries() == ref.books[SYM].entries()


# ==== config ========================================================================================
def test_config_matching_key(tmp_path) -> None:
    """``matching`` in ``[[instruments]]``: parsed, written into client files, and a bad value is one
    ConfigError line naming the file, the instrument and the choices."""
    from gossipbook.config import ConfigError, load, render, render_client, write_private

    text = render(1, 7000)
    assert 'matching = "price-time"' in text  # cluster init shows the knob with its default
    p = tmp_path / "c.toml"
    write_private(p, text.replace('matching = "price-time"', 'matching = "pro-rata"'))
    cfg = load(p)
    assert [i.matching for i in cfg.instruments] == ["pro-rata"]
    assert cfg.venue().instruments["GBX"].matching == "pro-rata"
    client = tmp_path / "alice.toml"
    write_private(client, render_client(cfg, next(iter(cfg.accounts))))
    assert load(client).instruments == cfg.instruments
    for bad in ('"fifo"', "1", '["pro-rata"]'):
        write_private(p, text.replace('matching = "price-time"', f"matching = {bad}"))
        with pytest.raises(ConfigError) as e:
            load(p)
        msg = str(e.value)
        assert "\n" not in msg and str(p) in msg and "instruments[0]: GBX: matching must be one of price-time, pro-rata" in msg
