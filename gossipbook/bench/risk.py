"""Risk limits (issue 17): what the escrow costs against an exact central limit.

``python -m gossipbook.bench.risk [--orders N] [--json]``

- **False rejections.** Three in-process replicas of one cluster, no faults, gossip and risk ticks
  every 5 ms, heartbeats every 10 ms, one order every 10 ms (100 a second). One account with an open-buy limit of 100
  lots sends 80% of its orders to n1 and 10% to each of n2 and n3 (its cancels too: a cancel at
  another node than the order's frees rights only once final). It keeps its own open quantity
  at most 90% of the limit (it cancels its oldest orders before a buy that would pass it), so an
  exact central check would accept every order: every refusal is a false one. Reported: refusals
  per order, and the transfer traffic it cost (ASK and TRANSFER ops per order).
- **Latency.** ``Replica.submit_new`` of the same orders on a replica whose book holds 2,000
  resting orders, with and without the account's limits (all four kinds), alternating runs, the
  collector tuned as a node tunes it: what the risk check adds to stamping (p50, p99).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import deque
from typing import Any

from ..core.book import BUY, GTC, SELL
from ..core.errors import UnknownOrder
from ..core.replica import Replica
from ..core.risk import DIM_NOTIONAL, DIM_OPEN_BUY, DIM_OPEN_SELL, DIM_POSITION, RiskRefused
from .stats import latency_summary

IDS = ["n1", "n2", "n3"]
MS = 1_000_000
T0 = 10**12


def false_rejections(orders: int = 3000, skew: float = 0.8, use: float = 0.9, limit: int = 1000,
                     every_ms: int = 10, seed: int = 1) -> dict[str, Any]:
    rng = random.Random(seed)
    reps = {n: Replica(n, members=IDS) for n in IDS}
    now = T0
    reps["n1"].submit_limit("alice", "GBX", DIM_OPEN_BUY, limit, now, "lim", account="operator")

    def gossip(t: int, heartbeat: bool) -> None:
        """Every node's own new ops to every other node (a full mesh on a clean network)."""
        fresh = {}
        for a in IDS:
            r = reps[a]
            fresh[a] = [op for op in r.new_ops if op.origin == a]
            r.new_ops = []
        for b in IDS:
            rb = reps[b]
            for a in IDS:
                if a != b and fresh[a]:
                    rb.receive(fresh[a], t)
            if heartbeat:
                for a in IDS:
                    if a != b:
                        ra = reps[a]
                        rb.observe(a, ra.hlc.now(t), ra.vv.get(a, 0), t)
                        rb.observe_vv(a, ra.version_vector())

    def pick() -> str:
        x = rng.random()
        return "n1" if x < skew else "n2" if x < skew + (1 - skew) / 2 else "n3"

    open_orders: deque[tuple[str, int]] = deque()  # (order id, qty), oldest first
    open_qty = placed = refused = cancels = 0
    for i in range(orders * every_ms):
        now += MS
        if i % 5 == 0:
            gossip(now, heartbeat=i % 10 == 0)
            for r in reps.values():
                r.risk_tick(now)
        if i % every_ms:
            continue
        q = rng.randint(1, 5)
        while open_orders and open_qty + q > use * limit:
            oid, oq = open_orders.popleft()
            node = pick()
            try:
                reps[node].submit_cancel(oid, now, f"c{i}-{oid}", account="alice")
            except UnknownOrder:  # not replicated there yet: at the order's own node
                reps[oid.partition(":")[0]].submit_cancel(oid, now, f"c{i}-{oid}", account="alice")
            open_qty -= oq
            cancels += 1
        node = pick()
        try:
            op, _ = reps[node].submit_new("GBX", BUY, 9_000, q, GTC, now, f"o{i}", account="alice")
        except RiskRefused:
            refused += 1
            continue
        placed += 1
        open_orders.append((op.op_id, q))
        open_qty += q
    gossip(now, heartbeat=True)
    kinds: dict[int, int] = {}
    ops = {(op.origin, op.seq): op for r in reps.values() for op in r.ops()}
    for op in ops.values():
        kinds[op.kind] = kinds.get(op.kind, 0) + 1
    asks, transfers = kinds.get(8, 0), kinds.get(6, 0)
    return {"orders": orders, "orders_per_s": 1000 // every_ms, "skew": skew, "use": use, "limit": limit,
            "placed": placed, "refused": refused, "false_rejection_pct": round(100 * refused / orders, 3),
            "cancels": cancels, "asks": asks, "transfers": transfers,
            "transfer_ops_per_order": round((asks + transfers) / orders, 4)}


