"""Bounded memory and no amplification from authenticated but hostile frames (issue 15; security
review 2da4a4d section 3 and section 5).

- ops of made-up origins are refused and counted, and version-vector entries of non-members are
  ignored: 1,100 made-up origins never make this node's vv, Summary or Heartbeat exceed the wire's
  1,024-entry cap (before: every frame it sent was dropped as malformed, cluster-wide);
- ``Replica._pending`` per origin is capped by a seq window and a clock bound, and nothing dropped
  is lost (repair sends it again: the vv never covered it);
- request ids are remembered within a window of fold positions, the same on every replica whenever
  it compacts (a per-replica memory would let replicas disagree on which ops are no-ops);
- snapshot reassembly (gossip and strong) holds one transfer per peer within byte and chunk caps;
- a forged Summary starts at most one snapshot transfer per retry period, charged to the bucket;
- a leader's snapshot the state machine refuses is neither adopted nor acknowledged.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gossipbook.core import replica as replica_mod
from gossipbook.core import wire
from gossipbook.core.book import BUY, GTC
from gossipbook.core.gossip import CHUNK_OVERHEAD, Gossip, GossipConfig
from gossipbook.core.hlc import Timestamp
from gossipbook.core.ops import NEW, Op
from gossipbook.core.replica import PENDING_FUTURE_OFFSETS, PENDING_WINDOW, Replica
from gossipbook.core.sequencer import (
    AppendReply,
    InstallSnapshot,
    Sequencer,
    SequencerConfig,
    SnapshotInstalled,
    _SnapshotRx,
)
from gossipbook.core.wire import Heartbeat, OpBatch, SnapshotChunk, Summary

MS = 1_000_000
SEC = 1_000 * MS
T0 = 1_700_000_000 * SEC
IDS = ["n1", "n2", "n3"]
SYM = "GBX"


def op(origin: str, seq: int, wall: int | None = None, req: str = "", price: int = 9_000, account: str = "a") -> Op:
    return Op(T0 + seq * MS if wall is None else wall, 0, origin, seq, NEW, SYM, "", BUY, price, 1, GTC, req,
              account)


def fits_the_wire(vv: dict[str, int]) -> None:
    wire.VV(vv)  # raises WireError past 1,024 entries (every receiver would drop the frame)


# ==== 1. non-member origins ========================================================================
def test_ops_of_1100_made_up_origins_are_refused_and_counted() -> None:
    r = Replica("n1", members=IDS)
    made_up = [op(f"x{i}", 1) for i in range(1_100)]
    assert r.receive(made_up, T0 + SEC) == []
    assert r.version_vector() == {} and r._pending == {} and r.op_count == 0
    assert r.counters["non_member_ops"] == 1_100
    # through gossip: dropped as they arrive (never in the catch-up plan or a summary's skip)
    g = Gossip(r, ["n2", "n3"], random.Random(1))
    g.receive(OpBatch([op(f"y{i}", 1) for i in range(1_100)] + [op("n2", 1)]), "n2", T0 + SEC)
    assert g.pending == 1 and r.counters["non_member_ops"] == 2_200
    g.fold_inbound()
    assert r.version_vector() == {"n2": 1}
    g.tick(T0 + 2 * SEC)
    for _dst, msg in g.outbox():
        if type(msg) in (Summary, Heartbeat):
            fits_the_wire(msg.vv)
            assert set(msg.vv) <= set(IDS)


def test_version_vector_entries_of_non_members_are_ignored() -> None:
    r = Replica("n1", members=IDS)
    forged = {f"x{i}": 5 for i in range(1_000)} | {"n2": 3}
    r.observe_vv("n2", forged)
    assert r.peer_vv("n2") == {"n2": 3} and r.counters["non_member_vv"] == 1
    r.observe_vv("x7", {"n2": 9})  # a non-member's own vector: not recorded at all
    assert r.peer_vv("x7") == {} and r.counters["non_member_vv"] == 2
    r.observe("x7", Timestamp(T0, 0), 1, T0)  # nor its announcement (finality ignores it)
    assert "x7" not in r._announced and r.counters["non_member_vv"] == 3
    # a gossip summary carrying them: what we send stays members-only and within the cap
    g = Gossip(r, ["n2", "n3"], random.Random(1), GossipConfig(defer_min_ops=1))
    g.receive(Summary(forged, True), "n2", T0 + SEC)
    g.receive(Heartbeat(T0, 0, 0, forged), "n3", T0 + SEC)
    g.tick(T0 + 2 * SEC)
    for _dst, msg in g.outbox():
        if type(msg) in (Summary, Heartbeat):
            fits_the_wire(msg.vv)
            if type(msg) is Summary:
                fits_the_wire(msg.skip)
                assert set(msg.skip) <= set(IDS)


def test_a_fenced_member_ops_up_to_its_fence_are_still_admitted() -> None:
    r = Replica("n1", members=IDS)
    r.remove_member("n3", 2)
    r.receive([op("n3", 1), op("n3", 2), op("n3", 3)], T0 + SEC)
    assert r.vv == {"n3": 2} and r.counters["fenced"] == 1 and r.counters["non_member_ops"] == 0


def _compacted(origins: list[str]) -> Replica:
    """A replica of n1..n3 and ``origins`` holding one compacted op of each of n2 and ``origins``."""
    src = Replica("n1", members=IDS + origins)
    src.receive([op(o, 1) for o in origins] + [op("n2", 1)], T0 + SEC)
    for m in ["n2", "n3"] + origins:
        src.observe(m, Timestamp(T0 + 10 * SEC, 0), src.vv.get(m, 0), T0 + 10 * SEC)
        src.observe_vv(m, src.vv)
    src.hlc.now(T0 + 10 * SEC)
    assert src.compact() == len(origins) + 1
    return src


def test_a_snapshot_covering_an_origin_no_longer_a_member_fences_it_at_its_seq() -> None:
    """A node dropped from the configuration after its ops were compacted: they stay (every replica
    folded them), and nothing more of it is taken."""
    src = _compacted(["x1"])
    r = Replica("n2", members=IDS)
    r.install_snapshot(src.snapshot(), T0 + 11 * SEC)
    assert r.vv == {"x1": 1, "n2": 1} and r.digest() == src.digest()
    assert r.fenced == {"x1": 1} and r.counters["snapshot_fenced"] == 1
    r.receive([op("x1", 2)], T0 + 11 * SEC)
    assert r.vv["x1"] == 1 and r.counters["fenced"] == 1


def test_a_snapshot_that_would_take_the_vector_past_the_wire_cap_is_refused() -> None:
    src = _compacted([f"x{i}" for i in range(1_022)])  # with n1..n3: 1,025 origins
    r = Replica("n2", members=IDS)
    assert r.install_snapshot(src.snapshot(), T0 + 11 * SEC) == []
    assert r.vv == {} and r.fenced == {} and r.counters["snapshots_refused"] == 1
    ok = Replica("n2", members=IDS)
    ok.install_snapshot(_compacted([f"x{i}" for i in range(1_021)]).snapshot(), T0 + 11 * SEC)
    assert len(ok.vv) == 1_022 and ok.counters["snapshot_fenced"] == 1_021
    fits_the_wire(ok.version_vector())


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["n2", "n3", "x1", "x2", "n9"]), st.integers(1, 6)), max_size=40),
       st.randoms(use_true_random=False))
def test_made_up_origins_change_nothing(picks: list[tuple[str, int]], rnd: random.Random) -> None:
    """Law: whatever ops of non-members arrive, in any order and batching, the replica ends where
    the members' ops alone take it, and its vector names members only."""
    ops = sorted({(o, s): op(o, s, price=9_000 + s * 10) for o, s in picks}.values())
    rnd.shuffle(ops)
    mixed = Replica("n1", members=IDS)
    i = 0
    while i < len(ops):
        k = rnd.randint(1, 5)
        mixed.receive(ops[i:i + k], T0 + SEC)
        i += k
    clean = Replica("n1", members=IDS)
    clean.receive([o for o in ops if o.origin in IDS], T0 + SEC)
    assert mixed.digest() == clean.digest() and mixed.vv == clean.vv
    assert set(mixed.version_vector()) <= set(IDS) and set(mixed._pending) <= set(IDS)
    assert mixed.counters["non_member_ops"] == sum(o.origin not in IDS for o in ops)


