"""Bugs the simulator found, each as the seed that found it and, where it fits in a few lines, a
minimal reproduction against the core directly.

Seeds are replayable with the command in each docstring. Where the core has been fixed, a second
test puts the old code back (monkeypatched, restored afterwards) and checks the seed still catches
it, so these stay honest as the simulator and the core change.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from gossipbook import compiled
from gossipbook.core import BUY, GTC, NEW, SELL, Book, Op, Replica, Timestamp
from gossipbook.core import node as node_mod
from gossipbook.core.node import ACCEPTED, FINAL, REPLICATED, NodeCore
from gossipbook.core.wire import ClientReply, ClientSubmit, Heartbeat
from gossipbook.sim import T0, run_seed

from .conftest import FIVE, SMALL, explain

#: these put old code back by patching ``Replica``, which a compiled build (setup.py) cannot have
#: patched: there they skip, and .ci/run runs this file again with GOSSIPBOOK_PURE=1
needs_pure = pytest.mark.skipif(compiled(), reason="patches the pure-Python Replica: run with GOSSIPBOOK_PURE=1")


@contextmanager
def patched(cls: type, name: str, make: Callable[[Any], Any]) -> Iterator[None]:
    orig = cls.__dict__[name]
    setattr(cls, name, make(orig))
    try:
        yield
    finally:
        setattr(cls, name, orig)


# ---- compaction built its snapshot from a checkpoint above the compacted prefix -----------------
@pytest.mark.seed(1041)
def test_seed_1041_restart_from_snapshot_keeps_the_fold() -> None:
    """``gossipbook sim --nodes 5 --seed 1041 --duration 10 --orders 200 --bound 20``

    Found (as seed 1007 of an earlier nemesis): a node restarted from its disk and then folded
    different trades than everyone else
    (``final_disagree``, no convergence): the compaction snapshot it wrote held the *live* books.
    ``Replica._prune_checkpoints`` drops every checkpoint below the final prefix, checkpoint 0 (the
    snapshot's own books) included; ``compact`` then compacts a shorter prefix ``k`` (only what every
    member holds), finds no checkpoint at or below ``k``, and ``bisect_right(...) - 1 == -1`` picks
    ``self._ckpts[-1]``: the newest checkpoint, whose books include orders above ``k``.
    """
    r = run_seed(1041, FIVE)
    assert r.ok, explain([r])


def _old_prune(_orig: Any) -> Any:
    def _prune_checkpoints(self: Replica) -> None:  # before the fix: checkpoint 0 dropped too
        fc = self.final_count()
        i = bisect_right([c.pos for c in self._ckpts], fc) - 1
        if i > 0:
            del self._ckpts[:i]
    return _prune_checkpoints


@needs_pure
@pytest.mark.parametrize("seed", [1095, 1127])
def test_the_old_checkpoint_pruning_is_caught(seed: int) -> None:
    """Whether a seed reaches the pruning case depends on the gossip's schedule: 1041 needed the
    repair hold switched off between the hold (4bd391f) and one-peer-per-gap catch-up; with the
    latter it reaches it with the defaults again, and so does 1095 (a search of seeds 1000-1095
    with the old pruning patched in). The workload's hostile requests and mass cancels (issue 14)
    changed the flow: a search of seeds 1000-1399 then hit 1095, 1127 and 1369 (1041 no longer).
    If a gossip or workload change moves them, search again the same way."""
    with patched(Replica, "_prune_checkpoints", _old_prune):
        r = run_seed(seed, FIVE)
    assert {"final_disagree", "convergence"} & set(r.violation_counts), explain([r])


def test_compaction_snapshot_is_the_fold_of_the_compacted_prefix() -> None:
    """The minimal reproduction of seed 1041, on one replica."""
    rep = Replica("a", members=["a", "b"], checkpoint_interval=1)
    now = 1_000_000_000
    ops = []
    for i in range(10):  # crossing orders keep the book small, so a checkpoint lands on every op
        now += 1000
        op, _ = rep.submit_new("GBX", BUY if i % 2 == 0 else SELL, 1000 + i // 2, 1 + i % 3, GTC, now)
        ops.append(op)
    rep.observe("b", Timestamp(now + 10, 0), 0, now)  # all of a's ops final: checkpoints pruned
    rep.observe_vv("b", {"a": 3})  # but b holds only a:1..3, so only they may be compacted
    assert rep.compact() == 3
    model = Book("GBX")
    for op in ops[:3]:
        model.submit(op.op_id, op.side, op.price, op.qty, op.tif)
    assert rep.snapshot().books["GBX"] == model.entries()  # (a snapshot keeps each order's account)


# ---- a 'final' ack listed trades that were still provisional -----------------------------------
@pytest.mark.seed(6)
def test_seed_6_final_ack_lists_only_final_trades() -> None:
    """``gossipbook sim --nodes 3 --seed 6 --duration 10 --orders 150 --bound 15``

    Found twice. First (fixed in bf689e9): a parked ``final`` request replied with the trades it
    had collected as ``TradeExecuted`` events while waiting, never updated by ``TradeRevised``.
    Then: the reply lists every trade of the order in the fold, including trades where it is the
    *maker* for a later taker op that is still above the watermark; 50 ms after n1 acked
    ``client-3-117`` as final with trade ``n3:38/1``, that trade was revised away. A trade in a
    final ack should be final: list only trades of ops at or below the watermark.
    """
    r = run_seed(6, SMALL)
    assert r.ok, explain([r])


# ---- 'replicated' was acknowledged for an op on one disk ---------------------------------------
def _old_level(_orig: Any) -> Any:
    def _level(self: NodeCore, op: Op) -> int:  # before bf689e9: final did not imply replicated
        if self.replica.is_final(op):
            return FINAL
        if self.replica.replicated(op):
            return REPLICATED
        return ACCEPTED
    return _level


@pytest.mark.seed(1)
def test_seed_1_replicated_ack_needs_a_majority_of_disks() -> None:
    """``gossipbook sim --nodes 3 --seed 1 --duration 10 --orders 150 --bound 15`` (fixed in bf689e9)

    Found: ``ack_unreplicated``: a node whose clock runs behind its peers' stamps an op already
    below every peer's announced HLC, so the op is *final* at once; ``_level`` returned FINAL before
    checking ``replicated``, and a ``replicated`` wait was answered with one disk holding the op.
    """
    r = run_seed(1, SMALL)
    assert r.ok, explain([r])


def test_seed_1_catches_the_old_ack_levels() -> None:
    with patched(NodeCore, "_level", _old_level):
        r = run_seed(1, SMALL)
    assert "ack_unreplicated" in r.violation_counts, explain([r])


def test_a_final_op_on_one_disk_is_not_replicated() -> None:
    """The minimal reproduction: peers' heartbeats announce HLCs above what n1 stamps next."""
    core = NodeCore("n1", ["n1", "n2", "n3"], rng=random.Random(1), recovered=True)
    core.tick(T0)
    core.outbox()
    for p in ("n2", "n3"):
        core.receive(Heartbeat(T0 + 100_000_000, 0, 0, {}), p, None, T0 + 1000)
    core.receive(ClientSubmit("r1", NEW, "GBX", "", BUY, 10_000, 5, GTC, REPLICATED, 3000), "c1", ("c", 1), T0 + 2000)
    op = core.replica.ops()[0]
    assert core.replica.is_final(op) and not core.replica.replicated(op)
    assert not [m for _, m in core.outbox() if isinstance(m, ClientReply) and m.code == node_mod.OK]


