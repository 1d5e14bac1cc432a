"""Failure detection: SWIM with suspicion and incarnation numbers (after hashicorp/memberlist).

Everything that decides what this node believes about its peers lives here: the member states,
the transition table that moves between them, the probe schedule, suspicion timers, and the queue
of updates piggybacked on outgoing messages.

Theory of operation
-------------------
**Probing.** Time is cut into protocol periods of ``probe_interval_ns``. At the start of each period
the node probes the next peer of a shuffled round-robin (reshuffled each round, so every peer is
probed at least once every ``2 * (peers - 1)`` periods even in the worst order). The target must
``Ack`` within ``probe_timeout_ns``; otherwise ``indirect_checks`` other alive peers get a
``PingReq`` and probe the target themselves, relaying its ack as ``IndirectAck``. If no ack of any
kind has arrived by the end of the period, the target becomes SUSPECT.

**Suspicion.** A suspicion is not a verdict: it is broadcast, and the suspect gets a timer. If the
member refutes before it fires it is ALIVE again; otherwise it becomes DEAD. The timer starts at
``suspicion_max_timeout_ns`` and shrinks towards ``suspicion_timeout_ns`` as *independent*
confirmations (suspect updates from distinct other nodes) arrive, as Lifeguard does: many
accusers make a real failure likely, one accuser alone may just be the one with the bad link.

**Incarnations.** Each member owns a counter that only it increases. An update about member m
carries m's incarnation; the transition table below says which updates may replace which state.
A node that hears itself suspected (or declared dead, or claimed alive at a newer incarnation) at
an incarnation >= its own jumps to one more and broadcasts ALIVE: the *refutation*. A restarted node
should be built with an incarnation above any of its past ones (persisted + 1, or its boot time in
ms, as the shell does: ``max(stored + 1, time_ns() // 1_000_000)``), so its first message already
revives it; even if it is not, the refutation rule revives it.

**Bounds on incarnations** (DESIGN.md "One hostile frame harms nothing"). An incarnation from the
network is *plausible* at ``now`` if it is at most
``min(MAX_INCARNATION - 1, max(now // MS, boot) + INCARNATION_SLACK_MS)``, ``boot`` being the
incarnation this node was built with. Honest incarnations are a node's boot time in ms plus its
refutations, so they sit within the nodes' clock skew of ``now // MS`` (``boot`` keeps a caller whose
``now`` is not the wall clock working); 2**32 ms of slack is 49 days of skew. The hard cap keeps every
incarnation, our refutation included (at most ``MAX_INCARNATION`` = 2**62), an integer the wire and
the storage can encode and still add one to. A message whose own fields (the sender's incarnation,
an ``IndirectAck``'s target incarnation) are implausible raises ``RemoteError`` (reason ``bound``)
before any state changes; an implausible piggybacked update is dropped alone (an honest relay must
not be silenced by one claim it passed on). Both are counted in ``counters["refused_bound"]``. A
hostile peer can still raise our incarnation by up to the slack per life (the anchor ``boot`` only
moves at a restart), so reaching the cap takes about 2**30 restarts, and even then nothing overflows.

**Talking to the suspected and the dead.** Any message we send to a member we believe SUSPECT,
DEAD or LEFT carries that belief as its first update, so the member learns it and can refute (a
LEFT member that restarted and probes us hears "you left" and answers ALIVE at a newer
incarnation); and DEAD members stay in the probe round-robin. Without this, two sides of a long
partition would each hold the other DEAD after the heal and never speak again (members change only
by the operator's membership ops, never by what SWIM concludes: see below).

**Dissemination.** Every accepted update is queued and piggybacked on outgoing probes, acks,
ping-reqs and gossip (``TransmitLimitedQueue``): fewest-sent first, newest first, each sent at most
``retransmit_mult * ceil(log10(n + 1))`` times, a newer update about a member replacing the older.
When the queue is not empty, every ``gossip_interval_ns`` the node also sends it to
``gossip_nodes`` random live peers, so news does not wait for the probe schedule. Other layers can
carry updates too: ``piggyback(max_items)`` and ``apply_updates(updates, now)``.

**Venue fingerprints.** Every ``Probe`` and ``Ack`` carries the sender's venue fingerprint
(``venue``, 8 bytes; b"" when this membership was built without a venue), and the first tick sends
it to every peer in a ``VenueQuery``. ``VenueCheck`` (``venuecheck.py``) compares it with ours,
refuses a peer whose venue differs and asks it to describe itself (``VenueQuery`` / ``VenueInfo``
are membership messages too, so both cores route them here); the cores ask ``venue.admit(src)``
before taking any other message. Membership itself goes on as before with a refused peer: probes
are how we learn that it was fixed.

**Clock sync.** A ``Probe`` carries ``t1`` (our send time); the ack carries ``t1`` back with ``t2``
(its receive time) and ``t3`` (its send time); its arrival time is ``t4``. Each answered probe
(direct or relayed by us for someone else) yields a ``ClockSample`` event; ``clocksync.ClockSync``
turns those into offsets. Every moment a node spends between a datagram's arrival and the reading
of its clock, or between that reading and the send, widens the sample (the bound is half of
``(t4 - t1) - (t3 - t2)``), so the shell may give times taken closer to the socket, as values:
``rx_ns`` (set just before ``receive``: when the datagram arrived, e.g. its kernel receive
timestamp; used as ``t2`` of a probe and ``t4`` of an ack, never later than ``now``, consumed by
that call), ``probe_sent(seq, t1)`` (read just before the probe's ``sendto``), and ``t3``
restamped as the shell encodes the ack (built here with ``t3 = now``). Each must be read on the
right side of the real event (arrival before ``t2``/``t4``, send after ``t1``/``t3``), which is
all the bound needs.

**Run-time membership.** Who is a member is not SWIM's to decide: the replicated configuration
(``config_epoch.py``) is, and the node core calls ``add_member`` / ``remove_member`` when it changes.
An added member starts ALIVE at incarnation 0 and is probed like any other; a removed one is
forgotten at once (no probes, no updates about it kept, its messages refused as ``unknown_member``).
SWIM's DEAD never removes anyone: a partition looks like a death from each side.

Rules that hold:
- Pure: ``now`` (ns) is passed in, randomness comes from the ``random.Random`` given.
- A member's incarnation as we know it never decreases.
- Our own state is ALIVE until ``leave``; after that LEFT, and we never refute again.
- Only the transitions in ``TRANSITIONS`` happen; every state change emits ``MemberStateChanged``.
- A message from an unknown node, or one that is not a membership message, raises ``RemoteError``
  before any state changes (the shell drops and counts it).
- No incarnation held or sent exceeds ``MAX_INCARNATION``; an implausible one from the network is
  refused (see "Bounds on incarnations") and changes nothing.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any, NamedTuple

from .errors import RemoteError
from .instrument import Venue
from .venuecheck import VenueCheck, VenueInfo, VenueQuery

MS = 1_000_000
NEVER = 1 << 62  # a deadline that never comes (keeps next_deadline() an int for min())
MAX_INCARNATION = 1 << 62  # no incarnation held or sent exceeds it (the wire carries up to 2**64 - 1)
INCARNATION_SLACK_MS = 1 << 32  # how far (ms, ~49 days) past now a plausible incarnation may be


class MemberState(StrEnum):
    """What we believe about a member; the values are what ``states()`` and the wire carry."""

    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"


ALIVE, SUSPECT, DEAD, LEFT = MemberState.ALIVE, MemberState.SUSPECT, MemberState.DEAD, MemberState.LEFT


class Need(Enum):
    """How an update's incarnation must compare with the one we hold for it to be applied."""

    NEWER = "incarnation > known"
    SAME_OR_NEWER = "incarnation >= known"