# ==== 2. bounded pending ops ==========================================================================
def test_ops_far_past_the_contiguous_seq_are_dropped_not_kept() -> None:
    r = Replica("n1", members=IDS)
    r.receive([op("n2", 1)], T0 + SEC)
    r.receive([op("n2", 1 + PENDING_WINDOW, wall=T0 + 2 * MS)], T0 + SEC)  # at the edge: waits for its gap
    r.receive([op("n2", 2 + PENDING_WINDOW, wall=T0 + 3 * MS), op("n2", 10**12, wall=T0 + 4 * MS)], T0 + SEC)
    assert list(r._pending["n2"]) == [1 + PENDING_WINDOW]
    assert r.counters["dropped_gap_window"] == 2 and r.counters["waiting_gap"] == 1


def test_ops_far_in_the_future_are_dropped_near_ones_held_back() -> None:
    r = Replica("n1", members=IDS)
    bound = PENDING_FUTURE_OFFSETS * r.hlc.max_offset_ns
    now = T0 + SEC
    r.receive([op("n2", 1, wall=now + bound)], now)  # implausible but within the bound: held back
    r.receive([op("n3", 1, wall=now + bound + 1)], now)  # beyond: dropped
    assert set(r._pending) == {"n2"} and r.counters["held_back_clock"] == 1
    assert r.counters["dropped_far_future"] == 1
    # nothing lost: offered again once it is near (as repair does, since the vv lacks it)
    r.receive([op("n3", 1, wall=now + bound + 1)], now + bound)
    r.tick(now + bound + 1)
    assert r.vv == {"n2": 1, "n3": 1}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(1, 60), st.randoms(use_true_random=False), st.integers(1, 6))
