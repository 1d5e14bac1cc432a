"""The simulator: N real ``NodeCore``s on virtual time, a simulated network, disks and clients.

Theory of operation
-------------------
One seed drives everything. It splits into independent ``random.Random`` streams (fault plan,
schedule, clocks, network, workload, each core's own rng), so one part's draws never shift another's.
Time is an integer count of nanoseconds and advances only by popping the next event off a heap:

- ``DELIVER``: a datagram reaches a node or a client. A node handles it exactly as the trio shell
  (``gossipbook/node/runner.py``) does: ``wire.decode`` (authenticate, validate), the replay guard,
  ``core.receive(msg, sender, reply_to, now)``; then ``core.tick(now)`` if its deadline passed;
  then the *flush*: ``take_new_ops()`` goes to the node's disk (durable before anything is sent),
  and ``outbox()`` is encoded (``wire.encode`` / ``encode_ops``, split by MTU) and handed to the
  network. ``now`` is always the node's own clock (``clock.NodeClock``), never true time.
- ``WAKE``: a node's ``next_deadline()`` came due on its clock; it ticks and flushes.
- ``NEMESIS``: a scheduled fault (``nemesis.Action``) strikes or heals.
- ``ARRIVAL`` / ``RETRY``: a client sends a request, or resends one nobody answered.
- ``CHECK``: in the liveness phase, the cluster is inspected for convergence and finality.

A crashed node loses its ``NodeCore`` and every datagram sent to it; its disk stays
(``disk.Disk``, which keeps what ``node/storage.py`` keeps). A restart follows
``NodeRunner.__init__``: a new core with the same id, ``hlc_last`` and the incarnation recovered from
the disk (the HLC bound is leased ahead, so the HLC never goes below anything announced), the
snapshot installed and the disk's ops re-fed through ``replica.receive`` (so it keeps its own seq
numbering), ``take_new_ops()`` drained. A paused node keeps everything but handles nothing;
datagrams queue in its socket buffer (bounded) until it resumes.

Two phases: **safety** (``duration``: faults and client orders), then **liveness**: every fault
healed, every node up, no new orders; the cluster must converge within the bound.

The trace hash covers every datagram handled (time, endpoints, bytes) and every core event, in
order: the same seed gives the same hash, bit for bit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import random
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import RemoteError, WireError
from ..core.gossip import GossipConfig
from ..core.hlc import DEFAULT_MAX_OFFSET_NS, ZERO
from ..core.instrument import Venue
from ..core.membership import MemberStateChanged
from ..core.node import E_TIMEOUT, OK, Client, NodeConfig, NodeCore
from ..core.ops import Op
from ..core.sequencer import SequencerConfig
from ..core.strong import StrongConfig, StrongNodeCore
from ..core.wire import (
    DEFAULT_MTU,
    ClientReply,
    ClientSubmit,
    Heartbeat,
    Keys,
    OpBatch,
    ReplayGuard,
    decode,
    encode,
    encode_ops,
)
from . import shardsim
from .checker import RISK_SAMPLE_NS, Checker
from .clock import MS, SEC, T0, NodeClock
from .disk import Disk
from .members import CLIENT as MEMBERS_CLIENT
from .members import MembersDriver, MembersNemesis
from .nemesis import FAULTS, Action, FaultPlan, Schedule, leader_schedule, random_schedule
from .network import LinkFaults, Network, partition_links
from .strong_check import StrongChecker
from .strong_members import StrongMembersDriver, StrongMembersNemesis
from .workload import Request, Workload

DELIVER, WAKE, NEMESIS, ARRIVAL, RETRY, CHECK, PHASE, ADMIN, MEMBERS = range(9)
KEY = b"gossipbook-simulator-cluster-key"  # any 32 bytes: every datagram is still authenticated


def account_key(account: str) -> bytes:
    """Each simulated client acts for its own account (its name), with a credential of its own."""
    return hashlib.blake2b(account.encode(), key=KEY, digest_size=32).digest()


class _SimKeys(Keys):
    """Every account's credential, derived on demand (the simulator's clients are made up per run)."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(KEY, _AccountKeys())


class _AccountKeys(dict[str, bytes]):
    def __missing__(self, account: str) -> bytes:
        k = self[account] = account_key(account)
        return k

    def get(self, account: str, default: Any = None) -> Any:  # type: ignore[override]
        return self[account]


KEYS = _SimKeys()
SOCKET_BUFFER = 4096  # datagrams a paused node's socket holds before the kernel drops


