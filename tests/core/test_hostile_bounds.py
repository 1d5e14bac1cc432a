"""One hostile frame harms nothing (DESIGN.md; issue 15): integers a peer sends are bounded.

Each reproduction of issue 15 that lives in the sans-IO core is a regression test here: a crafted,
authenticated message carrying 2**64 - 1 (the wire's ``uint()`` maximum) or an implausible jump is
refused, changes no state, is counted, and whatever the node sends next still encodes with
``wire.encode`` (before the fix the node adopted the value, added one, and ``encode`` raised
``OverflowError`` in the shell's flush: the process died, and died again at every restart).
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipbook.core import wire
from gossipbook.core.errors import RemoteError
from gossipbook.core.hlc import HLC, MAX_LOGICAL, MAX_REMOTE_LOGICAL, Timestamp, remote_ok
from gossipbook.core.membership import (
    INCARNATION_SLACK_MS,
    MAX_INCARNATION,
    Ack,
    Gossip,
    IndirectAck,
    Membership,
    PingReq,
    Probe,
    Update,
)
from gossipbook.core.ops import Op
from gossipbook.core.sequencer import (
    LEADER,
    MAX_INDEX,
    MAX_TERM,
    MAX_TERM_JUMP,
    AppendEntries,
    AppendReply,
    InstallSnapshot,
    PersistentState,
    RequestVote,
    Sequencer,
    VoteReply,
)

U64 = (1 << 64) - 1
MS = 1_000_000
SEC = 1_000 * MS
T0 = 1_700_000_000 * SEC  # wall-clock ns, as the shell passes it
KEY = bytes(range(32))
IDS = ("n1", "n2", "n3")


def encodes(msg: Any) -> None:
    """``msg`` packs into a frame and that frame passes the receiver's validation."""
    frame = wire.encode(msg, "n1", 1, KEY)  # OverflowError here is the crash of issue 15
    assert wire.decode(frame, KEY).msg == msg


def drain(m: Membership | Sequencer) -> list[Any]:
    out = [msg for _, msg in m.outbox()]
    for msg in out:
        encodes(msg)
    return out


