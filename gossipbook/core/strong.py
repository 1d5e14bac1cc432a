"""Strong-consistency node: client ops go through the sequencer's log and are folded in log order.

Everything one strong-mode node decides lives here, with the same driver interface as ``NodeCore``
(``node.py``), so the trio shell and the simulator drive either: ``receive(msg, src, reply_to, now)``,
``tick(now)``, ``outbox()``, ``events()``, ``next_deadline()``, ``status()``, ``leave(now)`` and the
``ready`` / ``accepting`` / ``status_extra`` / ``status_info`` attributes. One difference for the
driver: what must be durable before the outbox leaves is the sequencer's state, so it calls
``take_persist()`` (a ``PersistDelta``, or None when nothing a restart needs changed) where the
eventual driver calls ``take_new_ops()`` (which here always returns ``[]``); a restart passes the
stored ``PersistentState`` as ``persisted`` and the books are rebuilt from its committed prefix.

Theory of operation
-------------------
**Parts.** The ``Sequencer`` (``sequencer.py``) elects a leader and commits log entries on a
majority. ``SequencedBooks`` folds every committed entry, in index order, into the books: the same
committed prefix gives the same books, trades and digest on every replica, and a trade is final the
moment it exists (``trades_provisional`` is always 0). ``Membership`` and ``ClockSync`` run as in
``NodeCore``, for ``status`` and failure detection only; they decide nothing about orders.

**Log entries** are ``Op``s stamped by the leader that appends them: ``origin`` is the leader,
``seq`` the log index, ``(wall, logical)`` the leader's HLC (an audit timestamp; the fold orders by
index, never by time). A NEW's order id is ``"<leader>:<index>"``, unique because the index is. The
sequencer's no-op (``None``) travels as an empty tuple, a client op as a 1-tuple (see ``wire.py``).

**Requests.** The node a client asks owns the request until it answers (a ``_Wait``):
- on the leader it is validated (instrument grid, venue hook; a cancel / amend of an order that the
  committed state shows closed) and appended; elsewhere it is relayed to the leader as ``Forward``,
  and the leader's ``ForwardReply`` is passed on. Relays are resent every ``forward_retry_ns`` (and on
  a client's retry) to whoever leads then, so a lost datagram or a new leader costs one retry.
- The answer is OK only when an entry carrying the request id is *committed*; its outcome is the
  fold's (cancel / amend are checked against the committed state at their place in the log).
  A request committed twice (relayed again after a leader change) folds once: the fold keeps the
  outcome of each request id (a window of ``dedupe_window`` ids, the same on every replica).
- A request never handed to a leader, on a node that knows no leader for ``no_leader_wait_ns``
  (the minority side of a partition, or an election that does not finish), is rejected with
  ``no quorum``: nothing was appended anywhere, so the refusal is true. "Never handed" includes
  earlier lives of this node: the ids of requests handed to a leader are made durable before the
  datagram that hands them over leaves (``take_handed()``; the shell persists them with the
  sequencer's delta), and a restart passes them back as ``handed``, so a client retrying into a
  restarted node cannot be told "no quorum" for an order its previous process already relayed. A request that was handed to
  a leader is never refused afterwards (it may still commit): without a commit by its deadline
  (90% of the client's ``timeout_ms``, so the answer beats the client's own timer) the answer is
  ``timeout``, outcome unknown.
- The entry a leader appended at ``(index, term)`` is lost iff the index commits with another
  request (or is covered by a snapshot without it); the request is then relayed again. So it is when
  the entry leaves this node's log (a newer leader's entry replaced it): almost surely lost, and a
  second copy is harmless (the fold keeps the first).

Rules that hold:
- Pure: ``now`` in, messages and events out; no clock reads, no I/O, randomness from the ``rng`` given.
- A client gets OK only for a request whose id is in the committed log (and then on every replica).
- Replicas at the same commit index have the same books, trade count, trade chain and digest.
"""

from __future__ import annotations

import hashlib
import random
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgpack

from . import strong_members
from .book import BUY, FOK, GTC, IOC, MARKET, MATCHING_MODES, SELL, STP_MODES, STP_OFF, Book, Trade
from .clocksync import ClockSync
from .config_epoch import MEMBER, name_ok
from .errors import (
    InvalidOrder,
    NotOwner,
    RemoteError,
    UnknownOrder,
    UsageError,
    WireError,
)
from .fills import AccountFills
from .hlc import DEFAULT_MAX_OFFSET_NS, HLC, Timestamp
from .instrument import OrderRequest, Venue
from .membership import MESSAGES as MEMBERSHIP_MESSAGES
from .membership import ClockSample, Membership, MembershipConfig, MemberStateChanged
from .node import (
    E_BAD,
    E_INVALID,
    E_NO_QUORUM,
    E_NOT_OWNER,
    E_NOT_READY,
    E_STORAGE,
    E_TIMEOUT,
    E_UNKNOWN_INSTRUMENT,
    E_UNKNOWN_ORDER,
    FINAL,
    MAX_QUERY_ROWS,
    OK,
    USAGE_CODES,
    Client,
    ClientGate,
    ClientLimits,
    RequestRefused,
    orders_payload,
)
from .ops import AMEND, CANCEL, CANCEL_ALL, NEW, Op, TradeExecuted, parse_order_id, scoped_req
from .risk import E_RISK, HALT, LIMIT, OPERATOR, RISK_KINDS, RiskRefused, valid_op
from .riskexact import ExactRisk
from .sequencer import ALL_MESSAGES as SEQUENCER_MESSAGES
from .sequencer import (
    LEADER,
    MS,
    AppendEntries,
    Committed,
    Entry,
    NotLeader,
    PersistDelta,
    PersistentState,
    RoleChanged,
    Sequencer,
    SequencerConfig,
    SnapshotInstalled,
)
from .wire import (
    OP_CHECK,
    REPLY_CODES,
    TRADE,
    ClientQuery,
    ClientReply,
    ClientSubmit,
    Forward,
    ForwardReply,
    QueryReply,
    binary,
    list_of,
    one_of,
    record,
    string,
    trade_row,
    uint,
)

#: ForwardReply only: "I am not the leader (``message`` names the one I know, or is empty)". Never
#: sent to a client; the relaying node tries the current leader instead.
E_RETRY = 200
SEQUENCER_TYPES = frozenset(SEQUENCER_MESSAGES)
MEMBERSHIP_TYPES = frozenset(MEMBERSHIP_MESSAGES)
CHAIN0 = b"\0" * 16


