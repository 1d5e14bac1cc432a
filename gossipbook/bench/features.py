"""What the per-op features added beside the fold cost, in one process: ``python -m gossipbook.bench.features``.

A node pays, for every op that enters its op-set, the fold (the throughput floor: decode,
authenticate, ``Replica.receive``) and, in the shell, the fairness meter (``FairnessMeter.observe``,
eventual mode) and, with a data dir, an audit row (``AuditTrail.ops``); for every op it stamps, the
eager push's encoding (``push``: packed once, sealed for each of ``PEERS`` peers, as ``NodeRunner._flush`` does). Profiles of whole nodes
mix these with the loop and the network; this measures each alone on the same op stream, rounds
alternating so a slow minute hurts all alike, and reports µs per op (medians) and each as a share
of the floor. The fairness meter is fed a clock bound that knows every peer (±40 µs), so every
order is placed and paired: its worst case, not the ``unknown`` shortcut of an unsynced node.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.clockbound import ClockBound
from ..core.fairness import FairnessMeter
from ..core.ops import Op
from ..core.replica import Replica
from ..core.wire import decode, encode_ops, encode_packed_ops, pack_ops
from ..node.audit import AuditLog, AuditTrail
from ..node.gctune import tuned_gc
from ..workload.history import make_history

KEY = bytes(range(32))
BATCH = 16  # ops per observe / audit call: about what one loop iteration of a busy node folds
PEERS = 3  # a 4-node cluster: each stamped batch is pushed to three peers


class _KnownPeers:
    """A clock bound that places every peer at offset 0 ± 40 µs (``FairnessMeter``'s protocol)."""

    def peer_interval(self, peer: str, now: int) -> tuple[int, int, str] | None:
        return (-40_000, 40_000, "synced")


def _floor(frames: list[bytes]) -> int:
    # the workload's origins are members: a replica refuses non-members' ops, and a floor that
    # folds nothing measures decoding alone (it did from 61addcc until this fix)
    r = Replica("floor", members=["floor", "n1", "n2", "n3", "n4"])
    n = 0
    for f in frames:
        ops = decode(f, KEY).msg.ops
        r.receive(ops, 1 << 62)
        n += len(ops)
    return n


def _fairness(batches: list[list[Op]], me: str) -> FairnessMeter:
    m = FairnessMeter(me)
    bound = _KnownPeers()
    for b in batches:
        m.observe(b, 0, bound)
    return m


def _audit(batches: list[list[Op]], me: str, d: Path) -> AuditTrail:
    d.mkdir()
    trail = AuditTrail(AuditLog.open(d, fsync="never"), me, time.time_ns, ClockBound(me, []))
    for b in batches:
        trail.ops(b)
    trail.close()
    return trail


def _push(batches: list[list[Op]]) -> int:
    counter = 1
    for b in batches:
        packed = pack_ops(b)
        for p in range(PEERS):
            counter += len(encode_packed_ops(packed, "bench", counter, KEY, dst=f"p{p}", label="bench"))
    return counter


def run_features(n_ops: int = 20_000, rounds: int = 5) -> dict[str, Any]:
    """µs per op of the floor, the fairness meter, audit rows and the push's encoding (medians over ``rounds``)."""
    ops = sorted(make_history(n_ops, origins=4, seed=3, deliver_every=1))
    frames = encode_ops(ops, "bench", 1, KEY)
    batches = [ops[i:i + BATCH] for i in range(0, len(ops), BATCH)]
    me = ops[0].origin
    samples: dict[str, list[float]] = {"floor": [], "fairness": [], "audit": [], "push": []}
    counts: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="gossipbook-features-") as tmp, tuned_gc():
        for r in range(rounds):
            runs: dict[str, Callable[[], Any]] = {
                "floor": lambda: _floor(frames),
                "fairness": lambda: _fairness(batches, me),
                "audit": lambda r=r: _audit(batches, me, Path(tmp) / f"a{r}"),
                "push": lambda: _push(batches),
            }
            for name, fn in runs.items():
                t = time.perf_counter()
                out = fn()
                samples[name].append((time.perf_counter() - t) * 1e6 / len(ops))
                if name == "fairness":
                    counts["fairness"] = dict(out.counters)
                elif name == "audit":
                    counts["audit_rows"] = out.counters["audit_rows"]
    med = {k: round(statistics.median(v), 3) for k, v in samples.items()}
    return {"ops": len(ops), "rounds": rounds, "us_per_op": med,
            "share_of_floor": {k: round(med[k] / med["floor"], 3) for k in ("fairness", "audit", "push")},
            "samples": {k: [round(x, 3) for x in v] for k, v in samples.items()}, **counts}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gossipbook.bench.features", description=__doc__)
    ap.add_argument("--ops", type=int, default=20_000, help="ops in the stream (default 20000)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds, each runs every part once (default 5)")
    ap.add_argument("--json", action="store_true", help="print JSON")
    a = ap.parse_args(argv)
    if a.ops < 1 or a.rounds < 1:
        ap.error("--ops and --rounds must be at least 1")
    res = run_features(a.ops, a.rounds)
    if a.json:
        print(json.dumps(res, indent=2))
    else:
        for k, v in res["us_per_op"].items():
            share = res["share_of_floor"].get(k)
            print(f"{k:9} {v:8.2f} us/op" + (f"  ({share:.2f}x the floor)" if share is not None else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
