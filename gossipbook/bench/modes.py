"""Eventual vs strong through the client protocol: ack latency at a fixed rate, and the highest rate.

``python -m gossipbook.bench.modes [--nodes 3] [--orders 3000] [--rate 500] [--shards 1,2,4] [--json]`` starts the
same cluster in each mode (node processes on loopback, no data dirs) and runs ``gossipbook load``
against it twice: at ``--rate`` (ack latency p50 / p99 / p99.9 from the load tool's HDR histogram)
and unthrottled with 64 requests in flight (acked actions per second). About 5% of actions are
rejected in both modes (cancels and amends of orders already filled): the load tool's flow. Eventual acks at ``accepted``
(stamped and folded on the node asked); strong only once the entry is committed on a majority and
folded, which is the price the numbers show.

``--shards 1,2,4`` then measures strong mode's capacity by sequencer groups (``bench/shards.py``: 4
nodes, 4 instruments in K shards, every request to its shard's leader), beside that baseline.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

from .procs import ProcCluster
from .shards import parse_shards, run_shards, table


def _load(pc: ProcCluster, orders: int, rate: int, concurrency: int = 64) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "gossipbook", "load", "-c", str(pc.config_path), "--orders",
                          str(orders), "--rate", str(rate), "--concurrency", str(concurrency), "--json"],
                         capture_output=True, text=True, timeout=300)
    if out.returncode not in (0, 1):
        raise RuntimeError(f"gossipbook load failed ({out.returncode}): {out.stderr.strip()[-500:]}")
    return json.loads(out.stdout)


def run_modes(nodes: int = 3, orders: int = 3000, rate: int = 500, max_rate: int = 100_000) -> dict[str, Any]:
    res: dict[str, Any] = {}
    for mode in ("eventual", "strong"):
        with ProcCluster(nodes, trace=False, mode=mode) as pc:
            paced = _load(pc, orders, rate)
            flat = _load(pc, orders, max_rate)
        res[mode] = {"nodes": nodes, "rate": rate, "paced": paced, "unthrottled": flat}
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gossipbook.bench.modes", description=__doc__.split("\n")[0])
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--orders", type=int, default=3000)
    p.add_argument("--rate", type=int, default=500, help="paced run: actions per second (default 500)")
    p.add_argument("--shards", default="", metavar="K,K,...",
                   help="also strong mode with K sequencer groups on 4 nodes (bench/shards.py), e.g. 1,2,4")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    ks = parse_shards(a.shards) if a.shards else []
    r = run_modes(a.nodes, a.orders, a.rate)
    rows = run_shards(ks, orders=max(a.orders, 2000)) if ks else []
    if a.json:
        print(json.dumps({**r, "shards": rows} if ks else r, indent=2))
        return 0
    for mode, v in r.items():
        pl, fl = v["paced"]["ack_latency_ms"], v["unthrottled"]
        acked_per_s = fl["acked"] / fl["elapsed_s"] if fl["elapsed_s"] else 0.0
        print(f"{mode:8} {a.nodes} nodes: at {a.rate}/s ack p50 {pl['p50']:.2f} ms, p99 {pl['p99']:.2f} ms, "
              f"p99.9 {pl['p999']:.2f} ms; unthrottled {acked_per_s:,.0f} acked/s "
              f"(ack p50 {fl['ack_latency_ms']['p50']:.1f} ms)")
    for line in table(rows):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