@dataclass(frozen=True, slots=True)
class StrongConfig:
    """Timers and limits of a strong-mode node (the sequencer's own are in ``sequencer``)."""

    max_offset_ns: int = DEFAULT_MAX_OFFSET_NS
    membership: MembershipConfig = field(default_factory=MembershipConfig)
    # 16 entries of ~65 bytes keep an AppendEntries under a 1400-byte MTU, as gossip batches are
    sequencer: SequencerConfig = field(default_factory=lambda: SequencerConfig(max_batch=16, max_inflight=16))
    forward_retry_ns: int = 200 * MS  # resend a relayed request this often until the leader answers
    no_leader_wait_ns: int = 400 * MS  # a new request waits this long for a leader, then "no quorum"
    compact_every: int = 20_000  # compact the log when this many entries are committed past the snapshot
    dedupe_window: int = 50_000  # request ids remembered by the fold (retries older than this fold again)
    reply_cache: int = 10_000

    def __post_init__(self) -> None:
        if min(self.forward_retry_ns, self.no_leader_wait_ns, self.compact_every, self.dedupe_window) < 1:
            raise ValueError("forward_retry_ns, no_leader_wait_ns, compact_every and dedupe_window must be positive")


class Outcome(NamedTuple):
    """What folding one committed request did (and what its client is told)."""

    code: int
    message: str
    order_id: str
    trades: tuple[Trade, ...] = ()  # made by this fold step (reported as TradeExecuted)
    rows: list[list[Any]] | None = None  # the client's trade rows, when not ``trades`` (a repeat)

    def client_rows(self) -> list[list[Any]]:
        """The trade rows the client is told: ``rows`` if set, else this step's ``trades``."""
        return self.rows if self.rows is not None else [trade_row(t) for t in self.trades]


def _chain(prev: bytes, trades: Iterable[Trade]) -> bytes:
    h = hashlib.blake2b(prev, digest_size=16)
    for t in trades:
        h.update(f"|{t.trade_id},{t.price},{t.qty},{t.maker},{t.taker}".encode())
    return h.digest()


# ---- the fold ---------------------------------------------------------------------------------------
_RESTING = record(lambda *f: tuple(f), [one_of(0, 1), uint(1 << 53), string(96), uint(1 << 53), string(64)])
_SNAPSHOT = record(lambda *f: f, [
    one_of(1), uint(), uint(), uint(), binary(16), uint(), uint(1 << 32),
    list_of(record(lambda *f: (f[0], list(f[1])), [string(32, 1), list_of(_RESTING, 10_000_000)]), 4096),
    list_of(record(lambda *f: (f[0], f[1], f[2], [list(r) for r in f[3]]),
                   [string(130, 1), uint(255), string(96), list_of(TRADE, 1024)]), 10_000_000)])


