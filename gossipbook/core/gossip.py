"""Dissemination and anti-entropy: how ops reach every replica.

Theory of operation
-------------------
- **Eager push.** An op stamped here is queued with ``local(op)`` and sent, batched, to every live
  peer at the next ``flush`` (the shell flushes after each burst of input): lowest latency.
- **Push-pull anti-entropy** (Scuttlebutt-style). Every ``interval_ns`` this node sends its version
  vector in a ``Summary(reply=True)`` to one random live peer. The peer answers with exactly the ops
  we lack and, if our vector shows ops it lacks, its own ``Summary(reply=False)``, which we answer in
  kind. This repairs loss, reordering and partitions; nothing else is needed for convergence.
- **Heartbeats** every ``heartbeat_ns`` to every live peer carry our HLC, our max seq and our
  version vector: finality (the stable watermark) and ack levels are computed from them.
- **Rate bound.** Repair answers draw from a token bucket of ``repair_ops_per_s``; what does not
  fit waits for the next round, so a heal after a long partition cannot flood a node.
- **Repair hold.** Ops sent to a peer as repair are not sent to it again for ``repair_hold_ns``
  (counted from the last repair sent to it), whatever its summaries say meanwhile: after a heal a
  peer is still folding the first answer when its next summary arrives, and answering each summary
  in full sent every op about three times (640k repair ops for a 200k-op gap). A repair that was
  lost is sent again once the hold expires.
- **Catch-up folding.** Received ops are folded once per burst. A large catch-up (at least
  ``defer_min_ops`` received and not yet folded, or landing that deep below the top of the log) is
  held back while peers' version vectors show more is on its way, up to ``defer_ns`` (plus
  ``defer_ns_per_op`` per waiting op) after the last batch arrived: a heal's gap then costs one
  rollback and replay, not one per repair answer (each lands below most of the log). Live traffic
  (a few ops per burst, on top of the log) is never held. What a peer holds is learnt before a
  fold is decided, and a peer answering with a large repair sends its summary first.
- **One peer per gap.** While a catch-up is held, our summaries carry ``skip``: what already
  arrived, and what another peer was asked for and is expected to send (its answer is predictable:
  origins sorted, one repair burst). Without it, every peer a node summarised to during the wait
  sent the whole gap again (a 100k-op heal moved 580k–960k repair ops; with it, 280k–330k).
  A gap that a peer shows and nobody was asked for is asked for at once, not at the next round.
- **Snapshots.** A peer whose vector is behind our compaction point gets the snapshot in chunks
  first; the deltas follow through the normal summary exchange. One transfer is in flight per peer:
  summaries meanwhile do not restart it, it is sent again only after ``snapshot_retry_ns`` if the
  peer still lacks it, and its bytes are charged to the repair bucket (one token per
  ``snapshot_bytes_per_token``; the bucket may go into debt, which holds repair until repaid), so a
  forged summary costs at most what repair may cost. A receiver reassembles at most one transfer
  per peer (a newer id replaces it; an older one only once it has been idle for a retry period),
  within ``snapshot_max_bytes`` (each chunk counted with ``CHUNK_OVERHEAD`` for its bookkeeping).
- **Run-time membership.** ``add_peer`` / ``remove_peer`` follow the replicated configuration
  (``config_epoch.py``; the node core calls them when the epoch moves): a removed member gets
  nothing more from us, and what we kept for it (transfers, repair holds) is dropped.
- **Members only.** Ops of origins the replica does not admit (neither members nor fenced) are
  dropped as they arrive (counted ``non_member_ops``), so they never reach the catch-up plan or a
  summary's ``skip``; the version vectors it plans by are members-only (``Replica.observe_vv``).

Pure: time is passed in, randomness comes from the ``random.Random`` given.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .errors import WireError
from .hlc import Timestamp
from .ops import Event, Op
from .replica import Replica
from .wire import Heartbeat, OpBatch, SnapshotChunk, Summary, snapshot_from_bytes, snapshot_to_bytes

MS = 1_000_000
#: bytes a reassembly is charged per chunk besides its data (a dict slot and a bytes object)
CHUNK_OVERHEAD = 128


@dataclass(frozen=True, slots=True)
class GossipConfig:
    interval_ns: int = 100 * MS  # one anti-entropy round
    heartbeat_ns: int = 50 * MS
    repair_ops_per_s: int = 200_000  # token bucket refill for repair traffic
    repair_burst: int = 20_000
    repair_hold_ns: int = 300 * MS  # do not resend repair ops to a peer for this long (see above)
    defer_ns: int = 150 * MS  # catch-up folding: wait this long after the last batch (0: never wait)
    defer_ns_per_op: int = 10_000  # ... plus this much per op waiting
    defer_min_ops: int = 1_000  # ... only once this many received ops wait, or land this deep in the log
    defer_max_ops: int = 500_000  # ... and never with more than this many waiting
    compact_every_ns: int = 1_000 * MS
    snapshot_chunk: int = 1_100  # bytes of snapshot per datagram
    snapshot_retry_ns: int = 1_000 * MS  # resend a snapshot the peer still lacks after this long
    snapshot_bytes_per_token: int = 64  # a snapshot sent costs the repair bucket a token per this many bytes
    snapshot_max_bytes: int = 256 << 20  # the largest snapshot reassembled from one peer
    push: bool = True  # eager push (False leaves convergence to anti-entropy alone)
    anti_entropy: bool = True

    def __post_init__(self) -> None:
        for name in ("interval_ns", "heartbeat_ns", "repair_ops_per_s", "repair_burst", "compact_every_ns",
                     "snapshot_chunk", "snapshot_retry_ns", "snapshot_bytes_per_token", "snapshot_max_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name.removesuffix('_ns')} must be positive")
        if self.repair_hold_ns < 0 or self.defer_ns < 0 or self.defer_ns_per_op < 0:
            raise ValueError("repair_hold and defer must not be negative")


def _raised(vv: dict[str, int], by: dict[str, int], ops: Iterable[Op] = ()) -> dict[str, int]:
    """``vv`` raised per origin to ``by`` and to the seqs of ``ops`` (a new dict when anything
    changes; ``vv`` itself otherwise)."""
    out = vv
    for o, sq in by.items():
        if sq > out.get(o, 0):
            out = out if out is not vv else dict(vv)
            out[o] = sq
    for op in ops:
        if op.seq > out.get(op.origin, 0):
            out = out if out is not vv else dict(vv)
            out[op.origin] = op.seq
    return out


class _Runs:
    """Per origin, how far the ops held plus those received and not folded yet reach without a
    gap (``run``); seqs beyond a gap wait in ``gaps`` until it fills."""

    __slots__ = ("gaps", "run")

    def __init__(self, vv: dict[str, int], ops: Iterable[Op]) -> None:
        self.run = dict(vv)
        self.gaps: dict[str, set[int]] = {}
        self.add(ops)

    def add(self, ops: Iterable[Op]) -> None:
        run, gaps = self.run, self.gaps
        for op in ops:
            o, s = op.origin, op.seq
            r = run.get(o, 0)
            if s == r + 1:
                waiting = gaps.get(o)
                while waiting and s + 1 in waiting:
                    s += 1
                    waiting.discard(s)
                run[o] = s
            elif s > r + 1:
                gaps.setdefault(o, set()).add(s)


class _SnapIn:
    """One snapshot transfer from a peer being reassembled."""

    __slots__ = ("at", "parts", "size", "snap_id", "total")

    def __init__(self, snap_id: int, total: int, now: int) -> None:
        self.snap_id, self.total, self.at = snap_id, total, now
        self.parts: dict[int, bytes] = {}
        self.size = 0  # bytes charged against ``snapshot_max_bytes``


class Gossip:
    """The gossip state machine of one node; membership tells it who is live (``live``)."""

    def __init__(self, replica: Replica, peers: Iterable[str], rng: random.Random,
                 config: GossipConfig | None = None) -> None:
        self.replica = replica
        self.node_id = replica.node_id
        self.peers = sorted(set(peers) - {self.node_id})
        self.live: set[str] = set(self.peers)
        self.rng = rng
        self.config = config or GossipConfig()
        self._out: list[tuple[str, Any]] = []
        self._push: list[Op] = []
        self._next_round = 0
        self._next_heartbeat = 0
        self._next_compact = 0
        self._tokens = float(self.config.repair_burst)
        self._last_refill: int | None = None
        self._snap_in: dict[str, _SnapIn] = {}  # peer -> the one transfer from it being reassembled
        self._snap_done: dict[str, int] = {}  # peer -> the id of its last transfer completed here
        self._snap_out: dict[str, int] = {}  # peer -> when the transfer in flight to it was sent
        self._snap_cache: tuple[tuple[int, int], bytes] | None = None  # (replica version, bytes)
        self._inbound: list[Op] = []
        self._inbound_now = 0  # when the last OpBatch arrived
        #: how far held + received ops reach per origin; kept only while a catch-up may be held
        #: (built once it is large), so live traffic pays nothing for it
        self._inbound_runs: _Runs | None = None
        #: origin -> (seq, until, peer): ``peer`` was asked and is expected to send ops of the origin
        #: up to seq; other peers are told to skip them until then (one peer per gap)
        self._expect: dict[str, tuple[int, int, str]] = {}
        self._last_input = 0  # the latest time receive() or tick() was called with
        self._snap_seq = 0
        #: peer -> (per origin, the highest seq sent to it as repair; when the last repair was sent)
        self._repaired: dict[str, tuple[dict[str, int], int]] = {}
        self.counters = {"pushed_ops": 0, "repair_ops": 0, "rate_limited": 0, "rounds": 0,
                         "snapshots_sent": 0, "bad_snapshots": 0, "repair_held": 0, "folds_deferred": 0,
                         "snapshots_held": 0, "snapshot_chunks_dropped": 0, "snapshots_too_large": 0}

    # ---- inputs ------------------------------------------------------------------------------------
    def local(self, op: Op) -> None:
        """Queue an op stamped here for eager push."""
        if self.config.push:
            self._push.append(op)

    def flush(self) -> None:
        """Send queued local ops to every live peer (one batch each; the encoder splits by MTU)."""
        if not self._push:
            return
        ops, self._push = self._push, []
        for p in self.peers:
            if p in self.live:
                self._out.append((p, OpBatch(ops)))
        self.counters["pushed_ops"] += len(ops)

    def receive(self, msg: Any, src: str, now: int) -> list[Event]:
        """Handle a gossip message from peer ``src`` (already authenticated and validated)."""
        if now > self._last_input:
            self._last_input = now
        if type(msg) is OpBatch:
            # folded once per burst (``fold_inbound``): ops from many datagrams and origins then
            # cost one rollback, not one each
            ops = msg.ops
            if ops:
                r = self.replica
                if not {op.origin for op in ops} <= r.members:
                    kept = [op for op in ops if r.admits(op.origin)]
                    r.counters["non_member_ops"] += len(ops) - len(kept)
                    ops = kept
            if ops:
                self._inbound.extend(ops)
                self._inbound_now = now
                if self._inbound_runs is not None:
                    self._inbound_runs.add(ops)
            return []
        # what a peer holds is learnt before folding, so that a catch-up waiting for the rest of
        # itself sees the rest announced (a summary or heartbeat of the peer sending it)
        if type(msg) is Summary:
            self.replica.observe_vv(src, msg.vv)
            events = self.fold_inbound()
            self._answer(src, msg, now)
            return events
        if type(msg) is Heartbeat:
            self.replica.observe_vv(src, msg.vv)
            events = self.fold_inbound()
            self.replica.observe(src, Timestamp(msg.wall, msg.logical), msg.max_seq, now)
            return events
        if type(msg) is SnapshotChunk:
            return self.fold_inbound() + self._snapshot_chunk(msg, src, now)
        raise TypeError(f"gossip cannot handle {type(msg).__name__}")

    @property
    def pending(self) -> int:
        """Ops received and not folded yet (a catch-up being held back, or the current burst)."""
        return len(self._inbound)

    def fold_inbound(self) -> list[Event]:
        """Fold every op received since the last call, in one ``Replica.receive`` (a large catch-up
        may wait for the rest of itself: see "Catch-up folding")."""
        if not self._inbound or self._deferring():
            return []
        ops, self._inbound = self._inbound, []
        self._inbound_runs = None
        return self.replica.receive(ops, self._inbound_now)

    def _deferring(self) -> bool:
        cfg = self.config
        n = len(self._inbound)
        if not cfg.defer_ns or n > cfg.defer_max_ops:
            return False
        # a catch-up is expensive when it is large or lands deep below the top of the log (the
        # fold undoes and replays everything above its oldest op); live traffic is neither
        if n < cfg.defer_min_ops and self.replica.replay_depth(min(self._inbound)) < cfg.defer_min_ops:
            return False
        if self._last_input - self._inbound_now >= self._defer_wait():
            return False
        runs = self._inbound_runs
        if runs is None:
            runs = self._inbound_runs = _Runs(self.replica.vv, self._inbound)
        run = runs.run
        for pv in self.replica.peer_vvs():
            for o, sq in pv.items():
                if sq > run.get(o, 0):
                    self.counters["folds_deferred"] += 1
                    return True  # a peer holds ops of ``o`` that are neither here nor on their way in
        return False

    def _defer_wait(self) -> int:
        """How long after its last batch a held catch-up waits for the rest: ``defer_ns``, plus
        ``defer_ns_per_op`` for each op waiting: folding them costs several times that anyway, and
        peers busy folding their own catch-up answer late."""
        return self.config.defer_ns + len(self._inbound) * self.config.defer_ns_per_op

    def tick(self, now: int) -> list[Event]:
        """Timers: anti-entropy round, heartbeats, compaction, held-back ops."""
        cfg = self.config
        if now > self._last_input:
            self._last_input = now
        events = self.fold_inbound() + self.replica.tick(now)
        live = [p for p in self.peers if p in self.live]
        if self._inbound_runs is not None:  # a catch-up is being held
            self._pull_gaps(live, self._inbound_runs.run, now)
        if now >= self._next_round:
            self._next_round = now + cfg.interval_ns
            if live and cfg.anti_entropy:
                self.counters["rounds"] += 1
                peer = self.rng.choice(live)
                self._out.append((peer, self._summary(peer, True, now)))
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + cfg.heartbeat_ns
            hb = self.heartbeat(now)
            for p in live:
                self._out.append((p, hb))
        if now >= self._next_compact:
            self._next_compact = now + cfg.compact_every_ns
            self.replica.compact()
        return events

    def heartbeat(self, now: int) -> Heartbeat:
        ts = self.replica.hlc.now(now)
        vv = self.replica.version_vector()
        return Heartbeat(ts.wall, ts.logical, vv.get(self.node_id, 0), vv)

    # ---- run-time membership (config_epoch.py) -------------------------------------------------------
    def add_peer(self, peer: str) -> None:
        """Gossip with ``peer`` from now on (the configuration added it). Live until membership says
        otherwise: it gets pushes and heartbeats at once, so a joining node learns the configuration
        and catches up without waiting for a probe."""
        if peer == self.node_id or peer in self.peers:
            return
        self.peers = sorted([*self.peers, peer])
        self.live.add(peer)

    def remove_peer(self, peer: str) -> None:
        """Stop gossiping with ``peer`` (the configuration removed it) and drop what we kept for it."""
        if peer not in self.peers:
            return
        self.peers = [p for p in self.peers if p != peer]
        self.live.discard(peer)
        for d in (self._snap_in, self._snap_done, self._snap_out, self._repaired):
            d.pop(peer, None)
        for o, (_sq, _until, p) in list(self._expect.items()):
            if p == peer:
                del self._expect[o]

    # ---- outputs -----------------------------------------------------------------------------------
    def outbox(self) -> list[tuple[str, Any]]:
        out, self._out = self._out, []
        return out

    def next_deadline(self) -> int:
        d = min(self._next_round, self._next_heartbeat, self._next_compact)
        if self._inbound and self.config.defer_ns:  # a held-back catch-up is folded by then at the latest
            d = min(d, self._inbound_now + self._defer_wait())
        return d

    # ---- internals ---------------------------------------------------------------------------------
    def _summary(self, dst: str, reply: bool, now: int) -> Summary:
        """Our summary for ``dst``; while a catch-up is under way, ``skip`` keeps ``dst`` from
        sending what we already received or asked another peer for."""
        vv = self.replica.version_vector()
        runs, expect = self._inbound_runs, self._expect
        theirs = self.replica.peer_vv(dst)
        if runs is None and not expect and \
                sum(s - vv.get(o, 0) for o, s in theirs.items() if s > vv.get(o, 0)) < self.config.defer_min_ops:
            return Summary(vv, reply)  # no catch-up under way or about to start: nothing to skip
        skip: dict[str, int] = {}
        if runs is not None:
            skip = {o: sq for o, sq in runs.run.items() if sq > vv.get(o, 0)}
        for o, (sq, until, peer) in list(expect.items()):
            if until <= now:
                del expect[o]
            elif peer != dst and peer in self.live and sq > max(vv.get(o, 0), skip.get(o, 0)):
                skip[o] = sq
        # what dst will send (its answer goes origin by origin, sorted, up to one repair burst):
        # the next summary to another peer skips it for a repair hold
        budget = self.config.repair_burst
        for o in sorted(theirs):
            have = max(vv.get(o, 0), skip.get(o, 0))
            if theirs[o] > have and budget > 0:
                top = min(theirs[o], have + budget)
                budget -= top - have
                cur = expect.get(o)
                if cur is None or cur[0] < top:
                    expect[o] = (top, now + self.config.repair_hold_ns, dst)
        return Summary(vv, reply, skip)

    def _pull_gaps(self, live: list[str], run: dict[str, int], now: int) -> None:
        """While a catch-up is held (``run``: how far it reaches per origin), ask at once for what a
        peer shows and nobody is sending, rather than at the next round: the fold waits for it."""
        expect = self._expect
        # peers in random order: a peer that cannot answer (a one-way partition) is not asked first
        # every time
        for p in self.rng.sample(live, len(live)):
            for o, sq in self.replica.peer_vv(p).items():
                e = expect.get(o)
                if sq > run.get(o, 0) and (e is None or e[1] <= now or sq > e[0] or e[2] not in self.live):
                    self._out.append((p, self._summary(p, False, now)))
                    break

    def _lacks(self, vv: dict[str, int]) -> bool:
        r = self.replica
        mine, fenced = r.vv, r.fenced
        # (a removed member's ops above its fence are refused here: never asked for)
        return any(s > mine.get(o, 0) and r.admits(o) and not (o in fenced and mine.get(o, 0) >= fenced[o])
                   for o, s in vv.items())

    def _refill(self, now: int) -> None:
        if self._last_refill is not None:
            self._tokens = min(float(self.config.repair_burst),
                               self._tokens + (now - self._last_refill) * self.config.repair_ops_per_s / 1e9)
        self._last_refill = now

    def _answer(self, src: str, msg: Summary, now: int) -> None:
        """Send ``src`` what its summary shows it lacks, and our own summary when we lack something
        of its (push-pull) or the answer is large: it goes first, so the peer knows how much of its
        catch-up is on the way and holds the fold for it."""
        snapshot = self.replica.needs_snapshot(msg.vv)
        if not snapshot:
            self._snap_out.pop(src, None)  # it holds what a transfer in flight carried
        ops = [] if snapshot else self._repair(src, msg, now)
        if (msg.reply and self._lacks(msg.vv)) or len(ops) >= self.config.defer_min_ops:
            self._out.append((src, self._summary(src, False, now)))
        if snapshot:
            self._send_snapshot(src, now)
        elif ops:
            self._out.append((src, OpBatch(ops)))

    def _repair(self, src: str, msg: Summary, now: int) -> list[Op]:
        """The ops ``src`` lacks and has not asked another peer for (``skip``), less those sent to it
        within the repair hold, up to the token bucket; the bucket and the hold are charged."""
        self._refill(now)
        budget = int(self._tokens)
        if budget <= 0:
            self.counters["rate_limited"] += 1
            return []
        have = _raised(msg.vv, msg.skip)
        held = self._repaired.get(src)
        sent: dict[str, int] = {}
        if held is not None and now - held[1] < self.config.repair_hold_ns:
            sent = held[0]
            before, have = have, _raised(have, sent)
            if have != before:
                self.counters["repair_held"] += 1
        ops = self.replica.ops_missing(have, limit=budget)
        if ops:
            self._tokens -= len(ops)
            if len(ops) == budget:
                self.counters["rate_limited"] += 1
            self.counters["repair_ops"] += len(ops)
            self._repaired[src] = (_raised(sent, {}, ops), now)
        return ops

    def _send_snapshot(self, dst: str, now: int) -> None:
        """Send ``dst`` our snapshot, unless a transfer to it is in flight (sent less than
        ``snapshot_retry_ns`` ago) or the repair bucket is empty; its bytes are charged to the
        bucket, into debt if need be (repair then waits until it is repaid)."""
        cfg = self.config
        sent = self._snap_out.get(dst)
        if sent is not None and now - sent < cfg.snapshot_retry_ns:
            self.counters["snapshots_held"] += 1
            return
        self._refill(now)
        if self._tokens <= 0:
            self.counters["rate_limited"] += 1
            return
        r = self.replica
        version = (r.counters["compactions"], r.counters["snapshots_installed"])
        if self._snap_cache is None or self._snap_cache[0] != version:
            self._snap_cache = (version, snapshot_to_bytes(r.snapshot()))
        data = self._snap_cache[1]
        self._tokens -= len(data) / cfg.snapshot_bytes_per_token
        self._snap_out[dst] = now
        size = cfg.snapshot_chunk
        chunks = [data[i:i + size] for i in range(0, len(data), size)] or [b""]
        self._snap_seq += 1
        for i, c in enumerate(chunks):
            self._out.append((dst, SnapshotChunk(self._snap_seq, i, len(chunks), c)))
        self.counters["snapshots_sent"] += 1

    def _snapshot_chunk(self, msg: SnapshotChunk, src: str, now: int) -> list[Event]:
        if msg.total == 0 or msg.index >= msg.total:
            self.counters["bad_snapshots"] += 1
            return []
        cfg = self.config
        rx = self._snap_in.get(src)
        if rx is None or rx.snap_id != msg.snap_id or rx.total != msg.total:
            if msg.snap_id == self._snap_done.get(src) or (
                    rx is not None and msg.snap_id < rx.snap_id and now - rx.at < cfg.snapshot_retry_ns):
                self.counters["snapshot_chunks_dropped"] += 1  # a late chunk of a transfer done or replaced
                return []
            # one transfer per peer: a newer one (or any, once ours sat idle a retry period: the
            # sender may have restarted its ids) replaces what was being reassembled
            rx = self._snap_in[src] = _SnapIn(msg.snap_id, msg.total, now)
        if msg.index in rx.parts:
            return []  # a duplicate
        rx.size += len(msg.data) + CHUNK_OVERHEAD
        if rx.size > cfg.snapshot_max_bytes:
            del self._snap_in[src]
            self.counters["snapshots_too_large"] += 1
            return []
        rx.parts[msg.index] = msg.data
        rx.at = now
        if len(rx.parts) < rx.total:
            return []
        del self._snap_in[src]
        self._snap_done[src] = msg.snap_id
        try:
            snap = snapshot_from_bytes(b"".join(rx.parts[i] for i in range(rx.total)))
        except WireError:
            self.counters["bad_snapshots"] += 1
            return []
        return self.replica.install_snapshot(snap, now)
