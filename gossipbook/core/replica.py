"""The replicated book: a grow-only op-set CRDT with a deterministic fold.

Theory of operation
-------------------
State is the set of ops this replica holds plus, per origin, the contiguous seq held (the version
vector). Merge is set union, so it is commutative, associative and idempotent. The books are a
*fold* of the op-set in op order ``(wall, logical, origin)``; the same op-set gives the same books,
trades and digest on every replica, whatever order the ops arrived in.

- An op arriving above everything applied is folded straight on (the common case).
- An op arriving below something applied triggers *rollback and replay*: the books are rolled back
  to just below it, by undoing the journaled mutations of the ops above it (cost proportional to
  the disorder) or, when that is cheaper or the journal of final ops was dropped, by restarting
  from the nearest checkpoint; then the fold is replayed, and every trade that changed is reported
  as a ``TradeRevised`` event; trades that came out identical are not reported again.
- An op after a gap in its origin's seq waits until the gap fills (so the version vector stays exact).
- An op stamped more than ``max_offset`` ahead of local physical time is *held back*, not rejected
  for good, and retried on ``tick``: every replica eventually applies the same ops.
- Finality: member m can never again send an op at or below ``L_m``, the HLC of m's latest
  announcement, once we hold m's ops up to the seq it announced with it. The stable watermark is
  ``min_m L_m``; ops (and their trades) at or below it are final and are never rolled back.
- Compaction folds a prefix of final ops that every member holds into a ``Snapshot``. A peer behind
  the compaction point is sent the snapshot and then the ops above it.
- Ownership: a NEW records its account; the fold itself skips a CANCEL or AMEND whose account is
  not the order's owner, and a CANCEL_ALL cancels only its own account's orders, so the rule holds
  on every replica whatever arrives (a forged or replayed op included), not only where it was stamped.
- Requests: an op with a request id is a no-op if another op of its account with that id folds at
  most ``REQ_WINDOW`` positions below it (positions count every op of the fold, compacted ones
  included); a retried or replayed NEW, CANCEL or AMEND changes nothing (ids are scoped per
  account). The rule is a function of the op-set alone, so every replica agrees on it whenever it
  compacts; an id is forgotten once compacted more than ``REQ_WINDOW`` ops below the compaction
  point, which no op folded from then on can be within (snapshots carry at most that many ids).
- Members only: an op of an origin that is neither a member nor fenced is refused (counted
  ``non_member_ops``), and version-vector entries and announcements of non-members are ignored, so
  made-up origins can neither enter the op-set nor grow a version vector past the wire's cap. A
  snapshot whose compacted ops include a non-member's (a node dropped from the configuration) is
  installed with that origin fenced at its seq, unless the vector would then pass ``MAX_VV``.
- Bounded waiting: an op more than ``PENDING_WINDOW`` seqs above its origin's contiguous seq, or
  stamped more than ``PENDING_FUTURE_OFFSETS`` × ``max_offset`` ahead of local time, is dropped
  (counted), never kept: the version vector does not cover it, so anti-entropy sends it again.
- Self-trade prevention is the book's rule (``Book``), with each instrument's mode.
- A removed member is *fenced at a seq*: its ops above ``fence_seq`` are refused on every replica.
  (DESIGN.md fences at the watermark; replicas' watermarks differ at any instant, so a fence by
  watermark could let one replica accept an op another refuses. A seq is the same everywhere.)
- Membership changes at run time (``config_epoch.py``): a membership op (kind ``MEMBER``) is taken
  into ``self.config`` when it enters the op-set (``_reconfigure``: the configuration is a set
  function of those ops, so no replay ever undoes it) and folds as a no-op. An added member is
  admitted (its finality bound starts at its add op: ``_floor``); a removed one is fenced, and its
  ops above the fence that are already held are cut from the op-set, their trades reported revised.
  Snapshots carry the membership ops, so a node that joins from a snapshot knows the configuration.

Everything here is pure: time comes in as ``now`` (ns), nothing is read from the environment.
"""

from __future__ import annotations

import hashlib
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from operator import attrgetter

from .book import BUY, FOK, GTC, IOC, MARKET, MATCHING_MODES, SELL, STP_MODES, STP_OFF, Book, Trade
from .config_epoch import ADD as MEMBER_ADD
from .config_epoch import MEMBER, Configuration, MemberChange
from .config_epoch import valid_op as valid_member_op
from .errors import ClockOutOfSync, DuplicateRequest, InvalidOrder, NotOwner, UnknownOrder
from .hlc import DEFAULT_MAX_OFFSET_NS, HLC, MAX_REMOTE_LOGICAL, ZERO, Timestamp
from .instrument import OrderRequest, Venue
from .ops import (
    AMEND,
    CANCEL,
    CANCEL_ALL,
    NEW,
    Event,
    Op,
    OpFenced,
    TradeExecuted,
    TradeRevised,
    parse_order_id,
    scoped_req,
)
from .risk import (
    ASK,
    HALT,
    LIMIT,
    MAX_LIMIT,
    OPERATOR,
    RISK_KINDS,
    RiskConfig,
    RiskRefused,
    counters_of,
    valid_op,
)
from .riskledger import RiskLedger

CHAIN0 = b"\0" * 16
#: closes one book's records in the undo journal of a CANCEL_ALL (which may touch several books):
#: ``symbol, _J_BOOK`` after that book's cancel records (each ``Book`` record of a cancel is 7 long)
_J_BOOK = -4
_CANCEL_RECORD = 7
_INF = Timestamp(1 << 63, 0)
#: the trades of an op that made none: one shared empty tuple, not an empty list per op (most ops
#: trade nothing, and a list per op was a quarter of the objects the fold kept per op)
_NO_TRADES: tuple[Trade, ...] = ()
MIN_CHECKPOINT_INTERVAL = 64
#: request ids: an op is a retry (a no-op) iff an op with its ``req_key`` folds at most this many
#: positions below it. Stated to clients: a retry is recognised while fewer than about a million
#: ops were folded since the request's previous op (longer at lower rates: ~50 s at 20k ops/s)
REQ_WINDOW = 1 << 20
#: an op more than this many seqs above its origin's contiguous seq is dropped, not kept (a repair
#: answer is at most ``GossipConfig.repair_burst`` ops, 20,000 by default, so honest gaps fit)
PENDING_WINDOW = 1 << 16
#: an op stamped more than this many ``max_offset`` ahead of local time is dropped, not held back
#: (an honest one is at most about two ahead: its stamper's offset plus the sender's HLC bound)
PENDING_FUTURE_OFFSETS = 8
#: the most entries a version vector may have (the wire's cap on a VV map)
MAX_VV = 1024
_KINDS = frozenset({NEW, CANCEL, AMEND, CANCEL_ALL, MEMBER}) | RISK_KINDS
_EMPTY_SYMBOL_OK = frozenset({CANCEL_ALL, MEMBER}) | RISK_KINDS  # "" symbol: every instrument (or none)


@dataclass(slots=True)
class Snapshot:
    """The fold of a compacted prefix of the op-set: enough to continue folding above it."""

    base_vv: dict[str, int]  # per origin, the highest seq folded into this snapshot
    books: dict[str, list[tuple[int, int, str, int, str]]]  # symbol -> resting orders, priority order
    trades: int  # trades made by the compacted ops
    chain: bytes  # trade hash chain after the compacted ops
    last_key: tuple[int, int, str]  # the greatest op key in the snapshot
    #: ``Op.req_key`` -> the first op's id, with ``"@<d>"`` when the last op with it folded ``d``
    #: positions below the snapshot's end (``d`` < ``REQ_WINDOW``; none: 0, the format before it)
    reqs: dict[str, str] = field(default_factory=dict)
    #: order id -> the trades its own NEW made (compacted NEWs with a request id that traded): what a
    #: retry of that request must be told after the ops themselves are gone
    fills: dict[str, list[Trade]] = field(default_factory=dict)
    #: the risk state of the compacted ops and their fills of limited accounts (``RiskLedger.to_wire``;
    #: [] when there is none)
    risk: list = field(default_factory=list)  # type: ignore[type-arg]
    #: every membership op the snapshot's replica held (``Configuration.ops``): the configuration
    #: survives compaction, and a node joining from a snapshot learns it
    config: list = field(default_factory=list)  # type: ignore[type-arg]

    def to_books(self) -> dict[str, Book]:
        out: dict[str, Book] = {}
        for sym, rows in self.books.items():
            b = Book(sym)
            for side, price, oid, qty, acct in rows:
                b._rest(oid, side, price, qty, acct)
            out[sym] = b
        return out