# ---- a rollback of provisional ops was counted as a finality violation --------------------------
def _old_fold_in(orig: Any) -> Any:
    def _fold_in(self: Replica, fresh: list[Op], final_count: int) -> Any:
        return orig(self, fresh, self.final_count())  # before the fix: counted after the vv moved
    return _fold_in


@pytest.mark.seed(2)
def test_seed_2_no_false_finality_violation() -> None:
    """``gossipbook sim --nodes 3 --seed 2 --duration 10 --orders 150 --bound 15`` (fixed in the core)

    Found: ``finality_counter``: ``_fold_in`` compared the rollback point with ``final_count()``
    *after* ``_admit`` had advanced the version vector with the very op being folded, which
    completed the origin's announced seq and lifted the watermark over ops that had never been final.
    """
    r = run_seed(2, SMALL)
    assert r.ok, explain([r])


@needs_pure
def test_seed_2_catches_the_old_finality_count() -> None:
    with patched(Replica, "_fold_in", _old_fold_in):
        r = run_seed(2, SMALL)
    assert "finality_counter" in r.violation_counts, explain([r])


def test_a_late_op_below_provisional_ops_is_not_a_finality_violation() -> None:
    a = Replica("a", members=["a", "b"])
    t = 1_000_000_000
    late = Op(t + 100, 0, "b", 1, NEW, "GBX", "", SELL, 10_000, 5, GTC, "")
    a.observe("b", Timestamp(t + 500, 0), 1, t + 500)  # b announced b:1; a does not hold it yet
    a.submit_new("GBX", BUY, 10_000, 5, GTC, t + 200)
    assert a.final_count() == 0
    a.receive([late], t + 600)  # lands below a:1: a rollback of nothing final
    assert a.counters["finality_violations"] == 0