class SequencedBooks:
    """The books as the fold of the committed log in index order (the strong-mode "replica").

    It offers the read side of ``Replica`` that status, the shell and the demo use (``books``,
    ``digest()``, ``vv``, ``op_count``, ``trade_count``, ``trades_final()``), with ``vv`` the one
    number every replica agrees on: ``{"log": index folded}``.
    """

    def __init__(self, venue: Venue, dedupe_window: int = 50_000, shard: int = 0) -> None:
        self.venue = venue
        self.dedupe_window = dedupe_window
        #: shard s >= 1 names its orders ``"<leader>#<s>:<index>"`` (shards.py): each shard's log has
        #: its own indices, and a client's cancel finds the shard from the order id
        self.tag = f"#{shard}" if shard else ""
        self.books: dict[str, Book] = {s: Book(s) for s in venue.instruments}
        self._stp = {s: STP_MODES[i.stp] for s, i in venue.instruments.items()}
        self._matching = {s: MATCHING_MODES[i.matching] for s, i in venue.instruments.items()}
        self.index = 0  # the last log index folded
        self.op_count = 0  # client entries folded (duplicates of a request id excluded)
        self.trade_count = 0
        self.chain = CHAIN0
        self.last_stamp = Timestamp(0, 0)  # the greatest leader timestamp folded (audit)
        #: ``Op.req_key`` -> (code, order id, the trade rows it made): a retry or a second commit of
        #: the request is answered with the first one's outcome, fills included
        self.reqs: OrderedDict[str, tuple[int, str, list[list[Any]]]] = OrderedDict()
        self.counters = {"entries_folded": 0, "noops_folded": 0, "duplicates": 0, "fold_rejected": 0, "not_owner": 0,
                         "snapshots_installed": 0, "bad_snapshots": 0}
        #: risk limits, checked exactly by this fold (``riskexact``)
        self.risk = ExactRisk(self.counters)

    # ---- Replica's read side -----------------------------------------------------------------------
    @property
    def vv(self) -> dict[str, int]:
        return {"log": self.index}

    def version_vector(self) -> dict[str, int]:
        return self.vv

    def trades_final(self) -> int:
        return self.trade_count

    def digest(self) -> str:
        """Hex digest over every book's resting state, the trade hash chain and the trade count."""
        h = hashlib.blake2b(digest_size=16)
        for sym in sorted(self.books):
            h.update(self.books[sym].digest())
        h.update(self.chain)
        h.update(self.trade_count.to_bytes(8, "big"))
        return h.hexdigest()

    def find(self, order_id: str) -> tuple[Book, tuple[int, int, int]] | None:
        for b in self.books.values():
            o = b.order(order_id)
            if o is not None:
                return b, o
        return None

    # ---- folding -------------------------------------------------------------------------------------
    def apply(self, index: int, op: Op | None) -> Outcome | None:
        """Fold the committed entry at ``index`` (``None``: the leader's no-op). Deterministic: every
        check here depends only on the entry, the venue's grid and the state folded so far."""
        if index != self.index + 1:
            raise AssertionError(f"fold out of order: entry {index} after {self.index}")
        self.index = index
        if op is None:
            self.counters["noops_folded"] += 1
            return None
        self.counters["entries_folded"] += 1
        if (op.wall, op.logical) > self.last_stamp:
            self.last_stamp = Timestamp(op.wall, op.logical)
        prior = self.reqs.get(op.req_key) if op.req else None  # no request id: nothing to dedupe by
        if prior is not None:
            self.counters["duplicates"] += 1
            code, oid, rows = prior
            return Outcome(code, "ok" if code == OK else f"{REPLY_CODES.get(code, 'rejected')} "
                           f"(request {op.req} was already committed)", oid, (), rows)
        self.op_count += 1
        out = self._fold(index, op)
        if out.code != OK:
            self.counters["fold_rejected"] += 1
        if out.trades:
            self.trade_count += len(out.trades)
            self.chain = _chain(self.chain, out.trades)
        if op.req:
            self.reqs[op.req_key] = (out.code, out.order_id, out.client_rows())
        if len(self.reqs) > self.dedupe_window:
            self.reqs.popitem(last=False)
        return out

    def _fold(self, index: int, op: Op) -> Outcome:
        if op.kind == NEW:
            oid = f"{op.origin}{self.tag}:{index}"
            inst = self.venue.instruments.get(op.symbol)
            if inst is None or op.symbol not in self.books:
                return Outcome(E_UNKNOWN_INSTRUMENT, f"unknown instrument {op.symbol!r}", oid)
            try:
                if op.tif != MARKET:
                    inst.check_ticks(op.price)
                inst.check_lots(op.qty)
            except InvalidOrder as e:
                return Outcome(E_INVALID, str(e), oid)
            price = 0 if op.tif == MARKET else op.price
            risk = self.risk
            if op.account in risk.accounts:
                why = risk.check(op.account, op.symbol, op.side, price, op.qty, op.tif, self.books)
                if why is not None:
                    return Outcome(E_RISK, why, oid)
            trades = self.books[op.symbol].submit(oid, op.side, price, op.qty,
                                                  op.tif, oid, op.account, self._stp[op.symbol],
                                                  self._matching[op.symbol])
            if trades and risk.state.ever:
                risk.on_trades(trades, price)
            return Outcome(OK, "ok", oid, tuple(trades))
        if op.kind in RISK_KINDS:
            return self._fold_risk(index, op)
        if op.kind == MEMBER:  # the sequencer applied it when it was appended (strong_members.py)
            ch = strong_members.change_of(op)
            what = f"{ch.kind} {ch.member}" if ch is not None else "nothing"
            return Outcome(OK, f"configuration change committed: {what}", op.order_id)
        if op.kind == CANCEL_ALL:
            n = 0
            if op.account:
                for sym in ([op.symbol] if op.symbol else sorted(self.books)):
                    if sym in self.books:
                        n += self.books[sym].cancel_account(op.account)
            return Outcome(OK, f"mass cancel: {n} order{'' if n == 1 else 's'} cancelled",
                           f"{op.origin}{self.tag}:{index}")
        target = op.order_id
        found = self.find(target)
        if found is None:
            return Outcome(E_UNKNOWN_ORDER, f"order {target} is not open (filled, cancelled or never rested)",
                           target)
        book, _o = found
        if book.owner(target) != op.account:
            self.counters["not_owner"] += 1
            return Outcome(E_NOT_OWNER, f"order {target} belongs to another account", target)
        if op.kind == CANCEL:
            book.cancel(target)
            return Outcome(OK, "ok", target)
        inst = self.venue.instruments[book.symbol]
        try:
            inst.check_ticks(op.price)
            if op.qty != 0:
                inst.check_lots(op.qty)
        except InvalidOrder as e:
            return Outcome(E_INVALID, str(e), target)
        risk = self.risk
        if op.qty and op.account in risk.accounts:
            why = risk.check(op.account, book.symbol, _o[0], op.price, op.qty, GTC, self.books, without=target)
            if why is not None:
                return Outcome(E_RISK, why, target)
        trades = book.amend(target, op.price, op.qty, f"{op.origin}{self.tag}:{index}", self._stp[book.symbol],
                            self._matching[book.symbol]) or []
        if trades and risk.state.ever:
            risk.on_trades(trades, op.price)
        return Outcome(OK, "ok", target, tuple(trades))

    def _fold_risk(self, index: int, op: Op) -> Outcome:
        """A LIMIT or HALT entry (the operator's only); a disabling HALT cancels the account's
        resting orders here, as a mass cancel does."""
        risk = self.risk
        if op.kind == LIMIT:
            why = risk.fold_limit(op)
            return Outcome(E_RISK, why, op.order_id) if why else Outcome(OK, "risk limit set", op.order_id)
        if op.kind == HALT:
            why = risk.fold_halt(op)
            if why:
                return Outcome(E_RISK, why, op.order_id)
            if op.side == 1:
                return Outcome(OK, f"kill switch: {op.order_id} enabled", op.order_id)
            n = sum(self.books[s].cancel_account(op.order_id) for s in sorted(self.books))
            return Outcome(OK, f"kill switch: {op.order_id} disabled, {n} order{'' if n == 1 else 's'} cancelled",
                           op.order_id)
        return Outcome(E_BAD, "risk transfers are for eventual mode only", op.order_id)

    # ---- snapshots -----------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The folded state at ``index``: what a compacted log is replaced by."""
        return msgpack.packb([
            1, self.index, self.op_count, self.trade_count, self.chain, self.last_stamp.wall,
            self.last_stamp.logical,
            [[s, [list(r) for r in b.entries()]] for s, b in sorted(self.books.items())],
            [[r, c, o, rows] for r, (c, o, rows) in self.reqs.items()]] + ([risk] if (risk := self.risk.to_wire()) else []),
            use_bin_type=True)

    def install(self, index: int, data: bytes) -> None:
        """Replace the state with a snapshot covering the log up to ``index``. A snapshot that does
        not parse (impossible from an authenticated leader of this build) raises ``WireError``."""
        try:
            raw = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True, max_ext_len=0)
        except Exception as e:  # msgpack raises several types for bad input; all mean the same here
            raise WireError(f"undecodable strong-mode snapshot: {type(e).__name__}", reason="bad_snapshot") from None
        risk_raw: Any = raw.pop() if isinstance(raw, list) and len(raw) == 10 else []  # risk (riskexact)
        if isinstance(raw, list) and len(raw) == 9 and isinstance(raw[8], list):
            for r in raw[8]:
                if isinstance(r, list) and len(r) == 3:
                    r.append([])  # written before the fold kept a request's trade rows
        _v, idx, ops, trades, chain, wall, logical, books, reqs = _SNAPSHOT(raw)
        if idx != index:
            raise WireError(f"snapshot covers index {idx}, not {index}", reason="bad_snapshot")
        risk = ExactRisk(self.counters)
        risk.install(risk_raw)  # (parsed before anything changes: a bad one changes nothing)
        new_books = {s: Book(s) for s in self.venue.instruments}
        for sym, rows in books:
            b = new_books.get(sym)
            if b is None:
                raise WireError(f"snapshot names unknown instrument {sym!r}", reason="bad_snapshot")
            for side, price, oid, qty, acct in rows:  # resting orders never cross: re-entering them in
                b.submit(oid, side, price, qty, GTC, oid, acct, STP_OFF)  # priority order rebuilds the levels
        self.books, self.index, self.op_count, self.trade_count, self.chain = new_books, idx, ops, trades, chain
        self.last_stamp = Timestamp(wall, logical)
        self.reqs = OrderedDict((r, (c, o, rows)) for r, c, o, rows in reqs)
        self.risk = risk
        self.counters["snapshots_installed"] += 1