@dataclass(slots=True)
class _Checkpoint:
    pos: int  # number of (non-compacted) applied ops folded into ``books``
    books: dict[str, Book]


#: (named, not lambdas: compiled by mypyc, a module-level function is a plain C call)
_ORIGIN_SEQ = attrgetter("origin", "seq")


def _rests(books: Mapping[str, Book], sym: str, oid: str) -> bool:
    return oid in books[sym]


def _cause_origin(t: Trade) -> str:
    return t.trade_id.rpartition("/")[0].rpartition(":")[0]


def _cause_seq(t: Trade) -> int:
    """The seq of the op whose fold made ``t`` (trade ids are ``"<origin>:<seq>/<n>"``)."""
    return int(t.trade_id.rpartition("/")[0].rpartition(":")[2])


def _chain(prev: bytes, trades: list[Trade]) -> bytes:
    h = hashlib.blake2b(prev, digest_size=16)
    for t in trades:
        h.update(f"|{t.trade_id},{t.price},{t.qty},{t.maker},{t.taker}".encode())
    return h.digest()


class Replica:
    """One node's replica of every book of a venue."""

    def __init__(self, node_id: str, venue: Venue | None = None, members: Iterable[str] = (),
                 max_offset_ns: int = DEFAULT_MAX_OFFSET_NS, hlc_last: Timestamp = ZERO,
                 checkpoint_interval: int = MIN_CHECKPOINT_INTERVAL, req_window: int = REQ_WINDOW,
                 risk: RiskConfig | None = None) -> None:
        if not 0 < req_window < 10**7:
            raise ValueError("req_window must be in 1 .. 9,999,999 (it travels as digits in snapshots)")
        self.node_id = node_id
        #: the dedupe window in fold positions; every replica of a cluster must use the same
        self.req_window = req_window
        self.venue = venue or Venue()
        self.hlc = HLC(node_id, max_offset_ns, hlc_last)
        self.members: set[str] = set(members) | {node_id}
        self.fenced: dict[str, int] = {}
        #: the run-time configuration (``config_epoch.py``): members added and removed by ops
        self.config = Configuration(self.members)
        #: added member -> a stamp it never stamps at or below (its add op's): the watermark's bound
        #: for it until it announces one
        self._floor: dict[str, Timestamp] = {}
        #: this node itself was removed: it stamps nothing more (its later ops are refused everywhere)
        self.removed = False
        self.clock_in_sync = True
        self.checkpoint_interval = max(1, checkpoint_interval)
        #: per instrument, its self-trade prevention mode (``book.STP_*``)
        self._stp = {s: STP_MODES[i.stp] for s, i in self.venue.instruments.items()}
        #: per instrument, its matching policy (``book.PRICE_TIME`` / ``PRO_RATA``)
        self._matching = {s: MATCHING_MODES[i.matching] for s, i in self.venue.instruments.items()}
        self.counters: dict[str, int] = {
            "not_owner": 0, "ops_applied": 0, "duplicates": 0, "held_back_clock": 0, "waiting_gap": 0,
            "replays": 0, "replayed_ops": 0, "revised_trades": 0, "fenced": 0, "snapshots_installed": 0,
            "compactions": 0, "invalid_ops": 0, "finality_violations": 0,
            "non_member_ops": 0, "non_member_vv": 0, "dropped_gap_window": 0, "dropped_far_future": 0,
            "snapshots_refused": 0, "snapshot_fenced": 0, "reqs_expired": 0, "member_ops_refused": 0,
            "fenced_cut": 0,
        }
        self.config.counters = self.counters
        # op-set
        self.vv: dict[str, int] = {}  # contiguous seq held per origin (compacted included)
        self._base: dict[str, int] = {}  # per origin, seq folded into the snapshot
        self._log: dict[str, list[Op]] = {}  # per origin, held ops above _base, by seq
        self._pending: dict[str, dict[int, Op]] = {}  # beyond a gap or held back by the clock
        #: ``Op.req_key`` -> the lowest-key op with it (the op, or its id once compacted)
        self._reqs: dict[str, Op | str] = {}
        #: ``Op.req_key`` -> the ops with it above the snapshot, in fold order (nearly always one)
        self._req_live: dict[str, list[Op]] = {}
        #: ``Op.req_key`` -> the fold position of the last compacted op with it, in position order
        #: (exactly the keys whose ``_reqs`` entry is an op id); pruned by ``REQ_WINDOW``
        self._req_last: dict[str, int] = {}
        self._ncompacted = 0  # ops folded into the snapshot (its end, as a fold position)
        self._at = 0  # the fold position of the op ``_fold_op`` is folding
        self._fills: dict[str, list[Trade]] = {}  # compacted NEW with a req -> the trades it made
        # fold
        self._snap_books: dict[str, Book] = {s: Book(s) for s in self.venue.instruments}
        self._snap_trades = 0
        self._snap_chain = CHAIN0
        self._snap_key: tuple[int, int, str] = (0, 0, "")
        #: undo records of every mutation of the live books (``Book.undo``), in fold order; the first
        #: ``_jbase`` were dropped (final ops). ``_marks[i]`` is where the records of applied op i
        #: start, counted from the very first record. One flat list: no object per op or record for
        #: the garbage collector to count and walk.
        self._journal: list[str | int] = []
        self._jbase = 0
        #: per-op integers (journal marks, cumulative trade counts) live in int64 arrays: a list
        #: would hold one int object per op (each above 256 is a fresh allocation)
        self._marks: array[int] = array("q")
        self.books: dict[str, Book] = self._live({s: b.clone() for s, b in self._snap_books.items()})
        self._applied: list[Op] = []  # fold order, above the snapshot
        #: per applied op, its trades (``_NO_TRADES`` when it made none)
        self._op_trades: list[list[Trade] | tuple[Trade, ...]] = []
        self._cum: array[int] = array("q")  # cumulative trade count through each applied op
        self._chain: list[bytes] = []
        self._ckpts: list[_Checkpoint] = [_Checkpoint(0, self._clone_books(self._snap_books))]
        self._ck_next = 0  # position at which to consider the next checkpoint (0: at once)
        # finality
        self._announced: dict[str, tuple[Timestamp, int]] = {}  # member -> (hlc, max seq)
        self._held_bound: dict[str, Timestamp] = {}  # member -> greatest announced hlc whose seq we held
        self._peer_vv: dict[str, dict[str, int]] = {}
        self._wm_others: Timestamp | None = None  # see ``_others_bound``; None: recompute
        #: ops added to the op-set since the shell last drained it (what storage must persist)
        self.new_ops: list[Op] = []
        #: a wrapper of the fold's step (``_fold_op``) that every op goes through instead, or None:
        #: how the simulator's checker watches each fold step (a compiled ``Replica`` cannot have a
        #: method replaced on the instance)
        self.fold_hook: Callable[[Mapping[str, Book], Op], list[Trade]] | None = None
        #: risk limits: the risk ops in force and this node's rights (``riskledger``)
        self.risk = RiskLedger(node_id, self.members, self.venue.instruments, risk or RiskConfig(), self.counters)

    # ==== queries ===================================================================================
    @property
    def op_count(self) -> int:
        """Ops folded in total, compacted ones included."""
        return sum(self._base.values()) + len(self._applied)

    @property
    def trade_count(self) -> int:
        return self._cum[-1] if self._cum else self._snap_trades

    def digest(self) -> str:
        """Hex digest over every book's resting state and the hash chain of all trades."""
        h = hashlib.blake2b(digest_size=16)
        for sym in sorted(self.books):
            h.update(self.books[sym].digest())
        h.update(self._chain[-1] if self._chain else self._snap_chain)
        h.update(self.trade_count.to_bytes(8, "big"))
        return h.hexdigest()

    def trades(self, final_only: bool = False) -> list[Trade]:
        """Trades of the ops above the snapshot, in fold order (compacted ones are final and gone);
        with ``final_only``, just those made by ops at or below the stable watermark."""
        ops = self._op_trades[:self.final_count()] if final_only else self._op_trades
        return [t for ts in ops for t in ts]

    def ops(self) -> list[Op]:
        """Held ops above the snapshot, in fold order."""
        return list(self._applied)

    def holds(self, origin: str, seq: int) -> bool:
        return seq <= self.vv.get(origin, 0)

    def watermark(self) -> Timestamp:
        """The stable watermark: no op at or below it can still arrive."""
        w = self._wm_others
        if w is None:
            w = self._wm_others = self._others_bound()
        if self.node_id in self.members:
            own = self.hlc.last
            if own < w:
                w = own
        return w if w is not _INF else self.hlc.last

    def _others_bound(self) -> Timestamp:
        """The watermark's minimum over everyone but this node (cached in ``_wm_others``: it
        changes only with announcements, the version vector and membership, which reset it)."""
        w = _INF
        for m in self.members:
            if m in self.fenced or m == self.node_id:
                continue
            lm = self._member_bound(m)
            if lm < w:
                w = lm
        for m, fence in self.fenced.items():
            if self.vv.get(m, 0) < fence and m != self.node_id:  # still waiting for ops the fence admits
                w = min(w, self._member_bound(m))
        return w

    def _member_bound(self, m: str) -> Timestamp:
        if m == self.node_id:
            return self.hlc.last
        a = self._announced.get(m)
        if a is not None and self.vv.get(m, 0) >= a[1]:
            b = a[0]
        else:
            # a newer announcement we cannot use yet must not hide the bound an older one established
            b = self._held_bound.get(m, ZERO)
        f = self._floor.get(m) if self._floor else None
        return f if f is not None and f > b else b

    def final_count(self) -> int:
        """Number of applied (non-compacted) ops at or below the watermark."""
        w = self.watermark()
        return bisect_left(self._applied, (w.wall, w.logical + 1))

    def trades_final(self) -> int:
        n = self.final_count()
        return self._cum[n - 1] if n else self._snap_trades

    def is_final(self, op: Op) -> bool:
        w = self.watermark()
        return (op.wall, op.logical) <= (w.wall, w.logical)

    def trade_is_final(self, trade_id: str) -> bool:
        """Whether the op that made ``trade_id`` (``"<origin>:<seq>/<n>"``) is final here (a
        compacted op is)."""
        origin, _, rest = trade_id.rpartition("/")[0].rpartition(":")
        if not rest.isdigit():
            return False
        seq = int(rest)
        if seq <= self._base.get(origin, 0):
            return True
        log = self._log.get(origin)
        if not log or not log[0].seq <= seq <= log[-1].seq:
            return False
        return self.is_final(log[seq - log[0].seq])

    def replicated(self, op: Op) -> bool:
        """Held by a majority of the voting members, as far as their last reported version vectors
        say (a member added by an op that has not announced itself here yet is a learner: it holds
        nothing to count, and counting it would let one pending add stall every ack)."""
        members = self.voters() if self._floor else self.members
        holders = 1 if self.holds(op.origin, op.seq) else 0
        for m in members:
            if m != self.node_id and self._peer_vv.get(m, {}).get(op.origin, 0) >= op.seq:
                holders += 1
        return holders * 2 > len(members)

    def voters(self) -> set[str]:
        """Members less the learners: added by an op and never heard from here (config_epoch.py)."""
        if not self._floor:
            return self.members
        return self.members - {m for m in self._floor if m not in self._announced}

    def order_status(self, order_id: str) -> tuple[int, int, int] | None:
        """``(side, price, remaining)`` if resting in some book now, else None."""
        for b in self.books.values():
            o = b.order(order_id)
            if o is not None:
                return o
        return None

    def version_vector(self) -> dict[str, int]:
        return dict(self.vv)

    # ==== local client ops ==========================================================================
    def submit_new(self, symbol: str, side: int, price: int, qty: int, tif: int, now: int,
                   req: str = "", *, account: str = "") -> tuple[Op, list[Event]]:
        """Validate, stamp and fold a new order of ``account`` from a client of this node."""
        self._check_clock()
        inst = self.venue.get(symbol)
        if type(side) is not int or side not in (BUY, SELL):
            raise InvalidOrder("side must be buy or sell")
        if type(tif) is not int or tif not in (GTC, IOC, FOK, MARKET):
            raise InvalidOrder("time in force must be gtc, ioc, fok or market")
        if tif == MARKET:
            price = 0
        else:
            inst.check_ticks(price)
        inst.check_lots(qty)
        self.venue.check(OrderRequest("new", inst, side, price, qty, account, "", req))
        retried = self._retried(req, account)
        if retried is not None:
            return retried, []  # a retried request: the order already exists
        if account in self.risk.accounts:
            self.risk.check_new(account, symbol, side, price, qty, tif, now)  # RiskRefused: this node's rights
        return self._stamp(NEW, symbol, "", side, price, qty, tif, req, now, account)

    def _retried(self, req: str, account: str) -> Op | None:
        """The op this node already stamped for ``account``'s request ``req``, if any."""
        key = scoped_req(account, req) if req else ""
        prior = self._reqs.get(key) if key else None
        if isinstance(prior, Op) and prior.origin == self.node_id:
            return prior
        if isinstance(prior, str) and self.compacted_request(req, account) is not None:
            raise DuplicateRequest(f"request {req!r} placed order {prior}, which is final and compacted; "
                                   f"ask compacted_request() for its fills")
        return None

    def compacted_request(self, req: str, account: str = "") -> tuple[str, list[Trade]] | None:
        """``(op id, the trades a NEW made)`` if ``account``'s request ``req`` was an op of *this*
        node that is compacted away: a client retrying after a restart must hear about the same
        order, not a new one, and its fills are all that is left of it."""
        prior = self._reqs.get(scoped_req(account, req)) if req else None
        if not isinstance(prior, str) or prior.rpartition(":")[0] != self.node_id:
            return None
        return prior, list(self._fills.get(prior, ()))

    def submit_cancel(self, order_id: str, now: int, req: str = "", *, account: str = "") -> tuple[Op, list[Event]]:
        """Stamp a cancel of ``account``'s own resting order (``NotOwner`` for another's)."""
        self._check_clock()
        retried = self._retried(req, account)
        if retried is not None:
            return retried, []
        sym, side, _price, _qty = self._open_order(order_id, account)
        return self._stamp(CANCEL, sym, order_id, side, 0, 0, GTC, req, now, account)

    def submit_amend(self, order_id: str, price: int, qty: int, now: int, req: str = "", *,
                     account: str = "") -> tuple[Op, list[Event]]:
        """Stamp an amend of ``account``'s own resting order (``NotOwner`` for another's)."""
        self._check_clock()
        retried = self._retried(req, account)
        if retried is not None:
            return retried, []
        sym, side, _p, _q = self._open_order(order_id, account)
        if account in self.risk.accounts:
            self.risk.check_amend(account)
        inst = self.venue.get(sym)
        inst.check_ticks(price)
        if qty != 0:
            inst.check_lots(qty)
            self.venue.check(OrderRequest("amend", inst, side, price, qty, account, order_id, req))
        return self._stamp(AMEND, sym, order_id, side, price, qty, GTC, req, now, account)

    def submit_cancel_all(self, symbol: str, now: int, req: str = "", *, account: str) -> tuple[Op, int]:
        """Stamp a mass cancel: every order of ``account`` (in ``symbol``, or in every book when it
        is "") that folds before this op is cancelled, on every replica. Returns the op and how many
        of the account's orders it cancelled here."""
        self._check_clock()
        if not account:
            raise InvalidOrder("a mass cancel needs an account")
        if symbol:
            self.venue.get(symbol)
        retried = self._retried(req, account)
        if retried is not None:
            return retried, 0
        books = [self.books[symbol]] if symbol else list(self.books.values())
        n = sum(len(b.orders_of(account)) for b in books)
        op, _ev = self._stamp(CANCEL_ALL, symbol, "", 0, 0, 0, GTC, req, now, account)
        return op, n

    def submit_limit(self, target: str, symbol: str, dim: int, value: int, now: int, req: str = "", *,
                     account: str, clear: bool = False) -> tuple[Op, list[Event]]:
        """Stamp a risk limit on ``target``'s exposure ``dim`` (``risk.DIM_*``) in ``symbol`` ("" every
        instrument): ``value`` lots (notional: ticks x lots), or no limit with ``clear``. Only the
        operator account's limits count (the fold refuses others too). The raise goes to this node's
        rights; with ``[risk] split = "even"`` it gives every member its share right after."""
        self._check_clock()
        if account != OPERATOR:
            raise RiskRefused(f"risk: only the {OPERATOR} account sets limits (this request is {account or 'nobody'}'s)")
        if not (1 <= len(target) <= 64 and target.isascii() and all(c.isalnum() or c in "-_." for c in target)):
            raise InvalidOrder(f"account {target[:64]!r} must be 1-64 letters, digits, '-', '_' or '.'")
        if type(dim) is not int or not 0 <= dim <= 3:
            raise InvalidOrder("limit kind must be open-buy, open-sell, position or notional")
        if symbol:
            self.venue.get(symbol)
        elif dim == 2:
            raise InvalidOrder("a position limit needs an instrument (--symbol)")
        if type(value) is not int or not 0 <= value <= MAX_LIMIT:
            raise InvalidOrder(f"a limit must be 0 .. {MAX_LIMIT}")
        retried = self._retried(req, account)
        if retried is not None:
            return retried, []
        st = self.risk.state()
        shares = [] if clear else [((target, symbol, c), value - st.limits.get((target, symbol, c), 0))
                                   for c in counters_of(dim)]
        op, ev = self._stamp(LIMIT, symbol, target, 1 if clear else 0, 0, 0 if clear else value, dim, req, now, account)
        shares = [(k, d) for k, d in shares if d > 0]
        if shares and self.risk.config.split == "even" and len(self.members) > 1:
            self.risk.splits.append(shares)
        return op, ev

    def submit_halt(self, target: str, disable: bool, now: int, req: str = "", *, account: str) -> tuple[Op, list[Event]]:
        """Stamp the kill switch for ``target``: ``disable`` cancels every resting order of it where
        the op folds and makes its NEWs folding after it no-ops, on every replica; enable lifts it."""
        self._check_clock()
        if account != OPERATOR:
            raise RiskRefused(f"risk: only the {OPERATOR} account uses the kill switch (this request is "
                              f"{account or 'nobody'}'s)")
        if not (1 <= len(target) <= 64 and target.isascii() and all(c.isalnum() or c in "-_." for c in target)):
            raise InvalidOrder(f"account {target[:64]!r} must be 1-64 letters, digits, '-', '_' or '.'")
        retried = self._retried(req, account)
        if retried is not None:
            return retried, []
        return self._stamp(HALT, "", target, 0 if disable else 1, 0, 0, 0, req, now, account)

    def submit_member(self, target: str, remove: bool, fence: int, now: int, *, account: str) -> tuple[Op, list[Event]]:
        """Stamp a membership change (``config_epoch.py``): add ``target`` ("id@host:port") or remove
        it ("id", its ops above ``fence`` refused everywhere). The caller checked it first
        (``check_add`` / ``check_remove``); only the operator account may. Not gated on the clock:
        no order is priced by it, and removing a dead member must not wait for a healthy clock
        (an op stamped ahead of its peers is held back there until their clocks catch up)."""
        if account != OPERATOR:
            raise InvalidOrder(f"only the {OPERATOR} account changes membership (this request is "
                               f"{account or 'nobody'}'s)")
        return self._stamp(MEMBER, "", target, 1 if remove else 0, 0, fence if remove else 0, 0, "", now, account)

    def risk_tick(self, now: int) -> list[Op]:
        """Settle what finality allows, then stamp the transfers and asks that move rights (the
        split of a limit stamped here, answers to asks, our own asks). Returns the ops stamped: the
        caller pushes them to peers. Call it only when this node may stamp (ready, storage up)."""
        self._risk_sweep()
        out = []
        for kind, symbol, to, side, qty, tif, acct in self.risk.plan(now, self.books):
            op, _ev = self._stamp(kind, symbol, to, side, 0, qty, tif, "", now, acct)
            out.append(op)
        return out

    def _risk_sweep(self) -> None:
        w = self.watermark()
        books = self.books
        self.risk.sweep(self._applied, self._op_trades, self._ncompacted, self.final_count(), (w.wall, w.logical),
                        partial(_rests, books))

    def orders_of(self, account: str) -> list[tuple[str, str, int, int, int]]:
        """``account``'s resting orders: ``(order_id, symbol, side, price, remaining)``."""
        return [(oid, sym, side, price, q) for sym in sorted(self.books)
                for side, price, oid, q in self.books[sym].orders_of(account)]

    def _check_clock(self) -> None:
        if not self.clock_in_sync:
            raise ClockOutOfSync("clock out of sync: this node is not taking orders until its clock is back "
                                 "within max_offset/2 of its peers")

    def _open_order(self, order_id: str, account: str) -> tuple[str, int, int, int]:
        parsed = parse_order_id(order_id)
        if parsed is None:
            raise UnknownOrder(f"order id {order_id!r} is not of the form NODE:SEQ")
        origin, seq = parsed
        if not self.holds(origin, seq):
            raise UnknownOrder(f"unknown order {order_id} here (not yet replicated to {self.node_id}); retry "
                               f"later or send it to {origin}")
        for sym, b in self.books.items():
            o = b.order(order_id)
            if o is not None:
                if b.owner(order_id) != account:
                    raise NotOwner(f"order {order_id} belongs to another account")
                return sym, o[0], o[1], o[2]
        raise UnknownOrder(f"order {order_id} is not open (filled, cancelled or never rested)")

    def _stamp(self, kind: int, symbol: str, order_id: str, side: int, price: int, qty: int, tif: int,
               req: str, now: int, account: str = "") -> tuple[Op, list[Event]]:
        if self.removed:
            raise InvalidOrder(f"{self.node_id} was removed from the cluster (epoch {self.config.epoch}); "
                               f"it stamps nothing more: send orders to a member")
        ts = self.hlc.now(now)
        me = self.node_id
        seq = self.vv.get(me, 0) + 1
        op = Op(ts.wall, ts.logical, me, seq, kind, symbol, order_id, side, price, qty, tif, req, account)
        applied = self._applied
        if me in self._pending or (applied and not op > applied[-1]) or kind == MEMBER:
            return op, self._admit([op])
        # the common case, ``_admit`` for one op without its search: the HLC just issued a timestamp
        # above everything held, so the op is contiguous, valid and folds on top (no replay)
        self._log.setdefault(me, []).append(op)
        self.vv[me] = seq
        self.new_ops.append(op)
        if req:
            self._note_req(op)
        if kind in RISK_KINDS:
            self.risk.note(op)
        self.counters["ops_applied"] += 1
        applied.append(op)
        return op, [TradeExecuted(t) for t in self._apply(op)]

    # ==== replication ===============================================================================
    def receive(self, ops: Iterable[Op], now: int) -> list[Event]:
        """Merge ops from a peer (any order, duplicates allowed). Returns the fold's events.

        Ops too far ahead of ``now`` are held back (counted) and retried by ``tick``; ops from a
        fenced member past its fence are refused with an ``OpFenced`` event.
        """
        ready: list[Op] = []
        events: list[Event] = []
        strangers: list[Op] = []
        joining: set[str] | None = None  # members this batch adds (its ops fold with the add, not after)
        limit = now + self.hlc.max_offset_ns
        members, fenced = self.members, self.fenced
        ops = ops if type(ops) is list else list(ops)
        for op in ops:
            o = op.origin
            if o not in members and o not in fenced:
                if joining is None:  # (cold: an origin this replica does not know)
                    joining = {x.order_id.partition("@")[0] for x in ops if x.kind == MEMBER and x.side == 0}
                if o not in joining:
                    strangers.append(op)  # a made-up origin: never pending, never in the vv
                    continue
            if op.seq <= self.vv.get(o, 0):
                self.counters["duplicates"] += 1
                continue
            fence = self.fenced.get(o)
            if fence is not None and op.seq > fence:
                self.counters["fenced"] += 1
                events.append(OpFenced(op))
                continue
            if (op.symbol not in self.books and not (op.kind in _EMPTY_SYMBOL_OK and not op.symbol)) \
                    or op.kind not in _KINDS or op.logical > MAX_REMOTE_LOGICAL \
                    or (op.kind in RISK_KINDS and not valid_op(op, self.books)) \
                    or (op.kind == MEMBER and not valid_member_op(op)):
                # a venue mismatch, or a logical no honest clock reaches (adopting it would push our own
                # stamps toward the wire's limit): a bad peer
                self.counters["invalid_ops"] += 1  # a venue mismatch or a bad peer: drop, count
                continue
            if op.wall > limit:
                self.hlc.rejected += 1
                if op.wall - now > PENDING_FUTURE_OFFSETS * self.hlc.max_offset_ns:
                    self.counters["dropped_far_future"] += 1  # repair sends it again: the vv lacks it
                elif self._park(op):
                    self.counters["held_back_clock"] += 1
                continue
            ready.append(op)
        if ready:
            events += self._admit(ready, limit)
        self.counters["non_member_ops"] += len(strangers)
        return events

    def tick(self, now: int) -> list[Event]:
        """Retry ops held back by the clock bound; call it periodically with physical time."""
        limit = now + self.hlc.max_offset_ns
        due: list[Op] = []
        for o, waiting in self._pending.items():
            nxt = self.vv.get(o, 0) + 1
            op = waiting.get(nxt)
            if op is not None and op.wall <= limit:
                due.append(op)
        return self._admit(due, limit) if due else []

    def _admit(self, ops: list[Op], limit: int | None = None) -> list[Event]:
        """Add ops to the op-set; fold the ones that are now contiguous.

        ``limit`` is the clock bound (``now + max_offset``) of the caller: an op waiting behind a gap
        that was held back by the clock stays pending when the gap fills, until ``tick`` admits it.
        """
        # the final prefix before this admission completes any member's announced seq; only a
        # late op (below the top of the log) needs it, and live traffic in order is the hot path
        applied = self._applied
        fc = self.final_count() if applied and ops and min(ops) < applied[-1] else len(applied)
        fresh: list[Op] = []
        for op in sorted(ops, key=_ORIGIN_SEQ):
            o = op.origin
            have = self.vv.get(o, 0)
            if op.seq <= have:
                self.counters["duplicates"] += 1
                continue
            if op.seq > have + 1:
                if self._park(op):
                    self.counters["waiting_gap"] += 1
                continue
            log = self._log.setdefault(o, [])
            prev = log[-1] if log else None
            if prev is not None and (op.wall, op.logical) <= (prev.wall, prev.logical):
                self.counters["invalid_ops"] += 1  # breaks the origin's HLC monotonicity
                continue
            log.append(op)
            self.vv[o] = op.seq
            fresh.append(op)
            self.new_ops.append(op)
            # drain ops that were waiting on this gap (unless still too far ahead: tick retries)
            waiting = self._pending.get(o)
            if waiting:
                waiting.pop(op.seq, None)  # it was itself waiting (held back by the clock): now held
            while waiting:
                nxt = waiting.get(op.seq + 1)
                if nxt is None or (limit is not None and nxt.wall > limit):
                    break
                del waiting[nxt.seq]
                log.append(nxt)
                self.vv[o] = nxt.seq
                fresh.append(nxt)
                self.new_ops.append(nxt)
                op = nxt
            if waiting is not None and not waiting:
                del self._pending[o]
        if not fresh:
            return []
        self._wm_others = None  # the version vector moved: an announcement may now be usable
        newest = max(fresh)
        if (newest.wall, newest.logical) > tuple(self.hlc.last):
            self.hlc.wall, self.hlc.logical = newest.wall, newest.logical  # receive rule, bound checked above
        reconf = False
        for op in fresh:
            if op.req:
                self._note_req(op)
            if op.kind in RISK_KINDS:
                self.risk.note(op)
            elif op.kind == MEMBER:
                reconf = True
        self.counters["ops_applied"] += len(fresh)
        if reconf:
            fresh, events = self._reconfigure(fresh)
            if not fresh:
                return events
            return events + self._fold_in(fresh, min(fc, self.final_count()))
        return self._fold_in(fresh, fc)

    def _park(self, op: Op) -> bool:
        """Keep ``op`` pending (beyond a gap, or held back by the clock) unless it is more than
        ``PENDING_WINDOW`` seqs above its origin's contiguous seq: then it is dropped and counted
        (False). Nothing is lost: the version vector does not cover it, so repair resends it."""
        if op.seq - self.vv.get(op.origin, 0) > PENDING_WINDOW:
            self.counters["dropped_gap_window"] += 1
            return False
        self._pending.setdefault(op.origin, {})[op.seq] = op
        return True

    def _note_req(self, op: Op) -> None:
        """Remember the ops of each request: the lowest-key one, and all of them above the snapshot
        (the fold asks which one is below an op, and where)."""
        key = op.req_key
        live = self._req_live.get(key)
        if live is None:
            self._req_live[key] = [op]
        elif op > live[-1]:
            live.append(op)
        else:
            live.insert(bisect_left(live, op), op)
        prior = self._reqs.get(key)
        if prior is None or (isinstance(prior, Op) and op < prior):
            self._reqs[key] = op

    def _is_retry(self, op: Op) -> bool:
        """Whether an op with ``op.req_key`` folds at most ``req_window`` positions below ``op``
        (``_at`` is ``op``'s position). A pure function of the op-set: the same on every replica."""
        key = op.req_key
        live = self._req_live.get(key)
        i = bisect_left(live, op) if live else 0
        if i:
            prev = self._ncompacted + bisect_left(self._applied, live[i - 1])  # type: ignore[index]
        else:
            last = self._req_last.get(key)
            if last is None:
                return False
            prev = last
        return self._at - prev <= self.req_window

    def _fold_in(self, fresh: list[Op], final_count: int) -> list[Event]:
        fresh.sort()
        applied = self._applied
        if not applied or fresh[0] > applied[-1]:
            events: list[Event] = []
            for op in fresh:
                applied.append(op)
                for t in self._apply(op):
                    events.append(TradeExecuted(t))
            return events
        # a late op: roll back to just below it, replay, report revisions
        first = bisect_left(applied, fresh[0])
        if first < final_count:
            # finality says this cannot happen (a member lost its persisted HLC?); converge anyway
            # and count it, so the checker and the operator see the broken promise
            self.counters["finality_violations"] += 1
        start = self._rollback(first)
        merged = sorted(applied[first:] + fresh)
        del applied[first:]
        applied.extend(merged)
        return self._replay_from(start)

    def _rollback(self, pos: int) -> int:
        """Bring ``books`` back to the fold of the first ``pos`` applied ops, or to an earlier
        position; returns the position the books are at (the replay starts there).

        Undoing the ops above ``pos`` costs about one step per op undone; restarting from the
        nearest checkpoint costs a clone of the books plus a replay of the ops between it and
        ``pos``. Either gives the same books, so pick the cheaper (the journal of final ops may be
        gone: then the checkpoint it is).
        """
        ci = bisect_right([c.pos for c in self._ckpts], pos) - 1
        ck = self._ckpts[ci]
        n = len(self._applied)
        marks, journal, base = self._marks, self._journal, self._jbase
        if marks[pos] >= base and n - pos <= 4 * (pos - ck.pos) + self._resting() // 4:
            books, applied = self.books, self._applied
            for i in range(n - 1, pos - 1, -1):
                op = applied[i]
                if op.kind == CANCEL_ALL or op.kind == HALT:
                    self._undo_books(journal, marks[i] - base)
                elif op.kind <= AMEND:
                    books[op.symbol].undo(journal, marks[i] - base)  # (other risk ops touch no book)
            while self._ckpts[-1].pos > pos:
                self._ckpts.pop()
            return pos
        del self._ckpts[ci + 1:]
        if ck.pos < n:
            del journal[max(0, marks[ck.pos] - base):]
        self.books = self._live(self._clone_books(ck.books))
        return ck.pos

    def _undo_books(self, journal: list[str | int], start: int) -> None:
        """Undo a CANCEL_ALL's records: one segment per book, each closed by ``symbol, _J_BOOK``."""
        while len(journal) > start:
            sym = journal[-2]
            del journal[-2:]
            k = len(journal)
            while k > start and journal[k - 1] != _J_BOOK:
                k -= _CANCEL_RECORD
            self.books[sym].undo(journal, k)  # type: ignore[index]

    def _replay_from(self, start: int) -> list[Event]:
        """Refold the applied ops from ``start`` (where ``books`` are) and diff their trades."""
        old = [t for ts in self._op_trades[start:] for t in ts]
        del self._op_trades[start:]
        del self._cum[start:]
        del self._chain[start:]
        del self._marks[start:]
        self._ck_next = 0
        self.counters["replays"] += 1
        self.counters["replayed_ops"] += len(self._applied) - start
        new: list[Trade] = []
        for i in range(start, len(self._applied)):
            new += self._apply(self._applied[i])
        return self._diff(old, new)

    def _diff(self, old: list[Trade], new: list[Trade]) -> list[Event]:
        events: list[Event] = []
        before = {t.trade_id: t for t in old}
        after = {t.trade_id: t for t in new}
        for tid, t in before.items():
            n = after.get(tid)
            if n != t:
                events.append(TradeRevised(t, n))
        for t in new:
            if t.trade_id not in before:
                events.append(TradeExecuted(t))
        self.counters["revised_trades"] += sum(isinstance(e, TradeRevised) for e in events)
        return events

    def _fold_op(self, books: Mapping[str, Book], op: Op) -> list[Trade]:
        """The fold's step function: one op into ``books``; returns the trades it made."""
        if op.req and self._is_retry(op):
            if op.kind > CANCEL_ALL:
                self.risk.effective(op, False)
            return []  # a retry of a request folded just below: a no-op on every replica
        kind = op.kind
        risk = self.risk
        if kind == NEW:
            oid = op.op_id
            if op.account in risk.accounts and not risk.fold_new(oid, op):
                return []  # a disabled account's order: a no-op on every replica (the kill switch)
            esc = risk.escrow
            book = books[op.symbol]
            stp = op.account in esc.by_acct and self._stp[op.symbol] != STP_OFF
            n0 = len(book) if stp else 0
            trades = book.submit(oid, op.side, op.price, op.qty, op.tif, oid, op.account,
                                 self._stp[op.symbol], self._matching[op.symbol])
            if esc.orders:
                risk.touch(op, trades)
            if stp:  # resting orders gone without a trade: self-trade prevention removed some of its own
                gone = len({t.maker for t in trades if t.maker not in book})
                if n0 + (oid in book) - len(book) > gone:
                    esc.stp_touched(op.account, (op.wall, op.logical))
            return trades
        if kind == CANCEL_ALL:
            if op.account:
                if op.account in risk.escrow.by_acct:
                    key = (op.wall, op.logical)
                    risk.escrow.touch_account(op.account, key, books, op.symbol,
                                              close_before=key if op.origin == self.node_id else None)
                for sym in ([op.symbol] if op.symbol else sorted(books)):
                    b = books[sym]
                    if b.cancel_account(op.account) and b.journal is not None:
                        b.journal += (sym, _J_BOOK)
            return []
        if kind == MEMBER:
            return []  # membership: taken into the configuration when admitted (``_reconfigure``)
        if kind > CANCEL_ALL:
            return self._fold_risk(books, op)
        book = books[op.symbol]
        esc = risk.escrow
        if kind == CANCEL and op.order_id in esc.orders:
            esc.touch(op.order_id, (op.wall, op.logical))
            if op.origin == self.node_id and esc.orders[op.order_id].account == op.account:
                esc.close(op.order_id)  # our own cancel: after it the order never rests, on any replica
        if book.owner(op.order_id) != op.account:  # not resting, or another account's: a no-op
            if op.order_id in book:
                self.counters["not_owner"] += 1
            return []
        if kind == CANCEL:
            book.cancel(op.order_id)
            return []
        if op.account in risk.accounts and risk.amend_refused(op):
            return []  # an account with limits does not amend (riskledger.amend_refused): no tracked order does
        trades = book.amend(op.order_id, op.price, op.qty, op.op_id, self._stp[op.symbol],
                            self._matching[op.symbol]) or []
        if esc.orders:
            risk.touch(op, trades)
            esc.touch(op.order_id, (op.wall, op.logical))
        return trades

    def _fold_risk(self, books: Mapping[str, Book], op: Op) -> list[Trade]:
        """A risk op's fold step: it takes effect (``RiskLedger.state`` applies it); a disabling
        HALT also cancels every resting order of its account, as a mass cancel does."""
        if op.kind == ASK:
            return []
        risk = self.risk
        risk.effective(op, True)
        if op.kind == LIMIT:
            if op.account != OPERATOR:
                self.counters["risk_not_operator"] += 1
        elif op.kind == HALT and risk.fold_halt(op, books):
            for sym in sorted(books):
                b = books[sym]
                if b.cancel_account(op.order_id) and b.journal is not None:
                    b.journal += (sym, _J_BOOK)
        return []

    def _apply(self, op: Op) -> list[Trade]:
        """Fold one op (already appended to ``_applied``) and record its trades, chain and undo
        journal."""
        self._marks.append(self._jbase + len(self._journal))
        self._at = self._ncompacted + len(self._op_trades)
        hook = self.fold_hook
        trades = self._fold_op(self.books, op) if hook is None else hook(self.books, op)
        prev_cum = self._cum[-1] if self._cum else self._snap_trades
        prev_chain = self._chain[-1] if self._chain else self._snap_chain
        self._op_trades.append(trades or _NO_TRADES)
        self._cum.append(prev_cum + len(trades))
        self._chain.append(_chain(prev_chain, trades) if trades else prev_chain)
        n = len(self._op_trades)
        if n >= self._ck_next:
            # checkpoint spacing grows with the book, so cloning costs O(1) per op amortized; the
            # book is sized only when a checkpoint may be due, not on every op
            last = self._ckpts[-1].pos
            need = max(self.checkpoint_interval, self._resting())
            if n - last >= need:
                self._ckpts.append(_Checkpoint(n, self._clone_books(self.books)))
                self._ck_next = n + self.checkpoint_interval
            else:
                self._ck_next = last + need
        return trades

    def _resting(self) -> int:
        return sum(len(b) for b in self.books.values())

    def _live(self, books: dict[str, Book]) -> dict[str, Book]:
        """Make ``books`` the live ones: their mutations go to the undo journal."""
        for b in books.values():
            b.journal = self._journal
        return books

    @staticmethod
    def _clone_books(books: Mapping[str, Book]) -> dict[str, Book]:
        return {s: b.clone() for s, b in books.items()}

    # ==== finality, membership ======================================================================
    def observe(self, member: str, ts: Timestamp, max_seq: int, now: int) -> None:
        """Record a member's announcement: its HLC at send time and the highest seq it had stamped.

        A timestamp too far ahead of ``now`` is ignored (counted), never adopted.
        """
        if member == self.node_id:
            return
        if member not in self.members:
            self.counters["non_member_vv"] += 1
            return
        if ts.wall - now > self.hlc.max_offset_ns or ts.logical > MAX_REMOTE_LOGICAL:
            self.hlc.rejected += 1
            return
        prev = self._announced.get(member)
        if prev is None or ts > prev[0]:
            if prev is not None and self.vv.get(member, 0) >= prev[1]:
                self._held_bound[member] = prev[0]
            self._announced[member] = (Timestamp(*ts), max_seq)
            self._wm_others = None
        self._prune_checkpoints()

    def observe_vv(self, member: str, vv: Mapping[str, int]) -> None:
        """Record what a member holds (from anti-entropy); used for compaction and ack levels.
        Entries of origins that are neither members nor fenced are ignored (counted), and so is a
        non-member sender: made-up origins never enter what gossip plans or sends by."""
        if member == self.node_id:
            return
        members, fenced = self.members, self.fenced
        if member not in members:
            self.counters["non_member_vv"] += 1
            return
        cur = self._peer_vv.setdefault(member, {})
        ignored = False
        for o, s in vv.items():
            if s > cur.get(o, 0):
                if o in members or o in fenced:
                    cur[o] = s
                else:
                    ignored = True
        if ignored:
            self.counters["non_member_vv"] += 1

    def admits(self, origin: str) -> bool:
        """Whether ops of ``origin`` may enter the op-set at all (a member, or fenced)."""
        return origin in self.members or origin in self.fenced

    def peer_vv(self, member: str) -> Mapping[str, int]:
        """What ``member`` last showed it holds (heartbeats, summaries); empty if never heard."""
        return self._peer_vv.get(member, {})

    def heard(self) -> list[str]:
        """Members this replica holds an announcement of (a learner becomes a voter here)."""
        return list(self._announced)

    def peer_vvs(self) -> Iterable[Mapping[str, int]]:
        return self._peer_vv.values()

    def add_member(self, member: str) -> None:
        self.members.add(member)
        self._wm_others = None

    def remove_member(self, member: str, fence_seq: int) -> None:
        """Fence a member gone for good: its ops above ``fence_seq`` are refused from now on.

        Every replica must be given the same ``fence_seq`` (the operator command carries it).
        """
        if member == self.node_id:
            raise InvalidOrder("a node cannot remove itself")
        self.members.discard(member)
        self.fenced[member] = fence_seq
        self._wm_others = None
        self._peer_vv.pop(member, None)
        waiting = self._pending.get(member)
        if waiting:
            for s in [s for s in waiting if s > fence_seq]:
                del waiting[s]

    def _reconfigure(self, fresh: list[Op]) -> tuple[list[Op], list[Event]]:
        """Take the membership ops among ``fresh`` (just admitted) into the configuration and act
        on what changed: an added member is admitted, a removed one fenced and its ops above the
        fence cut (from ``fresh`` too). Returns ``fresh`` less what was cut, and the events."""
        cut: dict[str, int] = {}
        early: list[Op] = []  # waiting (beyond a gap, or for the clock) above a new fence: dropped too
        for op in fresh:
            if op.kind == MEMBER:
                ch = self.config.apply(op)
                if ch is None:
                    continue
                waiting = self._pending.get(ch.member) if ch.kind != MEMBER_ADD else None
                if waiting:
                    early += [w for sq, w in waiting.items() if sq > ch.fence]
                fence = self._member_change(ch)
                if fence is not None:
                    cut[ch.member] = fence
        self._refresh_floors()
        if not cut:
            return fresh, []
        self.counters["fenced"] += len(early)
        events: list[Event] = [OpFenced(op) for op in early]
        events += self._cut(cut)
        return [op for op in fresh if op.seq <= cut.get(op.origin, op.seq)], events

    def _refresh_floors(self) -> None:
        """Each added member's floor is its *first* add op held: a second add of it (an operator's
        retry through another node) may arrive first and later be undercut by the first. Lowering a
        floor never lowers the watermark: while this replica lacked the earlier add op, its bound
        for that op's stamping node was below it (see config_epoch.py)."""
        for m in self._floor:
            f = self.config.floor(m)
            if f is not None:
                self._floor[m] = Timestamp(*f)
        self._wm_others = None

    def _member_change(self, ch: MemberChange) -> int | None:
        """Apply one configuration change (``config_epoch.MemberChange``) to the op-set's rules;
        returns the fence when it removed a member (its held ops above it must be cut)."""
        m, fence = ch.member, ch.fence
        if ch.kind == MEMBER_ADD:
            if m not in self.members:
                self.add_member(m)
            f = self.config.floor(m)
            if f is not None and m != self.node_id:
                self._floor[m] = Timestamp(*f)
            self._wm_others = None
            return None
        if m == self.node_id:  # we were removed: stamp nothing more (our later ops are refused anyway)
            self.removed = True
            self.fenced[m] = fence
            return fence
        self.remove_member(m, fence)
        self._floor.pop(m, None)
        return fence

    def _cut(self, fences: Mapping[str, int]) -> list[Event]:
        """Cut held ops above a new fence from the op-set (the fence is the same on every replica,
        so every replica ends with the same ops): the fold is rolled back below the first and
        replayed without them; their trades are reported revised, each op as ``OpFenced``."""
        gone: set[Op] = set()
        for o, fence in fences.items():
            log = self._log.get(o)
            if log and log[-1].seq > fence:
                i = next(i for i, op in enumerate(log) if op.seq > fence)
                gone.update(log[i:])
                del log[i:]
            if self.vv.get(o, 0) > fence:
                base = self._base.get(o, 0)
                if base > fence:  # compacted (final) above the fence: only a lost disk gets here
                    self.counters["finality_violations"] += 1
                if max(fence, base):
                    self.vv[o] = max(fence, base)
                else:
                    del self.vv[o]  # as a replica that never held any of them
            waiting = self._pending.get(o)
            if waiting:
                for sq in [sq for sq in waiting if sq > fence]:
                    del waiting[sq]
        if not gone:
            return []
        self._wm_others = None
        self.new_ops = [op for op in self.new_ops if op not in gone]
        for op in gone:
            if op.req:
                key = op.req_key
                live = self._req_live.get(key)
                if live and op in live:
                    live.remove(op)
                    if not live:
                        del self._req_live[key]
                if self._reqs.get(key) == op:
                    if live:
                        self._reqs[key] = live[0]
                    else:
                        del self._reqs[key]
            if op.kind in RISK_KINDS:
                self.risk.effective(op, False)
        self.counters["fenced"] += len(gone)
        self.counters["fenced_cut"] += len(gone)
        events: list[Event] = [OpFenced(op) for op in sorted(gone)]
        applied = self._applied
        first = min(i for i, op in enumerate(applied) if op in gone) if any(op in gone for op in applied) else None
        if first is None:
            return events
        if first < self.final_count():
            self.counters["finality_violations"] += 1
        start = self._rollback(first)
        applied[first:] = [op for op in applied[first:] if op not in gone]
        return events + self._replay_from(start)

    def _prune_checkpoints(self) -> None:
        """Drop checkpoints inside the final prefix: nothing can roll back past it.

        The first one (the snapshot's books, position 0) stays: ``compact`` may stop short of the
        final prefix (a member still lacks an op) and needs a checkpoint at or below where it stops.
        """
        fc = self.final_count()
        ck = self._ckpts
        i = bisect_right([c.pos for c in ck], fc) - 1
        if i > 1:
            del ck[1:i]
        # nor can the undo journal of a final op be needed (but for a broken finality promise, and
        # then a checkpoint serves); deleting a prefix moves the rest, so only once it is at least
        # half the journal
        self._drop_journal(fc, 2)

    def _drop_journal(self, pos: int, min_fraction: int = 1) -> None:
        """Drop the undo records of the applied ops below ``pos`` if they are at least
        ``1/min_fraction`` of the journal."""
        cut = (self._marks[pos] - self._jbase) if pos < len(self._marks) else len(self._journal)
        if cut > 0 and min_fraction * cut >= len(self._journal):
            del self._journal[:cut]
            self._jbase += cut

    # ==== compaction and catch-up ===================================================================
    def compact(self) -> int:
        """Fold the longest final prefix that every member holds into the snapshot.

        Returns the number of ops compacted. Peer holdings come from ``observe_vv``.
        """
        self._risk_sweep()  # final fills of our own orders are counted before their ops go
        fc = self.final_count()
        if fc == 0:
            return 0
        held_by_all: dict[str, int] = {}
        others = [m for m in self.members if m != self.node_id]
        for o in self._log:
            held_by_all[o] = min([self.vv.get(o, 0)] + [self._peer_vv.get(m, {}).get(o, 0) for m in others])
        k = 0
        applied = self._applied
        while k < fc and applied[k].seq <= held_by_all.get(applied[k].origin, 0):
            k += 1
        if k == 0:
            return 0
        # the books at position k: replay from the nearest checkpoint on a copy
        ci = bisect_right([c.pos for c in self._ckpts], k) - 1
        ck = self._ckpts[ci]
        snap_books = self._clone_books(ck.books)
        c0 = self._ncompacted
        for i in range(ck.pos, k):
            self._at = c0 + i
            if self.fold_hook is None:
                self._fold_op(snap_books, applied[i])
            else:
                self.fold_hook(snap_books, applied[i])
        snap_trades = self._cum[k - 1]
        snap_chain = self._chain[k - 1]
        self.risk.compact(applied[:k], self._op_trades[:k])
        # move the prefix into the snapshot
        for op in applied[:k]:
            self._base[op.origin] = op.seq
        for o, base in self._base.items():
            log = self._log.get(o)
            if log and log[0].seq <= base:
                del log[:base - log[0].seq + 1]
        last = applied[k - 1]
        self._snap_key = (last.wall, last.logical, last.origin)
        last_pos = self._req_last
        for i, (op, made) in enumerate(zip(applied[:k], self._op_trades[:k], strict=True)):
            if not op.req:
                continue
            key = op.req_key
            live = self._req_live.get(key)
            if live:  # (absent only if an op was folded twice: the simulator's no-dedupe break)
                del live[0]  # compaction goes in fold order: the lowest above the snapshot is op
                if not live:
                    del self._req_live[key]
            last_pos.pop(key, None)
            last_pos[key] = c0 + i  # moved to the end: the dict stays in position order
            if self._reqs.get(key) == op:
                self._reqs[key] = op.op_id
                if made:
                    self._fills[op.op_id] = list(made)
        self._ncompacted = c0 + k
        self._expire_reqs()
        self._snap_books, self._snap_trades, self._snap_chain = snap_books, snap_trades, snap_chain
        del applied[:k]
        del self._op_trades[:k]
        del self._cum[:k]
        del self._chain[:k]
        self._drop_journal(k)
        del self._marks[:k]
        ckpts = [_Checkpoint(c.pos - k, c.books) for c in self._ckpts if c.pos > k]
        self._ckpts = [_Checkpoint(0, self._clone_books(snap_books))] + ckpts
        self._ck_next = 0
        self.counters["compactions"] += 1
        return k

    def _expire_reqs(self) -> None:
        """Forget request ids whose last op is compacted more than ``req_window`` positions below
        the compaction point: every op folded from now on is above it, so none is within the window
        of them on any replica (the rule stays the same everywhere, whenever each compacts)."""
        cut = self._ncompacted - self.req_window
        last_pos = self._req_last
        expired = []
        for key, pos in last_pos.items():
            if pos >= cut:
                break
            expired.append(key)
        for key in expired:
            del last_pos[key]
            first = self._reqs.pop(key)
            if isinstance(first, str):  # always, by the invariant on ``_req_last``
                self._fills.pop(first, None)
            live = self._req_live.get(key)
            if live:
                self._reqs[key] = live[0]
        self.counters["reqs_expired"] += len(expired)

    def snapshot(self) -> Snapshot:
        """The current compaction snapshot, to send to a peer behind it."""
        end, reqs = self._ncompacted, self._reqs
        return Snapshot(
            base_vv=dict(self._base),
            books={s: b.entries() for s, b in self._snap_books.items()},
            trades=self._snap_trades, chain=self._snap_chain, last_key=self._snap_key,
            reqs={r: f"{reqs[r]}@{end - pos}" for r, pos in self._req_last.items()}, fills=dict(self._fills),
            risk=self.risk.to_wire(),
            # the membership ops the snapshot covers (compacted: gone from the log); the others come
            # as ops, so a joining node counts itself added only once it holds its add op in its
            # op-set, its clock then past that op's stamp
            config=[op for op in self.config.ops() if op.seq <= self._base.get(op.origin, 0)])

    def replay_depth(self, op: Op) -> int:
        """How many applied ops folding ``op`` now would undo and replay (0: it lands on top)."""
        applied = self._applied
        if not applied or op > applied[-1]:  # live traffic: on top, no search
            return 0
        return len(applied) - bisect_left(applied, op)

    def needs_snapshot(self, peer_vv: Mapping[str, int]) -> bool:
        """True if the peer lacks ops that were compacted away here."""
        return any(peer_vv.get(o, 0) < b for o, b in self._base.items())

    def ops_missing(self, peer_vv: Mapping[str, int], limit: int | None = None) -> list[Op]:
        """Held ops the peer lacks (above the snapshot), origins sorted, each in seq order."""
        out: list[Op] = []
        for o in sorted(self._log):  # a fixed order: the peer predicts what a limited answer holds
            log = self._log[o]
            have = max(peer_vv.get(o, 0), self._base.get(o, 0))
            if not log or log[-1].seq <= have:
                continue
            start = have - log[0].seq + 1
            out.extend(log[max(start, 0):])
            if limit is not None and len(out) >= limit:
                return out[:limit]
        return out

    def install_snapshot(self, snap: Snapshot, now: int) -> list[Event]:
        """Adopt a peer's snapshot if it covers ops we lack; keep and refold our ops above it."""
        if not any(self.vv.get(o, 0) < s for o, s in snap.base_vv.items()):
            return []
        if any(self._base.get(o, 0) > s for o, s in snap.base_vv.items()):
            return []  # ours is ahead for some origin: snapshots are not comparable, refuse
        # the configuration first (its membership ops may be compacted away in it): an added member's
        # ops are then a member's, a removed one's fence applies to what we keep
        for ch in self.config.merge(snap.config):
            self._member_change(ch)
        self._refresh_floors()
        # the receive rule for what the snapshot holds: a node that joins from it (or catches up
        # through it) must stamp above every op in it, its own add op included (a joining node takes
        # orders once it holds that op; its floor elsewhere is that op's stamp). Within the clock
        # bound only, as for any op: a forged stamp far ahead is not adopted (counted)
        top = max([(int(snap.last_key[0]), int(snap.last_key[1]))] + [(op.wall, op.logical) for op in snap.config])
        if top > (self.hlc.wall, self.hlc.logical):
            if top[0] - now <= self.hlc.max_offset_ns:
                self.hlc.wall, self.hlc.logical = top
            else:
                self.hlc.rejected += 1
        # origins that are no members here (a node dropped from the configuration since its ops
        # were compacted): their compacted ops stay, fenced at the snapshot's seq; a snapshot that
        # would take the version vector past what the wire carries is refused
        extra = {o: s for o, s in snap.base_vv.items() if not self.admits(o)}
        if extra and len(self.members | self.fenced.keys()) + len(extra) > MAX_VV:
            self.counters["snapshots_refused"] += 1
            return []
        for o, s in extra.items():
            self.fenced[o] = s
        self.counters["snapshot_fenced"] += len(extra)
        fences = self.fenced
        keep = [op for log in self._log.values() for op in log if op.seq > snap.base_vv.get(op.origin, 0)
                and op.seq <= fences.get(op.origin, op.seq)]
        pend = [op for w in self._pending.values() for op in w.values() if op.seq <= fences.get(op.origin, op.seq)]
        # trades of ops that stay above the snapshot: what the client must see revised if they change
        old_trades = [t for t in self.trades() if _cause_seq(t) > snap.base_vv.get(_cause_origin(t), 0)]
        self._base = dict(snap.base_vv)
        self.vv = dict(snap.base_vv)
        self._wm_others = None
        self._log = {o: [] for o in snap.base_vv}
        self._pending = {}
        self._snap_books = snap.to_books()
        for sym in self.venue.instruments:
            self._snap_books.setdefault(sym, Book(sym))
        self._snap_trades, self._snap_chain = snap.trades, snap.chain
        self._snap_key = tuple(snap.last_key)  # type: ignore[assignment]
        # request ids: the snapshot's, by the position of their last op (a compacted op is below
        # every op above the snapshot: its first op wins); ours are rebuilt as ``keep`` is admitted
        end = self._ncompacted = sum(snap.base_vv.values())
        known = []
        for r, v in snap.reqs.items():
            oid, at, d = v.rpartition("@")
            if not at or not d.isdigit():
                oid, d = v, "0"  # the format before the window: as if just compacted
            known.append((end - int(d), r, oid))
        known.sort()
        cut = end - self.req_window
        self._reqs, self._req_live, self._req_last = {}, {}, {}
        for pos, r, oid in known:
            if pos >= cut:
                self._reqs[r] = oid
                self._req_last[r] = pos
        firsts = {v for v in self._reqs.values() if isinstance(v, str)}
        self._fills = {o: f for o, f in {**self._fills, **snap.fills}.items() if o in firsts}
        self.risk.install(snap.risk, self._snap_books, end)
        self._journal.clear()
        self._marks = array("q")
        self.books = self._live(self._clone_books(self._snap_books))
        self._applied, self._op_trades, self._cum, self._chain = [], [], array("q"), []
        self._ckpts = [_Checkpoint(0, self._clone_books(self._snap_books))]
        self._ck_next = 0
        self.counters["snapshots_installed"] += 1
        ev = self._admit(keep) + self.receive(pend, now)
        # the snapshot's own trades are final and were reported where they happened; the trades above
        # it are reported against what this replica had reported before: a trade the snapshot's ops
        # undid or changed is revised, never dropped silently
        return [e for e in ev if isinstance(e, OpFenced)] + self._diff(old_trades, self.trades())
