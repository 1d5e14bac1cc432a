"""The audit trail: every op a node stamps or applies and every trade, with the time it can prove.

Why a separate trail: the op log (``storage.py``) holds what replicas need (ops, HLC bounds) and is
compacted away; a venue must keep, for years, *when* each event happened by a clock traceable to
UTC and how wrong that clock could have been (MiFID II RTS 25). Each row holds the op id, the
account, the op's HLC, this node's wall clock when the row was made (ns), its offset to the time
reference and the error bound at that moment (``clockbound``), from which the UTC estimate is
``wall + offset``, good to ``± bound``. The reference's clock is *taken* as UTC: keeping it so
(GPS or PTP, and its own error added) is the operator's part (docs/operations.md, "Time").

Layout of ``data_dir`` (beside the op log)::

    audit-000001.log, audit-000002.log, ...   records, appended; a new file past ``max_bytes``

Record: ``b"GA" | u32 length | u32 crc32(payload) | payload`` (the op log's framing); payload is
msgpack ``[1, [row, ...]]``, one record per write, a row ``[event, op, account, hlc_wall,
hlc_logical, wall_ns, offset_ns, bound_ns, status, detail]``: ``event`` 1 stamp (this node made the
op), 2 apply (a peer's op entered this node's op-set), 3 trade, 4 revise (a provisional trade
changed or was undone by a replay); ``bound_ns`` -1 while the clock was unsynced; ``status``
0 unsynced, 1 synced, 2 free-running.

Rules that hold:
- Append only. A file past ``max_bytes`` is closed and never written again; when more than
  ``keep`` files exist the oldest go (ship them elsewhere first if the law wants them longer).
- An op's row is written (``write``) before any reply or op of the same loop iteration leaves the
  node (``NodeRunner._flush``), so a SIGKILL never loses the row of an acknowledged op. Trades and
  revisions are written after that iteration's sends (they follow from ops already recorded). The
  file is fsynced by the op log's policy, after the sends: ``always`` every iteration that wrote,
  ``batch`` at most every ``BATCH_SYNC_NS`` (100 ms; group commit across iterations: an fsync costs
  ~5 ms on the disk measured, and one per iteration besides the op log's halved a busy node's loop),
  ``never`` leaves it to the OS. A power cut can lose the rows of that last window (their ops are in
  the op log, fsynced before the sends); a process crash loses none.
- At open, the file being appended to is checked like the op log: a torn tail record (a crash
  mid-write) is cut off and counted (``torn_tail_dropped``); a damaged record with valid ones after
  it refuses the start (``StorageError`` naming file and offset). Readers (``read_rows``) refuse the
  same damage in any file, and stop quietly at an incomplete last record of the newest one (a
  write in progress).
- Files are created 0600 with ``O_NOFOLLOW``; a row's strings are the node's own (op ids, account
  ids checked at config load), so nothing a peer sends can grow a row beyond its fields' bounds.
"""

from __future__ import annotations

import datetime
import logging
import os
import struct
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import msgspec

from ..core.clockbound import FREE_RUNNING, SYNCED, UNSYNCED, ClockBound
from ..core.ops import KIND_NAMES, Op, TradeExecuted, TradeRevised
from .storage import FILE_MODE, StorageError, _fsync_dir, parse_record

MAGIC = b"GA"
HEAD = struct.Struct("<2sII")
VERSION = 1
STAMP, APPLY, TRADE, REVISE = 1, 2, 3, 4
EVENT_NAMES = {STAMP: "stamp", APPLY: "apply", TRADE: "trade", REVISE: "revise"}
STATUS_CODES = {UNSYNCED: 0, SYNCED: 1, FREE_RUNNING: 2}
STATUS_NAMES = {v: k for k, v in STATUS_CODES.items()}
#: a record's payload: msgspec writes the bytes ``msgpack.packb(x, use_bin_type=True)`` would, faster
#: (the wire's encoder too: core/wire.py; tests/node/test_audit_batch.py compares)
_pack = msgspec.msgpack.Encoder().encode
HLC_MEMORY = 100_000  # op id -> HLC kept to stamp trades with their cause op's HLC
BATCH_SYNC_NS = 100_000_000  # fsync = "batch": the audit file is fsynced at most this often
FIELDS = ("op", "account", "hlc", "wall_ns", "utc", "bound_us", "event", "offset_ns", "clock", "detail")

