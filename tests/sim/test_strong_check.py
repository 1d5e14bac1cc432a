"""The strong-mode checker fails on each broken history it exists to catch, and passes a clean one.

Histories are fabricated (no simulation): entries as ``SequencedBooks.apply`` folds them, outcomes
as it returns them, replies as clients get them. A checker that cannot fail proves nothing.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from gossipbook.core.book import BUY, GTC, SELL, Book, Trade
from gossipbook.core.node import E_NOT_OWNER
from gossipbook.core.ops import CANCEL, CANCEL_ALL, NEW, Op, TradeExecuted
from gossipbook.core.strong import Outcome
from gossipbook.sim.checker import Checker
from gossipbook.sim.clock import T0
from gossipbook.sim.strong_check import StrongChecker

IDS = ["n1", "n2", "n3"]


def new(index: int, req: str, side: int = BUY, leader: str = "n1") -> Op:
    return Op(T0 + index, 0, leader, index, NEW, "GBX", "", side, 100, 1, GTC, req)


def checker() -> tuple[Checker, StrongChecker]:
    base = Checker(IDS, 250_000_000)
    return base, StrongChecker(base)


def fold_view(reqs: dict[str, tuple[int, str, list[Any]]], op_count: int | None = None) -> Any:
    """``reqs`` keyed as the fold keys them: ``Op.req_key`` ("ACCOUNT/REQ"; these ops carry no account)."""
    return SimpleNamespace(reqs=reqs, op_count=len(reqs) if op_count is None else op_count, dedupe_window=50_000)


def trade(cause: str, n: int = 0) -> Trade:
    return Trade(f"{cause}/{n}", "GBX", 100, 1, "n1:1", cause, BUY)


def row(t: Trade) -> list[Any]:
    return [t.trade_id, t.price, t.qty, t.maker, t.taker]


def clean_history(sc: StrongChecker) -> None:
    """n1 leads: a resting sell, then a buy that trades with it; both folded on all three nodes."""
    sell, buy = new(1, "r1", SELL), new(2, "r2", BUY)
    t = trade("n1:2")
    for n in IDS:
        sc.booted(n)
        sc.folded(n, 1, sell, Outcome(0, "ok", "n1:1"), T0 + 10)
        sc.folded(n, 2, buy, Outcome(0, "ok", "n1:2", (t,)), T0 + 20)
        sc.events(n, [TradeExecuted(t)], T0 + 20)
        sc.digest(n, 2, "d2", T0 + 20)
    sc.replied("n1", "r1", 0, "n1:1", [], T0 + 30)
    sc.replied("n2", "r2", 0, "n1:2", [row(t)], T0 + 30)


def folds_after_clean() -> dict[str, Any]:
    t = trade("n1:2")
    return {n: fold_view({"/r1": (0, "n1:1", []), "/r2": (0, "n1:2", [row(t)])}) for n in IDS}


def test_a_clean_history_passes() -> None:
    base, sc = checker()
    clean_history(sc)
    sc.final_state(folds_after_clean(), T0 + 40)
    assert base.ok, base.violations


def test_two_entries_at_one_index_is_a_commit_conflict() -> None:
    base, sc = checker()
    clean_history(sc)
    sc.folded("n3", 2, new(2, "r9", leader="n2"), Outcome(0, "ok", "n2:2"), T0 + 50)
    assert set(base.counts) == {"commit_conflict"}


def test_different_digests_at_one_index_diverge() -> None:
    base, sc = checker()
    clean_history(sc)
    sc.digest("n3", 2, "something else", T0 + 50)
    assert set(base.counts) == {"digest_diverged"}


def test_an_acked_request_missing_from_the_log_is_lost() -> None:
    base, sc = checker()
    clean_history(sc)
    sc.replied("n3", "r3", 0, "n1:3", [], T0 + 50)
    sc.final_state(folds_after_clean(), T0 + 60)
    assert set(base.counts) == {"lost_ack"}


def test_an_ack_naming_another_order_or_other_trades_is_caught() -> None:
    base, sc = checker()
    clean_history(sc)
    sc.acks["r1"] = ("n1", "n1:7", [], T0 + 30)
    sc.final_state(folds_after_clean(), T0 + 60)
    assert set(base.counts) == {"ack_mismatch"}
    base, sc = checker()
    clean_history(sc)
    sc.acks["r2"] = ("n2", "n1:2", [], T0 + 30)  # the fill left out
    sc.final_state(folds_after_clean(), T0 + 60)
    assert set(base.counts) == {"final_ack_trades"}


def test_a_second_commit_of_a_request_must_fold_to_nothing() -> None:
    base, sc = checker()
    clean_history(sc)
    again = new(3, "r2")
    sc.folded("n1", 3, again, Outcome(0, "ok", "n1:2", (), [row(trade("n1:2"))]), T0 + 50)  # a proper repeat
    assert base.ok
    base, sc = checker()
    clean_history(sc)
    sc.folded("n1", 3, again, Outcome(0, "ok", "n1:3", (trade("n1:3"),)), T0 + 50)  # folded as a new order
    assert set(base.counts) == {"applied_twice"}


def test_a_trade_reported_twice_or_two_ways_is_caught() -> None:
    base, sc = checker()
    clean_history(sc)
    sc.events("n1", [TradeExecuted(trade("n1:2"))], T0 + 50)
    assert set(base.counts) == {"trade_duplicated"}
    base, sc = checker()
    clean_history(sc)
    sc.booted("n3")  # a restart refolds: reporting the trade again in a new life is fine...
    sc.events("n3", [TradeExecuted(trade("n1:2"))], T0 + 50)
    assert base.ok
    sc.booted("n3")
    sc.events("n3", [TradeExecuted(trade("n1:2")._replace(qty=2))], T0 + 60)  # ...another version is not
    assert set(base.counts) == {"trade_conflict"}


def test_a_no_quorum_refusal_that_committed_is_a_lie_unless_a_copy_came_later_or_elsewhere() -> None:
    def refused_r2(copies: list[tuple[str, int]]) -> Checker:
        base, sc = checker()
        clean_history(sc)
        for node, t in copies:
            sc.submitted(node, "r2", t)
        sc.replied("n3", "r2", 4, "", [], T0 + 15)
        sc.final_state(folds_after_clean(), T0 + 60)
        return base

    assert refused_r2([("n3", T0 + 5), ("n2", T0 + 6)]).ok  # the client also sent it to n2
    assert refused_r2([("n3", T0 + 5), ("n3", T0 + 15)]).ok  # a retry reached n3 after (or as) it refused
    assert set(refused_r2([("n3", T0 + 5), ("n3", T0 + 9)]).counts) == {"no_quorum_lie"}


def test_a_fold_that_forgets_a_request_is_caught() -> None:
    base, sc = checker()
    clean_history(sc)
    folds = folds_after_clean()
    folds["n2"] = fold_view({"/r1": (0, "n1:1", []), "/r2": (0, "n1:9", [])})
    sc.final_state(folds, T0 + 60)
    assert set(base.counts) == {"ack_mismatch"}
    base, sc = checker()
    clean_history(sc)
    folds = folds_after_clean()
    folds["n3"] = fold_view({"/r1": (0, "n1:1", [])}, op_count=2)
    sc.final_state(folds, T0 + 60)
    assert set(base.counts) == {"applied_twice"}


# ---- accounts (issue 14) ---------------------------------------------------------------------------
def acct(index: int, kind: int, account: str, req: str, order_id: str = "", symbol: str = "GBX") -> Op:
    return Op(T0 + index, 0, "n1", index, kind, symbol, order_id, SELL, 100, 1, GTC, req, account)


def test_a_cancel_by_another_account_folded_ok_or_acked_is_caught() -> None:
    for code in (E_NOT_OWNER, 0):
        base, sc = checker()
        sc.booted("n1")
        sc.folded("n1", 1, acct(1, NEW, "alice", "r1"), Outcome(0, "ok", "n1:1"), T0 + 1)
        sc.folded("n1", 2, acct(2, CANCEL, "bob", "r2", "n1:1"), Outcome(code, "x", "n1:1"), T0 + 2)
        sc.folded("n1", 3, acct(3, CANCEL, "alice", "r3", "n1:1"), Outcome(0 if code else 2, "x", "n1:1"), T0 + 3)
        sc.replied("n1", "r2", code, "n1:1", [], T0 + 4)
        sc.final_state({}, T0 + 5)
        assert set(base.counts) == (set() if code else {"not_owner_applied", "not_owner_acked"}), base.violations


def test_an_order_resting_below_a_folded_mass_cancel_is_caught() -> None:
    for stays in ("n1:3", "n1:1"):
        base, sc = checker()
        sc.booted("n1")
        sc.folded("n1", 1, acct(1, NEW, "alice", "r1"), Outcome(0, "ok", "n1:1"), T0 + 1)
        sc.folded("n1", 2, acct(2, CANCEL_ALL, "alice", "r2", symbol=""), Outcome(0, "ok", "n1:2"), T0 + 2)
        sc.folded("n1", 3, acct(3, NEW, "alice", "r3"), Outcome(0, "ok", "n1:3"), T0 + 3)
        b = Book("GBX")
        b.submit(stays, SELL, 100, 1, GTC, stays, "alice")
        view = SimpleNamespace(reqs={}, op_count=0, dedupe_window=50_000, index=3, books={"GBX": b})
        sc.final_state({"n1": view}, T0 + 5)
        assert set(base.counts) == (set() if stays == "n1:3" else {"mass_cancel_missed"}), base.violations


def test_a_self_trade_reported_in_strong_mode_is_caught() -> None:
    base, sc = checker()
    sc.booted("n1")
    sc.events("n1", [TradeExecuted(Trade("n1:2/0", "GBX", 100, 1, "n1:1", "n1:2", BUY, "alice", "alice"))], T0)
    assert set(base.counts) == {"self_trade"}
