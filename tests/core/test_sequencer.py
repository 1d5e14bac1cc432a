"""The sequencer (Raft-style strong mode) under a deterministic network: virtual time, seeded faults.

``Cluster`` below is the whole driver: a heap of in-flight messages with random one-way delays
(so reordering), seeded loss and duplication, directed link blocks (partitions, including one-way),
crash and restart from what the node persisted (built from ``persist_delta`` + ``apply_delta``, and
checked equal to ``persistent_state()``), per-node clock offsets, and a fake codec that turns tuples
into lists as msgpack would. ``Checker`` watches every event and, every few steps, every log:

- Election Safety: at most one leader per term (across restarts too).
- Log Matching: two logs holding an entry with the same index and term are identical up to it.
- Leader Completeness: a new leader of term T holds every entry committed in a term < T.
- State Machine Safety: no two nodes commit different entries at one index; each node applies
  ``Committed`` in index order exactly once (its applied sequence is a prefix of every other's);
  snapshots agree with the committed entries they cover.
- No committed entry is ever truncated from a live log; every role change is in ``TRANSITIONS``.
- Acknowledged entries (a ``Committed`` with the submit's term, seen by the node that took the submit)
  are, after the faults heal, in every node's applied sequence at their index, exactly once.

Bounds (E = election timeout max, Q = quorum timeout, H = heartbeat, D = max one-way delay):
- A leader cut off from its majority steps down by ``Q + D`` after the last answer it got.
- Then its minority has no leader (``submit`` raises ``NotLeader(None)``: "no quorum") within
  ``Q + D + E + H`` of the cut: its followers' timers run out at most E after the leader's last
  heartbeat.
- After faults heal, a stale leader is gone by Q, every follower's timer fires by ``Q + E``, and each
  election round takes at most ``E + 4D`` (pre-vote and vote round trips); we allow 3 rounds for
  split votes, plus a client retry period R and a commit round trip: ``Q + E + 3(E + 4D) + R + 2D``
  (1.55 s with the defaults at D = 3 ms, inside the issue's 2 s failover target). A new leader's
  no-op commits only after the uncommitted suffix before it, so add ``2D`` per window of
  ``max_batch * max_inflight`` backlog entries and per probe (``liveness_bound``): with the defaults
  that is nothing; with one-entry batches, no pipelining and D = 20 ms, 100 entries cost 4 s.

Deliberate breaks (``SequencerConfig.breaks``) and what catches them (each is also a test below):
- ``vote-any-log``: its scenario (Leader Completeness), ~1/3 of random seeds, the stateful test.
- ``commit-without-majority``: its scenario and ~1/2 of random seeds (Leader Completeness), stateful.
- ``no-term-check``: its stale-leader scenario (a committed entry overwritten), the stateful test's
  ``isolate_leader_then_heal`` rule; only a few % of plain random seeds.
- ``commit-old-term``: only its scripted Figure 8 scenario (Leader Completeness); random runs never
  produced the exact interleaving in 500+ seeds.
"""

from __future__ import annotations

import heapq
import pickle
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gossipbook.core.errors import RemoteError, UsageError
from gossipbook.core.sequencer import (
    BREAKS,
    CANDIDATE,
    FOLLOWER,
    LEADER,
    MESSAGES,
    TRANSITIONS,
    AppendEntries,
    AppendReply,
    Committed,
    Entry,
    IllegalTransition,
    InstallSnapshot,
    NotLeader,
    PersistentState,
    RequestVote,
    RoleChanged,
    Sequencer,
    SequencerConfig,
    SnapshotInstalled,
    VoteReply,
    apply_delta,
)

MS = 1_000_000
SEC = 1_000 * MS
T0 = 10 * SEC
CFG = SequencerConfig()
NEVER = 1 << 62


class Violation(AssertionError):
    """An invariant broke (the message names it)."""


def norm(v: Any) -> Any:
    """Lists back to tuples: what a value looks like whether or not it went through the codec."""
    if type(v) is list or type(v) is tuple:
        return tuple([norm(x) if type(x) is list or type(x) is tuple else x for x in v])
    return v


def wire(msg: Any) -> Any:
    """A fake codec: positional fields, every tuple a list (msgpack without use_list=False)."""
    def lists(v: Any) -> Any:
        if isinstance(v, tuple | list):
            return [lists(x) for x in v]
        return v
    return type(msg)(*[lists(getattr(msg, f.name)) for f in fields(msg)])


def snap_bytes(applied: list[tuple[int, Any]]) -> bytes:
    return pickle.dumps(tuple(applied))


