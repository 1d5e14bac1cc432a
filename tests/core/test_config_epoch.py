"""The configuration as a set function of membership ops (core/config_epoch.py), and the SWIM and
gossip layers following it.

Laws: any order, duplication or split-and-merge of the same membership ops gives the same members,
fences, addresses and epoch (that is what lets the replica take a membership op when it is admitted,
never undoing it on a replay). Removed is final. Bounds hold against a flood. The stamping node's
checks refuse with one line and say what to do.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gossipbook.core.config_epoch import (
    ADD,
    MAX_CHANGES,
    MAX_IDS,
    MEMBER,
    REMOVE,
    REPORT_SLACK_NS,
    Configuration,
    Contacts,
    MembershipRefused,
    add_target,
    check_add,
    check_remove,
    valid_op,
)
from gossipbook.core.errors import InvalidOrder, RemoteError
from gossipbook.core.gossip import Gossip
from gossipbook.core.membership import Gossip as MemberGossip
from gossipbook.core.membership import Membership, Probe
from gossipbook.core.ops import Op
from gossipbook.core.replica import Replica

MS = 1_000_000


def mop(origin: str, seq: int, wall: int, side: int, target: str, fence: int = 0, account: str = "operator") -> Op:
    return Op(wall, 0, origin, seq, MEMBER, "", target, side, 0, fence, 0, "", account)


def add(origin: str, seq: int, wall: int, member: str, port: int) -> Op:
    return mop(origin, seq, wall, ADD, add_target(member, f"127.0.0.1:{port}"))


def rm(origin: str, seq: int, wall: int, member: str, fence: int) -> Op:
    return mop(origin, seq, wall, REMOVE, member, fence)


def view(c: Configuration) -> tuple:
    return (c.members, dict(c.fences), c.addresses(), c.epoch, {m: c.floor(m) for m in sorted(c.members)})


@st.composite
def membership_ops(draw: st.DrawFn) -> list[Op]:
    """A history of adds and removes (some of the same member, some twice, some address moves)."""
    n = draw(st.integers(1, 14))
    ops = []
    for i in range(n):
        member = draw(st.sampled_from(["n1", "n2", "n3", "n4", "n5", "n6"]))
        origin = draw(st.sampled_from(["n1", "n2", "n3"]))
        wall = draw(st.integers(1, 50))
        if draw(st.booleans()):
            ops.append(add(origin, i + 1, wall, member, draw(st.sampled_from([7401, 7402, 7405]))))
        else:
            ops.append(rm(origin, i + 1, wall, member, draw(st.integers(0, 9))))
    return ops


@given(membership_ops(), st.randoms(use_true_random=False))
def test_any_order_or_duplication_gives_the_same_configuration(ops: list[Op], rnd: random.Random) -> None:
    a = Configuration(["n1", "n2", "n3"])
    for op in ops:
        a.apply(op)
    shuffled = ops + rnd.sample(ops, len(ops) // 2)
    rnd.shuffle(shuffled)
    b = Configuration(["n1", "n2", "n3"])
    for op in shuffled:
        b.apply(op)
    assert view(a) == view(b)
    # the epoch counts distinct changes, so a duplicate op, or the same change twice, is one step
    assert a.epoch == len({(o.side, o.order_id) for o in ops})


@given(membership_ops(), st.randoms(use_true_random=False))
def test_split_then_merge_equals_one_replica_holding_all(ops: list[Op], rnd: random.Random) -> None:
    """Two replicas that each saw part of the history, merged through a snapshot's ops, agree
    with one that saw all of it (the snapshot path of a joining node)."""
    left, right = Configuration(["n1", "n2", "n3"]), Configuration(["n1", "n2", "n3"])
    for op in ops:
        (left if rnd.random() < 0.5 else right).apply(op)
    left.merge(right.ops())
    right.merge(left.ops())
    whole = Configuration(["n1", "n2", "n3"])
    whole.merge(ops)
    assert view(left) == view(right) == view(whole)


@given(membership_ops())
def test_removed_is_final_and_the_fence_is_the_largest(ops: list[Op]) -> None:
    c = Configuration(["n1", "n2", "n3"])
    c.merge(ops)
    for m in {o.order_id for o in ops if o.side == REMOVE}:
        assert not c.is_member(m)
        assert c.fences[m] == max(o.qty for o in ops if o.side == REMOVE and o.order_id == m)
    for m in c.members:
        assert not c.removed(m)


def test_address_moves_with_the_latest_add_and_the_floor_stays_at_the_first() -> None:
    c = Configuration(["n1", "n2", "n3"])
    assert c.apply(add("n1", 1, 100, "n5", 7405)) is not None
    assert c.address("n5") == "127.0.0.1:7405" and c.floor("n5") == (100, 0)
    assert c.apply(add("n2", 1, 200, "n5", 7406)) is not None
    assert c.apply(add("n3", 1, 150, "n5", 7407)) is None  # older than the move: no change
    assert c.address("n5") == "127.0.0.1:7406" and c.floor("n5") == (100, 0)
    assert c.epoch == 3
    assert c.floor("n1") is None  # initial members never had an add op


def test_roles() -> None:
    c = Configuration(["n1", "n2", "n3", "n4"])
    c.apply(add("n1", 1, 100, "n5", 7405))
    c.apply(rm("n1", 2, 101, "n3", 4))
    states = {"n1": "alive", "n2": "left", "n4": "dead", "n5": "alive"}
    assert c.roles(states, heard=[]) == {"n1": "voter", "n2": "leaving", "n3": "removed", "n4": "voter",
                                          "n5": "learner"}
    assert c.roles(states, heard=["n5"])["n5"] == "voter"
    st_ = c.status(states, ["n5"])
    assert st_["epoch"] == 2 and st_["fences"] == {"n3": 4} and st_["addresses"] == {"n5": "127.0.0.1:7405"}


@pytest.mark.parametrize("bad", [
    mop("n1", 1, 5, ADD, "n5@127.0.0.1:7405", account="alice"),  # not the operator
    mop("n1", 1, 5, ADD, "n5"),  # no address
    mop("n1", 1, 5, ADD, "n5@nowhere"),  # no port
    mop("n1", 1, 5, ADD, "n5@h:0"),
    mop("n1", 1, 5, ADD, "bad id@h:1"),
    mop("n1", 1, 5, ADD, "n5@h:1", fence=3),  # an add carries no fence
    mop("n1", 1, 5, REMOVE, "n5@h:1"),  # a remove names an id alone
    Op(5, 0, "n1", 1, MEMBER, "SYM", "n5", REMOVE, 0, 0, 0, "", "operator"),  # a symbol
    Op(5, 0, "n1", 1, MEMBER, "", "n5", REMOVE, 0, 0, 0, "req-1", "operator"),  # a request id
])
def test_malformed_ops_change_nothing(bad: Op) -> None:
    assert not valid_op(bad)
    c = Configuration(["n1", "n2"])
    assert c.apply(bad) is None
    assert c.epoch == 0 and c.members == {"n1", "n2"}


def test_a_flood_of_changes_is_bounded_and_counted() -> None:
    c = Configuration(["n1"])
    for i in range(MAX_IDS + 10):
        c.apply(add("n1", i + 1, i + 1, f"x{i}", 1000 + i % 60000))
    assert len(c.members) + len(c.fences) == MAX_IDS
    assert c.counters["member_ops_refused"] == 11
    for i in range(MAX_CHANGES):  # moves of known members: no new ids, but the op count is capped
        c.apply(add("n2", i + 1, 10_000 + i, "x1", 2000 + i % 60000))
    assert len(c.ops()) == MAX_CHANGES
    assert c.counters["member_ops_refused"] > 11


def test_check_add_refusals() -> None:
    c = Configuration(["n1", "n2", "n3"])
    files = {"n1": "127.0.0.1:7401", "n2": "127.0.0.1:7402", "n3": "127.0.0.1:7403"}
    assert check_add(c, "n1", "n5", "127.0.0.1:7405", files) == "n5@127.0.0.1:7405"
    with pytest.raises(MembershipRefused, match="n2's address"):
        check_add(c, "n1", "n5", "127.0.0.1:7402", files)
    with pytest.raises(MembershipRefused, match="already a member"):
        check_add(c, "n1", "n2", "127.0.0.1:7402", files)
    with pytest.raises(InvalidOrder, match="HOST:PORT"):
        check_add(c, "n1", "n5", "nowhere", files)
    c.apply(rm("n1", 1, 5, "n3", 0))
    with pytest.raises(MembershipRefused, match="never reused"):
        check_add(c, "n1", "n3", "127.0.0.1:7409", files)


def test_check_remove_waits_for_every_remaining_member_to_report_after_the_dead_one() -> None:
    c = Configuration(["n1", "n2", "n3", "n4"])
    now = 10_000 * MS
    heard = {"n3": now - 2_000 * MS, "n2": now, "n4": now}
    fresh = {"n2": now - 10 * MS, "n4": now - 20 * MS}
    vv = {"n3": 7}
    assert check_remove(c, "n1", "n3", vv, {"n2": {"n3": 7}, "n4": {"n3": 5}}, heard, fresh, now) == 7
    with pytest.raises(MembershipRefused, match="retry in a moment"):  # n2 holds more of n3 than we do
        check_remove(c, "n1", "n3", vv, {"n2": {"n3": 9}}, heard, fresh, now)
    stale = {"n2": now - 10 * MS, "n4": heard["n3"] + REPORT_SLACK_NS - 1}
    with pytest.raises(MembershipRefused, match="n4 has not reported"):
        check_remove(c, "n1", "n3", vv, {}, heard, stale, now)
    with pytest.raises(MembershipRefused, match="n4 has not reported"):  # --force waives the rest only
        check_remove(c, "n1", "n3", vv, {}, heard, stale, now, force=True)
    assert check_remove(c, "n1", "n3", vv, {}, heard, stale, now, learners=["n4"]) == 7  # never heard from
    assert check_remove(c, "n1", "n3", vv, {}, heard, stale, now, together=["n4"]) == 7  # removed with n3
    talking = {**heard, "n3": now - MS}
    with pytest.raises(MembershipRefused, match="stop it first"):  # still talking
        check_remove(c, "n1", "n3", vv, {}, talking, fresh, now)
    later = {"n2": now + REPORT_SLACK_NS, "n4": now + REPORT_SLACK_NS}
    assert check_remove(c, "n1", "n3", vv, {}, talking, later, now + REPORT_SLACK_NS, force=True) == 7
    # a report after the removed member was last heard *here* but long ago: a partition may have cut
    # it off from us and not from them, so an old report says nothing of what it pushed them since
    old_news = {"n2": heard["n3"] + REPORT_SLACK_NS + 1, "n4": now - 10 * MS}
    with pytest.raises(MembershipRefused, match="n2 has not reported"):
        check_remove(c, "n1", "n3", vv, {}, heard, old_news, now)
    with pytest.raises(MembershipRefused, match="itself"):
        check_remove(c, "n1", "n1", vv, {}, heard, fresh, now)
    with pytest.raises(MembershipRefused, match="not a member"):
        check_remove(c, "n1", "n9", vv, {}, heard, fresh, now)
    c.apply(rm("n2", 1, 5, "n3", 7))
    with pytest.raises(MembershipRefused, match="already removed"):
        check_remove(c, "n1", "n3", vv, {}, heard, fresh, now)


def test_contacts() -> None:
    k = Contacts()
    k.on_message("n2", 5, report=False)
    k.on_message("n2", 9, report=True)
    assert k.heard["n2"] == 9 and k.reported["n2"] == 9
    k.forget("n2")
    assert "n2" not in k.reported


# ---- SWIM and gossip follow the configuration ------------------------------------------------------
def test_swim_probes_an_added_member_and_forgets_a_removed_one() -> None:
    m = Membership("n1", ["n2", "n3"], random.Random(1))
    assert m.add_member("n5") and not m.add_member("n5") and not m.add_member("n1")
    targets = set()
    t = 0
    for _ in range(20):
        m.tick(t)
        targets |= {dst for dst, msg in m.outbox() if isinstance(msg, Probe)}
        t += 200 * MS
    assert "n5" in targets
    assert m.remove_member("n3") and not m.remove_member("n3")
    assert "n3" not in m.states() and m.counters["members_removed"] == 1
    with pytest.raises(RemoteError) as e:
        m.receive(MemberGossip(1, ()), "n3", t)
    assert e.value.reason == "unknown_member"
    for _ in range(20):
        m.tick(t)
        assert all(dst != "n3" for dst, _msg in m.outbox())
        t += 200 * MS


def test_gossip_follows_the_configuration() -> None:
    g = Gossip(Replica("n1", members=["n1", "n2"]), ["n2"], random.Random(1))
    g.add_peer("n5")
    assert g.peers == ["n2", "n5"] and "n5" in g.live
    g.tick(0)
    assert {dst for dst, _m in g.outbox()} >= {"n5"}  # a heartbeat at once
    g.remove_peer("n5")
    assert g.peers == ["n2"] and "n5" not in g.live
    g.tick(10_000 * MS)
    assert all(dst != "n5" for dst, _m in g.outbox())
