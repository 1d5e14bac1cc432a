"""The limit order book (``gossipbook.core.book``) against an independent reference model.

The model below is deliberately naive and shares no code with ``Book``: resting orders are a flat
list carrying an arrival number, and every question (best opposite order, what rests, what a FOK
could fill) is answered by sorting or scanning that list from scratch. Random op sequences over a
narrow price range (so orders cross all the time) must give the same trades and the same resting
state from both, after every step.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from hypothesis import example, given, settings
from hypothesis import strategies as st

from gossipbook.core.book import BUY, FOK, GTC, IOC, MARKET, SELL, Book, Depth, Level, Trade

SYM = "GBX"


# --- the reference model ---------------------------------------------------------------------------

@dataclass
class Resting:
    side: int
    price: int
    oid: str
    qty: int
    arrival: int  # larger = later; priority within a price is by this number only


class Model:
    """Price-time priority by brute force."""

    def __init__(self, symbol: str = SYM) -> None:
        self.symbol = symbol
        self.orders: list[Resting] = []
        self.clock = 0

    def _find(self, oid: str) -> Resting | None:
        found = [o for o in self.orders if o.oid == oid]
        assert len(found) <= 1
        return found[0] if found else None

    @staticmethod
    def _priority(o: Resting) -> tuple[int, int]:
        return (-o.price if o.side == BUY else o.price, o.arrival)

    def resting(self) -> list[tuple[int, int, str, int]]:
        bids = sorted((o for o in self.orders if o.side == BUY), key=self._priority)
        asks = sorted((o for o in self.orders if o.side == SELL), key=self._priority)
        return [(o.side, o.price, o.oid, o.qty) for o in bids + asks]

    def depth(self, n: int) -> Depth:
        out: list[list[Level]] = []
        for side in (BUY, SELL):
            prices = sorted({o.price for o in self.orders if o.side == side}, reverse=side == BUY)
            out.append([Level(p, sum(o.qty for o in self.orders if o.side == side and o.price == p),
                              sum(1 for o in self.orders if o.side == side and o.price == p))
                        for p in prices[:n]])
        return Depth(out[0], out[1])

    @staticmethod
    def _crosses(side: int, limit: int, market: bool, maker_price: int) -> bool:
        if market:
            return True
        return maker_price <= limit if side == BUY else maker_price >= limit

    def _makers(self, side: int, limit: int, market: bool) -> list[Resting]:
        opp = [o for o in self.orders if o.side != side and self._crosses(side, limit, market, o.price)]
        return sorted(opp, key=self._priority)

    def _take(self, taker: str, side: int, limit: int, qty: int, market: bool,
              cause: str) -> tuple[list[Trade], int]:
        trades: list[Trade] = []
        while qty > 0:
            makers = self._makers(side, limit, market)
            if not makers:
                break
            m = makers[0]
            fill = min(m.qty, qty)
            trades.append(Trade(f"{cause}/{len(trades)}", self.symbol, m.price, fill, m.oid, taker, side))
            qty -= fill
            m.qty -= fill
            if m.qty == 0:
                self.orders.remove(m)
        return trades, qty

    def _rest(self, oid: str, side: int, price: int, qty: int) -> None:
        self.clock += 1
        self.orders.append(Resting(side, price, oid, qty, self.clock))

    def submit(self, oid: str, side: int, price: int, qty: int, tif: int = GTC,
               cause: str | None = None) -> list[Trade]:
        if self._find(oid) is not None:
            return []
        cause = cause or oid
        market = tif == MARKET
        if tif == FOK and sum(o.qty for o in self._makers(side, price, False)) < qty:
            return []
        trades, left = self._take(oid, side, price, qty, market, cause)
        if left > 0 and tif == GTC:
            self._rest(oid, side, price, left)
        return trades

    def cancel(self, oid: str) -> int:
        o = self._find(oid)
        if o is None:
            return 0
        self.orders.remove(o)
        return o.qty

    def amend(self, oid: str, price: int, qty: int, cause: str) -> list[Trade] | None:
        o = self._find(oid)
        if o is None:
            return None
        if qty <= 0:
            self.orders.remove(o)
            return []
        if price == o.price and qty <= o.qty:
            o.qty = qty  # same arrival number: keeps priority
            return []
        self.orders.remove(o)
        trades, left = self._take(oid, o.side, price, qty, False, cause)
        if left > 0:
            self._rest(oid, o.side, price, left)  # new arrival number: back of the queue
        return trades


# --- op sequences --------------------------------------------------------------------------------

LO, HI = 98, 102  # five price levels: crossing is the common case
prices = st.integers(min_value=LO, max_value=HI)
qtys = st.integers(min_value=1, max_value=8)
sides = st.sampled_from([BUY, SELL])
tifs = st.sampled_from([GTC, GTC, GTC, IOC, FOK, MARKET])
refs = st.integers(min_value=0, max_value=10_000)  # picks a known id (modulo), or an unknown one

_weighted_ops = [
    (3, st.tuples(st.just("rest"), sides, st.integers(min_value=0, max_value=2), qtys)),
    (2, st.tuples(st.just("submit"), sides, prices, qtys, tifs)),
    # an aggressive order, often larger than what rests: partial fills, sweeps, FOK kills
    (3, st.tuples(st.just("submit"), sides, prices, st.integers(min_value=1, max_value=16),
                  st.sampled_from([IOC, FOK, FOK, FOK, MARKET]))),
    (1, st.tuples(st.just("resubmit"), refs, sides, prices, qtys, tifs)),
    (1, st.tuples(st.just("cancel"), refs)),
    (1, st.tuples(st.just("amend"), refs, prices, st.integers(min_value=0, max_value=10))),
    # a live order, a small move: same-price size changes (the priority rules) are common
    (3, st.tuples(st.just("amend_live"), refs, st.sampled_from([0, 0, 0, -1, 1]),
                  st.integers(min_value=-4, max_value=3))),
    (1, st.tuples(st.just("cancel_live"), refs)),
    (3, st.tuples(st.just("join"), refs, qtys)),  # queue up behind a resting order: time priority
]
op = st.one_of(*[s for w, s in _weighted_ops for _ in range(w)])
# long enough that several orders rest at once and priority, partial fills and FOK kills all
# happen (hypothesis' default list sizes are small); shrinking still finds short counterexamples
ops = st.lists(op, min_size=20, max_size=80)


def _pick(ids: list[str], ref: int) -> str:
    # one time in eight, or before any order exists, an id nobody ever used
    if not ids or ref % 8 == 7:
        return f"ghost{ref}"
    return ids[ref % len(ids)]


def step(targets: list, op: tuple, i: int, ids: list[str]) -> list:
    """Apply one op to every target (a Book and a Model both qualify); returns each one's result."""
    kind = op[0]
    if kind == "rest":  # a passive GTC order ``behind`` ticks from the touch: builds queues
        _, side, behind, qty = op
        rows = targets[0].resting()
        opp = [p for s, p, _, _ in rows if s != side]
        if side == BUY:
            price = (min(opp) - 1 if opp else 100) - behind
        else:
            price = (max(opp) + 1 if opp else 100) + behind
        oid = f"o{i}"
        ids.append(oid)
        return [t.submit(oid, side, price, qty, GTC) for t in targets]
    if kind == "submit":
        _, side, price, qty, tif = op
        oid = f"o{i}"
        ids.append(oid)
        return [t.submit(oid, side, price, qty, tif) for t in targets]
    if kind == "resubmit":  # a replayed NEW: a no-op if resting, else trades like a fresh order
        _, ref, side, price, qty, tif = op
        oid = _pick(ids, ref)
        return [t.submit(oid, side, price, qty, tif, cause=f"r{i}") for t in targets]
    if kind in ("amend_live", "cancel_live", "join"):  # about the ref-th resting order, if any
        rows = targets[0].resting()
        if not rows:
            return [t.cancel("ghost") for t in targets]
        side, price, oid, qty = rows[op[1] % len(rows)]
        if kind == "join":
            ids.append(f"o{i}")
            return [t.submit(f"o{i}", side, price, op[2], GTC) for t in targets]
        if kind == "cancel_live":
            return [t.cancel(oid) for t in targets]
        _, _, dprice, dqty = op
        return [t.amend(oid, price + dprice, max(0, qty + dqty), f"a{i}") for t in targets]
    if kind == "cancel":
        oid = _pick(ids, op[1])
        return [t.cancel(oid) for t in targets]
    _, ref, price, qty = op
    oid = _pick(ids, ref)
    return [t.amend(oid, price, qty, f"a{i}") for t in targets]


