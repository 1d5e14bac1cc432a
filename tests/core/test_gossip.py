"""Anti-entropy repair: a peer is answered with what it lacks, once per hold, and again after it."""

from __future__ import annotations

import random

import pytest

from gossipbook.core import BUY, GTC, SELL, Replica
from gossipbook.core.gossip import MS, Gossip, GossipConfig
from gossipbook.core.wire import Heartbeat, OpBatch, Summary

T0 = 1_000_000_000_000


def node_with_ops(n: int) -> tuple[Replica, Gossip]:
    r = Replica("a", members=["a", "b"])
    for i in range(n):
        r.submit_new("GBX", BUY if i % 2 else SELL, 9_000 + 100 * (i % 2) * 20 + i % 7, 1, GTC, T0 + i)
    return r, Gossip(r, ["b"], random.Random(1), GossipConfig(repair_hold_ns=300 * MS))


def repaired(g: Gossip) -> list[int]:
    return [op.seq for _dst, m in g.outbox() if type(m) is OpBatch for op in m.ops]


def test_a_repair_is_not_sent_again_within_the_hold_and_is_after_it() -> None:
    r, g = node_with_ops(100)
    t = T0 + 10**9
    g.receive(Summary({}, True), "b", t)
    assert repaired(g) == list(range(1, 101))
    g.receive(Summary({}, True), "b", t + 100 * MS)  # b is still folding the first answer
    assert repaired(g) == [] and g.counters["repair_held"] == 1
    g.receive(Summary({"a": 40}, True), "b", t + 200 * MS)
    assert repaired(g) == []
    for i in range(100, 110):  # new ops meanwhile: only they go
        r.submit_new("GBX", BUY, 8_000, 1, GTC, T0 + i)
    g.receive(Summary({"a": 40}, True), "b", t + 250 * MS)
    assert repaired(g) == list(range(101, 111))
    # the last repair went at +250 ms: a lost datagram is sent again 300 ms after that
    g.receive(Summary({"a": 40}, True), "b", t + 500 * MS)
    assert repaired(g) == []
    g.receive(Summary({"a": 40}, True), "b", t + 551 * MS)
    assert repaired(g) == list(range(41, 111))
    assert g.counters["repair_ops"] == 100 + 10 + 70


def test_no_hold_answers_every_summary_in_full() -> None:
    r, _g = node_with_ops(20)
    g = Gossip(r, ["b"], random.Random(1), GossipConfig(repair_hold_ns=0))
    for k in range(3):
        g.receive(Summary({}, True), "b", T0 + 10**9 + k * MS)
        assert repaired(g) == list(range(1, 21))


def test_a_negative_hold_is_refused() -> None:
    with pytest.raises(ValueError, match="repair_hold"):
        GossipConfig(repair_hold_ns=-1)


def catch_up() -> tuple[list, Gossip]:
    """1,200 ops of "a", and "b" that has none of them but knows (a's heartbeat) they exist."""
    a, _g = node_with_ops(1_200)
    b = Replica("b", members=["a", "b"])
    b.observe_vv("a", a.version_vector())
    return a.ops(), Gossip(b, ["a"], random.Random(2), GossipConfig(defer_ns=150 * MS, defer_min_ops=1_000))


def test_a_large_catch_up_is_folded_once_when_all_of_it_is_here() -> None:
    ops, g = catch_up()
    t = T0 + 10**9
    g.receive(OpBatch(ops[:1_100]), "a", t)
    assert g.fold_inbound() == [] and g.replica.vv.get("a", 0) == 0  # a's heartbeat says 100 more exist
    assert g.next_deadline() <= t + 150 * MS
    g.receive(OpBatch(ops[1_100:]), "a", t + 20 * MS)
    g.fold_inbound()
    assert g.replica.vv["a"] == 1_200 and g.replica.counters["replays"] <= 1


def test_a_held_catch_up_is_folded_when_the_rest_does_not_come() -> None:
    ops, g = catch_up()
    t = T0 + 10**9
    g.receive(OpBatch(ops[:1_100]), "a", t)
    wait = 150 * MS + 1_100 * 10_000  # defer_ns, plus defer_ns_per_op for each op waiting
    g.tick(t + wait - 1)
    assert g.replica.vv.get("a", 0) == 0
    g.tick(t + wait)  # the rest was lost: fold what is here, anti-entropy asks again
    assert g.replica.vv["a"] == 1_100


def test_live_traffic_is_never_held() -> None:
    ops, g = catch_up()
    g.receive(OpBatch(ops[:10]), "a", T0 + 10**9)
    g.fold_inbound()
    assert g.replica.vv["a"] == 10


