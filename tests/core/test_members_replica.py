"""Membership ops in the op-set CRDT (core/replica.py with core/config_epoch.py).

The histories are real replicas stamping orders; the operator's removal is stamped by the node
that holds the removed member's ops up to the fence. Properties: any delivery order, batching and
duplication gives every replica the same op-set, books and configuration, equal to a replica that
only ever saw the ops the fence keeps; a removed member's later ops are refused (counted) or cut
where already held; finality stops waiting for it once its ops up to the fence are held, and never
goes back when a member is added; snapshots carry the configuration across compaction.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from gossipbook.core import BUY, GTC, SELL, Op, OpFenced, Replica, Timestamp
from gossipbook.core.config_epoch import MEMBER, add_target
from gossipbook.core.ops import TradeRevised
from gossipbook.core.wire import snapshot_from_bytes, snapshot_to_bytes

SYM = "GBX"
T0 = 1_000_000_000_000
LATE = 10**15
MEMBERS = ["n1", "n2", "n3"]


def replica(node: str, members: list[str] = MEMBERS) -> Replica:
    return Replica(node, members=members)


def stamp_orders(r: Replica, n: int, t: int, rnd: random.Random) -> list[Op]:
    out = []
    for i in range(n):
        op, _ = r.submit_new(SYM, rnd.choice((BUY, SELL)), rnd.randint(100, 102), rnd.randint(1, 3), GTC, t + i)
        out.append(op)
    return out


def history(rnd: random.Random, held: int, later: int) -> tuple[list[Op], list[Op], Op]:
    """n1, n2 and n3 trade; n1 holds n3's first ``held`` ops and removes it (fence ``held``); n3
    stamps ``later`` more it pushes to n2 only. Returns (every op, the ops the fence keeps, removal)."""
    n1, n2, n3 = replica("n1"), replica("n2"), replica("n3")
    ops = stamp_orders(n3, held, T0, rnd)
    n1.receive(ops, LATE)
    n2.receive(ops, LATE)
    ops += stamp_orders(n1, 3, T0 + 10, rnd) + stamp_orders(n2, 3, T0 + 10, rnd)
    rm, _ = n1.submit_member("n3", True, held, T0 + 100, account="operator")
    after = stamp_orders(n3, later, T0 + 50, rnd)  # stamped before n3 hears of its removal
    n2.receive(after, LATE)
    kept = ops + [rm]
    return kept + after, kept, rm


@settings(max_examples=40)
@given(st.integers(0, 5), st.integers(1, 4), st.randoms(use_true_random=False))
def test_any_delivery_gives_the_op_set_the_fence_keeps(held: int, later: int, rnd: random.Random) -> None:
    everything, kept, _rm = history(rnd, held, later)
    reference = replica("x")
    reference.receive(kept, LATE)
    for name in ("a", "b"):
        r = replica(name)
        stream = everything + rnd.sample(everything, len(everything) // 3)
        rnd.shuffle(stream)
        events = []
        while stream:
            k = rnd.randint(1, 4)
            events += r.receive(stream[:k], LATE)
            stream = stream[k:]
        assert r.digest() == reference.digest()
        assert r.version_vector() == reference.version_vector()
        assert r.vv.get("n3", 0) == held
        assert set(r.ops()) == set(reference.ops())
        assert r.config.epoch == 1 and r.fenced == {"n3": held} and "n3" not in r.members
        # every later op of n3 was refused or cut, and said so
        fenced = {e.op for e in events if isinstance(e, OpFenced)}
        assert fenced <= set(everything) - set(kept) and fenced
        assert r.counters["fenced"] >= 1


def test_ops_held_above_the_fence_are_cut_and_their_trades_revised() -> None:
    n1, n3 = replica("n1"), replica("n3")
    sell, _ = n3.submit_new(SYM, SELL, 100, 1, GTC, T0)
    n1.receive([sell], LATE)
    buy, _ = n3.submit_new(SYM, BUY, 100, 1, GTC, T0 + 5)  # crosses: a trade made by n3's op 2
    r = replica("n2")
    ev = r.receive([sell, buy], LATE)
    assert r.trade_count == 1 and ev
    rm, _ = n1.submit_member("n3", True, 1, T0 + 100, account="operator")
    ev = r.receive([rm], LATE)
    assert OpFenced(buy) in ev
    assert any(isinstance(e, TradeRevised) and e.new is None for e in ev)  # the trade is undone, said so
    assert r.trade_count == 0 and r.vv["n3"] == 1 and r.counters["fenced_cut"] == 1
    assert r.receive([buy], LATE) == [OpFenced(buy)]  # and refused from then on
    assert r.vv["n3"] == 1


def test_finality_stops_waiting_for_a_removed_member_once_its_ops_are_held() -> None:
    n1, n2, n3 = replica("n1"), replica("n2"), replica("n3")
    op3, _ = n3.submit_new(SYM, SELL, 100, 1, GTC, T0)
    n1.receive([op3], LATE)
    n1.observe("n3", n3.hlc.last, 1, T0)  # n3's last words, then it dies
    n1_ops = stamp_orders(n1, 2, T0 + 1_000, random.Random(1))
    n2_ops = stamp_orders(n2, 2, T0 + 1_000, random.Random(2))
    r = replica("n2")
    r.receive(n1_ops + n2_ops, LATE)
    r.observe("n3", n3.hlc.last, 1, T0)
    r.observe("n1", n1.hlc.last, 2, T0 + 2_000)
    stalled = r.watermark()
    assert stalled < Timestamp(n1_ops[-1].wall, 0)  # waits for n3 (and for op n3:1 it lacks)
    rm, _ = n1.submit_member("n3", True, 1, T0 + 3_000, account="operator")
    r.receive([rm], LATE)
    r.observe("n1", n1.hlc.last, 3, T0 + 4_000)
    assert r.watermark() == stalled  # fence 1, n3:1 not held yet: still waiting, and never back
    r.receive([op3], LATE)
    assert r.watermark() > Timestamp(n1_ops[-1].wall, 0)  # n3 no longer counts
    assert r.final_count() == len(r.ops())


def test_an_added_member_counts_from_its_add_op_and_the_watermark_never_goes_back() -> None:
    n1, r = replica("n1", ["n1", "n2"]), replica("n2", ["n1", "n2"])
    ops = stamp_orders(n1, 2, T0, random.Random(3))
    r.receive(ops, LATE)
    r.observe("n1", n1.hlc.last, 2, T0 + 10)
    before = r.watermark()
    add, _ = n1.submit_member(add_target("n5", "127.0.0.1:7405"), False, 0, T0 + 20, account="operator")
    n5 = replica("n5", ["n1", "n2", "n5"])
    n5.receive(ops + [add], LATE)  # a joining node learns the configuration first
    early, _ = n5.submit_new(SYM, BUY, 100, 1, GTC, T0 + 5)  # its clock is behind: the HLC is not
    assert (early.wall, early.logical) > (add.wall, add.logical)
    assert r.receive([early], LATE) == [] and r.counters["non_member_ops"] == 1  # not a member yet
    r.receive([add], LATE)
    assert "n5" in r.members and r.config.epoch == 1
    assert r.watermark() >= before  # the floor: the new member cannot stamp at or below its add
    assert r.watermark() <= Timestamp(add.wall, add.logical)
    r.receive([early], LATE)
    assert r.vv["n5"] == 1


def test_a_batch_holding_an_add_and_the_new_members_ops_keeps_them() -> None:
    """Storage reloads every op in one batch: the added member's ops must not be refused for
    coming in the same batch as its add op."""
    n1 = replica("n1", ["n1", "n2"])
    add, _ = n1.submit_member(add_target("n5", "127.0.0.1:7405"), False, 0, T0, account="operator")
    n5 = replica("n5", ["n1", "n2", "n5"])
    n5.receive([add], LATE)
    mine = stamp_orders(n5, 2, T0 + 1, random.Random(4))
    r = replica("n2", ["n1", "n2"])
    r.receive(mine + [add], LATE)
    assert r.vv == {"n1": 1, "n5": 2} and r.counters["non_member_ops"] == 0


def test_snapshots_carry_the_configuration() -> None:
    n1 = Replica("n1", members=["n1"])
    add, _ = n1.submit_member(add_target("n5", "127.0.0.1:7405"), False, 0, T0, account="operator")
    stamp_orders(n1, 3, T0 + 1, random.Random(5))
    rm, _ = n1.submit_member("n5", True, 0, T0 + 10, account="operator")
    assert n1.compact() == 5 and not n1.ops()  # alone: everything final and compacted
    snap = snapshot_from_bytes(snapshot_to_bytes(n1.snapshot()))
    assert [op.kind for op in snap.config] == [MEMBER, MEMBER]
    joiner = Replica("n9", members=["n1", "n9"])
    joiner.install_snapshot(snap, T0 + 20)
    assert joiner.digest() == n1.digest()
    assert joiner.config.epoch == 2 and joiner.fenced.get("n5") == 0 and "n5" not in joiner.members
    assert joiner.config.address("n5") == "127.0.0.1:7405"


def test_a_removed_node_stamps_nothing_more() -> None:
    n1, n2 = replica("n1"), replica("n2")
    rm, _ = n1.submit_member("n2", True, 0, T0, account="operator")
    n2.receive([rm], LATE)
    assert n2.removed
    try:
        n2.submit_new(SYM, BUY, 100, 1, GTC, T0 + 1)
    except Exception as e:  # noqa: BLE001 - the message is what a client sees
        assert "removed" in str(e)
    else:
        raise AssertionError("a removed node stamped an order")
    assert n2.vv.get("n2", 0) == 0


def test_only_the_operator_changes_membership() -> None:
    n1 = replica("n1")
    forged = Op(T0, 0, "n1", 1, MEMBER, "", "n3", 1, 0, 0, 0, "", "alice")
    r = replica("n2")
    r.receive([forged], LATE)
    assert r.config.epoch == 0 and "n3" in r.members and r.counters["invalid_ops"] == 1
    try:
        n1.submit_member("n3", True, 0, T0, account="alice")
    except Exception as e:  # noqa: BLE001
        assert "operator" in str(e)
    else:
        raise AssertionError("a non-operator stamped a membership change")


def test_a_second_add_seen_first_does_not_raise_the_floor_past_the_first() -> None:
    """Two adds of one member (an operator's retry through another node): a replica that holds the
    later one first must lower the new member's floor once the earlier one comes, or it could call
    final an op the member stamped between the two (it only needs to hold one of them to stamp)."""
    n1, n2 = replica("n1"), replica("n2")
    first, _ = n1.submit_member(add_target("n5", "127.0.0.1:7405"), False, 0, T0, account="operator")
    second, _ = n2.submit_member(add_target("n5", "127.0.0.1:7405"), False, 0, T0 + 1_000, account="operator")
    r = replica("n3")
    r.receive([second], LATE)
    assert r._floor["n5"] == Timestamp(second.wall, second.logical)
    r.receive([first], LATE)
    assert r._floor["n5"] == Timestamp(first.wall, first.logical)
    assert r.config.epoch == 1  # one change, twice