log = logging.getLogger("gossipbook.audit")


def _files(path: Path) -> list[tuple[int, Path]]:
    out = []
    for f in path.glob("audit-*.log"):
        try:
            out.append((int(f.stem[6:]), f))
        except ValueError:
            continue
    return sorted(out)


def _parse(data: bytes, off: int) -> tuple[bytes, int] | None:
    return parse_record(data, off, MAGIC)


def _valid_after(data: bytes, start: int) -> bool:
    i = data.find(MAGIC, start)
    while i != -1:
        if _parse(data, i) is not None:
            return True
        i = data.find(MAGIC, i + 1)
    return False


def _records(f: Path, data: bytes, last: bool) -> tuple[list[bytes], int | None]:
    """The payloads in ``data`` and where a torn tail starts (None: none). Damage with valid records
    after it, or any damage in a file that is not the newest, raises ``StorageError``."""
    out: list[bytes] = []
    off = 0
    while off < len(data):
        rec = _parse(data, off)
        if rec is None:
            if not last or _valid_after(data, off + 1):
                raise StorageError(f"{f}: damaged audit record at offset {off} with valid records after it "
                                   f"(the trail is corrupt in the middle, not torn at the end)")
            return out, off
        out.append(rec[0])
        off = rec[1]
    return out, None


class AuditLog:
    """The append side: one node's audit files."""

    def __init__(self, path: Path, fsync: str = "batch", max_bytes: int = 64 << 20, keep: int = 16) -> None:
        if max_bytes < 1 or keep < 1:
            raise ValueError("audit files need a positive size and keep at least one")
        self.path = path
        self.fsync = fsync
        self.max_bytes = max_bytes
        self.keep = keep
        self.counters = {"audit_records": 0, "audit_rows": 0, "audit_bytes": 0, "audit_fsyncs": 0,
                         "audit_rotations": 0, "audit_files_removed": 0, "audit_torn_tail_dropped": 0,
                         "audit_write_errors": 0}
        self._fd: int | None = None
        self._no = 0
        self._size = 0
        self._unsynced = False
        self._synced_at = 0  # monotonic ns of the last fsync
        #: ``batch``: fsync at most this often; ``always``: every ``sync()`` that has something to sync
        self.sync_every_ns = 0 if fsync == "always" else BATCH_SYNC_NS

    @classmethod
    def open(cls, path: str | os.PathLike[str], fsync: str = "batch", max_bytes: int = 64 << 20,
             keep: int = 16) -> AuditLog:
        """Open the trail in ``path`` (the node's data dir, which ``Storage.open`` made and locked)."""
        a = cls(Path(path), fsync, max_bytes, keep)
        files = _files(a.path)
        if files:
            no, f = files[-1]
            data = f.read_bytes()
            _recs, torn = _records(f, data, last=True)
            if torn is not None:
                a.counters["audit_torn_tail_dropped"] += 1
                log.warning("%s: dropping a torn audit record at offset %d (%d bytes)", f, torn, len(data) - torn)
                with open(f, "r+b") as fh:
                    fh.truncate(torn)
                    fh.flush()
                    os.fsync(fh.fileno())
            a._no = no
        a._open(new=not files)
        return a

    def _open(self, new: bool) -> None:
        if self._fd is not None:
            self.sync(force=True)
            os.close(self._fd)
            self._fd = None
        if new:
            self._no += 1
        f = self.path / f"audit-{self._no:06d}.log"
        try:
            self._fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
        except OSError as e:
            raise StorageError(f"cannot open audit file {f}: {e.strerror or e}") from None
        self._size = os.fstat(self._fd).st_size
        if new:
            _fsync_dir(self.path)
            self._retire()

    def _retire(self) -> None:
        """Delete the oldest files beyond ``keep`` (the one being written counts)."""
        files = _files(self.path)
        for _no, f in files[:max(0, len(files) - self.keep)]:
            f.unlink(missing_ok=True)
            self.counters["audit_files_removed"] += 1

    def append(self, rows: list[list[Any]], sync: bool = True) -> None:
        """Write ``rows`` as one record (one write; with ``sync``, then ``sync()``); ``StorageError``
        if the disk refuses (the partial record is cut off, as the op log does)."""
        if not rows:
            if sync:
                self.sync()
            return
        if self._size >= self.max_bytes:
            self._open(new=True)
            self.counters["audit_rotations"] += 1
        payload = _pack([VERSION, rows])
        rec = HEAD.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload
        assert self._fd is not None
        try:
            if os.write(self._fd, rec) != len(rec):
                raise OSError(28, "short write (disk full?)")
        except OSError as e:
            self.counters["audit_write_errors"] += 1
            try:
                os.ftruncate(self._fd, self._size)
            except OSError:
                pass
            raise StorageError(f"cannot write audit file in {self.path}: {e.strerror or e}") from None
        self._size += len(rec)
        self._unsynced = True
        self.counters["audit_records"] += 1
        self.counters["audit_rows"] += len(rows)
        self.counters["audit_bytes"] += len(rec)
        if sync:
            self.sync()

    def sync(self, force: bool = False) -> None:
        """fsync what was written since the last one: under ``batch`` only once ``sync_every_ns``
        has passed since the last (``force``: now); never under ``never``."""
        if not self._unsynced or self.fsync == "never" or self._fd is None:
            return
        t = time.monotonic_ns()
        if not force and t - self._synced_at < self.sync_every_ns:
            return
        self._synced_at = t
        try:
            os.fsync(self._fd)
        except OSError as e:
            self.counters["audit_write_errors"] += 1
            raise StorageError(f"cannot fsync audit file in {self.path}: {e.strerror or e}") from None
        self._unsynced = False
        self.counters["audit_fsyncs"] += 1

    def close(self) -> None:
        if self._fd is not None:
            try:
                self.sync(force=True)
            except StorageError:
                pass
            os.close(self._fd)
            self._fd = None


