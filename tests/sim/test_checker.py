"""The checker must be able to fail: fabricated bad histories, each caught with its evidence.

Each test feeds ``Checker`` the observations a broken cluster would produce (the way the simulator
reports them) and asserts the violation kind, so a checker that silently passes everything cannot
slip through. One clean history checks that honest input raises nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from gossipbook.core import NEW, Op, Replica, Trade, TradeExecuted, TradeRevised
from gossipbook.core.book import Book
from gossipbook.core.ops import AMEND, CANCEL, CANCEL_ALL
from gossipbook.sim import KINDS, T0, Checker
from gossipbook.sim.workload import Ack

MAX_OFFSET = 500_000_000
NODES = ["n1", "n2", "n3"]


def op(origin: str, seq: int, wall: int, logical: int = 0, req: str = "") -> Op:
    return Op(T0 + wall, logical, origin, seq, NEW, "GBX", "", 0, 10_000, 5, 0, req)


def trade(tid: str, price: int = 10_000, qty: int = 5, maker: str = "n2:1") -> Trade:
    return Trade(tid, "GBX", price, qty, maker, tid.split("/")[0], 0)


def kinds(ck: Checker) -> set[str]:
    return set(ck.counts)


@pytest.fixture
def ck() -> Checker:
    return Checker(NODES, MAX_OFFSET)


@dataclass
class FakeReplica:
    """Just the query surface ``Checker.final_state`` reads, so a test can hand it any state."""

    held: list[Op] = field(default_factory=list)
    trade_list: list[Trade] = field(default_factory=list)
    vv: dict[str, int] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)

    def ops(self) -> list[Op]:
        return list(self.held)

    def version_vector(self) -> dict[str, int]:
        return dict(self.vv)

    @property
    def op_count(self) -> int:
        return len(self.held)

    def trades(self) -> list[Trade]:
        return list(self.trade_list)

    @property
    def trade_count(self) -> int:
        return len(self.trade_list)

    def holds(self, origin: str, seq: int) -> bool:
        return seq <= self.vv.get(origin, 0)


def test_an_honest_history_passes(ck: Checker) -> None:
    a1, a2, b1 = op("n1", 1, 100), op("n1", 2, 200), op("n2", 1, 150)
    ck.ops_taken("n1", [a1], T0 + 100, T0 + 100)
    ck.ops_taken("n2", [b1], T0 + 150, T0 + 150)
    ck.ops_taken("n1", [b1, a2], T0 + 200, T0 + 200)
    ck.issued("n1", (T0 + 250, 0), T0 + 250)
    t = trade("n1:2/0", maker="n2:1")
    ck.events("n1", [TradeExecuted(t)], T0 + 200)
    ck.finalized("n1", [t], T0 + 300)
    ck.finalized("n2", [t], T0 + 310)
    ck.stamp("n1", "r1", a1)
    ck.replied("n1", "r1", "n1:1", 0, 1, 3, T0 + 101)
    rep = FakeReplica([a1, b1, a2], [t], {"n1": 2, "n2": 1})
    ck.final_state({"n1": rep}, [Ack("r1", "n1", NEW, "n1:1", 0, T0 + 101)], T0 + 400)
    ck.liveness(T0, T0 + 10, T0 + 20, 30_000_000_000, {"n1": "d", "n2": "d"}, True, T0 + 400)
    assert ck.ok, ck.violations


def test_hlc_going_back_is_caught(ck: Checker) -> None:
    ck.ops_taken("n1", [op("n1", 1, 100, 3)], T0 + 100, T0 + 100)
    ck.ops_taken("n1", [op("n1", 2, 100, 3)], T0 + 101, T0 + 101)  # same timestamp again
    assert kinds(ck) == {"hlc_order"}
    assert "n1:2" in ck.violations[0].evidence


def test_a_heartbeat_below_an_issued_op_is_caught(ck: Checker) -> None:
    """A restart that forgot its HLC announces a timestamp below one it issued before it crashed."""
    ck.ops_taken("n1", [op("n1", 1, 500)], T0 + 500, T0 + 500)
    ck.issued("n1", (T0 + 400, 0), T0 + 600)
    assert kinds(ck) == {"hlc_order"}


def test_a_reused_or_skipped_seq_is_caught(ck: Checker) -> None:
    ck.ops_taken("n1", [op("n1", 1, 100)], T0, T0)
    ck.ops_taken("n1", [op("n1", 3, 200)], T0, T0)
    assert kinds(ck) == {"seq_order"}


def test_one_op_id_for_two_ops_is_caught(ck: Checker) -> None:
    ck.ops_taken("n1", [op("n1", 1, 100)], T0, T0)
    ck.ops_taken("n2", [op("n1", 1, 100, req="other")], T0, T0)
    assert "op_conflict" in kinds(ck)


def test_applying_an_op_beyond_the_offset_bound_is_caught(ck: Checker) -> None:
    far = op("n1", 1, 2 * MAX_OFFSET)
    ck.ops_taken("n1", [far], T0 + 2 * MAX_OFFSET, T0)
    ck.ops_taken("n2", [far], T0 + 1000, T0 + 1000)  # n2's clock is 1 s behind the op
    assert kinds(ck) == {"hlc_offset"}


def test_an_hlc_jump_past_the_bound_is_caught(ck: Checker) -> None:
    ck.adopted("n2", (T0, 0), (T0 + 2 * MAX_OFFSET, 0), T0 + 10, T0 + 10)
    assert kinds(ck) == {"hlc_offset"}


def test_a_trade_reported_twice_is_caught(ck: Checker) -> None:
    t = trade("n1:1/0")
    ck.events("n1", [TradeExecuted(t), TradeExecuted(t)], T0)
    assert kinds(ck) == {"trade_duplicated"}


def test_a_revision_of_an_unreported_trade_is_caught(ck: Checker) -> None:
    ck.events("n1", [TradeRevised(trade("n1:1/0"), None)], T0)
    assert kinds(ck) == {"silent_revision"}


def test_revising_a_trade_the_node_called_final_is_caught(ck: Checker) -> None:
    t = trade("n1:1/0")
    ck.events("n1", [TradeExecuted(t)], T0)
    ck.finalized("n1", [t], T0 + 1)
    ck.events("n1", [TradeRevised(t, t._replace(qty=2))], T0 + 2)
    assert kinds(ck) == {"final_revised"}


def test_a_lagging_replica_may_revise_its_provisional_copy(ck: Checker) -> None:
    """n2 has not declared the trade final: its copy is provisional, revising it is allowed."""
    t = trade("n1:1/0")
    ck.events("n1", [TradeExecuted(t)], T0)
    ck.finalized("n1", [t], T0 + 1)
    ck.events("n2", [TradeExecuted(t), TradeRevised(t, t._replace(qty=2)), TradeRevised(t._replace(qty=2), t)], T0)
    assert ck.ok


def test_two_final_versions_of_one_trade_are_caught(ck: Checker) -> None:
    t = trade("n1:1/0")
    ck.finalized("n1", [t], T0)
    ck.finalized("n2", [t._replace(price=10_001)], T0)
    assert kinds(ck) == {"final_disagree"}


def test_an_acked_op_missing_from_a_replica_is_caught(ck: Checker) -> None:
    a1 = op("n1", 1, 100, req="r1")
    ck.stamp("n1", "r1", a1)
    has = Replica("n1", members=NODES)
    has.receive([a1], T0 + 1000)
    lacks = Replica("n2", members=NODES)
    ck.events("n1", [], T0)
    ck.final_state({"n1": has, "n2": lacks}, [Ack("r1", "n1", NEW, "n1:1", 0, T0 + 1)], T0 + 2000)
    assert kinds(ck) == {"lost_ack"}
    assert "n2" in ck.violations[0].evidence


def test_an_op_folded_twice_is_caught(ck: Checker) -> None:
    a1 = op("n1", 1, 100)
    ck.final_state({"n1": FakeReplica([a1, a1], [], {"n1": 1})}, [], T0)
    assert kinds(ck) == {"applied_twice"}


def test_a_trade_held_twice_is_caught(ck: Checker) -> None:
    t = trade("n1:1/0")
    ck.events("n1", [TradeExecuted(t)], T0)
    ck.final_state({"n1": FakeReplica([op("n1", 1, 100)], [t, t], {"n1": 1})}, [], T0)
    assert "trade_duplicated" in kinds(ck)


def test_trades_changed_without_events_are_caught(ck: Checker) -> None:
    t = trade("n1:1/0")
    ck.events("n1", [TradeExecuted(t)], T0)
    ck.final_state({"n1": FakeReplica([op("n1", 1, 100)], [t._replace(qty=1)], {"n1": 1})}, [], T0)
    assert kinds(ck) == {"silent_revision"}


def test_a_replica_counting_a_finality_violation_is_reported(ck: Checker) -> None:
    ck.final_state({"n1": FakeReplica(counters={"finality_violations": 1})}, [], T0)
    assert kinds(ck) == {"finality_counter"}


def test_no_convergence_is_caught(ck: Checker) -> None:
    ck.liveness(T0, None, None, 30_000_000_000, {"n1": "aa", "n2": "bb", "n3": "aa"}, True, T0 + 1)
    assert kinds(ck) == {"convergence"}
    assert "n1,n3" in ck.violations[0].evidence


def test_stalled_finality_is_caught_only_when_required(ck: Checker) -> None:
    ck.liveness(T0, T0 + 5, None, 30_000_000_000, {"n1": "aa"}, False, T0 + 1)
    assert ck.ok
    ck.liveness(T0, T0 + 5, None, 30_000_000_000, {"n1": "aa"}, True, T0 + 1)
    assert kinds(ck) == {"finality_stalled"}


def test_a_replicated_ack_on_a_minority_of_disks_is_caught(ck: Checker) -> None:
    ck.stamp("n1", "r1", op("n1", 1, 100))
    ck.replied("n1", "r1", "n1:1", 1, 1, 3, T0)
    assert kinds(ck) == {"ack_unreplicated"}


def test_an_ack_naming_another_order_is_caught(ck: Checker) -> None:
    ck.stamp("n1", "r1", op("n1", 1, 100))
    ck.replied("n1", "r1", "n1:7", 0, 1, 3, T0)
    ck.replied("n2", "r9", "n2:1", 0, 1, 3, T0)  # no op was stamped for r9 on n2
    assert kinds(ck) == {"ack_mismatch"}
    assert ck.counts["ack_mismatch"] == 2


def test_an_ack_naming_a_second_order_for_a_placed_request_is_caught(ck: Checker) -> None:
    first, second = op("n1", 1, 100, req="r1"), op("n1", 2, 200, req="r1")
    ck.ops_taken("n1", [first], T0 + 100, T0 + 100)
    ck.ops_taken("n1", [second], T0 + 200, T0 + 200)  # the retry after a restart stamped it again
    ck.stamp("n1", "r1", second)
    rep = FakeReplica([first, second], [], {"n1": 2})
    ck.final_state({"n1": rep}, [Ack("r1", "n1", NEW, "n1:2", 0, T0 + 201)], T0 + 300)
    assert kinds(ck) == {"ack_wrong_order"}


def test_a_retry_that_reached_another_node_first_is_not_blamed(ck: Checker) -> None:
    """n2 cannot know n1 placed the request; the fold keeps n1's order. Not this check's business."""
    first, second = op("n1", 1, 100, req="r1"), op("n2", 1, 200, req="r1")
    ck.ops_taken("n1", [first], T0 + 100, T0 + 100)
    ck.ops_taken("n2", [second], T0 + 200, T0 + 200)
    ck.stamp("n2", "r1", second)
    rep = FakeReplica([first, second], [], {"n1": 1, "n2": 1})
    ck.final_state({"n1": rep}, [Ack("r1", "n2", NEW, "n2:1", 0, T0 + 201)], T0 + 300)
    assert ck.ok, ck.violations


def test_a_final_ack_with_stale_trades_is_caught(ck: Checker) -> None:
    a1 = op("n1", 1, 100)
    ck.stamp("n1", "r1", a1)
    final = trade("n1:1/0", qty=3)
    ck.finalized("n1", [final], T0)
    ck.final_ack_trades("r1", "n1", [["n1:1/0", 10_000, 5, "n2:1", "n1:1"]], T0)
    assert kinds(ck) == {"final_ack_trades"}


def test_a_final_ack_missing_a_trade_is_caught(ck: Checker) -> None:
    ck.stamp("n1", "r1", op("n1", 1, 100))
    ck.finalized("n1", [trade("n1:1/0"), trade("n1:1/1", maker="n3:1")], T0)
    ck.final_ack_trades("r1", "n1", [["n1:1/0", 10_000, 5, "n2:1", "n1:1"]], T0)
    assert kinds(ck) == {"final_ack_trades"}


def test_evidence_is_kept_for_the_first_few_and_all_are_counted(ck: Checker) -> None:
    for i in range(10):
        ck.violation("convergence", "", T0 + i, f"#{i}")
    assert ck.counts == {"convergence": 10}
    assert [v.evidence for v in ck.first()] == ["#0"]
    assert len(ck.violations) == 3


def test_every_kind_is_documented() -> None:
    assert all(isinstance(v, str) and v for v in KINDS.values())




# ---- accounts (issue 14) ---------------------------------------------------------------------------
def acct_op(origin: str, seq: int, wall: int, kind: int, account: str, order_id: str = "", symbol: str = "GBX",
            req: str = "") -> Op:
    return Op(T0 + wall, 0, origin, seq, kind, symbol, order_id, 1, 10_010, 3, 0, req, account)


@dataclass
class FoldOnly:
    """A replica's fold step with the owner check as a flag (``honest=False``: the break)."""

    honest: bool = True
    _reqs: dict[str, Any] = field(default_factory=dict)

    def _fold_op(self, books: dict[str, Book], op: Op) -> list[Trade]:
        b = books[op.symbol] if op.symbol else None
        if op.kind == NEW:
            return books[op.symbol].submit(op.op_id, op.side, op.price, op.qty, op.tif, op.op_id, op.account)
        if op.kind == CANCEL_ALL:
            if self.honest:
                for sym in [op.symbol] if op.symbol else sorted(books):
                    books[sym].cancel_account(op.account)
            return []
        assert b is not None
        if self.honest and b.owner(op.order_id) != op.account:
            return []
        if op.kind == CANCEL:
            b.cancel(op.order_id)
            return []
        return b.amend(op.order_id, op.price, op.qty, op.op_id) or []