# (state we hold, state the update claims) -> condition. A pair not listed is ignored.
# ALIVE only ever wins with a newer incarnation: that is what makes a refutation (or a restart)
# the only way out of SUSPECT / DEAD / LEFT, and lets SUSPECT / DEAD / LEFT at the same incarnation
# override ALIVE. A DEAD member is never suspected again (it must come back ALIVE first), and LEFT
# is final for that incarnation.
TRANSITIONS: dict[tuple[MemberState, MemberState], Need] = {
    (ALIVE, ALIVE): Need.NEWER,  # incarnation bump only, no state change
    (ALIVE, SUSPECT): Need.SAME_OR_NEWER,
    (ALIVE, DEAD): Need.SAME_OR_NEWER,
    (ALIVE, LEFT): Need.SAME_OR_NEWER,
    (SUSPECT, ALIVE): Need.NEWER,  # refutation
    (SUSPECT, SUSPECT): Need.SAME_OR_NEWER,  # same incarnation: a confirmation; newer: a new suspicion
    (SUSPECT, DEAD): Need.SAME_OR_NEWER,
    (SUSPECT, LEFT): Need.SAME_OR_NEWER,
    (DEAD, ALIVE): Need.NEWER,  # refuted death, or restarted
    (DEAD, DEAD): Need.NEWER,  # incarnation bump only
    (DEAD, LEFT): Need.SAME_OR_NEWER,
    (LEFT, ALIVE): Need.NEWER,  # restarted after leaving
    (LEFT, LEFT): Need.NEWER,  # incarnation bump only
}


