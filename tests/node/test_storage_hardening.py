"""A hostile or damaged data dir (security review 2da4a4d, section 5): private modes, no planted link
followed, recovered values range-checked, and a strong-mode snapshot that does not parse refuses
the start instead of being skipped."""

from __future__ import annotations

import logging
import os
import stat
import time

import msgpack
import pytest

from gossipbook.core.hlc import Timestamp
from gossipbook.core.instrument import Venue
from gossipbook.core.sequencer import Entry, PersistDelta, PersistentState
from gossipbook.core.strong import SequencedBooks
from gossipbook.node.storage import REC_OPS, Storage, StorageError


def _mode(p) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _replica_with_ops(n: int = 20):
    from gossipbook.core.replica import Replica
    r = Replica("n1", members=["n1"])
    for i in range(n):
        r.submit_new("GBX", i % 2, 10_000 + i % 3, 1, 0, 10**18 + i * 1000)
    return r


def _store_ops(s: Storage, r) -> None:
    s.persist(r.new_ops, r.hlc.last, 1)
    r.new_ops = []


# ---- modes -------------------------------------------------------------------------------------------
def test_a_new_data_dir_is_0700_and_every_file_in_it_0600_under_umask_022(tmp_path, umask_022):
    d = tmp_path / "data"
    s = Storage.open(d, "n1")
    r = _replica_with_ops()
    _store_ops(s, r)
    r.compact()
    s.write_snapshot(r.snapshot())
    s.close()
    assert _mode(d) == 0o700
    files = sorted(os.listdir(d))
    assert "LOCK" in files and "snapshot.bin" in files and any(f.startswith("seg-") for f in files)
    assert {f: _mode(d / f) for f in files} == {f: 0o600 for f in files}


def test_an_existing_wide_dir_is_warned_about_and_files_left_wide_are_tightened(tmp_path, umask_022, caplog):
    """The dir is warned about, not changed (it may be a mount point or shared with a backup group
    on purpose); the files are the node's alone, so ones an older version left 0644 become 0600."""
    d = tmp_path / "data"
    d.mkdir(mode=0o755)
    s = Storage.open(d, "n1")
    r = _replica_with_ops()
    _store_ops(s, r)
    r.compact()
    s.write_snapshot(r.snapshot())
    s.close()
    for f in os.listdir(d):
        os.chmod(d / f, 0o644)  # as 2da4a4d wrote them
    with caplog.at_level(logging.WARNING, logger="gossipbook.storage"):
        Storage.open(d, "n1").close()
    assert _mode(d) == 0o755
    assert any("0755" in m and str(d) in m for m in caplog.messages), caplog.messages
    assert {f: _mode(d / f) for f in os.listdir(d)} == {f: 0o600 for f in os.listdir(d)}


def test_a_link_planted_at_the_snapshot_temp_file_is_not_followed(tmp_path):
    d = tmp_path / "data"
    s = Storage.open(d, "n1")
    r = _replica_with_ops()
    _store_ops(s, r)
    r.compact()
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    os.symlink(victim, d / "snapshot.bin.tmp")
    s.write_snapshot(r.snapshot())
    assert victim.read_bytes() == b"keep me"
    assert stat.S_ISREG(os.lstat(d / "snapshot.bin").st_mode) and not (d / "snapshot.bin.tmp").exists()
    s.close()
    assert Storage.open(d, "n1")._snapshot is not None


def test_a_link_planted_after_the_stale_temp_is_removed_is_refused_not_followed(tmp_path, monkeypatch):
    """The race: something re-plants the link between the unlink and the open (played here by an
    unlink that does nothing). ``O_EXCL | O_NOFOLLOW`` refuse it: a StorageError, the target intact."""
    d = tmp_path / "data"
    s = Storage.open(d, "n1")
    r = _replica_with_ops()
    _store_ops(s, r)
    r.compact()
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    os.symlink(victim, d / "snapshot.bin.tmp")
    real_unlink = os.unlink

    def unlink(p, *a, **kw):
        if str(p).endswith(".tmp"):
            return None
        return real_unlink(p, *a, **kw)
    monkeypatch.setattr(os, "unlink", unlink)
    with pytest.raises(StorageError, match="cannot write snapshot"):
        s.write_snapshot(r.snapshot())
    assert victim.read_bytes() == b"keep me" and not (d / "snapshot.bin").exists()


def test_a_link_in_place_of_the_segment_to_append_to_is_refused_not_followed(tmp_path):
    d = tmp_path / "data"
    Storage.open(d, "n1").close()
    victim = tmp_path / "victim"
    victim.write_bytes(b"")
    os.symlink(victim, d / "seg-000002.log")
    with pytest.raises(StorageError, match="seg-000002.log"):
        Storage.open(d, "n1")
    assert victim.read_bytes() == b""


# ---- recovered values --------------------------------------------------------------------------------
def _raw_record(d, rec) -> None:
    """Append one well-checksummed record holding ``rec`` (whatever it is) to a fresh data dir."""
    s = Storage.open(d, "n1")
    s._write_records([msgpack.packb(rec, use_bin_type=True)])
    s.close()


def _refused(d, *words: str) -> str:
    with pytest.raises(StorageError) as e:
        Storage.open(d, "n1")
    msg = str(e.value)
    assert "seg-000001.log" in msg and "offset 0" in msg, msg
    for w in words:
        assert w in msg, msg
    return msg