def test_the_pending_cap_never_loses_an_op(monkeypatch: pytest.MonkeyPatch, n: int, rnd: random.Random,
                                           window: int) -> None:
    """Law: with any delivery order and loss, pending per origin stays within the window, and
    anti-entropy (what the source shows we lack, sent again) converges to the source exactly."""
    monkeypatch.setattr(replica_mod, "PENDING_WINDOW", window)
    src = Replica("n2", members=IDS)
    for i in range(n):
        src.submit_new(SYM, BUY, 9_000 + 10 * (i % 9), 1, GTC, T0 + i * MS, f"q{i}", account="a")
    dst = Replica("n1", members=IDS)
    ops = src.ops()
    rnd.shuffle(ops)
    for o in ops:
        if rnd.random() < 0.7:  # the rest is lost
            dst.receive([o], T0 + SEC)
        assert all(len(w) <= window for w in dst._pending.values())
    rounds = 0
    while dst.vv != src.vv:
        rounds += 1
        assert rounds <= n + 1
        dst.receive(src.ops_missing(dst.vv), T0 + SEC)
    assert dst.digest() == src.digest() and dst._pending == {}


# ==== 2b. request-id memory ==========================================================================
def _finalise(r: Replica, upto: Op) -> None:
    """Let ``r`` (members n1, n2; ops from n2) see ``upto`` as final and held by n2, then compact."""
    r.observe("n2", Timestamp(upto.wall, upto.logical), upto.seq, upto.wall)
    r.observe_vv("n2", r.vv)
    r.hlc.now(upto.wall)
    r.compact()


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=1, max_size=40), st.integers(1, 5),
       st.lists(st.booleans(), min_size=40, max_size=40), st.integers(0, 39))
def test_request_dedupe_is_the_same_on_every_replica_whenever_it_compacts(
        reqs: list[int], window: int, compact_after: list[bool], cut: int) -> None:
    """Law: the fold is a function of the op-set: a replica that compacts after every op, one that
    never does, and one that installs another's snapshot mid-way (through the wire encoding) fold
    the same books; and each matches the rule (a no-op iff an op with the request id folds at most
    ``window`` positions below), with at most ``window`` request ids remembered once compacted."""
    names = ["n1", "n2"]
    ops = [op("n2", i + 1, req=f"r{q}", price=9_000 + i) for i, q in enumerate(reqs)]
    eager = Replica("n1", members=names, req_window=window)
    lazy = Replica("n1", members=names, req_window=window)
    late = Replica("n1", members=names, req_window=window)
    for i, o in enumerate(ops):
        eager.receive([o], T0 + SEC)
        lazy.receive([o], T0 + SEC)
        if compact_after[i]:
            _finalise(eager, o)
        assert len(eager._req_last) <= window and len(eager.snapshot().reqs) <= window
        if i == min(cut, len(ops) - 1):
            snap = wire.snapshot_from_bytes(wire.snapshot_to_bytes(eager.snapshot()))
            late.install_snapshot(snap, T0 + SEC)
            late.receive(ops[:i + 1], T0 + SEC)
        elif i > cut:
            late.receive([o], T0 + SEC)
    last: dict[int, int] = {}
    expect = set()
    for pos, q in enumerate(reqs):
        if q not in last or pos - last[q] > window:
            expect.add(f"n2:{pos + 1}")
        last[q] = pos
    for r in (eager, lazy, late):
        assert {oid for oid, *_ in r.orders_of("a")} == expect
        assert r.digest() == lazy.digest()