def test_a_cancel_or_amend_by_another_account_applied_is_caught(ck: Checker) -> None:
    for honest in (True, False):
        ck = Checker(NODES, MAX_OFFSET)
        rep = FoldOnly(honest)
        ck.watch_fold("n1", rep, lambda: T0 + 5)
        books = {"GBX": Book("GBX")}
        rep._fold_op(books, acct_op("n1", 1, 1, NEW, "alice"))
        rep._fold_op(books, acct_op("n1", 2, 2, NEW, "bob"))
        rep._fold_op(books, acct_op("n2", 1, 3, AMEND, "bob", "n1:1")._replace(qty=2))  # bob amends alice's order
        rep._fold_op(books, acct_op("n2", 2, 4, CANCEL, "bob", "n1:1"))  # ... and cancels it
        rep._fold_op(books, acct_op("n2", 3, 5, CANCEL, "bob", "n1:2"))  # his own: fine
        assert kinds(ck) == (set() if honest else {"not_owner_applied"}), ck.violations
        assert honest or ck.counts["not_owner_applied"] == 2


def test_an_order_resting_after_a_mass_cancel_is_caught(ck: Checker) -> None:
    for honest in (True, False):
        ck = Checker(NODES, MAX_OFFSET)
        rep = FoldOnly(honest)
        ck.watch_fold("n1", rep, lambda: T0 + 5)
        books = {"GBX": Book("GBX"), "XYZ": Book("XYZ")}
        rep._fold_op(books, acct_op("n1", 1, 1, NEW, "alice"))
        rep._fold_op(books, acct_op("n1", 2, 2, NEW, "alice", symbol="XYZ"))
        rep._fold_op(books, acct_op("n1", 3, 3, CANCEL_ALL, "alice", symbol="GBX"))
        assert kinds(ck) == (set() if honest else {"mass_cancel_missed"}), ck.violations
        assert "XYZ" not in str(ck.violations)  # a mass cancel of GBX leaves XYZ alone


