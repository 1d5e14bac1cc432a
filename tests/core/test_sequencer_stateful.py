"""The sequencer cluster as a hypothesis state machine: hypothesis picks the faults, one at a time.

Where ``test_sequencer.py`` draws a seed and lets a random schedule run, here every crash, restart,
partition, one-way cut, pause, compaction, loss rate and submit is a rule, so a failure shrinks to the
shortest sequence of faults that breaks an invariant. The ``Checker`` of ``test_sequencer`` watches
every event as it happens; ``heal_and_make_progress`` (a rule, and again at teardown) is the liveness
half: once the faults are gone a leader commits a new entry within ``liveness_bound`` and every
acknowledged entry is on every node.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from gossipbook.core.sequencer import SequencerConfig

from .test_sequencer import MS, SEC, Cluster, heal_all, liveness_bound, snap_bytes

MAX_DELAY = 3 * MS


class SequencerCluster(RuleBasedStateMachine):
    c: Cluster

    @initialize(n=st.sampled_from([3, 5]), seed=st.integers(0, 2**32 - 1), pre_vote=st.booleans(),
                max_batch=st.sampled_from([2, 64]), quorum_timeout=st.sampled_from([300 * MS, 3 * SEC]))
    def boot(self, n: int, seed: int, pre_vote: bool, max_batch: int, quorum_timeout: int) -> None:
        # a 3 s quorum timeout is legal and lets a deposed leader linger: stale-term traffic
        cfg = SequencerConfig(pre_vote=pre_vote, max_batch=max_batch, snapshot_chunk=32,
                              quorum_timeout_ns=quorum_timeout)
        self.c = Cluster(n, seed, cfg, delay=(MS // 10, MAX_DELAY))
        self.c.run(SEC)

    def node(self, k: int) -> str:
        return self.c.ids[k % len(self.c.ids)]

    @rule(ms=st.integers(1, 400))
    def wait(self, ms: int) -> None:
        self.c.run(ms * MS)

    @rule(count=st.integers(1, 6), k=st.integers(0, 4), forward=st.booleans())
    def submit(self, count: int, k: int, forward: bool) -> None:
        for _ in range(count):
            self.c.submit(at=None if forward else self.node(k))
            self.c.run(MS)

    @rule(k=st.integers(0, 4))
    def crash(self, k: int) -> None:
        i = self.node(k)
        if i in self.c.up:
            self.c.crash(i)

    @rule(k=st.integers(0, 4))
    def restart(self, k: int) -> None:
        i = self.node(k)
        if i not in self.c.up:
            self.c.start(i)

    @rule(side=st.sets(st.integers(0, 4), min_size=1, max_size=2))
    def partition(self, side: set[int]) -> None:
        a = {self.node(k) for k in side}
        self.c.partition(a, set(self.c.ids) - a)

    @rule(a=st.integers(0, 4), b=st.integers(0, 4))
    def cut_one_way(self, a: int, b: int) -> None:
        if self.node(a) != self.node(b):
            self.c.blocked.add((self.node(a), self.node(b)))

    @rule()
    def heal(self) -> None:
        self.c.heal()

    @rule(k=st.integers(0, 4), ms=st.integers(20, 700))
    def pause(self, k: int, ms: int) -> None:
        if self.node(k) in self.c.up:
            self.c.pause(self.node(k), ms * MS)

    @rule(loss=st.sampled_from([0.0, 0.1, 0.3, 0.7]), dup=st.sampled_from([0.0, 0.2]))
    def network(self, loss: float, dup: float) -> None:
        self.c.loss, self.c.dup = loss, dup

    @rule(k=st.integers(0, 4), frac=st.floats(0, 1))
    def compact(self, k: int, frac: float) -> None:
        i = self.node(k)
        if i not in self.c.up:
            return
        node = self.c.nodes[i]
        upto = node.snapshot_index + int(frac * (node.commit_index - node.snapshot_index))
        if upto > node.snapshot_index:
            node.compact(upto, snap_bytes(self.c.checker.applied[i][:upto]))
            self.c.after(i)

    @rule(count=st.integers(1, 3))
    def isolate_leader_then_heal(self, count: int) -> None:
        """The stale-leader pattern: the leader, cut off, takes submits; the others elect and commit;
        the cut heals (with a long quorum timeout the old leader still believes it leads)."""
        c = self.c
        old = c.leader()
        if old is None or old in c.paused:
            return
        c.partition({old}, set(c.ids) - {old})
        for _ in range(count):
            c.submit(at=old)
        c.run(2 * SEC, until=lambda: c.leader() not in (None, old) and c.nodes[c.leader()].commit_index
              >= c.nodes[old].last_index if old in c.up else True)
        c.heal()

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


TestSequencerCluster = SequencerCluster.TestCase
TestSequencerCluster.settings = settings(TestSequencerCluster.settings, stateful_step_count=30)