# ---- the checker ---------------------------------------------------------------------------------
class Checker:
    def __init__(self) -> None:
        self.chosen: dict[int, tuple[int, Any]] = {}  # index -> (term, entry) committed anywhere
        self.commit_term: dict[int, int] = {}  # index -> lowest term of a leader that committed it
        self.leaders: dict[int, set[str]] = defaultdict(set)
        self.applied: dict[str, list[tuple[int, Any]]] = {}
        self.roles: dict[str, Any] = {}
        self.pending: dict[tuple[str, int], tuple[int, Any]] = {}  # (node, index) -> (term, value)
        self.acked: dict[Any, int] = {}  # value -> index
        self.leader_terms: list[tuple[str, int]] = []

    def fail(self, what: str) -> None:
        raise Violation(what)

    def restarted(self, i: str) -> None:
        self.applied[i] = []
        self.roles[i] = FOLLOWER
        for k in [k for k in self.pending if k[0] == i]:
            del self.pending[k]  # the client behind it never hears back: never acknowledged

    def _choose(self, index: int, rec: tuple[int, Any], who: str) -> None:
        old = self.chosen.setdefault(index, rec)
        if old != rec:
            self.fail(f"State Machine Safety: index {index} committed as {old} and as {rec} (at {who})")

    def event(self, i: str, node: Sequencer, ev: Any) -> None:
        if type(ev) is Committed:
            a = self.applied[i]
            if ev.index != len(a) + 1:
                self.fail(f"{i} committed index {ev.index} after {len(a)} (order / exactly-once)")
            rec = (ev.term, norm(ev.entry))
            self._choose(ev.index, rec, i)
            a.append(rec)
            if node.role is LEADER:
                self.commit_term[ev.index] = min(self.commit_term.get(ev.index, NEVER), node.term)
            p = self.pending.pop((i, ev.index), None)
            if p is not None and p[0] == ev.term:
                if p[1] != rec[1]:
                    self.fail(f"{i}: index {ev.index} term {ev.term} holds {rec[1]}, submitted {p[1]}")
                if p[1] in self.acked:
                    self.fail(f"{p[1]} acknowledged twice")
                self.acked[p[1]] = ev.index
        elif type(ev) is SnapshotInstalled:
            state = list(pickle.loads(ev.data))
            if len(state) != ev.index or (state and state[-1][0] != ev.term):
                self.fail(f"{i}: snapshot at {ev.index}/{ev.term} does not match its contents")
            for k, rec in enumerate(state, 1):
                self._choose(k, rec, i)
            if len(state) < len(self.applied[i]):
                self.fail(f"{i}: snapshot at {ev.index} is behind what it applied ({len(self.applied[i])})")
            self.applied[i] = state
        elif type(ev) is RoleChanged:
            old = self.roles.get(i, FOLLOWER)
            if (old, ev.role) not in TRANSITIONS:
                self.fail(f"{i}: illegal role change {old} -> {ev.role}")
            self.roles[i] = ev.role
            if ev.role is LEADER:
                self.leaders[ev.term].add(i)
                self.leader_terms.append((i, ev.term))
                if len(self.leaders[ev.term]) > 1:
                    self.fail(f"Election Safety: term {ev.term} has leaders {sorted(self.leaders[ev.term])}")
                self.leader_complete(i, node)
        else:
            self.fail(f"unknown event {ev!r}")

    def leader_complete(self, i: str, node: Sequencer) -> None:
        snap = None
        for idx, rec in self.chosen.items():
            if self.commit_term.get(idx, NEVER) >= node.term:
                continue
            if idx <= node.snapshot_index:
                if snap is None:
                    snap = pickle.loads(node.persistent_state().snapshot)
                have = snap[idx - 1]
            else:
                e = node.entry(idx)
                have = None if e is None else (e.term, norm(e.value))
            if have != rec:
                self.fail(f"Leader Completeness: {i} leads term {node.term} without committed "
                          f"index {idx} {rec} (has {have})")

    def check_committed_terms(self, i: str, n: Sequencer) -> None:
        """Cheap, after every step: the committed part of the log has the chosen terms."""
        s, c = n.snapshot_index, n.commit_index
        if c > s:
            have = [e[0] for e in n.persistent_state().entries[:c - s]]
            want = [self.chosen[k][0] for k in range(s + 1, c + 1)]
            if have != want:
                self.fail(f"{i}: a committed entry in (snapshot {s}, commit {c}] was overwritten: "
                          f"terms {have} vs chosen {want}")

    def check_logs(self, nodes: dict[str, Sequencer]) -> None:
        """Log Matching between every pair; no live log lost a committed entry."""
        logs = {}
        for i, n in nodes.items():
            log = [(e.term, norm(e.value)) for e in n.persistent_state().entries]
            logs[i] = (n.snapshot_index, log)
            s = n.snapshot_index
            want = [self.chosen.get(k) for k in range(s + 1, n.commit_index + 1)]
            if log[:n.commit_index - s] != want:
                self.fail(f"{i}: its committed entries {log[:n.commit_index - s]} differ from the chosen {want}")
            if n.role is LEADER:
                self.leader_complete(i, n)
        ids = sorted(nodes)
        for x, i in enumerate(ids):
            sa, la = logs[i]
            for j in ids[x + 1:]:
                sb, lb = logs[j]
                lo = max(sa, sb) + 1
                hi = min(sa + len(la), sb + len(lb))
                top = next((k for k in range(hi, lo - 1, -1) if la[k - sa - 1][0] == lb[k - sb - 1][0]), None)
                if top is not None and la[lo - sa - 1:top - sa] != lb[lo - sb - 1:top - sb]:
                    self.fail(f"Log Matching: {i} and {j} agree on the term at {top} but differ below it")


