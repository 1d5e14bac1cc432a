"""The demo scenario: N real nodes on 127.0.0.1 in one trio run, an order flow, a partition, a heal
(or, with ``replace``, a node killed for good and replaced: the script is ``replace.py``).

Theory of operation
-------------------
Each node is a real ``NodeRunner`` with its own UDP socket on a free port, its own key-authenticated
traffic and a ``FaultFilter`` in its send path. The partition is nothing but those filters: cutting
fills each node's ``blocked`` set with the addresses of the nodes on the other side(s); healing
clears them. Nothing in the nodes knows a demo is running.

A seeded order flow (one market, one drifting mid, the ``OrderFlow`` of ``gossipbook load``) goes
round-robin into every node at ``rate`` orders per second per node through a real ``Client``;
cancels and amends go to the node that accepted the order (elsewhere it may not be replicated yet).

The scenario publishes a ``DemoSnapshot`` every ``tick`` seconds; views only read those. After the
heal it polls every few milliseconds for the first instant when every replica holds the same op-set
and digest ("converged in N ms"), waits a short grace, stops the flow, lets the last ops settle and
reports a ``DemoResult``.

Rules that hold:
- A killed node (``kill``) stays on screen, frozen, but counts for nothing: not for convergence,
  digests, the timeline or the result; the order flow goes only to ``flow_ids``.
- Every node task runs in one nursery (a node added later too); the run ends (normally, on error, or on Ctrl-C through the
  caller's cancel scope) with every socket closed and the temp dir removed.
- Views get immutable snapshots; no protocol logic lives outside the nodes.
- With ``fix_port`` a FIX 4.4 gateway (``gossipbook.fix``) runs in the same nursery on
  127.0.0.1:``fix_port`` with two sessions, FIX1 (account fix1, orders to the first node) and FIX2
  (fix2, the last node: the other side of the default partition), so a person can trade from a FIX
  client while the demo runs; it logs out its sessions before the nodes stop.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import random
import re
import secrets
import signal
import socket
import statistics
import tempfile
import tomllib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import trio

from ..config import OPERATOR, ClusterConfig, from_dict, render, write_private
from ..core.errors import UsageError
from ..core.membership import MemberStateChanged, Refuted
from ..core.node import E_NO_QUORUM
from ..core.ops import AMEND, CANCEL, NEW, OpFenced, TradeRevised
from ..core.wire import ClientSubmit
from ..node.client import Client, Unreachable
from ..node.runner import NodeRunner
from ..node.transport import FaultFilter, PortInUse
from ..workload.orders import OrderFlow
from .replace import ReplaceFacts, facts_json
from .replace import play as play_replace
from .snapshot import DemoResult, DemoSnapshot, LogEvent, NodeView, clock_fields

#: failure detection fast enough to watch (the timings ``tests/node`` uses)
FAST_MEMBERSHIP = {"probe_interval_ms": 100, "probe_timeout_ms": 50, "suspicion_timeout_ms": 400,
                   "suspicion_max_timeout_ms": 800}
MAX_NODES = 8
DEFAULT_DURATION = 16.0
DEFAULT_PARTITION_AT = 3.0
DEFAULT_HEAL_AT = 10.0
SETTLE_S = 3.0  # after the flow stops, how long replicas get to agree before the verdict
REQUEST_TIMEOUT_S = 2.0
FIX_COMP_ID = "GBX"  # the TargetCompID a FIX client sends to the demo's gateway
FIX_DURATION = 600.0  # default --duration with --fix: time to connect a client
DEFAULT_KILL_AT = 3.0  # --replace: when the last node is killed
REPLACE_DURATION = 45.0  # --replace: at most this long by default (it ends once the new node caught up)


def strong_mode_available() -> bool:
    """Strong mode needs the sequencer core *and* a node core that runs it (``StrongNodeCore`` in
    ``gossipbook.core.strong``); until both exist ``--mode strong`` is refused, never faked."""
    if importlib.util.find_spec("gossipbook.core.sequencer") is None:
        return False
    if importlib.util.find_spec("gossipbook.core.strong") is None:
        return False
    from ..core import strong

    return hasattr(strong, "StrongNodeCore")


@dataclass(frozen=True, slots=True)
class DemoOptions:
    nodes: int = 4
    seed: int = 1
    rate: float = 20.0  # orders per second into each node
    duration: float = DEFAULT_DURATION
    partition: bool = False
    split: tuple[tuple[str, ...], ...] = ()  # the sides; empty: first half | second half
    partition_at: float = DEFAULT_PARTITION_AT
    heal_at: float = DEFAULT_HEAL_AT
    mode: str = "eventual"
    grace: float = 1.5  # keep running this long after converging, then end early
    tick: float = 0.1  # snapshot period (the TUI's ~10 Hz)
    fix_port: int | None = None  # run a FIX gateway on 127.0.0.1:fix_port (0: any free port)
    fix_password: str = ""  # the FIX sessions' Password (554)
    replace: bool = False  # kill the last node for good, remove it, add a fresh one (demo/replace.py)
    kill_at: float = DEFAULT_KILL_AT

    @property
    def ids(self) -> list[str]:
        return [f"n{i + 1}" for i in range(self.nodes)]

    @property
    def victim(self) -> str:
        """``--replace``: the node killed for good and removed."""
        return self.ids[-1]

    @property
    def newcomer(self) -> str:
        """``--replace``: the fresh node added in its place (ids are never reused)."""
        return f"n{self.nodes + 1}"


def default_split(ids: list[str]) -> tuple[tuple[str, ...], ...]:
    half = len(ids) // 2
    return (tuple(ids[:half]), tuple(ids[half:]))


def parse_split(text: str, ids: list[str]) -> tuple[tuple[str, ...], ...]:
    """``"n1,n2|n3,n4"`` -> sides; every node on exactly one side, at least two sides."""
    sides = [tuple(s.strip() for s in part.split(",") if s.strip()) for part in text.split("|")]
    if len(sides) < 2 or any(not s for s in sides):
        raise UsageError(f"--split {text!r} must list at least two non-empty sides, e.g. 'n1,n2|n3,n4'")
    seen: list[str] = [n for s in sides for n in s]
    unknown = [n for n in seen if n not in ids]
    if unknown:
        raise UsageError(f"--split names unknown node(s) {', '.join(unknown)}; the nodes are {', '.join(ids)}")
    dup = sorted({n for n in seen if seen.count(n) > 1})
    if dup:
        raise UsageError(f"--split puts {', '.join(dup)} on more than one side")
    missing = [n for n in ids if n not in seen]
    if missing:
        raise UsageError(f"--split must place every node on a side; missing {', '.join(missing)}")
    return tuple(sides)


def make_options(*, nodes: int = 4, seed: int = 1, rate: float = 20.0, duration: float | None = None,
                 partition: bool = False, split: str | None = None, partition_at: float | None = None,
                 heal_at: float | None = None, mode: str = "eventual", fix_port: int | None = None,
                 replace: bool = False) -> DemoOptions:
    """Validate user choices into ``DemoOptions``; one clear ``UsageError`` line for each mistake.

    Timings left out scale with ``--duration`` (3 s and 10 s of a 16 s run by default).
    """
    if mode == "strong" and not strong_mode_available():
        raise UsageError("--mode strong is not available yet: this build has no sequencer "
                         "(strong consistency lands later); use --mode eventual")
    if mode not in ("eventual", "strong"):
        raise UsageError(f"--mode must be eventual or strong, not {mode!r}")
    if not 2 <= nodes <= MAX_NODES:
        raise UsageError(f"--nodes must be between 2 and {MAX_NODES}")
    if rate <= 0 or rate > 2000:
        raise UsageError("--rate must be more than 0 and at most 2000 orders/s per node")
    if duration is not None and duration <= 0:
        raise UsageError("--duration must be positive")
    if fix_port is not None and not 0 <= fix_port <= 65535:
        raise UsageError(f"--fix must be a TCP port from 1 to 65535 (0 picks a free one), not {fix_port}")
    if replace:
        if nodes < 3:
            raise UsageError("--replace needs --nodes 3 or more (a removal needs other members to report)")
        if partition or split or fix_port is not None or mode != "eventual":
            raise UsageError("--replace runs on its own: not with --partition, --split, --fix or --mode strong "
                             "(membership changes are eventual mode only)")
        if duration is not None and duration < DEFAULT_KILL_AT + 10:
            raise UsageError(f"--replace needs --duration of at least {DEFAULT_KILL_AT + 10:g} s (it ends by "
                             f"itself once the new node caught up)")
        duration = duration if duration is not None else REPLACE_DURATION
    dur = duration if duration is not None else max(DEFAULT_DURATION if fix_port is None else FIX_DURATION,
                                                    (heal_at or 0) + 6.0)
    scale = dur / DEFAULT_DURATION
    p_at = partition_at if partition_at is not None else round(DEFAULT_PARTITION_AT * min(scale, 1.0), 2)
    h_at = heal_at if heal_at is not None else max(round(DEFAULT_HEAL_AT * min(scale, 1.0), 2), p_at + 1.0)
    ids = [f"n{i + 1}" for i in range(nodes)]
    sides = parse_split(split, ids) if split else default_split(ids)
    if split and not partition:
        partition = True  # asking for a split means asking for a partition
    if partition:
        if p_at < 0:
            raise UsageError("--partition-at must not be negative")
        if h_at <= p_at:
            raise UsageError(f"--heal-at ({h_at:g} s) must come after --partition-at ({p_at:g} s)")
        if h_at >= dur:
            raise UsageError(f"--heal-at ({h_at:g} s) must come before the end of the run (--duration {dur:g} s)")
    return DemoOptions(nodes=nodes, seed=seed, rate=rate, duration=dur, partition=partition, split=sides,
                       partition_at=p_at, heal_at=h_at, mode=mode, fix_port=fix_port,
                       fix_password=secrets.token_urlsafe(12) if fix_port is not None else "", replace=replace)


def free_ports(n: int) -> list[int]:
    """``n`` distinct UDP ports on 127.0.0.1 that are free right now."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(s)
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def desks(n: int) -> list[str]:
    """The demo's trading accounts: one desk per node, each sending its orders to its own node, so
    desks trade with each other (an account never trades with itself: self-trade prevention)."""
    return [f"desk{i + 1}" for i in range(n)]


