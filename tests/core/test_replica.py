"""Property tests of the op-set CRDT replica (DESIGN.md, "The CRDT").

The histories are real: a few origin replicas stamp NEW / CANCEL / AMEND ops at their own (slightly
skewed, often equal) physical clocks and deliver random subsets of what they hold to each other, so
cancels and amends name orders their origin held and HLC causality is the one the replica produces.
Every origin records, after every step, an honest finality announcement ``(hlc.last, own seq)`` and
its version vector, which the finality and compaction tests replay in any order.

The oracle for "the fold" is ``model_fold`` below: a plain ``Book`` fed the ops sorted by
``(wall, logical, origin)`` with the duplicate-request rule, written from DESIGN.md and independent
of the replica's rollback, checkpoint and snapshot machinery.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from gossipbook.core import (
    AMEND,
    BUY,
    CANCEL,
    FOK,
    GTC,
    IOC,
    MARKET,
    NEW,
    SELL,
    Book,
    Op,
    OpFenced,
    Replica,
    Timestamp,
    Trade,
    TradeExecuted,
    TradeRevised,
)
from gossipbook.core.hlc import DEFAULT_MAX_OFFSET_NS

SYM = "GBX"
T0 = 1_000_000_000_000  # 1000 s: physical time where every history starts
LATE = 10**15  # a receiver "now" far past every history: nothing is held back by the clock
PRICES = st.integers(100, 103)  # a narrow band so orders cross and queue at shared levels
REQS = st.sampled_from(["", "", "", "", "req-a", "req-b"])
TIFS = st.sampled_from([GTC, GTC, GTC, GTC, IOC, FOK, MARKET])


# ==== the oracle ====================================================================================
def op_key(op: Op) -> tuple[int, int, str]:
    return (op.wall, op.logical, op.origin)


def model_fold(ops: Iterable[Op]) -> tuple[list[tuple[int, int, str, int]], list[Trade]]:
    """The book and trades the DESIGN says the op-set denotes: fold in ``(wall, logical, origin)``."""
    order = sorted(set(ops), key=op_key)
    first_req: dict[str, str] = {}
    for op in order:
        if op.kind == NEW and op.req:
            first_req.setdefault(op.req, op.op_id)
    book = Book(SYM)
    trades: list[Trade] = []
    for op in order:
        if op.kind == NEW:
            if op.req and first_req[op.req] != op.op_id:
                continue
            trades += book.submit(op.op_id, op.side, op.price, op.qty, op.tif, op.op_id)
        elif op.kind == CANCEL:
            book.cancel(op.order_id)
        else:
            assert op.kind == AMEND
            trades += book.amend(op.order_id, op.price, op.qty, op.op_id) or []
    return book.resting(), trades


# ==== histories =====================================================================================
@dataclass
class History:
    names: list[str]
    ops: list[Op]  # every op stamped, in fold order
    # honest (member, hlc.last, own max seq) and (member, version vector it held), after every step;
    # left out of the printed example, which stays readable
    announcements: list[tuple[str, Timestamp, int]] = field(repr=False)
    vvs: list[tuple[str, dict[str, int]]] = field(repr=False)
    end: int  # physical time after the last step

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:  # how hypothesis prints a failing example
        p.text(f"History(names={self.names!r}, ops={self.ops!r}, end={self.end})")

    def latest_announcements(self) -> dict[str, tuple[Timestamp, int]]:
        out: dict[str, tuple[Timestamp, int]] = {}
        for m, ts, seq in self.announcements:
            out[m] = (ts, seq)
        return out

    def latest_vvs(self) -> dict[str, dict[str, int]]:
        return {m: vv for m, vv in self.vvs}


#: the origins the tests stamp ops at: a replica refuses ops of origins that are not members
ORIGINS = ("n1", "n2", "n3", "n4")


def fresh(node: str = "r", names: Sequence[str] = (), **kw: object) -> Replica:
    """A replica of ``names`` (default: every origin the tests use, so none of their ops is
    refused as a non-member's)."""
    return Replica(node, members=list(names or ORIGINS) + [node], **kw)


def reference(ops: Iterable[Op], names: Sequence[str] = ()) -> Replica:
    """A replica that got the whole op-set at once, in fold order."""
    r = fresh("ref", names)
    r.receive(sorted(ops), LATE)
    return r


def stamp_step(draw: st.DrawFn, reps: dict[str, Replica], now: dict[str, int], m: str, kind: str) -> None:
    """One client action at origin ``m`` (a no-op when a cancel/amend has nothing open to name)."""
    r = reps[m]
    if kind == "new":
        tif = draw(TIFS)
        r.submit_new(SYM, draw(st.sampled_from([BUY, SELL])), draw(PRICES), draw(st.integers(1, 4)), tif,
                     now[m], req=draw(REQS))
        return
    resting = r.books[SYM].resting()
    if not resting:
        return
    oid = draw(st.sampled_from([row[2] for row in resting]))
    if kind == "cancel":
        r.submit_cancel(oid, now[m])
    else:
        r.submit_amend(oid, draw(PRICES), draw(st.integers(0, 5)), now[m])


@st.composite
def histories(draw: st.DrawFn, min_origins: int = 2, max_origins: int = 4, max_steps: int = 30) -> History:
    n = draw(st.integers(min_origins, max_origins))
    names = [f"n{i}" for i in range(1, n + 1)]
    reps = {m: Replica(m, members=names) for m in names}
    # small skews (well inside max_offset) and a coarse clock, so equal (wall, logical) stamps from
    # different origins are common and the origin tie-break decides real matches
    skew = {m: draw(st.sampled_from([0, 0, 0, 7, -7])) for m in names}
    t = T0
    announcements: list[tuple[str, Timestamp, int]] = []
    vvs: list[tuple[str, dict[str, int]]] = []

    def record() -> None:
        for m, r in reps.items():
            announcements.append((m, r.hlc.last, r.vv.get(m, 0)))
            vvs.append((m, r.version_vector()))

    for _ in range(draw(st.integers(1, max_steps))):
        now = {m: t + skew[m] for m in names}
        action = draw(st.sampled_from(["new", "new", "new", "cancel", "amend", "deliver", "deliver", "time"]))
        if action == "time":
            t += draw(st.sampled_from([1, 10, 1000]))
        elif action == "deliver":
            src, dst = draw(st.permutations(names))[:2]
            held = reps[src].ops()
            mask = draw(st.lists(st.booleans(), min_size=len(held), max_size=len(held)))
            reps[dst].receive([op for op, keep in zip(held, mask, strict=True) if keep], now[dst])
        else:
            stamp_step(draw, reps, now, draw(st.sampled_from(names)), action)
        record()
    if draw(st.booleans()):  # sometimes everyone catches up at the end (more to finalize and compact)
        everything = [op for r in reps.values() for op in r.ops()]
        for m, r in reps.items():
            r.receive(everything, t + skew[m])
        record()
    ops = sorted({op for r in reps.values() for op in r.ops() if op.origin == r.node_id})
    return History(names, ops, announcements, vvs, t + 1000)


def batches(draw: st.DrawFn, ops: Sequence[Op], dup: bool = True) -> list[list[Op]]:
    """A delivery plan: any permutation, some ops duplicated, split into batches."""
    plan = list(draw(st.permutations(list(ops))))
    if dup and plan:
        extra = draw(st.lists(st.sampled_from(plan), max_size=len(plan)))
        for op in extra:
            plan.insert(draw(st.integers(0, len(plan))), op)
    out: list[list[Op]] = []
    i = 0
    while i < len(plan):
        k = draw(st.integers(1, max(1, min(6, len(plan) - i))))
        out.append(plan[i:i + k])
        i += k
    return out


def track(view: dict[str, Trade], events: Iterable[object]) -> None:
    """A client's view of trades, kept from events only; each event must make sense against it."""
    for e in events:
        if isinstance(e, TradeExecuted):
            assert e.trade.trade_id not in view, f"trade reported twice: {e.trade}"
            view[e.trade.trade_id] = e.trade
        elif isinstance(e, TradeRevised):
            assert view.get(e.old.trade_id) == e.old, f"revision of a trade never reported: {e.old}"
            del view[e.old.trade_id]
            if e.new is not None:
                assert e.new.trade_id not in view
                view[e.new.trade_id] = e.new


def per_origin_prefix(ops: Sequence[Op], cut: dict[str, int]) -> list[Op]:
    return [op for op in ops if op.seq <= cut.get(op.origin, 0)]


@st.composite
def history_and_cuts(draw: st.DrawFn, k: int) -> tuple[History, list[list[Op]]]:
    """A history and ``k`` op subsets, each closed under seq (what a replica can hold: a vv)."""
    h = draw(histories())
    top = {m: max((op.seq for op in h.ops if op.origin == m), default=0) for m in h.names}
    cuts = [{m: draw(st.integers(0, top[m])) for m in h.names} for _ in range(k)]
    return h, [per_origin_prefix(h.ops, c) for c in cuts]


# ==== the fold itself ===============================================================================
@given(histories())
def test_sorted_fold_matches_the_model(h: History) -> None:
    r = reference(h.ops)
    resting, trades = model_fold(h.ops)
    assert r.books[SYM].resting() == resting
    assert r.trades() == trades
    assert r.ops() == sorted(h.ops, key=op_key)
    assert r.version_vector() == {m: max(op.seq for op in h.ops if op.origin == m)
                                  for m in {op.origin for op in h.ops}}
    assert r.counters["invalid_ops"] == 0
    event(f"trades>0: {bool(trades)}")


# ==== CRDT laws =====================================================================================
@given(st.data())
def test_any_order_duplication_or_batching_converges(data: st.DataObject) -> None:
    h = data.draw(histories())
    ref = reference(h.ops)
    r = fresh()
    delivered = 0
    for batch in batches(data.draw, h.ops):
        r.receive(batch, LATE)
        delivered += len(batch)
    assert r.digest() == ref.digest()
    assert r.trades() == ref.trades()
    assert r.version_vector() == ref.version_vector()
    assert r.books[SYM].resting() == ref.books[SYM].resting()
    # every op was applied exactly once; no extra copy was mistaken for a broken (invalid) op
    assert r.counters["ops_applied"] == len(h.ops)
    assert r.counters["duplicates"] <= delivered - len(h.ops)
    assert r.counters["invalid_ops"] == 0


def merged(*parts: Replica) -> Replica:
    """Merge as the protocol does it: a replica receives each other's ops."""
    out = fresh("m")
    for p in parts:
        out.receive(p.ops(), LATE)
    return out


@given(history_and_cuts(3), st.randoms(use_true_random=False))
def test_merge_is_commutative_associative_idempotent(hc: tuple[History, list[list[Op]]], rnd) -> None:
    h, subsets = hc
    reps = []
    for s in subsets:
        r = fresh("s")
        shuffled = list(s)
        rnd.shuffle(shuffled)
        r.receive(shuffled, LATE)
        assert r.digest() == reference(s).digest()
        reps.append(r)
    a, b, c = reps
    assert merged(a, b).digest() == merged(b, a).digest()
    assert merged(merged(a, b), c).digest() == merged(a, merged(b, c)).digest()
    union = merged(a, b, c)
    assert union.digest() == reference(set(subsets[0]) | set(subsets[1]) | set(subsets[2])).digest()
    assert union.version_vector() == {
        o: s for o in h.names if (s := max(a.vv.get(o, 0), b.vv.get(o, 0), c.vv.get(o, 0)))}
    # idempotent: merging a replica with itself, or with what it already merged, changes nothing
    before = (a.digest(), a.version_vector(), a.trades())
    dups = a.counters["duplicates"]
    assert a.receive(a.ops(), LATE) == []
    assert (a.digest(), a.version_vector(), a.trades()) == before
    assert a.counters["duplicates"] == dups + len(a.ops())
    ab = merged(a, b)
    once = (ab.digest(), ab.version_vector(), ab.trades())
    assert ab.receive(b.ops(), LATE) == [] and ab.receive(a.ops(), LATE) == []
    assert (ab.digest(), ab.version_vector(), ab.trades()) == once
    assert ab.counters["invalid_ops"] == 0


# ==== rollback and replay ===========================================================================
@given(st.data())
def test_reported_events_reconcile_to_the_final_trades(data: st.DataObject) -> None:
    h = data.draw(histories())
    r = fresh(checkpoint_interval=data.draw(st.sampled_from([1, 3, 64])))
    view: dict[str, Trade] = {}
    for batch in batches(data.draw, h.ops):
        track(view, r.receive(batch, LATE))
        assert view == {t.trade_id: t for t in r.trades()}
    assert r.trades() == reference(h.ops).trades()
    event(f"replays>0: {r.counters['replays'] > 0}")


def test_a_late_op_is_replayed_and_the_trade_revised() -> None:
    """A concrete rollback: a late, earlier sell takes the fill a later sell was first given."""
    n1, n2, n3 = fresh("n1"), fresh("n2"), fresh("n3")
    buy, _ = n1.submit_new(SYM, BUY, 100, 1, GTC, T0)
    early, _ = n2.submit_new(SYM, SELL, 100, 1, GTC, T0 + 1)
    late, _ = n3.submit_new(SYM, SELL, 100, 1, GTC, T0 + 2)
    r = fresh()
    view: dict[str, Trade] = {}
    track(view, r.receive([buy, late], LATE))
    assert [t.taker for t in view.values()] == [late.op_id]
    ev = r.receive([early], LATE)
    track(view, ev)
    assert any(isinstance(e, TradeRevised) and e.new is None and e.old.taker == late.op_id for e in ev)
    assert [t.taker for t in view.values()] == [early.op_id]
    assert r.trades() == list(view.values()) == reference([buy, early, late]).trades()
    assert r.books[SYM].order(late.op_id) == (SELL, 100, 1)


def test_a_late_op_under_a_big_book_rolls_back_only_the_ops_above_it() -> None:
    """Rollback undoes the journaled ops above the late op instead of restarting from a checkpoint
    (spaced by the book's size): the replay costs the disorder, not the book. And the journal of
    final ops is dropped, so a late op below them (a broken promise) replays from a checkpoint."""
    n1, n2 = fresh("n1"), fresh("n2")
    rest = [n1.submit_new(SYM, BUY if i % 2 else SELL, 90 if i % 2 else 110, 1, GTC, T0 + 10 * i)[0]
            for i in range(300)]  # 300 resting orders: checkpoints 300 ops apart
    late, _ = n2.submit_new(SYM, SELL, 90, 2, GTC, T0 + 10 * 295 + 5)  # below the last 4 ops; it trades
    r = fresh("r", ["n1", "n2", "n3"])
    r.receive(rest, LATE)
    view: dict[str, Trade] = {}
    track(view, r.receive([late], LATE))
    assert r.counters["replays"] == 1 and r.counters["replayed_ops"] == 5  # the 4 ops and itself
    want = reference(rest + [late])
    assert r.trades() == want.trades() == list(view.values())
    assert r.digest() == want.digest()
    # everything up to n1's op 200 becomes final: their journal goes; a late op below them replays
    r.observe("n1", Timestamp(rest[199].wall, rest[199].logical), 200, LATE)
    r.observe("n2", Timestamp(rest[199].wall, 0), 1, LATE)
    r.observe("n3", Timestamp(rest[199].wall, 0), 0, LATE)  # n3 promises nothing below, then breaks it
    assert r.final_count() == 200
    early, _ = Replica("n3").submit_new(SYM, BUY, 110, 1, GTC, T0 + 10 * 100 + 5)
    track(view, r.receive([early], LATE))
    want = reference(rest + [late, early])
    assert r.trades() == want.trades()
    assert view == {t.trade_id: t for t in want.trades()}
    assert r.digest() == want.digest()
    assert r.counters["finality_violations"] == 1 and r.counters["replayed_ops"] > 5 + 200


# ==== gaps ==========================================================================================
@given(st.data())
def test_an_op_after_a_seq_gap_waits_until_the_gap_fills(data: st.DataObject) -> None:
    h = data.draw(histories())
    r = fresh()
    got: set[Op] = set()
    for op in data.draw(st.permutations(h.ops)):
        r.receive([op], LATE)
        got.add(op)
        contiguous: dict[str, int] = {}
        for m in h.names:
            s = 0
            while any(o.origin == m and o.seq == s + 1 for o in got):
                s += 1
            if s:
                contiguous[m] = s
        assert r.version_vector() == contiguous
        held = per_origin_prefix(h.ops, contiguous)
        assert r.ops() == sorted(held, key=op_key)
        assert r.holds(op.origin, op.seq) == (op.seq <= contiguous.get(op.origin, 0))
        assert r.digest() == reference(held).digest()


def test_gap_example() -> None:
    n1 = fresh("n1")
    a, _ = n1.submit_new(SYM, SELL, 100, 1, GTC, T0)
    b, _ = n1.submit_new(SYM, BUY, 100, 1, GTC, T0 + 1)
    r = fresh()
    assert r.receive([b], LATE) == []
    assert r.version_vector() == {} and not r.holds("n1", 2) and r.ops() == []
    ev = r.receive([a], LATE)
    assert r.version_vector() == {"n1": 2} and r.ops() == [a, b]
    assert [type(e) for e in ev] == [TradeExecuted]


# ==== clock hold-back ===============================================================================
MAX_OFF = DEFAULT_MAX_OFFSET_NS


@st.composite
def skewed_history(draw: st.DrawFn) -> list[Op]:
    """n1 stamps at an honest clock; n2's physical clock sometimes jumps far ahead (seconds)."""
    n1, n2 = fresh("n1"), fresh("n2")
    ops: list[Op] = []
    for _ in range(draw(st.integers(1, 12))):
        m = draw(st.sampled_from([n1, n2]))
        if m is n1:
            pt = T0 + draw(st.integers(0, 1000))
        else:
            pt = T0 + draw(st.sampled_from([0, 10, MAX_OFF // 2, MAX_OFF + 1, 2 * MAX_OFF, 5 * MAX_OFF]))
        op, _ = m.submit_new(SYM, draw(st.sampled_from([BUY, SELL])), draw(PRICES), 1, GTC, pt)
        ops.append(op)
    return ops


def expected_held(delivered: Iterable[Op], limit: int) -> list[Op]:
    """Per origin the longest seq prefix of what was delivered whose walls are within ``limit``."""
    by = {(op.origin, op.seq): op for op in delivered}
    out: list[Op] = []
    for origin in {o for o, _ in by}:
        s = 1
        while (op := by.get((origin, s))) is not None and op.wall <= limit:
            out.append(op)
            s += 1
    return sorted(out, key=op_key)


@given(st.data())
def test_ops_beyond_the_clock_bound_are_held_back_until_tick(data: st.DataObject) -> None:
    ops = data.draw(skewed_history())
    r = fresh()
    now = T0 + 1000
    limit = now + MAX_OFF
    got: list[Op] = []
    for batch in batches(data.draw, ops):
        r.receive(batch, now)
        got += batch
        assert r.ops() == expected_held(got, limit)
        assert r.hlc.last.wall <= limit, "the HLC adopted a timestamp beyond now + max_offset"
    for later in sorted({op.wall - MAX_OFF for op in ops if op.wall > limit}):
        r.tick(later - 1)  # one ns short: still held
        assert r.ops() == expected_held(ops, later - 1 + MAX_OFF)
        assert r.hlc.last.wall <= later - 1 + MAX_OFF
        r.tick(later)
        assert r.ops() == expected_held(ops, later + MAX_OFF)
    assert r.digest() == reference(ops).digest()
    assert r.version_vector() == reference(ops).version_vector()
    assert not r._pending  # white-box: nothing admitted is still waiting


def test_hold_back_example() -> None:
    n2 = fresh("n2")
    a, _ = n2.submit_new(SYM, SELL, 100, 1, GTC, T0)
    b, _ = n2.submit_new(SYM, BUY, 100, 1, GTC, T0 + 3 * MAX_OFF)  # n2's clock jumped ahead
    r = fresh()
    assert r.receive([b], T0) == []
    assert r.version_vector() == {} and r.counters["held_back_clock"] == 1
    r.receive([a], T0)  # fills the gap, but b is still too far ahead: it must keep waiting
    assert r.version_vector() == {"n2": 1}
    assert r.hlc.last == Timestamp(a.wall, a.logical)
    assert r.tick(T0 + MAX_OFF) == [] and r.version_vector() == {"n2": 1}
    ev = r.tick(T0 + 2 * MAX_OFF)
    assert r.version_vector() == {"n2": 2} and [type(e) for e in ev] == [TradeExecuted]
    assert r.hlc.last == Timestamp(b.wall, b.logical)
    assert not r._pending  # white-box: an op admitted by tick leaves the waiting room


# ==== finality ======================================================================================
@given(st.data())
def test_final_trades_are_never_revised(data: st.DataObject) -> None:
    h = data.draw(histories())
    r = fresh("r", h.names)
    now = h.end + MAX_OFF  # every announcement is within the clock bound
    final: dict[str, Trade] = {}
    wm = r.watermark()
    anns = list(h.announcements)
    for batch in batches(data.draw, h.ops, dup=False):
        for m, ts, seq in data.draw(st.lists(st.sampled_from(anns), max_size=4)):
            r.observe(m, ts, seq, now)
        for e in r.receive(batch, now):
            if isinstance(e, TradeRevised):
                assert e.old.trade_id not in final, f"final trade revised: {e}"
        assert r.watermark() >= wm, "the watermark went backwards"
        wm = r.watermark()
        for t in r.trades()[:r.trades_final()]:
            final.setdefault(t.trade_id, t)
        trades = {t.trade_id: t for t in r.trades()}
        assert all(trades.get(tid) == t for tid, t in final.items())
        assert all(r.is_final(op) for op in r.ops()[:r.final_count()])
    for m, (ts, seq) in h.latest_announcements().items():
        r.observe(m, ts, seq, now)
    assert r.counters["finality_violations"] == 0
    assert r.trades() == reference(h.ops).trades()
    event(f"final trades: {min(len(final), 3)}")


def test_finality_example() -> None:
    """A trade below every member's announced bound is final; an op above it may still arrive."""
    names = ["n1", "n2"]
    n1, n2 = Replica("n1", members=names), Replica("n2", members=names)
    s, _ = n1.submit_new(SYM, SELL, 100, 2, GTC, T0)
    n2.receive([s], T0)
    b, _ = n2.submit_new(SYM, BUY, 100, 1, GTC, T0 + 1)
    later, _ = n1.submit_new(SYM, BUY, 100, 1, GTC, T0 + 2)
    r = fresh("r", names)
    r.receive([s, b], T0 + 5)
    assert r.trades_final() == 0  # nobody announced yet
    r.observe("n1", Timestamp(T0 + 2, 0), 2, T0 + 5)  # n1 stamped `later` already: not yet held
    r.observe("n2", n2.hlc.last, 1, T0 + 5)
    assert r.watermark() < Timestamp(b.wall, b.logical) and r.trades_final() == 0
    r.receive([later], T0 + 5)
    assert r.watermark() >= Timestamp(b.wall, b.logical) and r.trades_final() == 1
    assert r.is_final(b) and not r.is_final(Op(T0 + 10, 0, "n1", 3, NEW, SYM, "", BUY, 1, 1, GTC, ""))


def test_a_newer_announcement_not_yet_usable_keeps_the_older_bound() -> None:
    """The watermark never goes back: an announcement whose seq we lack leaves the last usable one."""
    names = ["n1", "n2"]
    n1, n2 = Replica("n1", members=names), Replica("n2", members=names)
    a, _ = n1.submit_new(SYM, SELL, 100, 1, GTC, T0)
    b, _ = n2.submit_new(SYM, BUY, 100, 1, GTC, T0 + 1)
    r = fresh("r", names)
    r.receive([a, b], T0 + 5)
    r.observe("n1", n1.hlc.last, 1, T0 + 5)
    r.observe("n2", n2.hlc.last, 1, T0 + 5)
    w0 = r.watermark()
    assert w0 == Timestamp(a.wall, a.logical) and r.trades_final() == 0
    c, _ = n1.submit_new(SYM, SELL, 101, 1, GTC, T0 + 2)
    r.observe("n1", n1.hlc.last, 2, T0 + 5)  # the announcement outran op c
    assert r.watermark() == w0
    r.receive([c], T0 + 5)
    assert r.watermark() == Timestamp(b.wall, b.logical) and r.trades_final() == 1


def test_a_late_op_that_completes_an_announcement_is_no_finality_violation() -> None:
    names = ["n1", "n2"]
    n1, n2 = Replica("n1", members=names), Replica("n2", members=names)
    a, _ = n1.submit_new(SYM, SELL, 100, 1, GTC, T0)
    b, _ = n2.submit_new(SYM, BUY, 100, 1, GTC, T0 + 1)
    n1.receive([b], T0 + 2)
    r = fresh("r", names)
    r.receive([b], T0 + 5)
    r.observe("n1", n1.hlc.last, 1, T0 + 5)  # covers b, but not usable until a is held
    r.observe("n2", n2.hlc.last, 1, T0 + 5)
    assert r.watermark() == Timestamp(0, 0)
    view: dict[str, Trade] = {}
    track(view, r.receive([a], T0 + 5))  # late (below b): replayed, and a, b final once a is held
    assert r.is_final(a) and r.is_final(b) and r.trades_final() == 1
    assert r.counters["replays"] == 1 and r.counters["finality_violations"] == 0
    assert view == {t.trade_id: t for t in r.trades()}


def test_a_broken_finality_promise_is_counted_and_still_converges() -> None:
    """n2 restarts with a lost HLC and stamps below what it announced: count it, converge anyway."""
    names = ["n1", "n2"]
    n1 = Replica("n1", members=names)
    ops = [n1.submit_new(SYM, side, 100, 1, GTC, T0 + 10 + i)[0] for i, side in enumerate([SELL, BUY, SELL])]
    r = fresh("r", names, checkpoint_interval=1)
    r.receive(ops, LATE)
    r.observe("n1", n1.hlc.last, 3, LATE)
    r.observe("n2", Timestamp(T0 + 100, 0), 0, LATE)  # the promise n2 will break
    assert r.final_count() == 3
    n2 = Replica("n2", members=names)  # its persisted HLC is lost
    early, _ = n2.submit_new(SYM, BUY, 100, 1, GTC, T0)
    r.receive([early], LATE)
    assert r.counters["finality_violations"] == 1
    assert r.digest() == reference(ops + [early]).digest()


# ==== compaction ====================================================================================
def observe_all(r: Replica, h: History, now: int) -> None:
    for m, (ts, seq) in h.latest_announcements().items():
        r.observe(m, ts, seq, now)
    for m, vv in h.latest_vvs().items():
        r.observe_vv(m, vv)


@given(st.data())
def test_snapshot_then_deltas_reach_the_uncompacted_state(data: st.DataObject) -> None:
    h = data.draw(histories())
    ref = reference(h.ops)
    a = fresh("a", h.names, checkpoint_interval=data.draw(st.sampled_from([1, 2, 64])))
    a.receive(h.ops, LATE)
    observe_all(a, h, LATE)
    k = a.compact()
    event(f"compacted>0: {k > 0}")
    assert a.digest() == ref.digest()
    snap = a.snapshot()
    assert a.trades() == ref.trades()[snap.trades:]
    # b held some arbitrary ops (gaps included) before it was sent the snapshot
    b = fresh("b", checkpoint_interval=data.draw(st.sampled_from([1, 64])))
    before = data.draw(st.lists(st.sampled_from(h.ops), max_size=len(h.ops))) if h.ops else []
    b.receive(before, LATE)
    if a.needs_snapshot(b.version_vector()):
        b.install_snapshot(snap, LATE)
    b.receive(a.ops_missing(b.version_vector()), LATE)
    assert b.version_vector() == ref.version_vector()
    assert b.digest() == ref.digest()
    assert b.books[SYM].resting() == ref.books[SYM].resting()
    assert b.trade_count == ref.trade_count


@given(st.data())
def test_compaction_then_more_ops_equals_no_compaction(data: st.DataObject) -> None:
    h = data.draw(histories())
    ref = reference(h.ops)
    plan = batches(data.draw, h.ops)
    cut = data.draw(st.integers(0, len(plan)))
    a = fresh("a", h.names, checkpoint_interval=data.draw(st.sampled_from([1, 2, 64])))
    for batch in plan[:cut]:
        a.receive(batch, LATE)
    # honest, possibly stale knowledge of the others: per member, an announcement and a vv it really made
    for m in h.names:
        if data.draw(st.integers(0, 4)):  # sometimes nothing is known of a member: no compaction
            a.observe(*data.draw(st.sampled_from([x for x in h.announcements if x[0] == m])), LATE)
            a.observe_vv(*data.draw(st.sampled_from([x for x in h.vvs if x[0] == m])))
    k = a.compact()
    event(f"compacted>0: {k > 0}")
    for batch in plan[cut:]:
        a.receive(batch, LATE)
    observe_all(a, h, LATE)
    a.compact()
    assert a.counters["finality_violations"] == 0
    assert a.digest() == ref.digest()
    assert a.version_vector() == ref.version_vector()
    assert a.trades() == ref.trades()[a.snapshot().trades:]
    assert a.ops() == ref.ops()[len(ref.ops()) - len(a.ops()):]


@pytest.mark.xfail(strict=True, reason="a provisional trade of an op that arrives inside a snapshot is "
                   "never revised: the snapshot carries no trades (open design question)")
def test_a_provisional_trade_of_a_compacted_op_is_revised_by_the_snapshot() -> None:
    names = ["n1", "n2"]
    n1, n2 = Replica("n1", members=names), Replica("n2", members=names)
    bid1, _ = n1.submit_new(SYM, BUY, 100, 1, GTC, T0)
    n2.submit_new(SYM, BUY, 100, 1, GTC, T0)  # same stamp as bid1: n1 wins the tie, bid1 is first
    ask, _ = n2.submit_new(SYM, SELL, 100, 1, GTC, T0 + 1)
    x = fresh("x")
    view: dict[str, Trade] = {}
    track(view, x.receive(n2.ops(), T0 + 2))  # x has only n2's ops: ask fills n2's own bid
    assert view[f"{ask.op_id}/0"].maker == "n2:1"
    for a, b in ((n1, n2), (n2, n1)):
        a.receive(b.ops(), T0 + 3)
    for a, b in ((n1, n2), (n2, n1)):
        a.observe(b.node_id, b.hlc.last, b.vv[b.node_id], T0 + 3)
        a.observe_vv(b.node_id, b.version_vector())
    assert n1.compact() == 3
    track(view, x.install_snapshot(n1.snapshot(), T0 + 3))
    assert x.digest() == n1.digest()
    assert view[f"{ask.op_id}/0"].maker == bid1.op_id  # fails: x's client still sees maker n2:1


def test_compacting_short_of_the_final_prefix_after_checkpoints_were_pruned() -> None:
    """Final ops that a member still lacks stop compaction early, below every pruned checkpoint."""
    names = ["n1", "n2"]
    n1, n2 = Replica("n1", members=names), Replica("n2", members=names)
    ops = []
    for i, (side, price, qty) in enumerate([(SELL, 100, 1), (BUY, 100, 1), (SELL, 101, 2), (BUY, 101, 1)]):
        op, _ = n1.submit_new(SYM, side, price, qty, GTC, T0 + i)
        ops.append(op)
    n2.receive(ops[:2], T0 + 5)
    last, _ = n2.submit_new(SYM, SELL, 102, 1, GTC, T0 + 6)
    n1.receive([last], T0 + 7)
    ops.append(last)
    a = fresh("a", names, checkpoint_interval=1)
    a.receive(ops, LATE)
    for n in (n1, n2):
        a.observe(n.node_id, n.hlc.last, n.vv[n.node_id], LATE)  # everything is final...
        a.observe_vv(n.node_id, n.version_vector())  # ...but n2 lacks n1:3 and n1:4
    assert a.final_count() == 5
    assert a.compact() == 2
    ref = reference(ops)
    assert a.digest() == ref.digest()
    b = fresh("b")
    b.install_snapshot(a.snapshot(), LATE)
    b.receive(a.ops_missing(b.version_vector()), LATE)
    assert b.books[SYM].resting() == ref.books[SYM].resting()
    assert b.digest() == ref.digest()


def test_a_snapshot_request_id_overrides_a_later_duplicate_the_receiver_held() -> None:
    """b held only the retry (higher key) of a request whose first order was compacted at a."""
    names = ["n1", "n2"]
    n1, n2 = Replica("n1", members=names), Replica("n2", members=names)
    first, _ = n1.submit_new(SYM, SELL, 100, 1, GTC, T0, req="R")
    n2.receive([first], T0 + 1)
    n2_announced = (n2.hlc.last, 0)  # n2 said this before the retry reached it
    retry, _ = n2.submit_new(SYM, SELL, 100, 1, GTC, T0 + 10, req="R")
    assert retry.origin == "n2"
    ref = reference([first, retry])
    a = fresh("a", names)
    a.receive([first, retry], LATE)
    a.observe("n1", n1.hlc.last, 1, LATE)
    a.observe("n2", *n2_announced, LATE)
    a.observe_vv("n1", n1.version_vector())
    a.observe_vv("n2", {"n1": 1})
    assert a.compact() == 1
    b = fresh("b")
    b.receive([retry], LATE)
    assert a.needs_snapshot(b.version_vector())
    b.install_snapshot(a.snapshot(), LATE)
    b.receive(a.ops_missing(b.version_vector()), LATE)
    assert b.books[SYM].resting() == ref.books[SYM].resting() == [(SELL, 100, first.op_id, 1)]
    assert b.digest() == ref.digest()


def test_installing_a_snapshot_reports_the_trades_it_changes() -> None:
    """b's trade (z sold to x) is undone by an order y that b lacked and gets inside a snapshot."""
    names = ["n1", "n2", "n3"]
    n1, n2, n3 = (Replica(m, members=names) for m in names)
    y, _ = n1.submit_new(SYM, SELL, 100, 1, GTC, T0)
    announced = {"n1": (n1.hlc.last, 1)}
    for n in (n2, n3):
        n.receive([y], T0 + 1)
        announced[n.node_id] = (n.hlc.last, 0)  # before they stamp x and z: y can be final
    x, _ = n2.submit_new(SYM, BUY, 100, 1, GTC, T0 + 10)
    z, _ = n3.submit_new(SYM, SELL, 100, 1, GTC, T0 + 20)
    a = fresh("a", names)
    a.receive([y, x, z], LATE)
    for m, (ts, seq) in announced.items():
        a.observe(m, ts, seq, LATE)
        a.observe_vv(m, {"n1": 1})
    assert a.compact() == 1
    b = fresh("b")
    view: dict[str, Trade] = {}
    track(view, b.receive([x, z], LATE))
    assert [t.taker for t in view.values()] == [z.op_id]
    track(view, b.install_snapshot(a.snapshot(), LATE))
    assert view == {t.trade_id: t for t in b.trades()} == {t.trade_id: t for t in a.trades()}
    assert b.digest() == a.digest()


# ==== duplicate client requests =====================================================================
@given(st.data())
def test_a_request_id_places_only_its_lowest_key_order(data: st.DataObject) -> None:
    names = ["n1", "n2", "n3"]
    reps = {m: Replica(m, members=names) for m in names}
    ops: list[Op] = []
    mk, _ = reps["n1"].submit_new(SYM, SELL, 100, 3, GTC, T0)
    ops.append(mk)
    for m in names[1:]:
        reps[m].receive([mk], T0)
    dup_side = data.draw(st.sampled_from([BUY, SELL]))
    for _ in range(data.draw(st.integers(2, 5))):
        m = data.draw(st.sampled_from(names))
        pt = T0 + data.draw(st.integers(0, 3))
        if data.draw(st.booleans()) and ops:  # sometimes the client's retry lands where the first is known
            reps[m].receive(ops, pt)
        op, _ = reps[m].submit_new(SYM, dup_side, 100, data.draw(st.integers(1, 2)), GTC, pt, req="R")
        assert op.origin == m  # a retry at the node that stamped the first returns that order
        if op not in ops:
            ops.append(op)
    dups = sorted((op for op in ops if op.req == "R"), key=op_key)
    winner, losers = dups[0], {op.op_id for op in dups[1:]}
    ref = reference(ops)
    for _ in range(3):
        r = fresh()
        for batch in batches(data.draw, ops):
            r.receive(batch, LATE)
        assert r.digest() == ref.digest()
        for t in r.trades():
            assert t.taker not in losers and t.maker not in losers
        assert all(oid not in losers for _s, _p, oid, _q in r.books[SYM].resting())
    touched = {t.taker for t in ref.trades()} | {t.maker for t in ref.trades()}
    rested = {oid for _s, _p, oid, _q in ref.books[SYM].resting()}
    assert winner.op_id in touched | rested


# ==== membership ====================================================================================
def test_a_fenced_member_past_its_fence_is_refused() -> None:
    n3 = Replica("n3")
    a, _ = n3.submit_new(SYM, SELL, 100, 1, GTC, T0)
    b, _ = n3.submit_new(SYM, SELL, 101, 1, GTC, T0 + 1)
    r = fresh("r", ["n1", "n3"])
    r.remove_member("n3", 1)
    assert r.receive([a], LATE) == []
    ev = r.receive([b], LATE)
    assert ev == [OpFenced(b)] and r.version_vector() == {"n3": 1}


def test_a_compacted_request_keeps_its_order_and_fills_through_snapshot_bytes() -> None:
    """A one-node venue compacts at once; the request's order and the trades its NEW made survive the
    snapshot's bytes (what storage writes and peers install), and a retry stamps nothing."""
    from gossipbook.core.errors import DuplicateRequest, WireError
    from gossipbook.core.wire import snapshot_from_bytes, snapshot_to_bytes

    a = Replica("n1", members=["n1"])
    a.submit_new(SYM, SELL, 100, 2, GTC, T0, req="S")
    taker, events = a.submit_new(SYM, BUY, 100, 3, GTC, T0 + 1, req="B")
    made = [e.trade for e in events if isinstance(e, TradeExecuted)]
    assert len(made) == 1 and a.compact() == 2
    assert a.compacted_request("B") == (taker.op_id, made)
    assert a.compacted_request("S") == ("n1:1", [])  # rested without trading: no fills, same order
    assert a.compacted_request("nope") is None
    snap = snapshot_from_bytes(snapshot_to_bytes(a.snapshot()))
    assert snap == a.snapshot()
    b = Replica("n1", members=["n1"])
    b.install_snapshot(snap, T0 + 2)
    assert b.compacted_request("B") == (taker.op_id, made)
    vv, digest = dict(b.vv), b.digest()
    with pytest.raises(DuplicateRequest):
        b.submit_new(SYM, BUY, 100, 3, GTC, T0 + 3, req="B")
    assert (b.vv, b.digest()) == (vv, digest)
    # another node's order under the same request id is not ours to answer for
    c = Replica("n2", members=["n1", "n2"])
    c.install_snapshot(snap, T0 + 2)
    assert c.compacted_request("B") is None
    # a snapshot written before fills existed (six fields) still reads, with none
    import msgpack
    old = msgpack.packb(msgpack.unpackb(snapshot_to_bytes(snap))[:6])
    assert snapshot_from_bytes(old).fills == {}
    bad = msgpack.packb(msgpack.unpackb(snapshot_to_bytes(snap))[:6] + [{taker.op_id: [["x", SYM, -1]]}])
    with pytest.raises(WireError):
        snapshot_from_bytes(bad)