def check_same(book: Book, model: Model, ids: list[str]) -> None:
    resting = model.resting()
    assert book.resting() == resting
    assert len(book) == len(resting)
    for oid in ids + ["ghost"]:
        m = model._find(oid)
        assert (oid in book) == (m is not None)
        assert book.order(oid) == (None if m is None else (m.side, m.price, m.qty))
    bids = [p for s, p, _, _ in resting if s == BUY]
    asks = [p for s, p, _, _ in resting if s == SELL]
    assert book.best_bid() == (bids[0] if bids else None)
    assert book.best_ask() == (asks[0] if asks else None)
    if bids and asks:
        assert bids[0] < asks[0], "a resting book is never crossed"
    assert all(q > 0 for _, _, _, q in resting)
    assert book.depth(3) == model.depth(3)


def replay(seq: list[tuple]) -> tuple[Book, Model, list[str]]:
    book, model, ids = Book(SYM), Model(), []
    for i, op in enumerate(seq):
        step([book, model], op, i, ids)
    return book, model, ids


# --- differential test ---------------------------------------------------------------------------

@settings(max_examples=2 * settings.default.max_examples)  # the central test: twice the profile's budget
@given(ops)
def test_book_matches_reference_model(seq: list[tuple]) -> None:
    book, model, ids = Book(SYM), Model(), []
    for i, op in enumerate(seq):
        got, want = step([book, model], op, i, ids)
        assert got == want, f"step {i} {op}"
        check_same(book, model, ids)