def test_a_mass_cancel_retried_as_a_second_op_is_a_no_op(ck: Checker) -> None:
    rep = FoldOnly(False)  # the second copy of a request folds to nothing: not a violation
    ck.watch_fold("n1", rep, lambda: T0)
    books = {"GBX": Book("GBX")}
    first = acct_op("n1", 1, 1, CANCEL_ALL, "alice", req="r1")
    rep._reqs[first.req_key] = first
    rep._fold_op(books, acct_op("n1", 2, 2, NEW, "alice"))
    rep._fold_op(books, acct_op("n2", 1, 3, CANCEL_ALL, "alice", req="r1"))
    assert ck.ok, ck.violations


@dataclass
class BookReplica(FakeReplica):
    books: dict[str, Book] = field(default_factory=dict)


def test_at_the_end_an_order_below_a_held_mass_cancel_must_not_rest(ck: Checker) -> None:
    new1, new2 = acct_op("n1", 1, 1, NEW, "alice"), acct_op("n1", 3, 3, NEW, "alice")
    mass = acct_op("n1", 2, 2, CANCEL_ALL, "alice", symbol="")
    ck.ops_taken("n1", [new1, mass, new2], T0 + 3, T0 + 3)
    b = Book("GBX")
    b.submit("n1:3", 1, 10_010, 3, 0, "n1:3", "alice")  # placed after the mass cancel: fine
    rep = BookReplica([new1, mass, new2], [], {"n1": 3}, books={"GBX": b})
    ck.final_state({"n1": rep}, [], T0 + 10)
    assert ck.ok, ck.violations
    b.submit("n1:1", 1, 10_010, 3, 0, "n1:1", "alice")  # placed before it, still resting
    ck.final_state({"n1": rep}, [], T0 + 10)
    assert kinds(ck) == {"mass_cancel_missed"}


