"""Socket timestamps on loopback (issue 18): the kernel's receive time of every datagram, and clock
samples built from it by two real runners whose clocks differ by a known skew, each of which must
hold that skew (the bound is sound) however busy the loop was."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest
import trio

from gossipbook.config import load
from gossipbook.core.clocksync import ClockSync
from gossipbook.node.runner import NodeRunner, WallClock
from gossipbook.node.transport import Endpoint

from .harness import write_config

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_TIMESTAMPNS is Linux's")


@linux
def test_kernel_receive_times_lie_between_the_send_and_the_read() -> None:
    ep = Endpoint.bind(("127.0.0.1", 0), rx_timestamps=True)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        assert ep.rx_timestamps
        before = time.time_ns()
        for i in range(5):
            tx.sendto(b"x%d" % i, ep.addr)
        time.sleep(0.02)  # the loop is "busy": the datagrams wait in the buffer
        got = ep.drain()
        after = time.time_ns()
        assert [d for d, _ in got] == [b"x%d" % i for i in range(5)]
        assert len(ep.rx_stamps) == 5 and ep.rx_stamps == sorted(ep.rx_stamps)
        assert all(before <= s <= after for s in ep.rx_stamps), (before, ep.rx_stamps, after)
        assert after - ep.rx_stamps[-1] >= 15_000_000  # the arrival, not the read 20 ms later
        assert ep.counters["dgrams_in"] == 5
    finally:
        tx.close()
        ep.close()
    plain = Endpoint.bind(("127.0.0.1", 0))  # a client's endpoint: no stamps asked, none kept
    try:
        assert not plain.rx_timestamps and plain.rx_stamps == []
    finally:
        plain.close()


@linux
def test_samples_from_socket_times_hold_a_known_skew(tmp_path: Path) -> None:
    cfg = load(write_config(tmp_path / "cluster.toml", 2))
    skew = 7_000_000  # n2's clock reads 7 ms more than n1's: every sample's interval must hold it
    a = NodeRunner(cfg, "n1", clock=WallClock(0), seed=1)
    b = NodeRunner(cfg, "n2", clock=WallClock(skew, 0.0), seed=2)
    samples: list[tuple[int, int, int, int]] = []

    class Recorder(ClockSync):
        __slots__ = ()

        def add_sample(self, peer: str, t1: int, t2: int, t3: int, t4: int) -> bool:
            samples.append((t1, t2, t3, t4))
            return super().add_sample(peer, t1, t2, t3, t4)

    a.core.clock = Recorder(bound=a.core.clock.bound)

    async def main() -> None:
        async with trio.open_nursery() as n:
            await n.start(a.serve)
            await n.start(b.serve)
            with trio.move_on_after(20):
                while len(samples) < 12:
                    time.sleep(0.002)  # a busy loop now and then: it must not widen the samples
                    await trio.sleep(0.05)
            # both stamp orders at once: a's fairness meter places each (n2's by its measured offset)
            n.start_soon(a.generate, 0, 30, 1)
            n.start_soon(b.generate, 0, 30, 2)
            with trio.move_on_after(20):
                while a.fairness is not None and _seen(a.fairness.counters) < 60:
                    await trio.sleep(0.05)
            n.cancel_scope.cancel()

    trio.run(main)
    assert a.endpoint is not None and a.endpoint.rx_timestamps
    assert len(samples) >= 12, samples
    for t1, t2, t3, t4 in samples:
        assert t3 - t4 <= skew <= t2 - t1, (t1, t2, t3, t4)
        assert t1 <= t4 and t2 <= t3
    st = a.status()
    assert st["clock"]["status"] == "synced" and st["peers"]["n2"]["bound_us"] is not None
    fair = st["fairness"]
    # every order seen once: placed, or (n1's, stamped after n2's ops pulled its HLC 7 ms ahead) not
    assert _seen(fair) == 60 and fair["unknown"] == 0 and fair["orders"] >= 20, fair
    assert 0 <= fair["tied_orders"] <= fair["orders"]
    assert fair["coin_toss_rate"] == fair["tied_orders"] / fair["orders"]
    assert st["counters"]["fairness"]["orders"] == fair["orders"]


def _seen(c: dict[str, int]) -> int:
    return c["orders"] + c["hlc_ahead"] + c["unknown"] + c["origins_over"]