def fix_sessions(ids: list[str]) -> dict[str, tuple[str, str]]:
    """The demo gateway's FIX sessions: SenderCompID -> (account, node). FIX1 sends to the first
    node and FIX2 to the last, on opposite sides of the default partition."""
    return {"FIX1": ("fix1", ids[0]), "FIX2": ("fix2", ids[-1])}


def fix_client_settings(opts: DemoOptions) -> str:
    """QuickFIX-style session settings for a FIX client of the demo's gateway (what ``--fix`` prints)."""
    p = opts.fix_port
    lines = ["[DEFAULT]", "ConnectionType=initiator", "BeginString=FIX.4.4", f"TargetCompID={FIX_COMP_ID}",
             "SocketConnectHost=127.0.0.1",
             f"SocketConnectPort={p}" if p else "SocketConnectPort=<the port in the 'FIX gateway on' line>",
             "HeartBtInt=30", "StartTime=00:00:00", "EndTime=00:00:00", "UseDataDictionary=N"]
    for sender, (account, node) in fix_sessions(opts.ids).items():
        lines += ["", "[SESSION]", f"SenderCompID={sender}",
                  f"# Logon Password (554): {opts.fix_password}  (account {account}, orders go to {node})"]
    return "\n".join(lines)


def cluster_text(n: int, ports: list[int], mode: str, extra: tuple[str, ...] = ()) -> str:
    """A ``cluster.toml`` for the demo: fresh key, the given ports, fast failure detection;
    ``extra``: accounts besides the desks (the FIX sessions')."""
    it = iter(ports)
    accounts = {a: secrets.token_bytes(32) for a in [OPERATOR, *desks(n), *extra]}
    text = re.sub(r'^addr = "127\.0\.0\.1:\d+"$', lambda _m: f'addr = "127.0.0.1:{next(it)}"',
                  render(n, 7000, mode=mode, accounts=accounts), flags=re.M)
    text += "\n[membership]\n" + "".join(f"{k} = {v}\n" for k, v in FAST_MEMBERSHIP.items())
    return text