# ---- the network driver --------------------------------------------------------------------------
class Cluster:
    """N sequencers wired through a seeded, lossy, duplicating, reordering network in virtual time."""

    def __init__(self, n: int, seed: int, config: SequencerConfig = CFG, *, loss: float = 0.0,
                 dup: float = 0.0, delay: tuple[int, int] = (MS // 10, 3 * MS), check_every: int = 25,
                 codec: bool = True, voters: int | None = None) -> None:
        """``voters``: only the first this many nodes form the initial configuration; the others
        start as learners of it (``Sequencer(learner=True)``: membership tests add them)."""
        self.ids = [f"n{k}" for k in range(n)]
        self.initial = self.ids[:voters] if voters is not None else list(self.ids)
        self.seed = seed
        self.config = config
        self.rng = random.Random(seed)
        self.loss, self.dup, self.delay = loss, dup, delay
        self.codec = codec
        self.t = T0
        self.offset = {i: self.rng.randrange(0, 100 * SEC) for i in self.ids}  # clocks differ
        self.disk = {i: PersistentState() for i in self.ids}
        self.nodes: dict[str, Sequencer] = {}
        self.up: set[str] = set()
        self.blocked: set[tuple[str, str]] = set()
        self.drop: Callable[[str, str, Any], bool] | None = None  # scripted scenarios: drop by content
        self.paused: dict[str, int] = {}  # node -> when it resumes (a stalled process: GC, SIGSTOP)
        self.q: list[tuple[int, int, str, str, Any]] = []
        self.seqno = 0
        self.steps = 0
        self.check_every = check_every
        self.checker = Checker()
        self.sent: list[tuple[str, str, Any]] = []  # every message, when record is on
        self.record = False
        self.values = 0
        for i in self.ids:
            self.start(i)

    # -- nodes --
    def now(self, i: str) -> int:
        return self.t + self.offset[i]

    def start(self, i: str) -> None:
        assert i not in self.up
        node = Sequencer(i, self.initial, random.Random(self.rng.getrandbits(64)), self.config,
                         persisted=self.disk[i], learner=i not in self.initial)
        self.nodes[i] = node
        self.up.add(i)
        self.checker.restarted(i)
        self.after(i)

    def crash(self, i: str) -> None:
        self.up.discard(i)
        self.paused.pop(i, None)
        del self.nodes[i]

    def pause(self, i: str, duration: int) -> None:
        """Stall ``i``: no timers, no input until it resumes; what was sent to it waits in its buffer."""
        self.paused[i] = self.t + duration

    def after(self, i: str) -> None:
        """What a shell does after each input: persist, report events, send the outbox."""
        node = self.nodes[i]
        self.disk[i] = apply_delta(self.disk[i], node.persist_delta())
        for ev in node.events():
            self.checker.event(i, node, ev)
        self.checker.check_committed_terms(i, node)
        for dst, msg in node.outbox():
            self.send(i, dst, msg)
        self.steps += 1
        if self.steps % self.check_every == 0:
            self.check()

    def check(self) -> None:
        live = {i: self.nodes[i] for i in self.up}
        self.checker.check_logs(live)
        for i, n in live.items():
            if self.disk[i] != n.persistent_state():
                raise Violation(f"{i}: persist_delta folded to a different state than persistent_state()")

    # -- network --
    def send(self, src: str, dst: str, msg: Any) -> None:
        if self.record:
            self.sent.append((src, dst, msg))
        if self.drop is not None and self.drop(src, dst, msg):
            return
        if self.rng.random() < self.loss:
            return
        for _ in range(2 if self.rng.random() < self.dup else 1):
            self.seqno += 1
            heapq.heappush(self.q, (self.t + self.rng.randint(*self.delay), self.seqno, src, dst, msg))

    def partition(self, *groups: set[str]) -> None:
        """Block every link between different groups (nodes in no group are cut from everyone)."""
        where = {i: g for g, members in enumerate(groups) for i in members}
        self.blocked = {(a, b) for a in self.ids for b in self.ids
                        if a != b and where.get(a, -1 - self.ids.index(a)) != where.get(b, -1 - self.ids.index(b))}

    def heal(self) -> None:
        self.blocked = set()

    def run_until(self, t_end: int, until: Callable[[], bool] | None = None) -> bool:
        """Advance virtual time to ``t_end`` (or until ``until()`` holds: then True)."""
        spin = 0
        while True:
            if until is not None and until():
                return True
            t_msg = self.q[0][0] if self.q else NEVER
            t_tick, who = min(((max(self.nodes[i].next_deadline() - self.offset[i], self.paused.get(i, 0)), i)
                               for i in self.up), default=(NEVER, ""))
            t_next = min(t_msg, t_tick)
            if t_next > t_end:
                self.t = max(self.t, t_end)
                return False
            spin = spin + 1 if t_next <= self.t else 0
            if spin > 10_000:
                raise Violation(f"timer spin: {who} keeps asking for tick at {t_tick}")
            self.t = max(self.t, t_next)
            if t_msg <= t_tick:
                _, seq, src, dst, msg = heapq.heappop(self.q)
                if dst not in self.up or (src, dst) in self.blocked:
                    continue
                if self.paused.get(dst, 0) > self.t:  # held in its socket buffer, read on resume
                    heapq.heappush(self.q, (self.paused[dst] + 1, seq, src, dst, msg))
                    continue
                self.paused.pop(dst, None)
                self.nodes[dst].receive(wire(msg) if self.codec else msg, src, self.now(dst))
                self.after(dst)
            else:
                self.paused.pop(who, None)
                self.nodes[who].tick(self.now(who))
                self.after(who)

    def run(self, dt: int, until: Callable[[], bool] | None = None) -> bool:
        return self.run_until(self.t + dt, until)

    # -- clients --
    def leader(self) -> str | None:
        """The up leader of the highest term, if any."""
        best = max((self.nodes[i].term, i) for i in self.up if self.nodes[i].role is LEADER) \
            if any(self.nodes[i].role is LEADER for i in self.up) else None
        return best[1] if best else None

    def submit(self, value: Any = None, at: str | None = None) -> tuple[str, int] | None:
        """A client submit at ``at`` (or a random up node), forwarded once to the leader hint."""
        live = sorted(i for i in self.up if i not in self.paused)
        if not live or (at is not None and at not in live):
            return None
        if value is None:
            self.values += 1
            value = ("c", self.seed, self.values)
        i = at if at is not None else self.rng.choice(live)
        for _ in range(2):
            node = self.nodes[i]
            try:
                idx = node.submit(value, self.now(i))
            except NotLeader as e:
                self.after(i)
                if e.leader_hint in self.up and e.leader_hint not in self.paused and e.leader_hint != i:
                    i = e.leader_hint
                    continue
                return None
            self.checker.pending[(i, idx)] = (node.term, value)
            self.after(i)
            return i, idx
        return None

    def commit_new_entry(self, within: int, retry: int = 20 * MS) -> int:
        """Submit fresh entries until one is acknowledged; the time it took (fails past ``within``)."""
        t0 = self.t
        while self.t - t0 <= within:
            self.values += 1
            value = ("live", self.seed, self.values)
            self.submit(value, at=self.leader() or None)
            if self.run(retry, until=lambda v=value: v in self.checker.acked):
                return self.t - t0
        raise Violation(f"liveness: nothing committed within {within / MS:.0f} ms after the heal")

    def converge(self, within: int) -> None:
        """All up nodes reach the same commit index; then every acknowledged entry is everywhere."""
        def same() -> bool:
            top = max(self.nodes[i].commit_index for i in self.up)
            return all(self.nodes[i].commit_index == top for i in self.up)
        if not self.run(within, until=same):
            raise Violation("liveness: commit indices did not converge: "
                            + str({i: self.nodes[i].commit_index for i in sorted(self.up)}))
        self.check()
        ch = self.checker
        for v, idx in ch.acked.items():
            if norm(ch.chosen.get(idx, (0, None))[1]) != v:
                raise Violation(f"acknowledged {v} at {idx} is not what was committed there")
            for i in self.up:
                a = ch.applied[i]
                if len(a) < idx or a[idx - 1][1] != v:
                    raise Violation(f"acknowledged {v} at {idx} is missing from {i}")
        for i in self.up:
            vals = [v for _, v in ch.applied[i] if v is not None]
            if len(vals) != len(set(vals)):
                raise Violation(f"{i} applied an entry twice")


def liveness_bound(cfg: SequencerConfig, max_delay: int, c: Cluster | None = None, retry: int = 20 * MS) -> int:
    """See the module header; with ``c``, plus the time to ship the backlog a new leader may hold
    (its no-op commits only after the uncommitted suffix before it): one round trip per window of
    ``max_batch * max_inflight`` entries, and one per probe (at most one per term in the suffix)."""
    e, d = cfg.election_timeout_max_ns, max_delay
    bound = cfg.quorum_timeout_ns + e + 3 * (e + 4 * d) + retry + 2 * d
    if c is not None and c.up:
        nodes = [c.nodes[i] for i in c.up]
        backlog = max(n.last_index for n in nodes) - min(n.commit_index for n in nodes)
        window = cfg.max_batch * cfg.max_inflight
        bound += 2 * d * (-(-backlog // window) + max(n.term for n in nodes) + 1)
    return bound


# ---- random fault schedules ------------------------------------------------------------------------
def chaos(c: Cluster, duration: int, rates: dict[str, float]) -> None:
    """Faults at random: crashes, restarts, partitions (also one-way), heals, compactions; and submits."""
    rng = c.rng
    end = c.t + duration
    while c.t < end:
        c.run(rng.randint(1, 40) * MS)
        r = rng.random()
        if r < rates["submit"]:
            for _ in range(rng.randint(1, 4)):
                c.submit()
        elif r < rates["submit"] + rates["fault"]:
            kind = rng.choice(["crash", "restart", "partition", "oneway", "heal", "compact", "loss", "pause"])
            down = sorted(set(c.ids) - c.up)
            if kind == "crash" and c.up:
                c.crash(rng.choice(sorted(c.up)))
            elif kind == "restart" and down:
                c.start(rng.choice(down))
            elif kind == "partition":
                side = set(rng.sample(c.ids, rng.randint(1, len(c.ids) - 1)))
                c.partition(side, set(c.ids) - side)
            elif kind == "oneway":
                a, b = rng.sample(c.ids, 2)
                c.blocked.add((a, b))
            elif kind == "heal":
                c.heal()
            elif kind == "pause" and c.up:
                c.pause(rng.choice(sorted(c.up)), rng.randint(50, 600) * MS)
            elif kind == "compact" and c.up:
                i = rng.choice(sorted(c.up))
                node, applied = c.nodes[i], c.checker.applied[i]
                if node.commit_index > node.snapshot_index:
                    k = rng.randint(node.snapshot_index + 1, node.commit_index)
                    node.compact(k, snap_bytes(applied[:k]))
                    c.after(i)
            elif kind == "loss":
                c.loss = rng.choice([0.0, 0.0, 0.05, 0.2, 0.5])


def heal_all(c: Cluster) -> None:
    c.heal()
    c.loss = c.dup = 0.0
    for i in sorted(set(c.ids) - c.up):
        c.start(i)


def simulate(seed: int, n: int, config: SequencerConfig = CFG, duration: int = 4 * SEC,
             loss: float = 0.05, dup: float = 0.05, max_delay: int = 3 * MS, fault: float = 0.15) -> Cluster:
    """Safety phase (faults), then liveness phase (healed): the whole check for one seed."""
    c = Cluster(n, seed, config, loss=loss, dup=dup, delay=(MS // 10, max_delay))
    c.run(SEC)
    chaos(c, duration, {"submit": 0.5, "fault": fault})
    heal_all(c)
    c.commit_new_entry(liveness_bound(config, max_delay, c))
    c.converge(2 * SEC)
    return c


# ---- simulation tests ------------------------------------------------------------------------------
# Each example also draws its own legal config: the rarely-taken paths (no pre-vote, a leader that
# lingers after losing its majority, one-entry batches, no pipelining, 7-byte snapshot chunks) are
# where protocol bugs hide, as FoundationDB's BUGGIFY and TigerBeetle's VOPR assume.
configs = st.builds(
    SequencerConfig, pre_vote=st.booleans(), quorum_timeout_ns=st.sampled_from([300 * MS, SEC, 3 * SEC]),
    max_batch=st.sampled_from([1, 4, 64]), max_inflight=st.sampled_from([1, 8]),
    snapshot_chunk=st.sampled_from([7, 1_100]))


@given(seed=st.integers(0, 2**32 - 1), n=st.sampled_from([3, 5]), config=st.one_of(st.just(CFG), configs),
       loss=st.sampled_from([0.0, 0.05, 0.2]), dup=st.sampled_from([0.0, 0.1]),
       max_delay=st.sampled_from([MS, 3 * MS, 20 * MS]), fault=st.sampled_from([0.15, 0.4]))
def test_safety_under_faults_then_liveness(seed: int, n: int, config: SequencerConfig, loss: float,
                                           dup: float, max_delay: int, fault: float) -> None:
    c = simulate(seed, n, config, loss=loss, dup=dup, max_delay=max_delay, fault=fault)
    assert c.checker.chosen, "nothing committed: the test would prove little"


@pytest.mark.parametrize("n", [3, 5])
def test_failover_after_leader_kill_within_2s(n: int) -> None:
    """SIGKILL the leader (crash, no goodbye); a new leader commits a new entry well within 2 s."""
    times = []
    for seed in range(8):
        c = Cluster(n, seed, delay=(MS // 20, MS // 2))  # loopback-like one-way delays
        c.run(SEC)
        c.commit_new_entry(SEC)
        c.run(c.rng.randint(0, 60) * MS)  # anywhere in the heartbeat cycle
        c.crash(c.leader())
        times.append(c.commit_new_entry(2 * SEC))
        c.converge(SEC)
    assert max(times) < 2 * SEC
    # with 150-300 ms election timeouts a failover takes one timeout plus a few round trips
    assert sorted(times)[len(times) // 2] < 400 * MS, times


@given(seed=st.integers(0, 2**32 - 1), n=st.sampled_from([3, 5]))
def test_minority_side_never_commits_and_answers_no_quorum(seed: int, n: int) -> None:
    cfg, d = CFG, 3 * MS
    c = Cluster(n, seed, delay=(MS // 10, d))
    c.run(SEC)
    c.commit_new_entry(SEC)
    old = c.leader()
    minority = {old, *c.rng.sample(sorted(set(c.ids) - {old}), n // 2 - 1)}
    c.partition(minority, set(c.ids) - minority)
    cut = c.t
    lost = [("minority", seed, 0)]
    assert c.submit(lost[0], at=old) is not None  # it does not know yet: accepted, never committed
    # The cut-off leader steps down within a quorum timeout (+ one delay) of its last answer.
    assert c.run(cfg.quorum_timeout_ns + d, until=lambda: c.nodes[old].role is not LEADER)
    assert c.t - cut <= cfg.quorum_timeout_ns + d
    # Within Q + E + H + D of the cut, every minority node answers "no quorum".
    c.run_until(cut + cfg.quorum_timeout_ns + cfg.election_timeout_max_ns + cfg.heartbeat_ns + d)
    for i in sorted(minority):
        with pytest.raises(NotLeader) as e:
            c.nodes[i].submit(("never", seed), c.now(i))
        assert e.value.leader_hint is None and "no quorum" in str(e.value)
    # Meanwhile the majority side elects a leader and commits.
    c.commit_new_entry(liveness_bound(cfg, d))
    assert c.leader() not in minority
    for k in range(1, 5):  # keep knocking on the minority side: nothing it takes may commit
        c.run(100 * MS)
        lost.append(("minority", seed, k))
        c.submit(lost[-1], at=sorted(minority)[k % len(minority)])
    c.heal()
    c.commit_new_entry(liveness_bound(cfg, d))
    c.converge(2 * SEC)
    committed = {v for _, v in c.checker.chosen.values()}
    assert not committed & set(lost)
    assert all(all(v != x for x in lost) for v in c.checker.acked)


# ---- scripted scenarios, one per deliberate break --------------------------------------------------
def scenario_vote_any_log(cfg: SequencerConfig) -> None:
    """A node that missed committed entries asks for votes: only a broken voter says yes."""
    c = Cluster(3, 11, cfg)
    c.run(SEC)
    lead = c.leader()
    a, b = sorted(set(c.ids) - {lead})
    c.partition({lead, a}, {b})
    for _ in range(5):
        c.submit(at=lead)
        c.run(20 * MS)
    c.run(100 * MS)
    assert len(c.checker.acked) == 5
    c.crash(lead)
    c.heal()
    c.drop = lambda src, dst, m: src == a and type(m) is RequestVote  # only b campaigns
    c.run(2 * SEC)
    assert c.leader() is None  # b cannot win: a refuses a log that lacks committed entries


def scenario_commit_without_majority(cfg: SequencerConfig) -> None:
    """A leader alone in its partition takes a submit: it must not commit it."""
    c = Cluster(3, 12, cfg)
    c.run(SEC)
    lead = c.leader()
    c.partition({lead}, set(c.ids) - {lead})
    c.submit(("alone",), at=lead)
    c.run(2 * SEC)  # the other two elect a leader that never saw the entry
    heal_all(c)
    c.commit_new_entry(2 * SEC)
    c.converge(2 * SEC)
    assert ("alone",) not in {v for _, v in c.checker.chosen.values()}


def scenario_no_term_check(cfg: SequencerConfig) -> None:
    """A deposed leader that still believes it leads (long quorum timeout: a legal setting) comes
    back with an entry from its old term where the new leader committed another."""
    from dataclasses import replace
    c = Cluster(3, 13, replace(cfg, quorum_timeout_ns=5 * SEC))
    c.run(SEC)
    old = c.leader()
    c.partition({old}, set(c.ids) - {old})
    c.submit(("stale",), at=old)
    k = c.nodes[old].last_index
    assert c.run(2 * SEC, until=lambda: c.leader() not in (None, old) and c.nodes[c.leader()].commit_index >= k)
    assert c.nodes[old].role is LEADER  # still believes it
    c.heal()
    c.run(SEC)
    c.commit_new_entry(2 * SEC)
    c.converge(2 * SEC)
    assert ("stale",) not in {v for _, v in c.checker.chosen.values()}


def scenario_figure8(cfg: SequencerConfig) -> None:
    """Raft paper Figure 8: an entry from an older term replicated on a majority by a later leader
    is not committed by counting; a leader with a newer-term entry at that index may overwrite it."""
    from dataclasses import replace
    c = Cluster(5, 14, replace(cfg, max_batch=1))
    for i in c.ids:
        c.crash(i)
    x, a, b = ("x",), ("a",), ("b",)
    E = Entry
    c.disk = {
        "n0": PersistentState(3, None, (E(1, x), E(2, a)), commit_index=1),  # S1: led term 2
        "n1": PersistentState(2, None, (E(1, x), E(2, a)), commit_index=1),  # S2
        "n2": PersistentState(3, "n4", (E(1, x),), commit_index=1),  # S3
        "n3": PersistentState(3, "n4", (E(1, x),), commit_index=1),  # S4
        "n4": PersistentState(3, "n4", (E(1, x), E(3, b)), commit_index=1),  # S5: led term 3
    }
    for i in ("n0", "n1", "n2", "n3"):
        c.start(i)
    # (c) S1 wins term 4 and copies (2, a) to S3 and S4; its own term-4 entry reaches nobody.
    c.drop = lambda src, dst, m: ((type(m) is RequestVote and src != "n0")
                                  or (type(m) is AppendEntries and any(e[0] == 4 for e in m.entries)
                                      and dst in c.up and c.nodes[dst].last_index >= 2))
    assert c.run(3 * SEC, until=lambda: c.leader() == "n0" and min(
        c.nodes["n0"].status()["match_index"][p] for p in ("n2", "n3")) >= 2)
    c.run(200 * MS)  # let it tell the others its commit index, if it (wrongly) advanced it
    c.crash("n0")
    # (d) S5 comes back and wins term 5 with S2, S3, S4 (its last term 3 beats their 2).
    c.start("n4")
    c.drop = lambda src, dst, m: type(m) is RequestVote and src != "n4"
    assert c.run(3 * SEC, until=lambda: c.leader() == "n4" and c.nodes["n4"].commit_index >= 3)
    assert c.checker.chosen[2] == (3, b)  # (2, a) was never committed: overwriting it was legal
    heal_all(c)
    c.drop = None
    c.converge(2 * SEC)


def scenario_two_changes_at_once(cfg: SequencerConfig) -> None:
    """Voters n0 n1 n2, caught-up learners n3 n4. The leader n0 promotes both learners; with the
    one-at-a-time rule the second promotion is refused (Refused) while the first is uncommitted.
    Appends reach only n3 and n4: with both promotions in force n0 counts 3 of 5 and commits an
    entry n1 and n2 never saw; n0 dies, and n1 + n2 (2 of their 3) elect n1, which commits another
    entry at that index (State Machine Safety). With the rule, n0 holds 4 voters, needs 3, has 2."""
    from gossipbook.core.strong_members import PROMOTE, ConfChange, Refused

    c = Cluster(5, 7, cfg, voters=3)
    assert c.run(3 * SEC, until=lambda: c.leader() is not None and c.nodes[c.leader()].commit_index >= 1)
    lead = c.leader()
    assert lead is not None
    for m in ("n3", "n4"):
        c.submit(ConfChange("learner", m, f"127.0.0.1:{9000 + int(m[1])}"), at=lead)
        assert c.run(2 * SEC, until=lambda lead=lead: not c.nodes[lead].conf_pending())
    c.submit(at=lead)
    assert c.run(2 * SEC, until=lambda: all(c.nodes[i].commit_index == c.nodes[lead].last_index for i in c.ids))
    old = [i for i in c.initial if i != lead]
    c.drop = lambda src, dst, m: src == lead and dst in old and type(m) is AppendEntries
    node = c.nodes[lead]
    for m in ("n3", "n4"):
        try:
            c.submit(ConfChange(PROMOTE, m), at=lead)
        except Refused:
            pass  # the rule: one change at a time
    c.submit(("after", 1), at=lead)
    c.run(300 * MS)
    c.crash(lead)
    c.drop = lambda src, dst, m: dst == lead
    c.partition(set(old), {"n3", "n4"})
    assert c.run(3 * SEC, until=lambda: c.leader() in old) or node.conf_pending()
    if c.leader() in old:
        c.submit(("other", 1), at=c.leader())
        c.run(500 * MS)
    c.check()


SCENARIOS = {
    "vote-any-log": scenario_vote_any_log,
    "commit-without-majority": scenario_commit_without_majority,
    "no-term-check": scenario_no_term_check,
    "commit-old-term": scenario_figure8,
    "joint-majority-skip": scenario_two_changes_at_once,
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario_holds(name: str) -> None:
    SCENARIOS[name](CFG)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_break_is_caught_by_its_scenario(name: str) -> None:
    with pytest.raises(Violation):
        SCENARIOS[name](SequencerConfig(breaks=frozenset({name})))


@pytest.mark.parametrize("name", ["vote-any-log", "commit-without-majority"])
def test_break_is_caught_by_random_simulation(name: str) -> None:
    """These two are caught by about half the random seeds; ten seeds make a miss ~1e-3 unlikely."""
    cfg = SequencerConfig(breaks=frozenset({name}))
    for seed in range(10):
        try:
            simulate(seed, 3, cfg, duration=3 * SEC)
        except Violation:
            return
    pytest.fail(f"break {name} survived 10 random simulations")


def test_breaks_are_named_and_validated() -> None:
    assert set(SCENARIOS) == BREAKS
    with pytest.raises(ValueError, match="unknown breaks"):
        SequencerConfig(breaks=frozenset({"vote-anything"}))


# ---- unit tests of single state machines ------------------------------------------------------------
IDS = ("n0", "n1", "n2")


def make(node_id: str = "n0", members: tuple[str, ...] = IDS, config: SequencerConfig = CFG,
         seed: int = 0, **persisted: Any) -> Sequencer:
    p = PersistentState(**persisted) if persisted else None
    return Sequencer(node_id, members, random.Random(seed), config, p)


def log(*terms: int) -> tuple[Entry, ...]:
    return tuple(Entry(t, ("v", i)) for i, t in enumerate(terms, 1))


def only(out: list[tuple[str, Any]], dst: str | None = None) -> Any:
    msgs = [m for d, m in out if dst is None or d == dst]
    assert len(msgs) == 1, out
    return msgs[0]


def elect(s: Sequencer, now: int = T0) -> int:
    """Drive ``s`` (3 members) to leader; returns the time reached."""
    s.tick(now)
    now = s.next_deadline()
    s.tick(now)
    for p in s.peers:
        s.receive(VoteReply(s.term + 1, True, pre=True, candidate=s.node_id), p, now)
    for p in s.peers:
        s.receive(VoteReply(s.term, True, candidate=s.node_id), p, now)
    assert s.role is LEADER
    return now


def test_config_rejects_bad_timers() -> None:
    with pytest.raises(ValueError):
        SequencerConfig(heartbeat_ns=200 * MS)
    with pytest.raises(ValueError):
        SequencerConfig(election_timeout_min_ns=400 * MS)
    with pytest.raises(ValueError):
        SequencerConfig(quorum_timeout_ns=10 * MS)
    with pytest.raises(ValueError):
        SequencerConfig(max_batch=0)


def test_transition_table_is_enforced() -> None:
    s = make()
    with pytest.raises(IllegalTransition, match="follower -> leader"):
        s._become(LEADER, 1, "n0")
    s._become(FOLLOWER, 3, None)
    with pytest.raises(IllegalTransition, match="term would go back"):
        s._become(FOLLOWER, 2, None)
    assert (FOLLOWER, LEADER) not in TRANSITIONS and (LEADER, CANDIDATE) not in TRANSITIONS


def test_single_node_leads_and_commits_at_once() -> None:
    s = make("n0", ("n0",))
    s.tick(T0)
    s.tick(s.next_deadline())
    assert s.role is LEADER and s.leader() == "n0" and s.term == 1
    assert s.submit("a", s.next_deadline()) == 2
    ev = s.events()
    assert [e for e in ev if type(e) is Committed] == [Committed(1, 1, None), Committed(2, 1, "a")]
    assert [e.role for e in ev if type(e) is RoleChanged] == [CANDIDATE, LEADER]
    assert s.outbox() == []


@pytest.mark.parametrize("cand, granted", [
    ((2, 3), True), ((2, 4), True), ((3, 1), True),  # same last term and as long or longer; newer term
    ((2, 2), False), ((1, 9), False), ((0, 0), False),  # shorter with same term; older last term
])
def test_vote_only_for_an_up_to_date_log(cand: tuple[int, int], granted: bool) -> None:
    s = make(term=2, entries=log(1, 1, 2))  # our last entry: term 2, index 3
    s.receive(RequestVote(3, cand[1], cand[0]), "n1", T0)
    assert only(s.outbox()) == VoteReply(3, granted, candidate="n1")
    assert s.term == 3 and s.voted_for == ("n1" if granted else None)


def test_one_vote_per_term_even_across_a_restart() -> None:
    s = make(term=1, entries=log(1))
    s.receive(RequestVote(2, 1, 1), "n1", T0)
    assert only(s.outbox()) == VoteReply(2, True, candidate="n1")
    s = Sequencer("n0", IDS, random.Random(1), CFG, s.persistent_state())
    s.receive(RequestVote(2, 5, 1), "n2", T0)
    assert only(s.outbox()) == VoteReply(2, False, candidate="n2")
    s.receive(RequestVote(2, 1, 1), "n1", T0)  # a retransmitted request from the same candidate
    assert only(s.outbox()) == VoteReply(2, True, candidate="n1")


def test_a_granted_vote_replayed_to_another_candidate_is_not_counted() -> None:
    """n1 granted its term-2 vote to n2; the frame replayed to n0 (also a candidate in term 2: frames
    are authenticated but not bound to a destination) must not give n0 a second majority."""
    s = make("n0", ("n0", "n1", "n2"))
    s.tick(T0)
    now = s.next_deadline()
    s.tick(now)
    s.receive(VoteReply(s.term + 1, True, pre=True, candidate="n0"), "n1", now)
    assert s.role is CANDIDATE
    s.receive(VoteReply(s.term, True, candidate="n2"), "n1", now)  # n1's vote for n2, replayed
    assert s.role is CANDIDATE and s.counters["votes_misaddressed"] == 1
    s.receive(VoteReply(s.term, True, candidate="n0"), "n1", now)
    assert s.role is LEADER


def test_pre_vote_changes_no_term_and_no_vote() -> None:
    s = make(term=4, entries=log(1, 4))
    s.receive(RequestVote(5, 2, 4, pre=True), "n1", T0)
    assert only(s.outbox()) == VoteReply(5, True, pre=True, candidate="n1")
    s.receive(RequestVote(4, 2, 4, pre=True), "n1", T0)  # not a future term
    assert only(s.outbox()) == VoteReply(4, False, pre=True, candidate="n1")
    assert (s.term, s.voted_for, s.role) == (4, None, FOLLOWER)


def test_a_node_that_hears_its_leader_ignores_votes() -> None:
    s = make(term=2, entries=log(1))
    s.receive(AppendEntries(2, 1, 1, 1), "n1", T0)
    s.outbox()
    s.receive(RequestVote(5, 9, 2), "n2", T0 + 10 * MS)
    assert only(s.outbox()) == VoteReply(2, False, candidate="n2") and s.term == 2
    s.receive(RequestVote(5, 9, 2), "n2", T0 + CFG.election_timeout_min_ns)
    assert only(s.outbox()) == VoteReply(5, True, candidate="n2") and s.term == 5


def test_append_consistency_check_and_hint() -> None:
    s = make(term=2, entries=log(1, 1, 2))
    s.receive(AppendEntries(3, 3, 3, 0), "n1", T0)  # we hold (3, term 2), not term 3
    assert only(s.outbox()) == AppendReply(3, False, 3, 2)
    s.receive(AppendEntries(3, 7, 3, 0), "n1", T0)  # beyond our log
    assert only(s.outbox()) == AppendReply(3, False, 7, 3)
    s.receive(AppendEntries(3, 3, 2, 0, (Entry(3, "d"),)), "n1", T0)
    assert only(s.outbox()) == AppendReply(3, True, 4) and s.last_index == 4


def test_append_truncates_only_on_conflict_and_commits_only_what_it_verified() -> None:
    s = make(term=2, entries=log(1, 1, 2, 2))
    # a delayed duplicate of an old append: matching entries, nothing may be cut
    s.receive(AppendEntries(2, 1, 1, 0, (Entry(1, ("v", 2)),)), "n1", T0)
    assert only(s.outbox()) == AppendReply(2, True, 2) and s.last_index == 4
    # commit: min(leader commit, last index this message verified), not our last index
    s.receive(AppendEntries(2, 1, 1, 4, (Entry(1, ("v", 2)),)), "n1", T0)
    s.outbox()
    assert s.commit_index == 2
    assert [e.index for e in s.events() if type(e) is Committed] == [1, 2]
    # a conflict cuts the suffix from there
    s.receive(AppendEntries(3, 2, 1, 2, (Entry(3, "new"),)), "n1", T0)
    assert only(s.outbox()) == AppendReply(3, True, 3)
    assert s.last_index == 3 and s.entry(3) == Entry(3, "new") and s.counters["truncated"] == 1


def test_stale_term_messages_are_answered_and_ignored() -> None:
    s = make(term=5, entries=log(1))
    before = s.persistent_state()
    s.receive(AppendEntries(4, 1, 1, 1, (Entry(4, "x"),)), "n1", T0)
    assert only(s.outbox()) == AppendReply(5, False, 0)
    s.receive(RequestVote(4, 9, 4), "n2", T0)
    assert only(s.outbox()) == VoteReply(5, False, candidate="n2")
    assert s.persistent_state() == before and s.leader() is None


def test_leader_commits_old_term_entries_only_through_a_current_one() -> None:
    """Raft §5.4.2: a majority holding an entry of an older term does not commit it by itself."""
    s = make(term=2, entries=log(1, 2))
    now = elect(s)
    assert s.term == 3 and s.entry(3) == Entry(3, None)  # the new leader's no-op
    s.outbox()
    s.receive(AppendReply(3, True, 2), "n1", now)
    assert s.commit_index == 0
    s.receive(AppendReply(3, True, 3), "n1", now)
    assert s.commit_index == 3
    assert [(e.index, e.term) for e in s.events() if type(e) is Committed] == [(1, 1), (2, 2), (3, 3)]


def test_leader_without_a_majority_steps_down_and_says_no_quorum() -> None:
    s = make()
    now = elect(s)
    s.events()
    assert s.next_deadline() <= now + CFG.heartbeat_ns
    s.tick(now + CFG.quorum_timeout_ns - 1)
    assert s.role is LEADER
    s.tick(now + CFG.quorum_timeout_ns)
    assert s.role is FOLLOWER and s.leader() is None
    assert s.events() == [RoleChanged(FOLLOWER, 1, None)]
    with pytest.raises(NotLeader, match="no quorum"):
        s.submit("x", now + CFG.quorum_timeout_ns)


def test_follower_submit_names_the_leader() -> None:
    s = make(term=1)
    s.receive(AppendEntries(1, 0, 0, 0), "n2", T0)
    with pytest.raises(NotLeader) as e:
        s.submit("x", T0)
    assert e.value.leader_hint == "n2" and "n2" in str(e.value) and isinstance(e.value, UsageError)
    with pytest.raises(ValueError):
        s.submit(None, T0)


def test_batches_and_pipeline_are_capped() -> None:
    cfg = SequencerConfig(max_batch=16, max_inflight=3)
    s = make(config=cfg)
    now = elect(s)
    s.outbox()
    for p in s.peers:
        s.receive(AppendReply(1, True, 1), p, now)  # both followers match the no-op
    s.outbox()
    for k in range(200):
        s.submit(k, now)
    out = s.outbox()
    for p in s.peers:
        batches = [m.entries for d, m in out if d == p]
        assert len(batches) == 3 and all(len(b) == 16 for b in batches)
        assert [e.value for b in batches for e in b] == list(range(48))
    s.receive(AppendReply(1, True, 17), "n1", now)
    more = [m for d, m in s.outbox() if d == "n1"]
    assert len(more) == 1 and more[0].prev_index == 49 and len(more[0].entries) == 16
    assert s.status()["match_index"] == {"n1": 17, "n2": 1} and s.commit_index == 17


def test_malformed_or_foreign_messages_raise_and_change_nothing() -> None:
    s = make(term=2, entries=log(1, 2))
    s.tick(T0)
    before = s.persistent_state()
    bad = [
        (AppendEntries(-1, 0, 0, 0), "n1"),
        (AppendEntries(3, 0, 1, 0), "n1"),  # a term for index 0
        (AppendEntries(3, 2, 2, 0, ((4, "x"),)), "n1"),  # an entry from a future term
        (AppendEntries(3, 2, 2, 0, ((3, "x"), (2, "y"))), "n1"),  # terms going down
        (AppendEntries(3, 2, 2, 0, ("junk",)), "n1"),
        (AppendEntries(3, 2, 2, 0, None), "n1"),
        (RequestVote(3, 1, 4), "n1"),
        (RequestVote(3, 1, 1, pre=1), "n1"),
        (VoteReply(3, "yes"), "n1"),
        (AppendReply(3, True, True), "n1"),
        (InstallSnapshot(3, 5, 3, 4, 5, b"xx"), "n1"),
        (AppendEntries(3, 2, 2, 0), "stranger"),
        ("not a message", "n1"),
    ]
    for msg, src in bad:
        with pytest.raises(RemoteError):
            s.receive(msg, src, T0)
    assert s.persistent_state() == before and s.outbox() == [] and s.events() == []


def test_restart_replays_snapshot_then_committed_entries() -> None:
    s = make(term=3, voted_for="n1", entries=log(2, 3, 3), snapshot_index=3, snapshot_term=2,
             snapshot=b"state@3", commit_index=5)
    assert s.events() == [SnapshotInstalled(3, 2, b"state@3"), Committed(4, 2, ("v", 1)),
                          Committed(5, 3, ("v", 2))]
    assert (s.last_index, s.commit_index, s.term, s.voted_for, s.role) == (6, 5, 3, "n1", FOLLOWER)


def test_compact_keeps_the_suffix_and_refuses_uncommitted() -> None:
    s = make("n0", ("n0",))
    s.tick(T0)
    now = s.next_deadline()
    s.tick(now)
    for k in range(5):
        s.submit(k, now)
    with pytest.raises(ValueError):
        s.compact(7, b"")
    s.compact(4, b"upto4")
    assert s.snapshot_index == 4 and s.last_index == 6 and s.entry(5) == Entry(1, 3)
    s.compact(2, b"older")  # older than what we hold: nothing happens
    st_ = s.persistent_state()
    assert (st_.snapshot_index, st_.snapshot, len(st_.entries)) == (4, b"upto4", 2)


def test_persist_delta_folds_to_the_full_state() -> None:
    c = Cluster(3, 5, SequencerConfig(max_batch=3))
    c.run(SEC)
    for _ in range(4):
        chaos(c, 500 * MS, {"submit": 0.6, "fault": 0.3})
        c.check()  # compares every node's folded deltas with persistent_state()


def test_lagging_follower_catches_up_from_the_log() -> None:
    c = Cluster(3, 6, SequencerConfig(max_batch=8), loss=0.1, dup=0.1)
    c.run(SEC)
    lag = sorted(set(c.ids) - {c.leader()})[0]
    c.crash(lag)
    for _ in range(100):
        c.submit()
        c.run(5 * MS)
    c.start(lag)
    c.loss = 0.0
    c.commit_new_entry(SEC)
    c.converge(2 * SEC)
    assert c.nodes[lag].counters["snapshots_installed"] == 0
    assert len(c.checker.applied[lag]) == len(c.checker.chosen) > 100


def test_lagging_follower_catches_up_from_a_snapshot_in_chunks() -> None:
    cfg = SequencerConfig(snapshot_chunk=64, max_batch=8)
    c = Cluster(3, 7, cfg, loss=0.1, dup=0.1, delay=(MS // 10, 5 * MS))
    c.run(SEC)
    lag = sorted(set(c.ids) - {c.leader()})[0]
    c.crash(lag)
    for _ in range(60):
        c.submit()
        c.run(5 * MS)
    c.run(200 * MS)
    for i in sorted(c.up):  # everyone else folds and compacts its committed prefix
        node = c.nodes[i]
        node.compact(node.commit_index, snap_bytes(c.checker.applied[i][:node.commit_index]))
        c.after(i)
    c.start(lag)
    c.commit_new_entry(SEC)
    c.converge(2 * SEC)
    node = c.nodes[lag]
    assert node.counters["snapshots_installed"] == 1 and node.snapshot_index > 60
    assert len(pickle.loads(node.persistent_state().snapshot)) == node.snapshot_index
    assert c.nodes[c.leader()].counters["snapshots_sent"] >= 1
    # ... and a restart of it comes back from its own snapshot
    c.crash(lag)
    c.start(lag)
    c.converge(SEC)


def test_status_reports_what_the_cli_shows() -> None:
    c = Cluster(3, 8)
    c.run(SEC)
    c.commit_new_entry(SEC)
    c.run(200 * MS)
    lead = c.nodes[c.leader()]
    st_ = lead.status()
    assert st_["role"] == "leader" and st_["leader"] == lead.node_id and st_["term"] == lead.term
    assert st_["commit_index"] == st_["last_index"] == 2
    assert st_["match_index"] == {p: 2 for p in lead.peers}
    f = c.nodes[lead.peers[0]].status()
    assert f["role"] == "follower" and f["leader"] == lead.node_id and f["match_index"] == {}


def test_messages_are_flat_positional_records() -> None:
    assert MESSAGES == (RequestVote, VoteReply, AppendEntries, AppendReply, InstallSnapshot)
    for m in MESSAGES:
        assert m.__dataclass_params__.frozen and hasattr(m, "__slots__")
    assert [f.name for f in fields(AppendEntries)] == ["term", "prev_index", "prev_term", "commit", "entries"]