def test_seeded_sequences_match_model_and_reach_every_branch() -> None:
    """200 fixed-seed sequences through both, counting the branches they reach, so the comparison
    is known not to be vacuous (amends that trade, FOK fills and kills, multi-level sweeps)."""
    rng = random.Random(7)
    seen: dict[str, int] = {}
    for _ in range(200):
        seq = _random_ops(rng)
        book, model, ids = Book(SYM), Model(), []
        for i, op in enumerate(seq):
            got, want = step([book, model], op, i, ids)
            assert got == want
            if op[0] == "amend" and got:
                seen["amend_traded"] = seen.get("amend_traded", 0) + 1
            if op[0] == "submit" and op[4] == FOK:
                key = "fok_filled" if got else "fok_killed"
                seen[key] = seen.get(key, 0) + 1
            if op[0] == "submit" and len({t.price for t in got}) > 1:
                seen["multi_level"] = seen.get("multi_level", 0) + 1
            if op[0] == "amend" and got == [] and op[3] > 0 and model._find(_pick(ids, op[1])):
                seen["amend_in_place_or_rested"] = seen.get("amend_in_place_or_rested", 0) + 1
        check_same(book, model, ids)
    for key in ("amend_traded", "fok_filled", "fok_killed", "multi_level", "amend_in_place_or_rested"):
        assert seen.get(key, 0) > 5, (key, seen)


def _random_ops(rng: random.Random) -> list[tuple]:
    out: list[tuple] = []
    for _ in range(40):
        r = rng.random()
        if r < 0.5:
            out.append(("submit", rng.choice([BUY, SELL]), rng.randint(LO, HI), rng.randint(1, 8),
                        rng.choice([GTC, GTC, GTC, IOC, FOK, MARKET])))
        elif r < 0.65:
            out.append(("cancel", rng.randint(0, 10_000)))
        elif r < 0.7:
            out.append(("resubmit", rng.randint(0, 10_000), rng.choice([BUY, SELL]), rng.randint(LO, HI),
                        rng.randint(1, 8), GTC))
        else:
            out.append(("amend", rng.randint(0, 10_000), rng.randint(LO, HI), rng.randint(0, 10)))
    return out


