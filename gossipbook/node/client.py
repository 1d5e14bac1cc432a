"""Talking to a node as a client: authenticated request/reply over UDP with safe retries.

A request carries a request id; retrying with the same id is idempotent at the node (a retried
submit gets the first reply back, never a second order), so the client simply resends until it
hears back or its deadline passes. Every frame is signed with the credential of the account the
config names (a client file's account, or ``operator`` with cluster.toml); a reply is accepted only
if it verifies under the same credential.

Leaders (strong mode with shards): a node that relays a request to its shard's leader sends a
``LeaderHint`` before the reply; the client remembers which node leads which shard (and which shard
each symbol is in) and ``leader_for`` names it, so the next request of that shard goes straight
there. A hinted node that does not answer two tries in a row is forgotten and the request goes to
the ``fallback`` node given to ``request``.

Routing (``send``): the one place that decides where a request goes, for the library ``Client``
and ``gossipbook load``: a node named by the caller; else the hinted leader of the request's
shard; else, with ``balancing`` on, the node ``balancer`` picks (core/balance.py: measured latency
and tries in flight, away from a node that misses its replies; in eventual mode a cancel or amend
goes to the node that stamped the order, which surely holds it); else the caller's default node.
Every try of every request feeds ``balancer`` (sent, answered with its latency, or unanswered
within ``retry_s``), so ``spread()`` reports per node what this client saw, balancing or not. A
routed query, or a strong-mode submit, whose node the balancer starts to avoid moves to another node
with the same request id (the leader's fold deduplicates it). An eventual-mode submit never moves
once sent: its copy at a second node would be a second op, a no-op in the fold whose reply names an
order that never rests (docs/consistency.md, "Request ids"); new requests go elsewhere instead.

Feeds: ``Client.subscribe`` makes a ``Subscription``, a lease on a pushed feed at one node
(core/feeds.py). It is renewed while its owner keeps asking for updates (``next``), resynced when a
push went missing, and ended with ``aclose`` (or when the client closes); a subscription its owner
stops reading simply lapses at the node when its lease runs out.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import MutableMapping
from types import TracebackType
from typing import Any, NamedTuple

import trio

from ..config import ClusterConfig
from ..core.balance import Balancer
from ..core.errors import UsageError, WireError
from ..core.feeds import FeedReceiver, FeedUpdate
from ..core.node import E_ADDRESS
from ..core.ops import AMEND, CANCEL, parse_order_id
from ..core.wire import (
    ClientReply,
    ClientSubmit,
    FeedAck,
    FeedDelta,
    FeedSnapshot,
    FeedSubscribe,
    Keys,
    LeaderHint,
    QueryReply,
    decode,
    encode,
)
from .transport import Endpoint


class Unreachable(UsageError):
    exit_code = 3


class FeedRefused(UsageError):
    """A node refused a subscription; ``code`` is its reply code (``wire.REPLY_CODES``)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def new_req() -> str:
    """A fresh request id (random: a retry reuses it, a new request never does)."""
    return secrets.token_hex(8)


class Routed(NamedTuple):
    """A reply and where it came from: ``node`` answered; ``how`` the request was sent there:
    ``"given"`` (the caller named the node), ``"leader"`` (a hint named its shard's leader),
    ``"origin"`` (the node that stamped the order), ``"balanced"`` (the balancer's pick) or
    ``"default"``; ``moved``: the request went to another node than the first one."""

    reply: Any
    node: str
    how: str
    moved: bool


