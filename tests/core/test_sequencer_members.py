"""Strong-mode membership in the sequencer: changes through the log, one server at a time, learners.

Unit tests pin each rule (a change in force when appended, reverted when truncated, carried by a
snapshot and a restart; a second change refused while one is uncommitted; a learner neither votes
nor counts; a leader that removes itself hands over). ``MembersCluster`` is the hypothesis state
machine: ``test_sequencer``'s seeded network and ``Checker`` (one leader per term, committed logs
prefixes of each other, Log Matching, Leader Completeness) with configuration changes as rules among
crashes, partitions, pauses and compactions, plus two checks of its own after every step:

- *a learner never counts*: when a leader commits an entry of its term, a majority of the voters
  in force at that leader hold it on disk (learners, removed ids and strangers are not looked at);
- *one change at a time*: no log holds two configuration entries above its commit index.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from gossipbook.core.errors import RemoteError
from gossipbook.core.sequencer import (
    FOLLOWER,
    LEADER,
    AppendEntries,
    AppendReply,
    Committed,
    Entry,
    NotLeader,
    PersistentState,
    RequestVote,
    Sequencer,
    SequencerConfig,
    TimeoutNow,
    VoteReply,
    apply_delta,
)
from gossipbook.core.strong_members import LEARNER, MAGIC, PROMOTE, REMOVE, Conf, ConfChange, Refused, unwrap

from .test_sequencer import MS, SEC, T0, Checker, Cluster, Violation, heal_all, liveness_bound, snap_bytes

MAX_DELAY = 3 * MS
CFG = SequencerConfig()
T1 = T0 + CFG.election_timeout_max_ns + MS  # just after ``lead`` elected it (its quorum is fresh)


def addr(m: str) -> str:
    return f"127.0.0.1:{9000 + int(m[1:])}"


def lead(members: tuple[str, ...] = ("n0",), me: str = "n0", **kw: Any) -> Sequencer:
    """A sequencer that leads at T0 (alone, or by the votes we hand it) with its no-op committed."""
    s = Sequencer(me, members, random.Random(0), CFG, **kw)
    s.tick(T0)
    s.tick(T0 + CFG.election_timeout_max_ns)
    for p in s.peers:
        if s.role is not LEADER:
            for _dst, m in s.outbox():
                if type(m) is RequestVote:
                    s.receive(VoteReply(m.term, True, m.pre, me), p, T0 + CFG.election_timeout_max_ns)
    assert s.role is LEADER
    for p in s.peers:
        s.receive(AppendReply(s.term, True, s.last_index), p, T0 + CFG.election_timeout_max_ns)
    s.outbox()
    s.events()
    return s


# ---- unit tests -----------------------------------------------------------------------------------
def test_a_change_is_in_force_when_appended_and_counts_only_voters() -> None:
    s = lead(("n0", "n1", "n2"))
    t = T1
    assert s.commit_index == 1 and s.conf.voters == {"n0", "n1", "n2"}
    i = s.submit(ConfChange(LEARNER, "n3", addr("n3")), t)
    assert s.conf.learners == {"n3"} and s.conf.index == i and s.conf_pending()  # before it commits
    assert "n3" in s.peers and s.status()["conf"]["roles"]["n3"] == "learner"
    s.receive(AppendReply(s.term, True, i), "n3", t)  # a learner's ack commits nothing
    assert s.commit_index == 1
    s.receive(AppendReply(s.term, True, i), "n1", t)
    assert s.commit_index == i and not s.conf_pending()
    j = s.submit(ConfChange(PROMOTE, "n3"), t)
    assert s.conf.voters == {"n0", "n1", "n2", "n3"} and s.majority == 3
    s.receive(AppendReply(s.term, True, j), "n1", t)
    assert s.commit_index == i  # 2 of 4 voters: not a majority of the configuration in force
    s.receive(AppendReply(s.term, True, j), "n3", t)
    assert s.commit_index == j and s.status()["conf"]["epoch"] == 2


def test_a_second_change_is_refused_while_one_is_uncommitted() -> None:
    s = lead(("n0", "n1", "n2"))
    t = T1
    s.submit(ConfChange(LEARNER, "n3", addr("n3")), t)
    with pytest.raises(Refused, match="already in flight") as e:
        s.submit(ConfChange(LEARNER, "n4", addr("n4")), t)
    assert e.value.transient and s.counters["conf_refused"] == 1 and s.conf.learners == {"n3"}
    with pytest.raises(Refused, match="already a learner"):
        s.receive(AppendReply(s.term, True, s.last_index), "n1", t)
        s.submit(ConfChange(LEARNER, "n3", addr("n3")), t)
    with pytest.raises(Refused, match="not a learner"):
        s.submit(ConfChange(PROMOTE, "n1"), t)


def test_a_leader_changes_nothing_before_it_commits_in_its_term() -> None:
    s = Sequencer("n0", ("n0", "n1", "n2"), random.Random(0), CFG)
    s.tick(T0)
    s.tick(T0 + CFG.election_timeout_max_ns)
    for _dst, m in s.outbox():
        s.receive(VoteReply(m.term, True, m.pre, "n0"), "n1", T0 + CFG.election_timeout_max_ns)
    for _dst, m in s.outbox():
        if type(m) is RequestVote:
            s.receive(VoteReply(m.term, True, False, "n0"), "n1", T0 + CFG.election_timeout_max_ns)
    assert s.role is LEADER and s.commit_index == 0
    with pytest.raises(Refused, match="not committed an entry of its term"):
        s.submit(ConfChange(REMOVE, "n2"), T1)
    assert s.conf.voters == {"n0", "n1", "n2"}


def test_truncating_an_uncommitted_change_reverts_it() -> None:
    f = Sequencer("n1", ("n0", "n1", "n2"), random.Random(0), CFG)
    f.receive(AppendEntries(1, 0, 0, 0, (Entry(1, None), Entry(1, ConfChange(LEARNER, "n3", addr("n3"))))), "n0", T0)
    assert f.conf.learners == {"n3"} and "n3" in f.peers
    f.receive(AppendEntries(2, 1, 1, 1, (Entry(2, None),)), "n2", T0 + SEC)  # a new leader's entry at 2
    assert f.conf.learners == frozenset() and f.conf.epoch == 0 and f.counters["conf_reverted"] == 1


def test_a_learner_never_campaigns_and_a_voter_ignores_its_votes() -> None:
    ln = Sequencer("n3", ("n0", "n1", "n2"), random.Random(0), CFG, learner=True)
    assert ln.conf.learners == {"n3"} and not ln.is_voter()
    for k in range(1, 6):
        ln.tick(T0 + k * SEC)
    assert ln.counters["elections"] == ln.counters["pre_votes"] == 0 and ln.outbox() == []
    c = Sequencer("n0", ("n0", "n1", "n2"), random.Random(0), CFG, admit=lambda _src: True)
    c.tick(T0)
    c.tick(T0 + CFG.election_timeout_max_ns)
    for _dst, m in c.outbox():
        if type(m) is RequestVote and m.pre:
            c.receive(VoteReply(m.term, True, True, "n0"), "n3", T0 + SEC)  # a learner's pre-vote
    assert c.counters["elections"] == 0  # 1 of 3 voters: no real election


def test_snapshot_and_restart_carry_the_configuration() -> None:
    s = lead(("n0",))
    t = T1
    s.submit(ConfChange(LEARNER, "n1", addr("n1")), t)
    s.receive(AppendReply(s.term, True, s.last_index), "n1", t)
    s.submit(("x",), t)
    s.compact(s.commit_index, b"state")
    raw = s.persistent_state().snapshot
    assert raw.startswith(MAGIC) and unwrap(raw, Conf(frozenset({"n0"})))[1] == b"state"
    r = Sequencer("n0", ("n0",), random.Random(1), CFG, persisted=s.persistent_state())
    assert r.conf == s.conf and r.conf.learners == {"n1"}
    ev = r.events()
    assert ev[0].data == b"state"  # the caller sees its own bytes, never the wrapper
    # a follower that installs it takes the configuration with it
    f = Sequencer("n1", ("n0",), random.Random(2), CFG, learner=True)
    for _dst, m in s.outbox():
        if type(m).__name__ == "InstallSnapshot":
            f.receive(m, "n0", t)
    assert f.conf == s.conf_at(f.snapshot_index) and f.snapshot_index == s.snapshot_index


def test_a_bad_configuration_in_a_snapshot_is_refused() -> None:
    with pytest.raises(ValueError):
        Sequencer("n0", ("n0",), random.Random(0), CFG,
                  persisted=PersistentState(1, None, (), 3, 1, MAGIC + b"\x92\x91\xc0\xc4\x00"))
    with pytest.raises(ValueError):
        Conf.from_wire([["n0"], ["n0"], [], [], 1, 1])  # an id twice
    with pytest.raises(ValueError):
        Conf.from_wire([[], [], [], [], 1, 1])  # no voter
    with pytest.raises(ValueError):
        Conf.from_wire([["n0"], [], [], [], 1 << 63, 1])


def test_messages_from_strangers_raise_unless_admitted() -> None:
    s = Sequencer("n1", ("n0", "n1", "n2"), random.Random(0), CFG)
    with pytest.raises(RemoteError):
        s.receive(AppendEntries(1, 0, 0, 0), "n9", T0)
    a = Sequencer("n1", ("n0", "n1", "n2"), random.Random(0), CFG, admit=lambda src: src == "n9")
    a.receive(AppendEntries(1, 0, 0, 0), "n9", T0)  # a leader added after we fell behind
    assert a.leader() == "n9"


def test_a_leader_that_removes_itself_hands_over_after_the_commit() -> None:
    s = lead(("n0", "n1", "n2"))
    t = T1
    i = s.submit(ConfChange(REMOVE, "n0"), t)
    assert s.role is LEADER and s.status()["conf"]["roles"]["n0"] == "leaving"
    s.receive(AppendReply(s.term, True, i), "n1", t)
    assert s.commit_index == i - 1  # it no longer counts itself: 1 of the 2 voters left
    s.receive(AppendReply(s.term, True, i), "n2", t)
    assert s.commit_index == i
    with pytest.raises(NotLeader):
        s.submit(("late",), t)  # committed: it takes nothing more
    sent = s.outbox()
    assert ("n1", TimeoutNow(s.term)) in sent or ("n2", TimeoutNow(s.term)) in sent
    assert s.role is FOLLOWER and s.counters["removed_step_downs"] == 1
    assert s.status()["conf"]["roles"]["n0"] == "removed"
    before = dict(s.counters)
    for k in range(1, 5):
        s.tick(t + k * SEC)
    assert s.role is FOLLOWER and s.counters["elections"] == before["elections"]  # no vote: never campaigns
    assert s.counters["pre_votes"] == before["pre_votes"]


def test_the_last_voter_cannot_be_removed() -> None:
    s = lead(("n0",))
    with pytest.raises(Refused, match="last voter"):
        s.submit(ConfChange(REMOVE, "n0"), T0 + SEC)


# ---- the state machine ----------------------------------------------------------------------------
class _Unwrapped:
    """What ``Checker.leader_complete`` reads of a node: its snapshot without the configuration."""

    def __init__(self, node: Sequencer) -> None:
        self.node = node

    def __getattr__(self, name: str) -> Any:
        return getattr(self.node, name)

    def persistent_state(self) -> PersistentState:
        p = self.node.persistent_state()
        return PersistentState(p.term, p.voted_for, p.entries, p.snapshot_index, p.snapshot_term,
                               unwrap(p.snapshot, self.node.conf_at(p.snapshot_index))[1], p.commit_index)


class MembersChecker(Checker):
    def leader_complete(self, i: str, node: Sequencer) -> None:
        super().leader_complete(i, _Unwrapped(node))  # type: ignore[arg-type]


class Members(Cluster):
    """``Cluster`` with n0-n2 voting at first and n3, n4 idle learners-to-be; every node admits
    every id (the shell authenticates peers), and two membership checks after every step."""

    def __init__(self, seed: int, cfg: SequencerConfig) -> None:
        self.refused = 0
        super().__init__(5, seed, cfg, delay=(MS // 10, MAX_DELAY), voters=3)
        self.checker.__class__ = MembersChecker

    def start(self, i: str) -> None:
        assert i not in self.up
        self.nodes[i] = Sequencer(i, self.initial, random.Random(self.rng.getrandbits(64)), self.config,
                                  persisted=self.disk[i], learner=i not in self.initial, admit=lambda _s: True)
        self.up.add(i)
        self.checker.restarted(i)
        self.after(i)

    def after(self, i: str) -> None:
        node = self.nodes[i]
        self.disk[i] = apply_delta(self.disk[i], node.persist_delta())
        evs = node.events()
        for ev in evs:
            if type(ev) is Committed and node.role is LEADER and ev.term == node.term:
                self.check_counted(i, node, ev.index, ev.term)
            self.checker.event(i, node, ev)
        self.checker.check_committed_terms(i, node)
        pending = [k for k, (_t, v) in enumerate(self.disk[i].entries, self.disk[i].snapshot_index + 1)
                   if type(v) is ConfChange and k > node.commit_index]
        if len(pending) > 1:
            raise Violation(f"{i}: configuration entries {pending} all above its commit index {node.commit_index}")
        for dst, msg in node.outbox():
            self.send(i, dst, msg)
        self.steps += 1
        if self.steps % self.check_every == 0:
            self.check()

    def check_counted(self, i: str, node: Sequencer, index: int, term: int) -> None:
        """A learner never counts: a majority of the voters in force at the leader hold the entry."""
        conf = node.conf
        held = [v for v in sorted(conf.voters) if v == i or self.holds(v, index, term)]
        if len(held) < conf.majority:
            raise Violation(f"{i} committed {index}/{term} held by voters {held} of {sorted(conf.voters)}")

    def holds(self, v: str, index: int, term: int) -> bool:
        d = self.disk[v]
        if index <= d.snapshot_index:
            return True
        k = index - d.snapshot_index - 1
        return k < len(d.entries) and d.entries[k][0] == term

    def converge(self, within: int) -> None:
        """``Cluster.converge`` over the members of the leader's configuration: a removed node, or
        one whose add was truncated, hears nothing more. A leader that removed itself steps down
        right after its commit, so the members learn that commit index from the next leader: wait
        for one that has reached every up node's commit index first."""
        up = self.up

        def settled() -> bool:
            ld = self.leader()
            if ld is None:
                return False
            n = self.nodes[ld]
            top = max(self.nodes[i].commit_index for i in up)
            return n.commit_index >= top and all(self.nodes[i].commit_index == n.commit_index
                                                 for i in up & n.conf.members)
        self.run(within, until=settled)
        ld = self.leader()
        self.up = up & self.nodes[ld].conf.members | {ld} if ld is not None else up
        try:
            super().converge(within)
        finally:
            self.up = up


