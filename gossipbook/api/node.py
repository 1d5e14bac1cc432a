"""``Node``: one gossipbook node inside your trio program.

Theory of operation: a ``Node`` wraps the node shell (``gossipbook.node.runner.NodeRunner``) and
adds what a program embedding it needs: storage opened from the node's ``data_dir``, readiness as
an awaitable, a venue (with its hooks) handed to the core, and ``events()``: async iterators over
bounded trio memory channels, fed from the shell's event callback.

Rules that hold:
- Cancellation is the only way to stop a node: ``await nursery.start(node.serve)`` returns once the
  socket is bound; cancelling the scope around ``serve`` announces a graceful leave, closes the
  socket and the storage. ``async with Node(...)`` does the same around its block.
- A ``Node`` serves once. A second ``serve`` (concurrent or after a stop) is a ``UsageError``; to
  restart, build a new ``Node`` on the same ``data_dir`` (it recovers from there).
- The node never waits for, and never calls, user code: each event is offered to every
  subscriber's channel with ``send_nowait``. A full channel drops the event and counts it; the
  subscriber is told with a ``Missed(count)`` event in the place of what it missed. A consumer
  that raises, stalls or goes away changes nothing for the node.
- ``TradeFinal`` is derived: while anyone subscribes, the node remembers the trades it reported
  (at most ``MAX_PENDING_FINAL``, the oldest forgotten first) and asks the replica about every
  ~50 ms whether each is final yet (strong mode: a trade is final when reported).
- Order-lifecycle events come from what this node folds: eventual mode per flush, strong mode per
  committed entry, and with shards per committed entry of every group (each group folds only its
  instruments; an order of shard s >= 1 is named ``"<leader>#<s>:<index>"``).
"""

from __future__ import annotations

import dataclasses
import logging
import weakref
from collections import OrderedDict
from os import PathLike
from types import TracebackType
from typing import Any

import trio

from ..config import ClusterConfig
from ..core.errors import UsageError
from ..core.instrument import Venue
from ..core.node import RequestRefused
from ..core.ops import TradeExecuted, TradeRevised
from ..core.shards import ShardedStrongCore
from ..core.strong import StrongNodeCore
from ..node.runner import NodeRunner
from ..node.transport import FaultFilter
from .cluster import ConfigLike, load_config, with_venue
from .lifecycle import OrderAccepted, OrderRejected, OrderTracker
from .types import BookLevel, Missed, NodeStatus, OrderBook, TradeFinal

#: trades remembered for ``TradeFinal`` at most (the oldest are forgotten, never reported final)
MAX_PENDING_FINAL = 100_000
#: how often the replica is asked which remembered trades are final
FINAL_POLL_S = 0.05

log = logging.getLogger("gossipbook.api")


class EventFeed:
    """One subscription to a node's events: ``async for ev in feed``. Iteration ends when the node
    stops or the feed is closed. ``dropped``: events lost to a full buffer so far (each gap is also
    reported in place as ``Missed``)."""

    def __init__(self, node: Node, buffer: int) -> None:
        self._send, self._recv = trio.open_memory_channel[Any](buffer)
        self._node = node
        self._pending_missed = 0
        self.dropped = 0

    # called by the node, synchronously: never blocks, never raises
    def _offer(self, ev: Any) -> None:
        try:
            if self._pending_missed:
                self._send.send_nowait(Missed(self._pending_missed))
                self._pending_missed = 0
            self._send.send_nowait(ev)
        except trio.WouldBlock:
            self._pending_missed += 1
            self.dropped += 1
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    def _end(self) -> None:
        self._send.close()

    def __aiter__(self) -> EventFeed:
        return self

    async def __anext__(self) -> Any:
        try:
            return self._recv.receive_nowait()
        except trio.WouldBlock:
            pass
        except (trio.EndOfChannel, trio.ClosedResourceError):
            return self._final_missed()
        if self._pending_missed:  # the buffer drained since the drop: report the gap now
            n, self._pending_missed = self._pending_missed, 0
            return Missed(n)
        try:
            return await self._recv.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            return self._final_missed()

    def _final_missed(self) -> Any:
        if self._pending_missed:
            n, self._pending_missed = self._pending_missed, 0
            return Missed(n)
        raise StopAsyncIteration

    def close(self) -> None:
        """Stop receiving; the node forgets this feed."""
        self._node._feeds.discard(self)
        self._send.close()
        self._recv.close()

    async def __aenter__(self) -> EventFeed:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class _Started:
    """Hands ``nursery.start`` the ``Node`` where the shell would hand it its runner."""

    def __init__(self, node: Node, outer: trio.TaskStatus[Node]) -> None:
        self.node, self.outer = node, outer

    def started(self, _value: Any = None) -> None:
        self.outer.started(self.node)


