"""Ownership, request dedupe and mass cancel in the fold (issue 14), on pure cores.

What must hold (``gossipbook/core/replica.py`` and ``strong.py`` module headers):
- a cancel / amend of another account's order is refused where it is stamped (``NotOwner``) and,
  should one be stamped anyway (a forged, relayed or buggy node's op), skipped by the fold on every
  replica (counted ``not_owner``);
- a CANCEL / AMEND carries its request id and a retry or replay of it changes nothing; request ids
  are scoped per account;
- a CANCEL_ALL cancels exactly the orders of its account that fold before it, on every replica,
  also when it arrives late and forces a rollback and replay; digests converge.
"""

from __future__ import annotations

import pytest

from gossipbook.core.book import BUY, GTC, SELL
from gossipbook.core.errors import NotOwner
from gossipbook.core.instrument import Instrument, Venue
from gossipbook.core.node import E_NOT_OWNER, OK
from gossipbook.core.ops import AMEND, CANCEL, CANCEL_ALL, NEW, Op, TradeRevised
from gossipbook.core.replica import Replica
from gossipbook.core.strong import SequencedBooks

SYM = "GBX"
T0 = 1_000_000_000_000  # physical time (ns) where every history starts
MS = 1_000_000


def _pair(venue: Venue | None = None) -> tuple[Replica, Replica]:
    members = ["n1", "n2", "n3"]
    return Replica("n1", venue, members), Replica("n2", venue, members)


def _sync(*reps: Replica, now: int = T0 + 10_000 * MS) -> None:
    """Deliver every op each replica holds to every other (in whatever order it holds them)."""
    held = [r.ops() for r in reps]
    for r in reps:
        for ops in held:
            r.receive(ops, now)


def _resting(r: Replica, oid: str) -> tuple[int, int, int] | None:
    return r.order_status(oid)


# ==== the stamping node refuses a non-owner ========================================================
def test_non_owner_cancel_and_amend_are_refused_where_stamped() -> None:
    r1, r2 = _pair()
    op, _ = r1.submit_new(SYM, SELL, 10_000, 5, GTC, T0, "a-1", account="alice")
    oid = op.op_id
    r2.receive([op], T0 + MS)
    for r in (r1, r2):
        before, vv, n = r.digest(), r.version_vector(), r.op_count
        with pytest.raises(NotOwner, match="belongs to another account"):
            r.submit_cancel(oid, T0 + 2 * MS, "b-1", account="bob")
        with pytest.raises(NotOwner, match=f"order {oid} belongs to another account"):
            r.submit_amend(oid, 10_000, 1, T0 + 3 * MS, "b-2", account="bob")
        # nothing stamped, nothing changed
        assert (r.digest(), r.version_vector(), r.op_count) == (before, vv, n)
        assert r.new_ops == [] or all(o.account == "alice" for o in r.new_ops)
        assert _resting(r, oid) == (SELL, 10_000, 5)
    # the anonymous account ("") is another account too
    with pytest.raises(NotOwner):
        r1.submit_cancel(oid, T0 + 4 * MS, account="")


# ==== the fold refuses a forged op on every replica ==================================================
def _forge(node: Replica, kind: int, target: str, price: int, qty: int, now: int, account: str,
           req: str = "") -> Op:
    """An op stamped by ``node`` *without* its owner check: what a buggy or hostile node (or a
    client who got hold of the peer key) could put in the op-set."""
    side = next(o for b in node.books.values() if (o := b.order(target)) is not None)[0]
    op, _ = node._stamp(kind, SYM, target, side, price, qty, GTC, req, now, account)
    return op


