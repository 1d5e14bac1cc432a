"""The node loop waits for datagrams and its core's next deadline in one cancel scope that lasts
across wakeups (node/runner.py, ``_loop``): its deadline must still wake an idle node, a flood of
datagrams must not starve the timers, every datagram of the flood must be taken (and counted), and
the loop must keep serving after each deadline. Real loopback socket, one node (its peer absent)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import trio

from gossipbook.bench.procs import cluster_text
from gossipbook.config import load
from gossipbook.node.runner import NodeRunner

FLOOD = 3000


async def test_deadlines_wake_an_idle_node_and_a_flood_neither_starves_them_nor_is_lost(tmp_path: Path) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text(cluster_text(2))
    path.chmod(0o600)
    runner = NodeRunner(load(path), "n1", seed=1)
    ticks: list[int] = []
    tick = runner.core.tick

    def counted(now: int) -> None:
        ticks.append(now)
        tick(now)

    runner.core.tick = counted  # type: ignore[method-assign]
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(runner.serve)
            assert runner.endpoint is not None
            addr: Any = runner.endpoint.addr
            await trio.sleep(0.6)  # idle: nothing but its deadlines can wake it
            idle = len(ticks)
            before = len(ticks)
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                for i in range(FLOOD):  # ~0.6 s of junk in small bursts: the loop never waits long
                    s.sendto(b"junk %d" % i, addr)
                    if i % 10 == 9:
                        await trio.sleep(0.002)
            finally:
                s.close()
            flood_ticks = len(ticks) - before
            with trio.move_on_after(5):
                while runner.dropped.get("malformed", 0) < FLOOD:
                    await trio.sleep(0.01)
            await trio.sleep(0.3)  # and it still ticks afterwards
            after = len(ticks) - before - flood_ticks
            nursery.cancel_scope.cancel()
    # anti-entropy rounds every 100 ms (and membership probes) set the deadlines
    assert idle >= 4, f"only {idle} ticks in 0.6 s idle"
    assert flood_ticks >= 3, f"only {flood_ticks} ticks during the flood"
    assert after >= 1
    assert runner.dropped.get("malformed", 0) == FLOOD  # every datagram drained and counted once
    assert runner.endpoint is not None and runner.endpoint.counters["dgrams_in"] >= FLOOD