@dataclass(slots=True)
class SimConfig:
    """What one run looks like (everything but the seed)."""

    nodes: int = 5
    duration_s: float = 60.0  # safety phase
    orders: int = 1000
    faults: tuple[str, ...] = FAULTS
    bound_s: float = 30.0  # liveness: convergence bound after the heal
    clients: int = 4
    max_offset_ns: int = DEFAULT_MAX_OFFSET_NS
    mtu: int = DEFAULT_MTU
    check_every_ns: int = 10 * MS
    # a scripted nemesis instead of the seed's random one (the plan drawn from ``faults`` still sets
    # link loss / dup / reorder rates and clocks: ``faults=()`` for a clean scripted run)
    script: Schedule | None = None
    gossip: GossipConfig | None = None  # None: the shell's defaults
    clocks: dict[str, NodeClock] | None = None  # fixed clocks (tests) instead of the plan's
    mode: str = "eventual"  # or "strong": StrongNodeCore, the sequencer's disk, the strong checker
    seq_breaks: frozenset[str] = frozenset()  # strong: SequencerConfig.breaks (vote-any-log, ...)
    # strong: compact the log this often (the shell's default is 20,000; small here so snapshots,
    # their persistence and InstallSnapshot catch-up happen within a run)
    compact_every: int = 256
    # a run that handles this many node steps is stopped as a runaway (a message storm or a
    # livelock: healthy 60 s runs take 20,000-60,000), so a broken variant cannot hang a seed sweep
    max_steps: int = 500_000
    # risk limits (issue 17): two more clients trade under limits the operator sets as the run
    # starts, and the checker holds the converged view to them (``risk_exceeded``)
    risk: bool = False
    # run-time membership (issue 20, eventual mode): the seed also removes, adds and replaces nodes
    # (``members.py``: its own random stream, so the rest of a seed's run is drawn as without it)
    members: bool = False
    # strong mode: sequencer groups per node, one instrument each (``shardsim.py``); ``shard_breaks``:
    # ``ShardedStrongCore(breaks=...)`` (``shared-term``)
    shards: int = 1
    shard_breaks: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.mode not in ("eventual", "strong"):
            raise ValueError(f"mode must be eventual or strong, not {self.mode!r}")
        if self.shards != 1 and (self.mode != "strong" or not 1 <= self.shards <= 64):
            raise ValueError("shards: 1 to 64, strong mode only")

    def node_ids(self) -> list[str]:
        return [f"n{i + 1}" for i in range(self.nodes)]


@dataclass(slots=True)
class SimNode:
    id: str
    clock: NodeClock
    core: Any = None  # NodeCore, or StrongNodeCore in strong mode
    state: str = "down"  # up, paused, down
    guard: ReplayGuard = field(default_factory=ReplayGuard)
    counter: int = 0
    disk: Disk = field(default_factory=Disk)
    compactions: int = 0  # this incarnation's compaction count at the last snapshot write
    inbox: list[tuple[bytes, str]] = field(default_factory=list)
    wake_at: int = -1
    wake_gen: int = 0
    deadline: int = -1  # the core's next_deadline() the pending wake was computed for
    boots: int = 0
    final_ops: int = 0  # ops (in fold order, compacted ones included) reported final this life
    folded_at: int = -1  # strong: the folded index whose digest the checker has seen


@dataclass(slots=True)
class Stats:
    msgs: int = 0  # node-to-node datagrams sent
    bytes: int = 0
    op_msgs: int = 0  # OpBatch datagrams among them
    op_bytes: int = 0
    client_msgs: int = 0
    client_bytes: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    delivered: int = 0
    dropped_down: int = 0
    dropped_buffer: int = 0
    dropped_wire: int = 0
    dropped_replay: int = 0
    steps: int = 0
    ticks: int = 0


