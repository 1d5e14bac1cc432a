"""The UDP endpoint of a node or client: one non-blocking socket driven by trio.

Receiving drains every datagram that is already queued after one readiness wakeup (one trio
checkpoint per burst, not per datagram), which is where a Python UDP loop loses most of its time.
Sending never blocks the node: if the kernel buffer is full we wait for writability once, then drop
and count (UDP may lose a datagram anyway; anti-entropy repairs it).

A node's endpoint asks the kernel for each datagram's receive time (``SO_TIMESTAMPNS``, Linux): the
clock-sync samples use it instead of the loop's wakeup, so the time a datagram waits in the socket
buffer while the loop is busy stays out of the clock's error bound (``rx_stamps``).
"""

from __future__ import annotations

import errno
import random
import socket
import struct
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field

import trio

from ..core.errors import UsageError

Addr = tuple[str, int]

#: Linux's SO_TIMESTAMPNS (= SCM_TIMESTAMPNS): Python's socket module does not name it
SO_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("@qq")  # struct timespec on 64-bit Linux: tv_sec, tv_nsec
_ANC_SPACE = socket.CMSG_SPACE(_TIMESPEC.size) if hasattr(socket, "CMSG_SPACE") else 0


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

    def __init__(self, sock: socket.socket, faults: FaultFilter | None = None, rx_timestamps: bool = False) -> None:
        self.sock = sock
        self.faults = faults
        #: the kernel's receive time (host wall clock, ns; 0: none) of each datagram of the last
        #: ``drain``, in its order; empty unless ``rx_timestamps`` is on
        self.rx_stamps: list[int] = []
        self.rx_timestamps = rx_timestamps
        self.counters = {"dgrams_in": 0, "bytes_in": 0, "dgrams_out": 0, "bytes_out": 0,
                         "send_dropped_fault": 0, "send_dropped_full": 0, "send_errors": 0}

    @classmethod
    def bind(cls, addr: Addr, faults: FaultFilter | None = None, rcvbuf: int = 4 << 20,
             rx_timestamps: bool = False) -> Endpoint:
        """``rx_timestamps``: ask for kernel receive times (Linux; off where it cannot be had)."""
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
        if rx_timestamps:
            rx_timestamps = sys.platform.startswith("linux") and _TIMESPEC.size == 16 and _ANC_SPACE > 0
            try:
                if rx_timestamps:
                    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            except OSError:
                rx_timestamps = False
        return cls(s, faults, rx_timestamps)

    @property
    def addr(self) -> Addr:
        return self.sock.getsockname()[:2]

    async def recv_burst(self, max_items: int = 256) -> list[tuple[bytes, Addr]]:
        """Wait until readable, then take every queued datagram (up to ``max_items``)."""
        await trio.lowlevel.wait_readable(self.sock)
        return self.drain(max_items)

    def drain(self, max_items: int = 256) -> list[tuple[bytes, Addr]]:
        """Every datagram already queued (up to ``max_items``), without waiting."""
        if self.rx_timestamps:
            return self._drain_stamped(max_items)
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

    def _drain_stamped(self, max_items: int) -> list[tuple[bytes, Addr]]:
        out: list[tuple[bytes, Addr]] = []
        stamps: list[int] = []
        recv = self.sock.recvmsg
        unpack = _TIMESPEC.unpack_from
        n_bytes = 0
        while len(out) < max_items:
            try:
                data, anc, _flags, addr = recv(65_535, _ANC_SPACE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue
            ts = 0
            for level, kind, raw in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(raw) >= 16:
                    sec, nsec = unpack(raw)
                    ts = sec * 1_000_000_000 + nsec
            out.append((data, addr[:2]))
            stamps.append(ts)
            n_bytes += len(data)
        self.rx_stamps = stamps
        self.counters["bytes_in"] += n_bytes
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

    async def wait_readable(self) -> None:
        """Until a datagram is queued (``drain`` then takes it)."""
        await trio.lowlevel.wait_readable(self.sock)

    async def send_all(self, items: Iterable[tuple[bytes, Addr]]) -> None:
        """Send each datagram; a full kernel buffer is waited on once (50 ms at most), then the
        datagram is dropped and counted. Without a full buffer this never yields to trio. The wait
        is shielded: a node's loop keeps one cancel scope across iterations whose deadline is its
        next timer (``NodeRunner._loop``), and a timer falling due must not cut a flush in half."""
        for data, addr in items:
            if not self.send_now(data, addr):
                with trio.CancelScope(deadline=trio.current_time() + 0.05, shield=True):
                    await trio.lowlevel.wait_writable(self.sock)
                if not self.send_now(data, addr):
                    self.counters["send_dropped_full"] += 1

    def close(self) -> None:
        self.sock.close()