# ---- an op held back by the clock bound was applied when the gap below it filled ----------------
@pytest.mark.seed(11)
def test_seed_11_no_op_applied_beyond_max_offset() -> None:
    """``gossipbook sim --nodes 3 --seed 11 --duration 10 --orders 150 --bound 15`` (fixed in the core)

    Found (as seed 4 of an earlier nemesis): ``hlc_offset``: "applied n2:9: wall is 563.6 ms ahead
    of n3's clock". ``Replica._pending``
    holds both ops waiting behind a gap and ops held back by the clock; when the gap filled,
    ``_admit`` drained every waiting successor without looking at the clock bound, so an op stamped
    beyond ``now + max_offset`` was applied and the HLC adopted its wall (DESIGN invariant 4).
    """
    r = run_seed(11, SMALL)
    assert r.ok, explain([r])


def test_filling_a_gap_does_not_admit_an_op_beyond_the_clock_bound() -> None:
    from gossipbook.core.hlc import DEFAULT_MAX_OFFSET_NS as M

    now = 10**12
    rep = Replica("a", members=["a", "b"])
    near = Op(now + M - 10, 0, "b", 1, NEW, "GBX", "", BUY, 10_000, 1, GTC, "")
    far = Op(now + M + 10**8, 0, "b", 2, NEW, "GBX", "", BUY, 10_000, 1, GTC, "")
    rep.receive([far], now)  # 100 ms beyond the bound (and behind a gap): held back
    rep.receive([near], now)  # fills the gap; b:2 is still beyond the bound
    assert rep.vv == {"b": 1}
    assert rep.hlc.wall <= now + M
    rep.tick(now + 2 * 10**8)  # once the clock is within bound, tick admits it
    assert rep.vv == {"b": 2}


# ---- a retried request after a restart was acked without its trades, or as a second order -------
def _crash_loop_config() -> Any:
    """n1 crashes and restarts every 0.8 s (20 ms down) while clients keep sending to it."""
    from gossipbook.sim import NodeClock, SimConfig, scripted

    steps = []
    for i in range(10):
        steps += [(1.0 + i * 0.8, "crash", "n1"), (1.02 + i * 0.8, "restart", "n1")]
    return SimConfig(nodes=3, duration_s=10, orders=400, bound_s=15, faults=(),
                     clocks={"n1": NodeClock(0), "n2": NodeClock(300_000_000), "n3": NodeClock(0)},
                     script=scripted(steps))