def _quiet_logger(nid: str) -> logging.Logger:
    """Node logs would tear the TUI: the demo shows events itself."""
    lg = logging.getLogger(f"gossipbook.demo.node.{nid}")
    lg.propagate = False
    if not lg.handlers:
        lg.addHandler(logging.NullHandler())
    return lg


class Scenario:
    """One demo run. ``await run(publish)``; ``snapshot()`` / ``result()`` at any time, even after
    a cancellation (they read what the nodes hold)."""

    def __init__(self, opts: DemoOptions) -> None:
        self.opts = opts
        self.ids = opts.ids
        self.groups = opts.split or default_split(self.ids)
        self.side = {nid: gi for gi, g in enumerate(self.groups) for nid in g}
        self.cfg: ClusterConfig | None = None
        self.config_path = ""
        self.runners: dict[str, NodeRunner] = {}
        self._scopes: dict[str, trio.CancelScope] = {}
        self.phase = "starting"
        self.t0: float | None = None
        self.partitioned = False
        self.was_partitioned = False
        self.heal_t: float | None = None
        self.converged_ms: float | None = None
        self.diverged = False
        self.max_distinct = 1
        self.final_equal: bool | None = None
        self.events: list[LogEvent] = []
        self._merge: list[tuple[str, str, set[str], int]] = []  # (kind, member, observers, index in events)
        self.timeline: list[tuple[float, int]] = []
        self.orders = {"sent": 0, "acked": 0, "rejected": 0, "errors": 0, "no_quorum": 0}
        self.orders_by_node: Counter[str] = Counter()
        self.revised_by_node: Counter[str] = Counter()
        self._revised_logged: Counter[str] = Counter()
        self._repaired_at_heal = 0
        self._stopping = False
        self._end_t: float | None = None
        self.fix_gateway: Any = None  # gossipbook.fix.gateway.Gateway with --fix
        self.fix_port: int | None = None  # the port it listens on
        self._fix_scope: trio.CancelScope | None = None
        self._nodes: trio.Nursery | None = None  # where node tasks run (a node added later too)
        #: the nodes the order flow sends to now (--replace: the killed one leaves, the new one joins)
        self.flow_ids: list[str] = list(self.ids)
        self.desk_of: dict[str, str] = dict(zip(self.ids, desks(len(self.ids)), strict=True))
        self.cfg_of: dict[str, ClusterConfig] = {}  # a node's config when not ``cfg`` (the added node)
        self.killed: str | None = None
        self.added: str | None = None
        self.replace = ReplaceFacts()
        self._replace_facts: dict[str, Any] | None = None  # frozen at the end of the run

    # ---- time and log ------------------------------------------------------------------------------
    def now(self) -> float:
        """Seconds since the scenario started (0 before)."""
        if self.t0 is None:
            return 0.0
        if self._end_t is not None:
            return self._end_t
        return trio.current_time() - self.t0

    def log(self, kind: str, text: str) -> None:
        self.events.append(LogEvent(round(self.now(), 2), kind, text))

    def _log_member(self, observer: str, member: str, state: str) -> None:
        """Observers of the same news within a second share one line ("n1, n2 see n3 suspect")."""
        t = self.now()
        for i in range(len(self._merge) - 1, max(-1, len(self._merge) - 9), -1):
            kind, m, obs, idx = self._merge[i]
            if kind == state and m == member and t - self.events[idx].t < 1.0:
                obs.add(observer)
                who = ", ".join(sorted(obs))
                self.events[idx] = replace(self.events[idx], text=f"{who} see{'s' if len(obs) == 1 else ''} "
                                                                   f"{member} {state}")
                return
        kind = state if state in ("suspect", "dead", "alive", "left") else "info"
        self.log(kind, f"{observer} sees {member} {state}")
        self._merge.append((state, member, {observer}, len(self.events) - 1))
        del self._merge[:-16]

    def _on_event(self, nid: str) -> Callable[[Any], None]:
        def handle(ev: Any) -> None:
            if self._stopping:
                return
            if isinstance(ev, MemberStateChanged):
                if ev.member != nid and ev.new != ev.old:
                    self._log_member(nid, ev.member, ev.new)
            elif isinstance(ev, TradeRevised):
                self.revised_by_node[nid] += 1
            elif isinstance(ev, Refuted):
                self.log("info", f"{nid} refuted {ev.origin}'s claim that it is {ev.state}")
            elif isinstance(ev, OpFenced):
                self.log("error", f"{nid} refused op {ev.op.op_id} from a removed member")
        return handle

    # ---- lifecycle ---------------------------------------------------------------------------------
    async def run(self, publish: Callable[[DemoSnapshot], None] | None = None) -> DemoResult:
        """Start the nodes, play the scenario, stop everything; the result of the run."""
        with tempfile.TemporaryDirectory(prefix="gossipbook-demo-") as tmp:
            try:
                async with trio.open_nursery() as nodes:
                    try:
                        await self._start(nodes, Path(tmp))
                        await self._play(publish)
                    finally:
                        await self._stop_fix()
                        self._stopping = True
                        nodes.cancel_scope.cancel()
            finally:
                self._stopping = True
                if self.t0 is not None and self._end_t is None:
                    self._end_t = trio.current_time() - self.t0
        return self.result()

    async def _serve(self, runner: NodeRunner, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                     ) -> None:
        with trio.CancelScope() as cs:
            self._scopes[runner.node_id] = cs
            await runner.serve(task_status=task_status)

    async def _start(self, nursery: trio.Nursery, tmp: Path) -> None:
        opts = self.opts
        self._nodes = nursery
        for attempt in range(3):
            ports = free_ports(opts.nodes)
            extra = tuple(a for a, _ in fix_sessions(self.ids).values()) if opts.fix_port is not None else ()
            text = cluster_text(opts.nodes, ports, opts.mode, extra)
            path = tmp / "cluster.toml"
            write_private(path, text)
            self.config_path = str(path)
            self.cfg = cfg = from_dict(tomllib.loads(text), str(path))
            self.runners = {nid: NodeRunner(cfg, nid, faults=FaultFilter(seed=opts.seed * 100 + i),
                                            seed=opts.seed * 1000 + i, log=_quiet_logger(nid))
                            for i, nid in enumerate(self.ids)}
            try:
                for nid, r in self.runners.items():
                    r.on_event = self._on_event(nid)
                    await nursery.start(self._serve, r)
                break
            except PortInUse:  # another process took a port between our probe and the bind
                for cs in self._scopes.values():
                    cs.cancel()
                self._scopes.clear()
                if attempt == 2:
                    raise
        # a node takes orders once it heard from a majority of its peers
        with trio.move_on_after(5.0):
            while not all(r.core.ready for r in self.runners.values()):
                await trio.sleep(0.02)
        self.t0 = trio.current_time()
        self.phase = "running"
        late = [n for n, r in self.runners.items() if not r.core.ready]
        if late:
            self.log("error", f"{', '.join(late)} not ready after 5 s (still syncing with peers); orders may be refused")
        self.log("info", f"{opts.nodes} nodes up on 127.0.0.1, {opts.rate:g} orders/s into each"
                 + (f"; partition at {opts.partition_at:g} s, heal at {opts.heal_at:g} s" if opts.partition else "")
                 + (f"; {opts.victim} dies at {opts.kill_at:g} s, then is replaced by {opts.newcomer}"
                    if opts.replace else ""))
        if opts.fix_port is not None:
            await self._start_fix(nursery, tmp)

    async def _start_fix(self, nursery: trio.Nursery, tmp: Path) -> None:
        """The FIX gateway in front of the demo's nodes (its log lines become demo events)."""
        from ..fix.config import from_dict as fix_from_dict
        from ..fix.gateway import Gateway

        sessions = fix_sessions(self.ids)
        fix = fix_from_dict({"gateway": {"comp_id": FIX_COMP_ID, "data_dir": str(tmp / "fix-data"), "fsync": "never"},
                             "sessions": [{"sender_comp_id": s, "password": self.opts.fix_password, "account": a,
                                           "node": n} for s, (a, n) in sessions.items()]})
        log = logging.Logger("gossipbook.demo.fix", logging.INFO)  # not registered: one per scenario
        log.addHandler(_EventHandler(self))
        assert self.cfg is not None
        self.fix_gateway = Gateway(fix, self.cfg, log=log)
        self.fix_port = await nursery.start(self._serve_fix, self.fix_gateway)
        self.log("info", f"FIX gateway on 127.0.0.1:{self.fix_port}: FIX 4.4, SenderCompID "
                 f"{' or '.join(sessions)}, TargetCompID {FIX_COMP_ID}, Password (554) {self.opts.fix_password}")

    async def _serve_fix(self, gw: Any, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        # shielded: a Ctrl-C cancels the nodes at once, but the gateway stays until ``_stop_fix``
        # has logged its sessions out (a FIX client then sees "gateway shutting down", not a cut)
        with trio.CancelScope(shield=True) as cs:
            self._fix_scope = cs
            await gw.serve("127.0.0.1", self.opts.fix_port or 0, task_status=task_status)

    async def _stop_fix(self) -> None:
        """Log the FIX sessions out ("gateway shutting down"), then stop the gateway."""
        if self.fix_gateway is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(3):
                await self.fix_gateway.shutdown(timeout=2)
        if self._fix_scope is not None:
            self._fix_scope.cancel()

    async def _play(self, publish: Callable[[DemoSnapshot], None] | None) -> None:
        async with trio.open_nursery() as outer:
            outer.start_soon(self._publisher, publish)
            async with trio.open_nursery() as flow:
                flow.start_soon(self._flow)
                await self._control()
                flow.cancel_scope.cancel()
            self.phase = "draining"
            self.log("info", "order flow stopped; letting the last ops settle")
            with trio.move_on_after(SETTLE_S):
                while not self.converged_now():
                    await trio.sleep(0.01)
            self.final_equal = self.converged_now()
            self._sample()
            if self.final_equal:
                self.log("converged", f"all {len(self.live_ids())} digests equal: {self._digest(self.ids[0])[:12]}")
            else:
                self.log("diverged", f"DIGESTS DIFFER after {SETTLE_S:g} s of quiet")
            self.phase = "done"
            if self.opts.replace:  # as the nodes hold it now: stopping them makes each one "leaving"
                self._replace_facts = facts_json(self)
            self._end_t = trio.current_time() - (self.t0 or 0.0)
            if publish is not None:
                publish(self.snapshot())
            outer.cancel_scope.cancel()

    async def _sleep_until_t(self, t: float) -> None:
        assert self.t0 is not None
        await trio.sleep_until(self.t0 + t)

    async def _control(self) -> None:
        """The script: cut, heal, wait for convergence (then a short grace), or run out the clock."""
        opts = self.opts
        if opts.replace:
            with trio.move_on_at((self.t0 or 0.0) + opts.duration):
                await play_replace(self)
                if self.replace.complete:
                    await trio.sleep(opts.grace)
                    return
            if not self.replace.complete:
                self.log("diverged", f"--replace did not complete within {opts.duration:g} s")
            return
        if not opts.partition:
            await self._sleep_until_t(opts.duration)
            return
        await self._sleep_until_t(opts.partition_at)
        self.cut()
        await self._sleep_until_t(opts.heal_at)
        self.heal()
        with trio.move_on_at((self.t0 or 0.0) + opts.duration):
            while not self.converged_now():
                await trio.sleep(0.002)
            assert self.heal_t is not None
            self.converged_ms = round((self.now() - self.heal_t) * 1000, 1)
            self.phase = "converged"
            self.log("converged", f"converged in {self.converged_ms:.0f} ms after the heal")
            await trio.sleep(opts.grace)
            if opts.fix_port is not None:  # a FIX client is trading: run out the clock
                await self._sleep_until_t(opts.duration)
            return
        self.log("diverged", f"not converged {opts.duration - opts.heal_at:.1f} s after the heal")

    # ---- faults ------------------------------------------------------------------------------------
    def kill(self, nid: str) -> None:
        """Kill ``nid`` for good, like a SIGKILL: everything it would still send (its goodbye
        included) is dropped, its task is cancelled (socket closed), the flow stops sending to it."""
        r = self.runners[nid]
        assert r.faults is not None
        r.faults.blocked.update(x.entry.addr for x in self.runners.values())
        self.killed = nid
        if nid in self.flow_ids:
            self.flow_ids.remove(nid)
        self._scopes[nid].cancel()

    async def start_node(self, cfg: ClusterConfig, nid: str) -> None:
        """Start one more node, from its own ``cfg`` (the file after ``cluster add-node --write``)."""
        assert self._nodes is not None
        i = len(self.runners)
        r = NodeRunner(cfg, nid, faults=FaultFilter(seed=self.opts.seed * 100 + i), seed=self.opts.seed * 1000 + i,
                       log=_quiet_logger(nid))
        r.on_event = self._on_event(nid)
        self.cfg_of[nid] = cfg
        self.runners[nid] = r
        self.added = nid
        await self._nodes.start(self._serve, r)

    def live_ids(self) -> list[str]:
        """The nodes running now (every started one but a killed one)."""
        return [n for n in self.runners if n != self.killed]

    def cut(self) -> None:
        """Partition: every node stops sending to the nodes on other sides (both directions)."""
        cfg = self.cfg
        assert cfg is not None
        for a, ra in self.runners.items():
            assert ra.faults is not None
            for b in self.ids:
                if self.side[a] != self.side[b]:
                    ra.faults.blocked.add(cfg.node(b).addr)
        self.partitioned = self.was_partitioned = True
        self.phase = "partitioned"
        self.log("partition", "partition: " + " | ".join(" ".join(g) for g in self.groups))

    def heal(self) -> None:
        for r in self.runners.values():
            assert r.faults is not None
            r.faults.blocked.clear()
        self.partitioned = False
        self.heal_t = self.now()
        self._repaired_at_heal = self._counter_sum("repair_ops")
        self.phase = "healed"
        self.log("heal", "heal: every link restored")

    def blocked_links(self) -> frozenset[tuple[str, str]]:
        cfg = self.cfg
        if cfg is None:
            return frozenset()
        by_addr = {r.entry.addr: n for n, r in self.runners.items()}
        return frozenset((a, by_addr[addr]) for a, r in self.runners.items() if r.faults and a != self.killed
                         for addr in r.faults.blocked if addr in by_addr)

    # ---- order flow --------------------------------------------------------------------------------
    async def _flow(self) -> None:
        cfg = self.cfg
        assert cfg is not None
        inst = cfg.instruments[0]
        flow = OrderFlow(random.Random(self.opts.seed + 1))
        flow.mid = ((inst.min_ticks + inst.max_ticks) // 2 if inst.max_ticks - inst.min_ticks < 20_000
                    else inst.price_to_ticks("100"))
        open_orders: dict[str, list[tuple[str, int]]] = {nid: [] for nid in self.ids}
        limiter = trio.CapacityLimiter(64)
        interval = 1.0 / (self.opts.rate * len(self.ids))  # the same total rate whichever nodes take it
        async with contextlib.AsyncExitStack() as stack:
            # one desk per node (its own account and client socket): desks trade with each other
            desk_of = {nid: await stack.enter_async_context(Client(cfg, retry_s=0.2, account=d))
                       for nid, d in zip(self.ids, desks(len(self.ids)), strict=True)}
            late = await stack.enter_async_context(contextlib.AsyncExitStack())  # a node added later
            n = await stack.enter_async_context(trio.open_nursery())  # closed before the clients
            start, i = trio.current_time(), 0
            while True:
                target = start + i * interval
                if trio.current_time() - target > 1.0:  # fell far behind (a stall): do not burst
                    start, i = trio.current_time(), 0
                    target = start
                await trio.sleep_until(target)
                nid = self.flow_ids[i % len(self.flow_ids)]
                i += 1
                if nid not in desk_of:  # --replace: the new node, with the killed node's desk
                    desk_of[nid] = await late.enter_async_context(
                        Client(self.cfg_of.get(nid, cfg), retry_s=0.2, account=self.desk_of[nid]))
                mine = open_orders.setdefault(nid, [])
                o = flow.next(mine)
                if o.kind in (CANCEL, AMEND):
                    mine[:] = [x for x in mine if x[0] != o.order_id]
                price = o.price if o.kind != NEW or o.tif != 3 else 0
                if o.kind != CANCEL and o.tif != 3:
                    price = min(max(price, inst.min_ticks), inst.max_ticks)
                c = desk_of[nid]
                msg = ClientSubmit(c.new_req(), o.kind, inst.symbol, o.order_id, o.side, price, o.qty,
                                   o.tif if o.kind == NEW else 0, 0, int(REQUEST_TIMEOUT_S * 1000))
                self.orders["sent"] += 1
                self.orders_by_node[nid] += 1
                token = object()
                await limiter.acquire_on_behalf_of(token)
                n.start_soon(self._one, c, nid, msg, mine, limiter, token)

    async def _one(self, c: Client, nid: str, msg: ClientSubmit, mine: list[tuple[str, int]],
                   limiter: trio.CapacityLimiter, token: object) -> None:
        try:
            rep = await c.request(nid, msg, msg.req, REQUEST_TIMEOUT_S)
        except Unreachable:
            self.orders["errors"] += 1
            return
        finally:
            limiter.release_on_behalf_of(token)
        if rep.code == 0:
            self.orders["acked"] += 1
            if msg.kind == NEW and msg.tif == 0 and sum(t[2] for t in rep.trades) < msg.qty:
                mine.append((rep.order_id, msg.side))
                del mine[:-200]
        else:
            self.orders["rejected"] += 1
            if rep.code == E_NO_QUORUM:  # strong mode's minority side refusing instead of diverging
                self.orders["no_quorum"] += 1

    # ---- observation -------------------------------------------------------------------------------
    def _digest(self, nid: str) -> str:
        return self.runners[nid].core.replica.digest()

    def converged_now(self) -> bool:
        """Same op-set (version vector) and same digest on every replica, right now."""
        seen = {(r.core.replica.digest(), tuple(sorted(r.core.replica.vv.items())))
                for n, r in self.runners.items() if n != self.killed}
        return len(seen) == 1

    def _counter_sum(self, key: str) -> int:
        return sum(r.core.gossip.counters.get(key, 0) for r in self.runners.values())

    def _sample(self) -> None:
        """One timeline point; divergence and revised-trade news for the log."""
        if self.t0 is None or not self.runners:
            return
        distinct = len({self._digest(n) for n in self.live_ids()})
        t = round(self.now(), 2)
        self.timeline.append((t, distinct))
        del self.timeline[:-4000]
        self.max_distinct = max(self.max_distinct, distinct)
        if self.partitioned and distinct > 1 and not self.diverged:
            sides = {self.side[n]: self._digest(n) for n in self.ids}
            if len(set(sides.values())) > 1:
                self.diverged = True
                self.log("diverged", f"replicas diverged: {distinct} distinct digests")
        for nid in self.runners:
            new = self.revised_by_node[nid] - self._revised_logged[nid]
            if new > 0:
                self._revised_logged[nid] = self.revised_by_node[nid]
                self.log("revised", f"{nid} replayed: {new} trade{'s' if new != 1 else ''} revised")

    async def _publisher(self, publish: Callable[[DemoSnapshot], None] | None) -> None:
        period = self.opts.tick
        nxt = trio.current_time()
        while True:
            self._sample()
            if publish is not None:
                publish(self.snapshot())
            nxt += period
            now = trio.current_time()
            if nxt < now:
                nxt = now + period / 2
            await trio.sleep_until(nxt)

    def _node_view(self, nid: str, union: dict[str, int], symbol: str, roles: dict[str, str] | None = None
                   ) -> NodeView:
        """``roles``: each node's role as the cluster holds it (--replace: a killed node cannot say
        it was removed); else each node's own."""
        r = self.runners[nid]
        st = r.core.status()
        vv = st["version_vector"]
        lag = sum(max(0, s - vv.get(o, 0)) for o, s in union.items())
        wm = st["watermark"][0]
        age = max(0.0, (r.clock() - wm) / 1e6) if wm else None
        ests = [p for p in st["peers"].values() if p]
        offset = max((p["offset_us"] for p in ests), key=abs) if ests else None
        rtt = statistics.median(p["rtt_us"] for p in ests) if ests else None
        book = r.core.replica.books.get(symbol)
        depth = book.depth(5) if book is not None else None
        return NodeView(
            id=nid, port=r.entry.port, group=self.side.get(nid) if self.opts.partition else None,
            ready=st["ready"], accepting=st["accepting"], clock_in_sync=st["clock_in_sync"],
            digest=st["digest"], ops=st["ops"], lag=lag, watermark_age_ms=age,
            trades_final=st["trades_final"], trades_provisional=st["trades_provisional"],
            revised=self.revised_by_node[nid], members=dict(st["members"]), clock_offset_us=offset,
            rtt_us=rtt, **{**clock_fields(st), **({"role": roles[nid]} if roles and nid in roles else {})},
            bids=tuple((lv.price, lv.qty) for lv in depth.bids) if depth else (),
            asks=tuple((lv.price, lv.qty) for lv in depth.asks) if depth else (),
            orders=self.orders_by_node[nid], stopped=self._stopping, down=nid == self.killed)

    def snapshot(self) -> DemoSnapshot:
        opts = self.opts
        cfg = self.cfg
        union: dict[str, int] = {}
        for r in (self.runners[n] for n in self.live_ids()):
            for o, s in r.core.replica.vv.items():
                if s > union.get(o, 0):
                    union[o] = s
        inst = cfg.instruments[0] if cfg else None
        symbol = inst.symbol if inst else ""
        roles = self.cluster_roles() if opts.replace else None
        views = tuple(self._node_view(n, union, symbol, roles) for n in self.runners) if self.runners else ()
        trades = max((r.core.replica.trade_count for r in self.runners.values()), default=0)
        return DemoSnapshot(
            t=round(self.now(), 2), duration=opts.duration, phase=self.phase, mode=opts.mode, seed=opts.seed,
            rate=opts.rate, nodes=views, groups=self.groups if opts.partition else None,
            partitioned=self.partitioned, partition_at=opts.partition_at if opts.partition else None,
            heal_at=opts.heal_at if opts.partition else None, blocked=self.blocked_links(),
            events=tuple(self.events[-60:]), timeline=tuple(self.timeline), converged_ms=self.converged_ms,
            orders=dict(self.orders), trades=trades, revised=sum(self.revised_by_node.values()),
            ops_pushed=self._counter_sum("pushed_ops"), ops_repaired=self._counter_sum("repair_ops"),
            tick_size=inst.tick_size if inst else DemoSnapshot.tick_size, symbol=symbol,
            config_path=self.config_path,
            result=self.result(interrupted=self.phase == "interrupted") if self.phase in ("done", "interrupted")
            else None)

    def cluster_roles(self) -> dict[str, str]:
        """Every member's role in the newest configuration a running node holds."""
        live = [self.runners[n].core for n in self.live_ids()]
        if not live:
            return {}
        c = max(live, key=lambda c: c.replica.config.epoch)
        return c.replica.config.roles(c.membership.states(), c.replica.heard())

    def result(self, interrupted: bool = False) -> DemoResult:
        rs = {n: self.runners[n] for n in self.live_ids()}
        digests = {n: r.core.replica.digest() for n, r in rs.items()}
        vvs = {tuple(sorted(r.core.replica.vv.items())) for r in rs.values()}
        equal = len(set(digests.values())) == 1 and len(vvs) == 1
        converged = (equal and (not self.was_partitioned or self.converged_ms is not None) and not interrupted
                     and (not self.opts.replace or self.replace.complete))
        dgrams = sum(r.endpoint.counters["dgrams_out"] for r in rs.values() if r.endpoint is not None)
        repaired = self._counter_sum("repair_ops")
        return DemoResult(
            nodes=len(rs), node_ids=list(rs), mode=self.opts.mode, seed=self.opts.seed,
            partitioned=self.was_partitioned, split=[list(g) for g in self.groups] if self.opts.partition else None,
            diverged_during_partition=self.diverged, max_distinct_digests=self.max_distinct, converged=converged,
            convergence_ms_after_heal=self.converged_ms, digests=digests,
            ops={n: r.core.replica.op_count for n, r in rs.items()}, orders=dict(self.orders),
            trades=max((r.core.replica.trade_count for r in rs.values()), default=0),
            trades_final=min((r.core.replica.trades_final() for r in rs.values()), default=0),
            revised_trades=sum(self.revised_by_node.values()),
            revised_trades_by_node={n: self.revised_by_node[n] for n in self.runners},
            ops_exchanged={"pushed": self._counter_sum("pushed_ops"), "repaired": repaired,
                           "repaired_after_heal": repaired - self._repaired_at_heal if self.heal_t is not None else 0,
                           "datagrams": dgrams},
            elapsed_s=round(self.now(), 2), interrupted=interrupted,
            replaced=(self._replace_facts or facts_json(self)) if self.opts.replace and self.runners else None)

    def mark_interrupted(self) -> None:
        self.phase = "interrupted"
        self._stopping = True
        self.log("error", "interrupted (Ctrl-C): nodes stopped")


class _EventHandler(logging.Handler):
    """The FIX gateway's log lines (logons, logouts, disconnect reasons) as demo events."""

    def __init__(self, sc: Scenario) -> None:
        super().__init__(logging.INFO)
        self.sc = sc

    def emit(self, record: logging.LogRecord) -> None:
        if not self.sc._stopping:
            self.sc.log("error" if record.levelno >= logging.WARNING else "info", f"FIX: {record.getMessage()}")


async def drive(sc: Scenario, publish: Callable[[DemoSnapshot], None] | None = None) -> DemoResult:
    """Run ``sc`` until it ends or SIGINT / SIGTERM arrives; either way every node is stopped and a
    result comes back (``interrupted=True`` after a signal). Signals stay caught until the nodes are
    down, so a second Ctrl-C cannot tear the shutdown."""
    result: DemoResult | None = None
    interrupted = False
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as sigs:
        async with trio.open_nursery() as n:
            async def watch() -> None:
                nonlocal interrupted
                async for _ in sigs:
                    if not interrupted:
                        interrupted = True
                        n.cancel_scope.cancel()
            n.start_soon(watch)
            result = await sc.run(publish)
            n.cancel_scope.cancel()
    if interrupted or result is None:
        sc.mark_interrupted()
        result = sc.result(interrupted=True)
        if publish is not None:
            publish(sc.snapshot())
    return result


def run_headless(opts: DemoOptions, on_event: Callable[[LogEvent], None] | None = None) -> DemoResult:
    """Run the scenario with no view (``--headless``); ``on_event`` sees each log line once."""
    sc = Scenario(opts)
    shown = 0

    def publish(_snap: DemoSnapshot) -> None:
        nonlocal shown
        if on_event is not None:
            for ev in sc.events[shown:]:
                on_event(ev)
            shown = len(sc.events)

    return trio.run(drive, sc, publish)


__all__ = ["DemoOptions", "Scenario", "drive", "fix_client_settings", "make_options", "parse_split",
           "run_headless", "strong_mode_available"]