# ---- messages ---------------------------------------------------------------------------------------
class Update(NamedTuple):
    """One membership claim: ``member`` is in ``state`` at ``incarnation``, said by ``origin``.

    A plain tuple of str/int so the wire packs it as an array with no extra code.
    ``origin`` matters for suspicion: confirmations count distinct origins.
    """

    member: str
    incarnation: int
    state: str  # a MemberState value
    origin: str


@dataclass(frozen=True, slots=True)
class Probe:
    """Are you alive? ``incarnation`` is the sender's; ``t1`` its send time (clock sync);
    ``venue`` its venue fingerprint."""

    seq: int
    incarnation: int
    t1: int
    updates: tuple[Update, ...] = ()
    venue: bytes = b""


@dataclass(frozen=True, slots=True)
class Ack:
    """Answer to a ``Probe`` with the same ``seq``: echoes ``t1``, adds receive ``t2`` / send ``t3``
    and the sender's venue fingerprint."""

    seq: int
    incarnation: int
    t1: int
    t2: int
    t3: int
    updates: tuple[Update, ...] = ()
    venue: bytes = b""


@dataclass(frozen=True, slots=True)
class PingReq:
    """Please probe ``target`` for me and relay its ack; ``seq`` is the requester's probe seq."""

    seq: int
    target: str
    incarnation: int
    updates: tuple[Update, ...] = ()


@dataclass(frozen=True, slots=True)
class IndirectAck:
    """``target`` answered the probe we made for your ``PingReq`` ``seq``."""

    seq: int
    target: str
    target_incarnation: int
    incarnation: int
    updates: tuple[Update, ...] = ()


@dataclass(frozen=True, slots=True)
class Gossip:
    """Updates alone: the gossip fan-out and the leave announcement."""

    incarnation: int
    updates: tuple[Update, ...] = ()


# Append-only: the wire layer may number membership messages by their position here.
MESSAGES: tuple[type, ...] = (Probe, Ack, PingReq, IndirectAck, Gossip, VenueQuery, VenueInfo)
Message = Probe | Ack | PingReq | IndirectAck | Gossip | VenueQuery | VenueInfo


# ---- events -----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class MemberStateChanged:
    """What we believe about ``member`` changed (``old`` and ``new`` are MemberState values)."""

    member: str
    old: str
    new: str
    incarnation: int


@dataclass(frozen=True, slots=True)
class ClockSample:
    """The four timestamps of one answered probe to ``peer``; feed to ``ClockSync.add_sample``."""

    peer: str
    t1: int
    t2: int
    t3: int
    t4: int


@dataclass(frozen=True, slots=True)
class Refuted:
    """We heard ``origin`` claim we were ``state`` and answered with a new ``incarnation``."""

    incarnation: int
    state: str
    origin: str


# ---- configuration ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class MembershipConfig:
    """Timers and fan-outs. Defaults suit a LAN cluster of a handful of nodes."""

    probe_interval_ns: int = 200 * MS  # one protocol period
    probe_timeout_ns: int = 100 * MS  # direct ack deadline, then indirect probes
    indirect_checks: int = 3  # PingReq fan-out (k)
    suspicion_timeout_ns: int = 1_000 * MS  # floor: suspicion with all expected confirmations
    suspicion_max_timeout_ns: int = 2_000 * MS  # suspicion with no independent confirmation
    suspicion_confirmations: int = 3  # confirmations that shrink the timer to the floor
    retransmit_mult: int = 4  # each update is piggybacked ~ mult * ceil(log10(n + 1)) times
    max_piggyback: int = 8  # updates per message from the queue
    gossip_interval_ns: int = 200 * MS  # fan-out of queued updates (only when there are any)
    gossip_nodes: int = 3

    def __post_init__(self) -> None:
        if self.probe_interval_ns <= 0 or self.probe_timeout_ns <= 0 or self.gossip_interval_ns <= 0:
            raise ValueError("membership intervals and timeouts must be positive")
        if self.probe_timeout_ns >= self.probe_interval_ns:
            raise ValueError("probe_timeout_ns must be shorter than probe_interval_ns "
                             "(indirect probes need the rest of the period)")
        if not 0 < self.suspicion_timeout_ns <= self.suspicion_max_timeout_ns:
            raise ValueError("need 0 < suspicion_timeout_ns <= suspicion_max_timeout_ns")
        if min(self.indirect_checks, self.suspicion_confirmations, self.gossip_nodes) < 0:
            raise ValueError("fan-outs and confirmation counts cannot be negative")
        if self.retransmit_mult < 1 or self.max_piggyback < 1:
            raise ValueError("retransmit_mult and max_piggyback must be at least 1")


