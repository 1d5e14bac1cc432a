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
so or its timeout passes (then the reply says ``timeout`` and the level it did reach). Parked waits
are indexed by request id, by deadline (a heap) and, per origin and level, by seq (a heap: an op
replicated or final implies every earlier op of its origin is), so a message costs O(log n) in
them, not O(n); they are capped per node and per account (``ClientLimits``).

Client requests arrive over UDP, whose source address anyone can forge, so ``ClientGate`` (shared
with strong mode) holds three rules for both cores:

- **No amplification.** A reply to a source that has not proved it receives at its address is at
  most ``ClientLimits.amplification`` (3) times the size of the request that caused it. A larger
  one (a status, a deep book, a submit ack listing many trades) is replaced by an *address check*:
  ``code`` ``E_ADDRESS`` (12), ``message`` a 16-hex-digit cookie, a keyed hash of the account, the
  address and a secret that rotates every ``cookie_rotate_ns`` (stateless, like DTLS's
  HelloVerifyRequest or QUIC's Retry). The client sends the same request again with the request id
  ``"<req>#<cookie>"``; a valid cookie (this epoch or the one before) lifts the cap for that
  request. The node strips the cookie before anything else (replies, the reply cache, dedupe and
  ops see ``<req>`` alone), so the retry is the same request and the reply names ``<req>``. A reply
  that fits once its ``message`` is cut to its code's name ("no quorum") is sent so instead of
  the check (``client_replies_shortened``): the code, order id, level and trades are what it says. Sizes
  are bounded, not guessed: the request at its smallest (1-character sender, 1-byte counter), the
  reply at its largest (9-byte counter); an address check that would itself exceed the cap is
  dropped (``client_unanswerable``). A request with no account (``account=None``: a driver's own
  call, which ``wire.decode`` never produces for a client request) is not capped.
- **Rate.** A token bucket per account (``rate`` per second, ``burst``); a request over it is
  answered ``E_RATE_LIMITED`` (11) and counted (``client_rate_limited``).
- **Parked waits** are capped per node and per account: a submit that would wait beyond either is
  refused before anything is done, ``E_RATE_LIMITED``, counted (``client_waits_refused``).

Feed subscriptions (``FeedSubscribe``, core/feeds.py) pass the same gate, and one is made, renewed
or moved only for a source that echoed a valid cookie: a feed pushes for as long as its lease, so it
must never push to an address that did not ask for it.
"""

from __future__ import annotations

import hashlib
import hmac
import random
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from heapq import heappop, heappush
from typing import Any

import msgpack

from .book import SIDE_NAMES, TIF_NAMES, Trade
from .clockbound import E_CLOCK_BOUND, ClockBound, ClockConfig
from .clocksync import ClockSync
from .config_epoch import MEMBER, ConfigChanged, Contacts, MembershipRefused, check_add, check_remove
from .errors import (
    ClockOutOfSync,
    InvalidOrder,
    NotOwner,
    RemoteError,
    UnknownInstrument,
    UnknownOrder,
    UsageError,
)
from .feeds import FeedLimits, Feeds, ReplicaSource
from .fills import AccountFills
from .gossip import Gossip, GossipConfig
from .hlc import DEFAULT_MAX_OFFSET_NS, ZERO, Timestamp
from .instrument import Venue
from .membership import MESSAGES as MEMBERSHIP_MESSAGES
from .membership import ClockSample, Membership, MembershipConfig, MemberStateChanged
from .ops import AMEND, CANCEL, CANCEL_ALL, NEW, Event, Op, OpFenced, TradeExecuted, TradeRevised, scoped_req
from .replica import Replica
from .risk import E_RISK, HALT, LIMIT, RiskConfig, RiskRefused
from .wire import (
    REPLY_CODES,
    ClientQuery,
    ClientReply,
    ClientSubmit,
    FeedAck,
    FeedSubscribe,
    Heartbeat,
    OpBatch,
    QueryReply,
    SnapshotChunk,
    Summary,
    encode,
    trade_row,
)

ACCEPTED, REPLICATED, FINAL = 0, 1, 2
(OK, E_INVALID, E_UNKNOWN_ORDER, E_CLOCK, E_NO_QUORUM, E_TIMEOUT, E_UNKNOWN_INSTRUMENT, E_STORAGE, E_BAD,
 E_NOT_READY, E_NOT_OWNER, E_RATE_LIMITED, E_ADDRESS) = range(13)
#: reply codes added here (the wire carries any code below 256; ``wire.REPLY_CODES`` names 0..10)
CLIENT_CODES = {E_RATE_LIMITED: "rate limited", E_ADDRESS: "address check"}
#: a refusal the core raises -> its reply code (anything else a caller did wrong: E_BAD)
USAGE_CODES = {InvalidOrder: E_INVALID, UnknownOrder: E_UNKNOWN_ORDER, ClockOutOfSync: E_CLOCK,
               UnknownInstrument: E_UNKNOWN_INSTRUMENT, NotOwner: E_NOT_OWNER}
USAGE_CODES[MembershipRefused] = E_INVALID  # (a transient one: E_NOT_READY, see ``_member_submit``)
USAGE_CODES[RiskRefused] = E_RISK  # a risk limit (core/risk.py): "risk: alice's open-buy headroom at n2 is ..."
#: rows an "orders" / "trades" query answers with at most (a reply stays one datagram)
MAX_QUERY_ROWS = 500
GOSSIP_TYPES = (OpBatch, Summary, Heartbeat, SnapshotChunk)
MEMBERSHIP_TYPES = frozenset(MEMBERSHIP_MESSAGES)


@dataclass(frozen=True, slots=True)
class Client:
    """A reply destination that is not a peer: whatever address the request came from, and the
    account whose credential signed it (the reply is signed with the same). ``budget``: the most
    bytes a reply to it may take (``ClientGate``: 3x its request, the source being unproven); 0:
    no cap (the source echoed a valid cookie, or the shell built this destination itself)."""

    addr: Any
    account: str = ""
    budget: int = field(default=0, compare=False)

    def key(self, req: str) -> str:
        """A request id scoped to this account (reply caches and waits are keyed by it)."""
        return scoped_req(self.account, req)


@dataclass(frozen=True, slots=True)
class RequestRefused:
    """An event: this node refused a client's request (the reply carried ``code`` and ``message``),
    so a library user watching ``Node.events()`` hears of refusals as well as of what was folded."""

    account: str
    req: str
    code: int
    message: str
    order_id: str = ""


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
    n: int = 0  # this wait's number (heap entries of an ended wait are skipped by it)


@dataclass(frozen=True, slots=True)
class ClientLimits:
    """What one node grants client requests, in both modes (``ClientGate``)."""

    rate: float = 2_000.0  # requests per second per account (token bucket refill)
    burst: int = 4_000  # bucket size
    max_parked: int = 20_000  # submits waiting for a level, per node
    max_parked_per_account: int = 5_000
    amplification: int = 3  # reply bytes per request byte to a source that has not echoed a cookie
    cookie_rotate_ns: int = 60_000_000_000  # a cookie is good for one to two of these
    #: keys the cookies; empty: 32 bytes drawn from the core's seeded ``rng`` (the simulator replays a
    #: seed bit for bit), so the shell sets it from ``secrets`` (``config.py``, ``node/runner.py``)
    cookie_secret: bytes = b""

    def __post_init__(self) -> None:
        if (self.rate <= 0 or min(self.burst, self.max_parked, self.max_parked_per_account, self.amplification,
                                  self.cookie_rotate_ns) < 1):
            raise ValueError("client limits must be positive")


@dataclass(frozen=True, slots=True)
class NodeConfig:
    max_offset_ns: int = DEFAULT_MAX_OFFSET_NS
    gossip: GossipConfig = field(default_factory=GossipConfig)
    membership: MembershipConfig = field(default_factory=MembershipConfig)
    reply_cache: int = 10_000
    clients: ClientLimits = field(default_factory=ClientLimits)
    feeds: FeedLimits = field(default_factory=FeedLimits)
    clock: ClockConfig = field(default_factory=ClockConfig)  # error bound and order gate (clockbound)
    risk: RiskConfig = field(default_factory=RiskConfig)  # how escrowed risk headroom moves (core/risk.py)


#: a frame's bytes besides its principal and its msgpack body (header and tag), as ``wire.encode``
#: makes them
_FRAME_MIN = (len(encode(ClientQuery("r", "s", "", 0), "x", 0, b"\0" * 32, "a"))
              - len(msgpack.packb([7, "x", 0, "r", "s", "", 0], use_bin_type=True)) - 1)
_COOKIE_SEP, _COOKIE_LEN = "#", 16
_U64 = (1 << 64) - 1
CLIENT_COUNTERS = ("client_rate_limited", "client_waits_refused", "client_challenges", "client_cookies_bad",
                   "client_unanswerable", "client_replies_shortened")


def request_size(msg: Any, account: str) -> int:
    """``msg``'s frame size at the least (a 1-character sender, a 1-byte counter)."""
    return _FRAME_MIN + len(account) + len(msgpack.packb([0, "x", 0, *msg], use_bin_type=True))


def reply_size(msg: Any, node_id: str, account: str) -> int:
    """``msg``'s frame size from ``node_id`` at the most (a 9-byte counter)."""
    return _FRAME_MIN + len(account) + len(msgpack.packb([0, node_id, _U64, *msg], use_bin_type=True))


class ClientGate:
    """The rules every client request passes, shared by ``NodeCore`` and ``StrongNodeCore``: a rate
    per account, a reply budget for an unproven source (address-check cookies), caps on parked
    waits. Counts into ``counters`` (the core's own dict)."""

    def __init__(self, node_id: str, limits: ClientLimits, counters: dict[str, int], rng: random.Random) -> None:
        self.node_id = node_id
        self.limits = limits
        self.counters = counters
        for k in CLIENT_COUNTERS:
            counters.setdefault(k, 0)
        self._secret = limits.cookie_secret or rng.randbytes(32)
        self._buckets: dict[str, list[float]] = {}  # account -> [tokens, at (ns)]
        self.now = 0

    # ---- requests ----------------------------------------------------------------------------------
    def check(self, msg: Any, to: Client, now: int) -> tuple[Any, Client, Any | None]:
        """``msg`` (a ``ClientSubmit`` or ``ClientQuery``) as the core should handle it (its request
        id without a cookie), ``to`` with its reply budget, and a refusal to send instead (None:
        go on)."""
        self.now = max(self.now, now)
        req = msg.req
        # no account: not off the wire (``wire.decode`` admits client requests only under an
        # account's credential), a driver's own call: its replies are not capped
        budget = self.limits.amplification * request_size(msg, to.account) if to.account else 0
        n = len(req) - _COOKIE_LEN - 1
        cookie = ""
        if n >= 1 and req[n] == _COOKIE_SEP and _is_hex(req[n + 1:]):
            cookie = req[n + 1:]
            msg = msg._replace(req=req[:n])
        if not self._take(to.account, self.now):
            self.counters["client_rate_limited"] += 1
            to = Client(to.addr, to.account, budget)
            return msg, to, self._refusal(msg, E_RATE_LIMITED, "rate limited: slow down")
        if cookie:
            if self._valid(cookie, to):
                budget = 0
            else:
                self.counters["client_cookies_bad"] += 1
        return msg, Client(to.addr, to.account, budget), None

    def may_park(self, msg: Any, parked: int, parked_by_account: int) -> Any | None:
        """None if a submit may wait here with ``parked`` waits at this node and
        ``parked_by_account`` of its account's; else the refusal to send."""
        lim = self.limits
        if parked < lim.max_parked and parked_by_account < lim.max_parked_per_account:
            return None
        self.counters["client_waits_refused"] += 1
        return self._refusal(msg, E_RATE_LIMITED, "too many requests waiting; nothing done")

    def _take(self, account: str, now: int) -> bool:
        lim = self.limits
        b = self._buckets.get(account)
        if b is None:
            b = self._buckets[account] = [float(lim.burst), now]
        elif now > b[1]:
            b[0] = min(float(lim.burst), b[0] + (now - b[1]) * lim.rate / 1e9)
            b[1] = now
        if b[0] < 1.0:
            return False
        b[0] -= 1.0
        return True

    @staticmethod
    def _refusal(msg: Any, code: int, message: str) -> Any:
        if type(msg) is ClientQuery:
            return QueryReply(msg.req, code, message, None)
        if type(msg) is FeedSubscribe:
            return FeedAck(msg.req, code, message, msg.sub, 0, 0, False)
        return ClientReply(msg.req, code, message, "", 0, [])

    # ---- cookies -----------------------------------------------------------------------------------
    def cookie(self, to: Client, epoch: int | None = None) -> str:
        """The address check for ``to`` in ``epoch`` (default: now's)."""
        if epoch is None:
            epoch = self.now // self.limits.cookie_rotate_ns
        data = f"{epoch}|{to.account}|{to.addr!r}".encode()
        return hashlib.blake2b(data, key=self._secret[:64], digest_size=_COOKIE_LEN // 2).hexdigest()

    def _valid(self, cookie: str, to: Client) -> bool:
        epoch = self.now // self.limits.cookie_rotate_ns
        return (hmac.compare_digest(cookie, self.cookie(to, epoch))
                or hmac.compare_digest(cookie, self.cookie(to, epoch - 1)))

    # ---- replies -----------------------------------------------------------------------------------
    def bound(self, out: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
        """``out`` with every reply over its destination's budget replaced by an address check (or
        dropped, if even that would not fit). Replaces entries in place."""
        dropped = False
        for i, (dst, msg) in enumerate(out):
            if type(dst) is not Client or not dst.budget:
                continue
            if reply_size(msg, self.node_id, dst.account) <= dst.budget:
                continue
            t = type(msg)
            name = REPLY_CODES.get(msg.code) or CLIENT_CODES.get(msg.code, "")
            if t in (QueryReply, ClientReply, FeedAck) and len(msg.message) > len(name):
                short = msg._replace(message=name)  # the code's name instead of the prose
                if reply_size(short, self.node_id, dst.account) <= dst.budget:
                    self.counters["client_replies_shortened"] += 1
                    out[i] = (dst, short)
                    continue
            if t is QueryReply:
                check: Any = QueryReply(msg.req, E_ADDRESS, self.cookie(dst), None)
            elif t is ClientReply:
                check = ClientReply(msg.req, E_ADDRESS, self.cookie(dst), "", 0, [])
            elif t is FeedAck:
                check = FeedAck(msg.req, E_ADDRESS, self.cookie(dst), msg.sub, 0, 0, False)
            else:
                check = None
            if check is not None and reply_size(check, self.node_id, dst.account) > dst.budget:
                check = None
            if check is None:
                self.counters["client_unanswerable"] += 1
            else:
                self.counters["client_challenges"] += 1
            out[i] = (dst, check)
            dropped = dropped or check is None
        if not dropped:
            return out
        return [(d, m) for d, m in out if m is not None]


def _is_hex(s: str) -> bool:
    return all(c in "0123456789abcdef" for c in s)


class NodeCore:
    """Everything one node decides, fed explicit time and messages."""

    def __init__(self, node_id: str, members: Iterable[str], venue: Venue | None = None,
                 rng: random.Random | None = None, config: NodeConfig | None = None,
                 hlc_last: Timestamp = ZERO, incarnation: int = 0, recovered: bool = False,
                 joining: bool = False) -> None:
        """``joining``: this node is new to the cluster (``join = true``): it takes orders only once
        it holds its own add op (config_epoch.py), so everything it stamps sorts after it."""
        self.node_id = node_id
        self.config = config or NodeConfig()
        members = sorted(set(members) | {node_id})
        self.rng = rng or random.Random(0)
        self.replica = Replica(node_id, venue, members, self.config.max_offset_ns, hlc_last, risk=self.config.risk)
        peers = [m for m in members if m != node_id]
        self.gossip = Gossip(self.replica, peers, random.Random(self.rng.random()), self.config.gossip)
        self.membership = Membership(node_id, peers, random.Random(self.rng.random()),
                                     self.config.membership, incarnation=incarnation, venue=self.replica.venue)
        self.clock = ClockSync(bound=ClockBound(node_id, peers, self.config.clock))
        self._out: list[tuple[str | Client, Any]] = []
        self._events: list[Any] = []
        # parked submits: by scoped request id; (deadline, n, key) in a heap; per (origin, level
        # wanted), (seq, n, key) in a heap (settled from the front); how many per account
        self._waiting: dict[str, _Waiting] = {}
        self._wait_deadlines: list[tuple[int, int, str]] = []
        self._wait_levels: dict[tuple[str, int], list[tuple[int, int, str]]] = {}
        self._parked_by_account: dict[str, int] = {}
        self._wait_n = 0
        self._replies: OrderedDict[str, ClientReply] = OrderedDict()  # Client.key(req) -> reply
        self.fills = AccountFills()
        self.accepting = True  # cleared by the shell when storage cannot persist
        self._now = 0
        # A node that starts without its own persisted ops may be a restart that lost them: it must
        # not stamp seq 1 again. It takes orders once a majority of its peers told it their version
        # vectors and it holds every op of its own that they hold.
        self._synced: set[str] = set()
        self._own_seq_seen = 0
        self.ready = (recovered or not peers) and not joining
        #: a new node waits for its own add op before it takes orders (and stamps anything)
        self.joining = joining
        #: when each peer was last heard from and last reported its version vector (remove-node)
        self.contacts = Contacts()
        #: members' addresses from this node's file (the shell sets it): add-node refuses one in use
        self.file_addrs: dict[str, str] = {}
        self._epoch = 0  # the configuration epoch gossip, SWIM and the clock follow
        #: the shell's own counters (datagrams, bytes, drops by reason), merged into ``status()``
        self.status_extra: Callable[[], dict[str, Any]] | None = None
        #: extra top-level status keys from the shell (its address, say)
        self.status_info: dict[str, Any] = {}
        self.counters: dict[str, int] = {"client_submits": 0, "client_rejects": 0, "client_queries": 0,
                                         "client_retries": 0, "client_timeouts": 0, "feed_requests": 0}
        self.gate = ClientGate(node_id, self.config.clients, self.counters, self.rng)
        #: pushed feeds (core/feeds.py): fed the fold's events as ``events()`` hands them out
        self.feeds = Feeds(ReplicaSource(self.replica, self.fills), self.config.feeds, self.counters)
        self._feed_at = 0  # events in ``_events`` the feeds have seen

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
        elif t is FeedSubscribe:
            self._subscribe(msg, Client(reply_to, account or ""), now)
        elif account is not None:
            raise RemoteError(f"{t.__name__} under account {account}'s credential", reason="not_peer")
        elif t not in MEMBERSHIP_TYPES and src in self.membership.venue.refused:
            self.membership.venue.admit(src)  # venuecheck.py: raises RemoteError (venue_mismatch)
        elif t in GOSSIP_TYPES:
            removed = src in self.replica.fenced
            if removed and t is OpBatch:  # its ops up to the fence count; above it, refused and counted
                self._record(self.gossip.receive(msg, src, now))
            elif removed and t is Summary:  # answered, so a removed member still running learns of it
                self._record(self.gossip.receive(msg, src, now))
            elif src in self.gossip.peers:
                self.contacts.on_message(src, now, t is Summary or t is Heartbeat)
                self._record(self.gossip.receive(msg, src, now))
                if not self.ready and t in (Summary, Heartbeat):
                    self._note_sync(src, msg.vv)
                self._settle(now)
        elif t in MEMBERSHIP_TYPES and src in self.gossip.peers:
            self.contacts.on_message(src, now, False)
            self.membership.receive(msg, src, now)  # RemoteError on a bad update: the shell drops it
            self._drain_membership()
        elif src in self.replica.fenced:  # a removed member still talking (or its last words in flight)
            raise RemoteError(f"{t.__name__} from removed member {src}", reason="removed_member")
        else:
            raise RemoteError(f"unexpected {t.__name__} from {src}", reason="unexpected")

    def _note_sync(self, src: str, vv: dict[str, int]) -> None:
        self._synced.add(src)
        self._own_seq_seen = max(self._own_seq_seen, vv.get(self.node_id, 0))
        peers = self.replica.voters() - {self.node_id}  # (a learner added by an op holds nothing of ours)
        if (len(self._synced & peers) * 2 >= len(peers)
                and self.replica.vv.get(self.node_id, 0) >= self._own_seq_seen
                and not self.replica.removed
                and (not self.joining or self.replica.config.added(self.node_id))):
            self.ready = True

    def tick(self, now: int) -> None:
        self._now = now
        self.membership.tick(now)
        self._drain_membership()
        if self.ready and self.accepting:  # risk limits: settle rights, stamp transfers and asks (before
            for op in self.replica.risk_tick(now):  # the heartbeat: it announces them as stamped)
                self.gossip.local(op)
        self._record(self.gossip.tick(now))
        self.replica.clock_in_sync = self.clock.in_sync(self.config.max_offset_ns)
        self._settle(now)
        self.feeds.tick(now)

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
        if self.replica.config.epoch != self._epoch:
            self._sync_config()
        self.gossip.flush()
        self._feed_events()
        self._out.extend(self.feeds.flush(self._now))
        out = self.gate.bound(self._out) + self.gossip.outbox() + self.membership.outbox()
        self._out = []
        return out

    def take_new_ops(self) -> list[Op]:
        """Ops added to the op-set since the last call: persist them before sending the outbox."""
        self._fold_inbound()
        ops, self.replica.new_ops = self.replica.new_ops, []
        return ops

    def events(self) -> list[Any]:
        self._feed_events()
        ev, self._events = self._events, []
        self._feed_at = 0
        return ev

    def _feed_events(self) -> None:
        """Hand the feeds the events reported since they last looked (every path that records an
        event appends it to ``_events``, so this is the one place they are fed)."""
        if len(self._events) > self._feed_at:
            self.feeds.on_events(self._events[self._feed_at:])
            self._feed_at = len(self._events)

    def next_deadline(self) -> int:
        d = min(self.gossip.next_deadline(), self.membership.next_deadline(), self.feeds.next_deadline())
        heap = self._wait_deadlines
        while heap:
            w = self._waiting.get(heap[0][2])
            if w is not None and w.n == heap[0][1]:
                return min(d, w.deadline)
            heappop(heap)  # the wait has ended
        return d

    # ---- membership glue ----------------------------------------------------------------------------
    def _sync_config(self) -> None:
        """Make gossip, SWIM and the clock follow the configuration the replica holds now
        (config_epoch.py): added members are gossiped with and probed, removed ones forgotten."""
        cfg = self.replica.config
        self._epoch = cfg.epoch
        added, removed = [], []
        bound = self.clock.bound
        for m in sorted(cfg.members - {self.node_id}):
            if m not in self.gossip.peers:
                self.gossip.add_peer(m)
                self.membership.add_member(m)
                if bound is not None and m not in bound.peers:
                    bound.peers = sorted([*bound.peers, m])
                added.append((m, cfg.address(m) or ""))
        for m, fence in sorted(cfg.fences.items()):
            if m in self.gossip.peers:
                self.gossip.remove_peer(m)
                self.membership.remove_member(m)
                self.contacts.forget(m)
                if bound is not None and m in bound.peers:
                    bound.peers = [p for p in bound.peers if p != m]
                    bound.forget(m)
                removed.append((m, fence))
        me_removed = self.replica.removed
        if me_removed:
            self.ready = False  # stamps nothing more (the replica refuses too)
        self._events.append(ConfigChanged(cfg.epoch, tuple(added), tuple(removed), me_removed))

    def _may_reconfigure(self, m: ClientSubmit) -> bool:
        """A node not ready yet may still stamp a *removal*: a restarted node waits for a majority of
        its peers, and when half of them are gone for good, the removal of the dead is the only way
        out (it checks its own seqs against every peer that did report, as readiness does)."""
        return (m.kind == MEMBER and m.side == 1 and not self.joining
                and self.replica.vv.get(self.node_id, 0) >= self._own_seq_seen)

    def _member_submit(self, m: ClientSubmit, now: int, account: str) -> tuple[Op, list[Event]]:
        """``cluster add-node`` (side 0, ``order_id`` "id@host:port") and ``cluster remove-node``
        (side 1, ``order_id`` the id; ``tif`` 1: --force): checked here (config_epoch.check_*), stamped
        by the replica. A refusal that may clear by itself answers "not ready" (the CLI retries)."""
        r = self.replica
        try:
            if m.side == 0:
                member, _, addr = m.order_id.partition("@")
                target = check_add(r.config, self.node_id, member, addr, self.file_addrs)
                return r.submit_member(target, False, 0, now, account=account)
            peers = {p: r.peer_vv(p) for p in self.gossip.peers}
            names = sorted(set(m.order_id.split(",")))  # "n3,n4": removed together (each checked first)
            fences = [check_remove(r.config, self.node_id, x, r.vv, peers, self.contacts.heard,
                                   self.contacts.reported, now, force=m.tif == 1,
                                   learners=r.members - r.voters(), together=[y for y in names if y != x])
                      for x in names]
            events: list[Event] = []
            for x, fence in zip(names, fences, strict=True):
                op, ev = r.submit_member(x, True, fence, now, account=account)
                events += ev
            return op, events
        except MembershipRefused as e:
            if e.transient:
                raise _Refused(E_NOT_READY, str(e)) from None
            raise

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
            self.fills.record(events)  # (a parked wait settles with its trades from the fold)

    # ---- clients -----------------------------------------------------------------------------------
    def _reply(self, to: Client, reply: ClientReply) -> None:
        self._replies[to.key(reply.req)] = reply
        if len(self._replies) > self.config.reply_cache:
            self._replies.popitem(last=False)
        self._out.append((to, reply))

    def _submit(self, m: ClientSubmit, to: Client, now: int) -> None:
        self.counters["client_submits"] += 1
        m, to, refused = self.gate.check(m, to, now)
        if refused is not None:
            self._out.append((to, refused))
            return
        self._fold_inbound()  # stamp after everything received so far
        key = to.key(m.req)
        prior = self._replies.get(key)
        if prior is not None:
            self.counters["client_retries"] += 1
            self._out.append((to, prior))
            return
        w = self._waiting.get(key)
        if w is not None:  # a retry while we wait: answer the latest address
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
        if m.wait > ACCEPTED:  # it may wait: refused now, before anything is done, if too many do
            refused = self.gate.may_park(m, len(self._waiting), self._parked_by_account.get(acct, 0))
            if refused is not None:
                self._out.append((to, refused))
                return
        try:
            if self.replica.removed:
                raise _Refused(E_INVALID, f"{self.node_id} was removed from the cluster (epoch "
                                          f"{self.replica.config.epoch}); send requests to a member")
            if not self.ready and not self._may_reconfigure(m):
                raise _Refused(E_NOT_READY, "node is catching up with its peers after start; retry shortly")
            if m.kind in (NEW, AMEND) and (why := self.clock.refusal(now)) is not None:  # cancels still go
                raise _Refused(E_CLOCK_BOUND, why)
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
            elif m.kind == LIMIT:  # risk limits (operator): target account in order_id, dim in tif
                op, events = r.submit_limit(m.order_id, m.symbol, m.tif, m.qty, now, m.req, account=acct,
                                            clear=m.side == 1)
            elif m.kind == MEMBER:  # cluster add-node / remove-node (config_epoch.py)
                op, events = self._member_submit(m, now, acct)
            elif m.kind == HALT:  # the kill switch: side 0 disables, 1 enables
                op, events = r.submit_halt(m.order_id, m.side == 0, now, m.req, account=acct)
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
            self._park(key, w)

    def _park(self, key: str, w: _Waiting) -> None:
        self._wait_n += 1
        w.n = n = self._wait_n
        self._waiting[key] = w
        acct = w.reply_to.account
        self._parked_by_account[acct] = self._parked_by_account.get(acct, 0) + 1
        heappush(self._wait_deadlines, (w.deadline, n, key))
        heappush(self._wait_levels.setdefault((w.op.origin, w.level), []), (w.op.seq, n, key))

    def _unpark(self, key: str, w: _Waiting) -> None:
        """End a parked wait (its heap entries are skipped, by ``n``, when they come up)."""
        del self._waiting[key]
        acct = w.reply_to.account
        left = self._parked_by_account[acct] - 1
        if left:
            self._parked_by_account[acct] = left
        else:
            del self._parked_by_account[acct]

    def _reject(self, to: Client, req: str, code: int, message: str) -> None:
        """Refusals are not cached: a retry with the same request id is tried afresh (the cause,
        say "not ready" or "clock out of sync", may have cleared)."""
        self.counters["client_rejects"] += 1
        self._out.append((to, ClientReply(req, code, message, "", 0, [])))
        self._events.append(RequestRefused(to.account, req, code, message))

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
        """Answer the parked waits that reached their level or their deadline. Per origin and level
        wanted, waits settle in seq order (an origin's ops are replicated, and final, in seq order:
        its stamps grow with seq), so each heap is looked at only up to its first wait not there."""
        if not self._waiting:
            return
        waiting = self._waiting
        for group, heap in list(self._wait_levels.items()):
            while heap:
                _seq, n, key = heap[0]
                w = waiting.get(key)
                if w is not None and w.n == n:
                    if not self._try_settle(w):
                        break
                    self._unpark(key, w)
                heappop(heap)
            if not heap:
                del self._wait_levels[group]
        heap = self._wait_deadlines
        while heap and heap[0][0] <= now:
            _d, n, key = heappop(heap)
            w = waiting.get(key)
            if w is None or w.n != n:
                continue
            self._unpark(key, w)
            if self._try_settle(w):
                continue
            self.counters["client_timeouts"] += 1
            level = self._level(w.op)
            self._reply(w.reply_to, ClientReply(
                w.req, E_TIMEOUT, f"timeout waiting for {('accepted', 'replicated', 'final')[w.level]}; "
                f"the order was accepted here and has reached level "
                f"{('accepted', 'replicated', 'final')[level]}",
                w.op.target, level, [trade_row(t) for t in self._order_trades(w.op.target)]))

    def _subscribe(self, m: FeedSubscribe, to: Client, now: int) -> None:
        """A feed subscription (core/feeds.py). It pushes for as long as its lease, so it is only
        ever made for (or renewed from, or moved to) an address that showed it receives there:
        a request without a valid cookie is answered with an address check and changes nothing."""
        self.counters["feed_requests"] += 1
        m, to, refused = self.gate.check(m, to, now)
        if refused is not None:
            self._out.append((to, refused))
            return
        if to.budget:
            self.counters["client_challenges"] += 1
            self._out.append((to, FeedAck(m.req, E_ADDRESS, self.gate.cookie(to), m.sub, 0, 0, False)))
            return
        self._fold_inbound()
        self._feed_events()  # the ledger a new subscription starts from already holds them
        self._out.extend(self.feeds.subscribe(m, Client(to.addr, to.account), now))

    def _query(self, q: ClientQuery, to: Client) -> None:
        self.counters["client_queries"] += 1
        q, to, refused = self.gate.check(q, to, self._now)
        if refused is not None:
            self._out.append((to, refused))
            return
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
        elif q.what == "risk":  # limits and rights (core/riskledger.py); ``symbol`` names one account
            payload = {"node": self.node_id, "mode": "eventual", **self.replica.risk.status(to.account, q.symbol)}
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
        cb = self.clock.bound
        assert cb is not None
        for p in self.gossip.peers:
            est = self.clock.estimate(p)
            peers[p] = ({"offset_us": est.offset_ns / 1e3, "rtt_us": est.rtt_ns / 1e3,
                         "uncertainty_us": est.uncertainty_ns / 1e3, **cb.peer_status(p, self._now)}
                        if est else None)
        clock = cb.status(self._now)  # this node against the time reference (clockbound)
        counters = dict(r.counters)
        counters.update(self.gossip.counters)
        counters.update(self.counters)
        counters["waiting"] = len(self._waiting)
        counters["hlc_rejected"] = r.hlc.rejected
        counters["clock_samples_rejected"] = self.clock.rejected
        counters.update(cb.counters)
        if self.status_extra is not None:
            counters.update(self.status_extra())
        return {
            "id": self.node_id, "digest": r.digest(), "ops": r.op_count, "version_vector": r.version_vector(),
            "watermark": [w.wall, w.logical], "trades_final": final, "trades_provisional": r.trade_count - final,
            "members": self.membership.states(),
            "config": r.config.status(self.membership.states(), r.heard()),
            "venue": self.membership.venue.status(), "peers": peers, "counters": counters,
            "hlc": list(r.hlc.last), "clock_in_sync": r.clock_in_sync, "accepting": self.accepting,
            "resting_orders": sum(len(b) for b in r.books.values()), "clock": clock,
            "ready": self.ready and bool(clock["takes_orders"]),  # ready: takes orders (the clock too)
            "feeds": self.feeds.stats(),
            "risk": r.risk.near_limits(),  # limits this node is close to using up (core/riskledger.py)
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
        return (f"{op.op_id} {('?', 'new', 'cancel', 'amend', 'cancel-all', 'risk-limit', 'risk-transfer', 'risk-halt', 'risk-ask', 'member')[op.kind]} {op.symbol} {SIDE_NAMES[op.side]} "
                f"{op.qty}@{op.price} {TIF_NAMES[op.tif]}")


class _Refused(UsageError):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


__all__ = ["ACCEPTED", "FINAL", "REPLICATED", "Client", "ClientGate", "ClientLimits", "NodeConfig", "NodeCore",
           "OpFenced", "TradeRevised"]