# --- examples of each rule (readable failures when a rule breaks) ----------------------------------

def test_price_then_time_priority_and_trade_ids() -> None:
    b = Book(SYM)
    b.submit("s1", SELL, 101, 2)
    b.submit("s2", SELL, 100, 3)
    b.submit("s3", SELL, 100, 4)
    trades = b.submit("b1", BUY, 101, 8, cause="op9")
    assert trades == [
        Trade("op9/0", SYM, 100, 3, "s2", "b1", BUY),
        Trade("op9/1", SYM, 100, 4, "s3", "b1", BUY),
        Trade("op9/2", SYM, 101, 1, "s1", "b1", BUY),
    ]
    assert b.resting() == [(SELL, 101, "s1", 1)]
    # numbering restarts at 0 in every call; the cause defaults to the order id
    assert b.submit("b2", BUY, 101, 1) == [Trade("b2/0", SYM, 101, 1, "s1", "b2", BUY)]
    assert len(b) == 0


def test_time_in_force() -> None:
    b = Book(SYM)
    b.submit("s1", SELL, 100, 2)
    b.submit("s2", SELL, 102, 2)
    # IOC: fills what crosses, drops the rest
    assert [t.qty for t in b.submit("i", BUY, 100, 5, IOC)] == [2]
    assert "i" not in b and b.resting() == [(SELL, 102, "s2", 2)]
    # FOK that cannot fill completely trades nothing and does not rest
    assert b.submit("f1", BUY, 102, 3, FOK) == []
    assert b.resting() == [(SELL, 102, "s2", 2)]
    # FOK that exactly can fill
    assert [t.qty for t in b.submit("f2", BUY, 102, 2, FOK)] == [2]
    assert len(b) == 0
    # MARKET ignores its price, sweeps everything, never rests
    b.submit("s3", SELL, 100, 1)
    b.submit("s4", SELL, 102, 1)
    assert [(t.price, t.qty) for t in b.submit("m", BUY, 0, 5, MARKET)] == [(100, 1), (102, 1)]
    assert len(b) == 0
    # SELL side mirrors it
    b.submit("b1", BUY, 99, 2)
    b.submit("b2", BUY, 101, 2)
    assert b.submit("f3", SELL, 100, 3, FOK) == []
    assert [(t.maker, t.qty) for t in b.submit("f4", SELL, 99, 4, FOK)] == [("b2", 2), ("b1", 2)]
    # GTC rests its remainder
    b.submit("s5", SELL, 100, 1)
    assert [t.qty for t in b.submit("g", BUY, 100, 3)] == [1]
    assert b.resting() == [(BUY, 100, "g", 2)]


def test_fok_counts_only_crossing_liquidity() -> None:
    b = Book(SYM)
    b.submit("s1", SELL, 100, 2)
    b.submit("s2", SELL, 103, 10)
    assert b.submit("f", BUY, 102, 3, FOK) == []
    assert b.resting() == [(SELL, 100, "s1", 2), (SELL, 103, "s2", 10)]