class AuditTrail:
    """What a node records, from what its core hands the shell: new ops (``take_new_ops``), trade
    events (``events``) and the clock's reading (``ClockBound.read`` at this node's ``clock()``,
    taken once per call that has rows). Rows that the disk refused are kept (at most
    ``max_pending``, beyond that counted as ``audit_rows_lost``) and written first next time."""

    def __init__(self, log_: AuditLog, node_id: str, clock: Callable[[], int], bound: ClockBound,
                 max_pending: int = 100_000) -> None:
        self.log = log_
        self.node_id = node_id
        self.clock = clock
        self.bound = bound
        self.max_pending = max_pending
        self._hlc: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self._pending: list[list[Any]] = []
        self.counters = self.log.counters
        self.counters.setdefault("audit_rows_lost", 0)
        self.failed: str | None = None

    def _clock(self) -> list[Any]:
        wall = self.clock()
        r = self.bound.read(wall)
        return [wall, r.offset_ns, r.bound_ns, STATUS_CODES.get(r.status, 0)]

    def ops(self, ops: Iterable[Op]) -> None:
        """Record ops that entered the op-set: ours are ``stamp``, a peer's ``apply``. Written, not
        yet fsynced: ``events`` (called later in the same iteration) syncs.

        One record per call (a loop iteration's ops), the clock read once for all of them, and the
        per-op work kept to building the row: the op id made once (it is a property that formats a
        string), names bound outside the loop. This is on
        every op's path before the sends (5.7 µs/op measured before this was tightened)."""
        rows: list[list[Any]] = []
        me, hlc, names, limit = self.node_id, self._hlc, KIND_NAMES, HLC_MEMORY
        clock: list[Any] = []
        for op in ops:
            if not clock:
                clock = self._clock()
            origin, wall, logical = op.origin, op.wall, op.logical
            oid = f"{origin}:{op.seq}"
            hlc[oid] = (wall, logical)
            if len(hlc) > limit:  # trimmed per op: an op id seen again after it was trimmed is newest
                hlc.popitem(last=False)
            detail = f"{names.get(op.kind, '?')} {op.symbol} {op.qty}@{op.price}"
            if op.order_id:
                detail += f" on {op.order_id}"
            rows.append([STAMP if origin == me else APPLY, oid, op.account, wall, logical, *clock, detail])
        self._write(rows, sync=False)

    def events(self, events: Iterable[Any]) -> None:
        """Record the trades (and revisions of provisional ones) among ``events``, then fsync."""
        rows = []
        clock: list[Any] = []
        for ev in events:
            t = type(ev)
            if t not in (TradeExecuted, TradeRevised):
                continue
            if not clock:
                clock = self._clock()
            if t is TradeExecuted:
                tr = ev.trade
                rows.append([TRADE, tr.trade_id, tr.taker_account, *self._cause_hlc(tr.trade_id), *clock,
                             f"{tr.symbol} {tr.qty}@{tr.price} maker {tr.maker} ({tr.maker_account}) taker {tr.taker}"])
            else:
                old, new = ev.old, ev.new
                rows.append([REVISE, old.trade_id, old.taker_account, *self._cause_hlc(old.trade_id), *clock,
                             "undone" if new is None else f"now {new.qty}@{new.price}"])
        self._write(rows, sync=True)

    def _cause_hlc(self, trade_id: str) -> tuple[int, int]:
        return self._hlc.get(trade_id.rpartition("/")[0], (0, 0))

    def _write(self, rows: list[list[Any]], sync: bool) -> None:
        if self._pending:
            rows = self._pending + rows
            self._pending = []
        try:
            self.log.append(rows, sync)
        except StorageError as e:
            keep = rows[-self.max_pending:]
            self.counters["audit_rows_lost"] += len(rows) - len(keep)
            self._pending = keep
            if self.failed is None:
                log.error("%s; audit rows are kept in memory (at most %d) until it can write again", e,
                          self.max_pending)
            self.failed = str(e)
            return
        if self.failed is not None:
            log.info("audit trail writable again")
            self.failed = None

    def close(self) -> None:
        try:
            self.log.append(self._pending)
            self._pending = []
        except StorageError:
            pass
        self.log.close()


