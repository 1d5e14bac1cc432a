"""Membership (SWIM + suspicion) under a tiny deterministic network: virtual time, seeded loss.

The driver below is deliberately small: a heap of in-flight messages with random one-way delays,
per-node clock skew (a node's ``now`` is true time + skew), crash / partition / loss knobs. One
seed decides everything, so a failure is reproduced by its seed.

Bounds used (P = probe interval, N = nodes):
- A crashed node is probed by each survivor within ``2N - 3`` periods (worst shuffled round-robin
  order), suspected at the end of that period, and declared dead by the survivor's own timer at
  most ``suspicion_max_timeout`` later: ``(2N - 2) * P + suspicion_max_timeout``.
"""

from __future__ import annotations

import heapq
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gossipbook.core.clocksync import ClockSync
from gossipbook.core.errors import RemoteError
from gossipbook.core.membership import (
    ALIVE,
    TRANSITIONS,
    Ack,
    ClockSample,
    Gossip,
    Membership,
    MembershipConfig,
    MemberState,
    MemberStateChanged,
    Probe,
    Refuted,
    Update,
)

MS = 1_000_000
SEC = 1_000 * MS
T0 = 1_000 * SEC  # true time starts here, so skewed clocks stay positive
CFG = MembershipConfig()


class Net:
    """N Membership instances wired through a seeded, lossy, delaying network."""

    def __init__(self, n: int, seed: int, config: MembershipConfig = CFG,
                 skew: dict[str, int] | None = None, delay: tuple[int, int] = (MS // 2, 3 * MS)) -> None:
        self.ids = [f"n{i}" for i in range(n)]
        self.seed = seed
        self.config = config
        self.rng = random.Random(seed)
        self.t = T0
        self.skew = {i: 0 for i in self.ids} | (skew or {})
        self.delay = delay
        self.nodes: dict[str, Membership] = {}
        self.lives: dict[str, int] = {i: 0 for i in self.ids}
        self.up: set[str] = set()
        for i in self.ids:
            self.boot(i, incarnation=0)
        self.cut: set[frozenset[str]] = set()
        self.loss = 0.0
        self._q: list[tuple[int, int, str, str, Any]] = []
        self._n = 0
        self.log: list[tuple[int, str, Any]] = []  # (true time, node, event)

    # ---- knobs -------------------------------------------------------------------------------------
    def boot(self, i: str, incarnation: int) -> None:
        self.lives[i] += 1
        rng = random.Random(f"{self.seed}/{i}/{self.lives[i]}")
        self.nodes[i] = Membership(i, self.ids, rng, self.config, incarnation=incarnation)
        self.up.add(i)

    def crash(self, i: str) -> None:
        self.up.discard(i)

    def isolate(self, i: str) -> None:
        self.cut |= {frozenset((i, j)) for j in self.ids if j != i}

    def split(self, side: set[str]) -> None:
        self.cut |= {frozenset((i, j)) for i in side for j in self.ids if j not in side}

    def heal(self) -> None:
        self.cut = set()

    def local(self, i: str) -> int:
        return self.t + self.skew[i]

    # ---- running -----------------------------------------------------------------------------------
    def _flush(self, i: str) -> None:
        for dst, msg in self.nodes[i].outbox():
            if frozenset((i, dst)) in self.cut or self.rng.random() < self.loss:
                continue
            self._n += 1
            heapq.heappush(self._q, (self.t + self.rng.randint(*self.delay), self._n, i, dst, msg))
        for ev in self.nodes[i].events():
            self.log.append((self.t, i, ev))

    def run_until(self, t_end: int) -> None:
        while True:
            nxt = self._q[0][0] if self._q else t_end + 1
            for i in self.up:
                nxt = min(nxt, max(self.t, self.nodes[i].next_deadline() - self.skew[i]))
            if nxt > t_end:
                self.t = t_end
                return
            self.t = nxt
            while self._q and self._q[0][0] <= self.t:
                _, _, src, dst, msg = heapq.heappop(self._q)
                if src in self.up and dst in self.up and frozenset((src, dst)) not in self.cut:
                    self.nodes[dst].receive(msg, src, self.local(dst))
                    self._flush(dst)
            for i in sorted(self.up):
                if self.nodes[i].next_deadline() - self.skew[i] <= self.t:
                    self.nodes[i].tick(self.local(i))
                    self._flush(i)
                    # tick must run everything due, or a driver would spin on the same instant
                    assert self.nodes[i].next_deadline() > self.local(i), "tick left a deadline due"

    def run_for(self, dt: int) -> None:
        self.run_until(self.t + dt)

    def run_while(self, cond: Any, limit: int, step: int = 5 * MS) -> None:
        end = self.t + limit
        while cond() and self.t < end:
            self.run_for(step)

    # ---- observations ------------------------------------------------------------------------------
    def view(self, i: str) -> dict[str, str]:
        return self.nodes[i].states()

    def all_see(self, member: str, state: str, among: set[str] | None = None) -> bool:
        return all(self.view(i)[member] == state for i in (among or self.up))

    def all_alive(self) -> bool:
        return all(s == ALIVE for i in self.up for s in self.view(i).values())

    def settled(self) -> bool:
        """Everyone ALIVE everywhere, at the incarnation each member itself holds.

        Once no probe can fail any more this state is stable: a stale SUSPECT / DEAD claim at an
        incarnation >= a member's own could only come from a node whose view is not ALIVE.
        """
        return self.all_alive() and all(
            self.nodes[i].incarnations()[m] == self.nodes[m].incarnation
            for i in self.up for m in self.up)

    def changes(self, since: int = 0) -> list[tuple[int, str, MemberStateChanged]]:
        return [(t, i, e) for t, i, e in self.log if t >= since and isinstance(e, MemberStateChanged)]


def crash_bound(n: int, cfg: MembershipConfig = CFG) -> int:
    return (2 * n - 2) * cfg.probe_interval_ns + cfg.suspicion_max_timeout_ns


# ---- the transition table ------------------------------------------------------------------------------
def test_transition_table_shape() -> None:
    """ALIVE is entered only on a newer incarnation; DEAD is never re-suspected; LEFT only revives."""
    for (_cur, new), need in TRANSITIONS.items():
        if new is ALIVE:
            assert need.name == "NEWER"
    assert (MemberState.DEAD, MemberState.SUSPECT) not in TRANSITIONS
    assert {new for cur, new in TRANSITIONS if cur is MemberState.LEFT} == {ALIVE, MemberState.LEFT}


def test_remote_garbage_raises_and_changes_nothing() -> None:
    m = Membership("a", ["a", "b"], random.Random(0))
    before = m.states(), m.incarnations()
    with pytest.raises(RemoteError):
        m.receive(Probe(1, 0, 0, (("b", -1, "dead", "b"),)), "b", T0)  # type: ignore[arg-type]
    with pytest.raises(RemoteError):
        m.receive(Probe(1, 0, 0, (Update("b", 1, "zombie", "b"),)), "b", T0)
    with pytest.raises(RemoteError):
        m.receive(Probe(1, 0, 0), "stranger", T0)
    with pytest.raises(RemoteError):
        m.receive("hello", "b", T0)  # type: ignore[arg-type]
    with pytest.raises(RemoteError):
        m.receive(Ack(1, 0, 0, "t2", 0), "b", T0)  # type: ignore[arg-type]
    assert (m.states(), m.incarnations()) == before
    assert m.outbox() == []


def test_probe_is_acked_with_ntp_timestamps() -> None:
    m = Membership("a", ["a", "b"], random.Random(0))
    m.receive(Probe(7, 3, 111), "b", 5000)
    [(dst, ack)] = m.outbox()
    assert dst == "b" and isinstance(ack, Ack)
    assert (ack.seq, ack.t1, ack.t2, ack.t3) == (7, 111, 5000, 5000)
    assert m.incarnations()["b"] == 3  # direct contact carries the sender's incarnation


# ---- cluster behaviour ---------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(3))
def test_no_loss_everyone_stays_alive(seed: int) -> None:
    net = Net(5, seed)
    net.run_for(20 * SEC)
    assert net.all_alive()
    assert net.changes() == []
    for m in net.nodes.values():
        assert m.counters["probe_failures"] == 0
        assert m.counters["probes"] >= 20 * SEC // CFG.probe_interval_ns - 1
        assert m.incarnation == 0


@pytest.mark.parametrize("seed", range(3))
def test_indirect_probes_cover_a_broken_link(seed: int) -> None:
    """n0 and n1 cannot talk directly, but each reaches the other through PingReq relays."""
    net = Net(5, seed)
    net.cut.add(frozenset(("n0", "n1")))
    net.run_for(10 * SEC)
    assert net.all_alive()
    assert net.changes() == []
    assert net.nodes["n0"].counters["indirect_probes"] > 0
    assert sum(m.counters["relayed"] for m in net.nodes.values()) > 0


@pytest.mark.parametrize("seed", range(4))
def test_crashed_node_declared_dead_by_all_within_bound(seed: int) -> None:
    n = 5
    net = Net(n, seed)
    net.run_for(2 * SEC)
    crashed_at = net.t
    net.crash("n4")
    bound = crash_bound(n)
    net.run_until(crashed_at + bound)
    survivors = set(net.ids) - {"n4"}
    assert net.all_see("n4", "dead", survivors), {i: net.view(i)["n4"] for i in survivors}
    deaths = [(t, i) for t, i, e in net.changes() if e.member == "n4" and e.new == "dead"]
    assert {i for _, i in deaths} == survivors
    assert max(t for t, _ in deaths) - crashed_at <= bound
    # nobody else was ever doubted
    assert all(e.member == "n4" for _, _, e in net.changes())
    net.run_for(5 * SEC)
    assert net.all_see("n4", "dead", survivors)


@pytest.mark.parametrize("seed", range(4))
def test_suspicion_is_refuted_after_a_short_partition(seed: int) -> None:
    net = Net(5, seed)
    net.run_for(2 * SEC)
    net.isolate("n0")
    net.run_while(lambda: not any(net.view(i)["n0"] == "suspect" for i in net.ids if i != "n0"),
                  limit=5 * SEC)
    assert any(net.view(i)["n0"] == "suspect" for i in net.ids if i != "n0")
    net.heal()
    net.run_for(5 * SEC)
    assert net.all_alive(), {i: net.view(i) for i in net.ids}
    assert not [e for _, _, e in net.changes() if e.new == "dead"]
    assert net.nodes["n0"].incarnation >= 1
    assert any(isinstance(e, Refuted) for t, i, e in net.log if i == "n0")
    # everyone holds n0's new incarnation
    assert {net.nodes[i].incarnations()["n0"] for i in net.ids} == {net.nodes["n0"].incarnation}


@pytest.mark.parametrize("seed", range(3))
def test_leave_is_seen_as_left_everywhere_then_restart_rejoins(seed: int) -> None:
    net = Net(5, seed)
    net.run_for(2 * SEC)
    net.nodes["n2"].leave(net.local("n2"))
    net._flush("n2")
    net.run_for(net.delay[1])  # announced directly to everyone, not left to gossip
    assert all(net.view(i)["n2"] == "left" for i in net.ids)
    net.crash("n2")  # the process exits after leaving
    net.run_for(10 * SEC)
    others = set(net.ids) - {"n2"}
    assert net.all_see("n2", "left", others)
    assert not [e for _, _, e in net.changes() if e.new in ("suspect", "dead")]
    # it comes back with the *same* incarnation (nothing persisted): "you left" makes it outbid itself
    net.boot("n2", incarnation=0)
    net.run_for(crash_bound(5))
    assert net.all_alive(), {i: net.view(i) for i in net.ids}
    assert net.nodes["n2"].incarnation >= 1


@pytest.mark.parametrize(("seed", "persisted"), [(0, True), (1, True), (2, False), (3, False)])
def test_restarted_node_rejoins_alive(seed: int, persisted: bool) -> None:
    n = 5
    net = Net(n, seed)
    net.run_for(2 * SEC)
    net.crash("n3")
    net.run_for(crash_bound(n))
    assert net.all_see("n3", "dead")
    restarted_at = net.t
    # with a boot-time incarnation (ms) its first message revives it; with 0 it must refute "you are dead"
    net.boot("n3", incarnation=net.local("n3") // MS if persisted else 0)  # ms, as the shell does
    net.run_for(crash_bound(n))
    assert net.all_alive(), {i: net.view(i) for i in net.ids}
    back = [t for t, i, e in net.changes(restarted_at) if e.member == "n3" and e.new == "alive"]
    assert len(back) == n - 1
    if persisted:
        # the restarted node announces itself: every survivor has it back within one probe round trip
        assert max(back) - restarted_at <= (2 * n - 2) * CFG.probe_interval_ns


def test_clock_samples_from_probes_match_injected_skew() -> None:
    skew = {"n0": 0, "n1": 3 * MS, "n2": -7 * MS, "n3": 250_000}
    net = Net(4, 11, skew=skew, delay=(100_000, 5 * MS))  # independent, so asymmetric, delays
    net.run_for(10 * SEC)
    clocks = {i: ClockSync() for i in net.ids}
    n_samples = 0
    for _, i, e in net.log:
        if isinstance(e, ClockSample):
            n_samples += 1
            assert clocks[i].add_sample(e.peer, e.t1, e.t2, e.t3, e.t4)
            single = ClockSync()
            single.add_sample(e.peer, e.t1, e.t2, e.t3, e.t4)
            est = single.estimate(e.peer)
            assert est is not None and abs(est.offset_ns - (skew[e.peer] - skew[i])) <= est.uncertainty_ns
    assert n_samples >= 4 * 10 * SEC // CFG.probe_interval_ns - 4
    for i in net.ids:
        for peer, est in clocks[i].estimates().items():
            truth = skew[peer] - skew[i]
            assert abs(est.offset_ns - truth) <= est.uncertainty_ns
            assert 2 * 100_000 <= est.rtt_ns <= 2 * 5 * MS  # two one-way delays of the driver
            assert est.uncertainty_ns <= 5 * MS
        assert clocks[i].in_sync(500 * MS)
        assert clocks[i].in_sync(20 * MS)  # everyone is within 10 ms of the median
    # n2 is 7 ms behind n0 and 10 ms behind n1: with a 10 ms max offset it alone is out of sync
    assert [i for i in net.ids if not clocks[i].in_sync(10 * MS)] == ["n2"]


# ---- liveness after faults -----------------------------------------------------------------------------
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(3, 6), loss=st.floats(0.0, 0.3),
       fault_s=st.integers(1, 15), side=st.sets(st.integers(0, 5), max_size=3),
       partition_s=st.integers(0, 15))
def test_after_faults_stop_everyone_converges_to_alive_and_stays(seed: int, n: int, loss: float,
                                                                fault_s: int, side: set[int],
                                                                partition_s: int) -> None:
    """Fault phase: up to 30% loss, and for part of it maybe a partition (so live nodes get
    suspected and, across a long enough partition, declared dead). Liveness phase: faults stop;
    within the bound every node sees every node ALIVE at its current incarnation, and it stays so.

    Bound, from the last moment a probe can fail (loss stops, + one period P): a suspicion started
    then fires within ``suspicion_max_timeout``; the news spreads in at most N hops of
    ``2 * gossip_interval`` each; every holder of a DEAD belief probes the member within
    ``2N - 2`` periods and gets a refutation back.
    """
    cfg = CFG
    net = Net(n, seed)
    net.loss = loss
    net.split({f"n{i}" for i in side if i < n})
    net.run_for(min(fault_s, partition_s) * SEC)
    net.heal()
    net.run_for(max(0, fault_s - partition_s) * SEC)
    net.loss = 0.0
    stopped = net.t
    bound = (cfg.probe_interval_ns + cfg.suspicion_max_timeout_ns + n * 2 * cfg.gossip_interval_ns
             + (2 * n - 2) * cfg.probe_interval_ns)
    # A probe that started while loss was on can still fail one period later; before that,
    # "everyone looks alive" is not yet a stable state.
    net.run_for(cfg.probe_interval_ns + net.delay[1])
    net.run_while(lambda: not net.settled(), limit=stopped + bound - net.t, step=10 * MS)
    assert net.settled(), (seed, {i: net.view(i) for i in net.ids})
    converged = net.t
    net.run_for(5 * SEC)
    assert net.all_alive()
    assert [c for c in net.changes(converged) if c[2].new != "alive"] == [], (seed, stopped)


def test_gossip_message_applies_updates() -> None:
    m = Membership("a", ["a", "b", "c"], random.Random(0))
    m.receive(Gossip(0, (Update("c", 4, "dead", "b"),)), "b", T0)
    assert m.states()["c"] == "dead"
    assert m.events() == [MemberStateChanged("c", "alive", "dead", 4)]
    m.apply_updates([Update("c", 4, "alive", "c")], T0)  # same incarnation cannot revive
    assert m.states()["c"] == "dead"
    m.apply_updates([Update("c", 5, "alive", "c")], T0)
    assert m.states()["c"] == "alive"
    assert m.piggyback(10)[0] == Update("c", 5, "alive", "c")  # newest first


def test_suspicion_timer_shrinks_with_independent_confirmations() -> None:
    slow = MembershipConfig(probe_interval_ns=100 * SEC, probe_timeout_ns=50 * SEC)  # no probes interfere
    m = Membership("a", ["a", "b", "c", "d", "e"], random.Random(0), slow)
    m.tick(T0 - 200 * SEC)  # start the schedule; the first probe is far away
    m.apply_updates([Update("e", 0, "suspect", "b")], T0)
    m.apply_updates([Update("e", 0, "suspect", "b")], T0)  # the same accuser again: no confirmation
    m.tick(T0 + slow.suspicion_timeout_ns + SEC // 2)
    assert m.states()["e"] == "suspect"  # one accuser: the long timer (suspicion_max_timeout) runs
    m.apply_updates([Update("e", 0, "suspect", o) for o in ("c", "d", "a")], T0 + 1)
    m.tick(T0 + slow.suspicion_timeout_ns + SEC // 2)
    assert m.states()["e"] == "dead"  # three more accusers: the timer is down to its floor
    m.apply_updates([Update("e", 0, "suspect", "c")], T0)
    assert m.states()["e"] == "dead"  # a dead member is never suspected again