class MembersCluster(RuleBasedStateMachine):
    c: Members

    @initialize(seed=st.integers(0, 2**32 - 1), max_batch=st.sampled_from([2, 64]))
    def boot(self, seed: int, max_batch: int) -> None:
        self.c = Members(seed, SequencerConfig(max_batch=max_batch, snapshot_chunk=32))
        self.c.run(SEC)

    def node(self, k: int) -> str:
        return self.c.ids[k % len(self.c.ids)]

    @rule(kind=st.sampled_from([LEARNER, PROMOTE, REMOVE]), k=st.integers(0, 4))
    def change(self, kind: str, k: int) -> None:
        c, m = self.c, self.node(k)
        at = c.leader()
        if at is None or at in c.paused:
            return
        try:
            c.nodes[at].submit(ConfChange(kind, m, addr(m) if kind == LEARNER else ""), c.now(at))
        except (Refused, NotLeader):
            c.refused += 1
        c.after(at)

    @rule(ms=st.integers(1, 400))
    def wait(self, ms: int) -> None:
        self.c.run(ms * MS)

    @rule(count=st.integers(1, 4))
    def submit(self, count: int) -> None:
        for _ in range(count):
            self.c.submit()
            self.c.run(MS)

    @rule(k=st.integers(0, 4))
    def crash(self, k: int) -> None:
        if self.node(k) in self.c.up:
            self.c.crash(self.node(k))

    @rule(k=st.integers(0, 4))
    def restart(self, k: int) -> None:
        if self.node(k) not in self.c.up:
            self.c.start(self.node(k))

    @rule(side=st.sets(st.integers(0, 4), min_size=1, max_size=2))
    def partition(self, side: set[int]) -> None:
        a = {self.node(k) for k in side}
        self.c.partition(a, set(self.c.ids) - a)

    @rule()
    def heal(self) -> None:
        self.c.heal()

    @rule(k=st.integers(0, 4), ms=st.integers(20, 700))
    def pause(self, k: int, ms: int) -> None:
        if self.node(k) in self.c.up:
            self.c.pause(self.node(k), ms * MS)

    @rule(loss=st.sampled_from([0.0, 0.1, 0.3]))
    def network(self, loss: float) -> None:
        self.c.loss = loss

    @rule(k=st.integers(0, 4), frac=st.floats(0, 1))
    def compact(self, k: int, frac: float) -> None:
        i = self.node(k)
        if i not in self.c.up:
            return
        n = self.c.nodes[i]
        upto = n.snapshot_index + int(frac * (n.commit_index - n.snapshot_index))
        if upto > n.snapshot_index:
            n.compact(upto, snap_bytes(self.c.checker.applied[i][:upto]))
            self.c.after(i)

    @rule()
    def heal_and_make_progress(self) -> None:
        heal_all(self.c)
        self.c.commit_new_entry(liveness_bound(self.c.config, MAX_DELAY, self.c))
        self.c.converge(2 * SEC)

    @invariant()
    def logs_agree(self) -> None:
        if hasattr(self, "c"):
            self.c.check()

    def teardown(self) -> None:
        if hasattr(self, "c"):
            self.heal_and_make_progress()


TestMembersCluster = MembersCluster.TestCase
TestMembersCluster.settings = settings(TestMembersCluster.settings, stateful_step_count=30, deadline=None)