# ---- membership incarnations ---------------------------------------------------------------------
def member(incarnation: int | None = None, now: int = T0) -> Membership:
    m = Membership("n1", IDS, random.Random(1), incarnation=now // MS if incarnation is None else incarnation)
    m.tick(now)
    drain(m)
    m.events()
    return m


def snapshot(m: Membership) -> tuple[Any, ...]:
    return m.incarnation, m.incarnations(), m.states()


@pytest.mark.parametrize("state", ["suspect", "dead", "alive", "left"])
def test_update_about_self_at_u64_max_is_dropped_and_next_frames_encode(state: str) -> None:
    """Issue 15's 51-byte frame: "n1 suspect at 2**64 - 1" made n1 refute with 2**64 and crash."""
    m = member()
    before = snapshot(m)
    m.receive(Gossip(m.incarnations()["n2"], (Update("n1", U64, state, "n2"),)), "n2", T0)
    assert snapshot(m) == before
    assert m.counters["refused_bound"] == 1 and m.counters["refutations"] == 0
    for k in range(1, 40):  # probes, gossip, acks: everything it sends from now on still encodes
        m.tick(T0 + k * 100 * MS)
        drain(m)
    assert m.incarnation == before[0]


def test_update_about_a_peer_at_u64_max_is_dropped_and_the_rest_applied() -> None:
    m = member()
    inc = T0 // MS
    m.receive(Gossip(0, (Update("n3", U64, "dead", "n2"), Update("n3", inc, "suspect", "n2"))), "n2", T0)
    assert m.incarnations()["n3"] == inc and m.states()["n3"] == "suspect"
    assert m.counters["refused_bound"] == 1
    m.tick(T0 + 10 * SEC)
    drain(m)  # the belief "n3 is dead at inc" goes to n3: still encodable


@pytest.mark.parametrize("msg", [
    Probe(1, U64, T0),
    Ack(1, U64, T0, T0, T0),
    PingReq(1, "n3", U64),
    IndirectAck(1, "n3", 0, U64),
    IndirectAck(1, "n3", U64, 0),
    Gossip(U64),
])
def test_sender_incarnation_at_u64_max_refuses_the_whole_message(msg: Any) -> None:
    m = member()
    before = snapshot(m)
    with pytest.raises(RemoteError) as info:
        m.receive(msg, "n2", T0)
    assert info.value.reason == "bound"
    assert snapshot(m) == before and m.outbox() == [] and m.events() == []
    assert m.counters["refused_bound"] == 1


def test_incarnation_plausibility_is_now_plus_slack_inclusive() -> None:
    m = member()
    limit = T0 // MS + INCARNATION_SLACK_MS
    assert m.incarnation_limit(T0) == limit
    with pytest.raises(RemoteError):
        m.receive(Gossip(limit + 1), "n2", T0)
    m.receive(Gossip(limit), "n2", T0)  # at the limit: accepted
    assert m.incarnations()["n2"] == limit
    m.apply_updates([Update("n1", limit + 1, "suspect", "n3")], T0)  # another layer's updates too
    assert m.counters["refused_bound"] == 2 and m.counters["refutations"] == 0
    m.apply_updates([Update("n1", limit, "suspect", "n3")], T0)
    assert m.incarnation == limit + 1 and m.counters["refutations"] == 1
    drain(m)


def test_plausibility_anchors_on_the_boot_incarnation_when_now_is_not_wall_clock() -> None:
    """A caller whose ``now`` starts near 0 still talks to peers whose incarnations are boot ms."""
    boot = T0 // MS
    m = member(incarnation=boot, now=0)
    assert m.incarnation_limit(0) == boot + INCARNATION_SLACK_MS
    m.receive(Gossip(boot + 5), "n2", 0)
    assert m.incarnations()["n2"] == boot + 5


def test_refutation_never_exceeds_the_cap() -> None:
    near = MAX_INCARNATION - 10
    m = member(incarnation=near, now=0)
    assert m.incarnation_limit(0) == MAX_INCARNATION - 1
    for inc in (MAX_INCARNATION - 2, MAX_INCARNATION - 1, MAX_INCARNATION, U64):
        m.apply_updates([Update("n1", inc, "suspect", "n2")], 0)
    assert m.incarnation == MAX_INCARNATION
    drain(m)
    with pytest.raises(ValueError):
        Membership("n1", IDS, random.Random(1), incarnation=MAX_INCARNATION + 1)


incarnations = st.one_of(st.integers(0, U64), st.sampled_from([0, T0 // MS, MAX_INCARNATION - 1, MAX_INCARNATION,
                                                               U64, T0 // MS + INCARNATION_SLACK_MS]))
updates = st.lists(st.builds(Update, st.sampled_from(IDS), incarnations,
                             st.sampled_from(["alive", "suspect", "dead", "left"]), st.sampled_from(IDS)),
                   max_size=6)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["n2", "n3"]), incarnations, updates), max_size=8))
def test_no_sequence_of_updates_makes_an_incarnation_unencodable(msgs: list[tuple[str, int, list[Update]]]) -> None:
    m = member()
    t = T0
    for src, inc, ups in msgs:
        t += 50 * MS
        try:
            m.receive(Gossip(inc, tuple(ups)), src, t)
        except RemoteError as e:
            assert e.reason == "bound"
        m.tick(t)
        drain(m)
        assert all(v <= MAX_INCARNATION for v in m.incarnations().values())
        assert all(v <= m.incarnation_limit(t) for k, v in m.incarnations().items() if k != "n1")


# ---- sequencer terms and indices -----------------------------------------------------------------
def seq(term: int = 5, **kw: Any) -> Sequencer:
    s = Sequencer("n1", IDS, random.Random(0), persisted=PersistentState(term=term, **kw))
    s.tick(T0)
    drain(s)
    s.events()
    return s


