"""Bounded memory and no amplification from authenticated but hostile frames (issue 15; security
review 2da4a4d section 3 and section 5).

- a leader's snapshot the state machine refuses is neither adopted nor acknowledged;
- snapshot reassembly in strong mode holds one transfer within byte and chunk caps.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from gossipbook.core.sequencer import (
    AppendReply,
    InstallSnapshot,
    Sequencer,
    SequencerConfig,
    SnapshotInstalled,
    _SnapshotRx,
)

MS = 1_000_000
SEC = 1_000 * MS
T0 = 1_700_000_000 * SEC
IDS = ["n1", "n2", "n3"]


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
