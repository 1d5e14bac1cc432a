"""Durable node state: an append-only segment log of checksummed records plus a snapshot file.

Why a log and not sqlite: every write here is an append of a batch of ops the node already holds in
memory, read back only at start. A log with one ``write`` + one ``fsync`` per batch does exactly
that, with no B-tree or journal in the way, and it lets recovery say precisely what it found: a torn
tail record (dropped, counted, logged) or damage in the middle (refuse to start, naming the file and
offset) — see ``docs/operations.md`` for the numbers behind the choice.

Layout of ``data_dir``::

    seg-000001.log, seg-000002.log, ...   records, appended; a new segment after compaction
    snapshot.bin                          the compacted prefix (written to a temp file, fsynced, renamed)
    LOCK                                  held with flock while a node runs

Record: ``b"GR" | u32 length | u32 crc32(payload) | payload``; payload is msgpack
``[kind, ...]``: ``[1, hlc_wall, hlc_logical, incarnation, ops]`` (eventual mode) or, in strong mode,
one sequencer ``PersistDelta``: ``[2, term, voted_for, first_index, entries, snapshot_index,
snapshot_term, snapshot | nil, commit_index]`` with entries ``[term, op | nil]``, and
``[3, [request id, ...]]``: client requests this node handed to a leader (``StrongNodeCore.take_handed``;
after a restart they are never refused with "no quorum"). Recovery folds the deltas in order
(``apply_delta``'s rule) and collects the request ids (the last ``HANDED_KEEP``). A delta that carries a snapshot (the log was compacted) is
written instead as the whole state at the head of a new segment, and the older segments are deleted.
A data dir holds one mode's records: a node refuses to start on the other mode's.

Strong-mode shards (``core/shards.py``): shard 0's sequencer state is the data dir's own (so a
one-shard node writes exactly what it always did); shard s >= 1 has a data dir of its own,
``shard-<s>/`` inside it (its own lock, segments and snapshot: each group compacts on its own).
``shards.json`` records which instruments each shard held when the dir was first used with
shards; a node refuses to start on a dir written with another shard map, or with shards by a
one-shard node and the other way round (its logs would fold into the wrong books).

Rules that hold:
- ``persist`` returns only once the batch is as durable as ``fsync`` says (``always``: one fsync per
  op; ``batch``: one fsync per batch, i.e. group commit; ``never``: left to the OS). The shell calls
  it before sending any reply for those ops.
- The HLC bound persisted is at least every timestamp the node has sent, so after a restart (even
  with the wall clock set back) the node's HLC never goes below what it announced.
- A write that fails (disk full, read-only) leaves the file as it was (the partial record is cut
  off) and raises ``StorageError``; the node stops acknowledging and keeps serving reads.
- The data dir is private: created 0700 (an existing one with a wider mode is logged as a warning,
  not changed: it may be a mount point or a dir an operator shares with a backup group on purpose);
  every file in it (segments, ``LOCK``, ``snapshot.bin``) is created 0600, and one an older version
  left wider is tightened to 0600 at open (the files are the node's alone). The snapshot's temp file
  is opened ``O_CREAT | O_EXCL | O_NOFOLLOW`` after removing a stale one, so a link planted there is
  never followed.
- Whatever recovery reads is checked before the node uses it: a record that passes its checksum but
  does not parse, or holds a value out of range (incarnation, term or index above ``2**62``, an HLC
  bound with logical above ``2**32`` or a wall a day or more ahead of this host's clock), and, in
  strong mode, a sequencer snapshot that does not decode, all refuse the start with a
  ``StorageError`` naming the file and offset, instead of a crash later or a node running on
  state that is not what the log says.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import stat
import struct
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack

from ..core.errors import UsageError
from ..core.hlc import Timestamp
from ..core.ops import Op
from ..core.sequencer import PersistDelta, PersistentState
from ..core.strong import _SNAPSHOT as _STRONG_SNAPSHOT
from ..core.strong import entry_from_storage
from ..core.wire import OP_CHECK, snapshot_from_bytes, snapshot_to_bytes

MAGIC = b"GR"
HEAD = struct.Struct("<2sII")


def parse_record(data: bytes, off: int, magic: bytes) -> tuple[bytes, int] | None:
    """The record at ``off`` (``magic``, length, CRC-32, payload) as ``(payload, end)``, or None if
    it is cut short or damaged. The op log and the audit trail share this framing."""
    if off + HEAD.size > len(data):
        return None
    m, length, crc = HEAD.unpack_from(data, off)
    end = off + HEAD.size + length
    if m != magic or end > len(data):
        return None
    payload = data[off + HEAD.size:end]
    return (payload, end) if zlib.crc32(payload) == crc else None
REC_OPS = 1
REC_SEQ = 2
REC_HANDED = 3
HANDED_KEEP = 50_000  # request ids handed to a leader that recovery keeps (and compaction rewrites)
HLC_LEASE_NS = 200_000_000  # persist the HLC bound this far ahead (written ~10 times a second at most;
# small, because a restarted node starts its HLC there and peers hold back ops beyond max_offset)
SEGMENT_BYTES = 64 << 20
MAX_COUNTER = 1 << 62  # incarnation, term, index: recovered values above this refuse the start (the
# node must still be able to add one and encode the result)
MAX_LOGICAL = 1 << 32  # the wire's limit on an HLC logical counter
MAX_BOUND_AHEAD_NS = 86_400 * 10**9  # an HLC bound further ahead of this host's clock is not one we wrote
DIR_MODE = 0o700
FILE_MODE = 0o600

log = logging.getLogger("gossipbook.storage")


class StorageError(UsageError):
    """The data directory cannot be used (damaged, locked, full, read-only)."""

    exit_code = 4


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Storage:
    """One node's data directory."""

    def __init__(self, path: Path, node_id: str, fsync: str = "batch") -> None:
        self.path = path
        self.node_id = node_id
        self.fsync = fsync
        self.counters = {"records": 0, "fsyncs": 0, "bytes": 0, "torn_tail_dropped": 0, "write_errors": 0}
        self.failed: str | None = None
        self._lock_fd: int | None = None
        self._fd: int | None = None
        self._seg_no = 0
        self._seg_size = 0
        self._seg_max: dict[int, dict[str, int]] = {}  # segment -> per origin max seq in it
        self._hlc_bound = Timestamp(0, 0)
        self._incarnation = 0
        self._ops: list[Op] = []
        self._snapshot: Any = None
        self._snap_base: dict[str, int] = {}
        self.kinds: set[int] = set()  # record kinds found at recovery (which mode wrote this dir)
        # strong mode: the sequencer state folded from the REC_SEQ records (see _apply_seq)
        self._seq: dict[str, Any] | None = None
        self._seq_entries: list[Any] = []
        self._seq_snap_at: tuple[Path, int] | None = None  # where the last sequencer snapshot was read
        #: strong mode: client request ids this node handed to a leader (the last HANDED_KEEP)
        self.handed: list[str] = []

    # ---- open and recover --------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike[str], node_id: str, fsync: str = "batch") -> Storage:
        p = Path(path)
        try:
            p.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            mode = stat.S_IMODE(os.stat(p).st_mode)
        except OSError as e:
            raise StorageError(f"cannot create data dir {p}: {e.strerror}") from None
        if mode & 0o077:
            log.warning("data dir %s has mode %04o: other users can list it (the files in it are 0600); "
                        "chmod 700 %s to make it private", p, mode, p)
        s = cls(p, node_id, fsync)
        s._lock()
        s._recover()
        return s

    def _lock(self) -> None:
        try:
            fd = os.open(self.path / "LOCK", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
        except OSError as e:
            raise StorageError(f"cannot use data dir {self.path}: {e.strerror}") from None
        _tighten(fd, self.path / "LOCK")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise StorageError(f"data dir {self.path} is in use by another node process") from None
        self._lock_fd = fd

    def _segments(self) -> list[tuple[int, Path]]:
        out = []
        for f in self.path.glob("seg-*.log"):
            try:
                out.append((int(f.stem[4:]), f))
            except ValueError:
                continue
        return sorted(out)

    def _recover(self) -> None:
        snap_file = self.path / "snapshot.bin"
        if snap_file.exists():
            _tighten_path(snap_file)
            data = snap_file.read_bytes()
            if len(data) < 4 or zlib.crc32(data[4:]) != struct.unpack("<I", data[:4])[0]:
                raise StorageError(f"{snap_file}: checksum mismatch; the snapshot is damaged "
                                   f"(restore it from a peer's data dir or remove the data dir to resync)")
            try:
                self._snapshot = snapshot_from_bytes(data[4:])
            except Exception as e:  # WireError, or anything else the decoder trips on: all mean damaged
                raise StorageError(f"{snap_file}: the snapshot does not parse ({type(e).__name__}: {e})") from None
            self._snap_base = dict(self._snapshot.base_vv)
            self.kinds.add(REC_OPS)  # an eventual-mode compaction snapshot
        segs = self._segments()
        for i, (no, f) in enumerate(segs):
            _tighten_path(f)
            self._read_segment(no, f, last=i == len(segs) - 1)
        self._check_seq_snapshot()
        self._seg_no = segs[-1][0] if segs else 0
        self._open_segment(new=not segs)

    def _read_segment(self, no: int, f: Path, last: bool) -> None:
        data = f.read_bytes()
        off = 0
        maxes = self._seg_max.setdefault(no, {})
        while off < len(data):
            rec = self._parse(data, off)
            if rec is None:
                if not last or self._valid_record_after(data, off + 1):
                    raise StorageError(f"{f}: damaged record at offset {off} with valid records after it; "
                                       f"refusing to start (the log is corrupt in the middle, not torn at the end)")
                self.counters["torn_tail_dropped"] += 1
                log.warning("%s: dropping a torn record at offset %d (%d bytes)", f, off, len(data) - off)
                with open(f, "r+b") as fh:
                    fh.truncate(off)
                    fh.flush()
                    os.fsync(fh.fileno())
                break
            payload, end = rec
            self._apply_record(payload, maxes, f, off)
            off = end

    @staticmethod
    def _parse(data: bytes, off: int) -> tuple[bytes, int] | None:
        return parse_record(data, off, MAGIC)

    def _valid_record_after(self, data: bytes, start: int) -> bool:
        i = data.find(MAGIC, start)
        while i != -1:
            if self._parse(data, i) is not None:
                return True
            i = data.find(MAGIC, i + 1)
        return False

    def _apply_record(self, payload: bytes, maxes: dict[str, int], f: Path, off: int) -> None:
        try:
            rec = msgpack.unpackb(payload, raw=False, use_list=True)
            if type(rec) is not list or not rec:
                raise ValueError(f"a record is a non-empty array, not {type(rec).__name__}")
            if rec[0] == REC_SEQ:
                d = _parse_delta(rec)
                self.kinds.add(REC_SEQ)
                if d.snapshot is not None:
                    self._seq_snap_at = (f, off)
                self._apply_seq(d)
                return
            if rec[0] == REC_HANDED:
                if len(rec) != 2:
                    raise ValueError("bad handed-request record")
                reqs = rec[1]
                if not isinstance(reqs, list) or not all(type(r) is str for r in reqs):
                    raise ValueError("bad handed-request record")
                self.kinds.add(REC_SEQ)
                self.handed += reqs
                del self.handed[:-HANDED_KEEP]
                return
            if rec[0] != REC_OPS:
                raise ValueError(f"unknown record kind {rec[0]!r}")
            if len(rec) != 5:
                raise ValueError(f"an ops record has 5 fields, not {len(rec)}")
            _kind, wall, logical, inc, raw_ops = rec
            _counter("incarnation", inc)
            if type(wall) is not int or type(logical) is not int or not 0 <= logical <= MAX_LOGICAL or wall < 0:
                raise ValueError(f"HLC bound ({wall!r}, {logical!r}) out of range")
            ahead = wall - time.time_ns()
            if ahead >= MAX_BOUND_AHEAD_NS:
                raise ValueError(f"HLC bound {wall} is {ahead / 3.6e12:.1f} h ahead of this host's clock "
                                 f"(is the clock right?)")
            if type(raw_ops) is not list:
                raise ValueError("the ops of an ops record are not an array")
            ops = [OP_CHECK(o) for o in raw_ops]
        except Exception as e:  # whatever a damaged or foreign record trips: one clear refusal, no traceback
            raise StorageError(f"{f}: record at offset {off} passes its checksum but does not parse or is out "
                               f"of range ({type(e).__name__}: {e}); refusing to start (written by another "
                               f"version, or damaged)") from None
        self.kinds.add(REC_OPS)
        self._hlc_bound = max(self._hlc_bound, Timestamp(wall, logical))
        self._incarnation = max(self._incarnation, inc)
        for op in ops:
            if op.seq > maxes.get(op.origin, 0):
                maxes[op.origin] = op.seq
        self._ops.extend(ops)

    def _open_segment(self, new: bool) -> None:
        if self._fd is not None:
            os.close(self._fd)
        if new:
            self._seg_no += 1
        f = self.path / f"seg-{self._seg_no:06d}.log"
        try:
            self._fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
        except OSError as e:  # a link in place of a segment (ELOOP) included: never followed
            self._fd = None
            raise StorageError(f"cannot open {f}: {e.strerror or e}") from None
        self._seg_size = os.fstat(self._fd).st_size
        self._seg_max.setdefault(self._seg_no, {})
        if new:
            _fsync_dir(self.path)

    # ---- what the node starts from -----------------------------------------------------------------
    def recover_state(self) -> tuple[Timestamp | None, int | None]:
        """``(hlc_last, incarnation)`` for the node's constructor; None when the dir is new."""
        own = max((Timestamp(o.wall, o.logical) for o in self._ops if o.origin == self.node_id), default=None)
        hlc = max(filter(None, [own, self._hlc_bound if self._hlc_bound.wall else None]), default=None)
        return hlc, (self._incarnation + 1 if self._incarnation else None)

    def load_into(self, core: Any) -> int:
        """Feed the snapshot and every logged op into a fresh ``NodeCore``; returns ops loaded."""
        r = core.replica
        if self._snapshot is not None:
            r.install_snapshot(self._snapshot, r.hlc.wall)
        r.receive(self._ops, max(r.hlc.wall, max((o.wall for o in self._ops), default=0)))
        n = len(self._ops)
        self._ops = []
        core.take_new_ops()  # already on disk
        # ``core.ready`` stays False until a majority of peers confirm we hold all our own ops: a
        # persist that failed while the node ran could otherwise let it re-stamp a seq peers hold
        return n

    # ---- writing -----------------------------------------------------------------------------------
    def persist(self, ops: list[Op], hlc: Timestamp, incarnation: int, force: bool = False) -> None:
        """Append ``ops`` (and the HLC bound) durably; ``StorageError`` if the disk refuses."""
        need_bound = hlc > Timestamp(self._hlc_bound.wall - HLC_LEASE_NS // 2, 0)
        if not ops and not need_bound and not force:
            return
        self.kinds.add(REC_OPS)
        bound = Timestamp(hlc.wall + HLC_LEASE_NS, 0) if need_bound else self._hlc_bound
        if self.fsync == "always" and len(ops) > 1:
            for op in ops:  # the slow, honest mode: one durable write per op
                self._write([op], bound, incarnation)
        else:
            self._write(ops, bound, incarnation)
        self._hlc_bound = max(self._hlc_bound, bound)
        self._incarnation = max(self._incarnation, incarnation)
        maxes = self._seg_max[self._seg_no]
        for op in ops:
            if op.seq > maxes.get(op.origin, 0):
                maxes[op.origin] = op.seq

    def _write(self, ops: list[Op], bound: Timestamp, incarnation: int) -> None:
        self._write_records([msgpack.packb([REC_OPS, bound.wall, bound.logical, incarnation, ops], use_bin_type=True)])

    def _write_records(self, payloads: list[bytes]) -> None:
        """Append records with one ``write`` and (unless fsync is ``never``) one ``fsync``."""
        rec = b"".join(HEAD.pack(MAGIC, len(p), zlib.crc32(p)) + p for p in payloads)
        assert self._fd is not None
        try:
            written = os.write(self._fd, rec)
            if written != len(rec):
                raise OSError(28, "short write (disk full?)")
            if self.fsync != "never":
                os.fsync(self._fd)
                self.counters["fsyncs"] += 1
        except OSError as e:
            self.counters["write_errors"] += 1
            try:  # cut off whatever part of the record reached the file
                os.ftruncate(self._fd, self._seg_size)
            except OSError:
                pass  # recovery will drop it as a torn tail
            self.failed = f"{self.path}: {e.strerror or e}"
            raise StorageError(f"cannot write to {self.path}: {e.strerror or e}") from None
        self._seg_size += len(rec)
        self.failed = None
        self.counters["records"] += len(payloads)
        self.counters["bytes"] += len(rec)
        if self._seg_size >= SEGMENT_BYTES:
            self._open_segment(new=True)

    def write_snapshot(self, snap: Any) -> int:
        """Persist a compaction snapshot, then delete segments whose ops it covers; returns how many."""
        data = snapshot_to_bytes(snap)
        blob = struct.pack("<I", zlib.crc32(data)) + data
        tmp = self.path / "snapshot.bin.tmp"
        try:
            # a stale temp file (a crash mid-write) or anything planted there goes first; unlink
            # removes a link itself, never its target; O_EXCL | O_NOFOLLOW then refuse whatever
            # appears in between instead of following it
            tmp.unlink(missing_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
            with os.fdopen(fd, "wb") as fh:
                fh.write(blob)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path / "snapshot.bin")
            _fsync_dir(self.path)
        except OSError as e:
            self.counters["write_errors"] += 1
            raise StorageError(f"cannot write snapshot in {self.path}: {e.strerror or e}") from None
        self._snap_base = dict(snap.base_vv)
        self._open_segment(new=True)
        self._write([], self._hlc_bound, self._incarnation)  # the new segment carries the HLC bound on
        removed = 0
        for no, f in self._segments():
            if no == self._seg_no:
                continue
            maxes = self._seg_max.get(no, {})
            if all(s <= self._snap_base.get(o, 0) for o, s in maxes.items()):
                f.unlink(missing_ok=True)
                self._seg_max.pop(no, None)
                removed += 1
        if removed:
            _fsync_dir(self.path)
        return removed

    # ---- strong mode: the sequencer's state -----------------------------------------------------------
    def _apply_seq(self, d: PersistDelta) -> None:
        """``sequencer.apply_delta`` in place (recovery folds thousands of deltas: no list copies)."""
        st = self._seq or {"snapshot_index": 0, "snapshot_term": 0, "snapshot": b""}
        entries = self._seq_entries
        if d.snapshot is not None:
            del entries[:max(0, d.snapshot_index - st["snapshot_index"])]
            st.update(snapshot_index=d.snapshot_index, snapshot_term=d.snapshot_term, snapshot=d.snapshot)
        del entries[max(0, d.first_index - st["snapshot_index"] - 1):]
        entries.extend(d.entries)
        st.update(term=d.term, voted_for=d.voted_for, commit_index=d.commit_index)
        self._seq = st

    def _check_seq_snapshot(self) -> None:
        """The sequencer snapshot recovery ends with must decode: the state machine would otherwise
        skip it while the commit index moves past it (a node running on books the log does not
        give). What needs the venue (an instrument this config no longer trades) is checked when
        the core installs it."""
        st = self._seq
        if st is None or not st["snapshot_index"]:
            return
        f, off = self._seq_snap_at or (self.path, -1)
        try:
            check_strong_snapshot(st["snapshot_index"], st["snapshot"])
        except Exception as e:
            raise StorageError(f"{f}: the strong-mode snapshot in the record at offset {off} (log index "
                               f"{st['snapshot_index']}) does not parse ({type(e).__name__}: {e}); refusing to "
                               f"start (remove the data dir to resync it from the cluster)") from None

    def recover_sequencer(self) -> PersistentState | None:
        """The strong-mode state found on disk (None for a new or eventual-mode dir)."""
        st = self._seq
        if st is None:
            return None
        entries = tuple(self._seq_entries)
        return PersistentState(st["term"], st["voted_for"], entries, st["snapshot_index"], st["snapshot_term"],
                               st["snapshot"], min(st["commit_index"], st["snapshot_index"] + len(entries)))

    def persist_sequencer(self, deltas: list[PersistDelta], full: Callable[[], PersistentState],
                          handed: list[str] | None = None) -> None:
        """Make ``deltas`` and the ``handed`` request ids durable (one write, one fsync), in order;
        ``StorageError`` if the disk refuses (then nothing of them counts as written: pass them
        again). If a delta carries a snapshot, ``full()`` and the last ``HANDED_KEEP`` request ids
        are written at the head of a new segment instead and the older segments go."""
        if not deltas and not handed:
            return
        self.kinds.add(REC_SEQ)
        extra = [msgpack.packb([REC_HANDED, handed], use_bin_type=True)] if handed else []
        if any(d.snapshot is not None for d in deltas):
            st = full()
            whole = PersistDelta(st.term, st.voted_for, st.snapshot_index + 1, st.entries, st.snapshot_index,
                                 st.snapshot_term, st.snapshot, st.commit_index)
            old = [no for no, _f in self._segments()]
            keep = (self.handed + (handed or []))[-HANDED_KEEP:]
            self._open_segment(new=True)
            self._write_records([_pack_delta(whole)] + ([msgpack.packb([REC_HANDED, keep], use_bin_type=True)]
                                                        if keep else []))
            self.handed = keep
            for no, f in self._segments():
                if no in old:
                    f.unlink(missing_ok=True)
                    self._seg_max.pop(no, None)
            _fsync_dir(self.path)
            return
        self._write_records([_pack_delta(d) for d in deltas] + extra)
        if handed:
            self.handed += handed
            del self.handed[:-HANDED_KEEP]

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


SHARDS_FILE = "shards.json"


def open_shards(st: Storage, shards: tuple[tuple[str, ...], ...]) -> list[Storage]:
    """The stores of a sharded strong-mode node: ``st`` for shard 0, ``<data dir>/shard-<s>`` for
    shard s; ``StorageError`` (nothing opened) if the dir was written with another shard map."""
    check_shards(st, shards)
    stores = [st]
    try:
        for s in range(1, len(shards)):
            stores.append(Storage.open(st.path / f"shard-{s}", st.node_id, st.fsync))
    except StorageError:
        for other in stores[1:]:
            other.close()
        raise
    f = st.path / SHARDS_FILE
    if not f.exists():
        data = json.dumps([list(x) for x in shards]).encode()
        tmp = st.path / (SHARDS_FILE + ".tmp")
        try:
            tmp.unlink(missing_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, f)
            _fsync_dir(st.path)
        except OSError as e:
            for other in stores[1:]:
                other.close()
            raise StorageError(f"cannot write {f}: {e.strerror or e}") from None
    return stores


def check_shards(st: Storage, shards: tuple[tuple[str, ...], ...]) -> None:
    """Refuse a data dir written with another shard map (``shards`` () for a one-shard node)."""
    f = st.path / SHARDS_FILE
    if not f.exists():
        if shards and REC_SEQ in st.kinds:
            raise StorageError(f"data dir {st.path} holds a one-shard strong-mode log; this cluster runs "
                               f"{len(shards)} shards (use another data_dir, or remove it to start empty)")
        return
    try:
        had = json.loads(f.read_bytes())
        if not isinstance(had, list) or not all(isinstance(x, list) for x in had):
            raise ValueError("not a list of lists")
    except (OSError, ValueError) as e:
        raise StorageError(f"{f}: does not parse ({e}); refusing to start") from None
    want = [list(x) for x in shards]
    if had != want:
        now = f"{len(shards)} shards {want}" if shards else "one shard"
        raise StorageError(f"data dir {st.path} was written with {len(had)} shards {had}; this cluster runs {now} "
                           f"(moving instruments between shards needs an empty data_dir)")


def _pack_delta(d: PersistDelta) -> bytes:
    return msgpack.packb([REC_SEQ, d.term, d.voted_for, d.first_index, [[e[0], e[1]] for e in d.entries],
                          d.snapshot_index, d.snapshot_term, d.snapshot, d.commit_index], use_bin_type=True)


def _counter(name: str, v: Any) -> int:
    if type(v) is not int or not 0 <= v <= MAX_COUNTER:
        raise ValueError(f"{name} {v!r} is not an integer in 0..2**62")
    return v


def _tighten(fd: int, f: Path) -> None:
    """A file of the data dir that an older version left readable by others becomes 0600."""
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if mode & 0o077:
            os.fchmod(fd, FILE_MODE)
            log.warning("%s had mode %04o; now 0600", f, mode)
    except OSError as e:  # not ours to change (another owner): say so, it still works
        log.warning("%s: cannot make it private: %s", f, e.strerror)


def _tighten_path(f: Path) -> None:
    try:
        fd = os.open(f, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return  # reading it says what is wrong
    try:
        _tighten(fd, f)
    finally:
        os.close(fd)


def check_strong_snapshot(index: int, data: Any) -> None:
    """Decode a strong-mode snapshot the way ``SequencedBooks.install`` does, without a venue;
    raises (``WireError``, ``ValueError``, ...) if it does not decode or covers another index."""
    if type(data) is not bytes or not data:
        raise ValueError("empty snapshot")
    raw = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True, max_ext_len=0)
    if isinstance(raw, list) and len(raw) == 9 and isinstance(raw[8], list):
        for r in raw[8]:
            if isinstance(r, list) and len(r) == 3:
                r.append([])  # written before the fold kept a request's trade rows (as install does)
    fields = _STRONG_SNAPSHOT(raw)
    if fields[1] != index:
        raise ValueError(f"snapshot covers index {fields[1]}, not {index}")


def _parse_delta(rec: list[Any]) -> PersistDelta:
    if len(rec) != 9:
        raise ValueError(f"a sequencer record has 9 fields, not {len(rec)}")
    _kind, term, voted, first, entries, snap_index, snap_term, snap, commit = rec
    for name, v in (("term", term), ("first index", first), ("snapshot index", snap_index),
                    ("snapshot term", snap_term), ("commit index", commit)):
        _counter(name, v)
    if first < 1 or not (voted is None or type(voted) is str) or not (snap is None or type(snap) is bytes):
        raise ValueError("bad sequencer record")
    if type(entries) is not list:
        raise ValueError("the entries of a sequencer record are not an array")
    parsed = tuple(entry_from_storage(e) for e in entries)
    for e in parsed:
        _counter("entry term", e.term)
    return PersistDelta(term, voted, first, parsed, snap_index, snap_term, snap, commit)
