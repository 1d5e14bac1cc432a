"""The UDP endpoint of a node or client: one non-blocking socket driven by trio.

Receiving drains every datagram that is already queued after one readiness wakeup (one trio
checkpoint per burst, not per datagram), which is where a Python UDP loop loses most of its time.
Sending never blocks the node: if the kernel buffer is full we wait for writability once, then drop
and count (UDP may lose a datagram anyway; anti-entropy repairs it).
"""

from __future__ import annotations

import errno
import random
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field

import trio

from ..core.errors import UsageError

Addr = tuple[str, int]


class PortInUse(UsageError):
    exit_code = 3


@dataclass(slots=True)
class FaultFilter:
    """Test-only faults in the send path: a seeded drop rate and peers to which nothing goes.

    ``blocked`` holds addresses; the demo and the tests change it at run time to partition and heal.
    ``delay_s`` delays every datagram (delivery is then reordered by the jitter) for latency tests.
    """

    drop_rate: float = 0.0
    blocked: set[Addr] = field(default_factory=set)
    seed: int = 0
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.drop_rate < 1.0:
            raise UsageError("the drop rate must be in [0, 1)")
        self.rng = random.Random(self.seed)

    def drops(self, addr: Addr) -> bool:
        if addr in self.blocked:
            return True
        return self.drop_rate > 0 and self.rng.random() < self.drop_rate


class Endpoint:
    """A bound UDP socket with batched receive and counted, non-blocking send."""

    def __init__(self, sock: socket.socket, faults: FaultFilter | None = None) -> None:
        self.sock = sock
        self.faults = faults
        self.counters = {"dgrams_in": 0, "bytes_in": 0, "dgrams_out": 0, "bytes_out": 0,
                         "send_dropped_fault": 0, "send_dropped_full": 0, "send_errors": 0}

    @classmethod
    def bind(cls, addr: Addr, faults: FaultFilter | None = None, rcvbuf: int = 4 << 20) -> Endpoint:
        fam = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_DGRAM)
        try:
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                try:
                    s.setsockopt(socket.SOL_SOCKET, opt, rcvbuf)
                except OSError:
                    pass
            s.setblocking(False)
            s.bind(addr)
        except OSError as e:
            s.close()
            if e.errno == errno.EADDRINUSE:
                raise PortInUse(f"address {addr[0]}:{addr[1]} is already in use (another node running?)") from None
            raise UsageError(f"cannot bind {addr[0]}:{addr[1]}: {e.strerror}") from None
        return cls(s, faults)

    @property
    def addr(self) -> Addr:
        return self.sock.getsockname()[:2]

    async def recv_burst(self, max_items: int = 256) -> list[tuple[bytes, Addr]]:
        """Wait until readable, then take every queued datagram (up to ``max_items``)."""
        await trio.lowlevel.wait_readable(self.sock)
        return self.drain(max_items)

    def drain(self, max_items: int = 256) -> list[tuple[bytes, Addr]]:
        """Every datagram already queued (up to ``max_items``), without waiting."""
        out: list[tuple[bytes, Addr]] = []
        recv = self.sock.recvfrom
        while len(out) < max_items:
            try:
                data, addr = recv(65_535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # e.g. ICMP port unreachable surfaced on Linux: not our problem here
                continue
            out.append((data, addr[:2]))
            self.counters["bytes_in"] += len(data)
        self.counters["dgrams_in"] += len(out)
        return out

    def send_now(self, data: bytes, addr: Addr) -> bool:
        """Try to send without waiting; False if the kernel buffer is full."""
        f = self.faults
        if f is not None and f.drops(addr):
            self.counters["send_dropped_fault"] += 1
            return True
        try:
            self.sock.sendto(data, addr)
        except BlockingIOError:
            return False
        except OSError:
            self.counters["send_errors"] += 1
            return True
        self.counters["dgrams_out"] += 1
        self.counters["bytes_out"] += len(data)
        return True

    async def send_all(self, items: Iterable[tuple[bytes, Addr]]) -> None:
        for data, addr in items:
            if not self.send_now(data, addr):
                with trio.move_on_after(0.05):
                    await trio.lowlevel.wait_writable(self.sock)
                if not self.send_now(data, addr):
                    self.counters["send_dropped_full"] += 1

    def close(self) -> None:
        self.sock.close()