def test_amend_priority_rules() -> None:
    def fresh() -> Book:
        b = Book(SYM)
        for oid in ("b1", "b2", "b3"):
            b.submit(oid, BUY, 100, 5)
        return b

    b = fresh()
    assert b.amend("b1", 100, 3, "x") == []  # size down, same price: keeps its place
    assert [r[2] for r in b.resting()] == ["b1", "b2", "b3"]
    assert b.order("b1") == (BUY, 100, 3)
    b = fresh()
    assert b.amend("b1", 100, 6, "x") == []  # size up: back of the queue
    assert [r[2] for r in b.resting()] == ["b2", "b3", "b1"]
    b = fresh()
    b.amend("b1", 99, 5, "x")  # price away and back again: loses priority both times
    b.amend("b1", 100, 5, "y")
    assert [r[2] for r in b.resting()] == ["b2", "b3", "b1"]
    b = fresh()
    assert b.amend("b2", 100, 0, "x") == []  # qty 0 cancels
    assert [r[2] for r in b.resting()] == ["b1", "b3"]
    assert "b2" not in b
    # non-resting orders: a no-op returning None
    assert b.amend("b2", 100, 4, "x") is None
    assert b.amend("nobody", 100, 4, "x") is None
    assert b.cancel("b2") == 0
    assert [r[2] for r in b.resting()] == ["b1", "b3"]


def test_amend_that_crosses_trades_as_taker_with_the_amends_cause() -> None:
    b = Book(SYM)
    b.submit("s1", SELL, 101, 2)
    b.submit("s2", SELL, 102, 2)
    b.submit("b1", BUY, 100, 5)
    trades = b.amend("b1", 102, 5, "n2:7")
    assert trades == [Trade("n2:7/0", SYM, 101, 2, "s1", "b1", BUY),
                      Trade("n2:7/1", SYM, 102, 2, "s2", "b1", BUY)]
    assert b.resting() == [(BUY, 102, "b1", 1)]
    # an amend that fully fills leaves nothing resting
    b.submit("s3", SELL, 103, 1)
    assert [t.qty for t in b.amend("s3", 102, 1, "c")] == [1]
    assert len(b) == 0


def test_cancel_returns_remaining_and_removes_level() -> None:
    b = Book(SYM)
    b.submit("s1", SELL, 100, 5)
    b.submit("b1", BUY, 100, 2)
    assert b.cancel("s1") == 3
    assert b.cancel("s1") == 0
    assert b.best_ask() is None
    assert b.depth() == Depth([], [])


def test_replayed_new_for_a_live_order_changes_nothing() -> None:
    b = Book(SYM)
    b.submit("s1", SELL, 100, 5)
    before = b.digest()
    assert b.submit("s1", SELL, 100, 5) == []
    assert b.submit("s1", BUY, 200, 9, MARKET) == []
    assert b.digest() == before


# --- depth -------------------------------------------------------------------------------------

@given(ops, st.integers(min_value=0, max_value=7))
def test_depth_aggregates_levels(seq: list[tuple], n: int) -> None:
    book, model, _ = replay(seq)
    d = book.depth(n)
    assert d == model.depth(n)
    # and directly from the resting list, independently of the model's depth()
    for levels, side in ((d.bids, BUY), (d.asks, SELL)):
        rows = [r for r in book.resting() if r[0] == side]
        assert len(levels) == min(n, len({r[1] for r in rows}))
        for lvl in levels:
            at = [r for r in rows if r[1] == lvl.price]
            assert lvl.qty == sum(r[3] for r in at) and lvl.orders == len(at) > 0
        ps = [lvl.price for lvl in levels]
        assert ps == sorted(ps, reverse=side == BUY)


def test_depth_example() -> None:
    b = Book(SYM)
    b.submit("b1", BUY, 99, 2)
    b.submit("b2", BUY, 99, 3)
    b.submit("b3", BUY, 97, 1)
    b.submit("b4", BUY, 98, 4)
    b.submit("s1", SELL, 101, 7)
    assert b.depth(2) == Depth([Level(99, 5, 2), Level(98, 4, 1)], [Level(101, 7, 1)])
    assert b.depth() == Depth([Level(99, 5, 2), Level(98, 4, 1), Level(97, 1, 1)], [Level(101, 7, 1)])
    assert b.depth(0) == Depth([], [])


# --- digest --------------------------------------------------------------------------------------

# a resting state with no crossing: bids at or below BOOK_MID, asks above it, in priority order
BOOK_MID = 100
state_orders = st.lists(
    st.tuples(sides, st.integers(min_value=0, max_value=3), st.integers(min_value=1, max_value=9)),
    max_size=12,
)