def hostile_at(term: int) -> list[Any]:
    return [
        AppendReply(term, False, 0, 0),
        AppendReply(term, True, 3, 0),
        VoteReply(term, False, False, "n1"),
        VoteReply(term, False, True, "n1"),
        RequestVote(term, 0, 0),
        RequestVote(term, 0, 0, pre=True),
        AppendEntries(term, 0, 0, 0),
        InstallSnapshot(term, 1, 1, 0, 2, b"xx"),
    ]


@pytest.mark.parametrize("msg", hostile_at(U64) + hostile_at(5 + MAX_TERM_JUMP + 1) + hostile_at(MAX_TERM + 1))
def test_term_out_of_bounds_is_refused_and_changes_nothing(msg: Any) -> None:
    """Issue 15: an AppendReply at term 2**64 - 1 was adopted and persisted; the next pre-vote
    encoded 2**64 and crashed, at every restart."""
    s = seq()
    before = s.persistent_state()
    with pytest.raises(RemoteError) as info:
        s.receive(msg, "n2", T0)
    assert info.value.reason == "bound"
    assert s.persistent_state() == before and s.term == 5
    assert s.outbox() == [] and s.events() == []
    assert s.counters["refused_bound"] == 1
    s.tick(s.next_deadline())  # the election timeout: a pre-vote at term 6, which encodes
    out = drain(s)
    assert out and all(type(m) is RequestVote and m.term == 6 for m in out)


@pytest.mark.parametrize("msg", [
    AppendEntries(6, U64, 1, 0),
    AppendEntries(6, 0, 0, U64),
    AppendReply(5, True, U64, 0),
    AppendReply(5, False, 3, U64),
    RequestVote(6, U64, 1),
    InstallSnapshot(6, U64, 1, 0, 2, b"xx"),
    InstallSnapshot(6, 1, 1, U64 - 2, U64, b"xx"),
    AppendEntries(6, MAX_INDEX + 1, 1, 0),
])
def test_index_out_of_bounds_is_refused_and_changes_nothing(msg: Any) -> None:
    s = seq()
    before = s.persistent_state()
    with pytest.raises(RemoteError) as info:
        s.receive(msg, "n2", T0)
    assert info.value.reason == "bound"
    assert s.persistent_state() == before and s.outbox() == [] and s.events() == []
    assert s.counters["refused_bound"] == 1


def test_a_node_far_behind_still_follows_a_real_leader() -> None:
    """The jump bound never blocks a legitimate cluster: a wiped node (term 0) adopts any term a
    cluster can reach, up to 2**32 elections ahead, and answers in it."""
    s = seq(term=0)
    s.receive(AppendEntries(MAX_TERM_JUMP, 0, 0, 0), "n2", T0)
    assert s.term == MAX_TERM_JUMP and s.leader() == "n2"
    assert s.counters["refused_bound"] == 0
    (reply,) = drain(s)
    assert reply == AppendReply(MAX_TERM_JUMP, True, 0)


def test_a_node_at_max_term_stays_a_follower() -> None:
    s = seq(term=MAX_TERM)
    for k in range(1, 6):
        s.tick(T0 + k * SEC)
        assert drain(s) == [] and s.term == MAX_TERM and s.role is not LEADER
    with pytest.raises(RemoteError):
        s.receive(AppendReply(MAX_TERM + 1, False, 0), "n2", T0 + 6 * SEC)
    s.receive(AppendEntries(MAX_TERM, 0, 0, 0), "n2", T0 + 6 * SEC)  # a leader at MAX_TERM is followed
    assert s.leader() == "n2"
    drain(s)


