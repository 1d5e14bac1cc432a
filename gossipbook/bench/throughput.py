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
#: the floor's replica must count the workload's origins as members: a replica refuses ops of
#: non-members (``non_member_ops``), and a floor that folds nothing measures only decoding
FLOOR_MEMBERS = ("floor", "n1", "n2", "n3", "n4")


def floor_ops_per_s(n_ops: int) -> float:
    """Decode + authenticate + fold the same kind of op stream in one process, no sockets."""
    ops = sorted(make_history(n_ops, origins=4, seed=3, deliver_every=1))
    frames = encode_ops(ops, "bench", 1, KEY)

    from ..node.gctune import tuned_gc

    def run() -> int:
        r = Replica("floor", members=FLOOR_MEMBERS)
        for f in frames:
            r.receive(decode(f, KEY).msg.ops, 1 << 62)
        assert r.counters["ops_applied"] == len(ops), r.counters  # every op folded, none refused
        return len(ops)
    with tuned_gc():  # the nodes run with it: the floor must too
        return rate(run, 3)


#: the shortest run ``bench throughput`` reports: a burst that fits in socket buffers and queues is
#: not a throughput (a 0.16 s run of 12k ops read 2x the steady rate on a 16-core box)
STEADY_MIN_S = 2.0


def run_throughput(nodes: int = 4, per_node: int = 20_000, timeout_s: float = 120,
                   fsync: str | None = None, min_s: float = 0.0) -> dict[str, Any]:
    """One run of ``per_node`` ops stamped by each node; with ``min_s``, a run shorter than that is
    discarded and run again with ``per_node`` scaled to last about ``1.25 * min_s`` (twice at most),
    so what is reported is a steady state; ``per_node`` and ``attempts`` say what it took."""
    attempts = 0
    while True:
        attempts += 1
        r = _run_once(nodes, per_node, timeout_s, fsync)
        elapsed = r["elapsed_s"]
        if not min_s or not r["complete"] or elapsed >= min_s or attempts >= 3:
            r.update(per_node=per_node, attempts=attempts, min_s=min_s)
            return r
        per_node = int(per_node * min(50.0, 1.25 * min_s / max(elapsed, 1e-3))) + 1


def _run_once(nodes: int, per_node: int, timeout_s: float, fsync: str | None) -> dict[str, Any]:
    """``fsync`` (always / batch / never) gives every node a data dir with that policy.

    Also the node processes' CPU time over the run (``cpu_us_per_op``: per op, per node), which
    splits the ratio to the floor into the share of a core each node gets and the CPU it spends
    per op beside the floor's. ``cores_busy`` is that CPU time over the wall time of the same
    window (``cpu_window_s``: from just before the first op is stamped until every node is seen
    holding every op), so it can never exceed the cores the machine has (less the sampling
    resolution, one clock tick per node over the window); dividing by ``elapsed_s`` (the traces'
    first stamp to last fold, a shorter window) reported 2.73 cores on a 2-core box."""
    import trio

    from ..cli.status import gather_status

    total = nodes * per_node
    start = time.monotonic() + 2.0 + 0.4 * nodes  # every node starts stamping at the same instant
    with ProcCluster(nodes, extra_config="", node_args=["--generate", f"0:{per_node}:@{start:.3f}"],
                     fsync=fsync) as pc:
        deadline = time.monotonic() + timeout_s
        time.sleep(max(0.0, start - 0.05 - time.monotonic()))
        wall0 = time.monotonic()  # the CPU window: wall0 .. wall1 encloses both CPU samples
        cpu0 = pc.cpu_seconds()
        while time.monotonic() < deadline:
            # the cheap progress poll: a status poll digests every book on every node (CPU the
            # nodes would otherwise spend replicating)
            pr = trio.run(gather_status, pc.cfg, 1.0, "progress")
            if all(p.get("reachable") and p.get("ops", 0) >= total and not p.get("pending") for p in pr):
                break
            time.sleep(0.1)
        cpu1 = pc.cpu_seconds()
        wall1 = time.monotonic()
        statuses = trio.run(gather_status, pc.cfg, 1.0)
        counters = [s.get("counters", {}) for s in statuses]
        traces = pc.stop()
    first = min(min(t.values()) for t in traces.values() if t)
    last = max(max(t.values()) for t in traces.values() if t)
    held = min(len(t) for t in traces.values())
    elapsed = (last - first) / 1e9
    dgrams = sum(c.get("dgrams_out", 0) for c in counters)
    bytes_out = sum(c.get("bytes_out", 0) for c in counters)
    cpu = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
    window = wall1 - wall0
    built = {s.get("compiled") for s in statuses if s.get("reachable", True)}
    return {"nodes": nodes, "fsync": fsync, "ops": total, "complete": held >= total, "elapsed_s": round(elapsed, 3),
            # whether the nodes folded with the compiled build (None: a node did not say)
            "compiled": built.pop() if len(built) == 1 else None,
            "ops_per_s": round(total / elapsed) if elapsed else None,
            "cpu_us_per_op": round(cpu * 1e6 / (total * nodes), 2) if cpu is not None else None,
            "cores_busy": round(cpu / window, 2) if cpu is not None and window > 0 else None,
            "cpu_window_s": round(window, 3),
            "datagrams_per_s": round(dgrams / elapsed) if elapsed else None,
            "ops_per_datagram": round(total * (nodes - 1) / dgrams, 2) if dgrams else None,
            "bytes_per_op": round(bytes_out / (total * (nodes - 1)), 1) if total else None}
