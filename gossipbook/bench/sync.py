"""``bench sync``: an order stamped at node A until it is applied at node B, two processes on
loopback, both stamped with the host's monotonic clock; beside half the UDP round trip (trio and
plain sockets) measured in the same run."""

from __future__ import annotations

import random
import time
from typing import Any

import trio

from ..core.ops import NEW
from ..core.wire import ClientSubmit
from .floor import udp_rtt
from .procs import ProcCluster
from .stats import latency_summary


async def _submit_stream(cfg: Any, node: str, n: int, gap_s: float, seed: int) -> int:
    from ..node.client import Client

    rng = random.Random(seed)
    acked = 0
    async with Client(cfg) as c:
        for i in range(n):
            req = c.new_req()
            msg = ClientSubmit(req, NEW, cfg.instruments[0].symbol, "", i % 2, 10_000 + rng.randint(-50, 50),
                               rng.randint(1, 5), 0, 0, 2000)
            rep = await c.request(node, msg, req, 2.0)
            acked += rep.code == 0
            await trio.sleep(gap_s)
    return acked


def run_sync(n: int = 2000, gap_s: float = 0.001, seed: int = 1) -> dict[str, Any]:
    floor_trio = udp_rtt("trio", n=min(n * 2, 5000))
    floor_plain = udp_rtt("plain", n=min(n * 2, 5000))
    with ProcCluster(2) as pc:
        t0 = time.perf_counter()
        acked = trio.run(_submit_stream, pc.cfg, "n1", n, gap_s, seed)
        time.sleep(0.3)
        elapsed = time.perf_counter() - t0
        traces = pc.stop()
    a, b = traces.get("n1", {}), traces.get("n2", {})
    lat = [b[k] - a[k] for k in a if k in b and k.startswith("n1:")]
    s = latency_summary(lat)
    floor_p50 = floor_trio["p50_us"] / 2
    return {"eventual": {**s, "floor_p50_us": floor_p50, "floor_p99_us": floor_trio["p99_us"] / 2,
                         "plain_floor_p50_us": floor_plain["p50_us"] / 2,
                         "ratio": round(s["p50_us"] / floor_p50, 2) if floor_p50 else None,
                         "orders": n, "acked": acked, "elapsed_s": round(elapsed, 2)},
            "floor_rtt_trio": floor_trio, "floor_rtt_plain": floor_plain}