@pytest.mark.parametrize("kind", [CANCEL, AMEND], ids=["cancel", "amend"])
def test_forged_cancel_or_amend_of_another_account_is_not_applied_anywhere(kind: int) -> None:
    r1, r2 = _pair()
    r3 = Replica("n3", None, ["n1", "n2", "n3"])
    op, _ = r1.submit_new(SYM, SELL, 10_000, 5, GTC, T0, "a-1", account="alice")
    oid = op.op_id
    for r in (r2, r3):
        r.receive([op], T0 + MS)
    # n3 stamps bob's cancel (or an amend to 1 lot at a crossing price) of alice's order, skipping the check
    forged = _forge(r3, kind, oid, 9_000, 1, T0 + 2 * MS, "bob")
    assert forged.account == "bob" and forged.kind == kind
    r1.receive([forged], T0 + 3 * MS)
    r2.receive(r3.ops(), T0 + 3 * MS)
    _sync(r1, r2, r3)
    for r in (r1, r2, r3):
        assert r.holds("n3", forged.seq)  # held in the op-set (replicated) ...
        assert _resting(r, oid) == (SELL, 10_000, 5), r.node_id  # ... but not applied
        assert r.counters["not_owner"] >= 1
        assert r.trade_count == 0
    assert len({r.digest() for r in (r1, r2, r3)}) == 1
    # the owner's own op of the same kind does apply (the check is on the account, not the op)
    if kind == CANCEL:
        own, _ = r1.submit_cancel(oid, T0 + 20 * MS, "a-2", account="alice")
        assert _resting(r1, oid) is None
    else:
        own, _ = r1.submit_amend(oid, 10_000, 2, T0 + 20 * MS, "a-2", account="alice")
        assert _resting(r1, oid) == (SELL, 10_000, 2)
    r2.receive([own], T0 + 21 * MS)
    assert r2.digest() == r1.digest()


def test_forged_cancel_arriving_late_is_still_refused_after_replay() -> None:
    """A forged cancel that folds *below* ops already applied goes through rollback and replay;
    the replay must refuse it too (the rule is in the fold, not only on the live path)."""
    r1, r2 = _pair()
    r3 = Replica("n3", None, ["n1", "n2", "n3"])
    a, _ = r1.submit_new(SYM, SELL, 10_000, 5, GTC, T0, "a-1", account="alice")
    r3.receive([a], T0 + MS)
    forged = _forge(r3, CANCEL, a.op_id, 0, 0, T0 + 2 * MS, "bob")
    # r1 goes on: bob buys 2 at t+5 ms (a trade with alice's order), then gets the forged cancel late
    buy, ev = r1.submit_new(SYM, BUY, 10_000, 2, GTC, T0 + 5 * MS, "b-1", account="bob")
    assert len(ev) == 1
    ev = r1.receive([forged], T0 + 6 * MS)
    assert r1.counters["replays"] >= 1
    assert not [e for e in ev if isinstance(e, TradeRevised)]  # the trade stands
    assert _resting(r1, a.op_id) == (SELL, 10_000, 3)
    assert r1.trade_count == 1 and r1.counters["not_owner"] >= 1


# ==== request dedupe ====================================================================================
def test_replayed_amend_after_a_fill_does_not_resurrect_quantity() -> None:
    r1, r2 = _pair()
    a, _ = r1.submit_new(SYM, SELL, 10_000, 10, GTC, T0, "a-1", account="alice")
    oid = a.op_id
    am, _ = r1.submit_amend(oid, 10_000, 8, T0 + MS, "a-am", account="alice")
    assert _resting(r1, oid) == (SELL, 10_000, 8)
    _sync(r1, r2)
    # bob takes 5: 3 left
    _b, ev = r2.submit_new(SYM, BUY, 10_000, 5, GTC, T0 + 2 * MS, "b-1", account="bob")
    assert len(ev) == 1
    _sync(r1, r2)
    for r in (r1, r2):
        assert _resting(r, oid) == (SELL, 10_000, 3)
    # the client's retry of the amend reaches the same node: the same op, nothing new stamped
    again, ev = r1.submit_amend(oid, 10_000, 8, T0 + 3 * MS, "a-am", account="alice")
    assert again == am and ev == []
    # ... and another node (which holds the first amend): a second op with the same request id is
    # stamped there, replicated everywhere, and folded as a no-op
    replay, _ = r2.submit_amend(oid, 10_000, 8, T0 + 4 * MS, "a-am", account="alice")
    assert replay.op_id != am.op_id and replay.req == am.req
    _sync(r1, r2)
    for r in (r1, r2):
        assert r.holds(replay.origin, replay.seq)
        assert _resting(r, oid) == (SELL, 10_000, 3), r.node_id  # not 8: the fill stays filled
    assert r1.digest() == r2.digest()
    # a replay delivered raw (the same op again, or a copy under a new seq) changes nothing either
    before = r1.digest()
    r1.receive([am, replay], T0 + 5 * MS)
    assert r1.digest() == before