@pytest.mark.seed(3)
def test_seed_3_a_retry_after_restart_reports_the_orders_trades() -> None:
    """``run_seed(3, _crash_loop_config())`` (scripted: n1 crash-loops; no CLI form)

    Found: ``final_ack_trades``: "final ack of n1:105 reports its trades as [], the final ones are
    [n1:105/0, n1:105/1]". n1 stamped n1:105 for ``client-3-359`` (a market order that traded),
    crashed before the reply left, restarted, and answered the client's retry (same request id) with
    no trades: ``Replica.submit_new`` returns the prior op with no events, and ``NodeCore._submit``
    settles it with ``fresh=True``, i.e. with the trades of *this* call's events.
    Fix: when ``submit_new`` hands back a prior op, settle with the fold's trades (``fresh=False``).
    """
    r = run_seed(3, _crash_loop_config())
    assert r.ok, explain([r])


@pytest.mark.seed(20)
def test_seed_20_a_retried_final_request_reports_the_orders_trades() -> None:
    """``gossipbook sim --nodes 5 --seed 20`` (the defaults: 60 s, 1000 orders, every fault)

    The same bug as seed 3, found by the random nemesis in ``--seeds 500``: "final ack of n4:61
    reports its trades as [], the final ones are [n4:61/0, n4:61/1]".
    """
    from gossipbook.sim import SimConfig

    r = run_seed(20, SimConfig())
    assert r.ok, explain([r])


def test_a_retry_after_restart_names_the_same_order_and_its_fills() -> None:
    """The minimal reproduction: a one-node cluster, a trade, a restart from disk, the same request
    again. The retry must name the order the request placed, with its fill. It used to name a new,
    no-op order (``n1:3``, after compaction turned the request's entry into a string) with no fills."""
    from gossipbook.core.node import ACCEPTED as ACC

    t = T0
    core = NodeCore("n1", ["n1"], rng=random.Random(1))
    core.tick(t)
    core.receive(ClientSubmit("r0", NEW, "GBX", "", SELL, 10_000, 5, GTC, ACC, 3000), "c1", "c", t + 1000)
    core.receive(ClientSubmit("r1", NEW, "GBX", "", BUY, 10_000, 5, GTC, ACC, 3000), "c1", "c", t + 2000)
    first = next(m for _, m in core.outbox() if isinstance(m, ClientReply) and m.req == "r1")
    assert first.order_id == "n1:2" and len(first.trades) == 1
    disk = core.take_new_ops()
    again = NodeCore("n1", ["n1"], rng=random.Random(2), hlc_last=core.replica.hlc.last, incarnation=1)
    again.replica.receive(disk, t + 10**6)  # what storage.load_into does
    again.take_new_ops()
    again.tick(t + 10**6)
    again.receive(ClientSubmit("r1", NEW, "GBX", "", BUY, 10_000, 5, GTC, ACC, 3000), "c1", "c", t + 2 * 10**6)
    retry = next(m for _, m in again.outbox() if isinstance(m, ClientReply) and m.req == "r1")
    assert retry.order_id == first.order_id
    assert retry.trades == first.trades


@pytest.mark.seed(199)
def test_seed_199_strong_a_restarted_node_said_no_quorum_for_a_request_it_had_relayed() -> None:
    """``gossipbook sim --mode strong --nodes 5 --seed 199`` (the defaults)

    Found by the first ``--mode strong --seeds 300`` sweep: "n2 answered request client-1-310 'no
    quorum' at 16.405s, but it committed at index 252". n2 relayed the request to the leader at
    15.705 s, crashed at 15.718 s and restarted at 15.760 s; the client's retry reached the new
    process, which knew no leader and said "no quorum: nothing was submitted", while the first
    relay committed. Fix: the ids of requests handed to a leader are durable before the relay
    leaves (``StrongNodeCore.take_handed``, storage record kind 3), and a restarted node treats
    them as handed over (outcome unknown: a timeout, never "no quorum").
    """
    from gossipbook.sim import SimConfig

    r = run_seed(199, SimConfig(mode="strong"))
    assert r.ok, explain([r])