def submit_latency(orders: int = 3000, seed: int = 2, rounds: int = 3) -> dict[str, Any]:
    rng = random.Random(seed)
    flow = [(rng.choice((BUY, SELL)), rng.randint(1, 3)) for _ in range(orders)]

    def replica(limited: bool) -> Replica:
        r = Replica("n1", members=["n1"])
        now = T0
        for k in range(2000):  # a book with depth: other accounts' resting orders
            now += 1000
            r.submit_new("GBX", BUY if k % 2 else SELL, 8_000 - k % 500 if k % 2 else 12_000 + k % 500, 1, GTC, now,
                         f"d{k}", account="bob")
        if limited:
            for dim, v in ((DIM_OPEN_BUY, 10**9), (DIM_OPEN_SELL, 10**9), (DIM_POSITION, 10**9),
                           (DIM_NOTIONAL, 10**15)):
                r.submit_limit("alice", "GBX", dim, v, now, f"l{dim}", account="operator")
        return r

    samples: dict[str, list[int]] = {"without": [], "with": []}
    for _ in range(rounds):
        for label in ("without", "with"):
            r = replica(label == "with")
            now = T0 + 10**9
            out = samples[label]
            for i, (side, q) in enumerate(flow):
                now += 1000
                price = 9_990 - i % 7 if side == BUY else 10_010 + i % 7  # rests: no fills
                t0 = time.perf_counter_ns()
                r.submit_new("GBX", side, price, q, GTC, now, f"x{i}", account="alice")
                out.append(time.perf_counter_ns() - t0)
    w, wo = latency_summary(samples["with"]), latency_summary(samples["without"])
    return {"without_limits": wo, "with_limits": w,
            "added_p50_us": round(w["p50_us"] - wo["p50_us"], 2), "added_p99_us": round(w["p99_us"] - wo["p99_us"], 2)}


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m gossipbook.bench.risk", description=__doc__.split("\n\n")[0])
    p.add_argument("--orders", type=int, default=3000)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    from ..node.gctune import tune_gc

    tune_gc()  # as a node process runs (node/gctune.py)
    res = {"false_rejections": false_rejections(args.orders), "submit_latency": submit_latency(args.orders)}
    if args.json:
        print(json.dumps(res, indent=2))
        return
    fr, lat = res["false_rejections"], res["submit_latency"]
    print(f"false rejections: {fr['refused']} of {fr['orders']} orders ({fr['false_rejection_pct']}%), "
          f"flow {fr['skew']:.0%} at n1, account at most {fr['use']:.0%} of its limit; transfer traffic "
          f"{fr['asks']} asks + {fr['transfers']} transfers = {fr['transfer_ops_per_order']} ops per order")
    print(f"submit_new: p50 {lat['without_limits']['p50_us']:.1f} us / p99 {lat['without_limits']['p99_us']:.1f} us "
          f"without limits; p50 {lat['with_limits']['p50_us']:.1f} us / p99 {lat['with_limits']['p99_us']:.1f} us "
          f"with (added p50 {lat['added_p50_us']} us, p99 {lat['added_p99_us']} us)")


if __name__ == "__main__":
    main()