def test_retried_cancel_is_the_same_op_and_changes_nothing() -> None:
    r1, r2 = _pair()
    a, _ = r1.submit_new(SYM, SELL, 10_000, 10, GTC, T0, "a-1", account="alice")
    c, _ = r1.submit_cancel(a.op_id, T0 + MS, "a-c", account="alice")
    assert _resting(r1, a.op_id) is None
    vv = r1.version_vector()
    # the retry (its reply was lost) is answered with the first cancel, not "unknown order"
    again, ev = r1.submit_cancel(a.op_id, T0 + 2 * MS, "a-c", account="alice")
    assert again == c and ev == [] and r1.version_vector() == vv
    # the same request id re-used later for an order of the account is a retry, not a new order
    b, _ = r1.submit_new(SYM, SELL, 10_100, 1, GTC, T0 + 3 * MS, "a-b", account="alice")
    r2.receive(r1.ops(), T0 + 4 * MS)
    dup, _ = r2.submit_cancel(b.op_id, T0 + 5 * MS, "a-c", account="alice")  # same req as the first cancel
    _sync(r1, r2)
    for r in (r1, r2):
        assert r.holds(dup.origin, dup.seq)
        assert _resting(r, b.op_id) == (SELL, 10_100, 1), r.node_id  # the "retry" folded as a no-op
    assert r1.digest() == r2.digest()


def test_request_ids_are_scoped_per_account() -> None:
    r1, r2 = _pair()
    a, _ = r1.submit_new(SYM, SELL, 10_000, 5, GTC, T0, "r-1", account="alice")
    r2.receive([a], T0 + MS)
    # bob re-uses alice's request id: on the same node and on another one
    b1, _ = r1.submit_new(SYM, SELL, 10_100, 4, GTC, T0 + 2 * MS, "r-1", account="bob")
    b2, _ = r2.submit_new(SYM, SELL, 10_200, 3, GTC, T0 + 3 * MS, "r-2", account="bob")
    c2, _ = r2.submit_new(SYM, SELL, 10_300, 2, GTC, T0 + 4 * MS, "r-2", account="carol")
    assert b1 != a and c2 != b2
    _sync(r1, r2)
    for r in (r1, r2):
        assert _resting(r, a.op_id) == (SELL, 10_000, 5)
        assert _resting(r, b1.op_id) == (SELL, 10_100, 4), r.node_id
        assert _resting(r, b2.op_id) == (SELL, 10_200, 3)
        assert _resting(r, c2.op_id) == (SELL, 10_300, 2), r.node_id
        assert sorted(o[0] for o in r.orders_of("bob")) == sorted([b1.op_id, b2.op_id])
    assert r1.digest() == r2.digest()
    # bob's cancel with alice's request id of a cancel is not swallowed either
    ca, _ = r1.submit_cancel(a.op_id, T0 + 5 * MS, "x", account="alice")
    cb, _ = r1.submit_cancel(b1.op_id, T0 + 6 * MS, "x", account="bob")
    assert cb != ca
    assert _resting(r1, b1.op_id) is None


# ==== mass cancel ========================================================================================
TWO = Venue.of([Instrument("GBX"), Instrument("ETH")])


def test_mass_cancel_arriving_late_cancels_exactly_what_folds_before_it() -> None:
    r1, r2 = _pair(TWO)
    # r1: alice sells GBX at t=1, bob sells GBX at t=1.2; r2 (not yet hearing r1): alice sells ETH at
    # t=1.5, then her mass cancel at t=2 (it knows only her ETH order)
    a1, _ = r1.submit_new("GBX", SELL, 10_000, 5, GTC, T0 + 1 * MS, "a1", account="alice")
    b1, _ = r1.submit_new("GBX", SELL, 10_500, 5, GTC, T0 + 1_200_000, "b1", account="bob")
    a2, _ = r2.submit_new("ETH", SELL, 20_000, 5, GTC, T0 + 1_500_000, "a2", account="alice")
    kill, n = r2.submit_cancel_all("", T0 + 2 * MS, "kill", account="alice")
    assert kill.kind == CANCEL_ALL and n == 1
    # r1, before it hears the cancel: alice sells again at t=2.5 (after the cancel: it stays), bob buys
    # at t=2.6 and trades with a1 (which the cancel, once known, removed before: the trade is undone)
    a3, _ = r1.submit_new("GBX", SELL, 10_100, 5, GTC, T0 + 2_500_000, "a3", account="alice")
    buy, ev = r1.submit_new("GBX", BUY, 10_000, 2, GTC, T0 + 2_600_000, "b2", account="bob")
    assert len(ev) == 1 and ev[0].trade.maker == a1.op_id
    # out of order both ways: r1 gets the cancel late, r2 gets a1 / b1 late (below its cancel)
    ev1 = r1.receive(r2.ops()[::-1], T0 + 3 * MS)
    assert r1.counters["replays"] >= 1
    assert any(isinstance(e, TradeRevised) and e.new is None for e in ev1)
    r2.receive(r1.ops()[::-1], T0 + 3 * MS)
    assert r2.counters["replays"] >= 1
    # a third replica gets everything in fold order at once (no rollback): the reference
    r3 = Replica("n3", TWO, ["n1", "n2", "n3"])
    r3.receive(sorted(set(r1.ops()) | set(r2.ops())), T0 + 3 * MS)
    for r in (r1, r2, r3):
        assert _resting(r, a1.op_id) is None, r.node_id
        assert _resting(r, a2.op_id) is None
        assert _resting(r, a3.op_id) == (SELL, 10_100, 5)  # stamped after the cancel
        assert _resting(r, b1.op_id) == (SELL, 10_500, 5)  # another account's
        assert _resting(r, buy.op_id) == (BUY, 10_000, 2)  # nothing to trade with any more
        assert [o[0] for o in r.orders_of("alice")] == [a3.op_id]
        assert r.trade_count == 0
    assert len({r.digest() for r in (r1, r2, r3)}) == 1


