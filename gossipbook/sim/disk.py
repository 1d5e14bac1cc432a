"""A node's simulated disk: what ``gossipbook/node/storage.py`` keeps, without the files.

The simulator persists exactly what the trio shell persists, at the same point of its loop (after
``take_new_ops``, before any datagram of that flush leaves), and restarts a node the way the shell
does (``NodeRunner.__init__`` with ``storage.recover_state`` / ``storage.load_into``):

- every op the node took, keyed by ``(origin, seq)``;
- an **HLC bound**: the node's ``hlc.last`` leased ``HLC_LEASE_NS`` ahead whenever it comes within
  half a lease of the bound, so after a restart the HLC never goes below anything the node announced;
- the node's incarnation;
- the compaction snapshot, round-tripped through its wire encoding (ops it covers are dropped, as
  the shell drops whole segments);
- in strong mode instead of ops: the sequencer's ``PersistentState``, each ``take_persist()`` delta
  folded in with ``sequencer.apply_delta`` (what ``storage.persist_sequencer`` appends and replays).

Writes never fail and are instantly durable here (the ``crash`` fault loses memory, not disk).
Keep this file in step with the shell's storage when that changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..core.hlc import ZERO, Timestamp
from ..core.ops import Op
from ..core.sequencer import PersistDelta, PersistentState, apply_delta
from ..core.wire import snapshot_from_bytes, snapshot_to_bytes

HLC_LEASE_NS = 200_000_000  # node/storage.py's HLC_LEASE_NS


@dataclass(slots=True)
class Disk:
    ops: dict[tuple[str, int], Op] = field(default_factory=dict)
    hlc_bound: Timestamp = ZERO
    incarnation: int = 0
    snapshot: bytes | None = None
    base_vv: dict[str, int] = field(default_factory=dict)  # what the snapshot covers
    writes: int = 0
    seq: PersistentState | None = None  # strong mode: the sequencer's durable state
    handed: list[str] = field(default_factory=list)  # strong mode: request ids handed to a leader

    def persist_seq(self, delta: PersistDelta | None, handed: list[str], incarnation: int) -> None:
        """Strong mode's ``storage.persist_sequencer``: fold the delta into the stored state, and
        keep the request ids this node handed to a leader."""
        if delta is not None or handed:
            self.writes += 1
        if delta is not None:
            self.seq = apply_delta(self.seq or PersistentState(), delta)
        self.handed += handed
        self.incarnation = max(self.incarnation, incarnation)

    def persist(self, ops: list[Op], hlc: Timestamp, incarnation: int) -> None:
        """``storage.persist``: the ops, and the HLC bound when the HLC nears it."""
        need_bound = hlc > Timestamp(self.hlc_bound.wall - HLC_LEASE_NS // 2, 0)
        if not ops and not need_bound:
            return
        self.writes += 1
        for op in ops:
            self.ops[(op.origin, op.seq)] = op
        if need_bound:
            self.hlc_bound = max(self.hlc_bound, Timestamp(hlc.wall + HLC_LEASE_NS, 0))
        self.incarnation = max(self.incarnation, incarnation)

    def write_snapshot(self, snap: Any) -> None:
        """``storage.write_snapshot``: keep the snapshot, drop the ops it covers."""
        self.snapshot = snapshot_to_bytes(snap)
        self.base_vv = base = dict(snap.base_vv)
        for key in [k for k in self.ops if k[1] <= base.get(k[0], 0)]:
            del self.ops[key]

    def holds(self, origin: str, seq: int) -> bool:
        if (origin, seq) in self.ops:
            return True
        return seq <= self.base_vv.get(origin, 0)

    def recover_state(self, node_id: str) -> tuple[Timestamp | None, int | None]:
        """``storage.recover_state``: ``(hlc_last, incarnation)`` for the constructor; None if new."""
        own = max((Timestamp(o.wall, o.logical) for o in self.ops.values() if o.origin == node_id), default=None)
        hlc = max(filter(None, [own, self.hlc_bound if self.hlc_bound.wall else None]), default=None)
        return hlc, (self.incarnation + 1 if self.incarnation else None)

    def load_into(self, core: Any) -> tuple[list[Any], int]:
        """``storage.load_into``: the snapshot, then every op, into a fresh core.

        Returns the events and the number of trades inside the snapshot (which are not reported)."""
        r = core.replica
        events: list[Any] = []
        snap_trades = 0
        if self.snapshot is not None:
            snap = snapshot_from_bytes(self.snapshot)
            snap_trades = snap.trades
            events += r.install_snapshot(snap, r.hlc.wall)
        ops = sorted(self.ops.values(), key=lambda o: (o.origin, o.seq))
        events += r.receive(ops, max(r.hlc.wall, max((o.wall for o in ops), default=0)))
        core.take_new_ops()  # already on disk
        return events, snap_trades