# ---- internal records -------------------------------------------------------------------------------
@dataclass(slots=True)
class _Member:
    state: MemberState
    incarnation: int


@dataclass(slots=True)
class _Suspicion:
    """A running suspicion timer (Lifeguard): shrinks as independent accusers confirm it."""

    start: int
    first: str  # the accuser whose update started it
    k: int  # confirmations expected (0: the timer never shrinks)
    confirmers: set[str] = field(default_factory=set)

    def deadline(self, cfg: MembershipConfig) -> int:
        lo, hi = cfg.suspicion_timeout_ns, cfg.suspicion_max_timeout_ns
        if self.k < 1:
            return self.start + hi
        frac = math.log(len(self.confirmers) + 1) / math.log(self.k + 1)
        return self.start + max(lo, int(hi - frac * (hi - lo)))


@dataclass(slots=True)
class _Sent:
    """A probe we sent (ours, or one made on behalf of a PingReq) awaiting its ack."""

    target: str
    t1: int
    expires: int
    relay_to: str | None = None  # the PingReq sender, if this probe is for someone else
    relay_seq: int = 0


@dataclass(slots=True)
class _Pending:
    """This period's own probe."""

    seq: int
    target: str
    start: int
    indirect_sent: bool = False
    acked: bool = False


class _BroadcastQueue:
    """memberlist's TransmitLimitedQueue: one pending update per member, bounded retransmissions."""

    __slots__ = ("_items", "_serial")

    def __init__(self) -> None:
        self._items: dict[str, list[Any]] = {}  # member -> [update, transmits, serial]
        self._serial = 0

    def __len__(self) -> int:
        return len(self._items)

    def add(self, u: Update) -> None:
        self._serial += 1
        self._items[u.member] = [u, 0, self._serial]

    def drop(self, member: str) -> None:
        self._items.pop(member, None)

    def take(self, max_items: int, limit: int) -> list[Update]:
        """Up to ``max_items`` updates, fewest-sent then newest first; each take counts as a send."""
        if max_items <= 0 or not self._items:
            return []
        order = sorted(self._items.values(), key=lambda e: (e[1], -e[2]))
        out = []
        for e in order[:max_items]:
            out.append(e[0])
            e[1] += 1
            if e[1] >= limit:
                del self._items[e[0].member]
        return out


def _valid_incarnation(x: Any) -> bool:
    return type(x) is int and x >= 0


def _valid_update(u: Any) -> bool:
    return (isinstance(u, tuple | list) and len(u) == 4 and isinstance(u[0], str)
            and _valid_incarnation(u[1]) and u[2] in _STATE_VALUES and isinstance(u[3], str))


_STATE_VALUES = frozenset(s.value for s in MemberState)


