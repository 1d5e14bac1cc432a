"""The FIX gateway's trio shell: one TCP acceptor, many sessions, one ``gossipbook.Client`` per
trading session's account.

Theory of operation: every session in ``fix.toml`` exists from the start, connected or not: its pure
``Session`` (loaded from the store), its ``App`` and its ``Client``. A connection is routed by the
SenderCompID/TargetCompID of its first message, which must be a Logon; a session has at most one
connection (a second Logon for a live session is closed unanswered and counted). Per session, a
worker carries out the application messages with the library one at a time in arrival order
(orders, cancels, replaces, mass cancels), a watcher turns ``watch_my_trades`` into fills,
corrections, busts and finality, and a flusher drains the machines when those two have made
output; a connection's reader and timer drain them directly (that is the reader's backpressure).
``flush`` drains in the order the session layer requires: act on events (application messages go
to the worker's queue), persist (a group commit, fsynced), then send.

Rules that hold:
- Execution reports made while the client is away are stored with their MsgSeqNum and reach it
  through the ResendRequest its next Logon leads to.
- Every queue a client can fill is bounded and counted: connections (``max_connections``), the
  per-session queue of application messages (``app_queue``: the reader stops reading while it is
  full, so a fast client is slowed by TCP; "gateway busy" answers are the last resort), the
  session layer's own bounds, and sends (a client that does not read for ``SEND_TIMEOUT_S`` is
  disconnected).
- Shutdown is a Logout on every live session, then the connections close (``shutdown``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from contextlib import AsyncExitStack
from typing import Any

import trio

from ..api import errors as api_errors
from ..api.client import Client
from ..config import ClusterConfig, ConfigError
from ..config import load as load_cluster
from ..core.errors import ClockOutOfSync, GossipbookError, UnknownInstrument, UnknownOrder
from ..core.instrument import Instrument
from . import tags as T
from .app import App, Cancel, Command, Out, Place, Reject, Replace
from .codec import Fatal, Framer, Garbled, ParseError, parse
from .config import FixConfig, FixSession
from .session import AppMessage, Disconnect, LoggedOn, Session, SessionConfig, State
from .store import Store

SEND_TIMEOUT_S = 10.0
READ_CHUNK = 65536
#: the fewest bytes a message that reaches a worker can have (header with SendingTime, trailer)
MIN_APP_MESSAGE = 60


def now_ns() -> int:
    return time.time_ns()


def ord_rej_reason(e: BaseException) -> int:
    """The OrdRejReason (103) for a library error."""
    if isinstance(e, UnknownInstrument):
        return T.ORR_UNKNOWN_SYMBOL
    if isinstance(e, ClockOutOfSync | api_errors.ClockUncertain | api_errors.NotReady | api_errors.NoQuorum
                  | api_errors.StorageUnavailable):
        return T.ORR_EXCHANGE_CLOSED
    if isinstance(e, api_errors.RateLimited):
        return T.ORR_EXCEEDS_LIMIT
    if isinstance(e, UnknownOrder):
        return T.ORR_UNKNOWN_ORDER
    return T.ORR_OTHER


def refusal_text(e: BaseException) -> str:
    """The Text (58) for a library error: what the refusal means for the FIX client, then the node's words."""
    if isinstance(e, api_errors.ClockUncertain):
        return (f"venue closed to new orders and replaces for now: the node cannot bound its clock error "
                f"({e}); cancels still work, retry shortly")
    if isinstance(e, ClockOutOfSync):
        return f"venue closed to new orders for now: the node's clock is out of sync with its peers ({e}); retry shortly"
    return str(e)