def test_persisted_state_out_of_bounds_is_refused() -> None:
    with pytest.raises(ValueError):
        Sequencer("n1", IDS, random.Random(0), persisted=PersistentState(term=MAX_TERM + 1))
    with pytest.raises(ValueError):
        Sequencer("n1", IDS, random.Random(0), persisted=PersistentState(term=3, commit_index=U64))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(range(8)),
                          st.one_of(st.integers(0, U64), st.integers(0, 20),
                                    st.sampled_from([MAX_TERM, MAX_TERM_JUMP, U64]))), max_size=10))
def test_no_sequence_of_terms_makes_a_sequencer_message_unencodable(msgs: list[tuple[int, int]]) -> None:
    s = seq()
    t = T0
    for kind, term in msgs:
        t += 100 * MS
        try:
            s.receive(hostile_at(term)[kind], "n2", t)
        except RemoteError as e:
            assert e.reason in ("bound", "malformed")  # malformed: a snapshot term below its last_term
        s.tick(t)
        drain(s)
        assert s.term <= MAX_TERM


# ---- HLC logical ---------------------------------------------------------------------------------
def op_at(ts: Timestamp) -> Op:
    return Op(ts.wall, ts.logical, "n1", 1, 1, "BTC-USD", "", 0, 100, 1, 0, "r1")


def test_a_clock_holding_the_wire_maximum_still_stamps_encodable_ops() -> None:
    """Issue 15: an op at wall = now + 400 ms, logical = 2**32 was adopted; the node's next orders
    were stamped 2**32 + k and every peer dropped them as malformed."""
    clock = HLC("n1", last=Timestamp(T0 + 400 * MS, 1 << 32))  # what the replica's admit leaves
    prev = clock.last
    for k in range(5):
        ts = clock.now(T0 + k)
        assert ts > prev and ts.logical <= MAX_LOGICAL
        encodes(wire.OpBatch([op_at(ts)]))
        prev = ts
    assert prev.wall == T0 + 400 * MS + 1  # rolled over by one nanosecond, then counting again


def test_receive_refuses_a_remote_logical_above_the_bound() -> None:
    clock = HLC("n1", last=Timestamp(T0, 3))
    for lg in (MAX_REMOTE_LOGICAL + 1, 1 << 32, U64):
        with pytest.raises(RemoteError) as info:
            clock.receive(Timestamp(T0 + 400 * MS, lg), T0)
        assert info.value.reason == "bound"
        assert not remote_ok(Timestamp(T0, lg))
    assert clock.last == Timestamp(T0, 3) and clock.refused_logical == 3
    assert remote_ok(Timestamp(T0, MAX_REMOTE_LOGICAL)) and remote_ok(Timestamp(T0, 0))
    assert clock.receive(Timestamp(T0, MAX_REMOTE_LOGICAL), T0) == Timestamp(T0, MAX_REMOTE_LOGICAL + 1)


def test_an_op_with_a_huge_logical_is_refused_and_the_node_keeps_stamping_encodable_ops() -> None:
    """Reproduction (issue 15): one op with wall = now + 400 ms and logical = 2**32 was admitted, the
    replica's HLC adopted it, and its own next orders were stamped above the wire limit (every peer
    dropped them as malformed). Now the op is refused as invalid and our stamps stay small."""
    from gossipbook.core.book import BUY, GTC
    from gossipbook.core.ops import NEW, Op
    from gossipbook.core.replica import Replica
    from gossipbook.core.wire import OpBatch, decode, encode

    now = 10**18
    r = Replica("n1", members=["n1", "n2"])
    bad = Op(now + 400_000_000, 1 << 32, "n2", 1, NEW, "GBX", "", BUY, 100, 1, GTC, "", "mallory")
    r.receive([bad], now)
    assert r.counters["invalid_ops"] == 1 and r.vv.get("n2", 0) == 0
    op, _ = r.submit_new("GBX", BUY, 100, 1, GTC, now + 1)
    assert op.logical < 1 << 24
    frame = encode(OpBatch([op]), "n1", 1, KEY)
    assert decode(frame, KEY).msg.ops == [op]