# ---- reading (gossipbook audit export) -----------------------------------------------------------------
def utc_text(ns: int) -> str:
    """ISO 8601 UTC with nanoseconds (RTS 25 asks for 1 µs granularity or finer)."""
    s, frac = divmod(ns, 1_000_000_000)
    return datetime.datetime.fromtimestamp(s, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


def row_dict(row: list[Any]) -> dict[str, Any]:
    """A stored row as the export's fields (``FIELDS``)."""
    ev, op, account, hw, hl, wall, offset, bound, status, detail = row
    synced = bound >= 0
    return {"op": op, "account": account, "hlc": f"{hw}:{hl}" if hw else None, "wall_ns": wall,
            "utc": utc_text(wall + offset) if synced else None,
            "bound_us": round(bound / 1000, 3) if synced else None, "event": EVENT_NAMES.get(ev, str(ev)),
            "offset_ns": offset if synced else None, "clock": STATUS_NAMES.get(status, "?"), "detail": detail}


def read_rows(path: str | os.PathLike[str]) -> Iterator[list[Any]]:
    """Every stored row of the trail in ``path``, oldest first; ``StorageError`` on damage."""
    p = Path(path)
    files = _files(p)
    for i, (_no, f) in enumerate(files):
        try:
            data = f.read_bytes()
        except OSError as e:
            raise StorageError(f"cannot read {f}: {e.strerror or e}") from None
        payloads, _torn = _records(f, data, last=i == len(files) - 1)
        for off, payload in enumerate(payloads):
            try:
                rec = msgpack.unpackb(payload, raw=False)
                if type(rec) is not list or len(rec) != 2 or rec[0] != VERSION or type(rec[1]) is not list:
                    raise ValueError("not an audit record")
                for row in rec[1]:
                    if type(row) is not list or len(row) != 10:
                        raise ValueError("bad row")
                    yield row
            except (ValueError, TypeError, msgpack.UnpackException) as e:
                raise StorageError(f"{f}: record {off} passes its checksum but does not parse ({e})") from None