class Client:
    """One client socket; use as ``async with Client(cfg) as c``."""

    def __init__(self, cfg: ClusterConfig, retry_s: float = 0.25, account: str | None = None) -> None:
        """``account``: act for this account of the config (cluster.toml holds every account's
        credential) instead of the config's own (a client file's account, or ``operator``)."""
        self.cfg = cfg
        self.retry_s = retry_s
        self.account, ring = cfg.client_credential(account)
        self._secret = ring[0]
        self.id = "client-" + secrets.token_hex(6)
        # replies are bound to this client's id and the cluster's name, and verify under any of its keys
        self._keys = Keys(None, {self.account: ring}, label=cfg.name, me=self.id)
        self.counter = time.time_ns()
        self.ep: Endpoint | None = None
        self._waiters: dict[str, trio.MemorySendChannel[Any]] = {}
        self._cookies: dict[str, str] = {}  # node id -> its address-check cookie for us
        self._subs: dict[tuple[str, str], Subscription] = {}  # (node id, sub id) -> an open subscription
        self._asked: dict[str, Any] = {}  # request id -> the request (a LeaderHint names it)
        #: shard -> the node a LeaderHint named its leader; symbol -> its shard, as hints showed (several
        #: clients of one program may share both, and ``balancer``: ``share_routing``)
        self.shard_leader: MutableMapping[int, str] = {}
        self.symbol_shard: MutableMapping[str, int] = {}
        #: what every try to every node did (core/balance.py); ``send`` routes by it when ``balancing``
        self.balancer = Balancer(cfg.ids)
        self.balancing = False

    async def __aenter__(self) -> Client:
        host = self.cfg.nodes[0].host
        self.ep = Endpoint.bind(("::" if ":" in host else "127.0.0.1" if host.startswith("127.") else "0.0.0.0", 0))
        self._nursery_cm = trio.open_nursery()
        self._nursery = await self._nursery_cm.__aenter__()
        self._nursery.start_soon(self._reader)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        # the reader is ours; an exception from the caller's block passes through as itself (handing
        # it to the nursery would wrap it in an ExceptionGroup the caller does not expect)
        with trio.CancelScope(shield=True):  # open subscriptions: tell their nodes (one datagram each)
            for sub in list(self._subs.values()):
                await sub._end_quietly()
        self._nursery.cancel_scope.cancel()
        try:
            await self._nursery_cm.__aexit__(None, None, None)
        finally:
            if self.ep is not None:
                self.ep.close()

    async def _reader(self) -> None:
        assert self.ep is not None
        while True:
            for data, _addr in await self.ep.recv_burst():
                try:
                    frame = decode(data, self._keys, now_ms=time.time_ns() // 1_000_000)
                except WireError:
                    continue
                msg = frame.msg
                t = type(msg)
                if t is FeedSnapshot or t is FeedDelta or t is FeedAck:
                    sub = self._subs.get((frame.sender, msg.sub))
                    if sub is not None:  # in arrival order, so an ack is judged after the pushes before it
                        if t is FeedAck:
                            sub._on_ack(msg)
                        else:
                            sub._on_push(msg)
                if t is LeaderHint:
                    self._on_hint(msg)
                if isinstance(msg, ClientReply | QueryReply | FeedAck):
                    # a node answers with the request id it was sent, less any cookie
                    ch = self._waiters.get(msg.req) or self._waiters.get(msg.req.rpartition("#")[0])
                    if ch is not None:
                        try:
                            ch.send_nowait(msg)
                        except (trio.WouldBlock, trio.BrokenResourceError):
                            pass

    def new_req(self) -> str:
        return new_req()

    def _on_hint(self, h: LeaderHint) -> None:
        m = self._asked.get(h.req) or self._asked.get(h.req.rpartition("#")[0])
        if m is None or h.leader not in self.cfg.ids:
            return
        self.shard_leader[h.shard] = h.leader
        if getattr(m, "symbol", "") and getattr(m, "kind", 0) in (1, 4, 5):  # NEW, CANCEL_ALL, LIMIT
            self.symbol_shard[m.symbol] = h.shard

    def share_routing(self, other: Client) -> None:
        """Use ``other``'s leader hints and balancer (one program's clients of several accounts
        learn leaders and latencies together, and report one spread)."""
        self.shard_leader, self.symbol_shard, self.balancer = other.shard_leader, other.symbol_shard, other.balancer

    def spread(self) -> dict[str, dict[str, object]]:
        """Per node, what this client's tries saw (``Balancer.spread``)."""
        return self.balancer.spread(time.monotonic_ns())

    def route(self, msg: Any, default: str) -> tuple[str, str]:
        """Where ``msg`` goes first and why (see "Routing" in the module header)."""
        now = time.monotonic_ns()
        bal = self.balancer
        if type(msg) is ClientSubmit:
            lead = self.leader_for(msg)
            if lead is not None and not bal.avoided(lead, now):
                return lead, "leader"
        if not self.balancing:
            return default, "default"
        if self.cfg.mode != "strong" and type(msg) is ClientSubmit and msg.kind in (CANCEL, AMEND):
            p = parse_order_id(msg.order_id)
            if p is not None and p[0] in bal.nodes and not bal.avoided(p[0], now):
                return p[0], "origin"
        return bal.pick(now), "balanced"

    async def send(self, msg: Any, default: str, timeout: float = 3.0, node: str | None = None) -> Routed:
        """Send ``msg`` (with its ``req``) where ``route`` says (``node``: there and only there) and
        return the reply with where it came from. Raises ``Unreachable`` as ``request`` does."""
        if node is not None:
            return Routed(await self.request(node, msg, msg.req, timeout), node, "given", False)
        target, how = self.route(msg, default)
        # a hinted leader that does not answer falls back to the default node (the leader dedupes);
        # an order's origin does not (eventual mode: the copy would be a second op, as below)
        fallback = default if how == "leader" or not self.balancing else None
        box: list[str] = []
        # an eventual-mode submit stays at its node: a copy at another node is a second op (a no-op in
        # the fold, but its reply names an order that never rests; docs/consistency.md "Request ids")
        move = self.balancing and (self.cfg.mode == "strong" or type(msg) is not ClientSubmit)
        rep = await self.request(target, msg, msg.req, timeout, fallback=fallback, move=move, where=box)
        last = box[-1] if box else target
        return Routed(rep, last, how, last != target)

    def leader_for(self, msg: Any) -> str | None:
        """The node a hint named leader of ``msg``'s shard (None: unknown, or not a sharded cluster)."""
        if not self.shard_leader:
            return None
        if getattr(msg, "kind", 0) in (2, 3):  # CANCEL, AMEND: the order id names the shard
            from ..core.shards import shard_of_order
            from ..core.wire import MAX_SHARDS
            return self.shard_leader.get(shard_of_order(msg.order_id, MAX_SHARDS))
        shard = self.symbol_shard.get(getattr(msg, "symbol", "") or "")
        return None if shard is None else self.shard_leader.get(shard)

    def subscribe(self, node_id: str, feed: str, symbol: str = "", depth: int = 0, *, lease_s: float = 10.0,
                  buffer: int = 256) -> Subscription:
        """A subscription to ``feed`` ("trades" or "book") at ``node_id``, not yet open: use as
        ``async with client.subscribe(...) as sub:`` (or ``await sub.open()`` and ``sub.aclose()``)."""
        self.cfg.node(node_id)
        return Subscription(self, node_id, feed, symbol, depth, lease_s=lease_s, buffer=buffer)

    async def send_once(self, node_id: str, msg: Any) -> None:
        """Send ``msg`` to ``node_id`` once, expecting nothing back (a best-effort goodbye)."""
        if self.ep is None:
            return
        node = self.cfg.node(node_id)
        cookie = self._cookies.get(node_id)
        if cookie and len(msg.req) <= 47:
            msg = msg._replace(req=f"{msg.req}#{cookie}")
        self.counter = max(self.counter + 1, time.time_ns())
        await self.ep.send_all([(encode(msg, self.id, self.counter, self._secret, self.account, dst=node_id,
                                        label=self.cfg.name, stamp_ms=time.time_ns() // 1_000_000), node.addr)])

    async def request(self, node_id: str, make: Any, req: str, timeout: float = 3.0,
                      fallback: str | None = None, move: bool = False, where: list[str] | None = None) -> Any:
        """Send ``make`` (a message with ``req``) to ``node_id`` until a reply comes or ``timeout``.

        A node answers a source that has not shown it receives at its address with at most 3x the
        request's bytes; a larger answer becomes an address check (``E_ADDRESS``, the cookie in
        ``message``): the request is sent again at once as ``<req>#<cookie>``, and that node's
        cookie goes with every later request to it (a retry: the node strips the cookie, so the
        request id stays ``req``). ``fallback``: after two unanswered tries, send there instead (and
        forget the hints naming ``node_id``). ``move``: once the balancer avoids the node (it missed
        its replies), send to the node the balancer picks instead. ``where``: the node of each move
        is appended to it (its last is the node that answered)."""
        assert self.ep is not None
        node = self.cfg.node(node_id)
        send, recv = trio.open_memory_channel[Any](8)
        self._waiters[req] = send
        self._asked[req] = make
        bal = self.balancer
        checks = misses = 0
        out: str | None = None  # a try sent and not yet answered or timed out
        if where is not None:
            where.append(node_id)
        try:
            with trio.move_on_after(timeout):
                while True:
                    to: str | None = None
                    if fallback is not None and fallback != node_id and misses >= 2:
                        for s in [s for s, n in self.shard_leader.items() if n == node_id]:
                            del self.shard_leader[s]
                        to, fallback = fallback, None
                    elif move and misses and bal.avoided(node_id, time.monotonic_ns()):
                        to = bal.pick(time.monotonic_ns(), (node_id,))
                    if to is not None and to != node_id:
                        node_id, node, misses = to, self.cfg.node(to), 0
                        if where is not None:
                            where.append(node_id)
                    self.counter = max(self.counter + 1, time.time_ns())  # time-based (TimeWindowGuard)
                    cookie = self._cookies.get(node_id)
                    msg = make._replace(req=f"{req}#{cookie}") if cookie and len(req) <= 47 else make
                    t_sent = time.monotonic_ns()
                    bal.sent(node_id, t_sent)
                    out = node_id
                    await self.ep.send_all([(encode(msg, self.id, self.counter, self._secret, self.account,
                                                    dst=node_id, label=self.cfg.name,
                                                    stamp_ms=time.time_ns() // 1_000_000), node.addr)])
                    with trio.move_on_after(self.retry_s):
                        rep = await recv.receive()
                        t = time.monotonic_ns()
                        bal.answered(node_id, t - t_sent, t)
                        out = None
                        while rep.code == E_ADDRESS and checks < 4:
                            if rep.message != cookie:  # a fresh cookie: send again with it, now
                                checks += 1
                                self._cookies[node_id] = rep.message
                                break
                            rep = await recv.receive()  # a check answering an earlier try
                        else:
                            return rep
                        continue
                    bal.missed(node_id, time.monotonic_ns())
                    out = None
                    misses += 1
        finally:
            if out is not None:  # the deadline (or the caller) cut the last try short
                bal.gave_up(out)
            del self._waiters[req]
            self._asked.pop(req, None)
        raise Unreachable(f"node {node_id} at {node.host}:{node.port} did not answer within {timeout:g} s "
                          f"(is it running? does it know account {self.account!r} with this credential?)")


def _now_ns() -> int:
    return int(trio.current_time() * 1e9)


class Subscription:
    """A lease on one pushed feed at one node (see the module header); ``await sub.next()`` returns
    the next ``FeedUpdate``: a whole snapshot (the first, and again after any gap) or a delta.

    The lease is renewed every third of it while ``next`` is being called; a push that went missing
    (a skipped sequence number, or an ack naming a push never seen) or that the buffer had no room
    for makes it ask for a fresh snapshot. ``Unreachable`` once the node has not answered for
    ``give_up_s`` seconds; ``FeedRefused`` if the node refuses the subscription."""

    give_up_s = 10.0

    def __init__(self, client: Client, node_id: str, feed: str, symbol: str = "", depth: int = 0, *,
                 lease_s: float = 10.0, buffer: int = 256) -> None:
        if not 0.5 <= lease_s <= 600:
            raise UsageError("lease must be 0.5 to 600 seconds")
        if buffer < 1:
            raise UsageError("buffer must be at least 1")
        self.client = client
        self.node_id = node_id
        self.feed, self.symbol, self.depth = feed, symbol, depth
        self.lease_s = lease_s
        self.sub = secrets.token_hex(8)
        self.rx = FeedReceiver()
        self._send, self._recv = trio.open_memory_channel[FeedUpdate](buffer)
        #: what happened so far: renewals sent, snapshots asked for, updates the buffer had no room for
        self.renewals = self.resyncs = self.overflows = 0
        self._renew_at = 0.0
        self._heard = 0.0
        self._open = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.node_id, self.sub)

    async def __aenter__(self) -> Subscription:
        await self.open()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def open(self, timeout: float = 3.0) -> None:
        """Subscribe (``Unreachable`` if the node does not answer within ``timeout`` seconds,
        ``FeedRefused`` if it says no)."""
        self.client._subs[self.key] = self
        try:
            await self._ask(True, timeout)
        except BaseException:
            self.client._subs.pop(self.key, None)
            raise
        self._open = True

    async def aclose(self) -> None:
        """End the subscription at the node (best effort: the lease ends it anyway)."""
        if self.client._subs.pop(self.key, None) is None or not self._open:
            return
        self._open = False
        with trio.move_on_after(0.5) as scope:
            scope.shield = True
            try:
                await self.client.request(self.node_id, self._msg(False, 0), new_req(), 0.5)
            except Unreachable:
                pass

    async def _end_quietly(self) -> None:
        self.client._subs.pop(self.key, None)
        if self._open:
            self._open = False
            await self.client.send_once(self.node_id, self._msg(False, 0))

    def _msg(self, resync: bool, lease_ms: int | None = None) -> FeedSubscribe:
        lease = int(self.lease_s * 1000) if lease_ms is None else lease_ms
        return FeedSubscribe(new_req(), self.sub, self.feed, self.symbol, self.depth, lease, resync)

    async def _ask(self, resync: bool, timeout: float) -> None:
        msg = self._msg(resync)
        if resync:
            self.rx.asked(_now_ns())
        ack = await self.client.request(self.node_id, msg, msg.req, timeout)
        self._heard = trio.current_time()
        if ack.code != 0:
            raise FeedRefused(ack.message, ack.code)
        self._renew_at = trio.current_time() + ack.lease_ms / 3000

    async def next(self) -> FeedUpdate:
        """The next update (waiting as long as it takes, renewing and resyncing meanwhile)."""
        if not self._open:
            raise UsageError("the subscription is not open (use 'async with client.subscribe(...)')")
        while True:
            now = trio.current_time()
            try:
                if now >= self._renew_at:
                    self.renewals += 1
                    await self._ask(False, min(3.0, self.lease_s / 3))
                elif self.rx.resync_due(_now_ns()):
                    self.resyncs += 1
                    await self._ask(True, min(3.0, self.lease_s / 3))
            except Unreachable:
                if trio.current_time() - self._heard > self.give_up_s:
                    raise Unreachable(f"node {self.node_id} has not answered for {self.give_up_s:g} s (is it "
                                      f"running?); the {self.feed} feed there has ended") from None
                self._renew_at = trio.current_time() + 0.25
            wait = max(0.0, self._renew_at - trio.current_time())
            if not self.rx.synced:
                wait = min(wait, 0.1)  # look again soon whether a snapshot is due
            with trio.move_on_after(wait):
                return await self._recv.receive()

    def _on_ack(self, ack: FeedAck) -> None:
        self.rx.on_ack(ack, _now_ns())

    def _on_push(self, msg: FeedSnapshot | FeedDelta) -> None:
        self._heard = trio.current_time()
        up = self.rx.on_push(msg, _now_ns())
        if up is None:
            return
        try:
            self._send.send_nowait(up)
        except trio.WouldBlock:  # the owner is not keeping up: drop it, and start afresh from a snapshot
            self.overflows += 1
            self.rx.lost()