def test_an_incarnation_above_2_62_refuses_the_start_naming_file_and_offset(tmp_path):
    """On 2da4a4d 2**64-1 loaded and ``recover_state`` returned 2**64: the first probe crashed."""
    _raw_record(tmp_path / "a", [REC_OPS, 10**18, 0, 2**64 - 1, []])
    _refused(tmp_path / "a", "incarnation")
    _raw_record(tmp_path / "b", [REC_OPS, 10**18, 0, 2**62, []])  # the limit itself is fine
    s = Storage.open(tmp_path / "b", "n1")
    assert s.recover_state()[1] == 2**62 + 1


@pytest.mark.parametrize("wall, logical", [
    (10**18, 2**32 + 1),  # above the wire's limit: every op stamped after it would be dropped by peers
    (None, 0),  # two days ahead of this host's clock
    (2**64 - 1, 0),
    (-1, 0),
    (10**18, -1),
    (10**18, "0"),
])
def test_an_absurd_hlc_bound_refuses_the_start(tmp_path, wall, logical):
    if wall is None:
        wall = time.time_ns() + 2 * 86_400 * 10**9
    _raw_record(tmp_path, [REC_OPS, wall, logical, 1, []])
    _refused(tmp_path, "HLC bound")


def test_an_hlc_bound_an_hour_ahead_is_still_accepted(tmp_path):
    """A clock set back an hour is what the bound exists for: the node starts above it."""
    wall = time.time_ns() + 3_600 * 10**9
    _raw_record(tmp_path, [REC_OPS, wall, 2**32, 1, []])
    hlc, _ = Storage.open(tmp_path, "n1").recover_state()
    assert hlc == Timestamp(wall, 2**32)


@pytest.mark.parametrize("rec", [
    {"kind": 1},  # the reproduced bug: a map raised KeyError (a traceback, not the one-line refusal)
    {0: 1, 1: 2},
    [],
    "ops",
    7,
    None,
    [REC_OPS],
    [REC_OPS, 10**18, 0, 1],
    [REC_OPS, 10**18, 0, 1, {"not": "a list"}],
    [REC_OPS, 10**18, 0, 1, [{"op": 1}]],
    [2, 1, None],
    [2, 1, None, 1, {"e": 1}, 0, 0, None, 0],
    [2, 1, None, 1, [[1, {"op": 1}]], 0, 0, None, 0],
    [3],
    [3, {"r": 1}],
    [9, 1],
])
def test_a_record_that_passes_its_crc_but_is_not_what_we_write_is_a_storage_error(tmp_path, rec):
    _raw_record(tmp_path, rec)
    _refused(tmp_path, "does not parse")


@pytest.mark.parametrize("field", [1, 3, 5, 6, 8])  # term, first index, snapshot index/term, commit
def test_sequencer_numbers_above_2_62_refuse_the_start(tmp_path, field):
    rec = [2, 1, None, 1, [[1, None]], 0, 0, None, 1]
    rec[field] = 2**64 - 1
    _raw_record(tmp_path, rec)
    _refused(tmp_path, "2**62")


def test_a_sequencer_entry_term_above_2_62_refuses_the_start(tmp_path):
    _raw_record(tmp_path, [2, 1, None, 1, [[2**64 - 1, None]], 0, 0, None, 1])
    _refused(tmp_path, "entry term")


# ---- strong mode: the sequencer snapshot -------------------------------------------------------------
def _snap(index: int) -> bytes:
    b = SequencedBooks(Venue())
    b.index = index
    return b.to_bytes()


def _compacted(d, snapshot: bytes, index: int = 10) -> None:
    s = Storage.open(d, "n1")
    entries = tuple(Entry(1, None) for _ in range(index + 5))
    s.persist_sequencer([PersistDelta(1, "n1", 1, entries, 0, 0, None, index + 5)], PersistentState)
    full = PersistentState(1, "n1", entries[index:], index, 1, snapshot, index + 5)
    s.persist_sequencer([PersistDelta(1, "n1", index + 6, (), index, 1, snapshot, index + 5)], lambda: full)
    s.close()


@pytest.mark.parametrize("bad", [
    b"\xc1 not msgpack",
    msgpack.packb({"books": []}),
    msgpack.packb([1, 10, 0, 0]),
    b"",
])
def test_a_strong_snapshot_that_does_not_parse_refuses_the_start_naming_the_file(tmp_path, bad):
    """On 2da4a4d it loaded, the core counted ``bad_snapshots`` and skipped it while the commit index
    moved past it: a node serving empty books as if they were the log's (silent divergence)."""
    d = tmp_path / "data"
    _compacted(d, bad)
    seg = sorted(f for f in os.listdir(d) if f.startswith("seg-"))[-1]
    with pytest.raises(StorageError) as e:
        Storage.open(d, "n1")
    msg = str(e.value)
    assert seg in msg and "strong-mode snapshot" in msg and "offset 0" in msg and "index 10" in msg, msg


def test_a_strong_snapshot_of_another_index_refuses_the_start(tmp_path):
    d = tmp_path / "data"
    _compacted(d, _snap(9))
    with pytest.raises(StorageError, match="covers index 9, not 10"):
        Storage.open(d, "n1")


def test_a_good_strong_snapshot_recovers(tmp_path):
    d = tmp_path / "data"
    _compacted(d, _snap(10))
    st = Storage.open(d, "n1").recover_sequencer()
    assert st is not None and st.snapshot_index == 10 and st.snapshot == _snap(10) and st.commit_index == 15