# ---- the state machine ------------------------------------------------------------------------------
class Membership:
    """One node's view of the cluster; feed it messages and ticks, send its outbox."""

    def __init__(self, node_id: str, peers: Iterable[str], rng: random.Random,
                 config: MembershipConfig | None = None, *, incarnation: int = 0,
                 venue: Venue | None = None) -> None:
        """``venue``: what this node folds with; its fingerprint goes out in every probe and ack and
        peers with another are refused (``self.venue``). None: no comparison."""
        if not 0 <= incarnation <= MAX_INCARNATION:
            raise ValueError(f"incarnation must be in 0..{MAX_INCARNATION}")
        self.node_id = node_id
        self.config = config or MembershipConfig()
        self.rng = rng
        self.incarnation = incarnation
        self._boot = incarnation  # the anchor of the plausibility bound (see the module header)
        self.left = False
        self._members: dict[str, _Member] = {
            p: _Member(ALIVE, 0) for p in sorted(set(peers) - {node_id})}
        self._suspicions: dict[str, _Suspicion] = {}
        self._queue = _BroadcastQueue()
        self._out: list[tuple[str, Message]] = []
        self._events: list[Any] = []
        self._seq = rng.getrandbits(32)  # so a restarted node does not reuse its past life's seqs
        self._sent: dict[int, _Sent] = {}
        self._pending: _Pending | None = None
        self._order: list[str] = []
        self._order_pos = 0
        self._started = False
        self._next_probe = 0
        self._next_gossip = 0
        #: the shell's arrival time (our clock) of the message the next ``receive`` gets; None: ``now``
        self.rx_ns: int | None = None
        self.venue = VenueCheck(node_id, venue)
        self.counters: dict[str, int] = {
            "probes": 0, "acks": 0, "indirect_probes": 0, "relayed": 0, "probe_failures": 0,
            "refutations": 0, "suspicions": 0, "deaths": 0, "bad_clock_samples": 0, "refused_bound": 0,
            "members_added": 0, "members_removed": 0}
        # Announce ourselves: after a restart this (at a newer incarnation) is what revives us.
        self._queue.add(Update(node_id, incarnation, ALIVE, node_id))

    # ---- queries -----------------------------------------------------------------------------------
    def states(self) -> dict[str, str]:
        """Every member's state as we believe it, ourselves included."""
        out = {m: rec.state.value for m, rec in self._members.items()}
        out[self.node_id] = (LEFT if self.left else ALIVE).value
        return dict(sorted(out.items()))

    def incarnations(self) -> dict[str, int]:
        """Every member's incarnation as we know it, ourselves included."""
        out = {m: rec.incarnation for m, rec in self._members.items()}
        out[self.node_id] = self.incarnation
        return dict(sorted(out.items()))

    def alive_peers(self) -> list[str]:
        """Peers we believe ALIVE (not SUSPECT: they are still probed, but not relied upon)."""
        return [m for m, rec in self._members.items() if rec.state is ALIVE]

    # ---- run-time membership (config_epoch.py) -------------------------------------------------------
    def add_member(self, member: str) -> bool:
        """Start probing ``member``, which the configuration just added (False if it is one already
        or is ourselves). It starts ALIVE at incarnation 0: its first message (at its boot-time
        incarnation) is newer, and if it never comes the normal probe, suspect, dead path runs."""
        if member == self.node_id or member in self._members:
            return False
        self._members[member] = _Member(ALIVE, 0)
        self.counters["members_added"] += 1
        return True

    def remove_member(self, member: str) -> bool:
        """Forget ``member``, which the configuration removed: it is no longer probed, updates about
        it are ignored and its messages refused (``unknown_member``). False if it was not known."""
        if self._members.pop(member, None) is None:
            return False
        self._suspicions.pop(member, None)
        self._queue.drop(member)
        if self._pending is not None and self._pending.target == member:
            self._pending = None
        for seq in [s for s, e in self._sent.items() if e.target == member or e.relay_to == member]:
            del self._sent[seq]
        self.venue.refused.pop(member, None)  # a removed peer's venue no longer matters
        self.counters["members_removed"] += 1
        return True

    # ---- inputs ------------------------------------------------------------------------------------
    def receive(self, msg: Message, src: str, now: int) -> None:
        """Handle one membership message from peer ``src``."""
        arrived, self.rx_ns = self.rx_ns, None  # (consumed: it belongs to this message only)
        if arrived is None or type(arrived) is not int or arrived > now:
            arrived = now
        t = type(msg)
        if t not in MESSAGES:
            raise RemoteError(f"membership cannot handle {t.__name__}", reason="unknown_message")
        if src == self.node_id:
            return
        if src not in self._members:
            raise RemoteError(f"membership message from unknown node {src!r}", reason="unknown_member")
        if t is VenueQuery or t is VenueInfo:
            self.venue.receive(msg, src, now)  # type: ignore[arg-type]
            return
        if (not _valid_incarnation(msg.incarnation) or not isinstance(msg.updates, tuple | list)
                or not all(_valid_update(u) for u in msg.updates)
                or (t is Ack and not (type(msg.t2) is int and type(msg.t3) is int))
                or (t is IndirectAck and not _valid_incarnation(msg.target_incarnation))
                or (t in (Probe, Ack) and type(msg.venue) is not bytes)):
            raise RemoteError("malformed membership message", reason="malformed")
        limit = self.incarnation_limit(now)
        if msg.incarnation > limit or (t is IndirectAck and msg.target_incarnation > limit):
            self.counters["refused_bound"] += 1
            raise RemoteError(f"membership message from {src!r} with an incarnation above {limit}",
                              reason="bound")
        updates = self._plausible(msg.updates, limit)
        if t is Probe or t is Ack:
            self.venue.observe(src, msg.venue, now)  # type: ignore[union-attr]
        # Direct contact: the sender is alive at the incarnation it states (revives it if newer).
        self._apply(Update(src, msg.incarnation, ALIVE, src), now)
        for u in updates:
            self._apply(u, now)
        if t is Probe:
            self._send(src, Ack(msg.seq, self.incarnation, msg.t1, arrived, now, self._updates_for(src),
                                self.venue.fingerprint))
        elif t is Ack:
            self._on_ack(msg, src, arrived)
        elif t is PingReq:
            self._on_ping_req(msg, src, now)
        elif t is IndirectAck:
            p = self._pending
            if p is not None and p.seq == msg.seq and p.target == msg.target:
                p.acked = True
                self.counters["acks"] += 1
                self._apply(Update(msg.target, msg.target_incarnation, ALIVE, src), now)

    def tick(self, now: int) -> None:
        """Run every timer that is due at ``now``: suspicions, indirect probes, periods, gossip."""
        cfg = self.config
        if not self._started:
            self._started = True
            # Stagger nodes started together, so their probes do not move in lockstep.
            self._next_probe = now + self.rng.randrange(cfg.probe_interval_ns)
            self._next_gossip = now + self.rng.randrange(cfg.gossip_interval_ns)
            self.venue.hello(list(self._members), now)
        p = self._pending
        if (p is not None and not p.acked and not p.indirect_sent
                and now >= p.start + cfg.probe_timeout_ns and now < self._next_probe):
            p.indirect_sent = True
            self._indirect(p, now)
        if now >= self._next_probe:
            if p is not None and not p.acked:
                self._probe_failed(p, now)
            self._pending = None
            if not self.left:
                self._probe_next(now)
            self._next_probe = now + cfg.probe_interval_ns
        if now >= self._next_gossip:
            self._next_gossip = now + cfg.gossip_interval_ns
            self._gossip()
        # Last: a failed probe above may have confirmed a suspicion and pulled its deadline in.
        for m in [m for m, s in self._suspicions.items() if s.deadline(cfg) <= now]:
            rec = self._members[m]
            self._apply(Update(m, rec.incarnation, DEAD, self.node_id), now)
        for seq in [s for s, e in self._sent.items() if e.expires <= now]:
            del self._sent[seq]

    def leave(self, now: int) -> None:
        """Leave gracefully: tell every member we are LEFT, stop probing. Idempotent."""
        if self.left:
            return
        self.left = True
        self._pending = None
        self._events.append(MemberStateChanged(self.node_id, ALIVE.value, LEFT.value, self.incarnation))
        u = Update(self.node_id, self.incarnation, LEFT, self.node_id)
        self._queue.add(u)
        for m, rec in self._members.items():
            if rec.state is not LEFT:
                self._send(m, Gossip(self.incarnation, (u,)))

    def apply_updates(self, updates: Iterable[Update], now: int) -> None:
        """Apply updates another layer carried for us (see ``piggyback``)."""
        updates = list(updates)
        if not all(_valid_update(u) for u in updates):
            raise RemoteError("malformed membership update", reason="malformed")
        for u in self._plausible(updates, self.incarnation_limit(now)):
            self._apply(u, now)

    def incarnation_limit(self, now: int) -> int:
        """The largest incarnation accepted from the network at ``now`` (see the module header)."""
        return min(MAX_INCARNATION - 1, max(now // MS, self._boot) + INCARNATION_SLACK_MS)

    # ---- outputs -----------------------------------------------------------------------------------
    def outbox(self) -> list[tuple[str, Message]]:
        """Messages to send, as ``(peer id, message)``; clears them."""
        out, self._out = self._out, []
        out.extend(self.venue.outbox())
        return out

    def events(self) -> list[Any]:
        """``MemberStateChanged`` / ``ClockSample`` / ``Refuted`` since the last call; clears them."""
        ev, self._events = self._events, []
        return ev

    def next_deadline(self) -> int:
        """When ``tick`` must next run (0 before the first tick: run it now)."""
        if not self._started:
            return 0
        d = NEVER if self.left and self._pending is None else self._next_probe
        p = self._pending
        if p is not None and not p.acked and not p.indirect_sent:
            d = min(d, p.start + self.config.probe_timeout_ns)
        if len(self._queue):
            d = min(d, self._next_gossip)
        for s in self._suspicions.values():
            d = min(d, s.deadline(self.config))
        return d

    def piggyback(self, max_items: int) -> tuple[Update, ...]:
        """Up to ``max_items`` queued updates for another layer to carry (each counts as a send)."""
        return tuple(self._queue.take(max_items, self._retransmit_limit()))

    # ---- probing -----------------------------------------------------------------------------------
    def _probe_next(self, now: int) -> None:
        target = self._next_target()
        if target is None:
            return
        self._seq = (self._seq + 1) & 0xFFFF_FFFF
        seq = self._seq
        self._pending = _Pending(seq, target, now)
        self._sent[seq] = _Sent(target, now, now + self.config.probe_interval_ns)
        self.counters["probes"] += 1
        self._send(target, Probe(seq, self.incarnation, now, self._updates_for(target), self.venue.fingerprint))

    def _next_target(self) -> str | None:
        """Shuffled round-robin over everyone but LEFT members (DEAD ones too: see the header)."""
        for _ in range(2):
            while self._order_pos < len(self._order):
                m = self._order[self._order_pos]
                self._order_pos += 1
                rec = self._members.get(m)
                if rec is not None and rec.state is not LEFT:
                    return m
            self._order = [m for m, rec in self._members.items() if rec.state is not LEFT]
            self.rng.shuffle(self._order)
            self._order_pos = 0
        return None

    def _indirect(self, p: _Pending, now: int) -> None:
        if self._members[p.target].state is DEAD:
            return  # a reconnect probe of a dead member: not worth anyone else's traffic
        helpers = [m for m in self.alive_peers() if m != p.target]
        k = min(self.config.indirect_checks, len(helpers))
        for h in self.rng.sample(helpers, k):
            self.counters["indirect_probes"] += 1
            self._send(h, PingReq(p.seq, p.target, self.incarnation, self._updates_for(h)))

    def _probe_failed(self, p: _Pending, now: int) -> None:
        rec = self._members.get(p.target)
        if rec is None or rec.state in (DEAD, LEFT):
            return
        self.counters["probe_failures"] += 1
        # Our own accusation goes through the same table: ALIVE -> SUSPECT, or a confirmation.
        self._apply(Update(p.target, rec.incarnation, SUSPECT, self.node_id), now)

    def probe_sent(self, seq: int, t1: int) -> None:
        """The shell's clock just before probe ``seq`` went to ``sendto``: its sample's ``t1``.
        Only a later reading than the one the probe was made at is taken (it cannot leave before)."""
        sent = self._sent.get(seq)
        if sent is not None and sent.t1 < t1 < sent.expires:
            sent.t1 = t1

    def _on_ack(self, msg: Ack, src: str, now: int) -> None:
        """``now``: when the ack arrived (``t4``)."""
        sent = self._sent.get(msg.seq)
        if sent is None or sent.target != src:
            return  # late (its period is over), duplicated, or not ours
        del self._sent[msg.seq]
        # Our own t1, not the echoed one: a peer cannot make us compute a sample we did not take.
        t1, t2, t3, t4 = sent.t1, msg.t2, msg.t3, now
        if (t4 - t1) - (t3 - t2) >= 0 and t3 >= t2:
            self._events.append(ClockSample(src, t1, t2, t3, t4))
        else:
            self.counters["bad_clock_samples"] += 1
        if sent.relay_to is not None:
            self.counters["relayed"] += 1
            self._send(sent.relay_to, IndirectAck(sent.relay_seq, src, msg.incarnation, self.incarnation,
                                                  self._updates_for(sent.relay_to)))
            return
        p = self._pending
        if p is not None and p.seq == msg.seq:
            p.acked = True
            self.counters["acks"] += 1

    def _on_ping_req(self, msg: PingReq, src: str, now: int) -> None:
        if msg.target == self.node_id or msg.target not in self._members:
            return
        self._seq = (self._seq + 1) & 0xFFFF_FFFF
        seq = self._seq
        self._sent[seq] = _Sent(msg.target, now, now + self.config.probe_interval_ns, src, msg.seq)
        self._send(msg.target, Probe(seq, self.incarnation, now, self._updates_for(msg.target),
                                     self.venue.fingerprint))

    def _gossip(self) -> None:
        if not len(self._queue):
            return
        targets = [m for m, rec in self._members.items() if rec.state in (ALIVE, SUSPECT)]
        for m in self.rng.sample(targets, min(self.config.gossip_nodes, len(targets))):
            ups = self._updates_for(m)
            if ups:
                self._send(m, Gossip(self.incarnation, ups))

    # ---- state ---------------------------------------------------------------------------------------
    def _plausible(self, updates: Iterable[Any], limit: int) -> list[Update]:
        """``updates`` as ``Update``s, less (and counting) those whose incarnation is above ``limit``."""
        out = []
        for u in updates:
            if u[1] > limit:
                self.counters["refused_bound"] += 1
            else:
                out.append(Update(*u))
        return out

    def _apply(self, u: Update, now: int) -> None:
        """Apply one update through ``TRANSITIONS``; accepted news is queued for re-broadcast."""
        if u.member == self.node_id:
            self._about_self(u)
            return
        rec = self._members.get(u.member)
        if rec is None:
            return  # not a member (yet, or any more): claims about strangers are not ours to keep
        new = MemberState(u.state)
        need = TRANSITIONS.get((rec.state, new))
        if need is None:
            return
        if u.incarnation < rec.incarnation or (need is Need.NEWER and u.incarnation == rec.incarnation):
            return
        if rec.state is SUSPECT and new is SUSPECT and u.incarnation == rec.incarnation:
            s = self._suspicions[u.member]
            if u.origin != s.first and u.origin not in s.confirmers:
                s.confirmers.add(u.origin)
                self._queue.add(u)  # let others count this accuser too
            return
        old = rec.state
        rec.state, rec.incarnation = new, u.incarnation
        self._suspicions.pop(u.member, None)
        if new is SUSPECT:
            self.counters["suspicions"] += 1
            self._suspicions[u.member] = _Suspicion(now, u.origin, self._expected_confirmations())
        elif new is DEAD and old is not DEAD:
            self.counters["deaths"] += 1
        self._queue.add(u)
        if new is not old:
            self._events.append(MemberStateChanged(u.member, old.value, new.value, u.incarnation))

    def _about_self(self, u: Update) -> None:
        if self.left:
            if u.state != LEFT:
                self._queue.add(Update(self.node_id, self.incarnation, LEFT, self.node_id))
            return
        if u.state == ALIVE:
            if u.incarnation <= self.incarnation:
                return
        elif u.incarnation < self.incarnation:
            return
        if u.incarnation >= MAX_INCARNATION:  # never reached: _plausible caps incarnations below it
            self.counters["refused_bound"] += 1
            return
        # Someone holds (or may hold) a claim about us we must override: outbid it.
        self.incarnation = u.incarnation + 1
        self.counters["refutations"] += 1
        self._queue.add(Update(self.node_id, self.incarnation, ALIVE, self.node_id))
        self._events.append(Refuted(self.incarnation, u.state, u.origin))

    def _expected_confirmations(self) -> int:
        """Lifeguard's k: accusers other than the first and the suspect that could confirm."""
        live = sum(1 for rec in self._members.values() if rec.state in (ALIVE, SUSPECT))
        # live counts the suspect; the others minus the first accuser, plus ourselves, may confirm.
        return min(self.config.suspicion_confirmations, max(0, live - 1))

    def _retransmit_limit(self) -> int:
        n = len(self._members) + 1
        return self.config.retransmit_mult * max(1, math.ceil(math.log10(n + 1)))

    def _updates_for(self, dst: str) -> tuple[Update, ...]:
        """Our belief about ``dst`` if it is not ALIVE (so it can refute), then queued updates."""
        ups = self._queue.take(self.config.max_piggyback, self._retransmit_limit())
        rec = self._members.get(dst)
        if rec is not None and rec.state is not ALIVE:
            belief = Update(dst, rec.incarnation, rec.state, self.node_id)
            ups = [belief] + [u for u in ups if u.member != dst]
        return tuple(ups)

    def _send(self, dst: str, msg: Message) -> None:
        self._out.append((dst, msg))
