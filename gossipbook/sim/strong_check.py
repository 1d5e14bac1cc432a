"""The strong-mode checker: the sequencer's invariants, held against what every replica folded.

Theory of operation
-------------------
In strong mode a replica's books are the fold of the committed log in index order
(``core/strong.py``), so the fold *is* each replica's view of the committed log: the simulator
hooks ``SequencedBooks.apply`` (``folded``) and reports every entry a replica folds, with the
outcome, plus the digest each replica shows at its folded index after each step (``digest``) and
the client replies (``replied``). The checker keeps one global log (index -> entry, and the node
and time that first folded it) and holds every replica to it:

- no index is committed with two entries (``commit_conflict``) -- with folding strictly in index
  order (``SequencedBooks.apply`` refuses a gap), this is "committed logs are prefixes of one
  another";
- equal digests at equal folded index (``digest_diverged``);
- every acknowledged (``ok``) request is in the committed log, the ack names the order its first
  commit placed and lists that commit's trades (``lost_ack``, ``ack_mismatch``, ``final_ack_trades``),
  and at the end every replica's fold remembers it with that outcome;
- a request committed again (relayed twice across a leader change) folds once: the later copy makes
  no trades and names the first copy's order (``applied_twice``); a trade id is reported once per
  replica life (``trade_duplicated``) and every replica reports the same trade for an id
  (``trade_conflict``);
- a ``no quorum`` refusal is true: a request refused so never commits, unless a copy of it reached
  some node after the refusal or reached another node (a client retry, a duplicate datagram: those
  may rightly commit) (``no_quorum_lie``);
- accounts: a CANCEL/AMEND whose account is not that of the NEW which placed its order never folds
  to ``ok`` (``not_owner_applied``) nor is acked (``not_owner_acked``); no trade has one non-empty
  account on both sides where STP is on (``self_trade``); at the end no replica's books hold an
  order placed at a lower index than a mass cancel of its account (in scope) it has folded
  (``mass_cancel_missed``).

- at most one leader per term (``two_leaders``: every ``RoleChanged`` to leader is reported here),
  across configuration changes too; membership changes add ``conf_two_pending``, ``conf_diverged``
  (``strong_members.py``).

It shares ``Checker``'s violation registry (``checker.KINDS``, to which it adds its own kinds), so
results read the same in both modes. Plain data in, violations out: ``tests/sim/test_strong_check.py`` feeds it fabricated
histories.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..core.ops import AMEND, CANCEL, CANCEL_ALL, NEW, Op, TradeExecuted, parse_order_id
from ..core.risk import COUNTER_NAMES, HALT, LIMIT, LONG, NOTIONAL, OPEN_BUY, OPEN_SELL, SHORT, counters_of
from ..core.sequencer import LEADER, RoleChanged
from ..core.wire import trade_row
from .checker import KINDS, Checker
from .clock import SEC, T0

for _kind, _what in {
    "two_leaders": "strong: two nodes led the same term (of one sequencer group)",
    "conf_two_pending": "strong: a log gained a configuration entry while an earlier one was uncommitted there",
    "conf_diverged": "strong: nodes of the cluster ended with different configurations",
}.items():
    KINDS.setdefault(_kind, _what)


def _rows(trades: Iterable[Any]) -> list[list[Any]]:
    return sorted([list(r) for r in trades])


def _entry(op: Op | None) -> str:
    if op is None:
        return "no-op"
    return f"{op.origin}:{op.seq} kind {op.kind} req {op.req or '-'}"


@dataclass(slots=True)
class Folded:
    """The first fold of one log index anywhere: the entry and what folding it did."""

    op: Op | None
    node: str
    t: int
    code: int | None  # None: a no-op entry
    order_id: str
    rows: list[list[Any]]
    duplicate: bool  # the fold answered from an earlier commit of the same request


@dataclass(slots=True)
class StrongChecker:
    base: Checker
    log: dict[int, Folded] = field(default_factory=dict)
    first_of: dict[str, int] = field(default_factory=dict)  # request id -> first committed index
    digest_at: dict[int, tuple[str, str]] = field(default_factory=dict)  # index -> (digest, node)
    live: dict[str, dict[str, list[Any]]] = field(default_factory=dict)  # node -> trade id -> row (this life)
    trades: dict[str, tuple[list[Any], str]] = field(default_factory=dict)  # trade id -> (row, node)
    leaders: dict[int, str] = field(default_factory=dict)  # term -> the node that led it
    acks: dict[str, tuple[str, str, list[list[Any]], int]] = field(default_factory=dict)
    refused: dict[str, tuple[str, int]] = field(default_factory=dict)  # req -> (node, t): "no quorum"
    received: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # req -> (node, t) per copy

    def violation(self, kind: str, node: str, t: int, evidence: str) -> None:
        self.base.violation(kind, node, t, evidence)

    # ---- streaming ---------------------------------------------------------------------------------
    def booted(self, node: str) -> None:
        self.live[node] = {}

    def folded(self, node: str, index: int, op: Op | None, outcome: Any, t: int) -> None:
        """``node`` folded committed entry ``index``; ``outcome`` is what ``SequencedBooks.apply`` returned."""
        prior = self.log.get(index)
        if prior is not None:
            if prior.op != op:
                self.violation("commit_conflict", node, t, f"index {index} folded as {_entry(op)} on {node}, "
                               f"as {_entry(prior.op)} on {prior.node} at {(prior.t - T0) / SEC:.3f}s")
            return
        if op is None or outcome is None:
            self.log[index] = Folded(op, node, t, None, "", [], False)
            return
        rows = _rows(outcome.client_rows())
        if op.kind in (CANCEL, AMEND) and outcome.code == 0:
            owner = self.owner_of(op.order_id)
            if owner is not None and owner != op.account:
                self.violation("not_owner_applied", node, t, f"index {index} ({_entry(op)}, by {op.account or '-'}) "
                               f"folded ok on {op.order_id}, an order of {owner}")
        first = self.first_of.get(op.req)
        dup = first is not None and first < index
        self.log[index] = Folded(op, node, t, outcome.code, outcome.order_id, rows, dup)
        if dup:
            kept = self.log[first]
            if outcome.trades or outcome.order_id != kept.order_id:
                self.violation("applied_twice", node, t, f"request {op.req} committed at {first} and again at "
                               f"{index}; the second fold made {len(outcome.trades)} trades and names "
                               f"{outcome.order_id} (the first: {kept.order_id})")
        elif first is None:
            self.first_of[op.req] = index

    def owner_of(self, order_id: str) -> str | None:
        """The account of the NEW whose commit placed ``order_id`` (``origin:index``, or with shards
        ``origin#shard:index``: this checker holds one shard's log), if known."""
        p = parse_order_id(order_id)
        f = self.log.get(p[1]) if p is not None else None
        origin = p[0].partition("#")[0] if p is not None else ""
        if f is None or f.op is None or f.op.kind != NEW or f.duplicate or f.op.origin != origin:
            return None
        return f.op.account

    def events(self, node: str, evs: Iterable[Any], t: int) -> None:
        live = self.live.setdefault(node, {})
        for ev in evs:
            if type(ev) is RoleChanged and ev.role is LEADER:  # (a shard's are ShardRoleChanged: its own terms)
                other = self.leaders.setdefault(ev.term, node)
                if other != node:
                    self.violation("two_leaders", node, t, f"{node} and {other} both led term {ev.term}")
                continue
            if type(ev) is not TradeExecuted:
                continue
            self.base.self_trade(node, ev.trade, t)
            row = trade_row(ev.trade)
            tid = row[0]
            if tid in live:
                self.violation("trade_duplicated", node, t, f"trade {tid} reported twice: {live[tid]} then {row}")
            live[tid] = row
            seen = self.trades.get(tid)
            if seen is None:
                self.trades[tid] = (row, node)
            elif seen[0] != row:
                self.violation("trade_conflict", node, t, f"trade {tid} is {seen[0]} on {seen[1]}, {row} on {node}")

    def digest(self, node: str, index: int, digest: str, t: int) -> None:
        seen = self.digest_at.get(index)
        if seen is None:
            self.digest_at[index] = (digest, node)
        elif seen[0] != digest:
            self.violation("digest_diverged", node, t, f"at folded index {index}: {node} has {digest[:12]}, "
                           f"{seen[1]} had {seen[0][:12]}")

    def submitted(self, node: str, req: str, t: int) -> None:
        """A copy of client request ``req`` reached ``node`` at ``t``."""
        self.received.setdefault(req, []).append((node, t))

    def replied(self, node: str, req: str, code: int, order_id: str, rows: list[list[Any]], t: int,
                ok: int = 0, no_quorum: int = 4) -> None:
        if code == ok:
            self.acks.setdefault(req, (node, order_id, _rows(rows), t))
        elif code == no_quorum:
            self.refused.setdefault(req, (node, t))

    # ---- end of run --------------------------------------------------------------------------------
    def final_state(self, folds: Mapping[str, Any], t: int) -> None:
        """``folds``: node -> its ``SequencedBooks`` at the end."""
        for req, (node, order_id, rows, at) in self.acks.items():
            first = self.first_of.get(req)
            if first is None:
                self.violation("lost_ack", node, at, f"request {req} acked by {node} at {(at - T0) / SEC:.3f}s "
                               f"is in no replica's committed log")
                continue
            f = self.log[first]
            if f.op is not None and f.op.kind in (CANCEL, AMEND):
                owner = self.owner_of(f.op.order_id)
                if owner is not None and owner != f.op.account:
                    self.violation("not_owner_acked", node, at, f"request {req} ({_entry(f.op)}, by "
                                   f"{f.op.account or '-'}) acked: {f.op.order_id} is an order of {owner}")
            if f.code != 0 or order_id != f.order_id:
                self.violation("ack_mismatch", node, at, f"request {req}: ack names {order_id or '-'}, its "
                               f"commit at {first} folded to code {f.code}, order {f.order_id}")
            elif rows != f.rows:
                self.violation("final_ack_trades", node, at, f"request {req}: ack lists {rows}, its commit at "
                               f"{first} made {f.rows}")
            for n, fold in folds.items():
                have = fold.reqs.get(f.op.req_key if f.op is not None else req)
                if have is not None and (have[0], have[1]) != (f.code, f.order_id):
                    self.violation("ack_mismatch", n, t, f"request {req}: {n}'s fold remembers {have[:2]}, the "
                                   f"commit at {first} was {(f.code, f.order_id)}")
        for req, (node, at) in self.refused.items():
            # copies that reached a node at the refusal's instant count as later (the refusal is
            # seen when the step's replies leave, after every datagram of the step was handled)
            if req in self.first_of and all(n == node and rt < at for n, rt in self.received.get(req, ())):
                self.violation("no_quorum_lie", node, at, f"{node} answered request {req} 'no quorum' at "
                               f"{(at - T0) / SEC:.3f}s, but it committed at index {self.first_of[req]}")
        self._mass_cancels(folds, t)
        for n, fold in folds.items():
            if fold.op_count > len(fold.reqs) and len(fold.reqs) < fold.dedupe_window:
                self.violation("applied_twice", n, t, f"{n} folded {fold.op_count} requests but remembers "
                               f"{len(fold.reqs)} request ids")

    def _mass_cancels(self, folds: Mapping[str, Any], t: int) -> None:
        """No order rests on a replica below a mass cancel (of its account, in scope) it has folded."""
        mass = sorted((i, f.op) for i, f in self.log.items()
                      if f.op is not None and f.op.kind == CANCEL_ALL and f.op.account and f.code == 0
                      and not f.duplicate)
        if not mass:
            return
        for n, fold in folds.items():
            last: dict[tuple[str, str], int] = {}  # (account, symbol or "") -> highest index folded here
            for i, op in mass:
                if i <= fold.index:
                    last[(op.account, op.symbol)] = i
            if not last:
                continue
            for sym, b in sorted(fold.books.items()):
                for _side, _price, oid, _q, acct in b.entries():
                    c = max(last.get((acct, sym), 0), last.get((acct, ""), 0))
                    p = parse_order_id(oid)
                    if c and p is not None and p[1] < c:
                        self.violation("mass_cancel_missed", n, t, f"order {oid} of {acct} rests in {sym} on {n} "
                                       f"(folded to {fold.index}) after the mass cancel at index {c}")
                        break

    # ---- risk (issue 17) ------------------------------------------------------------------------------
    def risk_check(self, fold: Any, node: str, t: int) -> None:
        """``fold``'s books at its folded index against the limits the log set before each order:
        open quantity and notional from its books, positions from the trade rows every node
        reported and the committed entries that made them (not from the fold's own risk state)."""
        upto = fold.index
        limits: dict[tuple[str, str, int], int] = {}
        first: dict[tuple[str, str, int], int] = {}  # key -> the index of its first limit
        halted: dict[str, bool] = {}
        for i in sorted(i for i in self.log if i <= upto):
            f = self.log[i]
            op = f.op
            if op is None or f.code != 0 or f.duplicate:
                continue
            if op.kind == LIMIT:
                for c in counters_of(op.tif):
                    key = (op.order_id, op.symbol, c)
                    if op.side == 1:
                        limits.pop(key, None)
                    else:
                        limits[key] = op.qty
                        first.setdefault(key, i)
            elif op.kind == HALT:
                halted[op.order_id] = op.side == 0
        if not limits and not any(halted.values()):
            return

        def counted(oid: str, key: tuple[str, str, int]) -> bool:
            p = parse_order_id(oid)
            return p is not None and key in first and p[1] > first[key]

        trades = []
        for tid, (row, _n) in self.trades.items():
            cause = parse_order_id(tid.rpartition("/")[0])
            if cause is None or cause[1] > upto:
                continue
            trades.append((row, self.log.get(cause[1])))
        for key, lim in sorted(limits.items()):
            acct, scope, c = key
            open_q = {0: 0, 1: 0}
            open_n = 0
            for sym, b in fold.books.items():
                if scope and sym != scope:
                    continue
                for side, price, oid, q, a in b.entries():
                    if a == acct and counted(oid, key):
                        open_q[side] += q
                        open_n += q * price
            pos: dict[str, list[int]] = {}
            for row, cause_f in trades:
                _tid, price, qty, maker, taker = row[:5]
                for oid, is_taker in ((maker, False), (taker, True)):
                    p = parse_order_id(oid)
                    nf = self.log.get(p[1]) if p is not None else None
                    if nf is None or nf.op is None or nf.op.account != acct or not counted(oid, key):
                        continue
                    if scope and nf.op.symbol != scope:
                        continue
                    val = price
                    if is_taker and cause_f is not None and cause_f.op is not None and cause_f.op.price:
                        val = cause_f.op.price
                    sign = 1 if nf.op.side == 0 else -1
                    r = pos.setdefault(nf.op.symbol, [0, 0])
                    r[0] += sign * qty
                    r[1] += sign * qty * val
            q = sum(v[0] for v in pos.values())
            got = {OPEN_BUY: open_q[0], OPEN_SELL: open_q[1], LONG: q + open_q[0], SHORT: open_q[1] - q,
                   NOTIONAL: open_n + sum(abs(v[1]) for v in pos.values())}[c]
            if got > lim:
                self.violation("risk_exceeded", node, t, f"{acct}'s {COUNTER_NAMES[c]} exposure in "
                               f"{scope or 'every instrument'} is {got} at committed index {upto}, limit {lim}")
        for sym, b in sorted(fold.books.items()):
            for _side, _price, oid, _q, a in b.entries():
                if halted.get(a):
                    self.violation("risk_disabled_rested", node, t, f"order {oid} of {a} rests in {sym} at "
                                   f"committed index {upto} while the kill switch has it disabled")
                    return

    def committed_new_orders(self) -> int:
        return sum(1 for f in self.log.values() if f.op is not None and f.op.kind == NEW and not f.duplicate)