def target_state(spec: list[tuple[int, int, int]]) -> list[tuple[int, int, str, int]]:
    """Spec rows (side, distance from the mid, qty) -> resting rows in the order they arrive."""
    return [(side, BOOK_MID - d if side == BUY else BOOK_MID + 1 + d, f"t{i}", q)
            for i, (side, d, q) in enumerate(spec)]


def priority_order(rows: list[tuple[int, int, str, int]]) -> list[tuple[int, int, str, int]]:
    bids = sorted((r for r in rows if r[0] == BUY), key=lambda r: -r[1])  # stable: arrival order kept
    asks = sorted((r for r in rows if r[0] == SELL), key=lambda r: r[1])
    return bids + asks


@given(state_orders, ops, st.randoms(use_true_random=False), st.lists(qtys, min_size=12, max_size=12))
def test_digest_is_history_independent(spec: list, noise: list[tuple], rng: random.Random,
                                       extra: list[int]) -> None:
    rows = target_state(spec)
    direct = Book(SYM)
    for side, price, oid, q in rows:
        direct.submit(oid, side, price, q)
    assert direct.resting() == priority_order(rows)

    # another history: random trading first, everything left cancelled (empty levels must leave
    # no trace); then the same orders in another interleaving that keeps each level's arrival
    # order, each entered larger and sized down (which keeps priority), with orders that come
    # and go in between
    other, _, _ = replay(noise)
    for _, _, oid, _ in other.resting():
        other.cancel(oid)
    assert len(other) == 0
    by_level: dict[tuple[int, int], list[tuple[int, int, str, int]]] = {}
    for r in rows:
        by_level.setdefault(r[:2], []).append(r)
    slots = [r[:2] for r in rows]
    rng.shuffle(slots)
    for k, (side, price) in enumerate(slots):
        _, _, oid, q = by_level[(side, price)].pop(0)
        other.submit(oid, side, price, q + extra[k])
        other.submit(f"tmp{k}", side, price, 1)
        assert other.amend(oid, price, q, f"am{k}") == []
        if k % 2:
            other.cancel(f"tmp{k}")
        else:
            other.amend(f"tmp{k}", price, 0, f"am0{k}")
    assert other.resting() == direct.resting()
    assert other.digest() == direct.digest()
    assert other.depth(10) == direct.depth(10)


@given(ops, ops)
def test_digest_tells_different_states_apart(a: list[tuple], b: list[tuple]) -> None:
    ba, _, _ = replay(a)
    bb, _, _ = replay(b)
    assert (ba.digest() == bb.digest()) == (ba.resting() == bb.resting())
    assert len(ba.digest()) == 16


def test_digest_sees_each_field() -> None:
    def book(*rows: tuple[int, int, str, int], symbol: str = SYM) -> Book:
        b = Book(symbol)
        for side, price, oid, q in rows:
            b.submit(oid, side, price, q)
        return b

    base = book((BUY, 100, "a", 2), (BUY, 100, "b", 3)).digest()
    assert book((BUY, 100, "a", 2), (BUY, 100, "b", 3)).digest() == base
    assert book((BUY, 100, "b", 3), (BUY, 100, "a", 2)).digest() != base  # priority
    assert book((BUY, 100, "a", 2), (BUY, 100, "b", 4)).digest() != base  # qty
    assert book((BUY, 100, "a", 2), (BUY, 99, "b", 3)).digest() != base  # price
    assert book((BUY, 100, "a", 2), (SELL, 101, "b", 3)).digest() != base  # side
    assert book((BUY, 100, "a", 2), (BUY, 100, "c", 3)).digest() != base  # id
    assert book((BUY, 100, "a", 2), (BUY, 100, "b", 3), symbol="XYZ").digest() != base  # symbol
    assert Book(SYM).digest() != Book("XYZ").digest()


id_text = st.text(alphabet="ab,|:0123456789-", min_size=1, max_size=8)