def test_a_retry_beyond_the_window_is_a_new_order_within_it_a_no_op() -> None:
    r = Replica("n1", members=["n1", "n2"], req_window=3)
    ops = [op("n2", 1, req="r"), op("n2", 2, req="f1"), op("n2", 3, req="f2"), op("n2", 4, req="r"),
           op("n2", 5, req="f3"), op("n2", 6, req="f4"), op("n2", 7, req="f5"), op("n2", 8, req="r")]
    r.receive(ops, T0 + SEC)
    # r at 0; at 3 (3 below: a retry); at 7 (4 below the retry at 3: a new order)
    assert {o[0] for o in r.orders_of("a")} == {"n2:1", "n2:2", "n2:3", "n2:5", "n2:6", "n2:7", "n2:8"}
    _finalise(r, ops[-1])
    assert r.counters["compactions"] == 1 and r.counters["reqs_expired"] == 3  # f1, f2, f3: more than 3 below the end (8)
    assert set(r._reqs) == set(r._req_last) == {"a/f4", "a/f5", "a/r"}
    assert set(r.snapshot().reqs) == {"a/f4", "a/f5", "a/r"}


def test_a_snapshot_in_the_old_request_format_still_installs() -> None:
    src = Replica("n1", members=["n1", "n2"])
    ops = [op("n2", 1, req="r"), op("n2", 2, req="s")]
    src.receive(ops, T0 + SEC)
    _finalise(src, ops[-1])
    snap = src.snapshot()
    assert snap.reqs == {"a/r": "n2:1@2", "a/s": "n2:2@1"}
    snap.reqs = {"a/r": "n2:1", "a/s": "n2:2"}  # as written before the window
    r = Replica("n3", members=["n1", "n2", "n3"])
    r.install_snapshot(snap, T0 + SEC)
    assert r._reqs == {"a/r": "n2:1", "a/s": "n2:2"} and r._req_last == {"a/r": 2, "a/s": 2}


# ==== 2c. gossip snapshot reassembly ==================================================================
def chunk(snap_id: int, index: int, total: int, size: int = 100) -> SnapshotChunk:
    return SnapshotChunk(snap_id, index, total, bytes(size))


def test_one_reassembly_per_peer_whatever_the_ids() -> None:
    g = Gossip(Replica("n1", members=IDS), ["n2", "n3"], random.Random(1))
    now = T0
    for sid in range(1_000, 0, -1):  # descending ids: each would have been kept before
        g.receive(chunk(sid, 0, 3), "n2", now)
    assert list(g._snap_in) == ["n2"] and g._snap_in["n2"].snap_id == 1_000
    assert g.counters["snapshot_chunks_dropped"] == 999
    g.receive(chunk(1_001, 0, 3), "n2", now)  # a newer transfer replaces it
    assert g._snap_in["n2"].snap_id == 1_001
    # an older id replaces it only once it sat idle for a retry period (a sender that restarted)
    g.receive(chunk(5, 0, 3), "n2", now + g.config.snapshot_retry_ns)
    assert g._snap_in["n2"].snap_id == 5
    g.receive(chunk(7, 0, 3), "n3", now)
    assert sorted(g._snap_in) == ["n2", "n3"]


def test_a_reassembly_past_the_byte_cap_is_dropped() -> None:
    cap = 10 * (1_000 + CHUNK_OVERHEAD)
    g = Gossip(Replica("n1", members=IDS), ["n2"], random.Random(1), GossipConfig(snapshot_max_bytes=cap))
    for i in range(10):
        g.receive(chunk(1, i, 1 << 20, 1_000), "n2", T0)
    assert g._snap_in["n2"].size == cap
    g.receive(chunk(1, 10, 1 << 20, 1_000), "n2", T0)
    assert g._snap_in == {} and g.counters["snapshots_too_large"] == 1


