"""A tiny FIX 4.4 initiator for the tests, written with simplefix alone (none of gossipbook.fix), so
the gateway is checked against an implementation that does not share its code.

It keeps its own sequence numbers, answers TestRequests, and records every message it receives in
``seen`` so a test can look back. Every wait is bounded by a timeout.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import simplefix
import trio


def stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H:%M:%S.%f")[:-3]


def field(m: simplefix.FixMessage, tag: int) -> str | None:
    v = m.get(tag)
    return None if v is None else v.decode()


class Initiator:
    def __init__(self, stream: trio.SocketStream, sender: str, target: str, password: str,
                 heartbeat: int = 30) -> None:
        self.stream = stream
        self.sender, self.target, self.password, self.heartbeat = sender, target, password, heartbeat
        self.next_out = 1
        self.next_in = 1
        self.parser = simplefix.FixParser()
        self.seen: list[simplefix.FixMessage] = []
        self._unread: list[simplefix.FixMessage] = []
        self.closed = False

    @classmethod
    async def connect(cls, port: int, sender: str, target: str = "GBX", password: str = "password-1",
                      heartbeat: int = 30) -> Initiator:
        return cls(await trio.open_tcp_stream("127.0.0.1", port), sender, target, password, heartbeat)

    def build(self, msg_type: str, fields: list[tuple[int, object]], seq: int | None = None,
              poss_dup: bool = False) -> bytes:
        m = simplefix.FixMessage()
        m.append_pair(8, "FIX.4.4", header=True)
        m.append_pair(35, msg_type, header=True)
        m.append_pair(49, self.sender, header=True)
        m.append_pair(56, self.target, header=True)
        if seq is None:
            seq = self.next_out
            self.next_out += 1
        m.append_pair(34, seq, header=True)
        m.append_pair(52, stamp(), header=True)
        if poss_dup:
            m.append_pair(43, "Y", header=True)
            m.append_pair(122, stamp(), header=True)
        for tag, value in fields:
            m.append_pair(tag, value)
        return m.encode()

    async def send(self, msg_type: str, fields: list[tuple[int, object]], seq: int | None = None,
                   poss_dup: bool = False) -> None:
        await self.stream.send_all(self.build(msg_type, fields, seq, poss_dup))

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def logon(self, reset: bool = False, password: str | None = None) -> simplefix.FixMessage:
        fields: list[tuple[int, object]] = [(98, 0), (108, self.heartbeat), (554, password or self.password)]
        if reset:
            self.next_out = self.next_in = 1
            fields.append((141, "Y"))
        await self.send("A", fields)
        return await self.expect(lambda m: field(m, 35) in ("A", "5"), 5)

    async def _read_one(self, deadline: float) -> simplefix.FixMessage | None:
        while True:
            m = self.parser.get_message()
            if m is not None:
                return m
            if self.closed:
                return None
            with trio.move_on_at(deadline):
                data = await self.stream.receive_some(65536)
                if not data:
                    self.closed = True
                    return None
                self.parser.append_buffer(data)
                continue
            return None

    async def expect(self, pred: Callable[[simplefix.FixMessage], bool], timeout: float = 5.0) -> simplefix.FixMessage:
        """The first message (unread so far) that ``pred`` accepts; TestRequests are answered on the way."""
        for i, m in enumerate(self._unread):
            if pred(m):
                del self._unread[i]
                return m
        deadline = trio.current_time() + timeout
        while True:
            m = await self._read_one(deadline)
            if m is None:
                raise AssertionError(f"{self.sender}: no matching message within {timeout} s "
                                     f"(closed={self.closed}); seen: {[str(x) for x in self.seen[-8:]]}")
            self.seen.append(m)
            seq = int(field(m, 34) or 0)
            if field(m, 43) != "Y" and seq >= self.next_in:
                self.next_in = seq + 1
            if field(m, 35) == "4" and field(m, 123) == "Y":
                self.next_in = max(self.next_in, int(field(m, 36) or 0))
            if field(m, 35) == "1":
                await self.send("0", [(112, field(m, 112))])
            if pred(m):
                return m
            self._unread.append(m)

    async def closed_within(self, timeout: float) -> bool:
        deadline = trio.current_time() + timeout
        while not self.closed:
            m = await self._read_one(deadline)
            if m is None:
                return self.closed
            self.seen.append(m)
        return True

    async def logout(self) -> simplefix.FixMessage:
        await self.send("5", [])
        return await self.expect(lambda m: field(m, 35) == "5", 5)

    async def aclose(self) -> None:
        await self.stream.aclose()


def is_er(exec_type: str, clordid: str | None = None) -> Callable[[simplefix.FixMessage], bool]:
    return lambda m: field(m, 35) == "8" and field(m, 150) == exec_type and \
        (clordid is None or field(m, 11) == clordid)