class Simulation:
    """One seeded run. ``run()`` returns ``self``; read ``checker``, ``stats`` and the fields."""

    def __init__(self, seed: int, config: SimConfig | None = None, *,
                 trace: Callable[[str], None] | None = None) -> None:
        self.seed = seed
        self.cfg = cfg = config or SimConfig()
        if cfg.nodes < 1:
            raise ValueError("a cluster needs at least one node")
        root = random.Random(seed)
        streams = {name: random.Random(root.getrandbits(64)) for name in
                   ("plan", "schedule", "clocks", "network", "workload", "cores", "partition", "leader",
                    "risk", "members")}
        self.ids = cfg.node_ids()
        self.plan = FaultPlan.draw(streams["plan"], cfg.faults)
        self.start = T0
        self.end_safety = T0 + int(cfg.duration_s * SEC)
        self.schedule = cfg.script if cfg.script is not None else random_schedule(
            streams["schedule"], self.plan, self.ids, self.end_safety - T0, cfg.max_offset_ns)
        clocks = cfg.clocks or self.plan.clocks(streams["clocks"], self.ids, cfg.max_offset_ns)
        # copies: a clock step changes a clock, and a caller's clocks must not carry over between runs
        self.nodes = {n: SimNode(n, dataclasses.replace(clocks[n]) if n in clocks else NodeClock()) for n in self.ids}
        self.net = Network(streams["network"], self.ids)
        #: membership changes (members.py): ``ids`` is the cluster now (added nodes join it, nodes
        #: killed for good leave it: ``gone``); ``file_ids`` what the original nodes' files list
        self.file_ids = list(self.ids)
        self.gone: set[str] = set()
        self.members: Any = (MembersDriver(MembersNemesis(streams["members"], self.ids, self.end_safety - T0,
                                                          zombie="skew" not in self.plan.active()), MEMBERS)
                             if cfg.members and cfg.mode == "eventual" else None)
        if cfg.members and cfg.mode == "strong":  # strong_members.py: changes through the sequencer's log
            self.members = StrongMembersDriver(StrongMembersNemesis(streams["members"], self.ids,
                                                                    self.end_safety - T0), MEMBERS)
        self.net.faults = LinkFaults(self.plan.loss, self.plan.dup, self.plan.reorder,
                                     self.plan.reorder_max_ms * MS)
        self._part_rng = streams["partition"]
        self._core_rng = streams["cores"]
        self.workload = (Workload if cfg.shards == 1 else shardsim.ShardedWorkload)(
                                 streams["workload"], cfg.orders, T0 + SEC // 5, self.end_safety - SEC // 2,
                                 cfg.clients, ack_timeouts=cfg.mode != "strong",
                                 risk_rng=streams["risk"] if cfg.risk else None)
        self.checker = Checker(self.ids, cfg.max_offset_ns)
        self.strong = cfg.mode == "strong"
        self.leader_faults = (leader_schedule(streams["leader"], self.plan, self.end_safety - T0)
                              if self.strong and cfg.script is None else [])
        self.strong_checker = StrongChecker(self.checker)
        self.strong_config = StrongConfig(
            max_offset_ns=cfg.max_offset_ns, compact_every=cfg.compact_every,
            sequencer=SequencerConfig(max_batch=16, max_inflight=16, breaks=frozenset(cfg.seq_breaks)))
        self.stats = Stats()
        self.venue = Venue()
        if cfg.shards > 1:  # K instruments, a per-shard checker, a disk per shard (shardsim.py)
            shardsim.setup(self)
        if cfg.risk and cfg.mode != "strong":  # every op stamped, folded once: the converged view
            from ..core.replica import Replica

            self.checker.oracle = Replica("oracle", self.venue, self.ids, cfg.max_offset_ns)
        self._risk_next = 0
        self.checker.stp_off = frozenset(s for s, i in self.venue.instruments.items() if i.stp == "off")
        gossip = cfg.gossip or GossipConfig()
        self.node_config = NodeConfig(max_offset_ns=cfg.max_offset_ns, gossip=gossip)
        self.trace = trace
        self._h = hashlib.blake2b(digest_size=16)
        self._q: list[tuple[Any, ...]] = []
        self._seq = 0
        self.now = T0
        self.heal_t: int | None = None
        self.converged_t: int | None = None
        self.final_t: int | None = None
        self.done = False
        self.need_finality = True
        self.busy_ticks = 0
        self.end_t = T0
        self._extra_bound = 0
        self._client_counters: dict[str, int] = {}
        self._final_acks: list[tuple[str, str, list[Any], int]] = []

    # ---- the event loop -----------------------------------------------------------------------------
    def _push(self, t: int, kind: int, *args: Any) -> None:
        self._seq += 1
        heapq.heappush(self._q, (t, self._seq, kind, *args))

    def run(self) -> Simulation:
        for n in self.ids:
            self._boot(self.nodes[n], T0)
        for a in self.schedule:
            self._push(T0 + a.at_ns, NEMESIS, a)
        for a in self.leader_faults:
            self._push(T0 + a.at_ns, NEMESIS, a)
        for t, c in self.workload.arrivals:
            self._push(t, ARRIVAL, c)
        if self.members is not None:
            self.members.start(self, T0)
        for t, msg in getattr(self.workload, "admin", ()):
            self._push(t, ADMIN, msg)
        self._push(self.end_safety, PHASE)
        q = self._q
        pop = heapq.heappop
        nodes = self.nodes
        max_steps = self.cfg.max_steps
        while q and not self.done:
            if self.stats.steps > max_steps:
                self._runaway()
                break
            ev = pop(q)
            t = self.now = ev[0]
            kind = ev[2]
            if kind == DELIVER:
                dst = ev[3]
                node = nodes.get(dst)
                if node is None:
                    self._client_receive(dst, ev[4], ev[5], t)
                elif node.state == "up":
                    self._step(node, t, ((ev[4], ev[5]),))
                elif node.state == "paused":
                    if len(node.inbox) < SOCKET_BUFFER:
                        node.inbox.append((ev[4], ev[5]))
                    else:
                        self.stats.dropped_buffer += 1
                else:
                    self.stats.dropped_down += 1
            elif kind == WAKE:
                node = nodes[ev[3]]
                if node.state == "up" and ev[4] == node.wake_gen:
                    self._step(node, t, ())
            elif kind == ARRIVAL:
                self._arrival(ev[3], t)
            elif kind == RETRY:
                self._retry(ev[3], t)
            elif kind == NEMESIS:
                self._nemesis(ev[3], t)
            elif kind == CHECK:
                self._check(t)
            elif kind == PHASE:
                self._liveness_phase(t)
            elif kind == ADMIN:
                self._send_request(self.workload.admin_request(ev[3], t), t)
            elif kind == MEMBERS:
                self.members.on_event(self, ev[3], t)  # type: ignore[union-attr]
        return self

    # ---- nodes ------------------------------------------------------------------------------------
    def _boot(self, node: SimNode, t: int) -> None:
        """Start (or restart) a node as ``NodeRunner.__init__`` does, from its disk."""
        now = node.clock.read(t)
        disk = node.disk
        if self.strong:
            self._boot_strong(node, t, now)
            return
        hlc_last, incarnation = disk.recover_state(node.id)
        members, joining = (self.file_ids, False) if self.members is None else self.members.boot_args(node.id, self.file_ids)
        core = NodeCore(node.id, members, self.venue, random.Random(self._core_rng.getrandbits(64)),
                        self.node_config, hlc_last=hlc_last or ZERO,
                        incarnation=max(incarnation or 0, now // MS), joining=joining)
        node.core = core
        self.checker.watch_fold(node.id, core.replica, lambda: self.now)  # accounts: see Checker.watch_fold
        node.state = "up"
        self._fresh_life(node, now)
        try:
            refeed, snap_trades = disk.load_into(core)
        except Exception as e:  # noqa: BLE001 - a core bug: report it, keep simulating
            self._core_error(node, t, e)
            return
        self.checker.booted(node.id, refeed, snap_trades)
        self._hash_events(node.id, t, refeed)
        self._trace(t, f"{node.id} boot #{node.boots} incarnation {core.membership.incarnation} "
                       f"hlc_last {_rel(hlc_last or ZERO)} disk {len(disk.ops)} ops"
                       f"{' + snapshot' if disk.snapshot else ''}")
        self._step(node, t, (), force_tick=True)

    def _boot_strong(self, node: SimNode, t: int, now: int) -> None:
        """``NodeRunner._strong_core``: the sequencer's stored state; the books refold from its
        committed prefix inside the constructor (reported to the strong checker like any fold)."""
        if self.cfg.shards > 1:
            shardsim.boot(self, node, t, now)
            return
        disk = node.disk
        node.state = "up"
        self._fresh_life(node, now)
        sc = self.strong_checker
        sc.booted(node.id)

        def folded(index: int, op: Op | None, out: Any) -> None:
            sc.folded(node.id, index, op, out, self.now)

        members, joining = (self.ids, False) if self.members is None else self.members.boot_args(node.id, self.file_ids)
        try:
            node.core = StrongNodeCore(node.id, members, self.venue, random.Random(self._core_rng.getrandbits(64)),
                                       self.strong_config, persisted=disk.seq,
                                       incarnation=max(disk.incarnation + 1, now // MS), on_fold=folded,
                                       handed=disk.handed, joining=joining)
        except Exception as e:  # noqa: BLE001 - a core bug: report it, keep simulating
            self._core_error(node, t, e)
            return
        st = disk.seq
        self._trace(t, f"{node.id} boot #{node.boots} strong term {st.term if st else 0} "
                       f"log {len(st.entries) if st else 0} entries after snapshot {st.snapshot_index if st else 0}")
        self._step(node, t, (), force_tick=True)

    def _fresh_life(self, node: SimNode, now: int) -> None:
        node.guard = ReplayGuard()
        node.counter = max(node.counter, now)  # the shell's: frame counters start at its boot clock
        node.inbox = []
        node.final_ops = 0
        node.compactions = 0
        node.folded_at = -1
        node.boots += 1
        node.deadline = node.wake_at = -1

    def _core_error(self, node: SimNode, t: int, e: BaseException) -> None:
        tb = traceback.extract_tb(e.__traceback__)
        where = f"{tb[-1].filename.rsplit('/', 2)[-1]}:{tb[-1].lineno}" if tb else "?"
        self.checker.violation("core_error", node.id, t, f"{type(e).__name__}: {e} (at {where})")
        # the trio shell would die here: model it as a crash; the liveness phase restarts it
        node.core = None
        node.state = "down"

    def _step(self, node: SimNode, t: int, msgs: Sequence[tuple[bytes, str]], force_tick: bool = False) -> None:
        """One turn of the shell's loop (``NodeRunner._loop``): receive a burst, tick if due, flush."""
        core = node.core
        assert core is not None
        now = node.clock.read(t)
        rep = core.replica
        strong = self.strong
        if self.members is not None and not strong:
            self.members.voters_at[node.id] = set(rep.voters())  # what an ack this step is judged by
        hlc = core.hlc if strong else rep.hlc
        before = (hlc.wall, hlc.logical)
        self.stats.steps += 1
        pre = None
        try:
            for data, src in msgs:
                self._hash_datagram(t, src, node.id, data)
                try:
                    frame = decode(data, KEYS)
                except WireError:
                    self.stats.dropped_wire += 1
                    continue
                acct = frame.account
                if not node.guard.accept(frame.sender if acct is None else f"{acct}/{frame.sender}", frame.counter):
                    self.stats.dropped_replay += 1
                    continue
                msg = frame.msg
                submit = type(msg) is ClientSubmit
                if strong and submit:
                    self.strong_checker.submitted(node.id, msg.req, t)
                seq0 = rep.vv.get(node.id, 0)
                try:
                    core.receive(msg, frame.sender, src, now, acct)
                except RemoteError as e:
                    if self.members is not None and self.members.expected_refusal(e.reason, frame.sender):
                        continue  # a removed member's message, or a new one's not known here yet
                    # the shell drops and counts it; here every sender is honest, so it is a bug
                    self.checker.violation("remote_error", node.id, t, f"{node.id} refused {type(msg).__name__} "
                                           f"from {frame.sender}: {e}")
                    continue
                if submit and not strong and rep.vv.get(node.id, 0) > seq0:
                    own = [op for op in rep.new_ops if op.origin == node.id]
                    if own:
                        self.checker.stamp(node.id, msg.req, own[-1])
                        if self.checker.oracle is not None:
                            self.checker.risk_stamped(node.id, own[-1], rep)
            d = core.next_deadline()
            if force_tick or now >= d:
                self.stats.ticks += 1
                if not strong:
                    pre = (sum(rep._base.values()), rep._applied[:])  # see _track_finality
                core.tick(now)
                d = core.next_deadline()
        except Exception as e:  # noqa: BLE001 - a core bug: report it, keep simulating
            self._core_error(node, t, e)
            return
        if strong:
            self._flush_strong(node, t)
        else:
            self._flush(node, t, now, before, pre)
        self._schedule_wake(node, t, now, d)

    def _schedule_wake(self, node: SimNode, t: int, now: int, d: int) -> None:
        """Wake the node when its clock reaches deadline ``d`` (unchanged deadline: nothing to do)."""
        if d == node.deadline and node.wake_at >= t:
            return
        node.deadline = d
        if d <= now:
            # the core wants to run again at once: as the shell would spin, come back as soon as
            # the node's clock moves (count it: a core that never stops asking is a liveness bug)
            self.busy_ticks += 1
            tw = node.clock.when(now + 1, t + 1)
        else:
            tw = node.clock.when(d, t)
        if tw != node.wake_at:
            node.wake_gen += 1
            node.wake_at = tw
            self._push(tw, WAKE, node.id, node.wake_gen)

    def _flush(self, node: SimNode, t: int, now: int, before: tuple[int, int],
               pre: tuple[int, list[Op]] | None = None) -> None:
        core = node.core
        assert core is not None
        ck = self.checker
        rep = core.replica
        ops = core.take_new_ops()
        out = core.outbox()
        # durable before any datagram below leaves (NodeRunner._persist)
        node.disk.persist(ops, rep.hlc.last, core.membership.incarnation)
        # a new snapshot: compacted here, or installed from a peer (a joining node's first state:
        # its version vector covers it at once, so its disk must too)
        marker = rep.counters["compactions"] + rep.counters["snapshots_installed"]
        if marker != node.compactions:
            node.compactions = marker
            node.disk.write_snapshot(rep.snapshot())
        if ops:
            ck.ops_taken(node.id, ops, now, t)
        after = (rep.hlc.wall, rep.hlc.logical)
        if after != before:
            ck.adopted(node.id, before, after, now, t)
        self._send_outbox(node, out, t, lambda msg: self._check_reply(node, msg, t))
        evs = core.events()
        if evs:
            ck.events(node.id, evs, t)
            self._hash_events(node.id, t, evs)
        self._track_finality(node, t, ops, pre)
        if ck.oracle is not None and t >= self._risk_next:
            self._risk_next = t + RISK_SAMPLE_NS
            ck.risk_check(t)

    def _flush_strong(self, node: SimNode, t: int) -> None:
        """Strong mode's flush (``NodeRunner._persist_strong``): the sequencer's delta is durable
        before any datagram of this step leaves; then the checker sees replies, trades and the digest."""
        core = node.core
        assert core is not None
        if self.cfg.shards > 1:
            shardsim.flush(self, node, t)
            return
        node.disk.persist_seq(core.take_persist(), core.take_handed(), core.membership.incarnation)
        sc = self.strong_checker
        self._send_outbox(node, core.outbox(), t,
                          lambda msg: sc.replied(node.id, msg.req, msg.code, msg.order_id, msg.trades, t))
        evs = core.events()
        if evs:
            sc.events(node.id, evs, t)
            self._hash_events(node.id, t, evs)
        if self.members is not None:
            self.members.after_flush(self, node, t)
        fold = core.replica
        if fold.index != node.folded_at:  # the digest costs a pass over the books: once per index
            node.folded_at = fold.index
            sc.digest(node.id, fold.index, fold.digest(), t)
            if self.cfg.risk and t >= self._risk_next:
                self._risk_next = t + RISK_SAMPLE_NS
                self.checker.risk_samples += 1
                sc.risk_check(fold, node.id, t)

    def _send_outbox(self, node: SimNode, out: list[tuple[Any, Any]], t: int,
                     on_reply: Callable[[ClientReply], None]) -> None:
        """Encode and send a core's outbox as the shell does (``OpBatch`` split by MTU, one frame
        counter per frame); ``on_reply`` sees each ``ClientReply`` as it leaves."""
        last_hb = None
        for dst, msg in out:
            tmsg = type(msg)
            if isinstance(dst, Client):
                if tmsg is ClientReply:
                    on_reply(msg)
                node.counter += 1
                self._send(node.id, dst.addr, [encode(msg, node.id, node.counter, account_key(dst.account),
                                                      dst.account)], tmsg, t)
                continue
            if dst in self.nodes and dst != node.id:
                addr = dst
            else:
                continue
            if tmsg is OpBatch:
                frames = encode_ops(msg.ops, node.id, node.counter + 1, KEY, self.cfg.mtu)
                node.counter += len(frames)
            else:
                if tmsg is Heartbeat and msg is not last_hb:
                    last_hb = msg
                    self.checker.issued(node.id, (msg.wall, msg.logical), t)
                node.counter += 1
                frames = [encode(msg, node.id, node.counter, KEY)]
            self._send(node.id, addr, frames, tmsg, t)

    def _track_finality(self, node: SimNode, t: int, ops: list[Op],
                        pre: tuple[int, list[Op]] | None = None) -> None:
        """Tell the checker which ops became final on ``node`` (their trades: final trades).

        Final ops are a prefix of the fold that only grows; ``node.final_ops`` counts the prefix
        already reported, compacted ops included. Compaction (in ``tick``) can fold ops into the
        snapshot in the tick that made them final; ``pre`` (compacted count, fold before the tick)
        and ``ops`` (what the step added) rebuild the fold as compaction saw it. The trades come
        from the checker's record of this node's events, which the flush has just brought up to date.
        """
        rep = node.core.replica  # type: ignore[union-attr]
        base = sum(rep._base.values())  # ops folded into the snapshot
        fc = rep.final_count()
        if base + fc <= node.final_ops:
            return
        done = node.final_ops
        if done < base and pre is not None and pre[0] <= done < base:
            pre_base, pre_applied = pre
            merged = sorted(set(pre_applied).union(ops))
            self.checker.finalized_ops(node.id, merged[done - pre_base:base - pre_base], t)
        self.checker.finalized_ops(node.id, rep._applied[max(0, done - base):fc], t)
        node.final_ops = base + fc

    def _check_reply(self, node: SimNode, msg: ClientReply, t: int) -> None:
        """A reply that acknowledges (ok, or a timeout naming the order and the level it reached)."""
        if msg.code != OK and not (msg.code == E_TIMEOUT and msg.order_id):
            return
        op = self.checker.stamped.get((node.id, msg.req))
        holders, members = 0, self.ids
        if op is not None:
            holders = sum(1 for n in self.nodes.values() if n.disk.holds(op.origin, op.seq))
            if self.members is not None and node.core is not None:  # members change (members.py)
                holders, members = self.members.holders(self, node, op, msg.level)
        self.checker.replied(node.id, msg.req, msg.order_id, msg.level, holders, len(members), t)

    def _send(self, src: str, dst: str, frames: list[bytes], tmsg: type, t: int) -> None:
        st = self.stats
        to_node = dst in self.nodes
        name = tmsg.__name__
        for f in frames:
            if to_node:
                st.msgs += 1
                st.bytes += len(f)
                st.by_type[name] = st.by_type.get(name, 0) + 1
                if tmsg is OpBatch:
                    st.op_msgs += 1
                    st.op_bytes += len(f)
            else:
                st.client_msgs += 1
                st.client_bytes += len(f)
            for d in self.net.route(src, dst):
                self._push(t + d, DELIVER, dst, f, src)

    # ---- clients ------------------------------------------------------------------------------------
    def _up(self) -> list[str]:
        up = [n for n in self.ids if self.nodes[n].state != "down"]
        return up if self.members is None else self.members.for_clients(up)

    def _arrival(self, client: str, t: int) -> None:
        if self.workload.stopped:
            return
        rq = self.workload.new_request(client, t)
        self._send_request(rq, t)

    def _send_request(self, rq: Request, t: int) -> None:
        wl = self.workload
        node = wl.pick_node(rq, self._up())
        if node is None:
            wl.counters["no_node"] += 1
        else:
            wl.sent(rq, node)
            data = encode(rq.msg, rq.client, self._client_counter(rq.client), account_key(rq.client), rq.client)
            self.stats.client_msgs += 1
            self.stats.client_bytes += len(data)
            for d in self.net.route(rq.client, node):
                self._push(t + d, DELIVER, node, data, rq.client)
        self._push(t + wl.retry_ns, RETRY, rq.req)

    def _client_counter(self, client: str) -> int:
        c = self._client_counters.get(client, T0) + 1
        self._client_counters[client] = c
        return c

    def _retry(self, req: str, t: int) -> None:
        rq = self.workload.requests[req]
        if self.workload.should_retry(rq):
            self._send_request(rq, t)

    def _client_receive(self, client: str, data: bytes, src: str, t: int) -> None:
        self._hash_datagram(t, src, client, data)
        try:
            frame = decode(data, KEYS)
        except WireError:
            self.stats.dropped_wire += 1
            return
        if client == MEMBERS_CLIENT and self.members is not None:
            self.members.on_frame(self, frame, t)
            return
        if type(frame.msg) is ClientReply:
            rep = frame.msg
            ack = self.workload.on_reply(frame.sender, rep, t)
            if ack is not None and ack.level == 2 and not self.strong:
                self._final_acks.append((rep.req, frame.sender, rep.trades, t))

    # ---- nemesis ------------------------------------------------------------------------------------
    def _nemesis(self, a: Action, t: int) -> None:
        k = a.kind
        self._trace(t, f"nemesis: {a.describe()}")
        net = self.net
        if a.node in self.gone:
            return  # killed for good (members.py): nothing brings it back
        if k == "partition":
            if a.shape == "groups":
                blocked = set()
                for i, g in enumerate(a.groups):
                    for h in a.groups[i + 1:]:
                        for x in g:
                            for y in h:
                                blocked |= {(x, y), (y, x)}
                desc = " | ".join(",".join(g) for g in a.groups)
            else:
                blocked, desc = partition_links(a.shape, self.ids, self._part_rng)
            net.partition(blocked)
            self._trace(t, f"  {desc}")
            if self.members is not None:
                self.members.reapply_cut(self)
        elif k == "heal":
            net.heal()
            if self.members is not None:
                self.members.reapply_cut(self)
        elif k == "loss_burst":
            net.burst_links = set(a.links) if a.links else {(x, y) for x in self.ids for y in self.ids if x != y}
            net.burst_loss = a.value
        elif k == "loss_burst_end":
            net.burst_links, net.burst_loss = set(), 0.0
        elif k == "crash":
            node = self.nodes[a.node]
            if node.state != "down":
                node.core = None
                node.state = "down"
                node.inbox = []
                node.wake_gen += 1
                node.wake_at = -1
        elif k == "restart":
            node = self.nodes[a.node]
            if node.state == "down":
                self._boot(node, t)
        elif k == "pause":
            node = self.nodes[a.node]
            if node.state == "up":
                node.state = "paused"
        elif k == "resume":
            self._resume(self.nodes[a.node], t)
        elif k in ("leader_isolate", "leader_slow", "leader_pause"):
            self._leader_fault(a, t)
        elif k == "unisolate":
            net.isolated.discard(a.node)
        elif k == "unslow":
            net.slow.pop(a.node, None)
        elif k == "clock_step":
            node = self.nodes[a.node]
            node.clock.step(int(a.value))
            if node.state == "up" and node.core is not None:  # its timers now fall elsewhere
                node.wake_gen += 1
                node.wake_at, node.deadline = t, -1
                self._push(t, WAKE, node.id, node.wake_gen)
        else:  # pragma: no cover - scripted() validates kinds
            raise ValueError(f"unknown nemesis action {k!r}")

    def _leader_fault(self, a: Action, t: int) -> None:
        """Aim ``a`` at the node that leads now (the highest-term leader among live nodes); its end
        is scheduled for that same node."""
        leaders = shardsim.leaders(self) if self.cfg.shards > 1 else [
            (n.core.seq.term, n.id) for n in self.nodes.values()
            if n.state == "up" and n.core is not None and n.core.seq.role == "leader"]
        if not leaders:
            self._trace(t, "  no leader to aim at")
            return
        target = max(leaders)[1]
        self._trace(t, f"  aimed at {target}")
        end = t + a.dur_ns
        if a.kind == "leader_isolate":
            self.net.isolated.add(target)
            self._push(end, NEMESIS, Action(end - T0, "unisolate", node=target))
        elif a.kind == "leader_slow":
            self.net.slow[target] = int(a.value)
            self._push(end, NEMESIS, Action(end - T0, "unslow", node=target))
        else:
            self.nodes[target].state = "paused"
            self._push(end, NEMESIS, Action(end - T0, "resume", node=target))

    def _resume(self, node: SimNode, t: int) -> None:
        if node.state != "paused":
            return
        node.state = "up"
        burst, node.inbox = node.inbox, []
        self._step(node, t, burst)

    # ---- liveness -----------------------------------------------------------------------------------
    def _liveness_phase(self, t: int) -> None:
        """Heal everything, restart and resume every node, stop the clients; watch the cluster."""
        self._trace(t, "liveness phase: heal everything")
        self.heal_t = t
        self.workload.stopped = True
        self.net.heal_all()
        if self.members is not None:
            self.members.liveness(self)
        for n in self.ids:
            node = self.nodes[n]
            if node.state == "down":
                self._boot(node, t)
            elif node.state == "paused":
                self._resume(node, t)
        # finality needs every pair of clocks within max_offset of each other (else heartbeats from
        # the clock that is ahead are refused, by design, and the watermark waits for it)
        offs = [self.nodes[n].clock.offset_at(t) for n in self.ids]
        spread = max(offs) - min(offs)
        # (strong mode: every committed entry is final, and the clocks decide nothing)
        self.need_finality = spread < self.cfg.max_offset_ns * 9 // 10 and not self.strong
        self._extra_bound = 0 if self.strong else max(0, spread - self.cfg.max_offset_ns)
        self._push(t, CHECK)

    def _check(self, t: int) -> None:
        bound = int(self.cfg.bound_s * SEC) + self._extra_bound
        heal = self.heal_t or t
        cores = [self.nodes[n].core for n in self.ids]
        if self.strong:
            if self.converged_t is None and all(c is not None for c in cores) and self._strong_settled(cores):
                self.converged_t = t
        elif all(c is not None for c in cores) and all(self.nodes[n].state == "up" for n in self.ids):
            if self.converged_t is None:
                vv0 = cores[0].replica.vv  # type: ignore[union-attr]
                if all(c.replica.vv == vv0 for c in cores[1:]):  # type: ignore[union-attr]
                    d0 = cores[0].replica.digest()  # type: ignore[union-attr]
                    if all(c.replica.digest() == d0 for c in cores[1:]):  # type: ignore[union-attr]
                        self.converged_t = t
            if self.converged_t is not None and self.final_t is None:
                if all(c.replica.final_count() == len(c.replica._applied) for c in cores):  # type: ignore[union-attr]
                    self.final_t = t
        settled = self.converged_t is not None and (self.final_t is not None or not self.need_finality)
        if settled and self.members is not None and self.members.nem.pending():
            settled = False  # an operator's command still in flight: see it through (members.py)
        if settled or t - heal >= bound:
            self._finish(t, bound)
            return
        self._push(t + self.cfg.check_every_ns, CHECK)

    def _strong_settled(self, cores: list[Any]) -> bool:
        """One leader every node follows, every node's fold at the leader's commit index, which
        covers every request a client is still waiting on; one digest."""
        if self.cfg.shards > 1:
            return shardsim.settled(cores)
        leaders = {c.seq.leader() for c in cores}
        if len(leaders) != 1 or None in leaders:
            return False
        commit = cores[0].seq.commit_index
        if any(c.seq.commit_index != commit or c.replica.index != commit for c in cores):
            return False
        if any(c._waits for c in cores):
            return False
        d0 = cores[0].replica.digest()
        return all(c.replica.digest() == d0 for c in cores[1:])

    def _runaway(self) -> None:
        top = sorted(self.stats.by_type.items(), key=lambda kv: -kv[1])[:3]
        self.checker.violation("runaway", "", self.now, f"{self.stats.steps} node steps by "
                               f"{(self.now - T0) / SEC:.3f}s virtual; most sent: "
                               + ", ".join(f"{k} {v}" for k, v in top))
        self.done = True
        self.end_t = self.now

    def _finish(self, t: int, bound: int) -> None:
        self.done = True
        ck = self.checker
        if self.strong:
            self._finish_strong(t, bound)
            return
        reps = {n: self.nodes[n].core.replica for n in self.ids if self.nodes[n].core is not None}  # type: ignore[union-attr]
        for n in self.ids:
            if self.nodes[n].core is not None:
                self._track_finality(self.nodes[n], t, [])
        acks = self.workload.acks
        if self.members is not None:  # an op the removals took by design is no lost ack (members.py)
            fences = self.members.nem.fences(reps)
            acks = self.members.nem.set_aside(acks, ck.stamped, fences)
            self.members.nem.final_state(ck, reps, fences, t)
        ck.final_state(reps, acks, t)
        ck.risk_check(t)
        for req, node, rows, at in self._final_acks:
            ck.final_ack_trades(req, node, rows, at, complete=self.final_t is not None)
        digests = {n: r.digest() for n, r in reps.items()}
        detail = ""
        if self.converged_t is None and reps:
            vvs = {n: r.version_vector() for n, r in reps.items()}
            if len({tuple(sorted(v.items())) for v in vvs.values()}) > 1:
                detail = "; version vectors " + ", ".join(f"{n}={dict(sorted(v.items()))}" for n, v in vvs.items())
        ck.liveness(self.heal_t or t, self.converged_t, self.final_t, bound, digests, self.need_finality, t, detail)
        self.end_t = t

    def _finish_strong(self, t: int, bound: int) -> None:
        folds = {n: self.nodes[n].core.replica for n in self.ids if self.nodes[n].core is not None}
        self.strong_checker.final_state(folds, t)
        if self.cfg.risk:
            for n, f in folds.items():
                self.strong_checker.risk_check(f, n, t)
        digests = {n: f.digest() for n, f in folds.items()}
        detail = ""
        if self.converged_t is None and folds and self.cfg.shards > 1:
            detail = shardsim.stall_detail(self, folds)
        elif self.converged_t is None and folds:
            detail = "; " + ", ".join(
                f"{n}: {self.nodes[n].core.seq.role} term {self.nodes[n].core.seq.term} "
                f"leader {self.nodes[n].core.seq.leader()} commit {self.nodes[n].core.seq.commit_index} "
                f"folded {f.index} waiting {len(self.nodes[n].core._waits)}" for n, f in folds.items())
        if self.members is not None:
            self.members.finish(self, t)
        self.checker.liveness(self.heal_t or t, self.converged_t, self.converged_t, bound, digests, False, t, detail)
        self.end_t = t

    # ---- trace --------------------------------------------------------------------------------------
    def _hash_datagram(self, t: int, src: str, dst: str, data: bytes) -> None:
        self.stats.delivered += 1
        h = self._h
        h.update(b"D%d %s>%s " % (t - T0, src.encode(), dst.encode()))
        h.update(data)
        if self.trace is not None:
            try:
                m = decode(data, KEYS).msg
                text = _short(m)
            except WireError as e:
                text = f"<undecodable: {e}>"
            self.trace(f"{(t - T0) / SEC:12.6f} {src}->{dst} {text}")

    def _hash_events(self, node: str, t: int, evs: Sequence[Any]) -> None:
        if not evs:
            return
        h = self._h
        for ev in evs:
            h.update(b"E%d %s %s" % (t - T0, node.encode(), repr(ev).encode()))
            if self.trace is not None:
                self.trace(f"{(t - T0) / SEC:12.6f} {node} event {_event_text(ev)}")

    def _trace(self, t: int, text: str) -> None:
        if self.trace is not None:
            self.trace(f"{(t - T0) / SEC:12.6f} {text}")

    @property
    def trace_hash(self) -> str:
        return self._h.hexdigest()


def _rel(ts: tuple[int, int]) -> str:
    return f"({ts[0] - T0 if ts[0] else 0}, {ts[1]})"


def _short(m: Any) -> str:
    if type(m) is OpBatch:
        return "OpBatch[" + " ".join(f"{o.op_id}@({o.wall - T0},{o.logical})" for o in m.ops) + "]"
    text = repr(m)
    return text if len(text) < 200 else text[:197] + "..."


def _event_text(ev: Any) -> str:
    if isinstance(ev, MemberStateChanged):
        return f"member {ev.member} {ev.old} -> {ev.new} (incarnation {ev.incarnation})"
    return repr(ev)