def test_an_honest_transfer_out_of_order_with_duplicates_installs() -> None:
    src = Replica("n2", members=IDS)
    for i in range(30):
        src.submit_new(SYM, BUY, 9_000 + i, 1, GTC, T0 + i * MS, f"q{i}", account="a")
    for m in ("n1", "n3"):
        src.observe(m, Timestamp(T0 + SEC, 0), 0, T0 + SEC)
        src.observe_vv(m, src.vv)
    src.hlc.now(T0 + SEC)
    assert src.compact() == 30
    sender = Gossip(src, ["n1"], random.Random(1), GossipConfig(snapshot_chunk=100))
    sender.receive(Summary({}, True), "n1", T0 + SEC)
    chunks = [m for _d, m in sender.outbox() if type(m) is SnapshotChunk]
    assert len(chunks) > 3
    dst = Replica("n1", members=IDS)
    g = Gossip(dst, ["n2"], random.Random(1))
    order = chunks[1:][::-1] + chunks[1:3] + chunks[:1]  # reversed, with duplicates, the first last
    for c in order:
        g.receive(c, "n2", T0 + SEC)
    assert dst.digest() == src.digest() and g._snap_in == {}
    g.receive(chunks[0], "n2", T0 + SEC)  # a late duplicate of the transfer just done
    assert g._snap_in == {} and g.counters["snapshot_chunks_dropped"] == 1


