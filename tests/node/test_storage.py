"""The segment log: torn tails, damage in the middle, a full disk, and the HLC across restarts."""

from __future__ import annotations

import errno
import os
import random
import time

import pytest

from gossipbook.core.hlc import Timestamp
from gossipbook.core.node import NodeCore
from gossipbook.core.ops import NEW, Op
from gossipbook.node import storage as storage_mod
from gossipbook.node.storage import Storage, StorageError


def _ops(origin: str, n: int, start: int = 1, wall0: int = 10**18) -> list[Op]:
    return [Op(wall0 + i, 0, origin, start + i, NEW, "GBX", "", i % 2, 10_000 + i % 5, 1 + i % 3, 0, "")
            for i in range(n)]


def _segment(path) -> str:
    return sorted(f for f in os.listdir(path) if f.startswith("seg-"))[-1]


def test_roundtrip_and_group_commit(tmp_path):
    s = Storage.open(tmp_path, "n1", "batch")
    s.persist(_ops("n1", 50), Timestamp(10**18 + 50, 0), 7)
    assert s.counters["fsyncs"] == 1  # one fsync for the whole batch
    s.close()
    s2 = Storage.open(tmp_path, "n1")
    assert [o.seq for o in s2._ops] == list(range(1, 51))
    hlc, inc = s2.recover_state()
    assert hlc >= Timestamp(10**18 + 50, 0) and inc == 8


def test_fsync_always_syncs_every_op(tmp_path):
    s = Storage.open(tmp_path, "n1", "always")
    s.persist(_ops("n1", 10), Timestamp(10**18 + 10, 0), 1)
    assert s.counters["fsyncs"] == 10


def test_torn_tail_is_dropped_and_counted(tmp_path):
    s = Storage.open(tmp_path, "n1")
    s.persist(_ops("n1", 5), Timestamp(10**18, 0), 1)
    s.persist(_ops("n1", 5, start=6), Timestamp(10**18, 0), 1)
    s.close()
    f = tmp_path / _segment(tmp_path)
    data = f.read_bytes()
    f.write_bytes(data[:-7])  # the last record lost its end
    s2 = Storage.open(tmp_path, "n1")
    assert [o.seq for o in s2._ops] == [1, 2, 3, 4, 5]
    assert s2.counters["torn_tail_dropped"] == 1
    # and the log is usable: appends after the cut survive another restart
    s2.persist(_ops("n1", 1, start=6), Timestamp(10**18, 0), 1)
    s2.close()
    assert [o.seq for o in Storage.open(tmp_path, "n1")._ops] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("where", ["header", "payload"])
def test_damage_in_the_middle_refuses_to_start(tmp_path, where):
    s = Storage.open(tmp_path, "n1")
    for k in range(3):
        s.persist(_ops("n1", 4, start=1 + 4 * k), Timestamp(10**18, 0), 1)
    s.close()
    f = tmp_path / _segment(tmp_path)
    data = bytearray(f.read_bytes())
    first_len = int.from_bytes(data[2:6], "little")
    pos = 3 if where == "header" else 10 + first_len // 2  # inside record 1
    data[pos] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(StorageError) as e:
        Storage.open(tmp_path, "n1")
    assert str(f) in str(e.value) and "offset 0" in str(e.value)


def test_disk_full_stops_acks_and_keeps_the_log_intact(tmp_path, monkeypatch):
    s = Storage.open(tmp_path, "n1")
    s.persist(_ops("n1", 3), Timestamp(10**18, 0), 1)
    real_write = os.write

    def full(fd, data):
        real_write(fd, data[: len(data) // 2])  # a partial write, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(storage_mod.os, "write", full)
    with pytest.raises(StorageError, match="No space left"):
        s.persist(_ops("n1", 3, start=4), Timestamp(10**18, 0), 1)
    assert s.failed
    monkeypatch.setattr(storage_mod.os, "write", real_write)
    s.persist(_ops("n1", 3, start=4), Timestamp(10**18, 0), 1)  # space again: it recovers
    s.close()
    s2 = Storage.open(tmp_path, "n1")
    assert [o.seq for o in s2._ops] == [1, 2, 3, 4, 5, 6]
    assert s2.counters["torn_tail_dropped"] == 0  # the partial record was cut off, not left behind


def test_hlc_never_goes_back_across_restart_with_clock_set_back(tmp_path):
    members = ["n1", "n2"]
    t = time.time_ns()  # (recovery refuses an HLC bound a day or more ahead of the host's clock)
    core = NodeCore("n1", members)
    core.ready = True
    s = Storage.open(tmp_path, "n1")
    stamped = []
    for i in range(5):
        op, _ = core.replica.submit_new("GBX", 0, 10_000, 1, 0, t + i)
        stamped.append(op)
    hb = core.gossip.heartbeat(t + 10)  # a timestamp this node announced
    s.persist(core.take_new_ops(), core.replica.hlc.last, 1)
    s.close()
    s2 = Storage.open(tmp_path, "n1")
    hlc, inc = s2.recover_state()
    back = t - 3_600 * 10**9  # the wall clock is now an hour behind
    core2 = NodeCore("n1", members, hlc_last=hlc, incarnation=inc)
    s2.load_into(core2)
    core2.ready = True
    op, _ = core2.replica.submit_new("GBX", 1, 10_000, 1, 0, back)
    assert op.seq == 6
    assert (op.wall, op.logical) > (hb.wall, hb.logical) > (stamped[-1].wall, stamped[-1].logical)


def test_compaction_deletes_covered_segments(tmp_path):
    from gossipbook.core.replica import Replica
    r = Replica("n1", members=["n1"])
    s = Storage.open(tmp_path, "n1")
    rng = random.Random(1)
    for i in range(200):
        r.submit_new("GBX", rng.randint(0, 1), 10_000 + rng.randint(-3, 3), 1, 0, 10**18 + i * 1000)
    s.persist(r.new_ops, r.hlc.last, 1)
    r.new_ops = []
    assert r.compact() == 200
    removed = s.write_snapshot(r.snapshot())
    assert removed == 1
    s.close()
    s2 = Storage.open(tmp_path, "n1")
    r2 = Replica("n1", members=["n1"])
    r2.install_snapshot(s2._snapshot, 10**18)
    assert r2.digest() == r.digest() and r2.op_count == 200
    hlc, _ = s2.recover_state()
    assert hlc >= r.hlc.last  # the bound survived the segment deletion