def test_an_acked_cancel_by_another_account_is_caught(ck: Checker) -> None:
    new1 = acct_op("n1", 1, 1, NEW, "alice")
    cancel = acct_op("n2", 1, 2, CANCEL, "bob", "n1:1", req="r9")
    ck.ops_taken("n1", [new1], T0 + 1, T0 + 1)
    ck.ops_taken("n2", [new1, cancel], T0 + 2, T0 + 2)
    ck.stamp("n2", "r9", cancel)
    rep = FakeReplica([new1, cancel], [], {"n1": 1, "n2": 1})
    ck.final_state({"n2": rep}, [Ack("r9", "n2", CANCEL, "n1:1", 0, T0 + 3)], T0 + 10)
    assert kinds(ck) == {"not_owner_acked"}


def test_a_self_trade_is_caught_unless_stp_is_off(ck: Checker) -> None:
    own = Trade("n1:2/0", "GBX", 10_000, 1, "n1:1", "n1:2", 0, "alice", "alice")
    other = Trade("n1:3/0", "GBX", 10_000, 1, "n1:1", "n1:3", 0, "alice", "bob")
    anon = Trade("n1:4/0", "GBX", 10_000, 1, "n1:1", "n1:4", 0, "", "")
    ck.events("n1", [TradeExecuted(other), TradeExecuted(anon)], T0)
    assert ck.ok
    ck.events("n1", [TradeExecuted(own)], T0)
    assert kinds(ck) == {"self_trade"}
    off = Checker(NODES, MAX_OFFSET, stp_off=frozenset({"GBX"}))
    off.events("n1", [TradeExecuted(own)], T0)
    assert off.ok
    rev = Checker(NODES, MAX_OFFSET)
    rev.events("n1", [TradeExecuted(other), TradeRevised(other, own)], T0)
    assert kinds(rev) == {"self_trade"}