# ---- one peer per gap -------------------------------------------------------------------------
def test_an_answer_leaves_out_what_the_summary_says_to_skip() -> None:
    _r, g = node_with_ops(100)
    g.receive(Summary({"a": 10}, True, {"a": 60}), "b", T0 + 10**9)
    assert repaired(g) == list(range(61, 101))


def test_a_large_answer_is_preceded_by_our_summary() -> None:
    """The peer learns how much is on its way before the ops arrive (so it holds its fold)."""
    _r, g = node_with_ops(1_200)
    g.receive(Summary({}, True), "b", T0 + 10**9)
    assert [type(m).__name__ for _d, m in g.outbox()] == ["Summary", "OpBatch"]
    _r, g = node_with_ops(20)  # small, and b holds nothing we lack: just the ops
    g.receive(Summary({}, True), "b", T0 + 10**9)
    assert [type(m).__name__ for _d, m in g.outbox()] == ["OpBatch"]


def _replica(nid: str, n: int, offset: int) -> Replica:
    r = Replica(nid, members=["a", "b", "c"])
    for i in range(n):  # crossing orders, interleaved in time with the other origins'
        r.submit_new("GBX", BUY if i % 2 else SELL, 9_000 + i % 5, 1, GTC, T0 + 3 * i + offset)
    return r


def _pump(gs: dict[str, Gossip], until: int, step: int = 10 * MS) -> dict[str, int]:
    """Deliver every message at once, tick every node each ``step``; ops received per node."""
    received = dict.fromkeys(gs, 0)
    now = T0 + 10**9
    while now < until:
        for g in gs.values():
            g.tick(now)
        moved = True
        while moved:
            moved = False
            for src, g in gs.items():
                for dst, msg in g.outbox():
                    moved = True
                    if type(msg) is OpBatch:
                        received[dst] += len(msg.ops)
                    gs[dst].receive(msg, src, now)
        now += step
    return received


def test_a_catch_up_is_sent_once_by_one_peer_and_folded_once() -> None:
    """b was cut off from a and c, which both hold a's and c's 1,500 ops each; b has 1,500 of its
    own, interleaved in time. Answers are limited to 1,000 ops, so b needs several; every op should
    reach b about once (not once per peer asked) and b should fold the catch-up in one replay."""
    a, b, c = _replica("a", 1_500, 0), _replica("b", 1_500, 1), _replica("c", 1_500, 2)
    a.receive(c.ops(), T0 + 10**9)
    c.receive(a.ops(), T0 + 10**9)
    cfg = GossipConfig(repair_burst=1_000, repair_ops_per_s=100_000)
    gs = {nid: Gossip(r, ["a", "b", "c"], random.Random(i), cfg) for i, (nid, r) in enumerate(
        (("a", a), ("b", b), ("c", c)))}
    b.counters["replays"] = 0
    received = _pump(gs, T0 + 4 * 10**9)
    assert a.digest() == b.digest() == c.digest() and b.op_count == 4_500
    assert received["b"] <= 3_300, received  # 3,000 needed; every peer answering in full sends 2x+
    assert b.counters["replays"] == 1


def test_the_fold_waits_for_a_gap_announced_after_the_batch() -> None:
    """A heartbeat announcing more arrives after a repair batch: the vv is learnt before the fold
    is decided, so the batch is held (and the gap asked for at once, not at the next round)."""
    ops, g = catch_up()
    g.replica._peer_vv.clear()  # b has not heard from a yet
    t = T0 + 10**9
    g.receive(OpBatch(ops[:1_100]), "a", t)
    hb = Heartbeat(T0 + 2_000, 0, 1_200, {"a": 1_200})
    g.receive(hb, "a", t + MS)
    assert g.replica.vv.get("a", 0) == 0 and g.pending == 1_100
    g.tick(t + 2 * MS)
    asked = [m for dst, m in g.outbox() if dst == "a" and type(m) is Summary]
    assert asked and asked[0].skip == {"a": 1_100}


def test_a_deep_catch_up_is_held_even_when_small() -> None:
    """200 ops landing below 1,200 of our own: folding now would replay the 1,200, so it waits for
    the rest the peer shows; 200 ops on top of the log would not."""
    a = _replica("a", 1_400, 0)
    b = _replica("b", 1_400, 1)
    b.observe_vv("a", a.version_vector())
    g = Gossip(b, ["a"], random.Random(2), GossipConfig(defer_min_ops=1_000))
    g.receive(OpBatch(a.ops()[:200]), "a", T0 + 10**9)
    g.fold_inbound()
    assert g.pending == 200 and b.replay_depth(a.ops()[0]) >= 1_000
    g.receive(OpBatch(a.ops()[200:]), "a", T0 + 10**9 + MS)
    g.fold_inbound()
    assert g.pending == 0 and b.vv["a"] == 1_400