def test_mass_cancel_of_one_symbol_and_rollback_restores_each_book() -> None:
    r1, r2 = _pair(TWO)
    ops = []
    for i, (sym, side, px) in enumerate([("GBX", SELL, 10_000), ("ETH", SELL, 20_000), ("GBX", BUY, 9_000),
                                         ("ETH", BUY, 19_000), ("GBX", SELL, 10_010)]):
        op, _ = r1.submit_new(sym, side, px, 3, GTC, T0 + i * MS, f"a{i}", account="alice")
        ops.append(op)
    bob_e, _ = r1.submit_new("ETH", SELL, 20_100, 1, GTC, T0 + 5 * MS, "b", account="bob")
    bob_g, _ = r1.submit_new("GBX", SELL, 10_500, 1, GTC, T0 + 5_100_000, "b2", account="bob")
    r2.receive(r1.ops(), T0 + 6 * MS)
    kill, n = r2.submit_cancel_all("GBX", T0 + 7 * MS, "k", account="alice")
    assert n == 3
    assert [o[1] for o in r2.orders_of("alice")] == ["ETH", "ETH"]
    late, _ = r1.submit_new("GBX", SELL, 10_020, 1, GTC, T0 + 8 * MS, "a9", account="alice")
    r1.receive(r2.ops(), T0 + 9 * MS)  # kill folds below ``late``: a replay
    r2.receive(r1.ops(), T0 + 9 * MS)
    assert r1.digest() == r2.digest()
    alice = {o[0] for o in r1.orders_of("alice")}
    assert alice == {ops[1].op_id, ops[3].op_id, late.op_id}
    assert {o[0] for o in r1.orders_of("bob")} == {bob_e.op_id, bob_g.op_id}
    # bob's all-books cancel from n3 (a slower clock: it folds below alice's kill), then an op from
    # n4 below that: the rollback undoes a CANCEL_ALL that touched both books, record by record
    kb = Op(T0 + 6_500_000, 0, "n3", 1, CANCEL_ALL, "", "", 0, 0, 0, GTC, "kb", "bob")
    below = Op(T0 + 6_200_000, 0, "n4", 1, NEW, "GBX", "", SELL, 10_030, 1, GTC, "c", "carol")
    for r in (r1, r2):
        r.add_member("n4")  # ops of a non-member origin are refused
        replays = r.counters["replays"]
        r.receive([kb], T0 + 10 * MS)
        assert r.orders_of("bob") == []
        digest_kb = r.digest()
        r.receive([below], T0 + 10 * MS)
        assert r.counters["replays"] == replays + 2
        assert r.digest() != digest_kb
        assert r.orders_of("bob") == []
        assert {o[0] for o in r.orders_of("alice")} == alice
        assert [o[0] for o in r.orders_of("carol")] == [below.op_id]
    assert r1.digest() == r2.digest()
    ref = Replica("n5", TWO, ["n1", "n2", "n3", "n4"])
    ref.receive(sorted(set(r1.ops())), T0 + 10 * MS)
    assert ref.digest() == r1.digest()
    assert ref.counters["replays"] == 0