class Runtime:
    """One configured session: its machines, its client and its current connection (if any)."""

    def __init__(self, cfg: FixSession, session: Session, app: App | None, client_cfg: ClusterConfig | None) -> None:
        self.cfg = cfg
        self.key = cfg.key
        self.session = session
        self.app = app
        self.client_cfg = client_cfg
        self.client: Client | None = None
        self.stream: trio.SocketStream | None = None
        self.lock = trio.Lock()
        self.closed = trio.Event()
        self.closed.set()
        self.drop_copies: list[Runtime] = []
        # application messages for the worker, each with its request id (a NewOrderSingle's; else "")
        self.send_cmd: trio.MemorySendChannel[tuple[AppMessage, str]] | None = None
        self.recv_cmd: trio.MemoryReceiveChannel[tuple[AppMessage, str]] | None = None
        self.wake = trio.Event()  # set: the flusher has output of this session to persist and send
        self.room = trio.Event()  # set by the worker when its queue is at most half full again

    def kick(self) -> None:
        """Ask the session's flusher to persist and send what the machines made (without waiting)."""
        self.wake.set()


class _Generation:
    """One group commit: the batches that ride on it and its outcome."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.error: BaseException | None = None


class Gateway:
    """A FIX 4.4 acceptor in front of a gossipbook cluster. ``await nursery.start(gw.serve, host,
    port)`` returns the port it listens on; ``await gw.shutdown()`` logs every session out."""

    COUNTERS = ("connections", "refused_max_connections", "unknown_session", "second_logon", "logon_timeout",
                "bad_first_message", "send_timeouts", "app_queue_full", "watch_restarts", "commits", "logons")

    def __init__(self, fix: FixConfig, cluster: ClusterConfig | str | None = None, *,
                 log: logging.Logger | None = None) -> None:
        self.fix = fix
        self.log = log or logging.getLogger("gossipbook.fix")
        self.limits = fix.limits
        base = cluster if isinstance(cluster, ClusterConfig) or cluster is None else load_cluster(cluster)
        self.counters: dict[str, int] = dict.fromkeys(self.COUNTERS, 0)
        self.runtimes: dict[str, Runtime] = {}
        self._store: Store | None = None
        self._gen = _Generation()
        self._pending: list[Any] = []
        self._committing = False
        self._closing = False
        self._live = 0
        self.port: int | None = None
        cache: dict[str, ClusterConfig] = {}
        for s in fix.sessions:
            ccfg: ClusterConfig | None = None
            if s.account is not None:
                if s.client_file is not None:
                    ccfg = cache.get(s.client_file) or load_cluster(s.client_file)
                    cache[s.client_file] = ccfg
                elif base is None:
                    raise ConfigError(f"{fix.path}: session {s.key} has no client_file, and no cluster config "
                                      f"was given (-c) to take account {s.account}'s credential from")
                else:
                    ccfg = base
                ccfg.client_credential(s.account)  # no credential for the account: one clear error now
                node = s.node or fix.node
                if node is not None:
                    ccfg.node(node)
            self.runtimes[s.key] = Runtime(s, Session(self._session_cfg(s)), None, ccfg)
        for rt in self.runtimes.values():
            for acct in rt.cfg.drop_copy:
                for other in self.runtimes.values():
                    if other.cfg.account == acct:
                        other.drop_copies.append(rt)

    def _session_cfg(self, s: FixSession) -> SessionConfig:
        lim = self.limits
        return SessionConfig(
            comp_id=s.target_comp_id, peer_comp_id=s.sender_comp_id, password=s.password,
            heartbeat_min_s=lim["heartbeat_min_s"], heartbeat_max_s=lim["heartbeat_max_s"],
            app_types=T.APP_TYPES_IN if s.account is not None else frozenset(),
            max_message=lim["max_message_bytes"], max_stored=lim["max_stored"], max_queued=lim["max_queued"],
            max_out_bytes=lim["max_out_bytes"], max_resend_batch=lim["max_resend_batch"],
            max_latency_s=lim["max_latency_s"], logon_timeout_s=float(lim["logon_timeout_s"]))

    # ---- serving ----------------------------------------------------------------------------------
    async def serve(self, host: str = "127.0.0.1", port: int = 0, *,
                    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled; ``task_status.started(port)`` once the socket listens."""
        self._store = store = Store.open(self.fix.data_dir, fsync=self.fix.fsync)
        try:
            for rt in self.runtimes.values():
                rt.session = Session(self._session_cfg(rt.cfg), store.load_session(rt.key))
                if rt.cfg.account is not None and rt.client_cfg is not None:
                    insts: dict[str, Instrument] = {i.symbol: i for i in rt.client_cfg.instruments}
                    rt.app = App(rt.cfg.account, insts, max_orders=self.limits["max_orders"],
                                 max_fills=self.limits["max_fills"])
                    rt.app.restore(*store.load_app(rt.key))
            async with AsyncExitStack() as stack:
                for rt in self.runtimes.values():
                    if rt.app is not None and rt.client_cfg is not None:
                        rt.client = await stack.enter_async_context(
                            Client(rt.client_cfg, account=rt.cfg.account, node=rt.cfg.node or self.fix.node))
                        rt.send_cmd, rt.recv_cmd = trio.open_memory_channel(self.limits["app_queue"])
                try:
                    listeners = await trio.open_tcp_listeners(port, host=host)
                except OSError as e:
                    raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
                async with trio.open_nursery() as nursery:
                    for rt in self.runtimes.values():
                        nursery.start_soon(self._flusher, rt)
                        if rt.client is not None:
                            nursery.start_soon(self._worker, rt)
                            nursery.start_soon(self._watch, rt)
                    nursery.start_soon(self._housekeeping)
                    self.port = listeners[0].socket.getsockname()[1]
                    nursery.start_soon(self._serve_listeners, listeners)
                    self.log.info("FIX gateway listening on %s:%s with %d session(s)", host, self.port,
                                  len(self.runtimes))
                    task_status.started(self.port)
        finally:
            self._store = None
            store.close()

    async def _serve_listeners(self, listeners: list[trio.SocketListener]) -> None:
        await trio.serve_listeners(self._handle, listeners)

    async def shutdown(self, timeout: float = 5.0) -> None:
        """Log every live session out (FIX Logout, "gateway shutting down") and wait up to
        ``timeout`` seconds for the connections to close; new Logons are refused from now on."""
        self._closing = True
        for rt in self.runtimes.values():
            if rt.stream is not None and rt.session.state is State.ACTIVE:
                rt.session.logout("gateway shutting down", now_ns())
                await self.flush(rt)
        with trio.move_on_after(timeout):
            for rt in self.runtimes.values():
                await rt.closed.wait()

    def status(self) -> dict[str, Any]:
        """Counters of the gateway and of every session (session layer and application layer)."""
        return {"gateway": dict(self.counters), "sessions": {
            k: {"state": rt.session.state.value, "next_in": rt.session.next_in, "next_out": rt.session.next_out,
                "session": dict(rt.session.counters), "app": dict(rt.app.counters) if rt.app else {}}
            for k, rt in self.runtimes.items()}}

    # ---- connections --------------------------------------------------------------------------------
    async def _handle(self, stream: trio.SocketStream) -> None:
        if self._live >= self.limits["max_connections"] or self._closing:
            self.counters["refused_max_connections"] += 1
            await stream.aclose()
            return
        self._live += 1
        self.counters["connections"] += 1
        try:
            await self._connection(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self._live -= 1
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _first_frame(self, stream: trio.SocketStream, framer: Framer) -> bytes | None:
        with trio.move_on_after(self.limits["logon_timeout_s"]):
            while True:
                data = await stream.receive_some(READ_CHUNK)
                if not data:
                    return None
                framer.feed(data)
                f = framer.next()
                if f is None:
                    continue
                if isinstance(f, Garbled | Fatal):
                    self.counters["bad_first_message"] += 1
                    return None
                return f
        self.counters["logon_timeout"] += 1
        return None

    async def _connection(self, stream: trio.SocketStream) -> None:
        framer = Framer(self.limits["max_message_bytes"])
        frame = await self._first_frame(stream, framer)
        if frame is None:
            return
        msg = parse(frame)
        if isinstance(msg, ParseError) or msg.msg_type != T.MT_LOGON:
            self.counters["bad_first_message"] += 1
            return
        sender, target = msg.get(T.SenderCompID), msg.get(T.TargetCompID)
        rt = self.runtimes.get(f"{(sender or b'').decode()}->{(target or b'').decode()}")
        if rt is None:
            self.counters["unknown_session"] += 1
            self.log.warning("Logon for an unknown session %r->%r: closed", sender, target)
            return
        if rt.stream is not None or rt.session.state is not State.DISCONNECTED or self._closing:
            self.counters["second_logon"] += 1
            self.log.warning("session %s: a second Logon while it is connected: closed", rt.key)
            return
        rt.stream = stream
        rt.closed = trio.Event()
        try:
            rt.session.connect(now_ns())
            rt.session.receive_data(frame + framer.remaining(), now_ns())
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._timers, rt, stream)
                await self.flush(rt)
                try:
                    while rt.stream is stream:
                        data = await stream.receive_some(READ_CHUNK)
                        if not data:
                            break
                        await self._feed(rt, data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
                nursery.cancel_scope.cancel()
        finally:
            if rt.stream is stream:
                rt.stream = None
            rt.session.connection_lost(now_ns())
            with trio.CancelScope(shield=True):
                await self.flush(rt)
            rt.closed.set()

    async def _feed(self, rt: Runtime, data: bytes) -> None:
        """Hand read bytes to the session in slices that cannot bring more application messages than
        the worker's queue has room for: a client that sends faster than its orders are carried out
        is slowed down (the gateway stops reading, TCP does the rest), not refused."""
        if rt.send_cmd is None:
            rt.session.receive_data(data, now_ns())
            await self.flush(rt)
            return
        cap = self.limits["app_queue"]
        pos = 0
        while pos < len(data) and rt.stream is not None:
            while (free := cap - rt.send_cmd.statistics().current_buffer_used) < 2:
                rt.room = trio.Event()
                await rt.room.wait()
            n = (free - 1) * MIN_APP_MESSAGE  # one message may already be partly in the framer
            rt.session.receive_data(data[pos:pos + n], now_ns())
            pos += n
            await self.flush(rt)

    async def _timers(self, rt: Runtime, stream: trio.SocketStream) -> None:
        while rt.stream is stream:
            t = rt.session.get_timer()
            delay = 0.25 if t is None else min(0.25, max(0.0, (t - now_ns()) / 1e9))
            await trio.sleep(delay)
            if rt.stream is not stream:
                return
            rt.session.handle_timer(now_ns())
            await self.flush(rt)

    # ---- the one place machines are drained ---------------------------------------------------------
    async def flush(self, rt: Runtime) -> None:
        """Persist, send, act: until the session has nothing more to say."""
        async with rt.lock:
            for _ in range(1000):  # each round drains what the previous one made; it ends long before
                events = rt.session.events()
                close: str | None = None
                arrived: list[tuple[AppMessage, str]] = []
                for ev in events:
                    if isinstance(ev, AppMessage):
                        new = rt.app is not None and ev.msg.msg_type == T.MT_NEW_ORDER_SINGLE
                        arrived.append((ev, rt.app.intend(ev.msg, now_ns()) if rt.app is not None and new else ""))
                    elif isinstance(ev, Disconnect):
                        close = ev.reason
                        self.log.info("session %s: disconnect: %s", rt.key, ev.reason)
                    elif isinstance(ev, LoggedOn):
                        self.counters["logons"] += 1
                        self.log.info("session %s: logged on (HeartBtInt %d s)", rt.key, ev.heartbeat_s)
                records = rt.session.journal()
                app_records = rt.app.journal() if rt.app is not None else []
                if records or app_records:
                    await self._commit([(rt.key, records, app_records)])
                for item in arrived:  # after the commit: a NewOrderSingle's intent is on disk before it goes out
                    self._on_app_message(rt, item)
                data = rt.session.data_to_send()
                stream = rt.stream
                if data and stream is not None:
                    with trio.move_on_after(SEND_TIMEOUT_S) as cs:
                        try:
                            await stream.send_all(data)
                        except (trio.BrokenResourceError, trio.ClosedResourceError):
                            close = close or "connection lost"
                    if cs.cancelled_caught:
                        self.counters["send_timeouts"] += 1
                        close = f"the client did not read for {SEND_TIMEOUT_S:g} s"
                if close is not None and stream is not None:
                    rt.stream = None
                    rt.session.connection_lost(now_ns())
                    with trio.CancelScope(shield=True):
                        await stream.aclose()
                if not (events or data or records or app_records):
                    return

    async def _flusher(self, rt: Runtime) -> None:
        """Flushes a session when its worker or watcher made output (they only ``kick``), so a
        commit's fsync overlaps the next order's round trip and several reports share one commit."""
        while True:
            await rt.wake.wait()
            rt.wake = trio.Event()
            await self.flush(rt)

    async def _commit(self, batches: list[Any]) -> None:
        """Group commit: batches that arrive while a commit runs go together in the next one (one
        fsync for all sessions); returns once this batch is on disk."""
        store = self._store
        if store is None:
            return
        self._pending += batches
        gen = self._gen
        if self._committing:
            await gen.done.wait()
            if gen.error is not None:
                raise gen.error
            return
        self._committing = True
        try:
            while self._pending:
                todo, self._pending = self._pending, []
                cur, self._gen = self._gen, _Generation()
                try:
                    if self.fix.fsync == "always":  # an fsync blocks: keep it off the event loop
                        await trio.to_thread.run_sync(store.commit, todo)
                    else:  # no fsync: a commit is a few page writes, cheaper than a thread hop
                        store.commit(todo)
                        await trio.lowlevel.checkpoint()
                except BaseException as e:
                    cur.error = e
                    raise
                finally:
                    cur.done.set()
                self.counters["commits"] += 1
        finally:
            self._committing = False

    # ---- application --------------------------------------------------------------------------------
    def _on_app_message(self, rt: Runtime, item: tuple[AppMessage, str]) -> None:
        """Hand an application message to the session's worker (in arrival order); a full queue is
        answered at once and counted."""
        if rt.app is None or rt.send_cmd is None:
            return  # a drop copy accepts no application types: the session layer rejected it
        try:
            rt.send_cmd.send_nowait(item)
        except trio.WouldBlock:
            self.counters["app_queue_full"] += 1
            res = self._apply(rt, *item)
            if res is not None:
                self._emit(rt, self._failed(rt, res, None, f"gateway busy: more than {self.limits['app_queue']} "
                                                           "requests are waiting on this session"))

    def _apply(self, rt: Runtime, ev: AppMessage, req: str = "") -> Command | None:
        """Run the application layer on a message: its immediate answer is emitted here, a command
        is returned for the caller to carry out."""
        assert rt.app is not None
        now = now_ns()
        res = rt.app.on_message(ev.msg, now, req)
        if isinstance(res, Reject):
            rt.session.reject(ev.seq, ev.msg.msg_type, res.tag, res.reason, res.text, now)
            return None
        if isinstance(res, list):
            self._emit(rt, res)
            return None
        return res

    def _emit(self, rt: Runtime, outs: Iterable[Out]) -> None:
        now = now_ns()
        for o in outs:
            rt.session.send_app(o.msg_type, o.fields, now)
            if o.msg_type == T.MT_EXECUTION_REPORT:
                for dc in rt.drop_copies:
                    dc.session.send_app(o.msg_type, o.fields, now)
                    dc.kick()

    def _failed(self, rt: Runtime, cmd: Command, e: BaseException | None, text: str) -> list[Out]:
        assert rt.app is not None
        now = now_ns()
        if isinstance(cmd, Place):
            return rt.app.on_place_failed(cmd, ord_rej_reason(e) if e is not None else T.ORR_OTHER, text, now)
        if isinstance(cmd, Cancel | Replace):
            reason = T.CRR_TOO_LATE if isinstance(e, UnknownOrder) else T.CRR_OTHER
            return rt.app.on_cancel_failed(cmd, reason, text, now)
        return rt.app.on_mass_cancel_failed(cmd, text, now)

    async def _worker(self, rt: Runtime) -> None:
        """One session's application messages, one at a time in arrival order: a cancel that follows
        its order finds the order placed. When more are waiting, output is left to the flusher
        (``kick``) so its commit overlaps the next order's round trip."""
        assert rt.recv_cmd is not None and rt.app is not None
        low = self.limits["app_queue"] // 2
        resumed, refused = rt.app.resume(now_ns())
        self._emit(rt, refused)
        for cmd in resumed:  # sent before a restart, outcome never recorded: same request id again
            self.log.warning("session %s: order %s was sent before the restart with no outcome recorded; "
                             "asking the node again under its request id", rt.key, cmd.clordid)
            self._emit(rt, await self._execute(rt, cmd))
        if rt.app.counters["in_doubt"]:
            self.log.warning("session %s: %d order(s) that arrived more than %g s before the restart have no outcome "
                             "recorded and are left unacknowledged (docs/fix.md, Durability)", rt.key,
                             rt.app.counters["in_doubt"], rt.app.resume_ns / 1e9)
        if resumed or refused or rt.app.counters["in_doubt"]:
            await self.flush(rt)
        async for ev, req in rt.recv_cmd:
            cmd = self._apply(rt, ev, req)
            if cmd is not None:
                self._emit(rt, await self._execute(rt, cmd))
            if rt.recv_cmd.statistics().current_buffer_used:
                rt.kick()  # more waiting: let the flusher commit while the next one runs
            else:
                await self.flush(rt)  # nothing waiting: send now, one task switch sooner
            if rt.recv_cmd.statistics().current_buffer_used <= low:
                rt.room.set()

    async def _execute(self, rt: Runtime, cmd: Command) -> list[Out]:
        c, app = rt.client, rt.app
        assert c is not None and app is not None
        try:
            if isinstance(cmd, Place):
                try:
                    o = await c.create_order(cmd.symbol, cmd.side, cmd.amount, cmd.price, type=cmd.type,
                                             time_in_force=cmd.tif, request_id=cmd.req or None)
                except api_errors.AckTimeout as e:  # the order stands; its fills come from the watcher
                    oid = getattr(e, "order_id", None)
                    if not oid:
                        raise
                    return app.on_placed(cmd, oid, (), now_ns())
                return app.on_placed(cmd, o.id, o.fills, now_ns())
            if isinstance(cmd, Cancel):
                await c.cancel_order(cmd.order_id)
                return app.on_canceled(cmd, now_ns())
            if isinstance(cmd, Replace):
                ack = await c.amend_order(cmd.order_id, cmd.amount, cmd.price, symbol=cmd.symbol)
                return app.on_replaced(cmd, ack.fills, now_ns())
            ack = await c.cancel_all_orders(cmd.symbol)
            return app.on_mass_canceled(cmd, ack.order_id, now_ns())
        except GossipbookError as e:
            text = refusal_text(e)
            if isinstance(e, api_errors.Unreachable):
                text = f"no answer from node {rt.client.node if rt.client else '?'}: {e}"
            return self._failed(rt, cmd, e, text)

    async def _watch(self, rt: Runtime) -> None:
        """The session's fills: new ones, revisions, undos and finality, from the library's feed."""
        c, app = rt.client, rt.app
        assert c is not None and app is not None
        interval = self.limits["watch_interval_ms"] / 1000
        while True:
            feed = c.watch_my_trades(interval=interval, history=True)
            try:
                async for fill in feed:
                    outs = app.on_fill(fill, now_ns())
                    if outs:
                        self._emit(rt, outs)
                        rt.kick()
            except GossipbookError as e:
                self.counters["watch_restarts"] += 1
                self.log.warning("session %s: fill feed stopped (%s); restarting it", rt.key, e)
            finally:
                close = getattr(feed, "aclose", None)  # a pushed feed's lease ends now, not at expiry
                if close is not None:
                    with trio.CancelScope(shield=True), trio.move_on_after(2):
                        await close()
            await trio.sleep(1.0)  # then a new feed (its history is compared with what was reported)

    async def _housekeeping(self) -> None:
        while True:
            await trio.sleep(1.0)
            for rt in self.runtimes.values():
                if rt.app is not None:
                    rt.app.expire(now_ns())
