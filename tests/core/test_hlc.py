"""Properties of the hybrid logical clock (``gossipbook.core.hlc``).

What must hold (DESIGN.md, invariant 4): timestamps a clock issues strictly increase whatever its
physical clock does; ``receive`` returns a stamp above both the remote one and the local last one; a
remote stamp more than ``max_offset`` ahead of local physical time is rejected, counted and never
adopted; ``wall`` never runs ahead of what the clock has legitimately seen; a restart from the
persisted ``last`` never goes back. The expected values are computed here from those rules, not
read back from the clock.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from gossipbook.core.errors import ClockOffsetError, RemoteError
from gossipbook.core.hlc import HLC, MAX_LOGICAL, MAX_REMOTE_LOGICAL, ZERO, Timestamp, remote_ok

MAX_OFFSET = 100  # small, so that random remote stamps are often rejected

pts = st.integers(min_value=0, max_value=2_000)
logicals = st.integers(min_value=0, max_value=5)
stamps = st.builds(Timestamp, st.integers(min_value=0, max_value=2_300), logicals)
# ("now", pt) | ("send", pt) | ("recv", remote, pt); remote walls are drawn around pt as often as
# far from it, so both the accept and the reject branch are exercised a lot
near = st.tuples(st.integers(min_value=-3 * MAX_OFFSET, max_value=3 * MAX_OFFSET), logicals, pts)
events = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["now", "send"]), pts),
        st.builds(lambda d: ("recv", Timestamp(max(0, d[2] + d[0]), d[1]), d[2]), near),
        st.tuples(st.just("recv"), stamps, pts),
    ),
    max_size=60,
)


def run(clock: HLC, evs: list[tuple], bound: int = 0) -> list[Timestamp]:
    """Apply ``evs`` to ``clock`` checking every per-step rule; returns the stamps it issued.

    ``bound`` is the largest wall the clock may legitimately hold before the first event.
    """
    issued: list[Timestamp] = []
    for ev in evs:
        before = clock.last
        rejected = clock.rejected
        if ev[0] in ("now", "send"):
            pt = ev[1]
            ts = clock.now(pt) if ev[0] == "now" else clock.send(pt)
            assert ts > before
            assert ts.wall == max(before.wall, pt)  # wall follows physical time, never skips ahead
            if pt > before.wall:
                assert ts.logical == 0
            bound = max(bound, pt)
        else:
            _, remote, pt = ev
            if remote.wall - pt > MAX_OFFSET:
                with pytest.raises(ClockOffsetError):
                    clock.receive(remote, pt)
                assert clock.rejected == rejected + 1
                assert clock.last == before  # never adopted, not even partly
                continue
            ts = clock.receive(remote, pt)
            assert ts > remote
            assert ts > before
            assert ts.wall == max(before.wall, remote.wall, pt)
            assert clock.rejected == rejected
            bound = max(bound, pt, remote.wall)
        assert clock.last == ts
        assert clock.wall <= bound
        issued.append(ts)
    return issued


def strictly_increasing(xs: list[Timestamp]) -> bool:
    return all(a < b for a, b in zip(xs, xs[1:], strict=False))


@given(events)
def test_issued_timestamps_strictly_increase(evs: list[tuple]) -> None:
    clock = HLC("n1", MAX_OFFSET)
    issued = run(clock, evs)
    assert strictly_increasing(issued)
    assert clock.rejected == sum(1 for e in evs if e[0] == "recv" and e[1].wall - e[2] > MAX_OFFSET)


@given(events, events, st.integers(min_value=0, max_value=2_000))
def test_restart_from_last_never_goes_back(first: list[tuple], second: list[tuple], shift: int) -> None:
    """A node persists ``last``; after a restart (with its physical clock possibly set back by
    ``shift``) every stamp it issues is still above everything the old incarnation issued."""
    old = HLC("n1", MAX_OFFSET)
    before = run(old, first)
    persisted = old.last
    new = HLC("n1", MAX_OFFSET, last=persisted)
    assert new.last == persisted
    assert new.rejected == 0
    back = [(e[0], max(0, e[1] - shift)) if e[0] != "recv" else (e[0], e[1], max(0, e[2] - shift))
            for e in second]
    after = run(new, back, bound=persisted.wall)
    assert strictly_increasing(before + after)
    assert all(ts > persisted for ts in after)


@given(pts, logicals, st.integers(min_value=1, max_value=10 * MAX_OFFSET), events)
def test_far_ahead_remote_is_rejected_and_never_adopted(pt: int, lg: int, ahead: int,
                                                         history: list[tuple]) -> None:
    clock = HLC("n1", MAX_OFFSET)
    run(clock, history)
    before, rejected = clock.last, clock.rejected
    remote = Timestamp(pt + MAX_OFFSET + ahead, lg)
    with pytest.raises(ClockOffsetError) as info:
        clock.receive(remote, pt)
    assert isinstance(info.value, RemoteError)
    assert info.value.reason == "clock_offset"
    assert clock.rejected == rejected + 1
    assert clock.last == before
    # the rejected stamp leaves no trace: the next local stamp ignores it
    nxt = clock.now(pt)
    assert nxt.wall == max(before.wall, pt)
    assert nxt == (Timestamp(pt, 0) if pt > before.wall else Timestamp(before.wall, before.logical + 1))


def test_offset_bound_is_inclusive() -> None:
    """Exactly ``max_offset`` ahead is accepted; one nanosecond more is not."""
    clock = HLC("n1", MAX_OFFSET)
    clock.check(Timestamp(1_000 + MAX_OFFSET, 7), 1_000)
    assert clock.rejected == 0
    assert clock.receive(Timestamp(1_000 + MAX_OFFSET, 7), 1_000) == Timestamp(1_000 + MAX_OFFSET, 8)
    with pytest.raises(ClockOffsetError):
        clock.check(Timestamp(1_000 + MAX_OFFSET + 1, 0), 1_000)
    assert clock.rejected == 1
    assert clock.last == Timestamp(1_000 + MAX_OFFSET, 8)


def test_receive_rules_by_case() -> None:
    """The four cases of the HLC receive rule (which of wall, remote wall, pt is the max)."""
    c = HLC("n1", MAX_OFFSET, last=Timestamp(500, 3))
    assert c.receive(Timestamp(500, 1), 400) == Timestamp(500, 4)  # wall == remote: max(l) + 1
    assert c.receive(Timestamp(500, 9), 400) == Timestamp(500, 10)
    assert c.receive(Timestamp(450, 99), 400) == Timestamp(500, 11)  # local wall wins: l + 1
    assert c.receive(Timestamp(550, 4), 520) == Timestamp(550, 5)  # remote wins: rl + 1
    assert c.receive(Timestamp(100, 50), 600) == Timestamp(600, 0)  # physical time wins: 0
    assert c.now(600) == Timestamp(600, 1)
    assert c.send(599) == Timestamp(600, 2)  # pt went backwards: logical keeps counting
    assert c.now(601) == Timestamp(601, 0)


def test_constructor() -> None:
    with pytest.raises(ValueError):
        HLC("n1", 0)
    with pytest.raises(ValueError):
        HLC("n1", -5)
    c = HLC("n1")
    assert c.last == ZERO and c.rejected == 0 and c.node_id == "n1"
    assert c.max_offset_ns == 500_000_000


# --- several clocks exchanging messages -----------------------------------------------------------

# --- the logical bound (DESIGN.md "One hostile frame harms nothing") -----------------------------
WIRE_MAX_LOGICAL = 1 << 32  # what wire.py's Op and Heartbeat checks allow
near_max = st.one_of(st.integers(min_value=0, max_value=WIRE_MAX_LOGICAL),
                     st.integers(min_value=MAX_LOGICAL - 3, max_value=MAX_LOGICAL + 3),
                     st.integers(min_value=MAX_REMOTE_LOGICAL - 3, max_value=MAX_REMOTE_LOGICAL + 3),
                     st.sampled_from([WIRE_MAX_LOGICAL, (1 << 64) - 1]))
walls = st.integers(min_value=0, max_value=50)
bounded_events = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["now", "send"]), walls),
        st.tuples(st.just("recv"), st.builds(Timestamp, walls, near_max), walls),
        # a caller that merges without receive (the replica's batch admit) sets the state directly
        st.tuples(st.just("adopt"), st.builds(Timestamp, walls, near_max)),
    ),
    max_size=40,
)


@given(st.builds(Timestamp, walls, near_max), bounded_events)
def test_now_strictly_increases_and_never_passes_max_logical(start: Timestamp,
                                                             evs: list[tuple]) -> None:
    """Whatever the clock starts from or is made to hold, every stamp it issues is above the one
    before and carries ``logical <= MAX_LOGICAL`` (so it always fits the wire), and ``wall`` runs at
    most 1 ns past ``max(last wall, pt)``, only when rolling over."""
    clock = HLC("n1", MAX_OFFSET, last=start)
    for ev in evs:
        before = clock.last
        if ev[0] == "adopt":
            if ev[1] > before:
                clock.wall, clock.logical = ev[1]
            continue
        if ev[0] == "recv":
            _, remote, pt = ev
            refused = clock.refused_logical
            if not remote_ok(remote):
                with pytest.raises(RemoteError) as info:
                    clock.receive(remote, pt)
                assert info.value.reason == "bound"
                assert clock.refused_logical == refused + 1 and clock.last == before
                continue
            if remote.wall - pt > MAX_OFFSET:
                with pytest.raises(ClockOffsetError):
                    clock.receive(remote, pt)
                continue
            ts = clock.receive(remote, pt)
            assert ts > remote
            assert ts.wall <= max(before.wall, remote.wall, pt) + 1
        else:
            pt = ev[1]
            ts = clock.now(pt)
            assert ts.wall <= max(before.wall, pt) + 1
            assert ts.wall == max(before.wall, pt) or before.logical >= MAX_LOGICAL
        assert ts > before
        assert 0 <= ts.logical <= MAX_LOGICAL


def test_logical_rolls_over_into_the_next_nanosecond() -> None:
    c = HLC("n1", MAX_OFFSET, last=Timestamp(700, MAX_LOGICAL - 1))
    assert c.now(600) == Timestamp(700, MAX_LOGICAL)
    assert c.now(600) == Timestamp(701, 0)  # not MAX_LOGICAL + 1: the wall moves on by 1 ns
    assert c.now(600) == Timestamp(701, 1)
    c = HLC("n1", MAX_OFFSET, last=Timestamp(700, MAX_LOGICAL))
    assert c.receive(Timestamp(700, 5), 600) == Timestamp(701, 0)  # receive rolls over the same way
    c = HLC("n1", MAX_OFFSET, last=Timestamp(700, WIRE_MAX_LOGICAL))  # a state above the bound
    assert c.now(700) == Timestamp(701, 0)


def test_remote_logical_bound() -> None:
    assert remote_ok(Timestamp(5, MAX_REMOTE_LOGICAL)) and not remote_ok(Timestamp(5, MAX_REMOTE_LOGICAL + 1))
    assert MAX_REMOTE_LOGICAL + 1 < MAX_LOGICAL < WIRE_MAX_LOGICAL
    c = HLC("n1", MAX_OFFSET, last=Timestamp(500, 3))
    with pytest.raises(RemoteError) as info:
        c.receive(Timestamp(500, WIRE_MAX_LOGICAL), 500)
    assert info.value.reason == "bound" and c.refused_logical == 1 and c.rejected == 0
    assert c.last == Timestamp(500, 3)


NODES = ("a", "b", "c")


def vc_leq(x: dict[str, int], y: dict[str, int]) -> bool:
    return all(v <= y.get(k, 0) for k, v in x.items())


class Cluster(RuleBasedStateMachine):
    """Three clocks with independently skewed, jumping physical clocks exchange messages over a
    network that reorders, duplicates and drops. Alongside, a vector clock per node records the
    true happens-before relation, so the clock condition (e -> f implies ts(e) < ts(f)) is checked
    directly, plus the per-node rules and the max-offset bound."""

    @initialize(skews=st.lists(st.integers(min_value=-400, max_value=400), min_size=3, max_size=3))
    def setup(self, skews: list[int]) -> None:
        self.clocks = {n: HLC(n, MAX_OFFSET) for n in NODES}
        self.pt = {n: 1_000 + s for n, s in zip(NODES, skews, strict=True)}
        self.max_pt = dict(self.pt)  # largest physical time each node has seen (kept over restarts)
        self.rejected = dict.fromkeys(NODES, 0)
        self.issued: dict[str, list[Timestamp]] = {n: [] for n in NODES}
        self.vc: dict[str, dict[str, int]] = {n: {} for n in NODES}
        self.events: list[tuple[dict[str, int], Timestamp]] = []  # (vector clock, stamp)
        self.net: list[tuple[str, Timestamp, dict[str, int]]] = []  # (dest, stamp, sender's vc)

    def _record(self, node: str, ts: Timestamp) -> None:
        vc = self.vc[node]
        vc[node] = vc.get(node, 0) + 1
        snap = dict(vc)
        for evc, ets in self.events:
            if vc_leq(evc, snap):  # happened before (or is an earlier event of this node)
                assert ets < ts, f"{ets} happened before {ts} but is not smaller"
        self.events.append((snap, ts))
        self.issued[node].append(ts)

    @rule(node=st.sampled_from(NODES), delta=st.integers(min_value=-60, max_value=150))
    def advance(self, node: str, delta: int) -> None:
        """Physical time moves, occasionally backwards (NTP step)."""
        self.pt[node] += delta
        self.max_pt[node] = max(self.max_pt[node], self.pt[node])

    @rule(node=st.sampled_from(NODES), jump=st.integers(min_value=-1_000, max_value=1_000))
    def jump(self, node: str, jump: int) -> None:
        """A large clock step: makes this node's messages fail the others' offset bound."""
        self.pt[node] += jump
        self.max_pt[node] = max(self.max_pt[node], self.pt[node])

    @rule(node=st.sampled_from(NODES))
    def local(self, node: str) -> None:
        before = self.clocks[node].last
        ts = self.clocks[node].now(self.pt[node])
        assert ts > before
        self._record(node, ts)

    @rule(src=st.sampled_from(NODES), dst=st.sampled_from(NODES), copies=st.integers(1, 2))
    def send(self, src: str, dst: str, copies: int) -> None:
        before = self.clocks[src].last
        ts = self.clocks[src].send(self.pt[src])
        assert ts > before
        self._record(src, ts)
        for _ in range(copies):  # a duplicated datagram
            self.net.append((dst, ts, dict(self.vc[src])))

    @precondition(lambda self: self.net)
    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        i = data.draw(st.integers(min_value=0, max_value=len(self.net) - 1), label="message")
        dst, remote, rvc = self.net.pop(i)
        clock = self.clocks[dst]
        pt = self.pt[dst]
        before = clock.last
        if remote.wall - pt > MAX_OFFSET:
            with pytest.raises(ClockOffsetError):
                clock.receive(remote, pt)
            self.rejected[dst] += 1
            assert clock.last == before
            return
        ts = clock.receive(remote, pt)
        assert ts > remote and ts > before
        vc = self.vc[dst]
        for k, v in rvc.items():
            vc[k] = max(vc.get(k, 0), v)
        self._record(dst, ts)

    @precondition(lambda self: self.net)
    @rule(data=st.data())
    def drop(self, data: st.DataObject) -> None:
        self.net.pop(data.draw(st.integers(min_value=0, max_value=len(self.net) - 1), label="lost"))

    @rule(node=st.sampled_from(NODES), back=st.integers(min_value=0, max_value=500))
    def restart(self, node: str, back: int) -> None:
        """Crash and restart from the persisted ``last``, physical clock possibly set back."""
        self.clocks[node] = HLC(node, MAX_OFFSET, last=self.clocks[node].last)
        self.rejected[node] = 0
        self.pt[node] -= back

    @invariant()
    def per_node_rules(self) -> None:
        for n in NODES:
            clock = self.clocks[n]
            issued = self.issued[n]
            assert strictly_increasing(issued)
            if issued:
                assert clock.last == issued[-1]
            assert clock.rejected == self.rejected[n]
            # invariant 4: no adopted stamp runs more than max_offset ahead of what this node's
            # physical clock has shown
            assert clock.wall <= self.max_pt[n] + MAX_OFFSET


TestCluster = Cluster.TestCase