def test_mass_cancel_needs_an_account_and_never_touches_another() -> None:
    r1, _r2 = _pair()
    a, _ = r1.submit_new(SYM, SELL, 10_000, 5, GTC, T0, "a", account="alice")
    with pytest.raises(Exception, match="account"):
        r1.submit_cancel_all("", T0 + MS, "k", account="")
    _op, n = r1.submit_cancel_all("", T0 + MS, "k", account="bob")
    assert n == 0 and _resting(r1, a.op_id) == (SELL, 10_000, 5)


# ==== strong mode: the same rules in the fold of the committed log =======================================
def _sop(req: str, kind: int = NEW, oid: str = "", side: int = SELL, price: int = 10_000, qty: int = 5,
         account: str = "alice", symbol: str = SYM) -> Op:
    return Op(1, 0, "n1", 0, kind, symbol, oid, side, price, qty, GTC, req, account)


def test_strong_fold_refuses_a_non_owner() -> None:
    a, b = SequencedBooks(Venue()), SequencedBooks(Venue())
    entries = [_sop("a1"), _sop("b1", CANCEL, "n1:1", account="bob"),
               _sop("b2", AMEND, "n1:1", price=9_000, qty=1, account="bob"),
               _sop("b3", NEW, side=BUY, price=9_000, qty=1, account="bob")]
    outs = [a.apply(i + 1, e) for i, e in enumerate(entries)]
    for i, e in enumerate(entries):
        b.apply(i + 1, e)
    assert outs[0].code == OK and outs[0].order_id == "n1:1"
    assert outs[1].code == E_NOT_OWNER and "belongs to another account" in outs[1].message
    assert outs[2].code == E_NOT_OWNER
    assert outs[3].code == OK and outs[3].trades == ()  # the amend to 90.00 was not applied: no cross
    assert a.counters["not_owner"] == 2
    assert a.find("n1:1")[1] == (SELL, 10_000, 5)
    assert a.trade_count == 0 and a.digest() == b.digest()
    # the owner can
    assert a.apply(5, _sop("a2", CANCEL, "n1:1")).code == OK and a.find("n1:1") is None


def test_strong_fold_dedupes_cancel_and_amend_per_account() -> None:
    s = SequencedBooks(Venue())
    assert s.apply(1, _sop("a1", qty=10)).code == OK
    assert s.apply(2, _sop("am", AMEND, "n1:1", qty=8)).code == OK
    fill = s.apply(3, _sop("b1", NEW, side=BUY, qty=5, account="bob"))
    assert len(fill.trades) == 1 and s.find("n1:1")[1] == (SELL, 10_000, 3)
    # the amend committed again (relayed to a new leader) or replayed: the first outcome, no change
    again = s.apply(4, _sop("am", AMEND, "n1:1", qty=8))
    assert again.code == OK and again.trades == ()
    assert s.find("n1:1")[1] == (SELL, 10_000, 3)
    assert s.counters["duplicates"] == 1
    # a cancel: the retry folds as the first one did
    assert s.apply(5, _sop("c", NEW, price=10_100, qty=1)).order_id == "n1:5"
    assert s.apply(6, _sop("cx", CANCEL, "n1:5")).code == OK
    assert s.apply(7, _sop("a9", NEW, price=10_200, qty=1)).order_id == "n1:7"
    assert s.apply(8, _sop("cx", CANCEL, "n1:7")).code == OK  # same req: a duplicate, not applied
    assert s.find("n1:7") is not None and s.counters["duplicates"] == 2
    # bob's request ids are his own: "am" and "cx" are fresh for him
    bo = s.apply(9, _sop("am", NEW, price=10_300, qty=2, account="bob"))
    assert bo.code == OK and bo.order_id == "n1:9" and s.find("n1:9") is not None
    assert s.apply(10, _sop("cx", CANCEL, "n1:9", account="bob")).code == OK
    assert s.find("n1:9") is None


def test_strong_fold_mass_cancel_is_per_account() -> None:
    s = SequencedBooks(TWO)
    s.apply(1, _sop("a1"))
    s.apply(2, _sop("a2", symbol="ETH", price=20_000))
    s.apply(3, _sop("b1", price=10_500, account="bob"))
    out = s.apply(4, _sop("k", CANCEL_ALL, symbol="GBX"))
    assert out.code == OK and out.message == "mass cancel: 1 order cancelled"
    assert s.find("n1:1") is None and s.find("n1:2") is not None and s.find("n1:3") is not None
    out = s.apply(5, _sop("k2", CANCEL_ALL, symbol=""))
    assert s.find("n1:2") is None and s.find("n1:3") is not None
    s.apply(6, _sop("a3", price=10_600))  # after the cancel: rests
    assert s.find("n1:6") is not None
