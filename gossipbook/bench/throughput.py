"""``bench throughput``: how fast a 3- or 4-node cluster gets every op onto every replica.

Every node stamps its share of the orders itself (``node --generate 0:N``, as fast as it can), so
neither a client process nor the client protocol is the bottleneck. From the nodes' traces: the
time from the first op stamped anywhere until the last op is held everywhere. The floor is one
process decoding and applying the same batches (the frames a peer would receive), no network.
"""

from __future__ import annotations

import time
from typing import Any

from ..core.replica import Replica
from ..core.wire import decode, encode_ops
from ..workload.history import make_history
from .procs import ProcCluster
from .stats import rate

KEY = bytes(range(32))


def floor_ops_per_s(n_ops: int) -> float:
    """Decode + authenticate + fold the same kind of op stream in one process, no sockets."""
    ops = sorted(make_history(n_ops, origins=4, seed=3, deliver_every=1))
    frames = encode_ops(ops, "bench", 1, KEY)

    def run() -> int:
        r = Replica("floor", members=["floor"])
        for f in frames:
            r.receive(decode(f, KEY).msg.ops, 1 << 62)
        return len(ops)
    return rate(run, 3)


def run_throughput(nodes: int = 4, per_node: int = 20_000, timeout_s: float = 120,
                   fsync: str | None = None) -> dict[str, Any]:
    """``fsync`` (always / batch / never) gives every node a data dir with that policy."""
    total = nodes * per_node
    start = time.monotonic() + 2.0 + 0.4 * nodes  # every node starts stamping at the same instant
    with ProcCluster(nodes, extra_config="", node_args=["--generate", f"0:{per_node}:@{start:.3f}"],
                     fsync=fsync) as pc:
        deadline = time.monotonic() + timeout_s
        import trio

        from ..cli.status import gather_status
        while time.monotonic() < deadline:
            st = trio.run(gather_status, pc.cfg, 1.0)
            if all(s.get("reachable") and s.get("ops", 0) >= total for s in st):
                break
            time.sleep(0.2)
        counters = [s.get("counters", {}) for s in st]
        traces = pc.stop()
    first = min(min(t.values()) for t in traces.values() if t)
    last = max(max(t.values()) for t in traces.values() if t)
    held = min(len(t) for t in traces.values())
    elapsed = (last - first) / 1e9
    dgrams = sum(c.get("dgrams_out", 0) for c in counters)
    bytes_out = sum(c.get("bytes_out", 0) for c in counters)
    return {"nodes": nodes, "fsync": fsync, "ops": total, "complete": held >= total, "elapsed_s": round(elapsed, 3),
            "ops_per_s": round(total / elapsed) if elapsed else None,
            "datagrams_per_s": round(dgrams / elapsed) if elapsed else None,
            "ops_per_datagram": round(total * (nodes - 1) / dgrams, 2) if dgrams else None,
            "bytes_per_op": round(bytes_out / (total * (nodes - 1)), 1) if total else None}
