"""The gateway's durable state: one SQLite file in its data directory, fsynced on every commit.

What it keeps, per session (keyed ``"<SenderCompID>-><TargetCompID>"`` as the client sends them):
the next MsgSeqNum each way, the application messages kept for resend (the session's
``max_stored`` newest), and the application records (ClOrdID -> gossipbook order id and the order's
quantities; each fill and what it was last reported as; the intent of each NewOrderSingle whose
outcome is not recorded yet, under its request id). A restart loads all of it, so sequence
numbers continue, a ResendRequest after the restart is answered, and a cancel naming a ClOrdID from
before the restart finds its order.

Rules that hold: a commit is one transaction (``synchronous=FULL`` in WAL mode: on disk when
``commit`` returns; ``fsync = "never"`` in fix.toml trades that for speed), so sequence numbers and the messages that used them are saved together; one
gateway per data directory (an exclusive ``flock`` on ``gateway.lock``; a second one is refused with
one line); the shell calls ``commit`` from a worker thread, never two at once.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..config import ConfigError
from .app import FillRec, OrderRec
from .session import Forget, Persisted, Record, ResetStore, SeqNums, Stored

_SCHEMA = """
CREATE TABLE IF NOT EXISTS seqnums (session TEXT PRIMARY KEY, next_in INTEGER NOT NULL, next_out INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS messages (session TEXT NOT NULL, seq INTEGER NOT NULL, msg_type TEXT NOT NULL,
    sending_time BLOB NOT NULL, body BLOB NOT NULL, PRIMARY KEY (session, seq));
CREATE TABLE IF NOT EXISTS records (session TEXT NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL,
    data TEXT NOT NULL, PRIMARY KEY (session, kind, key));
"""

AppRecord = tuple[str, str, dict[str, Any] | None]


class Store:
    """The SQLite store; ``Store.open(data_dir)`` takes the directory's lock."""

    def __init__(self, db: sqlite3.Connection, lock_fd: int | None, path: Path) -> None:
        self._db = db
        self._lock_fd = lock_fd
        self.path = path
        self.commits = 0

    @classmethod
    def open(cls, data_dir: str | os.PathLike[str], fsync: str = "always") -> Store:
        """``fsync="always"``: every commit is on disk when it returns (``synchronous=FULL``);
        ``"never"``: it survives a crash of the process but not of the machine (``NORMAL``)."""
        d = Path(data_dir)
        try:
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(d / "gateway.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise ConfigError(f"cannot use the gateway data directory {d}: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise ConfigError(f"another gateway is running on the data directory {d} (it holds "
                              f"{d / 'gateway.lock'}); give each gateway its own data_dir") from None
        path = d / "fix.sqlite3"
        try:
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL" if fsync == "always" else "PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
        except sqlite3.Error as e:
            os.close(fd)
            raise ConfigError(f"cannot open the gateway store {path}: {e}") from None
        return cls(db, fd, path)

    def close(self) -> None:
        self._db.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # ---- loading ------------------------------------------------------------------------------------
    def load_session(self, key: str) -> Persisted:
        row = self._db.execute("SELECT next_in, next_out FROM seqnums WHERE session=?", (key,)).fetchone()
        p = Persisted() if row is None else Persisted(int(row[0]), int(row[1]))
        for seq, mt, st, body in self._db.execute(
                "SELECT seq, msg_type, sending_time, body FROM messages WHERE session=? ORDER BY seq", (key,)):
            p.stored[int(seq)] = Stored(int(seq), str(mt), bytes(st), bytes(body))
        return p

    def load_app(self, key: str) -> tuple[list[OrderRec], list[FillRec], dict[str, dict[str, Any]]]:
        """The session's order and fill records and its intents (orders sent, outcome not recorded)."""
        orders: list[OrderRec] = []
        fills: list[FillRec] = []
        intents: dict[str, dict[str, Any]] = {}
        for kind, k, data in self._db.execute(
                "SELECT kind, key, data FROM records WHERE session=? ORDER BY rowid", (key,)):
            d = json.loads(data)
            if kind == "order":
                orders.append(OrderRec.from_json(d))
            elif kind == "fill":
                fills.append(FillRec.from_json(d))
            elif kind == "intent":
                intents[str(k)] = d
        return orders, fills, intents

    # ---- writing ------------------------------------------------------------------------------------
    def commit(self, batches: Iterable[tuple[str, list[Record], list[AppRecord]]]) -> None:
        """Write every batch in one transaction (fsynced before it returns)."""
        db = self._db
        db.execute("BEGIN")
        try:
            for key, records, app in batches:
                for r in records:
                    if isinstance(r, Stored):
                        db.execute("INSERT OR REPLACE INTO messages VALUES (?, ?, ?, ?, ?)",
                                   (key, r.seq, r.msg_type, r.sending_time, r.body))
                    elif isinstance(r, Forget):
                        db.execute("DELETE FROM messages WHERE session=? AND seq<?", (key, r.upto))
                    elif isinstance(r, ResetStore):
                        db.execute("DELETE FROM messages WHERE session=?", (key,))
                    elif isinstance(r, SeqNums):
                        db.execute("INSERT OR REPLACE INTO seqnums VALUES (?, ?, ?)", (key, r.next_in, r.next_out))
                for kind, k, data in app:
                    if data is None:
                        db.execute("DELETE FROM records WHERE session=? AND kind=? AND key=?", (key, kind, k))
                    else:
                        # an update keeps its rowid (load order = first-seen order, which eviction relies on)
                        cur = db.execute("UPDATE records SET data=? WHERE session=? AND kind=? AND key=?",
                                         (json.dumps(data), key, kind, k))
                        if cur.rowcount == 0:
                            db.execute("INSERT INTO records VALUES (?, ?, ?, ?)", (key, kind, k, json.dumps(data)))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.commits += 1
