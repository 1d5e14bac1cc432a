"""The physical floor, measured in the same run: UDP ping-pong on loopback between two processes,
with plain blocking sockets and with trio on both ends. Half the round trip is the best one-way
hop any node-to-node figure can reach on this machine."""

from __future__ import annotations

import multiprocessing as mp
import socket
import time
from typing import Any

from .stats import latency_summary


def _echo_plain(port_q: Any, n: int) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port_q.put(s.getsockname()[1])
    s.settimeout(10)
    try:
        for _ in range(n):
            d, a = s.recvfrom(2048)
            s.sendto(d, a)
    except OSError:
        pass


def _echo_trio(port_q: Any, n: int) -> None:
    import trio

    async def main() -> None:
        s = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        await s.bind(("127.0.0.1", 0))
        port_q.put(s.getsockname()[1])
        with trio.move_on_after(30):
            for _ in range(n):
                d, a = await s.recvfrom(2048)
                await s.sendto(d, a)
    trio.run(main)


def _client_plain(port: int, n: int, warm: int, gap_s: float = 0.0) -> list[int]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    out = []
    for i in range(n):
        t = time.perf_counter_ns()
        s.sendto(b"x" * 64, ("127.0.0.1", port))
        s.recvfrom(2048)
        if i >= warm:
            out.append(time.perf_counter_ns() - t)
        if gap_s:
            time.sleep(gap_s)
    return out


def _client_trio(port: int, n: int, warm: int, gap_s: float = 0.0) -> list[int]:
    import trio

    async def main() -> list[int]:
        s = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        await s.bind(("127.0.0.1", 0))
        out = []
        for i in range(n):
            t = time.perf_counter_ns()
            await s.sendto(b"x" * 64, ("127.0.0.1", port))
            await s.recvfrom(2048)
            if i >= warm:
                out.append(time.perf_counter_ns() - t)
            if gap_s:
                await trio.sleep(gap_s)
        return out
    return trio.run(main)


def udp_rtt(kind: str = "trio", n: int = 5000, warm: int = 200, gap_s: float = 0.0) -> dict[str, float]:
    """Round trip p50/p99 (µs) of a 64-byte datagram between two processes; ``gap_s`` paces the
    pings like the benchmark paces its orders (idle cores wake up slower than busy ones)."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_echo_trio if kind == "trio" else _echo_plain, args=(q, n + warm), daemon=True)
    p.start()
    try:
        port = q.get(timeout=20)
        time.sleep(0.2)
        samples = (_client_trio if kind == "trio" else _client_plain)(port, n + warm, warm, gap_s)
    finally:
        p.join(timeout=5)
        if p.is_alive():
            p.terminate()
    return latency_summary(samples)
