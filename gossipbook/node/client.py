"""Talking to a node as a client: authenticated request/reply over UDP with safe retries.

A request carries a request id; retrying with the same id is idempotent at the node (a retried
submit gets the first reply back, never a second order), so the client simply resends until it
hears back or its deadline passes. Every frame is signed with the credential of the account the
config names (a client file's account, or ``operator`` with cluster.toml); a reply is accepted only
if it verifies under the same credential.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import trio

from ..config import ClusterConfig
from ..core.errors import UsageError, WireError
from ..core.node import E_ADDRESS
from ..core.wire import ClientReply, Keys, QueryReply, decode, encode
from .transport import Endpoint


class Unreachable(UsageError):
    exit_code = 3


def new_req() -> str:
    """A fresh request id (random: a retry reuses it, a new request never does)."""
    return secrets.token_hex(8)


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
                if isinstance(msg, ClientReply | QueryReply):
                    # a node answers with the request id it was sent, less any cookie
                    ch = self._waiters.get(msg.req) or self._waiters.get(msg.req.rpartition("#")[0])
                    if ch is not None:
                        try:
                            ch.send_nowait(msg)
                        except (trio.WouldBlock, trio.BrokenResourceError):
                            pass

    def new_req(self) -> str:
        return new_req()

    async def request(self, node_id: str, make: Any, req: str, timeout: float = 3.0) -> Any:
        """Send ``make`` (a message with ``req``) to ``node_id`` until a reply comes or ``timeout``.

        A node answers a source that has not shown it receives at its address with at most 3x the
        request's bytes; a larger answer becomes an address check (``E_ADDRESS``, the cookie in
        ``message``): the request is sent again at once as ``<req>#<cookie>``, and that node's
        cookie goes with every later request to it (a retry: the node strips the cookie, so the
        request id stays ``req``)."""
        assert self.ep is not None
        node = self.cfg.node(node_id)
        send, recv = trio.open_memory_channel[Any](8)
        self._waiters[req] = send
        checks = 0
        try:
            with trio.move_on_after(timeout):
                while True:
                    self.counter = max(self.counter + 1, time.time_ns())  # time-based (TimeWindowGuard)
                    cookie = self._cookies.get(node_id)
                    msg = make._replace(req=f"{req}#{cookie}") if cookie and len(req) <= 47 else make
                    await self.ep.send_all([(encode(msg, self.id, self.counter, self._secret, self.account,
                                                    dst=node_id, label=self.cfg.name,
                                                    stamp_ms=time.time_ns() // 1_000_000), node.addr)])
                    with trio.move_on_after(self.retry_s):
                        rep = await recv.receive()
                        while rep.code == E_ADDRESS and checks < 4:
                            if rep.message != cookie:  # a fresh cookie: send again with it, now
                                checks += 1
                                self._cookies[node_id] = rep.message
                                break
                            rep = await recv.receive()  # a check answering an earlier try
                        else:
                            return rep
                        continue
        finally:
            del self._waiters[req]
        raise Unreachable(f"node {node_id} at {node.host}:{node.port} did not answer within {timeout:g} s "
                          f"(is it running? does it know account {self.account!r} with this credential?)")