# ==== 3. one snapshot transfer per peer, charged to the bucket ===========================================
def test_forged_summaries_start_one_snapshot_transfer_per_retry_period() -> None:
    src = Replica("n1", members=IDS)
    for i in range(200):
        src.submit_new(SYM, BUY, 9_000 + i, 1, GTC, T0 + i * MS, f"q{i}", account="a")
    for m in ("n2", "n3"):
        src.observe(m, Timestamp(T0 + SEC, 0), 0, T0 + SEC)
        src.observe_vv(m, src.vv)
    src.hlc.now(T0 + SEC)
    assert src.compact() == 200
    cfg = GossipConfig()
    g = Gossip(src, ["n2", "n3"], random.Random(1), cfg)
    now = T0 + 2 * SEC

    def sent() -> int:
        return sum(type(m) is SnapshotChunk for _d, m in g.outbox())

    g.receive(Summary({}, True), "n2", now)
    first = sent()
    size = len(wire.snapshot_to_bytes(src.snapshot()))
    assert first == -(-size // cfg.snapshot_chunk)
    assert g._tokens == pytest.approx(cfg.repair_burst - size / cfg.snapshot_bytes_per_token)
    for k in range(1, 50):  # a flood of forged summaries during the transfer: nothing more is sent
        g.receive(Summary({}, True), "n2", now + k * MS)
        assert sent() == 0
    assert g.counters["snapshots_held"] == 49 and g.counters["snapshots_sent"] == 1
    g.receive(Summary({}, True), "n3", now)  # another peer has its own transfer
    assert sent() == first
    g.receive(Summary({}, True), "n2", now + cfg.snapshot_retry_ns)  # still lacks it: resent
    assert sent() == first and g.counters["snapshots_sent"] == 3


def test_snapshot_bytes_drain_the_repair_bucket() -> None:
    src = Replica("n1", members=IDS)
    for i in range(50):
        src.submit_new(SYM, BUY, 9_000 + i, 1, GTC, T0 + i * MS, f"q{i}", account="a")
    for m in ("n2", "n3"):
        src.observe(m, Timestamp(T0 + SEC, 0), 0, T0 + SEC)
        src.observe_vv(m, src.vv)
    src.hlc.now(T0 + SEC)
    src.compact()
    cfg = GossipConfig(repair_burst=10, snapshot_bytes_per_token=1)  # a snapshot costs more than the burst
    g = Gossip(src, ["n2", "n3"], random.Random(1), cfg)
    now = T0 + 2 * SEC
    g.receive(Summary({}, True), "n2", now)
    assert g._tokens < 0
    g.outbox()
    g.receive(Summary({}, True), "n3", now)  # the bucket is in debt: no second snapshot now
    assert not any(type(m) is SnapshotChunk for _d, m in g.outbox())
    assert g.counters["rate_limited"] == 1 and g.counters["snapshots_sent"] == 1


# ==== 4. strong mode: snapshots the state machine refuses; reassembly bounds ============================
def follower(check: Callable[[int, bytes], bool] | None = None, **cfg: int) -> Sequencer:
    s = Sequencer("n2", IDS, random.Random(1), SequencerConfig(**cfg), snapshot_check=check)
    s.tick(T0)
    s.events()
    s.outbox()
    return s


def install(s: Sequencer, data: bytes, size: int = 4, last_index: int = 50) -> list[AppendReply]:
    for off in range(0, len(data), size):
        s.receive(InstallSnapshot(1, last_index, 1, off, len(data), data[off:off + size]), "n1", T0 + MS)
    return [m for _d, m in s.outbox() if type(m) is AppendReply]


def test_a_snapshot_the_state_machine_refuses_is_not_adopted_nor_acknowledged() -> None:
    seen: list[tuple[int, bytes]] = []

    def check(index: int, data: bytes) -> bool:
        seen.append((index, data))
        return data.startswith(b"good")

    s = follower(check)
    replies = install(s, b"bad snapshot bytes")
    assert seen == [(50, b"bad snapshot bytes")]
    p = s.persistent_state()
    assert s.commit_index == 0 and (p.snapshot_index, p.snapshot, p.entries, p.commit_index) == (0, b"", (), 0)
    assert not any(isinstance(e, SnapshotInstalled) for e in s.events())
    assert not any(r.success for r in replies) and s.counters["bad_snapshots"] == 1
    assert s.counters["snapshots_installed"] == 0
    replies = install(s, b"good snapshot")  # the leader resends a good one: adopted and acknowledged
    assert s.commit_index == 50 and s.snapshot_index == 50
    assert any(isinstance(e, SnapshotInstalled) for e in s.events())
    assert [r.success and r.index for r in replies][-1] == 50


def test_without_a_check_every_snapshot_is_adopted() -> None:
    s = follower()
    assert install(s, b"anything")[-1].success and s.commit_index == 50


def test_snapshot_reassembly_caps_chunks_bytes_and_overlaps() -> None:
    s = follower(snapshot_max_bytes=100, snapshot_max_chunks=4)
    s.receive(InstallSnapshot(1, 50, 1, 0, 101, b"x"), "n1", T0 + MS)  # larger than the cap
    assert s._snap_rx is None and s.counters["snapshot_chunks_refused"] == 1
    for off in range(4):
        s.receive(InstallSnapshot(1, 50, 1, off, 100, b"x"), "n1", T0 + MS)
    assert len(s._snap_rx.chunks) == 4
    s.receive(InstallSnapshot(1, 50, 1, 4, 100, b"x"), "n1", T0 + MS)  # a fifth chunk
    assert s._snap_rx is None and s.counters["snapshot_chunks_refused"] == 2
    s.receive(InstallSnapshot(1, 50, 1, 0, 100, b"x" * 10), "n1", T0 + MS)
    s.receive(InstallSnapshot(1, 50, 1, 0, 100, b"x" * 10), "n1", T0 + MS)  # a resend: a duplicate
    assert s._snap_rx.held == 10
    s.receive(InstallSnapshot(1, 50, 1, 0, 100, b"x" * 20), "n1", T0 + MS)  # the same offset, cut otherwise
    assert s._snap_rx is None and s.counters["snapshot_chunks_refused"] == 3
    s.receive(InstallSnapshot(1, 50, 1, 0, 100, b"x" * 60), "n1", T0 + MS)
    s.receive(InstallSnapshot(1, 50, 1, 50, 100, b"x" * 50), "n1", T0 + MS)  # overlaps: 110 bytes > 100
    assert s._snap_rx is None and s.counters["snapshot_chunks_refused"] == 4
    assert s.commit_index == 0


def test_snapshot_reassembly_is_not_quadratic() -> None:
    n = 40_000
    rx = _SnapshotRx((1, 50, 1, n))
    t = time.perf_counter()
    for off in range(n - 1, -1, -1):  # the worst order for a sort per chunk
        assert rx.add(off, b"x", n)
        data = rx.complete()
    assert data == b"x" * n
    assert time.perf_counter() - t < 5  # a sort of every chunk per chunk took minutes
