"""Anti-entropy repair: a peer is answered with what it lacks, once per hold, and again after it."""

from __future__ import annotations

import random

import pytest

from gossipbook.core import BUY, GTC, SELL, Replica
from gossipbook.core.gossip import MS, Gossip, GossipConfig
from gossipbook.core.wire import OpBatch, Summary

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
    g.tick(t + 149 * MS)
    assert g.replica.vv.get("a", 0) == 0
    g.tick(t + 150 * MS)  # the rest was lost: fold what is here, anti-entropy asks again
    assert g.replica.vv["a"] == 1_100


def test_live_traffic_is_never_held() -> None:
    ops, g = catch_up()
    g.receive(OpBatch(ops[:10]), "a", T0 + 10**9)
    g.fold_inbound()
    assert g.replica.vv["a"] == 10
