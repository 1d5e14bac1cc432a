"""One node, as one pure state machine: replica + gossip + membership + clock sync + clients.

Theory of operation
-------------------
The two drivers (the trio shell and the simulator) do the same three things in a loop:
``receive(msg, src, reply_to, now)`` for every authenticated, validated message; ``tick(now)`` when
``next_deadline()`` passes; then persist ``take_new_ops()`` and send ``outbox()``. Nothing here reads
a clock or touches a socket.

Destinations in the outbox are peer node ids (``str``) or ``Client(addr, account)`` for a reply to
whoever sent a client request; the shell maps both to addresses and signs a client's reply with its
account's credential. A client request acts for the account whose credential signed it: the
driver passes that account in, and every order, cancel, query and cached reply is scoped to it.

Client requests carry a request id: a retried submit gets the first reply again and never makes a
second order. A submit that waits for ``replicated`` or ``final`` is parked until the replica says
so or its timeout passes (then the reply says ``timeout`` and the level it did reach).
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .book import SIDE_NAMES, TIF_NAMES, Trade
from .clocksync import ClockSync
from .errors import (
    ClockOutOfSync,
    InvalidOrder,
    NotOwner,
    RemoteError,
    UnknownInstrument,
    UnknownOrder,
    UsageError,
)
from .fills import AccountFills
from .gossip import Gossip, GossipConfig
from .hlc import DEFAULT_MAX_OFFSET_NS, ZERO, Timestamp
from .instrument import Venue
from .membership import MESSAGES as MEMBERSHIP_MESSAGES
from .membership import ClockSample, Membership, MembershipConfig, MemberStateChanged
from .ops import AMEND, CANCEL, CANCEL_ALL, NEW, Event, Op, OpFenced, TradeExecuted, TradeRevised
from .replica import Replica
from .wire import (
    ClientQuery,
    ClientReply,
    ClientSubmit,
    Heartbeat,
    OpBatch,
    QueryReply,
    SnapshotChunk,
    Summary,
    trade_row,
)

ACCEPTED, REPLICATED, FINAL = 0, 1, 2
(OK, E_INVALID, E_UNKNOWN_ORDER, E_CLOCK, E_NO_QUORUM, E_TIMEOUT, E_UNKNOWN_INSTRUMENT, E_STORAGE, E_BAD,
 E_NOT_READY, E_NOT_OWNER) = range(11)
#: a refusal the core raises -> its reply code (anything else a caller did wrong: E_BAD)
USAGE_CODES = {InvalidOrder: E_INVALID, UnknownOrder: E_UNKNOWN_ORDER, ClockOutOfSync: E_CLOCK,
               UnknownInstrument: E_UNKNOWN_INSTRUMENT, NotOwner: E_NOT_OWNER}
#: rows an "orders" / "trades" query answers with at most (a reply stays one datagram)
MAX_QUERY_ROWS = 500
GOSSIP_TYPES = (OpBatch, Summary, Heartbeat, SnapshotChunk)
MEMBERSHIP_TYPES = frozenset(MEMBERSHIP_MESSAGES)


@dataclass(frozen=True, slots=True)
class Client:
    """A reply destination that is not a peer: whatever address the request came from, and the
    account whose credential signed it (the reply is signed with the same)."""

    addr: Any
    account: str = ""

    def key(self, req: str) -> str:
        """A request id scoped to this account (reply caches and waits are keyed by it)."""
        return f"{self.account}/{req}"


def orders_payload(node: str, account: str, rows: list[tuple[str, str, int, int, int]]) -> dict[str, Any]:
    """The "orders" query's answer: ``account``'s open orders here, at most ``MAX_QUERY_ROWS``."""
    return {"node": node, "account": account, "truncated": len(rows) > MAX_QUERY_ROWS,
            "orders": [list(r) for r in rows[:MAX_QUERY_ROWS]]}


@dataclass(slots=True)
class _Waiting:
    req: str
    op: Op
    level: int
    reply_to: Client
    deadline: int
    trades: list[Trade] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class NodeConfig:
    max_offset_ns: int = DEFAULT_MAX_OFFSET_NS
    gossip: GossipConfig = field(default_factory=GossipConfig)
    membership: MembershipConfig = field(default_factory=MembershipConfig)
    reply_cache: int = 10_000


class NodeCore:
    """Everything one node decides, fed explicit time and messages."""

    def __init__(self, node_id: str, members: Iterable[str], venue: Venue | None = None,
                 rng: random.Random | None = None, config: NodeConfig | None = None,
                 hlc_last: Timestamp = ZERO, incarnation: int = 0, recovered: bool = False) -> None:
        self.node_id = node_id
        self.config = config or NodeConfig()
        members = sorted(set(members) | {node_id})
        self.rng = rng or random.Random(0)
        self.replica = Replica(node_id, venue, members, self.config.max_offset_ns, hlc_last)
        peers = [m for m in members if m != node_id]
        self.gossip = Gossip(self.replica, peers, random.Random(self.rng.random()), self.config.gossip)
        self.membership = Membership(node_id, peers, random.Random(self.rng.random()),
                                     self.config.membership, incarnation=incarnation)
        self.clock = ClockSync()
        self._out: list[tuple[str | Client, Any]] = []
        self._events: list[Any] = []
        self._waiting: list[_Waiting] = []
        self._replies: OrderedDict[str, ClientReply] = OrderedDict()  # Client.key(req) -> reply
        self.fills = AccountFills()
        self.accepting = True  # cleared by the shell when storage cannot persist
        self._now = 0
        # A node that starts without its own persisted ops may be a restart that lost them: it must
        # not stamp seq 1 again. It takes orders once a majority of its peers told it their version
        # vectors and it holds every op of its own that they hold.
        self._synced: set[str] = set()
        self._own_seq_seen = 0
        self.ready = recovered or not peers
        #: the shell's own counters (datagrams, bytes, drops by reason), merged into ``status()``
        self.status_extra: Callable[[], dict[str, Any]] | None = None
        #: extra top-level status keys from the shell (its address, say)
        self.status_info: dict[str, Any] = {}
        self.counters: dict[str, int] = {"client_submits": 0, "client_rejects": 0, "client_queries": 0,
                                         "client_retries": 0, "client_timeouts": 0}

    # ---- inputs ------------------------------------------------------------------------------------
    def receive(self, msg: Any, src: str, reply_to: Any, now: int, account: str | None = None) -> None:
        """One validated message from ``src`` (a node id or a client id) at address ``reply_to``;
        ``account``: the account whose credential signed it (None: the peer key)."""
        self._now = now
        t = type(msg)
        if t is ClientSubmit:  # ``wire.decode`` lets these through only under an account's credential
            self._submit(msg, Client(reply_to, account or ""), now)
        elif t is ClientQuery:
            self._query(msg, Client(reply_to, account or ""))
        elif account is not None:
            raise RemoteError(f"{t.__name__} under account {account}'s credential", reason="not_peer")
        elif t in GOSSIP_TYPES:
            if src in self.gossip.peers:
                self._record(self.gossip.receive(msg, src, now))
                if not self.ready and t in (Summary, Heartbeat):
                    self._note_sync(src, msg.vv)
                self._settle(now)
        elif t in MEMBERSHIP_TYPES and src in self.gossip.peers:
            self.membership.receive(msg, src, now)  # RemoteError on a bad update: the shell drops it
            self._drain_membership()
        else:
            raise RemoteError(f"unexpected {t.__name__} from {src}", reason="unexpected")

    def _note_sync(self, src: str, vv: dict[str, int]) -> None:
        self._synced.add(src)
        self._own_seq_seen = max(self._own_seq_seen, vv.get(self.node_id, 0))
        if (len(self._synced) * 2 >= len(self.gossip.peers)
                and self.replica.vv.get(self.node_id, 0) >= self._own_seq_seen):
            self.ready = True

    def tick(self, now: int) -> None:
        self._now = now
        self.membership.tick(now)
        self._drain_membership()
        self._record(self.gossip.tick(now))
        self.replica.clock_in_sync = self.clock.in_sync(self.config.max_offset_ns)
        self._settle(now)

    def leave(self, now: int) -> None:
        """Announce a graceful leave (the shell calls this on SIGINT / SIGTERM)."""
        self.membership.leave(now)
        self._drain_membership()

    # ---- outputs -----------------------------------------------------------------------------------
    def _fold_inbound(self) -> None:
        """Fold ops received since the last call (the gossip layer batches them per burst)."""
        if self.gossip.pending:
            self._record(self.gossip.fold_inbound())
            self._settle(self._now)

    def outbox(self) -> list[tuple[str | Client, Any]]:
        self._fold_inbound()
        self.gossip.flush()
        out = self._out + self.gossip.outbox() + self.membership.outbox()
        self._out = []
        return out

    def take_new_ops(self) -> list[Op]:
        """Ops added to the op-set since the last call: persist them before sending the outbox."""
        self._fold_inbound()
        ops, self.replica.new_ops = self.replica.new_ops, []
        return ops

    def events(self) -> list[Any]:
        ev, self._events = self._events, []
        return ev

    def next_deadline(self) -> int:
        d = min(self.gossip.next_deadline(), self.membership.next_deadline())
        if self._waiting:
            d = min(d, min(w.deadline for w in self._waiting))
        return d

    # ---- membership glue ----------------------------------------------------------------------------
    def _drain_membership(self) -> None:
        for ev in self.membership.events():
            if isinstance(ev, ClockSample):
                self.clock.add_sample(ev.peer, ev.t1, ev.t2, ev.t3, ev.t4)
                continue
            if isinstance(ev, MemberStateChanged):
                if ev.new in ("alive",):
                    self.gossip.live.add(ev.member)
                elif ev.new in ("dead", "left"):
                    self.gossip.live.discard(ev.member)
            self._events.append(ev)

    def _record(self, events: list[Event]) -> None:
        if events:
            self._events.extend(events)
            self.fills.record(events)
            for w in self._waiting:
                oid = w.op.target
                for e in events:
                    if isinstance(e, TradeExecuted) and oid in (e.trade.taker, e.trade.maker):
                        w.trades.append(e.trade)

    # ---- clients -----------------------------------------------------------------------------------
    def _reply(self, to: Client, reply: ClientReply) -> None:
        self._replies[to.key(reply.req)] = reply
        if len(self._replies) > self.config.reply_cache:
            self._replies.popitem(last=False)
        self._out.append((to, reply))

    def _submit(self, m: ClientSubmit, to: Client, now: int) -> None:
        self.counters["client_submits"] += 1
        self._fold_inbound()  # stamp after everything received so far
        prior = self._replies.get(to.key(m.req))
        if prior is not None:
            self.counters["client_retries"] += 1
            self._out.append((to, prior))
            return
        for w in self._waiting:
            if w.req == m.req and w.reply_to.account == to.account:  # a retry while we wait: answer the latest address
                self.counters["client_retries"] += 1
                w.reply_to = to
                return
        r = self.replica
        acct = to.account
        before = r.vv.get(self.node_id, 0)
        done = r.compacted_request(m.req, acct) if m.kind == NEW else None
        if done is not None:  # placed before a restart and compacted since: final, and its fills are kept
            self.counters["client_retries"] += 1
            self._reply(to, ClientReply(m.req, OK, "ok", done[0], FINAL, [trade_row(t) for t in done[1]]))
            return
        try:
            if not self.ready:
                raise _Refused(E_NOT_READY, "node is catching up with its peers after start; retry shortly")
            if not self.accepting:
                raise _Refused(E_STORAGE, "storage unavailable: this node cannot persist orders now "
                                          "(disk full or read-only); reads still work")
            if m.kind == CANCEL:
                op, events = r.submit_cancel(m.order_id, now, m.req, account=acct)
            elif m.kind == AMEND:
                op, events = r.submit_amend(m.order_id, m.price, m.qty, now, m.req, account=acct)
            elif m.kind == CANCEL_ALL:
                op, _n = r.submit_cancel_all(m.symbol, now, m.req, account=acct)
                events = []
            else:
                op, events = r.submit_new(m.symbol, m.side, m.price, m.qty, m.tif, now, req=m.req, account=acct)
        except _Refused as e:
            self._reject(to, m.req, e.code, str(e))
            return
        except UsageError as e:
            self._reject(to, m.req, USAGE_CODES.get(type(e), E_BAD), str(e))
            return
        self.gossip.local(op)
        oid = op.target
        trades = [e.trade for e in events if isinstance(e, TradeExecuted) and oid in (e.trade.taker, e.trade.maker)]
        self._events.extend(events)
        self.fills.record(events)
        w = _Waiting(m.req, op, m.wait, to, now + m.timeout_ms * 1_000_000, trades)
        # a retried request returns its earlier op with no events: its trades come from the fold
        if not self._try_settle(w, fresh=op.seq > before):
            self._waiting.append(w)

    def _reject(self, to: Client, req: str, code: int, message: str) -> None:
        """Refusals are not cached: a retry with the same request id is tried afresh (the cause,
        say "not ready" or "clock out of sync", may have cleared)."""
        self.counters["client_rejects"] += 1
        self._out.append((to, ClientReply(req, code, message, "", 0, [])))

    def _level(self, op: Op) -> int:
        """Levels are cumulative: ``final`` is only reported once the op is also replicated (the
        watermark alone says nothing about who holds *this* op)."""
        if not self.replica.replicated(op):
            return ACCEPTED
        return FINAL if self.replica.is_final(op) else REPLICATED

    def _try_settle(self, w: _Waiting, fresh: bool = False) -> bool:
        level = self._level(w.op)
        if level >= w.level:
            trades = w.trades if fresh else self._order_trades(w.op.target, final_only=level == FINAL)
            self._reply(w.reply_to, ClientReply(w.req, OK, "ok", w.op.target, level,
                                                [trade_row(t) for t in trades]))
            return True
        return False

    def _order_trades(self, oid: str, final_only: bool = False) -> list[Trade]:
        """The order's trades as the fold has them now (replays may have revised earlier ones); a
        ``final`` ack lists only final trades (a later taker's trade against it may still change)."""
        return [t for t in self.replica.trades(final_only) if oid in (t.taker, t.maker)]

    def _settle(self, now: int) -> None:
        if not self._waiting:
            return
        keep = []
        for w in self._waiting:
            if self._try_settle(w):
                continue
            if now >= w.deadline:
                self.counters["client_timeouts"] += 1
                level = self._level(w.op)
                self._reply(w.reply_to, ClientReply(
                    w.req, E_TIMEOUT, f"timeout waiting for {('accepted', 'replicated', 'final')[w.level]}; "
                    f"the order was accepted here and has reached level "
                    f"{('accepted', 'replicated', 'final')[level]}",
                    w.op.target, level, [trade_row(t) for t in self._order_trades(w.op.target)]))
                continue
            keep.append(w)
        self._waiting = keep

    def _query(self, q: ClientQuery, to: Client) -> None:
        self.counters["client_queries"] += 1
        self._fold_inbound()
        if q.what == "book":
            book = self.replica.books.get(q.symbol or next(iter(self.replica.books)))
            if book is None:
                self._out.append((to, QueryReply(q.req, E_UNKNOWN_INSTRUMENT,
                                                  f"unknown instrument {q.symbol!r}", None)))
                return
            d = book.depth(max(1, q.depth))
            payload = {"node": self.node_id, "symbol": book.symbol,
                       "bids": [list(lv) for lv in d.bids], "asks": [list(lv) for lv in d.asks],
                       "digest": self.replica.digest()}
            self._out.append((to, QueryReply(q.req, OK, "ok", payload)))
        elif q.what == "status":
            self._out.append((to, QueryReply(q.req, OK, "ok", self.status())))
        elif q.what == "progress":
            self._out.append((to, QueryReply(q.req, OK, "ok", self.progress())))
        elif q.what == "orders":
            payload = orders_payload(self.node_id, to.account, self.replica.orders_of(to.account))
            self._out.append((to, QueryReply(q.req, OK, "ok", payload)))
        elif q.what == "trades":
            payload = self.fills.payload(self.node_id, to.account, self.replica.trade_is_final, MAX_QUERY_ROWS)
            self._out.append((to, QueryReply(q.req, OK, "ok", payload)))
        else:
            self._out.append((to, QueryReply(q.req, E_BAD, f"unknown query {q.what!r}", None)))

    # ---- introspection -----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The node's state for ``gossipbook status`` and the TUI (keys documented in docs/)."""
        self._fold_inbound()
        r = self.replica
        w = r.watermark()
        final = r.trades_final()
        peers = {}
        for p in self.gossip.peers:
            est = self.clock.estimate(p)
            peers[p] = ({"offset_us": est.offset_ns / 1e3, "rtt_us": est.rtt_ns / 1e3,
                         "uncertainty_us": est.uncertainty_ns / 1e3} if est else None)
        counters = dict(r.counters)
        counters.update(self.gossip.counters)
        counters.update(self.counters)
        counters["hlc_rejected"] = r.hlc.rejected
        counters["clock_samples_rejected"] = self.clock.rejected
        if self.status_extra is not None:
            counters.update(self.status_extra())
        return {
            "id": self.node_id, "digest": r.digest(), "ops": r.op_count, "version_vector": r.version_vector(),
            "watermark": [w.wall, w.logical], "trades_final": final, "trades_provisional": r.trade_count - final,
            "members": self.membership.states(), "peers": peers, "counters": counters,
            "hlc": list(r.hlc.last), "clock_in_sync": r.clock_in_sync, "accepting": self.accepting,
            "resting_orders": sum(len(b) for b in r.books.values()), "ready": self.ready,
            **self.status_info,
        }

    def progress(self) -> dict[str, Any]:
        """How far replication has got, without hashing the books (``status`` digests every book:
        tens of milliseconds with 100k resting orders, too dear to poll during a heal)."""
        r = self.replica
        return {"id": self.node_id, "ops": r.op_count, "version_vector": r.version_vector(),
                "pending": self.gossip.pending}

    def describe_op(self, op: Op) -> str:
        """One log line for an op (the shell logs it at debug level)."""
        return (f"{op.op_id} {('?', 'new', 'cancel', 'amend', 'cancel-all')[op.kind]} {op.symbol} {SIDE_NAMES[op.side]} "
                f"{op.qty}@{op.price} {TIF_NAMES[op.tif]}")


class _Refused(UsageError):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


__all__ = ["ACCEPTED", "FINAL", "REPLICATED", "Client", "NodeConfig", "NodeCore", "OpFenced", "TradeRevised"]