def _single(eg: BaseExceptionGroup[Any]) -> BaseException | None:
    """The one exception in ``eg`` that is not a cancellation, if there is exactly one."""
    leaves: list[BaseException] = []

    def walk(e: BaseException) -> None:
        if isinstance(e, BaseExceptionGroup):
            for x in e.exceptions:
                walk(x)
        elif not isinstance(e, trio.Cancelled):
            leaves.append(e)

    walk(eg)
    return leaves[0] if len(leaves) == 1 else None


class Node:
    """One node of a cluster, embedded in a trio program.

    ``cfg``: a ``ClusterConfig`` or the path of the cluster's ``cluster.toml`` (a node needs the peer
    key: a client file is refused). ``venue``: the venue to run (its ``validate`` hook runs at this
    node for every NEW it stamps; it must trade the config's instruments); give every node of the
    cluster the same venue. ``data_dir``: where the node keeps its ops (default: the config's
    ``data_dir`` for ``node_id``; neither: nothing is kept across restarts). ``faults``: test-only
    partitions and loss in the send path (``FaultFilter``)."""

    def __init__(self, cfg: ConfigLike, node_id: str, *, venue: Venue | None = None,
                 data_dir: str | PathLike[str] | None = None, faults: FaultFilter | None = None,
                 log: logging.Logger | None = None, seed: int | None = None) -> None:
        conf = load_config(cfg)
        if conf.is_client_file:
            raise UsageError(f"{conf.path} is a client file (account {conf.account}); a Node needs the cluster's "
                             f"cluster.toml, which holds the peer key")
        entry = conf.node(node_id)
        self.cfg: ClusterConfig = with_venue(conf, venue) if venue is not None else conf
        self.node_id = node_id
        self.venue: Venue = self.cfg.venue()
        self.data_dir = str(data_dir) if data_dir is not None else entry.data_dir
        self.faults = faults
        self._log = log
        self._seed = seed
        self._runner: NodeRunner | None = None
        self._served = False
        self._stopped = trio.Event()
        self._feeds: weakref.WeakSet[EventFeed] = weakref.WeakSet()
        self._pending: OrderedDict[str, Any] = OrderedDict()  # trade id -> Trade, awaiting finality
        self._orders = OrderTracker(self.venue)  # order-lifecycle events (lifecycle.py)
        self._step_trades: list[Any] = []  # eventual mode: this flush's trades, for ``_orders``
        self._scope: trio.CancelScope | None = None
        self._nursery_cm: Any = None
        #: events the node could not hand to a subscriber because a feed raised (never happens with
        #: ``EventFeed``; counted in case a subclass does)
        self.handler_errors = 0

    # ---- lifecycle ---------------------------------------------------------------------------------
    @property
    def runner(self) -> NodeRunner:
        """The node shell (available once ``serve`` has started): ``runner.core`` is the pure core."""
        if self._runner is None:
            raise UsageError(f"node {self.node_id} is not serving: await nursery.start(node.serve) first")
        return self._runner

    @property
    def running(self) -> bool:
        return self._runner is not None and not self._stopped.is_set()

    async def serve(self, *, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the node until cancelled. ``await nursery.start(node.serve)`` returns (with this
        ``Node``) once its socket is bound; ``await node.ready()`` then waits until it takes orders."""
        if self._served:
            raise UsageError(f"node {self.node_id} was already served: a Node runs once; build a new "
                             f"Node(...) to restart it (its data_dir brings its state back)")
        self._served = True
        storage = None
        if self.data_dir:
            from ..node.storage import Storage

            storage = Storage.open(self.data_dir, self.node_id, self.cfg.fsync)
        try:
            runner = NodeRunner(self.cfg, self.node_id, faults=self.faults, log=self._log, seed=self._seed,
                                storage=storage)
        except BaseException:
            if storage is not None:
                storage.close()
            raise
        runner.on_event = self._on_event
        if isinstance(runner.core, StrongNodeCore):
            runner.core.on_fold = self._folded_strong(runner.core.on_fold)
        elif isinstance(runner.core, ShardedStrongCore):  # every group's committed entries, with their shard
            runner.core.on_shard_fold = self._folded_shard(runner.core.on_shard_fold)
        else:
            runner.on_ops = self._on_ops
        self._runner = runner
        try:
            async with trio.open_nursery() as n:
                n.start_soon(self._finality_loop)
                try:
                    await runner.serve(task_status=_Started(self, task_status))  # type: ignore[arg-type]
                finally:
                    n.cancel_scope.cancel()
        except BaseExceptionGroup as eg:
            one = _single(eg)
            if one is not None:
                raise one from None
            raise
        finally:
            self._stopped.set()
            for f in list(self._feeds):
                f._end()

    async def ready(self, timeout: float | None = None) -> None:
        """Wait until the node takes orders (it heard from enough peers and caught up). ``timeout``
        seconds at most (``trio.TooSlowError`` after that); the node must be serving."""
        with trio.fail_after(timeout) if timeout is not None else trio.CancelScope():
            while self._runner is None:
                if self._served:
                    raise UsageError(f"node {self.node_id} has stopped")
                await trio.sleep(0.01)
            runner = self._runner
            # ready: caught up, and (eventual mode with a clock limit) the clock's error bound known
            while not runner.core.ready or runner.core.clock.refusal(runner.clock()) is not None:
                if self._stopped.is_set():
                    raise UsageError(f"node {self.node_id} stopped before it was ready")
                await trio.sleep(0.01)

    async def wait_stopped(self) -> None:
        """Wait until ``serve`` has returned."""
        await self._stopped.wait()

    async def __aenter__(self) -> Node:
        """Serve in the background for the block; leaving the block stops the node."""
        self._nursery_cm = trio.open_nursery()
        nursery = await self._nursery_cm.__aenter__()
        try:
            await nursery.start(self.serve)
        except BaseException as e:
            nursery.cancel_scope.cancel()
            try:
                await self._nursery_cm.__aexit__(None, None, None)
            except BaseExceptionGroup as eg:
                one = _single(eg)
                if one is not None:
                    raise one from None
                raise
            raise e
        self._scope = nursery.cancel_scope
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        # the block's exception passes through as itself (never wrapped in an ExceptionGroup)
        assert self._scope is not None
        self._scope.cancel()
        try:
            await self._nursery_cm.__aexit__(None, None, None)
        except BaseExceptionGroup as eg:
            one = _single(eg)
            if one is not None and exc is None:
                raise one from None
            if exc is None:
                raise

    # ---- events ------------------------------------------------------------------------------------
    def events(self, *, buffer: int = 1024) -> EventFeed:
        """Subscribe to this node's events from now on: ``TradeExecuted``, ``TradeRevised``,
        ``TradeFinal``, ``MemberStateChanged``, ``OpFenced`` and, in strong mode, ``RoleChanged``;
        ``Missed(n)`` where ``n`` events were dropped because this feed's ``buffer`` was full. Use as
        ``async for ev in node.events()``; iteration ends when the node stops. A feed nobody holds
        any more is forgotten by the node; ``feed.close()`` (or ``async with``) forgets it at once."""
        if buffer < 1:
            raise UsageError("buffer must be at least 1")
        feed = EventFeed(self, buffer)
        if self._stopped.is_set():
            feed._end()
        else:
            self._feeds.add(feed)
        return feed

    def _on_event(self, ev: Any) -> None:
        """The shell's callback, run inside the node's loop: offers ``ev`` and never raises."""
        try:
            feeds = list(self._feeds)
            if not feeds:
                if self._pending:
                    self._pending.clear()
                return
            t = type(ev)
            if t is RequestRefused:
                ev = OrderRejected(ev.account, ev.req, ev.code, ev.message, ev.order_id)
            elif t is TradeExecuted and self.cfg.mode != "strong":
                self._step_trades.append(ev.trade)
            for f in feeds:
                f._offer(ev)
            made = ev.trade if t is TradeExecuted else ev.new if t is TradeRevised else None
            if t is TradeRevised:
                self._pending.pop(ev.old.trade_id, None)
            if made is not None:
                if self.cfg.mode == "strong":  # committed before it is folded: final as reported
                    final = TradeFinal(made)
                    for f in feeds:
                        f._offer(final)
                else:
                    self._pending[made.trade_id] = made
                    self._pending.move_to_end(made.trade_id)
                    while len(self._pending) > MAX_PENDING_FINAL:
                        self._pending.popitem(last=False)
        except Exception:  # pragma: no cover - a bug here must not stop the node
            self.handler_errors += 1
            log.exception("node %s: event not delivered", self.node_id)

    def _resting(self, symbol: str, order_id: str) -> tuple[int, int] | None:
        core = self.runner.core
        if type(core) is ShardedStrongCore:  # the symbol's own group (the merged view builds a dict per call)
            book = core.groups[core.map.of_symbol(symbol)].replica.books.get(symbol)
        else:
            book = core.replica.books.get(symbol)
        o = book.order(order_id) if book is not None else None
        return None if o is None else (o[1], o[2])

    def _on_ops(self, ops: list[Any]) -> None:
        """Eventual mode, once per flush (after ``_on_event`` saw its trades): lifecycle events."""
        trades, self._step_trades = self._step_trades, []
        feeds = list(self._feeds)
        if not feeds:
            self._orders.clear()
            return
        if ops or trades:
            self._offer_all(feeds, self._orders.step(ops, trades, self._resting))

    def _folded_strong(self, chained: Any) -> Any:
        """Strong mode: each committed entry as the fold applies it, with its outcome."""
        def folded(index: int, op: Any, out: Any) -> None:
            if chained is not None:
                chained(index, op, out)
            try:
                feeds = list(self._feeds)
                if not feeds:
                    self._orders.clear()
                elif op is not None and out is not None and out.code == 0:
                    self._offer_all(feeds, self._orders.step([op._replace(seq=index)], out.trades, self._resting))
            except Exception:  # pragma: no cover - a bug here must not stop the node
                self.handler_errors += 1
                log.exception("node %s: lifecycle event not delivered", self.node_id)

        return folded

    def _folded_shard(self, chained: Any) -> Any:
        """Strong mode with shards: each group's committed entries as its fold applies them. Shard
        s >= 1 names a NEW ``"<leader>#<s>:<index>"`` (its trades are caused by that id), so the op
        is handed to the tracker under that name; ``OrderAccepted.node`` stays the stamping node."""
        def folded(shard: int, index: int, op: Any, out: Any) -> None:
            if chained is not None:
                chained(shard, index, op, out)
            try:
                feeds = list(self._feeds)
                if not feeds:
                    self._orders.clear()
                elif op is not None and out is not None and out.code == 0:
                    named = op._replace(origin=f"{op.origin}#{shard}", seq=index) if shard else op._replace(seq=index)
                    evs = self._orders.step([named], out.trades, self._resting)
                    if shard:
                        evs = [dataclasses.replace(e, node=op.origin) if type(e) is OrderAccepted else e
                               for e in evs]
                    self._offer_all(feeds, evs)
            except Exception:  # pragma: no cover - a bug here must not stop the node
                self.handler_errors += 1
                log.exception("node %s: lifecycle event not delivered", self.node_id)

        return folded

    @staticmethod
    def _offer_all(feeds: list[EventFeed], events: list[Any]) -> None:
        for ev in events:
            for f in feeds:
                f._offer(ev)

    async def _finality_loop(self) -> None:
        while True:
            await trio.sleep(FINAL_POLL_S)
            self._poll_final()

    def _poll_final(self) -> None:
        runner = self._runner
        if runner is None or not self._pending:
            return
        replica = getattr(runner.core, "replica", None)
        is_final = getattr(replica, "trade_is_final", None)
        if is_final is None:
            return
        done = [tid for tid in self._pending if is_final(tid)]
        feeds = list(self._feeds)
        for tid in done:
            trade = self._pending.pop(tid)
            ev = TradeFinal(trade)
            for f in feeds:
                f._offer(ev)

    # ---- reads -------------------------------------------------------------------------------------
    def book(self, symbol: str | None = None, limit: int = 10) -> OrderBook:
        """This node's view of ``symbol``'s book (default: the first instrument), ``limit`` levels
        per side, in ``Decimal``."""
        core = self.runner.core
        inst = self.venue.get(symbol) if symbol else next(iter(self.venue.instruments.values()))
        book = core.replica.books[inst.symbol]
        d = book.depth(max(1, limit))

        def lv(level: Any) -> BookLevel:
            return BookLevel(inst.ticks_to_price(level[0]), inst.lots_to_qty(level[1]), int(level[2]))

        return OrderBook(inst.symbol, tuple(lv(x) for x in d.bids), tuple(lv(x) for x in d.asks), self.node_id,
                         core.replica.digest())

    def status(self) -> NodeStatus:
        """This node's status (``NodeStatus.raw``: everything ``gossipbook status`` shows)."""
        return NodeStatus.from_status(self.runner.status())

    @property
    def digest(self) -> str:
        """The digest of every book here: equal digests, equal books."""
        return str(self.runner.core.replica.digest())

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped" if self._served else "new"
        return f"<gossipbook.Node {self.node_id} {state}>"

