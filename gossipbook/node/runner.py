"""The trio shell around one ``NodeCore`` (or, with ``mode = "strong"``, one ``StrongNodeCore``):
a socket, a timer, and nothing else to decide.

The loop: wait for datagrams or the core's next deadline; authenticate and validate each datagram
(``wire.decode``), drop replays, feed the core; tick when the deadline passes; then persist what the
core says must be durable (eventual: the new ops; strong: the sequencer's term, vote and log) before
anything of the outbox leaves, and send the outbox. Shutdown is cancellation: ``serve`` announces a
graceful leave and closes the socket on the way out.
"""

from __future__ import annotations

import logging
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, NamedTuple

import trio

from .._compiled import compiled
from ..config import OPERATOR, ClusterConfig, ConfigError, load
from ..core.config_epoch import ConfigChanged
from ..core.errors import RemoteError, UsageError, WireError
from ..core.fairness import FairnessMeter
from ..core.instrument import Venue
from ..core.membership import Ack, MemberStateChanged, Probe
from ..core.node import E_STORAGE, Client, NodeCore
from ..core.ops import OpFenced, TradeRevised
from ..core.sequencer import ALL_MESSAGES as SEQUENCER_MESSAGES
from ..core.sequencer import PersistDelta, RoleChanged
from ..core.shards import ShardedStrongCore, ShardRoleChanged
from ..core.strong import StrongConfig, StrongNodeCore
from ..core.wire import (
    ClientQuery,
    ClientReply,
    ForwardReply,
    Keys,
    OpBatch,
    QueryReply,
    Sharded,
    Summary,
    TimeWindowGuard,
    decode,
    encode,
    encode_packed_ops,
    key_id,
    pack_ops,
)
from .transport import Addr, Endpoint, FaultFilter


class _Route(NamedTuple):
    """Where a client's reply goes: its address, its sender id (the reply is bound to it) and the
    id of the key its request was signed with (the reply is signed with the same)."""

    addr: Addr
    sender: str
    key_id: int


class WallClock:
    """This node's physical clock: the host's wall clock plus an injected skew and drift (tests,
    demo), so clock-offset estimation can be measured against a known truth."""

    def __init__(self, skew_ns: int = 0, drift_ppm: float = 0.0) -> None:
        self.skew_ns = skew_ns
        self.drift_ppm = drift_ppm
        self._t0 = time.time_ns()

    def __call__(self) -> int:
        return self.at(time.time_ns())

    def at(self, host_ns: int) -> int:
        """This clock's reading when the host's wall clock read ``host_ns`` (a kernel timestamp)."""
        t = host_ns
        if self.drift_ppm:
            t += int((t - self._t0) * self.drift_ppm / 1e6)
        return t + self.skew_ns


