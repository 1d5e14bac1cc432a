"""The checker: DESIGN.md's invariants, held against everything a simulation run observed.

Theory of operation
-------------------
The simulator reports to the checker as the run goes (``ops_taken``, ``issued``, ``events``,
``finalized_ops``, ``stamp``, ``replied``) and once at the end (``final_state``, ``liveness``). The
checker keeps its own books (every op id ever seen, each node's last issued HLC, the trades each
node reported, every trade some node called final) and never trusts a replica's word where it can
recompute. Each broken rule becomes a ``Violation`` with its first evidence; the kinds are
``KINDS``. The checker is plain data in, violations out, so tests feed it fabricated histories and
watch it fail (``tests/sim/test_checker.py``): a checker that cannot fail proves nothing.

Invariants (DESIGN.md, "Invariants every test harness checks"):

1. Convergence: after the last heal every replica reaches one digest (and one version vector)
   within the bound; and, when clocks are within ``max_offset`` of each other, every op becomes final.
2. No acknowledged op lost (each acked op is in every replica's op-set at the end, and an op acked
   ``replicated`` was on a majority of disks when the reply left); no op applied twice (op ids in
   the fold are unique, and the fold's size equals the version vector's); no trade duplicated (a
   trade id is reported once unless revised, and is unique in each replica's trade list).
3. A final trade is never revised: no node revises a trade it declared final itself (a lagging
   replica may still revise its *provisional* copy of a trade another node calls final), no two
   nodes (or one node across a restart) declare different versions of one final trade, and a
   ``final`` ack's trades are the final ones.
4. HLC: the timestamps a node issues (its ops and heartbeats, across restarts) strictly increase
   and its seqs go 1, 2, 3...; no node applies or adopts a timestamp more than ``max_offset`` ahead
   of its own physical clock; one op id never names two different ops.
5. Accounts (issue 14): no replica ever applies a CANCEL or AMEND of an order by another account
   than the order's owner (``watch_fold`` wraps each replica's fold step and compares the order
   before and after: a non-owner's op must leave it as it was), and no node acks one
   (``not_owner_acked``); no trade has one non-empty account as both maker and taker unless the
   instrument's ``stp`` is "off" (``self_trade``); once a mass cancel folds, no order of its account
   in its scope (its symbol, or every book) rests, checked right after each fold of it and, at the
   end, on every replica against every mass cancel it holds: an order whose NEW sorts before a
   mass cancel of its account must not rest (``mass_cancel_missed``).
6. Risk (issue 17, with a risk workload): no account's exposure exceeds its limit in the converged
   view of everything stamped so far (``risk_exceeded``). The checker keeps its own replica of every
   op any node stamped (``oracle``: the state every replica converges to) and, every
   ``RISK_SAMPLE_NS`` and at the end, counts each limited account's open orders, position and
   notional against each limit. A limit binds the orders a node stamped while it held that limit
   (``risk_stamped``: read off the node's version vector, not its word); and once a disabling
   kill switch folds, no order of its account rests after it (``risk_disabled_rested``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..core.book import Book, Trade
from ..core.ops import AMEND, CANCEL, CANCEL_ALL, NEW, Op, TradeExecuted, TradeRevised, parse_order_id
from ..core.risk import (
    COUNTER_NAMES,
    HALT,
    LIMIT,
    LONG,
    NOTIONAL,
    OPEN_BUY,
    OPEN_SELL,
    OPERATOR,
    SHORT,
    counters_of,
)
from .clock import SEC, T0

KINDS: dict[str, str] = {
    "convergence": "replicas did not reach one digest within the bound after the last heal",
    "finality_stalled": "with healthy clocks, some op never became final after the heal",
    "lost_ack": "an acknowledged op is missing from a replica's op-set",
    "ack_unreplicated": "an op acked 'replicated' was not on a majority of disks when the reply left",
    "ack_mismatch": "an ack names another order than the op the node stamped for the request",
    "ack_wrong_order": "a node acked a request as a new order after it had already placed that request",
    "applied_twice": "an op is folded more than once",
    "trade_duplicated": "a trade is reported or held twice",
    "silent_revision": "a replica's trades changed without a TradeRevised event",
    "final_revised": "a trade some node declared final was revised",
    "final_disagree": "two nodes declared different versions of one final trade",
    "final_ack_trades": "a 'final' ack reported trades that are not the final ones",
    "hlc_order": "a node issued an HLC timestamp at or below one it issued before",
    "seq_order": "a node's own op seqs are not 1, 2, 3, ...",
    "op_conflict": "one op id names two different ops",
    "hlc_offset": "a node applied or adopted a timestamp beyond its clock + max_offset",
    "finality_counter": "a replica counted a rollback below its own stable watermark",
    "core_error": "the core raised an exception on valid input",
    "runaway": "the run was stopped after too many node steps (a message storm or a livelock)",
    # strong mode (strong_check.py)
    "commit_conflict": "strong: one log index was committed (folded) with two different entries",
    "digest_diverged": "strong: two replicas show different digests at the same folded index",
    "trade_conflict": "strong: two replicas report different trades under one trade id",
    "no_quorum_lie": "strong: a request refused with 'no quorum' was committed anyway",
    "remote_error": "the core refused a message an honest peer sent",
    # accounts (both modes)
    "not_owner_applied": "a cancel or amend by an account other than the order's owner was applied",
    "not_owner_acked": "a cancel or amend by an account other than the order's owner was acknowledged",
    "self_trade": "a trade has one account as maker and taker (self-trade prevention is on)",
    "mass_cancel_missed": "an order of an account rests after a mass cancel of that account folded after it",
    # risk limits (issue 17)
    "risk_exceeded": "an account's exposure in the converged view passed one of its risk limits",
    "risk_disabled_rested": "an order of an account rests after the kill switch disabled it",
    # run-time membership (issue 20, members.py)
    "removed_op_applied": "a replica holds an op of a removed member above its fence",
    "membership_stalled": "an operator's membership command was never acknowledged",
}
RISK_SAMPLE_NS = 200_000_000  # how often the converged view is checked against the limits
#: the book's own owner lookup, taken before any ``--break`` can patch it: the checker's reference
_OWNER: Callable[[Book, str], str | None] = Book.owner
MAX_EVIDENCE = 3  # per kind: the first few are enough to start debugging


@dataclass(frozen=True, slots=True)
class Violation:
    kind: str
    node: str
    t_ns: int  # true time offset from the start of the run
    evidence: str

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "node": self.node, "t_s": round(self.t_ns / SEC, 6), "evidence": self.evidence}

    def __str__(self) -> str:
        return f"{self.kind} at {self.t_ns / SEC:.3f}s on {self.node or '-'}: {self.evidence}"


def _ts(x: Any) -> str:
    return f"({x[0] - T0 if x[0] > T0 // 2 else x[0]}, {x[1]})"


def _op(op: Op) -> str:
    return f"{op.op_id}@{_ts((op.wall, op.logical))}"


@dataclass(slots=True)
class Checker:
    """Observes one run; ``violations`` holds the first evidence of each kind (``counts``: all)."""

    nodes: Sequence[str]
    max_offset_ns: int
    violations: list[Violation] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    ops_by_id: dict[tuple[str, int], Op] = field(default_factory=dict)
    last_issued: dict[str, tuple[int, int]] = field(default_factory=dict)
    last_seq: dict[str, int] = field(default_factory=dict)
    live: dict[str, dict[str, Trade]] = field(default_factory=dict)  # per node incarnation
    final: dict[str, Trade] = field(default_factory=dict)
    final_by: dict[str, str] = field(default_factory=dict)
    final_on: dict[str, set[str]] = field(default_factory=dict)  # node -> trade ids it declared final
    revised_ids: set[str] = field(default_factory=set)
    stamped: dict[tuple[str, str], Op] = field(default_factory=dict)  # (node, req) -> op
    unreported: dict[str, int] = field(default_factory=dict)  # trades of a snapshot a node booted from
    stp_off: frozenset[str] = frozenset()  # symbols whose instrument has ``stp = "off"``
    #: risk: every op any node stamped, folded in one replica (None: no risk workload)
    oracle: Any = None
    risk_counted: dict[str, set[tuple[str, str, int]]] = field(default_factory=dict)  # order id -> limits it binds
    limit_ops: dict[str, Op] = field(default_factory=dict)  # every LIMIT / HALT op seen, by op id
    risk_samples: int = 0

    # ---- bookkeeping ------------------------------------------------------------------------------
    def violation(self, kind: str, node: str, t: int, evidence: str) -> None:
        assert kind in KINDS, kind
        n = self.counts.get(kind, 0)
        self.counts[kind] = n + 1
        if n < MAX_EVIDENCE:
            self.violations.append(Violation(kind, node, t - T0 if t >= T0 else t, evidence))

    @property
    def ok(self) -> bool:
        return not self.counts

    def first(self) -> list[Violation]:
        """The first violation of each kind, in order of appearance."""
        seen: set[str] = set()
        out = []
        for v in self.violations:
            if v.kind not in seen:
                seen.add(v.kind)
                out.append(v)
        return out

    # ---- accounts ----------------------------------------------------------------------------------
    def self_trade(self, node: str, tr: Any, t: int) -> None:
        """A trade (``Trade``) with one non-empty account on both sides, where STP is on."""
        if tr.maker_account and tr.maker_account == tr.taker_account and tr.symbol not in self.stp_off:
            self.violation("self_trade", node, t, f"trade {tr.trade_id} on {node}: {tr.maker_account} "
                           f"traded with itself (maker {tr.maker}, taker {tr.taker})")

    def watch_fold(self, node: str, replica: Any, clock: Callable[[], int]) -> None:
        """Wrap ``replica``'s fold step (``Replica._fold_op``, through ``Replica.fold_hook``) to check each op
        as it folds, in every fold the replica runs (live, replay, compaction): a CANCEL/AMEND of an
        order resting under another account leaves it unchanged; after a CANCEL_ALL no order of its
        account rests in its scope. ``clock()``: the true time, for the evidence."""
        orig = replica._fold_op
        is_retry = getattr(replica, "_is_retry", None)  # the fold's own test, where it has one

        def retry(op: Op) -> bool:
            """Whether the fold takes ``op`` for a retry of its request (a no-op), asked before it folds."""
            if is_retry is not None:
                return bool(is_retry(op))
            first = replica._reqs.get(op.req_key)
            return first is not None and (first if isinstance(first, str) else first.op_id) != op.op_id

        def fold_op(books: Mapping[str, Book], op: Op) -> list[Trade]:
            kind = op.kind
            if kind == CANCEL or kind == AMEND:
                b = books.get(op.symbol)
                owner = None if b is None else _OWNER(b, op.order_id)
                if b is None or owner is None or owner == op.account:
                    return orig(books, op)
                before = b.order(op.order_id)
                trades = orig(books, op)
                after = b.order(op.order_id)
                if after != before or trades:
                    self.violation("not_owner_applied", node, clock(), f"{node} folded {_op(op)} "
                                   f"({'cancel' if kind == CANCEL else 'amend'} by {op.account or '-'}) on "
                                   f"{op.order_id} of {owner}: {before} -> {after}"
                                   f"{f', {len(trades)} trades' if trades else ''}")
                return trades
            if kind == CANCEL_ALL and op.account:
                if op.req and retry(op):
                    return orig(books, op)  # a retry of a request already folded: a no-op (as _fold_op)
                trades = orig(books, op)
                for sym in ([op.symbol] if op.symbol else sorted(books)):
                    b = books.get(sym)
                    left = b.orders_of(op.account) if b is not None else []
                    if left:
                        self.violation("mass_cancel_missed", node, clock(), f"{node} folded mass cancel "
                                       f"{_op(op)} of {op.account} ({op.symbol or 'all'}); {len(left)} of its "
                                       f"orders still rest in {sym}, e.g. {left[0][2]}")
                return trades
            return orig(books, op)

        if hasattr(replica, "fold_hook"):  # a Replica (compiled or not): its hook for this
            replica.fold_hook = fold_op
        else:  # a stand-in fold step (tests)
            replica._fold_op = fold_op

    # ---- risk -----------------------------------------------------------------------------------------
    def risk_stamped(self, node: str, op: Op, replica: Any) -> None:
        """``node`` just stamped ``op``: a NEW binds each limit whose setting op the node held."""
        if op.kind in (LIMIT, HALT):
            self.limit_ops[op.op_id] = op
            return
        if op.kind != NEW or not op.account:
            return
        keys = {(lop.order_id, lop.symbol, c) for lop in self.limit_ops.values()
                if lop.kind == LIMIT and lop.order_id == op.account and lop.side == 0 and lop.account == OPERATOR
                and lop.symbol in ("", op.symbol) and replica.holds(lop.origin, lop.seq) for c in counters_of(lop.tif)}
        if keys:
            self.risk_counted[op.op_id] = keys

    def risk_check(self, t: int) -> None:
        """The converged view (the oracle) against every limit in force there."""
        o = self.oracle
        if o is None:
            return
        self.risk_samples += 1
        st = o.risk.state()
        for key, lim in sorted(st.limits.items()):
            got = risk_exposure(o, key, self.risk_counted)
            if got > lim:
                self.violation("risk_exceeded", "", t, f"{key[0]}'s {COUNTER_NAMES[key[2]]} exposure in "
                               f"{key[1] or 'every instrument'} is {got} in the converged view, limit {lim}")
        for sym, b in sorted(o.books.items()):
            for _side, _price, oid, _q, acct in b.entries():
                if acct in st.halted:
                    self.violation("risk_disabled_rested", "", t, f"order {oid} of {acct} rests in {sym} "
                                   f"while the kill switch has it disabled")
                    return

    def _owner_of(self, order_id: str) -> str | None:
        """The account of the NEW that placed ``order_id`` (eventual mode: ``origin:seq``)."""
        p = parse_order_id(order_id)
        new = self.ops_by_id.get(p) if p is not None else None
        return new.account if new is not None and new.kind == NEW else None

    def _mass_cancels(self, r: Any) -> dict[tuple[str, str], Op]:
        """The latest CANCEL_ALL ``r`` holds per (account, symbol or ""); of several ops of one request
        (a retry stamped twice) only the lowest folds, the others are no-ops."""
        firsts: dict[str, Op] = {}
        for o in self.ops_by_id.values():
            if o.kind == CANCEL_ALL and o.account and r.holds(o.origin, o.seq):
                k = o.req_key or o.op_id
                if k not in firsts or o < firsts[k]:
                    firsts[k] = o
        last: dict[tuple[str, str], Op] = {}
        for o in firsts.values():
            k2 = (o.account, o.symbol)
            if k2 not in last or last[k2] < o:
                last[k2] = o
        return last

    # ---- streaming observations -------------------------------------------------------------------
    def booted(self, node: str, refeed_events: Iterable[Any] = (), snapshot_trades: int = 0) -> None:
        """A node (re)started: its event stream starts over from what it re-read from disk (a
        snapshot's trades are not reported again: they were final, and reported, before)."""
        self.live[node] = {}
        self.unreported[node] = snapshot_trades
        self.events(node, refeed_events, 0)

    def ops_taken(self, node: str, ops: Iterable[Op], now_local: int, t: int) -> None:
        """Ops a node added to its op-set during one step (what it persists), at its clock ``now_local``."""
        limit = now_local + self.max_offset_ns
        for op in ops:
            key = (op.origin, op.seq)
            prior = self.ops_by_id.get(key)
            if prior is not None and prior != op:
                self.violation("op_conflict", node, t, f"{op.op_id} is {_op(prior)} and {_op(op)}")
            if op.origin == node:
                if prior is None:
                    self._own(node, op, t)
            else:
                if op.wall > limit:
                    self.violation("hlc_offset", node, t, f"applied {_op(op)}: wall is "
                                   f"{(op.wall - now_local) / 1e6:.1f} ms ahead of {node}'s clock "
                                   f"(max offset {self.max_offset_ns / 1e6:.0f} ms)")
                if prior is None:
                    self.violation("op_conflict", node, t, f"{op.op_id} reached {node} before its origin issued it")
            if prior is None:
                self.ops_by_id[key] = op
                if self.oracle is not None:
                    if op.kind in (LIMIT, HALT):
                        self.limit_ops[op.op_id] = op
                    self.oracle.receive([op], 1 << 62)

    def _own(self, node: str, op: Op, t: int) -> None:
        last = self.last_seq.get(node, 0)
        if op.seq != last + 1:
            self.violation("seq_order", node, t, f"{node} stamped seq {op.seq} after seq {last}")
        self.last_seq[node] = max(last, op.seq)
        self.issued(node, (op.wall, op.logical), t, f"op {op.op_id}")

    def issued(self, node: str, ts: tuple[int, int], t: int, what: str = "heartbeat") -> None:
        """A timestamp ``node`` issued (an op it stamped, a heartbeat it sent): strictly increasing."""
        prev = self.last_issued.get(node)
        if prev is not None and tuple(ts) <= prev:
            self.violation("hlc_order", node, t, f"{what} stamped {_ts(ts)} after {node} had issued {_ts(prev)}")
        if prev is None or tuple(ts) > prev:
            self.last_issued[node] = (ts[0], ts[1])

    def adopted(self, node: str, before: tuple[int, int], after: tuple[int, int], now_local: int, t: int) -> None:
        """The node's HLC moved from ``before`` to ``after`` during a step at its clock ``now_local``."""
        if after[0] > before[0] and after[0] > now_local + self.max_offset_ns:
            self.violation("hlc_offset", node, t, f"HLC jumped to {_ts(after)}, "
                           f"{(after[0] - now_local) / 1e6:.1f} ms ahead of {node}'s clock")

    def events(self, node: str, evs: Iterable[Any], t: int) -> None:
        live = self.live.setdefault(node, {})
        for ev in evs:
            if type(ev) is TradeExecuted:
                tr = ev.trade
                if tr.trade_id in live:
                    self.violation("trade_duplicated", node, t, f"trade {tr.trade_id} reported again "
                                   f"without a revision: {live[tr.trade_id]} then {tr}")
                live[tr.trade_id] = tr
                self.self_trade(node, tr, t)
            elif type(ev) is TradeRevised:
                old, new = ev.old, ev.new
                self.revised_ids.add(old.trade_id)
                if live.get(old.trade_id) != old:
                    self.violation("silent_revision", node, t, f"revision of trade {old.trade_id} "
                                   f"from {old}, but {node} had reported {live.get(old.trade_id)}")
                if old.trade_id in self.final_on.get(node, ()) and new != old:
                    self.violation("final_revised", node, t, f"{node} revised trade {old.trade_id}, which it "
                                   f"had declared final, from {old} to {new}")
                if new is None:
                    live.pop(old.trade_id, None)
                else:
                    live[new.trade_id] = new
                    self.self_trade(node, new, t)

    def finalized(self, node: str, trades: Iterable[Trade], t: int) -> None:
        """Trades that ``node`` now counts as final (at or below its stable watermark).

        A replica that lags may still revise its *provisional* copy of a trade another node already
        calls final (its op-set is not complete below it yet); what may never happen is a node
        revising a trade it declared final itself, or two nodes declaring different finals.
        """
        mine = self.final_on.setdefault(node, set())
        for tr in trades:
            mine.add(tr.trade_id)
            prev = self.final.get(tr.trade_id)
            if prev is None:
                self.final[tr.trade_id] = tr
                self.final_by[tr.trade_id] = node
            elif prev != tr:
                self.violation("final_disagree", node, t, f"trade {tr.trade_id} final on "
                               f"{self.final_by[tr.trade_id]} as {prev}, on {node} as {tr}")

    def finalized_ops(self, node: str, ops: Iterable[Op], t: int) -> None:
        """Ops that ``node`` now counts as final: their trades, as its events report them, are final."""
        live = self.live.get(node, {})
        trades = []
        for op in ops:
            oid = op.op_id
            n = 0
            while (tr := live.get(f"{oid}/{n}")) is not None:
                trades.append(tr)
                n += 1
        if trades:
            self.finalized(node, trades, t)

    def stamp(self, node: str, req: str, op: Op) -> None:
        """``node`` stamped ``op`` for client request ``req``."""
        self.stamped[(node, req)] = op

    def replied(self, node: str, req: str, order_id: str, level: int, holders: int, members: int, t: int) -> None:
        """A positive reply left ``node``; ``holders``: disks that held the op at that moment."""
        op = self.stamped.get((node, req))
        if op is None:
            self.violation("ack_mismatch", node, t, f"{node} acked request {req} but stamped no op for it")
            return
        if order_id != op.target:
            self.violation("ack_mismatch", node, t, f"request {req}: reply names {order_id}, op is {_op(op)}")
        if level >= 1 and holders * 2 <= members:
            self.violation("ack_unreplicated", node, t, f"request {req} ({op.op_id}) acked replicated "
                           f"with {holders} of {members} disks holding it")

    # ---- end of run --------------------------------------------------------------------------------
    def final_state(self, replicas: Mapping[str, Any], acks: Iterable[Any], t: int) -> None:
        """Check every replica at the end of the run (duck-typed: ``Replica``'s query methods)."""
        for node, r in replicas.items():
            ops = r.ops()
            ids = [op.op_id for op in ops]
            if len(set(ids)) != len(ids):
                dup = next(i for i in ids if ids.count(i) > 1)
                self.violation("applied_twice", node, t, f"op {dup} is in {node}'s fold {ids.count(dup)} times")
            held = sum(r.version_vector().values())
            if r.op_count != held:
                self.violation("applied_twice", node, t, f"{node} folded {r.op_count} ops but its version "
                               f"vector holds {held}")
            trades = r.trades()
            tids = [tr.trade_id for tr in trades]
            if len(set(tids)) != len(tids):
                dup = next(i for i in tids if tids.count(i) > 1)
                self.violation("trade_duplicated", node, t, f"trade {dup} is in {node}'s trades {tids.count(dup)} times")
            live = self.live.get(node, {})
            for tr in trades:
                if live.get(tr.trade_id) != tr:
                    self.violation("silent_revision", node, t, f"{node} holds {tr} but reported "
                                   f"{live.get(tr.trade_id)}")
                    break
            unreported = self.unreported.get(node, 0)
            booted_from_snapshot = 1 if unreported else 0
            # a snapshot installed from a peer at run time carries trades this node never reported
            if (r.counters.get("snapshots_installed", 0) <= booted_from_snapshot
                    and len(live) + unreported != r.trade_count):
                self.violation("silent_revision", node, t, f"{node} reported {len(live)} live trades"
                               f"{f' (+{unreported} in the snapshot it booted from)' if unreported else ''}, "
                               f"holds {r.trade_count}")
            mass = self._mass_cancels(r)
            if mass:
                self._check_mass_cancels(node, r, mass, t)
            fv = r.counters.get("finality_violations", 0)
            if fv:
                self.violation("finality_counter", node, t, f"{node} rolled back below its watermark {fv} times")
        first_new: dict[str, Op] = {}  # request id -> the NEW the fold keeps (the lowest key)
        for o in self.ops_by_id.values():
            if o.kind == NEW and o.req and (o.req not in first_new or o < first_new[o.req]):
                first_new[o.req] = o
        for ack in acks:
            op = self.stamped.get((ack.node, ack.req))
            if op is None:
                self.violation("ack_mismatch", ack.node, ack.at, f"ack of {ack.req} without an op")
                continue
            if op.kind in (CANCEL, AMEND):
                owner = self._owner_of(op.order_id)
                if owner is not None and owner != op.account:
                    self.violation("not_owner_acked", ack.node, ack.at, f"{ack.node} acked request {ack.req}: "
                                   f"{_op(op)} by {op.account or '-'} on {op.order_id}, an order of {owner}")
            first = first_new.get(ack.req)
            if (op.kind == NEW and first is not None and first != op and first.origin == ack.node
                    and first.seq < op.seq):
                # (a retry that reached another node first is a different story: that node could not
                # know; this node had placed the request itself and answered with a second order)
                self.violation("ack_wrong_order", ack.node, ack.at, f"{ack.node} acked request {ack.req} "
                               f"as {op.op_id}, a no-op second order: it had placed it as {first.op_id}")
            for node, r in replicas.items():
                if not r.holds(op.origin, op.seq):
                    self.violation("lost_ack", node, t, f"{op.op_id} (request {ack.req}, acked "
                                   f"{('accepted', 'replicated', 'final')[ack.level]} by {ack.node} at "
                                   f"{(ack.at - T0) / SEC:.3f}s) is not in {node}'s op-set")
                    break

    def _check_mass_cancels(self, node: str, r: Any, mass: dict[tuple[str, str], Op], t: int) -> None:
        """No order rests whose NEW sorts before a mass cancel (in scope) of its account that ``r`` holds."""
        for sym, b in sorted(r.books.items()):
            for _side, _price, oid, _q, acct in b.entries():
                if not acct:
                    continue
                cs = [c for c in (mass.get((acct, sym)), mass.get((acct, ""))) if c is not None]
                p = parse_order_id(oid)
                new = self.ops_by_id.get(p) if p is not None else None
                if new is None or not cs:
                    continue
                c = max(cs)
                if new < c:
                    self.violation("mass_cancel_missed", node, t, f"order {oid} of {acct} ({_op(new)}) rests in "
                                   f"{sym} on {node}, after mass cancel {_op(c)} ({c.symbol or 'all'})")
                    return

    def final_ack_trades(self, req: str, node: str, rows: Iterable[Sequence[Any]], t: int,
                         complete: bool = True) -> None:
        """A ``final`` ack's trade rows ``[id, price, qty, maker, taker]`` must be the final trades;
        with ``complete`` (every op ended final), the op's own trades must all be there too."""
        op = self.stamped.get((node, req))
        rows = [list(r) for r in rows]
        for row in rows:
            fin = self.final.get(row[0])
            if fin is None or [fin.trade_id, fin.price, fin.qty, fin.maker, fin.taker] != row:
                self.violation("final_ack_trades", node, t, f"request {req}: final ack reports {row}, "
                               f"final trade is {fin}")
                return
        if complete and op is not None:
            prefix = op.op_id + "/"
            want = sorted([tr.trade_id, tr.price, tr.qty, tr.maker, tr.taker]
                          for tid, tr in self.final.items() if tid.startswith(prefix))
            got = sorted(r for r in rows if str(r[0]).startswith(prefix))
            if want != got:
                self.violation("final_ack_trades", node, t, f"request {req}: final ack of {op.op_id} reports "
                               f"its trades as {got}, the final ones are {want}")

    def liveness(self, heal_t: int, converged_t: int | None, final_t: int | None, bound_ns: int,
                 digests: Mapping[str, str], need_finality: bool, t: int, detail: str = "") -> None:
        if converged_t is None:
            groups: dict[str, list[str]] = {}
            for n, d in digests.items():
                groups.setdefault(d, []).append(n)
            shown = "; ".join(f"{d[:8]}: {','.join(ns)}" for d, ns in groups.items())
            self.violation("convergence", "", t, f"no single digest {bound_ns / SEC:.0f}s after the heal "
                           f"at {(heal_t - T0) / SEC:.3f}s: {shown}{detail}")
        elif need_finality and final_t is None:
            self.violation("finality_stalled", "", t, f"converged at {(converged_t - T0) / SEC:.3f}s but "
                           f"not every op was final {bound_ns / SEC:.0f}s after the heal{detail}")


def risk_exposure(r: Any, key: tuple[str, str, int], counted: Mapping[str, set[tuple[str, str, int]]]) -> int:
    """``key``'s exposure in replica ``r``'s fold (which must hold every trade: no compaction),
    counting the orders that bind ``key`` only: open orders, position and notional (fills valued
    at the maker's resting price and the taker's limit)."""
    acct, scope, c = key
    ops = {op.op_id: op for op in r.ops()}
    open_buy = open_sell = open_notional = 0
    for sym, b in r.books.items():
        if scope and sym != scope:
            continue
        for side, price, oid, q, a in b.entries():
            if a == acct and key in counted.get(oid, ()):
                open_notional += q * price
                if side == 0:
                    open_buy += q
                else:
                    open_sell += q
    pos: dict[str, list[int]] = {}
    for t in r.trades():
        if scope and t.symbol != scope:
            continue
        cause = ops.get(t.trade_id.rpartition("/")[0])
        for oid, a, side, price in ((t.maker, t.maker_account, 1 - t.taker_side, t.price),
                                    (t.taker, t.taker_account, t.taker_side,
                                     (cause.price if cause is not None else 0) or t.price)):
            if a == acct and key in counted.get(oid, ()):
                row = pos.setdefault(t.symbol, [0, 0])
                sign = 1 if side == 0 else -1
                row[0] += sign * t.qty
                row[1] += sign * t.qty * price
    q = sum(v[0] for v in pos.values())
    return {OPEN_BUY: open_buy, OPEN_SELL: open_sell, LONG: q + open_buy, SHORT: open_sell - q,
            NOTIONAL: open_notional + sum(abs(v[1]) for v in pos.values())}[c]
