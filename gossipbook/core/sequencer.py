"""Strong-consistency mode: a Raft-style sequencer (leader election, log replication, majority commit).

Everything that decides who leads, what is in the log and what is committed lives here: the role
enum and its transition table, terms and votes, the replication progress of each follower, the
commit rule, and snapshot transfer. Entries are opaque: any msgpack-able value (the node layer puts
op tuples there). The sequencer never looks inside them, except that ``None`` is reserved for the
no-op a new leader appends.

Theory of operation
-------------------
**Roles.** Every node starts as a FOLLOWER. A follower that hears nothing from a leader for a
randomized election timeout (``election_timeout_min_ns .. election_timeout_max_ns``) forgets its
leader and first runs a *pre-vote* (Raft thesis §9.6): it asks "would you vote for me in term + 1?"
without changing its term. Only with a majority of yeses does it become a CANDIDATE for term + 1,
vote for itself and ask for real votes; with a majority of votes it becomes LEADER. A partitioned
node therefore never inflates its term, and does not force a healthy leader to step down when it
comes back. ``TRANSITIONS`` lists every role change that can happen; anything else raises
``IllegalTransition`` (our bug, never the peer's).

**Votes.** A node grants at most one vote per term (``voted_for`` is persisted), and only to a
candidate whose log is at least as up to date as its own: ``(last_term, last_index)`` compared as a
tuple (§5.4.1). A node that heard from a live leader within ``election_timeout_min_ns`` ignores
vote and pre-vote requests altogether (thesis §4.2.3), and so does a leader: a node that cannot
hear the leader cannot depose it while the others still can.

**Terms.** Every message carries the sender's term. A newer term makes the receiver a follower of
that term (forgetting its vote); a message from an older term is answered with our term (so the
sender steps down) and otherwise ignored.

**Bounds** (DESIGN.md "One hostile frame harms nothing"). A message whose ``term`` is above
``min(MAX_TERM, term + MAX_TERM_JUMP)`` (our current term), or any of whose index fields
(``last_index``, ``prev_index``, ``commit``, ``index``, ``hint``, ``offset``, ``total``) is above
``MAX_INDEX``, raises ``RemoteError`` (reason ``bound``) before any state changes and is counted in
``counters["refused_bound"]``; its other terms (``last_term``, ``prev_term``, entry terms) are at most
its ``term`` by validation. Terms grow by one per election and an election needs at least
``election_timeout_min_ns``, so a legitimate cluster gains 2**32 terms only after 2**32 elections
back to back (20 years at 150 ms): a node however far behind (a wiped data dir, a long partition
without pre-vote) always accepts a real leader's or candidate's term, while one forged frame cannot
push a term to where ``term + 1`` no longer encodes. ``MAX_TERM`` and ``MAX_INDEX`` (2**62) leave
that room: a node at ``MAX_TERM`` stays a follower rather than campaign at ``MAX_TERM + 1``, and no
term or index this node holds or sends ever exceeds them (a hostile peer needs about 2**30 accepted
frames, each raising the term by the whole jump, to get there; nothing overflows even then).

**Replication.** The leader keeps, per follower, ``next_index`` (the next entry to send) and
``match_index`` (the highest index known to match). ``AppendEntries`` carries ``prev_index`` /
``prev_term``; the follower accepts only if its log holds that entry (the consistency check, which
by induction gives Log Matching), deletes a suffix only where an entry *conflicts* (so a delayed or
duplicated message never truncates), and answers with the last index the message verified. A
follower in the PROBE phase (after a rejection, or for a new leader) gets one message at a time;
once it matches, the leader pipelines up to ``max_inflight`` messages of up to ``max_batch``
entries. A rejection carries a hint (the follower's last index whose term is <= ``prev_term``) so the
leader skips a divergent suffix in one step. Every ``heartbeat_ns`` the leader sends each follower
one message; a follower that acknowledged nothing since the last heartbeat has its unacknowledged
entries resent from ``match_index + 1`` (loss repair).

**Commit.** The leader commits index N when a majority (itself included) has ``match_index >= N``
*and* the entry at N is from the leader's current term (§5.4.2: an older-term entry is committed only
indirectly, by a current-term entry after it; this is why a new leader appends a no-op). Followers
learn the commit index from ``AppendEntries.commit`` and commit ``min(commit, last index verified by
that message)``. ``Committed`` events come out in index order, exactly once per index per lifetime.

**Losing the majority.** A leader that has not heard from a majority (itself included) for
``quorum_timeout_ns`` steps down to follower in the same term, with no leader. So a leader cut off in
a minority stops taking submits within about an election timeout, and ``submit`` on the minority
side raises ``NotLeader(None)``, which the node layer reports as "no quorum".

**Submits.** ``submit`` on the leader appends and returns the entry's index. On any other node it
raises ``NotLeader(leader_hint)``: the node layer forwards to the hint, or answers "no quorum" when
the hint is None. The entry submitted at ``(index, term)`` is committed iff a ``Committed`` event for
``index`` carries that ``term``; a different term there means the entry was lost with its leader
(never acknowledge it).

**Leadership transfer** (thesis §3.10; only with ``SequencerConfig.preferred``, which shards set
so that their leaders spread over the nodes, and which one group alone leaves None). A leader that
is not the preferred node, has led for ``transfer_settle_ns`` (the failover has settled) and hears
the preferred node answer within two heartbeats hands over: it appends nothing for
``election_timeout_min_ns`` (``submit`` raises ``NotLeader(None)``, so the node layer parks the
request until the new leader is known), and once the preferred node is caught up
(``match_index == last_index``, which the pause lets it reach under any load) sends it
``TimeoutNow``. The
preferred node, hearing ``TimeoutNow`` from its current leader in its current term, campaigns at
once, without a pre-vote, with ``ForcedVote``: a vote request that voters answer even though they
heard from a live leader (the stickiness rule would otherwise refuse it); everything else about the
vote is as for ``RequestVote``. A transfer that fails costs one election; the leader tries again
after another ``transfer_settle_ns`` at the earliest.

**Snapshots and compaction.** The caller folds committed entries into its own state and may call
``compact(upto_index, snapshot_bytes)`` (``upto_index <= commit_index``): the log below is dropped and
the opaque bytes kept. A follower whose ``next_index`` falls at or below the snapshot gets it as
``InstallSnapshot`` chunks (``snapshot_chunk`` bytes each, reassembled in any order, resent every
``snapshot_retry_ns`` until acknowledged); installing it emits ``SnapshotInstalled`` and ``Committed``
resumes after its index. A follower reassembles one snapshot at a time, at most
``snapshot_max_bytes`` in at most ``snapshot_max_chunks`` non-overlapping chunks (a chunk that
overlaps another differently, or one past either cap, drops the reassembly: counted
``snapshot_chunks_refused``); completion is counted in bytes, and the chunks are sorted once, when
they add up. A ``snapshot_check(last_index, data)`` given to the sequencer is asked before anything
is replaced: on False the snapshot is not adopted (log, commit index and snapshot stay as they
were), not acknowledged, and counted ``bad_snapshots``; the leader sends it again after its retry
period, so a state machine that cannot parse what a leader sends never runs past it silently.

Durability contract (the shell's job)
-------------------------------------
After each batch of inputs (``receive`` / ``tick`` / ``submit`` / ``compact``), make the persistent
state durable *before* sending anything from ``outbox()``: either ``persistent_state()`` (the whole
thing) or ``persist_delta()`` (what changed since the last call; fold it with ``apply_delta``).
Otherwise a crash could forget a vote (two leaders in one term) or an acknowledged entry. On restart
pass the stored ``PersistentState`` as ``persisted``: the node comes back as a follower with its term,
vote, log and snapshot; it emits ``SnapshotInstalled`` for a stored snapshot and ``Committed`` for
the entries up to the stored ``commit_index`` (a hint, re-learnt from the leader if stale), so the
caller rebuilds its state from events alone.

Rules that hold:
- Pure: ``now`` (ns) is passed in, randomness comes from the ``random.Random`` given.
- ``term`` never decreases; ``voted_for`` changes only when the term does or from None.
- The commit index never decreases; committed entries are never truncated.
- A malformed message, or one from a node outside ``members``, raises ``RemoteError`` before any
  state changes (the shell drops and counts it); so does one out of bounds (see "Bounds").
- ``term <= MAX_TERM`` and every index held or sent is at most ``MAX_INDEX``.

Deliberate breaks (``SequencerConfig.breaks``), for checking that the tests and the simulator
catch a broken protocol; never set them outside tests. Each is one condition in one method:
- ``vote-any-log``: grant (pre-)votes whatever the candidate's log (skips §5.4.1) -- ``_on_request_vote``.
- ``commit-without-majority``: the leader commits all it has, without counting -- ``_maybe_commit``.
- ``no-term-check``: messages from older terms are handled as if current (votes, appends, replies)
  -- ``_stale``, plus the pre-vote term tests in ``_on_request_vote`` / ``_on_vote_reply``.
- ``commit-old-term``: commit by counting an entry of an older term (skips §5.4.2) -- ``_maybe_commit``.
- ``joint-majority-skip``: the leader appends a configuration change while another is uncommitted
  (skips the one-at-a-time rule that keeps old and new majorities overlapping) -- ``submit``.

Membership (``strong_members.py`` says why each rule holds)
-----------------------------------------------------------
The configuration (voters, learners, removed) is part of the log: an entry whose value
``conf_of`` parses as a ``ConfChange`` takes effect here as soon as it is appended, and every
quorum (pre-votes, votes, commit, the quorum check) is a majority of the voters in force here. A
learner gets appends and snapshots but never campaigns and never counts. ``submit`` of a change
raises ``Refused`` while another change is uncommitted or before this leader has committed an
entry of its term. Truncating a configuration entry reverts to the one before; ``compact`` stores
the configuration as of its index with the snapshot (``strong_members.wrap``), and a restart
restores it. A leader whose committed configuration no longer lists it as a voter sends
``TimeoutNow`` to its most caught-up voter and steps down. Sequencer messages are taken from any
id this node's configurations ever named, and (``admit``) from any id the shell vouches for: a
node added after this one fell behind is a stranger here until the log names it, yet may lead.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

from .errors import RemoteError, UsageError
from .strong_members import Conf, ConfChange, Refused, unwrap, wrap

MS = 1_000_000
NEVER = 1 << 62  # a deadline that never comes (keeps next_deadline() an int for min())
MAX_TERM = 1 << 62  # no term held or sent exceeds it (the wire carries up to 2**64 - 1)
MAX_TERM_JUMP = 1 << 32  # the furthest above our term a message's term may be (see "Bounds")
MAX_INDEX = 1 << 62  # no log index from a peer may exceed it

BREAKS = frozenset({"vote-any-log", "commit-without-majority", "no-term-check", "commit-old-term",
                    "joint-majority-skip"})


class Role(StrEnum):
    FOLLOWER = "follower"
    CANDIDATE = "candidate"
    LEADER = "leader"


FOLLOWER, CANDIDATE, LEADER = Role.FOLLOWER, Role.CANDIDATE, Role.LEADER

# (from, to) -> why it may happen. Any other change raises IllegalTransition. Staying a follower
# "changes" when the term or the known leader does (that too is reported as RoleChanged).
TRANSITIONS: dict[tuple[Role, Role], str] = {
    (FOLLOWER, FOLLOWER): "a newer term, or a leader found or lost",
    (FOLLOWER, CANDIDATE): "election timeout (and, with pre_vote, a majority of pre-votes)",
    (CANDIDATE, CANDIDATE): "election timeout without pre_vote: a new term",
    (CANDIDATE, LEADER): "votes from a majority in this term",
    (CANDIDATE, FOLLOWER): "a leader of this term, a newer term, or (pre_vote) election timeout",
    (LEADER, FOLLOWER): "a newer term, or no word from a majority within quorum_timeout_ns",
}


class IllegalTransition(RuntimeError):
    """The sequencer tried a role change outside ``TRANSITIONS``: a bug in this module."""


class NotLeader(UsageError):
    """``submit`` on a node that is not the leader; ``leader_hint`` is who is, or None (no quorum)."""

    def __init__(self, leader_hint: str | None) -> None:
        self.leader_hint = leader_hint
        if leader_hint is None:
            super().__init__("no quorum: no leader is known here; retry later or on another node")
        else:
            super().__init__(f"not the leader: send to {leader_hint}")


class Entry(NamedTuple):
    """One log entry: the term of the leader that created it, and the opaque value."""

    term: int
    value: Any


# ---- messages (field order is wire order; new fields go at the end with defaults) ----------------
@dataclass(frozen=True, slots=True)
class RequestVote:
    """Vote for me in ``term``; ``pre``: would you (pre-vote, nobody's term or vote changes)?"""

    term: int
    last_index: int
    last_term: int
    pre: bool = False


@dataclass(frozen=True, slots=True)
class VoteReply:
    """Answer to ``RequestVote``; ``term`` is the request's if a pre-vote is granted, else ours.

    ``candidate`` names the node asked: frames are authenticated but not bound to their destination,
    so without it a granted vote captured on the way to one candidate could be replayed to another
    candidate of the same term and elect two leaders."""

    term: int
    granted: bool
    pre: bool = False
    candidate: str = ""


@dataclass(frozen=True, slots=True)
class AppendEntries:
    """Entries after ``prev_index`` (which must hold ``prev_term``), and the leader's commit index."""

    term: int
    prev_index: int
    prev_term: int
    commit: int
    entries: tuple[Entry, ...] = ()


@dataclass(frozen=True, slots=True)
class AppendReply:
    """``success``: our log matches up to ``index``. Else ``index`` is the rejected ``prev_index``
    and ``hint`` our last index whose term is <= the rejected ``prev_term``."""

    term: int
    success: bool
    index: int
    hint: int = 0


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    """Bytes ``offset .. offset + len(data)`` of a snapshot of ``total`` bytes covering the log
    up to ``last_index`` (whose entry has ``last_term``)."""

    term: int
    last_index: int
    last_term: int
    offset: int
    total: int
    data: bytes


@dataclass(frozen=True, slots=True)
class TimeoutNow:
    """Leadership transfer: the leader of ``term`` asks the receiver to campaign now."""

    term: int


@dataclass(frozen=True, slots=True)
class ForcedVote:
    """``RequestVote`` (never a pre-vote) of a candidate that campaigns on its leader's ``TimeoutNow``:
    voters answer it even though they heard from a live leader (see "Leadership transfer")."""

    term: int
    last_index: int
    last_term: int


# Append-only: the wire layer may number sequencer messages by their position here.
MESSAGES: tuple[type, ...] = (RequestVote, VoteReply, AppendEntries, AppendReply, InstallSnapshot)
#: leadership transfer's two (see "Leadership transfer"): sent only by a group with a preferred leader
TRANSFER_MESSAGES: tuple[type, ...] = (TimeoutNow, ForcedVote)
#: everything ``receive`` takes (what a node layer routes to its sequencer)
ALL_MESSAGES: tuple[type, ...] = MESSAGES + TRANSFER_MESSAGES
Message = RequestVote | VoteReply | AppendEntries | AppendReply | InstallSnapshot | TimeoutNow | ForcedVote


# ---- events -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Committed:
    """The entry at ``index`` (created in ``term``) is committed: fold it. ``entry`` None is a no-op."""

    index: int
    term: int
    entry: Any


@dataclass(frozen=True, slots=True)
class RoleChanged:
    """Our role, term or known leader changed (``leader`` None: none known)."""

    role: Role
    term: int
    leader: str | None


@dataclass(frozen=True, slots=True)
class SnapshotInstalled:
    """Replace the folded state with ``data``, which covers the log up to ``index``."""

    index: int
    term: int
    data: bytes


Event = Committed | RoleChanged | SnapshotInstalled


# ---- persistence --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PersistentState:
    """What must survive a crash. ``entries`` are the log after ``snapshot_index``;
    ``commit_index`` is only a hint (committed entries are re-learnt from the leader)."""

    term: int = 0
    voted_for: str | None = None
    entries: tuple[Entry, ...] = ()
    snapshot_index: int = 0
    snapshot_term: int = 0
    snapshot: bytes = b""
    commit_index: int = 0


@dataclass(frozen=True, slots=True)
class PersistDelta:
    """The change since the previous ``persist_delta``: drop stored entries at or after
    ``first_index`` and store ``entries`` from there; if ``snapshot`` is not None, it replaces the
    stored snapshot and entries up to ``snapshot_index`` are dropped."""

    term: int
    voted_for: str | None
    first_index: int
    entries: tuple[Entry, ...]
    snapshot_index: int
    snapshot_term: int
    snapshot: bytes | None
    commit_index: int


def apply_delta(state: PersistentState, d: PersistDelta) -> PersistentState:
    """Fold a ``PersistDelta`` into a stored ``PersistentState`` (what a storage layer does)."""
    base = state.snapshot_index
    entries = list(state.entries)
    if d.snapshot is not None:
        entries = entries[max(0, d.snapshot_index - base):]
        base, snap, snap_term = d.snapshot_index, d.snapshot, d.snapshot_term
    else:
        snap, snap_term = state.snapshot, state.snapshot_term
    keep = max(0, d.first_index - base - 1)
    entries = entries[:keep] + list(d.entries)
    return PersistentState(d.term, d.voted_for, tuple(entries), base, snap_term, snap, d.commit_index)


# ---- configuration ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SequencerConfig:
    """Timers and batching. Defaults suit loopback / a LAN: a killed leader is replaced and a new
    entry commits well within 2 s (one election timeout, a pre-vote and a vote round trip)."""

    election_timeout_min_ns: int = 150 * MS
    election_timeout_max_ns: int = 300 * MS
    heartbeat_ns: int = 50 * MS
    quorum_timeout_ns: int = 300 * MS  # a leader without word from a majority this long steps down
    max_batch: int = 64  # entries per AppendEntries
    max_inflight: int = 8  # pipelined AppendEntries per follower
    snapshot_chunk: int = 1_100  # snapshot bytes per InstallSnapshot (MTU-sized, as gossip's)
    snapshot_retry_ns: int = 300 * MS  # resend an unacknowledged snapshot after this long
    snapshot_max_bytes: int = 1 << 30  # the largest snapshot a follower reassembles
    snapshot_max_chunks: int = 1 << 20  # ... in at most this many chunks
    pre_vote: bool = True
    #: the node that should lead this group when it can (shards: see "Leadership transfer"); None:
    #: whoever wins an election leads until it fails
    preferred: str | None = None
    transfer_settle_ns: int = 1_000 * MS  # lead this long before handing over to ``preferred``
    breaks: frozenset[str] = field(default_factory=frozenset)  # tests only: see the module header

    def __post_init__(self) -> None:
        if not 0 < self.heartbeat_ns < self.election_timeout_min_ns <= self.election_timeout_max_ns:
            raise ValueError("need 0 < heartbeat_ns < election_timeout_min_ns <= election_timeout_max_ns")
        if self.quorum_timeout_ns <= self.heartbeat_ns:
            raise ValueError("quorum_timeout_ns must be longer than heartbeat_ns")
        if min(self.max_batch, self.max_inflight, self.snapshot_chunk, self.snapshot_retry_ns,
               self.snapshot_max_bytes, self.snapshot_max_chunks, self.transfer_settle_ns) < 1:
            raise ValueError("max_batch, max_inflight, snapshot_chunk, snapshot_retry_ns, the snapshot caps "
                             "and transfer_settle_ns must be positive")
        unknown = set(self.breaks) - BREAKS
        if unknown:
            raise ValueError(f"unknown breaks {sorted(unknown)}; known: {sorted(BREAKS)}")


# ---- internal records ---------------------------------------------------------------------------
@dataclass(slots=True)
class _Progress:
    """The leader's view of one follower."""

    next_index: int
    match_index: int = 0
    last_ack: int = 0  # when it last answered us in this term (for the quorum check)
    probing: bool = True  # one message at a time until a match is found
    probe_sent: bool = False
    inflight: int = 0  # pipelined messages since the last ack / heartbeat
    acked: bool = False  # a success since the last heartbeat
    sent_commit: int = 0  # the commit index we last told it
    snapshot_at: int | None = None  # when we last sent it the snapshot
    heard: int = 0  # when it last answered us (``last_ack`` starts at "now" for the quorum check; this at 0)


@dataclass(slots=True)
class _SnapshotRx:
    """A snapshot being reassembled from chunks: non-overlapping (a resent chunk at the same
    offset with the same length is a duplicate), so the bytes held never exceed ``total``."""

    key: tuple[int, int, int, int]  # (term, last_index, last_term, total)
    chunks: dict[int, bytes] = field(default_factory=dict)
    held: int = 0  # bytes in ``chunks``

    def add(self, offset: int, data: bytes, max_chunks: int) -> bool:
        """Add a chunk; False if it cannot belong to one snapshot cut into at most ``max_chunks``
        non-overlapping chunks (the caller drops the reassembly)."""
        prev = self.chunks.get(offset)
        if prev is not None:
            return len(prev) == len(data)  # a resend (the same leader's same cut) or an overlap
        if (self.held + len(data) > self.key[3] or len(self.chunks) >= max_chunks
                or (not data and self.key[3] > 0)):
            return False  # more bytes than the snapshot has: some chunks overlap; or too many
        self.chunks[offset] = data
        self.held += len(data)
        return True

    def complete(self) -> bytes | None:
        """The snapshot once its chunks add up to ``total`` and tile it (sorted once, then)."""
        total = self.key[3]
        if self.held != total:
            return None
        pos, parts = 0, []
        for off in sorted(self.chunks):
            if off != pos:
                return None  # overlapping chunks with a gap: add() refuses the next chunk
            data = self.chunks[off]
            parts.append(data)
            pos += len(data)
        return b"".join(parts)


def _is_uint(v: Any) -> bool:
    return type(v) is int and v >= 0


_INT_FIELDS: dict[type, tuple[str, ...]] = {
    RequestVote: ("term", "last_index", "last_term"),
    VoteReply: ("term",),
    AppendEntries: ("term", "prev_index", "prev_term", "commit"),
    AppendReply: ("term", "index", "hint"),
    InstallSnapshot: ("term", "last_index", "last_term", "offset", "total"),
    TimeoutNow: ("term",),
    ForcedVote: ("term", "last_index", "last_term"),
}


def _validate(msg: Any) -> tuple[Entry, ...]:
    """Raise RemoteError for a malformed message; return AppendEntries' entries as Entry tuples."""
    t = type(msg)
    if not all(_is_uint(getattr(msg, f)) for f in _INT_FIELDS[t]):
        raise RemoteError(f"malformed {t.__name__}: fields must be non-negative ints", reason="malformed")
    if t is RequestVote and (type(msg.pre) is not bool or msg.last_term > msg.term):
        raise RemoteError("malformed RequestVote", reason="malformed")
    if t is ForcedVote and msg.last_term > msg.term:
        raise RemoteError("malformed ForcedVote", reason="malformed")
    if t is VoteReply and (type(msg.granted) is not bool or type(msg.pre) is not bool
                           or type(msg.candidate) is not str):
        raise RemoteError("malformed VoteReply", reason="malformed")
    if t is AppendReply and type(msg.success) is not bool:
        raise RemoteError("malformed AppendReply", reason="malformed")
    if t is InstallSnapshot and (type(msg.data) is not bytes or msg.offset + len(msg.data) > msg.total
                                 or msg.last_term > msg.term or msg.last_index < 1):
        raise RemoteError("malformed InstallSnapshot", reason="malformed")
    if t is not AppendEntries:
        return ()
    if msg.prev_term > msg.term or (msg.prev_index == 0 and msg.prev_term != 0):
        raise RemoteError("malformed AppendEntries: bad prev_term", reason="malformed")
    if not isinstance(msg.entries, tuple | list):
        raise RemoteError("malformed AppendEntries: entries", reason="malformed")
    out, last = [], msg.prev_term
    for e in msg.entries:
        if not isinstance(e, tuple | list) or len(e) != 2 or type(e[0]) is not int:
            raise RemoteError("malformed AppendEntries: entry", reason="malformed")
        if not last <= e[0] <= msg.term or e[0] < 1:
            raise RemoteError("malformed AppendEntries: entry terms out of order", reason="malformed")
        last = e[0]
        out.append(e if type(e) is Entry else Entry(e[0], e[1]))
    return tuple(out)


def _conf_change(value: Any) -> ConfChange | None:
    return value if type(value) is ConfChange else None


# ---- the state machine --------------------------------------------------------------------------
class Sequencer:
    """One node's replica of the sequenced log; feed it messages, ticks and submits, send its outbox."""

    def __init__(self, node_id: str, members: Iterable[str], rng: random.Random,
                 config: SequencerConfig | None = None, persisted: PersistentState | None = None,
                 snapshot_check: Callable[[int, bytes], bool] | None = None,
                 conf_of: Callable[[Any], ConfChange | None] | None = None, learner: bool = False,
                 admit: Callable[[str], bool] | None = None) -> None:
        """``members``: the initial configuration (all voters). ``learner``: this node joins a
        running group (``node --join``): it starts as a learner of that configuration and never
        campaigns until a committed-or-appended entry makes it a voter. ``conf_of``: which entry
        values are configuration changes (default: ``ConfChange`` instances). ``admit``: ids whose
        messages are taken though no configuration here names them (the shell authenticated them)."""
        self.node_id = node_id
        #: asked ``(last_index, data)`` when a leader's snapshot is complete, before it is adopted:
        #: False refuses it (see "Snapshots and compaction"); None adopts every snapshot
        self.snapshot_check = snapshot_check
        self.config = config or SequencerConfig()
        self.rng = rng
        self._breaks = self.config.breaks
        self._conf_of = conf_of or _conf_change
        self._admit = admit
        ids = frozenset(members) | {node_id}
        self._initial = (Conf(ids - {node_id}, frozenset({node_id})) if learner and ids - {node_id}
                         else Conf(ids))
        self._known: set[str] = set(ids)
        p = persisted or PersistentState()
        if (min(p.term, p.snapshot_index, p.snapshot_term, p.commit_index) < 0
                or p.term > MAX_TERM or max(p.snapshot_index, p.commit_index) > MAX_INDEX
                or (p.snapshot_index == 0) != (p.snapshot_term == 0)
                or any(not p.snapshot_term <= e[0] <= p.term for e in p.entries)):
            raise ValueError("inconsistent persisted sequencer state")
        self.term = p.term
        self.voted_for = p.voted_for
        self._snap_index, self._snap_term, self._snapshot = p.snapshot_index, p.snapshot_term, p.snapshot
        self._snap_conf, snap_data = unwrap(p.snapshot, self._initial)  # ValueError: the caller's to report
        self._log: list[Entry] = [Entry(e[0], e[1]) for e in p.entries]
        #: (index, configuration) of each configuration entry in the log after the snapshot
        self._confs: list[tuple[int, Conf]] = []
        conf = self._snap_conf
        for i, e in enumerate(self._log, self._snap_index + 1):
            ch = self._conf_of(e.value) if e.value is not None else None
            if ch is not None:
                conf = conf.apply(ch, i)
                self._confs.append((i, conf))
        self.members: tuple[str, ...] = ()
        self.peers: tuple[str, ...] = ()
        self.majority = 1
        self.role = FOLLOWER
        self._leader: str | None = None
        self.commit_index = self._snap_index
        self._events: list[Event] = []
        self._out: list[tuple[str, Message]] = []
        self._started = False
        self._now = 0
        self._election_at = 0
        self._heartbeat_at = 0
        self._leader_contact: int | None = None
        self._votes: set[str] = set()
        self._prevotes: set[str] | None = None  # a pre-vote round is running
        self._progress: dict[str, _Progress] = {}
        self._snap_rx: _SnapshotRx | None = None
        self._led_since = 0  # when we last became leader (leadership transfer waits for it to settle)
        self._transfer_at: int | None = None  # when we last began a hand-over (None: never, this term)
        self._timeout_sent = False  # ... and whether its TimeoutNow went out
        self._dirty_from = self.last_index + 1  # persist_delta: first log index changed since
        self._snap_dirty = False
        self.counters: dict[str, int] = {
            "elections": 0, "pre_votes": 0, "votes_granted": 0, "votes_refused_sticky": 0, "votes_misaddressed": 0,
            "became_leader": 0, "step_downs": 0, "appends_rejected": 0, "truncated": 0,
            "snapshots_sent": 0, "snapshots_installed": 0, "stale_messages": 0, "refused_bound": 0,
            "bad_snapshots": 0, "snapshot_chunks_refused": 0, "transfers_sent": 0, "transfers_taken": 0,
            "conf_changes": 0, "conf_refused": 0, "conf_reverted": 0, "removed_step_downs": 0}
        self._conf_changed()
        if self._snap_index:
            self._events.append(SnapshotInstalled(self._snap_index, self._snap_term, snap_data))
        self._commit_to(min(p.commit_index, self.last_index))

    # ---- queries ----------------------------------------------------------------------------------
    @property
    def last_index(self) -> int:
        return self._snap_index + len(self._log)

    @property
    def last_term(self) -> int:
        return self._log[-1].term if self._log else self._snap_term

    @property
    def snapshot_index(self) -> int:
        return self._snap_index

    def leader(self) -> str | None:
        """The leader as we know it (ourselves if leading), or None."""
        return self._leader

    @property
    def conf(self) -> Conf:
        """The configuration in force here: the last configuration entry's in the log, else the snapshot's."""
        return self._confs[-1][1] if self._confs else self._snap_conf

    def conf_at(self, index: int) -> Conf:
        """The configuration as of ``index`` (for a snapshot there; ``index`` >= the snapshot's)."""
        conf = self._snap_conf
        for i, c in self._confs:
            if i > index:
                break
            conf = c
        return conf

    def conf_indices(self) -> list[int]:
        """The log indices of the configuration entries held after the snapshot (checkers read them)."""
        return [i for i, _c in self._confs]

    def conf_pending(self) -> bool:
        """A configuration entry is appended here and not yet committed."""
        return self.conf.index > self.commit_index

    def is_voter(self) -> bool:
        return self.node_id in self.conf.voters

    def progress(self) -> dict[str, tuple[int, int]]:
        """Leader: each follower's ``(match_index, when it last answered)`` (learners included; 0:
        never, in this term)."""
        return {p: (pr.match_index, pr.heard) for p, pr in self._progress.items()}

    def term_at(self, index: int) -> int | None:
        """The term of the entry at ``index``; None if compacted away or beyond the log."""
        if index == self._snap_index:
            return self._snap_term
        if self._snap_index < index <= self.last_index:
            return self._log[index - self._snap_index - 1].term
        return None

    def entry(self, index: int) -> Entry | None:
        """The log entry at ``index``; None if compacted away or beyond the log."""
        if self._snap_index < index <= self.last_index:
            return self._log[index - self._snap_index - 1]
        return None

    def status(self) -> dict[str, Any]:
        """For ``gossipbook status``: role, term, leader, indices, and (leader) followers' match."""
        return {
            "role": self.role.value, "term": self.term, "leader": self._leader,
            "commit_index": self.commit_index, "last_index": self.last_index,
            "snapshot_index": self._snap_index,
            "match_index": {p: pr.match_index for p, pr in sorted(self._progress.items())},
            "conf": self.conf_status(),
        }

    def conf_status(self) -> dict[str, Any]:
        """The configuration in force: epoch, log index, committed or not, each id's role."""
        conf, pending = self.conf, self.conf_pending()
        prev = self.conf_at(conf.index - 1) if pending else None
        return {"epoch": conf.epoch, "index": conf.index, "committed": not pending,
                "roles": conf.roles(not pending, prev), "addresses": dict(conf.addrs)}

    def persistent_state(self) -> PersistentState:
        """Everything a restart needs (see the module header for when to store it)."""
        return PersistentState(self.term, self.voted_for, tuple(self._log), self._snap_index,
                               self._snap_term, self._snapshot, self.commit_index)

    def persist_delta(self) -> PersistDelta:
        """What changed in the persistent state since the previous call (for append-only storage)."""
        first = max(self._dirty_from, self._snap_index + 1)
        d = PersistDelta(self.term, self.voted_for, first, tuple(self._log[first - self._snap_index - 1:]),
                         self._snap_index, self._snap_term, self._snapshot if self._snap_dirty else None,
                         self.commit_index)
        self._dirty_from, self._snap_dirty = self.last_index + 1, False
        return d

    # ---- inputs -----------------------------------------------------------------------------------
    def receive(self, msg: Message, src: str, now: int) -> None:
        """Handle one sequencer message from peer ``src``."""
        t = type(msg)
        if t not in ALL_MESSAGES:
            raise RemoteError(f"sequencer cannot handle {t.__name__}", reason="unknown_message")
        if src == self.node_id:
            return
        if src not in self._known and (self._admit is None or not self._admit(src)):
            raise RemoteError(f"sequencer message from unknown node {src!r}", reason="unknown_member")
        entries = _validate(msg)
        limit = min(MAX_TERM, self.term + MAX_TERM_JUMP)
        if msg.term > limit or any(getattr(msg, f) > MAX_INDEX for f in _INT_FIELDS[t][1:]):
            self.counters["refused_bound"] += 1
            raise RemoteError(f"{t.__name__} from {src!r} out of bounds: term {msg.term} (at most {limit}) "
                              f"or an index above {MAX_INDEX}", reason="bound")
        self._start(now)
        if t is AppendEntries:
            self._on_append(msg, entries, src, now)
        elif t is AppendReply:
            self._on_append_reply(msg, src, now)
        elif t is RequestVote:
            self._on_request_vote(msg, src, now)
        elif t is VoteReply:
            self._on_vote_reply(msg, src, now)
        elif t is InstallSnapshot:
            self._on_snapshot(msg, src, now)
        elif t is TimeoutNow:
            self._on_timeout_now(msg, src, now)
        else:
            self._on_request_vote(RequestVote(msg.term, msg.last_index, msg.last_term), src, now, forced=True)

    def tick(self, now: int) -> None:
        """Run the timers due at ``now``: election timeout, heartbeat, the leader's quorum check."""
        self._start(now)
        if self.role is LEADER:
            if self._check_quorum(now) and now >= self._heartbeat_at:
                self._heartbeat(now)
                if self._leaving():
                    self._hand_over_leaving(now)
                elif self.config.preferred is not None:
                    self._maybe_transfer(now)
        elif now >= self._election_at:
            self._election_timeout(now)

    def submit(self, entry: Any, now: int) -> int:
        """Append ``entry`` (leader only) and return its index; it is committed iff ``Committed`` for
        that index carries the current ``term``. Raises ``NotLeader(hint)`` elsewhere."""
        if entry is None:
            raise ValueError("None is reserved for the leader's no-op entry")
        self._start(now)
        if self.role is LEADER:
            self._check_quorum(now)
        if self.role is not LEADER:
            raise NotLeader(self._leader)
        if self._handing_over(now) or self._leaving():
            raise NotLeader(None)  # handing over (see "Leadership transfer"): the caller waits for the new one
        ch = self._conf_of(entry)
        if ch is not None:
            self._check_change(ch)
        self._append(Entry(self.term, entry))
        self._maybe_commit()
        return self.last_index

    def _check_change(self, ch: ConfChange) -> None:
        """A leader's rules for appending a configuration change (``Refused`` says which broke)."""
        conf = self.conf
        why, transient = None, True
        if self.term_at(self.commit_index) != self.term:
            why = (f"the leader of term {self.term} has not committed an entry of its term yet; retry in a "
                   f"moment")
        elif self.conf_pending() and "joint-majority-skip" not in self._breaks:
            why = (f"a configuration change is already in flight (epoch {conf.epoch}, log index {conf.index}); "
                   f"retry once it commits")
        else:
            why, transient = conf.check(ch), False
        if why is not None:
            self.counters["conf_refused"] += 1
            raise Refused(why, transient)

    def compact(self, upto_index: int, snapshot: bytes) -> None:
        """Drop the log up to ``upto_index`` (<= ``commit_index``); ``snapshot`` is the caller's
        folded state at that index, sent to followers that lag behind it. Older indices: no-op."""
        if upto_index > self.commit_index:
            raise ValueError(f"cannot compact to {upto_index}: only up to commit index {self.commit_index}")
        if type(snapshot) is not bytes:
            raise TypeError("snapshot must be bytes")
        if upto_index <= self._snap_index:
            return
        term = self.term_at(upto_index)
        assert term is not None
        conf = self.conf_at(upto_index)
        del self._log[:upto_index - self._snap_index]
        self._snap_index, self._snap_term, self._snapshot = upto_index, term, wrap(conf, self._initial, snapshot)
        self._snap_conf = conf
        self._confs = [(i, c) for i, c in self._confs if i > upto_index]
        self._snap_dirty = True

    # ---- outputs ----------------------------------------------------------------------------------
    def outbox(self) -> list[tuple[str, Message]]:
        """Messages to send, as ``(peer id, message)``; clears them. Entries submitted since the
        last call go out here, batched."""
        if self.role is LEADER:
            for p, pr in self._progress.items():
                self._replicate(p, pr, self._now, heartbeat=False)
        out, self._out = self._out, []
        return out

    def events(self) -> list[Event]:
        """``Committed`` / ``RoleChanged`` / ``SnapshotInstalled`` since the last call; clears them."""
        ev, self._events = self._events, []
        return ev

    def next_deadline(self) -> int:
        """When ``tick`` must next run (0 before the first input: run it now)."""
        if not self._started:
            return 0
        if self.role is LEADER:
            return min(self._heartbeat_at, self._quorum_deadline())
        return self._election_at

    # ---- timers -----------------------------------------------------------------------------------
    def _start(self, now: int) -> None:
        self._now = max(self._now, now)
        if not self._started:
            self._started = True
            self._reset_election_timer(now)

    def _reset_election_timer(self, now: int) -> None:
        cfg = self.config
        self._election_at = now + self.rng.randint(cfg.election_timeout_min_ns, cfg.election_timeout_max_ns)

    def _election_timeout(self, now: int) -> None:
        self._reset_election_timer(now)
        if self.role is CANDIDATE and not self.config.pre_vote and self.term < MAX_TERM and self._may_campaign():
            self._start_election(now)
            return
        if self.role is CANDIDATE or self._leader is not None:
            self._become(FOLLOWER, self.term, None)
        if self.term >= MAX_TERM or not self._may_campaign():
            return  # a campaign would need term MAX_TERM + 1 (see "Bounds"), or we have no vote: stay a follower
        if not self.config.pre_vote:
            self._start_election(now)
            return
        self.counters["pre_votes"] += 1
        self._prevotes = {self.node_id}
        for p in self._voter_peers():
            self._send(p, RequestVote(self.term + 1, self.last_index, self.last_term, pre=True))
        if self.conf.quorum(self._prevotes):
            self._start_election(now)

    def _start_election(self, now: int, forced: bool = False) -> None:
        self.counters["elections"] += 1
        self._become(CANDIDATE, self.term + 1, None)
        self.voted_for = self.node_id
        self._votes = {self.node_id}
        self._reset_election_timer(now)
        for p in self._voter_peers():
            self._send(p, ForcedVote(self.term, self.last_index, self.last_term) if forced
                       else RequestVote(self.term, self.last_index, self.last_term))
        if self.conf.quorum(self._votes):
            self._become_leader(now)

    def _may_campaign(self) -> bool:
        """A voter campaigns; so does a node whose vote only an *uncommitted* entry here took away.
        Without that, a leader that appended its own removal and lost its majority before sending it
        could deadlock the group: it holds the longest log, so the others' candidates never get its
        vote, and it would never stand itself. It wins only with a majority of the configuration in
        force (which does not count it), commits the removal and hands over."""
        return self.is_voter() or self.node_id in self.conf_at(self.commit_index).voters

    def _voter_peers(self) -> list[str]:
        return sorted(self.conf.voters - {self.node_id})

    def _quorum_deadline(self) -> int:
        """When, hearing nothing more, the leader loses its majority."""
        conf = self.conf
        need = conf.majority - (1 if self.node_id in conf.voters else 0)
        if need <= 0:
            return NEVER
        acks = sorted((self._progress[v].last_ack if v in self._progress else 0
                       for v in conf.voters if v != self.node_id), reverse=True)
        return acks[need - 1] + self.config.quorum_timeout_ns

    def _check_quorum(self, now: int) -> bool:
        """Step down if a majority has been silent for quorum_timeout_ns; True if still leading."""
        if now < self._quorum_deadline():
            return True
        self.counters["step_downs"] += 1
        self._become(FOLLOWER, self.term, None)
        self._reset_election_timer(now)
        return False

    def _heard_from_leader(self, now: int) -> bool:
        """A live leader is known: (pre-)vote requests are ignored (thesis §4.2.3)."""
        if self.role is LEADER:
            return True
        c = self._leader_contact
        return (self._leader is not None and c is not None
                and now - c < self.config.election_timeout_min_ns)

    # ---- role changes -----------------------------------------------------------------------------
    def _become(self, role: Role, term: int, leader: str | None) -> None:
        if (self.role, role) not in TRANSITIONS:
            raise IllegalTransition(f"sequencer {self.node_id}: {self.role.value} -> {role.value} "
                                    f"is not a legal transition (see TRANSITIONS)")
        if term < self.term:
            raise IllegalTransition(f"sequencer {self.node_id}: term would go back {self.term} -> {term}")
        old = (self.role, self.term, self._leader)
        if term > self.term:
            self.term, self.voted_for = term, None
        self.role, self._leader = role, leader
        self._votes = set()
        self._prevotes = None
        if role is not LEADER:
            self._progress = {}
        if (role, term, leader) != old:
            self._events.append(RoleChanged(role, term, leader))

    def _become_leader(self, now: int) -> None:
        self.counters["became_leader"] += 1
        self._become(LEADER, self.term, self.node_id)
        self._led_since, self._transfer_at, self._timeout_sent = now, None, False
        nxt = self.last_index + 1
        self._progress = {p: _Progress(next_index=nxt, last_ack=now) for p in self.peers}
        self._append(Entry(self.term, None))  # commits the older-term entries before it (§5.4.2)
        self._maybe_commit()
        self._heartbeat(now)

    def _stale(self, term: int) -> bool:
        if term < self.term:
            self.counters["stale_messages"] += 1
            return "no-term-check" not in self._breaks
        return False

    # ---- votes ------------------------------------------------------------------------------------
    def _on_request_vote(self, msg: RequestVote, src: str, now: int, forced: bool = False) -> None:
        log_ok = ((msg.last_term, msg.last_index) >= (self.last_term, self.last_index)
                  or "vote-any-log" in self._breaks)
        if not forced and self._heard_from_leader(now):
            self.counters["votes_refused_sticky"] += 1
            self._send(src, VoteReply(self.term, False, msg.pre, src))
            return
        if msg.pre:
            granted = (msg.term > self.term or "no-term-check" in self._breaks) and log_ok
            self._send(src, VoteReply(msg.term if granted else self.term, granted, True, src))
            return
        if self._stale(msg.term):
            self._send(src, VoteReply(self.term, False, False, src))
            return
        if msg.term > self.term:
            self._become(FOLLOWER, msg.term, None)
        granted = log_ok and self.voted_for in (None, src)
        if granted:
            self.counters["votes_granted"] += 1
            self.voted_for = src
            self._reset_election_timer(now)
        self._send(src, VoteReply(self.term, granted, False, src))

    def _on_vote_reply(self, msg: VoteReply, src: str, now: int) -> None:
        if msg.candidate != self.node_id:
            self.counters["votes_misaddressed"] += 1  # an answer to another candidate, replayed here
            return
        if msg.pre:
            if not msg.granted:
                if msg.term > self.term:
                    self._become(FOLLOWER, msg.term, None)
            elif self._prevotes is not None and (msg.term == self.term + 1 or "no-term-check" in self._breaks):
                if src in self.conf.voters:  # (the set stays within the voters: bounded)
                    self._prevotes.add(src)
                if self.conf.quorum(self._prevotes):
                    self._start_election(now)
            return
        if msg.term > self.term:
            self._become(FOLLOWER, msg.term, None)
            self._reset_election_timer(now)
            return
        if self._stale(msg.term) or self.role is not CANDIDATE or not msg.granted:
            return
        if src in self.conf.voters:
            self._votes.add(src)
        if self.conf.quorum(self._votes):
            self._become_leader(now)

    # ---- leadership transfer ----------------------------------------------------------------------
    def _maybe_transfer(self, now: int) -> None:
        """Leader, not the preferred node: hand over once the failover has settled and the preferred
        node is answering (see "Leadership transfer")."""
        cfg = self.config
        target = cfg.preferred
        if target == self.node_id or target not in self._progress or target not in self.conf.voters:
            return
        if self._handing_over(now):
            self._timeout_now(target)  # (a catch-up acknowledged since sends it from _on_append_reply)
            return
        since = self._led_since if self._transfer_at is None else self._transfer_at
        if now - since < cfg.transfer_settle_ns or now - self._progress[target].last_ack > 2 * cfg.heartbeat_ns:
            return
        self._transfer_at, self._timeout_sent = now, False
        self._timeout_now(target)

    def _handing_over(self, now: int) -> bool:
        """A hand-over began less than an election timeout ago (no appends meanwhile)."""
        return self._transfer_at is not None and now - self._transfer_at < self.config.election_timeout_min_ns

    def _timeout_now(self, target: str) -> None:
        """Send the hand-over's ``TimeoutNow`` once ``target`` holds our whole log."""
        if not self._timeout_sent and self._progress[target].match_index == self.last_index:
            self._timeout_sent = True
            self.counters["transfers_sent"] += 1
            self._send(target, TimeoutNow(self.term))

    def _on_timeout_now(self, msg: TimeoutNow, src: str, now: int) -> None:
        """Campaign at once if our current leader asks us to (a stale or misdirected one is ignored)."""
        if (msg.term != self.term or src != self._leader or self.role is not FOLLOWER or self.term >= MAX_TERM
                or not self.is_voter()):
            self.counters["stale_messages"] += 1
            return
        self.counters["transfers_taken"] += 1
        self._start_election(now, forced=True)

    # ---- replication: follower side ---------------------------------------------------------------
    def _follow(self, term: int, src: str, now: int) -> bool:
        """Common handling of a leader's message; False if it is stale (answered, then ignored)."""
        if term > self.term:
            self._become(FOLLOWER, term, src)
        elif self._stale(term):
            self._send(src, AppendReply(self.term, False, 0, 0))
            return False
        elif self.role is not FOLLOWER or self._leader != src:
            self._become(FOLLOWER, self.term, src)
        self._prevotes = None
        self._leader_contact = now
        self._reset_election_timer(now)
        return True

    def _on_append(self, msg: AppendEntries, entries: tuple[Entry, ...], src: str, now: int) -> None:
        if not self._follow(msg.term, src, now):
            return
        prev, prev_term = msg.prev_index, msg.prev_term
        if prev < self._snap_index:
            # Our snapshot is committed, so it matches any leader's log: skip what it covers.
            entries = entries[self._snap_index - prev:]
            prev, prev_term = self._snap_index, self._snap_term
        elif self.term_at(prev) != prev_term:
            self.counters["appends_rejected"] += 1
            self._send(src, AppendReply(self.term, False, prev, self._reject_hint(prev, prev_term)))
            return
        for i, e in enumerate(entries):
            idx = prev + 1 + i
            if idx <= self.last_index:
                if self.term_at(idx) == e.term:
                    continue
                self.counters["truncated"] += 1
                del self._log[idx - self._snap_index - 1:]
                self._dirty_from = min(self._dirty_from, idx)
                self._truncate_confs(idx)
            for e2 in entries[i:]:
                self._append(e2)
            break
        last_new = prev + len(entries)
        if msg.commit > self.commit_index:
            self._commit_to(min(msg.commit, last_new))
        self._send(src, AppendReply(self.term, True, last_new))

    def _reject_hint(self, prev: int, prev_term: int) -> int:
        """Our last index (< prev) whose term is <= prev_term: the leader's next probe goes there."""
        i = min(prev - 1, self.last_index)
        while i > self._snap_index and (self.term_at(i) or 0) > prev_term:
            i -= 1
        return max(i, 0)

    def _on_snapshot(self, msg: InstallSnapshot, src: str, now: int) -> None:
        if not self._follow(msg.term, src, now):
            return
        if msg.last_index <= self.commit_index:
            self._send(src, AppendReply(self.term, True, msg.last_index))
            return
        key = (msg.term, msg.last_index, msg.last_term, msg.total)
        rx = self._snap_rx
        if rx is None or rx.key != key:
            if rx is not None and (rx.key[0], rx.key[1]) > (msg.term, msg.last_index):
                return  # a late chunk of an older snapshot
            if msg.total > self.config.snapshot_max_bytes:
                self.counters["snapshot_chunks_refused"] += 1
                return
            rx = self._snap_rx = _SnapshotRx(key)
        if not rx.add(msg.offset, msg.data, self.config.snapshot_max_chunks):
            self.counters["snapshot_chunks_refused"] += 1
            self._snap_rx = None
            return
        data = rx.complete()
        if data is None:
            return
        self._snap_rx = None
        try:
            snap_conf, inner = unwrap(data, self._initial)
        except ValueError:
            snap_conf, inner = None, b""
        check = self.snapshot_check
        if snap_conf is None or (check is not None and not check(msg.last_index, inner)):
            self.counters["bad_snapshots"] += 1  # not adopted, not acknowledged: the leader resends
            return
        self.counters["snapshots_installed"] += 1
        if self.term_at(msg.last_index) == msg.last_term:
            del self._log[:msg.last_index - self._snap_index]  # keep what follows (Raft §7)
            self._confs = [(i, c) for i, c in self._confs if i > msg.last_index]
        else:
            self._log = []
            self._confs = []
            self._dirty_from = min(self._dirty_from, msg.last_index + 1)
        self._snap_index, self._snap_term, self._snapshot = msg.last_index, msg.last_term, data
        self._snap_conf = snap_conf
        self._snap_dirty = True
        self.commit_index = msg.last_index
        self._conf_changed()
        self._events.append(SnapshotInstalled(msg.last_index, msg.last_term, inner))
        self._send(src, AppendReply(self.term, True, msg.last_index))

    # ---- replication: leader side -----------------------------------------------------------------
    def _on_append_reply(self, msg: AppendReply, src: str, now: int) -> None:
        if msg.term > self.term:
            self._become(FOLLOWER, msg.term, None)
            self._reset_election_timer(now)
            return
        if self._stale(msg.term) or self.role is not LEADER or src not in self._progress:
            return
        pr = self._progress[src]
        pr.last_ack = max(pr.last_ack, now)
        pr.heard = max(pr.heard, now)
        index = min(msg.index, self.last_index)
        if msg.success:
            if index > pr.match_index:
                pr.match_index = index
                pr.acked = True
            if index >= pr.next_index - 1:  # the probe (or a pipelined message) matched
                pr.probing = pr.probe_sent = False
            pr.next_index = max(pr.next_index, pr.match_index + 1)
            pr.inflight = max(0, pr.inflight - 1)
            if pr.match_index >= self._snap_index:
                pr.snapshot_at = None
            self._maybe_commit()
            if src == self.config.preferred and self._handing_over(now):
                self._timeout_now(src)
            if self.role is LEADER and self._leaving():
                self._hand_over_leaving(now)
        elif index >= pr.match_index and pr.snapshot_at is None:
            pr.next_index = max(pr.match_index + 1, min(msg.hint, index - 1) + 1)
            pr.probing, pr.probe_sent, pr.inflight = True, False, 0

    def _maybe_commit(self) -> None:
        if "commit-without-majority" in self._breaks:
            n = self.last_index
        else:
            conf = self.conf
            matches = sorted([self.last_index if v == self.node_id else
                              (self._progress[v].match_index if v in self._progress else 0) for v in conf.voters],
                             reverse=True)
            n = matches[conf.majority - 1]
        if n > self.commit_index and (self.term_at(n) == self.term or "commit-old-term" in self._breaks):
            self._commit_to(n)

    def _heartbeat(self, now: int) -> None:
        self._heartbeat_at = now + self.config.heartbeat_ns
        for p, pr in self._progress.items():
            if not pr.probing and not pr.acked and pr.next_index > pr.match_index + 1:
                pr.next_index = pr.match_index + 1  # nothing acknowledged since last time: resend
            pr.acked = pr.probe_sent = False
            pr.inflight = 0
            self._replicate(p, pr, now, heartbeat=True)

    def _replicate(self, peer: str, pr: _Progress, now: int, heartbeat: bool) -> None:
        """Send ``peer`` what it is missing, within the probe / pipeline limits; on a heartbeat
        always send at least one message."""
        cfg = self.config
        if pr.next_index <= self._snap_index:
            if pr.snapshot_at is None or now - pr.snapshot_at >= cfg.snapshot_retry_ns:
                self._send_snapshot(peer, pr, now)
            elif heartbeat:  # keep it following us (an empty append at 0 always matches)
                self._send(peer, AppendEntries(self.term, 0, 0, self.commit_index))
            return
        sent = False
        if pr.probing:
            if not pr.probe_sent:
                self._send_append(peer, pr)
                pr.probe_sent = sent = True
        else:
            while pr.next_index <= self.last_index and pr.inflight < cfg.max_inflight:
                n = self._send_append(peer, pr)
                pr.next_index += n
                pr.inflight += 1
                sent = True
        if not sent and not pr.probing and (heartbeat or pr.sent_commit < self.commit_index):
            # Nothing new to send: an empty append at an index known to match (never rejected).
            prev = pr.match_index if pr.match_index >= self._snap_index else 0
            self._send(peer, AppendEntries(self.term, prev, self.term_at(prev) or 0, self.commit_index))
            pr.sent_commit = self.commit_index

    def _send_append(self, peer: str, pr: _Progress) -> int:
        prev = pr.next_index - 1
        lo = prev - self._snap_index
        batch = tuple(self._log[lo:lo + self.config.max_batch])
        term = self.term_at(prev)
        assert term is not None
        self._send(peer, AppendEntries(self.term, prev, term, self.commit_index, batch))
        pr.sent_commit = self.commit_index
        return len(batch)

    def _send_snapshot(self, peer: str, pr: _Progress, now: int) -> None:
        self.counters["snapshots_sent"] += 1
        pr.snapshot_at = now
        data, size = self._snapshot, self.config.snapshot_chunk
        for off in range(0, max(len(data), 1), size):
            self._send(peer, InstallSnapshot(self.term, self._snap_index, self._snap_term, off,
                                             len(data), data[off:off + size]))

    # ---- log ----------------------------------------------------------------------------------------
    def _append(self, e: Entry) -> None:
        self._log.append(e)
        self._dirty_from = min(self._dirty_from, self.last_index)
        ch = self._conf_of(e.value) if e.value is not None else None
        if ch is not None:  # in force from now on, committed or not
            self._confs.append((self.last_index, self.conf.apply(ch, self.last_index)))
            self.counters["conf_changes"] += 1
            self._conf_changed()

    def _truncate_confs(self, idx: int) -> None:
        """Entries from ``idx`` on left the log: their configurations go with them."""
        if self._confs and self._confs[-1][0] >= idx:
            self._confs = [(i, c) for i, c in self._confs if i < idx]
            self.counters["conf_reverted"] += 1
            self._conf_changed()

    def _conf_changed(self) -> None:
        """Follow the configuration in force: who we talk to, and (leader) whose progress we track."""
        conf = self.conf
        # ids whose messages we take: recomputed, not accumulated (a truncated entry's id is a
        # stranger again, so a leader appending and losing adds cannot grow this without bound)
        self._known = set(self._initial.members) | conf.members | conf.removed | self._snap_conf.members
        self.members = tuple(sorted(conf.members | {self.node_id}))
        self.peers = tuple(m for m in self.members if m != self.node_id)
        self.majority = conf.majority
        if self.role is LEADER:
            for p in self.peers:
                if p not in self._progress:
                    self._progress[p] = _Progress(next_index=self.last_index + 1, last_ack=self._now)
            for p in [p for p in self._progress if p not in self.peers]:
                del self._progress[p]

    def _leaving(self) -> bool:
        """A leader whose committed configuration has no vote for it: it hands over and steps down."""
        return self.role is LEADER and self.node_id not in self.conf.voters and not self.conf_pending()

    def _hand_over_leaving(self, now: int) -> None:
        """Send ``TimeoutNow`` to the most caught-up voter once it holds our whole log, and step
        down; one that never catches up is left to an ordinary election (we step down after an
        election timeout all the same)."""
        if not self._progress:
            target = None
        else:
            target = max((pr.match_index, p) for p, pr in self._progress.items() if p in self.conf.voters)[1] \
                if self.conf.voters & set(self._progress) else None
        if self._transfer_at is None:
            self._transfer_at = now
        if target is not None and self._progress[target].match_index == self.last_index:
            self.counters["transfers_sent"] += 1
            self._send(target, TimeoutNow(self.term))
        elif now - self._transfer_at < self.config.election_timeout_min_ns:
            return
        self.counters["removed_step_downs"] += 1
        self._become(FOLLOWER, self.term, None)
        self._reset_election_timer(now)

    def _commit_to(self, n: int) -> None:
        for i in range(self.commit_index + 1, n + 1):
            e = self._log[i - self._snap_index - 1]
            self._events.append(Committed(i, e.term, e.value))
        self.commit_index = max(self.commit_index, n)

    def _send(self, dst: str, msg: Message) -> None:
        self._out.append((dst, msg))
