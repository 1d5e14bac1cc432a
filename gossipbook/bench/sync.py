"""``bench sync``: an order submitted at node A until it is applied at node B, node processes on
loopback all stamping with the host's monotonic clock; beside half the UDP round trip (trio and
plain sockets) measured in the same run. Eventual mode (2 nodes) and strong mode (3 nodes: a
sequencer needs a majority that survives one loss), with the client's ack latency in each."""

from __future__ import annotations

import random
import statistics
import time
from typing import Any

import trio

from ..core.ops import NEW
from ..core.wire import ClientSubmit
from .floor import udp_rtt
from .procs import ProcCluster, wait_leader
from .stats import latency_summary


async def _submit_stream(cfg: Any, node: str, n: int, gap_s: float, seed: int) -> tuple[dict[str, int], list[int]]:
    """Send ``n`` orders to ``node`` one at a time (each waits for its reply, ack level
    ``accepted``); returns each request's send time (monotonic ns) and the ack latencies of the oks."""
    from ..node.client import Client

    rng = random.Random(seed)
    sent: dict[str, int] = {}
    acks: list[int] = []
    async with Client(cfg) as c:
        for i in range(n):
            req = c.new_req()
            msg = ClientSubmit(req, NEW, cfg.instruments[0].symbol, "", i % 2, 10_000 + rng.randint(-50, 50),
                               rng.randint(1, 5), 0, 0, 2000)
            t = sent[req] = time.monotonic_ns()
            rep = await c.request(node, msg, req, 2.0)
            if rep.code == 0:
                acks.append(time.monotonic_ns() - t)
            await trio.sleep(gap_s)
    return sent, acks


def _one_mode(mode: str, n: int, gap_s: float, seed: int, floor_p50: float) -> dict[str, Any]:
    """Eventual: the op stamped at A (its trace) until it enters B's op-set. Strong: the client's
    send to A (the leader) until B folds the committed entry -- A's append time is not traced, so
    this includes the client's hop to A (about one floor) and the commit round. Both: the client's
    ack latency (send to reply; eventual acks at ``accepted``, strong only once committed)."""
    with ProcCluster(2 if mode == "eventual" else 3, mode=mode) as pc:
        a = "n1" if mode == "eventual" else wait_leader(pc.cfg, pc.cfg.ids, 10.0)[0]
        b = next(i for i in pc.cfg.ids if i != a)
        t0 = time.perf_counter()
        sent, acks = trio.run(_submit_stream, pc.cfg, a, n, gap_s, seed)
        time.sleep(0.3)
        elapsed = time.perf_counter() - t0
        traces = pc.stop()
    ta, tb = traces.get(a, {}), traces.get(b, {})
    stages: dict[str, float] = {}
    if mode == "eventual":
        keys = [k for k in ta if k in tb and k.startswith(f"{a}:")]
        lat = [tb[k] - ta[k] for k in keys]
        stages = _stages(keys, ta, tb, pc.stages.get(a, {}), pc.stages.get(b, {}))
    else:
        lat = [tb[r] - t for r, t in sent.items() if r in tb]
    s = latency_summary(lat)
    ack = latency_summary(acks)
    return {**s, "floor_p50_us": floor_p50, "ratio": round(s["p50_us"] / floor_p50, 2) if floor_p50 else None,
            "ack_p50_us": ack["p50_us"], "ack_p99_us": ack["p99_us"], "nodes": len(traces), "a": a, "b": b,
            "orders": n, "acked": len(acks), "elapsed_s": round(elapsed, 2), **stages}


def _stages(keys: list[str], ta: dict[str, int], tb: dict[str, int], sa: dict[str, list[int]],
            sb: dict[str, list[int]]) -> dict[str, float]:
    """Medians of where the hop A -> B spends its time (from the runners' stage stamps): A's
    outbox and encoding; the datagram through the kernel until B's trio task runs; B decoding and
    handling its burst; B folding (and whatever else its loop does before the op is held)."""
    parts: dict[str, list[int]] = {"a_encode_us": [], "wire_wakeup_us": [], "b_decode_us": [], "b_fold_us": []}
    for k in keys:
        if k not in sa or k not in sb:
            continue
        (sent,), (woke, decoded) = sa[k], sb[k]
        parts["a_encode_us"].append(sent - ta[k])
        parts["wire_wakeup_us"].append(woke - sent)
        parts["b_decode_us"].append(decoded - woke)
        parts["b_fold_us"].append(tb[k] - decoded)
    return {name: round(statistics.median(v) / 1e3, 1) for name, v in parts.items() if v}


def run_sync(n: int = 2000, gap_s: float = 0.001, seed: int = 1,
             modes: tuple[str, ...] = ("eventual", "strong")) -> dict[str, Any]:
    floor_trio = udp_rtt("trio", n=min(n * 2, 5000))
    floor_plain = udp_rtt("plain", n=min(n * 2, 5000))
    # the same ping-pong paced like the orders below: a core that idles between messages wakes
    # up slower (cache, scheduler), and the orders leave one per gap, not back to back
    floor_paced = udp_rtt("trio", n=min(n, 1000), gap_s=gap_s)
    floor_p50 = floor_trio["p50_us"] / 2
    out: dict[str, Any] = {}
    for mode in modes:
        one = _one_mode(mode, n, gap_s, seed, floor_p50)
        out[mode] = {**one, "floor_p99_us": floor_trio["p99_us"] / 2, "plain_floor_p50_us": floor_plain["p50_us"] / 2,
                     "paced_floor_p50_us": floor_paced["p50_us"] / 2,
                     "ratio_paced": round(one["p50_us"] / (floor_paced["p50_us"] / 2), 2)}
    return {**out, "floor_rtt_trio": floor_trio, "floor_rtt_plain": floor_plain, "floor_rtt_trio_paced": floor_paced}
