"""``bench scale``: 2, 4, 8 (16) node processes on this machine; one node stamps a steady flow, we
measure how the fan-out grows: datagrams per op, stamp-to-applied latency to every peer, and the
time from the last op stamped to the last op applied everywhere. Nodes are separate processes
sharing 2 cores, so past 2 nodes the figures include CPU contention, not only the protocol."""

from __future__ import annotations

import gc
import time
from typing import Any

from ..core.replica import Replica
from ..workload.history import make_history
from .procs import ProcCluster
from .stats import latency_summary


def run_scale(n: int, ops: int = 1000, rate: int = 1000) -> dict[str, Any]:
    with ProcCluster(n, node_args=[]) as pc:
        pc.procs["n1"].terminate()
        pc.procs["n1"].wait()
        import subprocess
        import sys
        args = [sys.executable, "-m", "gossipbook", "node", "-c", str(pc.config_path), "--id", "n1",
                "--log-level", "warning", "--trace", str(pc.dir / "n1.trace.json"), "--generate", f"{rate}:{ops}"]
        pc.procs["n1"] = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pc.wait_ready()
        time.sleep(ops / rate + 1.5)
        import trio

        from ..cli.status import gather_status
        st = trio.run(gather_status, pc.cfg, 1.5)
        traces = pc.stop()
    origin = traces.get("n1", {})
    lat, last_applied = [], 0
    for nid, tr in traces.items():
        if nid == "n1":
            continue
        for k, t in tr.items():
            if k.startswith("n1:") and k in origin:
                lat.append(t - origin[k])
                last_applied = max(last_applied, t)
    s = latency_summary(lat)
    dgrams = sum(x.get("counters", {}).get("dgrams_out", 0) for x in st)
    total = len(origin)
    return {"nodes": n, "process_per_node": True, "ops": total, "p50_us": s["p50_us"], "p99_us": s["p99_us"],
            "msgs_per_op": round(dgrams / total, 2) if total else None,
            "tail_s": round((last_applied - max(origin.values())) / 1e9, 3) if origin and last_applied else None}


def run_memory(n_ops: int = 100_000) -> dict[str, Any]:
    """Memory per million ops held, before and after compaction (one replica; tracemalloc counts
    every object the replica keeps, the ops themselves included)."""
    import tracemalloc

    import msgpack

    from ..core.ops import Op

    blob = msgpack.packb(sorted(make_history(n_ops, origins=4, seed=5, deliver_every=1)))
    gc.collect()
    tracemalloc.start()
    r = Replica("n1", members=["n1"])
    rows = msgpack.unpackb(blob, use_list=False)
    for i in range(0, len(rows), 512):
        r.receive([Op(*x) for x in rows[i:i + 512]], 1 << 62)
    del rows
    r.new_ops = []
    gc.collect()
    held = tracemalloc.get_traced_memory()[0]
    r.observe_vv("n1", r.vv)
    r.hlc.wall = 1 << 62
    compacted = r.compact()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    per_m = 1_000_000 / n_ops
    return {"ops": n_ops, "mb_per_million_ops": round(held * per_m / 2**20, 1),
            "mb_per_million_after_compaction": round(after * per_m / 2**20, 1), "compacted_ops": compacted,
            "resting_orders": sum(len(b) for b in r.books.values())}