class NodeRunner:
    """One node on a real UDP socket."""

    def __init__(self, cfg: ClusterConfig, node_id: str, *, faults: FaultFilter | None = None,
                 clock: Callable[[], int] | None = None, log: logging.Logger | None = None,
                 seed: int | None = None, storage: Any = None, mtu: int = 1400, venue: Venue | None = None,
                 join: bool = False) -> None:
        """``venue``: the venue this node folds with (hooks included); default the config's
        instruments with no hooks. Every node of a cluster must be given the same one. ``join``
        (or ``join = true`` on the node's entry): a node added at run time, which takes orders only
        once it holds its own add op (``cluster add-node``)."""
        if cfg.key is None:
            raise UsageError(f"{cfg.path} is a client file (account {cfg.account}); a node needs the cluster's "
                             f"cluster.toml, which holds the peer key")
        self.cfg = cfg
        self.venue = venue or cfg.venue()
        self.entry = cfg.node(node_id)
        #: the peer keyring and every account's credentials; ``reload_accounts`` swaps both
        self.keys = Keys(cfg.key_ring, cfg.accounts, label=cfg.name, me=node_id)
        self.node_id = node_id
        self.clock = clock or WallClock()
        self.faults = faults
        self.log = log or logging.getLogger(f"gossipbook.{node_id}")
        self.storage = storage
        self.mtu = mtu
        hlc_last, incarnation = (storage.recover_state() if storage else (None, None))
        rng = random.Random(seed if seed is not None else secrets.randbits(128))  # keys strong mode's cookies too
        incarnation = max(incarnation or 0, time.time_ns() // 1_000_000)
        self.strong = cfg.mode == "strong"
        self._join = join or self.entry.join  # strong: an added node starts as a learner (strong_members.py)
        self._strong_conf: tuple[int, bool] = (0, False)  # strong: the (epoch, committed) peer_addr follows
        # strong, per shard: deltas the disk refused (retried first), handed-over request ids not yet written
        self._seq_unwritten: list[list[PersistDelta]] = [[] for _ in range(max(1, len(cfg.shards)))]
        self._handed_unwritten: list[list[str]] = [[] for _ in range(max(1, len(cfg.shards)))]
        #: strong with shards: each shard's store (shard 0's is ``storage``; storage.open_shards)
        self._shard_stores: list[Any] = [storage]
        self.core: NodeCore | StrongNodeCore | ShardedStrongCore
        if self.strong:
            self.core = self._strong_core(rng, incarnation)
        else:
            if storage and 2 in storage.kinds:
                raise UsageError(f"data dir {storage.path} holds strong-mode state; this cluster runs mode "
                                 f"\"eventual\" (use another data_dir, or remove it to start empty)")
            kw: dict[str, Any] = {}
            if hlc_last is not None:
                kw["hlc_last"] = hlc_last
            self.core = NodeCore(node_id, cfg.ids, self.venue, rng, cfg.node_config(), incarnation=incarnation,
                                 joining=join or self.entry.join, **kw)
            self.core.file_addrs = {n.id: f"{n.host}:{n.port}" for n in cfg.nodes}
            if storage:
                storage.load_into(self.core)
        #: the audit trail in the data dir (node/audit.py): eventual mode with a data dir
        self.audit: Any = None
        if storage is not None and not self.strong:
            from .audit import AuditLog, AuditTrail
            self.audit = AuditTrail(AuditLog.open(storage.path, cfg.fsync, cfg.audit_file_bytes, cfg.audit_keep),
                                    node_id, self.clock, self.core.clock.bound)
        self.peer_addr: dict[str, Addr] = {n.id: n.addr for n in cfg.nodes if n.id != node_id}
        self._epoch = 0  # the configuration epoch peer_addr follows (``_follow_config``)
        self.guard = TimeWindowGuard()  # peers' frames (only peer-key holders can add senders)
        self.client_guard = TimeWindowGuard(max_senders=10_000)  # clients make up their ids: bounded
        #: frame counters: this node's clock in ns, or one above the last when frames go out faster
        #: (``TimeWindowGuard``): they only grow, across restarts too
        self.counter = self.clock()
        self.dropped: dict[str, int] = {}
        self.endpoint: Endpoint | None = None
        self.started = trio.Event()
        self.on_event: Callable[[Any], None] | None = None
        #: eventual mode: called once per flush, after ``on_event`` saw that flush's events, with the
        #: ops it added to the op-set (folded by then); ``Node`` derives order-lifecycle events from it
        self.on_ops: Callable[[list[Any]], None] | None = None
        self.core.status_extra = self._shell_counters
        #: op id -> monotonic ns when it entered this node's op-set (benchmarks; None = off)
        self.trace: dict[str, int] | None = None
        #: eventual mode, with the trace: op id -> where its hop spent time (``bench sync``):
        #: [sent] for ours (frames encoded, first sendto next); [woke, decoded] for a peer's (the
        #: wakeup that brought its datagram, and when that burst was decoded and handled)
        self.stages: dict[str, list[int]] | None = None
        self._burst_at = (0, 0)
        self.fault_control = False  # node --fault-control: accept "faults" queries (tests, benchmarks)
        self._compactions = 0
        self.core.status_info["addr"] = f"{self.entry.host}:{self.entry.port}"
        self.core.status_info["compiled"] = compiled()  # the mypyc-compiled fold (setup.py) or pure Python
        #: eventual mode: orders whose time priority this node cannot prove (core/fairness.py)
        self.fairness: FairnessMeter | None = None if self.strong else FairnessMeter(node_id)
        #: kernel receive time (host ns) -> this node's clock, for clock-sync samples (None: unknown)
        self._rx_clock: Callable[[int], int] | None = self.clock.at if isinstance(self.clock, WallClock) else None
        if isinstance(self.clock, WallClock) and (self.clock.skew_ns or self.clock.drift_ppm):
            # injected (tests, demo): what the true offset is, so estimates can be checked against it
            c = self.clock
            self.core.status_info["injected_clock"] = {"skew_ns": c.skew_ns, "drift_ppm": c.drift_ppm, "t0_ns": c._t0}

    def enable_trace(self) -> dict[str, int]:
        """Record when each op reaches this node (monotonic ns): eventual mode keys the op id when
        the op enters the op-set; strong mode keys the client's request id when its committed entry
        is folded (the leader names entries, so a request id is what a client can match)."""
        trace: dict[str, int] = {}
        self.trace = trace
        core = self.core
        if not self.strong:
            self.stages = {}
        else:
            def folded(_index: int, op: Any, _out: Any) -> None:
                if op is not None:
                    trace.setdefault(op.req, time.monotonic_ns())

            core.on_fold = folded
        return trace

    def _strong_core(self, rng: random.Random, incarnation: int) -> StrongNodeCore | ShardedStrongCore:
        cfg, st = self.cfg, self.storage
        persisted = None
        if st is not None:
            if 1 in st.kinds:
                raise UsageError(f"data dir {st.path} holds eventual-mode ops; this cluster runs mode \"strong\" "
                                 f"(use another data_dir, or remove it to start empty)")
            if cfg.shards:
                return self._sharded_core(rng, incarnation)
            from .storage import check_shards

            check_shards(st, ())
            persisted = st.recover_sequencer()
        elif cfg.shards:
            return self._sharded_core(rng, incarnation)
        conf = StrongConfig(max_offset_ns=cfg.max_offset_ns, membership=cfg.membership)
        try:  # the initial configuration: the file's nodes less those added at run time (join = true)
            return StrongNodeCore(self.node_id, [n.id for n in cfg.nodes if not n.join], self.venue, rng, conf,
                                  persisted=persisted, incarnation=incarnation,
                                  handed=st.handed if st is not None else (), joining=self._join)
        except ValueError as e:  # the sequencer refused what the disk holds
            raise UsageError(f"data dir {st.path if st else '?'}: {e}") from None

    def _sharded_core(self, rng: random.Random, incarnation: int) -> ShardedStrongCore:
        """K sequencer groups (``cfg.shards``), each with its own store (``storage.open_shards``)."""
        cfg, st = self.cfg, self.storage
        persisted: list[Any] = []
        handed: list[list[str]] = []
        if st is not None:
            from .storage import open_shards

            self._shard_stores = open_shards(st, cfg.shards)
            for sub in self._shard_stores:
                if 1 in sub.kinds:
                    raise UsageError(f"data dir {sub.path} holds eventual-mode ops; this cluster runs mode "
                                     f"\"strong\" (use another data_dir, or remove it to start empty)")
                persisted.append(sub.recover_sequencer())
                handed.append(sub.handed)
        conf = StrongConfig(max_offset_ns=cfg.max_offset_ns, membership=cfg.membership)
        try:
            return ShardedStrongCore(self.node_id, cfg.ids, self.venue, cfg.shard_map(), rng, conf, persisted,
                                     incarnation=incarnation, handed=handed)
        except ValueError as e:  # a sequencer refused what a disk holds (or the map misses an instrument)
            raise UsageError(f"data dir {st.path if st else '?'}: {e}") from None

    # ---- lifecycle ---------------------------------------------------------------------------------
    async def serve(self, *, task_status: trio.TaskStatus[NodeRunner] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled. ``nursery.start(runner.serve)`` returns once the socket is bound.
        A runner serves once: its storage is closed on the way out (build a new one to restart)."""
        if self.started.is_set():
            raise UsageError(f"node {self.node_id} was served already; build a new NodeRunner to run it again")
        self.endpoint = Endpoint.bind(self.entry.addr, self.faults, rx_timestamps=self._rx_clock is not None)
        self.log.info("listening on %s:%d (%d peers, mode %s)", *self.entry.addr, len(self.peer_addr), self.cfg.mode)
        self.started.set()
        task_status.started(self)
        try:
            await self._loop()
        finally:
            with trio.CancelScope(shield=True):
                try:
                    self.core.leave(self.clock())
                    await self._flush()
                except Exception:  # pragma: no cover - best effort on the way out
                    pass
                self.endpoint.close()
                if self.audit is not None:
                    self.audit.close()
                if self.storage:
                    for sub in self._shard_stores[1:]:
                        sub.close()
                    self.storage.close()
                self.log.info("stopped")

    async def generate(self, rate: float, count: int, seed: int = 1, delay_s: float = 0.0) -> None:
        """Benchmark load from inside the node: ``count`` orders at ``rate``/s (0: as fast as the
        node can stamp them), stamped straight into the core, so the client protocol is not what
        is measured. Waits for the node to be ready first."""
        from ..core.errors import UsageError as _UsageError
        from ..workload.orders import OrderFlow

        if not isinstance(self.core, NodeCore):
            raise UsageError("--generate stamps orders straight into an eventual-mode replica; in strong mode "
                             "use gossipbook load")
        while not self.core.ready:
            await trio.sleep(0.01)
        if delay_s < 0:  # a negative delay is an absolute start: -CLOCK_MONOTONIC seconds (host-wide)
            await trio.sleep(max(0.0, -delay_s - time.monotonic()))
        else:
            await trio.sleep(delay_s)
        flow = OrderFlow(random.Random(seed))
        sym = next(iter(self.core.replica.books))
        t0 = trio.current_time()
        done = 0
        while done < count:
            target = done + max(1, int(rate * (trio.current_time() - t0))) if rate else done + 64
            burst = min(count, target) - done
            for _ in range(burst):
                o = flow.next([])
                try:
                    op, _ev = self.core.replica.submit_new(sym, o.side, o.price, o.qty, o.tif, self.clock())
                except _UsageError:
                    continue
                finally:
                    done += 1
                self.core.gossip.local(op)
            await self._flush()
            await trio.sleep(0.001 if rate else 0)

    async def _loop(self) -> None:
        """Wait for datagrams or the core's next deadline, whichever comes first; handle, tick, flush.

        The wait runs in one cancel scope that lasts until a deadline passes, its deadline moved
        only when the core's next deadline changes: a cancel scope per wakeup (``move_on_after``)
        cost more than the wait itself (docs/performance.md). Nothing between two waits yields to
        trio (``Endpoint.send_all`` shields its rare wait for a full buffer), so the scope's
        cancellation can only land in the wait, never halfway through a flush."""
        core, ep = self.core, self.endpoint
        assert ep is not None
        core.tick(self.clock())
        await self._flush()
        while True:
            with trio.CancelScope() as timer:
                set_for = None  # the core deadline (node clock, ns) the scope's deadline stands for
                while True:
                    now = self.clock()
                    due = core.next_deadline()
                    if due <= now:
                        break  # a timer is due
                    if due != set_for:
                        timer.deadline = trio.current_time() + (due - now) / 1e9
                        set_for = due
                    await ep.wait_readable()
                    await self._iteration(ep.drain())
            # a deadline passed (or was due): still take what is queued, so input is never starved
            await trio.lowlevel.checkpoint()
            await self._iteration(ep.drain())

    async def _iteration(self, burst: list[tuple[bytes, Addr]]) -> None:
        """Handle one drained burst, tick if a deadline is due, flush."""
        core, ep = self.core, self.endpoint
        assert ep is not None
        now = self.clock()
        woke = time.monotonic_ns() if self.stages is not None else 0
        if burst:
            stamps = ep.rx_stamps if ep.rx_timestamps else [0] * len(burst)  # (set by that drain)
            for (data, addr), rx in zip(burst, stamps, strict=True):
                self._handle(data, addr, now, rx)
        if woke:
            self._burst_at = (woke, time.monotonic_ns())
        if now >= core.next_deadline():
            core.tick(now)
        await self._flush()

    # ---- input -------------------------------------------------------------------------------------
    def _drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def _handle(self, data: bytes, addr: Addr, now: int, rx: int = 0) -> None:
        """``rx``: the kernel's receive time of ``data`` (host ns; 0: unknown), for clock samples."""
        try:
            frame = decode(data, self.keys, now_ms=now // 1_000_000)
        except WireError as e:
            self._drop(e.reason)
            return
        acct = frame.account
        if acct is None and frame.sender not in self.peer_addr:
            self._drop("unknown_sender")  # under the peer key only members speak: no window for made-up ids
            return
        # one window per principal and sender: an account's frames never move a node's window
        refused = (self.guard.check(frame.sender, frame.counter, now) if acct is None
                   else self.client_guard.check(f"{acct}/{frame.sender}", frame.counter, now))
        if refused is not None:
            self._drop(refused)
            return
        msg = frame.msg
        if acct is not None:  # the reply goes back to this client, under the key it used
            addr = _Route(addr, frame.sender, frame.key_id)  # type: ignore[assignment]
        if type(msg) is ClientQuery and msg.what == "faults" and self.fault_control and acct == OPERATOR:
            self._set_faults(msg, addr)
            return
        mem = None
        if rx and self._rx_clock is not None and (type(msg) is Probe or type(msg) is Ack):
            mem = self.core.membership  # t2 of a probe, t4 of an ack: when it arrived, not when we woke
            mem.rx_ns = min(now, self._rx_clock(rx))
        try:
            self.core.receive(msg, frame.sender, addr, now, acct)
        except RemoteError as e:  # authenticated but wrong for this node: drop, count, carry on
            self._drop(e.reason)
        finally:
            if mem is not None:
                mem.rx_ns = None  # never left for another message

    def reload_accounts(self) -> None:
        """Re-read the peer keyring and the accounts from the config file (SIGHUP): a key installed
        verifies from the next frame on, a new primary signs from the next frame on, added accounts
        work and revoked ones are refused. Nothing else is reloaded (a changed node list needs a
        restart). A file that does not load leaves everything as it was."""
        try:
            fresh = load(self.cfg.path)
        except ConfigError as e:
            self.log.error("accounts not reloaded: %s", e)
            return
        if fresh.key_ring and fresh.key_ring != self.keys.peer_ring:
            self.keys.peer = fresh.key_ring
            self.cfg.key, self.cfg.key_ring = fresh.key_ring[0], fresh.key_ring
            self.log.info("peer keyring reloaded: %d key(s), primary id %d", len(fresh.key_ring),
                          key_id(fresh.key_ring[0]))
        before, after = set(self.keys.accounts), set(fresh.accounts)
        changed = sorted(a for a in before & after if self.keys.accounts[a] != fresh.accounts[a])
        self.keys.accounts = dict(fresh.accounts)
        self.cfg.accounts = dict(fresh.accounts)
        self.log.info("accounts reloaded: %d (added %s; revoked %s; credentials changed %s)", len(after),
                      ", ".join(sorted(after - before)) or "none", ", ".join(sorted(before - after)) or "none",
                      ", ".join(changed) or "none")

    def _set_faults(self, q: ClientQuery, addr: Addr) -> None:
        """Test-only (``node --fault-control``): block the peers listed in ``q.symbol`` (comma
        separated; empty heals), so benchmarks can partition and heal separate processes; or, with
        ``skew_ms=X`` alone, step this node's injected clock skew to X ms (clock tests)."""
        if q.symbol.startswith("skew_ms="):
            self._set_skew(q, addr)
            return
        if self.faults is None:
            self.faults = FaultFilter()
            if self.endpoint is not None:
                self.endpoint.faults = self.faults
        ids = [p for p in q.symbol.split(",") if p]
        self.faults.blocked = {self.peer_addr[p] for p in ids if p in self.peer_addr}
        self.core._out.append((Client(addr, OPERATOR), QueryReply(q.req, 0, f"blocked {','.join(ids) or 'none'}", None)))  # addr: a _Route
        self.log.info("test fault control: blocking %s", ",".join(ids) or "nobody")

    def _set_skew(self, q: ClientQuery, addr: Addr) -> None:
        c = self.clock
        try:
            ms = float(q.symbol.removeprefix("skew_ms="))
            ok = isinstance(c, WallClock) and abs(ms) <= 86_400_000
        except ValueError:
            ok = False
        if not ok:
            reply = QueryReply(q.req, 1, f"cannot set the clock skew to {q.symbol[8:40]!r}", None)
        else:
            assert isinstance(c, WallClock)
            c.skew_ns = int(ms * 1e6)
            self.core.status_info["injected_clock"] = {"skew_ns": c.skew_ns, "drift_ppm": c.drift_ppm, "t0_ns": c._t0}
            reply = QueryReply(q.req, 0, f"skew {ms:g} ms", None)
            self.log.info("test fault control: clock skew now %g ms", ms)
        self.core._out.append((Client(addr, OPERATOR), reply))  # addr: a _Route

    # ---- output ------------------------------------------------------------------------------------
    async def _flush(self) -> None:
        core = self.core
        new_ops = core.take_new_ops()
        if self.trace is not None and new_ops:
            t = time.monotonic_ns()
            stages, me = self.stages, self.node_id
            for op in new_ops:
                self.trace.setdefault(op.op_id, t)
                if stages is not None and op.origin != me:
                    stages[op.op_id] = list(self._burst_at)
        outbox = core.outbox()
        if self.storage is not None:  # durable before anything below is sent
            outbox = self._persist_strong(outbox) if self.strong else self._persist(new_ops, outbox)
        elif self.strong:  # nothing survives a restart without a data dir: nothing to keep
            core.take_handed() if isinstance(core, StrongNodeCore) else core.take_persist_shards()  # type: ignore[union-attr]
        audit = self.audit
        if audit is not None and new_ops and core.accepting:  # (not accepting: the ops are queued again)
            audit.ops(new_ops)  # before anything leaves: an acknowledged op always has its row (audit.py)
        # ops go out first: a replica waits for them, a client reply or a heartbeat can wait the
        # few µs they take (and a client woken first competes with the peer for the CPU)
        ops_frames: list[tuple[bytes, Addr]] = []
        frames: list[tuple[bytes, Addr]] = []
        timed: list[tuple[str, Any, Addr]] = []  # probes and acks: stamped at the socket, sent last
        keys = self.keys
        key = keys.peer
        assert key is not None
        now = self.clock()
        self.counter = max(self.counter, now)
        bind = {"label": keys.label, "stamp_ms": now // 1_000_000}
        # an eager push is one list of ops for every peer (gossip.flush): packed once, MACed per peer
        packed: dict[int, tuple[list[Any], list[bytes]]] = {}
        # peers' ops (and the summaries that precede repairs) are encoded and sent before anything
        # else is encoded: a replica waits for them; replies and heartbeats are encoded after
        first = [x for x in outbox if type(x[1]) is OpBatch or type(x[1]) is Summary]
        rest = [x for x in outbox if not (type(x[1]) is OpBatch or type(x[1]) is Summary)] if first else outbox
        stamped = False
        for part in (first, rest):
            for dst, msg in part:
                try:
                    if isinstance(dst, Client):  # a reply, signed with the credential of the account asking
                        route = dst.addr
                        acct_key = keys.signing_key(dst.account, route.key_id)
                        if acct_key is None:
                            self._drop("revoked_account_reply")
                            continue
                        self.counter += 1
                        frames.append((encode(msg, self.node_id, self.counter, acct_key, dst.account, dst=route.sender,
                                              **bind), route.addr))
                        continue
                    addr = self.peer_addr.get(dst)
                    if addr is None:
                        continue
                    if type(msg) is OpBatch:
                        p = packed.get(id(msg.ops))
                        if p is None:
                            p = packed[id(msg.ops)] = (msg.ops, pack_ops(msg.ops))  # (holds the list: its id stays its)
                        batch = encode_packed_ops(p[1], self.node_id, self.counter + 1, key, self.mtu, dst=dst, **bind)
                        self.counter += len(batch)
                        ops_frames.extend((f, addr) for f in batch)
                    elif type(msg) is Summary:  # keeps its place before the repair that follows it
                        self.counter += 1
                        ops_frames.append((encode(msg, self.node_id, self.counter, key, dst=dst, **bind), addr))
                    elif type(msg) is Probe or type(msg) is Ack:
                        timed.append((dst, msg, addr))
                    else:
                        self.counter += 1
                        frames.append((encode(msg, self.node_id, self.counter, key, dst=dst, **bind), addr))
                except (OverflowError, ValueError, TypeError) as e:  # a value msgpack cannot carry: one frame lost
                    self._drop("encode_error")
                    self.log.error("could not encode %s for %s: %s", type(msg).__name__, dst, e)
            sending = ops_frames if part is first else frames
            if sending:
                if not stamped and self.stages is not None and new_ops:
                    t = time.monotonic_ns()
                    for op in new_ops:
                        if op.origin == self.node_id:
                            self.stages[op.op_id] = [t]
                stamped = True
                await self.endpoint.send_all(sending)  # type: ignore[union-attr]
        if timed:
            await self._send_timed(timed, key, bind)
        # the fairness meter after the send: nothing sent waits for it
        if self.fairness is not None and new_ops and core.accepting:
            self.fairness.observe(new_ops, self.clock(), core.clock.bound)
        revised: list[TradeRevised] = []
        events = core.events()
        if not self.strong and core.replica.config.epoch != self._epoch:
            self._follow_config()
        elif isinstance(core, StrongNodeCore) and (core.seq.conf.epoch, core.seq.conf_pending()) != self._strong_conf:
            self._follow_strong_config(core)
        for ev in events:  # after sending: logging is slow, and nothing here waits for it
            if type(ev) is TradeRevised:
                revised.append(ev)
            else:
                self._log_event(ev)
            if self.on_event is not None:
                try:
                    self.on_event(ev)
                except Exception:  # a library user's callback must never stop the node
                    self._drop("event_handler")
                    self.log.exception("on_event raised on %s (counted in dropped.event_handler)",
                                       type(ev).__name__)
        if revised:
            self._log_revisions(revised)
        for line in core.membership.venue.notices():  # a peer refused for its venue, or accepted again
            self.log.warning("%s", line)
        if audit is not None:  # the trades, then one fsync for this iteration's rows
            audit.events(events)
        if self.on_ops is not None:
            try:
                self.on_ops(new_ops)
            except Exception:  # as for on_event: a library hook never stops the node
                self._drop("event_handler")
                self.log.exception("on_ops raised (counted in dropped.event_handler)")

    async def _send_timed(self, timed: list[tuple[str, Any, Addr]], key: bytes, bind: dict[str, Any]) -> None:
        """Probes and acks, each stamped as close to its ``sendto`` as it can be: an ack's ``t3`` is
        read just before it is encoded, a probe's ``t1`` after encoding, just before the send
        (``membership.probe_sent``). Neither then holds this iteration's other work, so the clock
        sample they make is as narrow as the path allows (docs/operations.md, Time)."""
        ep = self.endpoint
        assert ep is not None
        mem = self.core.membership
        for dst, msg, addr in timed:
            try:
                if type(msg) is Ack:
                    msg = replace(msg, t3=max(msg.t3, self.clock()))
                self.counter += 1
                data = encode(msg, self.node_id, self.counter, key, dst=dst, **bind)
            except (OverflowError, ValueError, TypeError) as e:
                self._drop("encode_error")
                self.log.error("could not encode %s for %s: %s", type(msg).__name__, dst, e)
                continue
            t1 = self.clock()
            if not ep.send_now(data, addr):
                await ep.send_all([(data, addr)])
            if type(msg) is Probe:
                mem.probe_sent(msg.seq, t1)

    def _persist(self, new_ops: list[Any], outbox: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
        """Make ``new_ops`` and the HLC bound durable. If the disk refuses, acknowledge nothing:
        client OK replies become "storage unavailable", the ops are queued to retry, and the node
        stops taking orders until a write succeeds again."""
        from .storage import StorageError

        core, st = self.core, self.storage
        try:
            st.persist(new_ops, core.replica.hlc.last, core.membership.incarnation, force=not core.accepting)
            # a new snapshot: compacted here, or installed from a peer (a joining node's first state:
            # its version vector covers it at once, so its disk must too)
            marker = core.replica.counters["compactions"] + core.replica.counters["snapshots_installed"]
            if marker != self._compactions:
                self._compactions = marker
                st.write_snapshot(core.replica.snapshot())
        except StorageError as e:
            core.replica.new_ops[:0] = new_ops
            if core.accepting:
                self.log.error("%s; not acknowledging orders until it can write again", e)
            core.accepting = False
            return [(d, m._replace(code=E_STORAGE, message=f"storage unavailable: {e}"))
                    if type(m) is ClientReply and m.code == 0 else (d, m) for d, m in outbox]
        if not core.accepting:
            self.log.info("storage writable again; taking orders")
            core.accepting = True
        return outbox

    def _persist_strong(self, outbox: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
        """Make the sequencer's term, vote and log durable. If the disk refuses, nothing that rests
        on the unwritten state may leave: the sequencer's messages are dropped (as if lost), OK
        replies become "storage unavailable", the deltas are retried next time, and this node
        appends no new orders (as leader) until a write succeeds again."""
        from .storage import StorageError

        core = self.core
        if isinstance(core, StrongNodeCore):
            groups, parts = [core], [(core.take_persist(), core.take_handed())]
        else:  # shards: each group's state in its own store (storage.open_shards)
            assert isinstance(core, ShardedStrongCore)
            groups, parts = core.groups, core.take_persist_shards()
        failed: StorageError | None = None
        for s, (g, (d, handed), st) in enumerate(zip(groups, parts, self._shard_stores, strict=True)):
            unwritten, hand = self._seq_unwritten[s], self._handed_unwritten[s]
            hand += handed
            if d is not None:
                unwritten.append(d)
            elif not core.accepting and not unwritten:
                unwritten.append(g.seq.persist_delta())  # nothing new: a probe (restates term, vote)
            try:
                st.persist_sequencer(unwritten, g.seq.persistent_state, hand)
            except StorageError as e:
                failed = e
                continue
            unwritten.clear()
            hand.clear()
        if failed is not None:
            e = failed
            if core.accepting:
                self.log.error("%s; sending nothing that depends on it until it can write again", e)
            core.accepting = False
            return [(dst, m._replace(code=E_STORAGE, message=f"storage unavailable: {e}"))
                    if type(m) in (ClientReply, ForwardReply) and m.code == 0 else (dst, m)
                    for dst, m in outbox if type(m) not in SEQUENCER_MESSAGES and type(m) is not Sharded]
        if not core.accepting:
            self.log.info("storage writable again; taking orders")
            core.accepting = True
        return outbox

    def _follow_config(self) -> None:
        """Peers' addresses come from the replicated configuration (config_epoch.py), not only the
        file: an added member is reachable at the address its add op names, and a removed one's
        address is kept (its last words, a zombie's summaries, are still answered by the core). A
        node that finds itself removed stops: whatever it stamped since is refused everywhere."""
        cfg = self.core.replica.config
        self._epoch = cfg.epoch
        for m, addr in cfg.addresses().items():
            if m == self.node_id:
                continue
            host, _, port = addr.rpartition(":")
            self.peer_addr[m] = (host.strip("[]"), int(port))
        if self.core.replica.removed:
            raise UsageError(f"{self.node_id} was removed from the cluster (configuration epoch {cfg.epoch}); "
                             f"it has stopped. Its data dir is of no further use to this cluster")

    def _follow_strong_config(self, core: StrongNodeCore) -> None:
        """Strong mode's ``_follow_config``: addresses from the sequencer's configuration; a node
        whose removal is committed here stops (strong_members.py)."""
        conf = core.seq.conf
        self._strong_conf = (conf.epoch, core.seq.conf_pending())
        self.log.info("configuration epoch %d (log index %d, %s): %s", conf.epoch, conf.index,
                      "uncommitted" if self._strong_conf[1] else "committed",
                      ", ".join(f"{m} {r}" for m, r in core.seq.conf_status()["roles"].items()))
        for m, addr in conf.addrs:
            if m != self.node_id and m in conf.members:
                host, _, port = addr.rpartition(":")
                self.peer_addr[m] = (host.strip("[]"), int(port))
        if core.removed:
            raise UsageError(f"{self.node_id} was removed from the cluster (configuration epoch {conf.epoch}); "
                             f"it has stopped. Its data dir is of no further use to this cluster")

    def _log_revisions(self, revised: list[TradeRevised]) -> None:
        """Revisions of provisional trades are routine in eventual mode (a replay after a late op
        can revise hundreds at a heal): one INFO line per burst, each trade at DEBUG. One line per
        trade cost 15-29% of a node's CPU under load and at a heal (docs/performance.md)."""
        def what(ev: TradeRevised) -> str:
            return f"{ev.old.trade_id} " + ("undone" if ev.new is None else f"now {ev.new.qty}@{ev.new.price}")

        n = len(revised)
        self.log.info("%d provisional trade%s revised on replay: %s%s", n, "" if n == 1 else "s",
                      ", ".join(what(ev) for ev in revised[:3]), f" (+{n - 3} more)" if n > 3 else "")
        if self.log.isEnabledFor(logging.DEBUG):
            for ev in revised:
                self.log.debug("trade %s", what(ev))

    def _log_event(self, ev: Any) -> None:
        if isinstance(ev, RoleChanged):
            shard = f"shard {ev.shard}: " if type(ev) is ShardRoleChanged else ""
            if ev.leader == self.node_id:
                self.log.info("%sleader in term %d", shard, ev.term)
            elif ev.leader is not None:
                self.log.info("%sfollowing %s in term %d (%s)", shard, ev.leader, ev.term, ev.role.value)
            else:
                self.log.info("%sno leader known in term %d (%s)", shard, ev.term, ev.role.value)
        elif isinstance(ev, MemberStateChanged):
            self.log.info("member %s is %s (incarnation %d)", ev.member, ev.new, ev.incarnation)
        elif isinstance(ev, OpFenced):
            self.log.warning("refused op %s from removed member", ev.op.op_id)
        elif isinstance(ev, ConfigChanged):
            self.log.info("%s", ev.describe())

    # ---- introspection -----------------------------------------------------------------------------
    def _shell_counters(self) -> dict[str, Any]:
        c: dict[str, Any] = dict(self.endpoint.counters) if self.endpoint is not None else {}
        c["dropped"] = dict(self.dropped)
        if self.storage is not None:
            c["storage"] = dict(self.storage.counters)
        if self.audit is not None:
            c["audit"] = dict(self.audit.counters)
        if self.fairness is not None:  # counts under counters; with the rate as status.fairness
            c["fairness"] = dict(self.fairness.counters)
            self.core.status_info["fairness"] = self.fairness.status()  # (read after this call)
        return c

    def status(self) -> dict[str, Any]:
        return self.core.status()