@given(st.lists(st.tuples(id_text, st.integers(1, 3)), max_size=4, unique_by=lambda r: r[0]),
       st.lists(st.tuples(id_text, st.integers(1, 3)), max_size=4, unique_by=lambda r: r[0]),
       st.sampled_from(["", "G", "G|1,1,a,1"]), st.sampled_from(["", "G", "G|1,1,a,1"]))
@example([("a", 2), ("b", 3)], [("a,2|1,1,b", 3)], "G", "G")
@example([], [("a", 1)], "G|1,1,a,1", "G")
def test_digest_is_unambiguous_for_any_ids(a: list, b: list, sym_a: str, sym_b: str) -> None:
    """Ids and symbols are caller data and may contain the digest's own separators; two different
    states must still hash differently (no field may bleed into the next)."""
    ba, bb = Book(sym_a), Book(sym_b)
    for oid, q in a:
        ba.submit(oid, SELL, 1, q)
    for oid, q in b:
        bb.submit(oid, SELL, 1, q)
    same = sym_a == sym_b and ba.resting() == bb.resting()
    assert (ba.digest() == bb.digest()) == same


def test_digest_separator_collision_example() -> None:
    two = Book(SYM)
    two.submit("a", SELL, 1, 2)
    two.submit("b", SELL, 1, 3)
    one = Book(SYM)
    one.submit("a,2|1,1,b", SELL, 1, 3)
    assert one.resting() != two.resting()
    assert one.digest() != two.digest()


# --- clone -------------------------------------------------------------------------------------

@given(ops, ops)
def test_clone_is_independent(history: list[tuple], after: list[tuple]) -> None:
    book, model, ids = replay(history)
    copy = book.clone()
    assert copy.resting() == book.resting() and copy.digest() == book.digest()
    assert copy.symbol == book.symbol
    frozen = (book.resting(), book.digest(), book.depth(10), len(book))

    # mutate the clone (against a model copy of the same state): the original must not move
    model2 = Model()
    model2.orders = [Resting(o.side, o.price, o.oid, o.qty, o.arrival) for o in model.orders]
    model2.clock = model.clock
    ids2 = list(ids)
    for i, op in enumerate(after):
        got, want = step([copy, model2], op, len(history) + i, ids2)
        assert got == want
    for oid in ids2:  # and empty it completely
        copy.cancel(oid)
    assert (book.resting(), book.digest(), book.depth(10), len(book)) == frozen
    check_same(book, model, ids)

    # and the other way round: mutating the original leaves a fresh clone untouched
    copy = book.clone()
    for i, op in enumerate(after):
        step([book], op, len(history) + i, list(ids))
    assert copy.resting() == frozen[0] and copy.digest() == frozen[1]


# --- undo journal ------------------------------------------------------------------------------

def _state(book: Book) -> tuple:
    """Everything observable, priority order and the internal order index included."""
    return (book.resting(), book.digest(), book.depth(10), len(book), dict(book._where))


@given(ops, ops, st.data())
def test_undo_restores_the_book_exactly(history: list[tuple], after: list[tuple], data: st.DataObject) -> None:
    """Undoing the journal of the last calls, newest first, gives back every earlier state, priority
    within each level included; and the book then keeps matching the model."""
    book, model, ids = replay(history)
    states = [_state(book)]
    book.journal = journal = []
    marks = []  # where each step's records start
    for i, op in enumerate(after):
        marks.append(len(journal))
        step([book], op, len(history) + i, ids)
        states.append(_state(book))
    back = data.draw(st.integers(min_value=0, max_value=len(after)))
    for k in range(len(after), len(after) - back, -1):
        book.undo(journal, marks[k - 1])
        assert len(journal) == marks[k - 1]
        assert _state(book) == states[k - 1], f"after undoing step {k - 1}"
    book.journal = None
    # the restored book behaves as the original did: replay the undone steps against the model
    kept = after[:len(after) - back]
    _, model, mids = replay(history + kept)
    for i, op in enumerate(after[len(after) - back:]):
        got, want = step([book, model], op, len(history) + len(kept) + i, mids)
        assert got == want
        check_same(book, model, mids)