# ---- requests in flight -----------------------------------------------------------------------------
@dataclass(slots=True)
class _Wait:
    """A request this node must answer: from a client (``reply_to`` a ``Client``) or relayed by a
    peer to us as leader (``reply_to`` the peer's id)."""

    msg: ClientSubmit
    account: str
    reply_to: Client | str
    deadline: int
    no_quorum_at: int  # not yet handed to a leader and none known by then: "no quorum"
    attempted: bool = False  # handed to a leader (appended here or relayed): its fate may be unknown
    index: int = 0  # appended here at (index, term)
    term: int = 0
    retry_at: int = 0  # relayed: when to relay again (0: not relayed now)

    @property
    def key(self) -> str:
        """The request id scoped to its account (``Op.req_key``): what every map here is keyed by."""
        return scoped_req(self.account, self.msg.req)


class _SequencerCounters:
    """``gossip.counters`` for readers written against eventual mode (the demo): entries the
    leader pushed in appends count as pushed ops."""

    def __init__(self, peers: Iterable[str]) -> None:
        self.peers = list(peers)
        self.counters: dict[str, int] = {"pushed_ops": 0, "repair_ops": 0}


class StrongNodeCore:
    """Everything one strong-mode node decides, fed explicit time and messages."""

    mode = "strong"

    def __init__(self, node_id: str, members: Iterable[str], venue: Venue | None = None,
                 rng: random.Random | None = None, config: StrongConfig | None = None,
                 persisted: PersistentState | None = None, incarnation: int = 0,
                 on_fold: Callable[[int, Op | None, Outcome | None], None] | None = None,
                 handed: Iterable[str] = (), shard: int = 0, primary: StrongNodeCore | None = None,
                 joining: bool = False) -> None:
        """``shard`` / ``primary``: this core is sequencer group ``shard`` of a node that runs several
        (``shards.ShardedStrongCore``); ``primary`` (group 0) owns the node's membership, clock
        samples, fills and HLC, which this group shares instead of running its own. ``members``:
        the group's initial configuration (the file's nodes without ``join = true``); ``joining``:
        this node was added at run time and starts as a learner of it (``strong_members.py``)."""
        self.node_id = node_id
        self.shard = shard
        #: called with every committed entry as it is folded, and its outcome (an audit trail; the
        #: simulator's checker reads the committed log through it)
        self.on_fold = on_fold
        self.config = config or StrongConfig()
        members = sorted(set(members) | ({node_id} if not joining else set()))
        self.peers = [m for m in members if m != node_id]
        self.rng = rng or random.Random(0)
        self.venue = venue or Venue()
        self.replica = SequencedBooks(self.venue, self.config.dedupe_window, shard)
        self.gossip = _SequencerCounters(self.peers)
        # a snapshot from a leader is adopted (and acknowledged) only if the fold can install it
        self.seq = Sequencer(node_id, members, random.Random(self.rng.random()), self.config.sequencer, persisted,
                             snapshot_check=self._snapshot_ok, conf_of=strong_members.change_of,
                             learner=joining, admit=name_ok)
        #: why this node refuses membership changes, if it does (shards: ``ShardedStrongCore``)
        self.members_fixed: str | None = None
        self._conf_key = (0, 0)  # the (epoch, index) of the configuration ``peers`` and SWIM follow
        self.membership = Membership(node_id, self.peers, random.Random(self.rng.random()),
                                     self.config.membership, incarnation=incarnation, venue=self.venue)
        self.clock = ClockSync()
        self.fills = AccountFills()
        self.hlc = HLC(node_id, self.config.max_offset_ns)
        self._own_membership = primary is None
        if primary is not None:  # one node: one membership, one clock, one account's fills, one HLC
            self.membership, self.clock = primary.membership, primary.clock
            self.fills, self.hlc = primary.fills, primary.hlc
        self._out: list[tuple[str | Client, Any]] = []
        self._events: list[Any] = []
        self._waits: dict[str, _Wait] = {}
        self._by_index: dict[int, str] = {}  # index appended here -> scoped request id (``_Wait.key``)
        self._replies: OrderedDict[str, ClientReply] = OrderedDict()
        #: request ids this node (this life or, from storage, an earlier one) handed to a leader: a
        #: request among them is never answered "no quorum" (its first copy may still commit)
        self._handed: OrderedDict[str, None] = OrderedDict.fromkeys(handed)
        self._handed_new: list[str] = []  # handed over since the last take_handed()
        self._persisted_key: tuple[int, str | None] = (self.seq.term, self.seq.voted_for)
        self._persisted_last = self.seq.last_index
        self._now = 0
        self.accepting = True  # cleared by the shell when storage cannot persist
        #: a leader has been known since start (informational: orders are never refused as "not
        #: ready"; with no leader they wait ``no_leader_wait_ns``, then get "no quorum")
        self.ready = not self.peers
        self.clock_in_sync = True
        self.status_extra: Callable[[], dict[str, Any]] | None = None
        self.status_info: dict[str, Any] = {}
        self.counters: dict[str, int] = {
            "client_submits": 0, "client_rejects": 0, "client_queries": 0, "client_retries": 0,
            "client_timeouts": 0, "no_quorum": 0, "forwards_out": 0, "forwards_in": 0,
            "forward_retries": 0, "resubmitted": 0, "compactions": 0, "promotions": 0}
        self._booting = True
        self._drain(0)  # a restart: rebuild the books from the persisted committed prefix
        self._booting = False

    # ---- inputs ------------------------------------------------------------------------------------
    def receive(self, msg: Any, src: str, reply_to: Any, now: int, account: str | None = None) -> None:
        """One validated message from ``src`` (a node id or a client id) at address ``reply_to``;
        ``account``: the account whose credential signed it (None: the peer key)."""
        self._now = max(self._now, now)
        t = type(msg)
        if t is ClientSubmit:  # ``wire.decode`` lets these through only under an account's credential
            self._client_submit(msg, Client(reply_to, account or ""), now)
        elif t is ClientQuery:
            self._query(msg, Client(reply_to, account or ""))
        elif account is not None:
            raise RemoteError(f"{t.__name__} under account {account}'s credential", reason="not_peer")
        elif t not in MEMBERSHIP_TYPES and src in self.membership.venue.refused:
            self.membership.venue.admit(src)  # venuecheck.py: raises RemoteError (venue_mismatch)
        elif t in SEQUENCER_TYPES and self._peer(src):
            if t is AppendEntries and msg.entries:
                msg = AppendEntries(msg.term, msg.prev_index, msg.prev_term, msg.commit,
                                    tuple(Entry(e[0], e[1][0] if e[1] else None) for e in msg.entries))
            self.seq.receive(msg, src, now)  # RemoteError on a malformed message: the shell drops it
        elif t is Forward and self._peer(src):
            self._on_forward(msg, src, now)
        elif t is ForwardReply and self._peer(src):
            self._on_forward_reply(msg, src, now)
        elif t in MEMBERSHIP_TYPES and src in self.peers:
            self.membership.receive(msg, src, now)
            self._drain_membership()
        else:
            raise RemoteError(f"unexpected {t.__name__} from {src}", reason="unexpected")
        self._drain(now)  # a submit can commit at once (a cluster of one), a message can commit many

    def _peer(self, src: str) -> bool:
        """A node of the cluster: the file's, or one any configuration here names (an authenticated
        peer that no configuration here names yet is left to the sequencer's ``admit``)."""
        return src in self.peers or (src != self.node_id and name_ok(src))

    @property
    def removed(self) -> bool:
        """This node's removal is committed here: it has no part in the group any more (the shell stops)."""
        conf = self.seq.conf
        return self.node_id in conf.removed and not self.seq.conf_pending()

    def _promote(self, now: int) -> None:
        """Leader: propose the promotion of a learner that has caught up (``strong_members.py`` says
        why the bound is one pipeline window), one change at a time."""
        seq = self.seq
        if seq.role is not LEADER or not seq.conf.learners:
            return  # (a change in flight is the sequencer's to refuse: one rule, in one place)
        cfg = self.config.sequencer
        prog = seq.progress()
        ready = strong_members.caught_up({m: p[0] for m, p in prog.items()},
                                         {m: now - p[1] <= 2 * cfg.heartbeat_ns for m, p in prog.items()},
                                         seq.conf.learners, seq.commit_index, cfg.max_batch * cfg.max_inflight)
        if not ready:
            return
        ch = strong_members.ConfChange(strong_members.PROMOTE, ready[0])
        target, side = strong_members.op_fields(ch)
        ts = self.hlc.now(max(now, self.replica.last_stamp.wall))
        index = seq.last_index + 1  # (a request id of its own: the fold and the checkers key entries by it)
        op = Op(ts.wall, ts.logical, self.node_id, index, MEMBER, "", target, side, 0, 0, 0,
                f"promote-{ch.member}-{seq.term}-{index}"[:64], OPERATOR)
        try:
            seq.submit(op, now)
        except UsageError:  # not yet (no commit in this term, handing over): the next tick tries again
            return
        self.counters["promotions"] += 1

    def tick(self, now: int) -> None:
        self._now = max(self._now, now)
        self._promote(now)
        if self._own_membership:
            self.membership.tick(now)
            self._drain_membership()
        self.seq.tick(now)
        self._drain(now)
        self.clock_in_sync = self.clock.in_sync(self.config.max_offset_ns)
        for w in list(self._waits.values()):
            if w.key not in self._waits:
                continue  # answered while handling an earlier one
            if now >= w.deadline:
                self._timeout(w)
            elif (w.retry_at and now >= w.retry_at) or (not w.attempted and now >= w.no_quorum_at):
                self._route(w, now)
            elif w.index > self.seq.snapshot_index and self.seq.term_at(w.index) != w.term:
                # our entry left our log (a newer leader's replaced it): it will almost surely never
                # commit, so relay the request again; should both commit, the fold keeps the first
                self._by_index.pop(w.index, None)
                w.index = w.term = 0
                self.counters["resubmitted"] += 1
                self._route(w, now)

    def leave(self, now: int) -> None:
        """Announce a graceful leave (the shell calls this on SIGINT / SIGTERM)."""
        self.membership.leave(now)
        self._drain_membership()

    # ---- outputs -----------------------------------------------------------------------------------
    def outbox(self) -> list[tuple[str | Client, Any]]:
        out = _bounded(self, self._out)  # replies to unproven client sources: at most 3x their request
        self._out = []
        pushed = 0
        for dst, msg in self.seq.outbox():
            if type(msg) is AppendEntries and msg.entries:
                pushed += len(msg.entries)
                msg = AppendEntries(msg.term, msg.prev_index, msg.prev_term, msg.commit,
                                    tuple(Entry(e.term, () if e.value is None else (e.value,)) for e in msg.entries))
            out.append((dst, msg))
        self.gossip.counters["pushed_ops"] += pushed
        if self._own_membership:
            out += self.membership.outbox()
        return out

    def take_new_ops(self) -> list[Op]:
        """Eventual mode's persistence hook; strong mode persists ``take_persist()`` instead."""
        return []

    def take_persist(self) -> PersistDelta | None:
        """The sequencer state to make durable before the next ``outbox()`` is sent, or None if
        nothing a restart needs has changed (a commit index alone is a hint, re-learnt from the
        leader, so it is written only along with something else)."""
        d = self.seq.persist_delta()
        key = (d.term, d.voted_for)
        if not d.entries and d.snapshot is None and key == self._persisted_key and d.first_index > self._persisted_last:
            return None
        self._persisted_key = key
        self._persisted_last = d.first_index + len(d.entries) - 1
        return d

    def take_handed(self) -> list[str]:
        """Client request ids handed to a leader (appended here or relayed) since the last call: to be
        made durable with ``take_persist()``'s delta, before the outbox leaves, and passed back as
        ``handed`` on restart."""
        out, self._handed_new = self._handed_new, []
        return out

    def events(self) -> list[Any]:
        ev, self._events = self._events, []
        return ev

    def next_deadline(self) -> int:
        d = min(self.seq.next_deadline(), self.membership.next_deadline()) if self._own_membership else \
            self.seq.next_deadline()
        for w in self._waits.values():
            d = min(d, w.deadline, w.retry_at or d, d if w.attempted else w.no_quorum_at)
        return d

    # ---- sequencer glue ------------------------------------------------------------------------------
    def _drain(self, now: int) -> None:
        while True:
            evs = self.seq.events()  # handling one can cause more (a resubmit that commits at once)
            if not evs:
                break
            for ev in evs:
                self._handle(ev, now)
        conf = self.seq.conf
        if (conf.epoch, conf.index) != self._conf_key:
            self._follow_conf()
        r = self.replica
        if r.index - self.seq.snapshot_index >= self.config.compact_every and r.index == self.seq.commit_index:
            self.seq.compact(r.index, r.to_bytes())
            self.counters["compactions"] += 1

    def _handle(self, ev: Any, now: int) -> None:
        t = type(ev)
        if t is Committed:
            self._committed(ev, now)
        elif t is RoleChanged:
            self._events.append(ev)
            if ev.leader is not None:
                self.ready = True
                # relayed and parked requests go to the new leader now, not at their next retry
                for w in list(self._waits.values()):
                    if w.key in self._waits and (w.retry_at or not w.attempted):
                        self._route(w, now)
        elif t is SnapshotInstalled:
            self._snapshot_installed(ev, now)

    def _committed(self, ev: Committed, now: int) -> None:
        op = ev.entry
        out = self.replica.apply(ev.index, op)
        if self.on_fold is not None:
            self.on_fold(ev.index, op, out)
        if op is not None and out is not None:
            executed = [TradeExecuted(t) for t in out.trades]
            self._events += executed
            self.fills.record(executed)
            w = self._waits.get(op.req_key)
            if w is not None:
                self._answer(w, out)
        req = self._by_index.pop(ev.index, None)
        if req is not None:
            w = self._waits.get(req)
            if w is not None and w.index == ev.index:  # our entry lost its place to another leader's
                w.index = w.term = 0
                self.counters["resubmitted"] += 1
                self._route(w, now)

    def _follow_conf(self) -> None:
        """Peers (and SWIM's probe list, for ``status``) follow the sequencer's configuration in
        force: an added learner is probed and its probes answered; a removed id, or one whose add was
        truncated, is forgotten."""
        conf = self.seq.conf
        self._conf_key = (conf.epoch, conf.index)
        want = conf.members - {self.node_id}
        for m in [p for p in self.peers if p not in want]:
            self.peers.remove(m)
            if self._own_membership:
                self.membership.remove_member(m)
        for m in sorted(want - set(self.peers)):
            self.peers.append(m)
            if self._own_membership:
                self.membership.add_member(m)

    def _snapshot_ok(self, index: int, data: bytes) -> bool:
        """Whether the fold can install this snapshot (the sequencer asks before adopting one)."""
        try:
            SequencedBooks(self.venue, self.config.dedupe_window).install(index, data)
        except WireError:
            return False
        return True

    def _snapshot_installed(self, ev: SnapshotInstalled, now: int) -> None:
        try:
            self.replica.install(ev.index, ev.data)
        except WireError as e:
            if getattr(self, "_booting", True):
                # our own persisted snapshot: running on with the commit index past it would be
                # silent divergence, so refuse to start (the runner names the data dir)
                raise ValueError(f"the persisted snapshot at index {ev.index} does not install: {e}") from None
            self.replica.counters["bad_snapshots"] += 1  # cannot happen: snapshot_check vetted it
            return
        for w in list(self._waits.values()):
            prior = self.replica.reqs.get(w.key)
            if prior is not None:
                self._answer(w, Outcome(prior[0], REPLY_CODES.get(prior[0], "ok"), prior[1], (), prior[2]))
            elif w.index and w.index <= ev.index:
                self._by_index.pop(w.index, None)
                w.index = w.term = 0
                self._route(w, now)

    def _drain_membership(self) -> None:
        for ev in self.membership.events():
            if isinstance(ev, ClockSample):
                self.clock.add_sample(ev.peer, ev.t1, ev.t2, ev.t3, ev.t4)
                continue
            if isinstance(ev, MemberStateChanged):
                self._events.append(ev)

    # ---- requests ------------------------------------------------------------------------------------
    def _client_submit(self, m: ClientSubmit, to: Client, now: int) -> None:
        self.counters["client_submits"] += 1
        gate = _client_gate(self)
        m, to, refused = gate.check(m, to, now)
        if refused is not None:
            self._out.append((to, refused))
            return
        key = to.key(m.req)
        prior = self._replies.get(key)
        if prior is not None:
            self.counters["client_retries"] += 1
            self._out.append((to, prior))
            return
        w = self._waits.get(key)
        if w is not None:  # a retry while we wait: answer the latest address, relay again if due
            self.counters["client_retries"] += 1
            w.reply_to = to
            if w.retry_at and now >= w.retry_at:
                self._route(w, now)
            return
        done = self.replica.reqs.get(key)
        if done is not None:  # committed long ago (the reply cache forgot it)
            self._out.append((to, ClientReply(m.req, done[0], REPLY_CODES.get(done[0], "ok"), done[1],
                                              FINAL if done[0] == OK else 0, done[2])))
            return
        waits = self._waits
        assert isinstance(waits, _ParkedWaits)
        refused = gate.may_park(m, len(waits), waits.of(to.account))
        if refused is not None:
            self._out.append((to, refused))
            return
        # answer a little before the client's own timeout, so a "timeout" reply reaches it
        w = _Wait(m, to.account, to, now + m.timeout_ms * MS * 9 // 10, now + self.config.no_leader_wait_ns)
        if key in self._handed:
            w.attempted = True  # handed over before (an earlier wait or life): its fate is unknown
        self._waits[key] = w
        self._route(w, now)

    def _on_forward(self, f: Forward, src: str, now: int) -> None:
        self.counters["forwards_in"] += 1
        req = scoped_req(f.account, f.req)  # ForwardReply names the request by this scoped id
        prior = self._replies.get(req)
        if prior is not None:
            self._out.append((src, ForwardReply(req, *prior[1:])))
            return
        w = self._waits.get(req)
        if w is not None:  # already ours: answered when it commits (a client's own wait keeps its client)
            if not isinstance(w.reply_to, Client):
                w.reply_to = src
            if self.seq.role is not LEADER:
                self._retry(src, req)
            return
        done = self.replica.reqs.get(req)
        if done is not None:
            self._out.append((src, ForwardReply(req, done[0], REPLY_CODES.get(done[0], "ok"), done[1],
                                                FINAL if done[0] == OK else 0, done[2])))
            return
        if self.seq.role is not LEADER:
            self._retry(src, req)
            return
        w = _Wait(f.submit, f.account, src, now + f.timeout_ms * MS, now, attempted=True)
        self._waits[req] = w
        self._route(w, now)

    def _on_forward_reply(self, r: ForwardReply, src: str, now: int) -> None:
        w = self._waits.get(r.req)
        if w is None or not isinstance(w.reply_to, Client):
            return
        if r.code == E_RETRY:
            leader = self.seq.leader()
            if leader is not None and leader != src:
                self._route(w, now)
            return
        self._answer(w, Outcome(r.code, r.message, r.order_id), level=r.level, rows=r.trades)

    def _retry(self, peer: str, req: str) -> None:
        self._out.append((peer, ForwardReply(req, E_RETRY, self.seq.leader() or "", "", 0, [])))

    def _route(self, w: _Wait, now: int) -> None:
        """Hand ``w`` to the leader: append it here, relay it, or (never handed over and no leader
        known for ``no_leader_wait_ns``) refuse it with "no quorum"."""
        req = w.key
        w.retry_at = 0
        leader = self.seq.leader()
        if leader == self.node_id:
            if w.index and self.seq.term_at(w.index) == w.term:
                return  # still in our log: it commits with the entries after it
            if not self.accepting:
                self._answer(w, Outcome(E_STORAGE, "storage unavailable: the leader cannot persist orders now "
                                                   "(disk full or read-only); reads still work", w.msg.order_id))
                return
            try:
                op = self._validate(w.msg, w.account, now)
                index = self.seq.submit(op, now)
            except NotLeader as e:
                leader = e.leader_hint
            except strong_members.Refused as e:  # a change that may go through later is "not ready" (retried)
                self._answer(w, Outcome(E_NOT_READY if e.transient else E_INVALID, str(e), w.msg.order_id))
                return
            except UsageError as e:
                self._answer(w, Outcome(USAGE_CODES.get(type(e), E_BAD), str(e), w.msg.order_id))
                return
            else:
                assert index == op.seq, (index, op.seq)
                if w.index:
                    self._by_index.pop(w.index, None)
                self._handed_over(w)
                w.index, w.term, w.attempted = index, self.seq.term, True
                self._by_index[index] = req
                return
        if isinstance(w.reply_to, str):  # relayed to us, and we no longer lead: send it elsewhere
            self._retry(w.reply_to, req)
            if not w.index:
                self._drop(w)
            return
        if leader is not None:
            self.counters["forwards_out" if not w.attempted else "forward_retries"] += 1
            self._out.append((leader, Forward(*w.msg, w.account)))
            self._handed_over(w)
            w.attempted = True
            w.retry_at = now + self.config.forward_retry_ns
            return
        if w.attempted:
            w.retry_at = now + self.config.forward_retry_ns  # its fate is unknown: keep asking
        elif now >= w.no_quorum_at:
            self.counters["no_quorum"] += 1
            self._answer(w, Outcome(E_NO_QUORUM, "no quorum: no leader is reachable from this node (it may be on "
                                                 "the minority side of a partition); nothing was submitted, "
                                                 "retry later", w.msg.order_id))

    def _handed_over(self, w: _Wait) -> None:
        req = w.key
        if not w.attempted and isinstance(w.reply_to, Client) and req not in self._handed:
            self._handed[req] = None
            self._handed_new.append(req)
            if len(self._handed) > self.config.dedupe_window:
                self._handed.popitem(last=False)

    def _validate(self, m: ClientSubmit, account: str, now: int) -> Op:
        """Check a request of ``account`` at the leader before it takes a log index; the ``Op`` to
        append (the fold checks again, in log order: this only spares a log entry)."""
        price, tif = m.price, m.tif
        if m.kind == NEW:
            inst = self.venue.get(m.symbol)
            if m.side not in (BUY, SELL):
                raise InvalidOrder("side must be buy or sell")
            if tif not in (GTC, IOC, FOK, MARKET):
                raise InvalidOrder("time in force must be gtc, ioc, fok or market")
            if tif == MARKET:
                price = 0
            else:
                inst.check_ticks(price)
            inst.check_lots(m.qty)
            self.venue.check(OrderRequest("new", inst, m.side, price, m.qty, account, "", m.req))
        elif m.kind == CANCEL_ALL:
            if m.symbol:
                self.venue.get(m.symbol)
            tif = GTC
        elif m.kind == MEMBER:  # a configuration change (strong_members.py): the operator's, one at a time
            if account != OPERATOR:
                raise NotOwner(f"only the {OPERATOR} account changes membership (gossipbook cluster add-node / "
                               f"remove-node with cluster.toml)")
            if self.members_fixed:
                raise strong_members.Refused(self.members_fixed)
            ch = strong_members.request_change(m.order_id, m.side, self.seq.conf, self.node_id)
            target, side = strong_members.op_fields(ch)
            ts = self.hlc.now(max(now, self.replica.last_stamp.wall))
            return Op(ts.wall, ts.logical, self.node_id, self.seq.last_index + 1, MEMBER, "", target, side, 0, 0, 0,
                      m.req, account)
        elif m.kind in (LIMIT, HALT):  # risk (riskexact): the operator's; the fold checks again
            if account != OPERATOR:
                raise RiskRefused(f"risk: only the {OPERATOR} account sets limits and uses the kill switch")
            probe = Op(0, 0, self.node_id, 1, m.kind, m.symbol, m.order_id, m.side, 0, m.qty, m.tif, "", account)
            if m.symbol:
                self.venue.get(m.symbol)
            if not valid_op(probe, self.replica.books):
                raise InvalidOrder("bad risk request: an account name, a limit kind, a limit of 0 .. 2^53 "
                                   "(a position limit needs --symbol)")
            price = 0
        else:
            parsed = parse_order_id(m.order_id)
            if parsed is None:
                raise UnknownOrder(f"order id {m.order_id!r} is not of the form NODE:SEQ")
            # an order committed at or below the folded index and not resting now can never rest
            # again: refuse without spending a log entry (the fold decides everything else)
            found = self.replica.find(m.order_id)
            if parsed[1] <= self.replica.index and found is None:
                raise UnknownOrder(f"order {m.order_id} is not open (filled, cancelled or never rested)")
            if found is not None and found[0].owner(m.order_id) != account:
                raise NotOwner(f"order {m.order_id} belongs to another account")
            if m.kind == AMEND and found is not None and m.qty:
                inst = self.venue.get(found[0].symbol)
                inst.check_ticks(m.price)
                inst.check_lots(m.qty)
                self.venue.check(OrderRequest("amend", inst, found[1][0], m.price, m.qty, account, m.order_id, m.req))
            tif = GTC
        ts = self.hlc.now(max(now, self.replica.last_stamp.wall))
        return Op(ts.wall, ts.logical, self.node_id, self.seq.last_index + 1, m.kind, m.symbol,
                  m.order_id if m.kind in (CANCEL, AMEND, LIMIT, HALT) else "", m.side, price, m.qty, tif, m.req, account)

    def _answer(self, w: _Wait, out: Outcome, level: int | None = None, rows: list[list[Any]] | None = None) -> None:
        if level is None:
            level = FINAL if out.code == OK else 0
        reply = ClientReply(w.msg.req, out.code, out.message, out.order_id, level,
                            rows if rows is not None else out.client_rows())
        if isinstance(w.reply_to, Client):
            if out.code == OK:
                self._replies[w.key] = reply
                if len(self._replies) > self.config.reply_cache:
                    self._replies.popitem(last=False)
            elif out.code != E_TIMEOUT:
                self.counters["client_rejects"] += 1
                self._events.append(RequestRefused(w.reply_to.account, w.msg.req, out.code, out.message,
                                                   out.order_id))
            self._out.append((w.reply_to, reply))
        else:
            self._out.append((w.reply_to, ForwardReply(w.key, *reply[1:])))
        self._drop(w)

    def _timeout(self, w: _Wait) -> None:
        if not isinstance(w.reply_to, Client):
            self._drop(w)  # the relaying node keeps its own deadline
            return
        self.counters["client_timeouts"] += 1
        self._answer(w, Outcome(E_TIMEOUT, f"timeout: not committed within {w.msg.timeout_ms} ms; the order was "
                                           f"handed to the sequencer and may still commit (check the book "
                                           f"before sending it again)", w.msg.order_id))

    def _drop(self, w: _Wait) -> None:
        self._waits.pop(w.key, None)
        if w.index and self._by_index.get(w.index) == w.key:
            del self._by_index[w.index]

    def _query(self, q: ClientQuery, to: Client) -> None:
        self.counters["client_queries"] += 1
        q, to, refused = _client_gate(self).check(q, to, self._now)
        if refused is not None:
            self._out.append((to, refused))
            return
        r = self.replica
        if q.what == "book":
            book = r.books.get(q.symbol or next(iter(r.books)))
            if book is None:
                self._out.append((to, QueryReply(q.req, E_UNKNOWN_INSTRUMENT, f"unknown instrument {q.symbol!r}", None)))
                return
            d = book.depth(max(1, q.depth))
            payload = {"node": self.node_id, "symbol": book.symbol, "bids": [list(lv) for lv in d.bids],
                       "asks": [list(lv) for lv in d.asks], "digest": r.digest(), "commit_index": r.index}
            self._out.append((to, QueryReply(q.req, OK, "ok", payload)))
        elif q.what == "status":
            self._out.append((to, QueryReply(q.req, OK, "ok", self.status())))
        elif q.what == "progress":
            self._out.append((to, QueryReply(q.req, OK, "ok", self.progress())))
        elif q.what == "orders":
            rows = [(oid, sym, side, price, qty) for sym in sorted(r.books)
                    for side, price, oid, qty in r.books[sym].orders_of(to.account)]
            self._out.append((to, QueryReply(q.req, OK, "ok", orders_payload(self.node_id, to.account, rows))))
        elif q.what == "trades":
            payload = self.fills.payload(self.node_id, to.account, lambda _tid: True, MAX_QUERY_ROWS)
            self._out.append((to, QueryReply(q.req, OK, "ok", payload)))
        elif q.what == "risk":  # limits and exact use at the folded index (riskexact); ``symbol``: one account
            payload = {"node": self.node_id, "mode": "strong", **r.risk.status(to.account, q.symbol, r.books)}
            self._out.append((to, QueryReply(q.req, OK, "ok", payload)))
        else:
            self._out.append((to, QueryReply(q.req, E_BAD, f"unknown query {q.what!r}", None)))

    # ---- introspection -----------------------------------------------------------------------------
    def progress(self) -> dict[str, Any]:
        """``NodeCore.progress``'s keys: ops folded, the folded index as version vector, nothing
        waiting (a follower folds committed entries as they come)."""
        r = self.replica
        return {"id": self.node_id, "ops": r.op_count, "version_vector": r.version_vector(), "pending": 0}

    def status(self) -> dict[str, Any]:
        """The eventual-mode status keys (``version_vector`` is ``{"log": commit index folded}``,
        every trade is final) plus the sequencer's: role, term, leader, commit / last index, and on
        the leader each follower's match index."""
        r, s = self.replica, self.seq.status()
        peers = {}
        for p in self.peers:
            est = self.clock.estimate(p)
            peers[p] = ({"offset_us": est.offset_ns / 1e3, "rtt_us": est.rtt_ns / 1e3,
                         "uncertainty_us": est.uncertainty_ns / 1e3} if est else None)
        counters: dict[str, Any] = dict(r.counters)
        counters.update(self.seq.counters)
        counters["bad_snapshots"] = r.counters["bad_snapshots"] + self.seq.counters.get("bad_snapshots", 0)
        counters.update(self.gossip.counters)
        counters.update(self.counters)
        counters["waiting"] = len(self._waits)
        counters["clock_samples_rejected"] = self.clock.rejected
        if self.status_extra is not None:
            counters.update(self.status_extra())
        out = {
            "id": self.node_id, "mode": "strong", "digest": r.digest(), "ops": r.op_count,
            "version_vector": r.version_vector(), "watermark": list(r.last_stamp),
            "trades_final": r.trade_count, "trades_provisional": 0, "members": self.membership.states(),
            "venue": self.membership.venue.status(),
            "peers": peers, "counters": counters, "hlc": list(self.hlc.last), "clock_in_sync": self.clock_in_sync,
            "accepting": self.accepting, "resting_orders": sum(len(b) for b in r.books.values()),
            "ready": self.ready, "role": s["role"], "term": s["term"], "leader": s["leader"],
            "commit_index": s["commit_index"], "last_index": s["last_index"],
            "snapshot_index": s["snapshot_index"], "config": {**s["conf"], "fences": {}},
            **self.status_info,
        }
        if self.seq.role is LEADER:
            out["match_index"] = s["match_index"]
        return out


def entry_from_storage(raw: Any) -> Entry:
    """A log entry read back from disk: ``[term, None | op]`` (``WireError`` if malformed)."""
    if type(raw) is not list or len(raw) != 2:
        raise WireError("bad log entry", reason="malformed")
    return Entry(uint()(raw[0]), None if raw[1] is None else OP_CHECK(raw[1]))


# ---- client rules (``node.ClientGate``, shared with eventual mode) ------------------------------------
class _ParkedWaits(dict[str, _Wait]):
    """``StrongNodeCore._waits`` counting its waits per account (the per-account cap is then O(1));
    the core stores with ``[key] = w`` and ends with ``pop``, which keep the counts."""

    def __init__(self, waits: dict[str, _Wait]) -> None:
        super().__init__(waits)
        self._per: dict[str, int] = {}
        for w in waits.values():
            self._per[w.account] = self._per.get(w.account, 0) + 1

    def of(self, account: str) -> int:
        return self._per.get(account, 0)

    def __setitem__(self, key: str, w: _Wait) -> None:
        old = self.get(key)
        if old is not None:
            self._less(old.account)
        super().__setitem__(key, w)
        self._per[w.account] = self._per.get(w.account, 0) + 1

    def __delitem__(self, key: str) -> None:
        self.pop(key)

    def pop(self, key: str, *default: Any) -> Any:  # type: ignore[override]
        if key in self:
            w = super().pop(key)
            self._less(w.account)
            return w
        return super().pop(key, *default)

    def _less(self, account: str) -> None:
        n = self._per[account] - 1
        if n:
            self._per[account] = n
        else:
            del self._per[account]


def _client_gate(core: StrongNodeCore) -> ClientGate:
    """The core's ``ClientGate``, made at its first client request (with ``StrongConfig.clients``,
    else the defaults); its waits are counted per account from then on."""
    gate: ClientGate | None = core.__dict__.get("_client_gate")
    if gate is None:
        limits = getattr(core.config, "clients", None) or ClientLimits()
        gate = core.__dict__["_client_gate"] = ClientGate(core.node_id, limits, core.counters, core.rng)
        core._waits = _ParkedWaits(core._waits)
    return gate


def _bounded(core: StrongNodeCore, out: list[tuple[str | Client, Any]]) -> list[tuple[str | Client, Any]]:
    gate: ClientGate | None = core.__dict__.get("_client_gate")
    return out if gate is None else gate.bound(out)


__all__ = ["E_RETRY", "Outcome", "SequencedBooks", "StrongConfig", "StrongNodeCore", "entry_from_storage"]
