"""Strong-mode capacity by shards: acked actions per second through the client protocol.

``python -m gossipbook.bench.modes --shards 1,2,4`` (or ``python -m gossipbook.bench.shards``)
starts, for each K, 4 strong-mode node processes on loopback (no data dirs, as ``bench.modes``)
trading 4 instruments in K sequencer groups (K = 1: one group holds all four), and sends the same
seeded flow with ``routed_load``: new / cancel / amend over the 4 symbols from 8 accounts (the
per-account rate limit is not what is measured) in ``clients`` load processes (one Python client
tops out near 1,000 requests a second: several, so the client is not what is measured), up to
``concurrency`` requests in flight each, every request to the node that leads its shard (learnt
from status at the start, then from the nodes' leader hints), so one client hop reaches the
sequencer whatever K is; only the number of groups changes. A request refused "rate limited" or
lost counts as an error. Besides acked/s it reports the node processes' CPU seconds per 1,000 acked
actions (what the cluster spends, whoever is short of CPU).

What a shard buys is parallel sequencers: with K groups the leaders' work (client I/O, appends to
every follower, commit) is spread over K nodes. What it does not: every node still folds every
shard (full replication), and each group sends its own appends, acknowledgements and heartbeats
(smaller batches, more datagrams). So capacity grows with K only while the nodes have cores to
spare; on a 2-core box the 4 node processes and the clients already share two cores.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import secrets
import time
from typing import Any

import trio

from ..config import ClusterConfig, _shard_lines, load, write_private
from ..core.ops import AMEND, CANCEL, NEW
from ..core.shards import shard_of_order
from ..core.wire import ClientSubmit
from ..workload.orders import OrderFlow
from .procs import ProcCluster, cluster_text
from .stats import latency_summary

ACCOUNTS = [f"bench-{i}" for i in range(8)]
INSTRUMENTS = 4


def _rewrite(text: str, k: int) -> str:
    """A one-instrument strong ``cluster.toml`` with 4 instruments in ``k`` shards (round robin) and
    the bench accounts."""
    skip = ("[[shards]]", "instruments =", "#")
    extra = "\n".join(line for line in _shard_lines(INSTRUMENTS, "strong") if not line.startswith(skip))
    text = text.replace('fsync = "batch"', f'fsync = "batch"\nshards = {k}', 1)
    text = text.replace("[accounts]", extra + "\n[accounts]", 1)
    accounts = "".join(f'{a} = "{secrets.token_bytes(32).hex()}"\n' for a in ACCOUNTS)
    return text.rstrip("\n") + "\n" + accounts


def _leaders(cfg: ClusterConfig) -> dict[int, str]:
    """Shard -> leader, from every node's status, once they agree and (K > 1) every shard is led by
    its preferred node (``ShardMap.preferred``: leaders spread, as they are while all nodes are up)."""
    from ..cli.status import gather_status

    smap = cfg.shard_map()
    want = {i: smap.preferred(i, cfg.ids) for i in range(smap.k)} if smap.k > 1 else None
    deadline = time.monotonic() + 20
    while True:
        st = trio.run(gather_status, cfg, 0.5)
        if all(s["reachable"] for s in st):
            if "shards" in st[0]:
                lead = [{s["shards"][i]["leader"] for s in st} for i in range(len(st[0]["shards"]))]
            else:
                lead = [{s["leader"] for s in st}]
            if all(len(x) == 1 and None not in x for x in lead):
                got = {i: x.pop() for i, x in enumerate(lead)}
                if want is None or got == want:
                    return got
        if time.monotonic() > deadline:
            raise RuntimeError("no (spread) leader for every shard within 20 s")
        time.sleep(0.1)


async def routed_load(cfg: ClusterConfig, n: int, concurrency: int, leaders: dict[int, str],
                      timeout: float = 5.0, seed: int = 1, accounts: list[str] | None = None) -> dict[str, Any]:
    """``n`` actions over every instrument, each to its shard's leader; acked/s and ack latency."""
    from ..node.client import Client, Unreachable

    rng = random.Random(seed)
    accts = accounts or ACCOUNTS
    symbols = [i.symbol for i in cfg.instruments]
    smap = cfg.shard_map()
    flows = {s: OrderFlow(random.Random(seed + 1 + i)) for i, s in enumerate(symbols)}
    for s, f in flows.items():
        f.mid = cfg.instruments[symbols.index(s)].price_to_ticks("100")
    opened: dict[tuple[str, str], list[tuple[str, int]]] = {(a, s): [] for a in accts for s in symbols}
    stats = {"sent": 0, "acked": 0, "rejected": 0, "errors": 0, "to_leader": 0}
    lat: list[int] = []
    limiter = trio.CapacityLimiter(concurrency)
    t0 = time.perf_counter()
    async with contextlib.AsyncExitStack() as stack:
        clients = {a: await stack.enter_async_context(Client(cfg, account=a)) for a in accts}

        async def one(node: str, msg: ClientSubmit, c: Client, key: tuple[str, str]) -> None:
            async with limiter:
                s = time.perf_counter_ns()
                try:
                    rep = await c.request(node, msg, msg.req, timeout)
                except Unreachable:
                    stats["errors"] += 1
                    return
            if rep.code == 0:
                stats["acked"] += 1
                lat.append(time.perf_counter_ns() - s)
                if msg.kind == NEW and msg.tif == 0 and sum(t[2] for t in rep.trades) < msg.qty:
                    opened[key].append((rep.order_id, msg.side))
                    del opened[key][:-200]
            else:
                stats["rejected" if rep.code != 11 else "errors"] += 1

        async with trio.open_nursery() as nursery:
            for i in range(n):
                await limiter.acquire_on_behalf_of(i)
                limiter.release_on_behalf_of(i)
                acct, sym = accts[i % len(accts)], symbols[rng.randrange(len(symbols))]
                c, key = clients[acct], (acct, sym)
                o = flows[sym].next(opened[key])
                if o.kind in (CANCEL, AMEND):
                    opened[key][:] = [x for x in opened[key] if x[0] != o.order_id]
                msg = ClientSubmit(c.new_req(), o.kind, sym, o.order_id, o.side,
                                   0 if o.kind == NEW and o.tif == 3 else o.price, o.qty,
                                   o.tif if o.kind == NEW else 0, 0, int(timeout * 1000))
                shard = shard_of_order(o.order_id, smap.k) if o.kind in (CANCEL, AMEND) else smap.of_symbol(sym)
                node = c.leader_for(msg) or leaders.get(shard) or rng.choice(cfg.ids)
                stats["to_leader"] += node == (c.leader_for(msg) or leaders.get(shard))
                stats["sent"] += 1
                nursery.start_soon(one, node, msg, c, key)
    return {**stats, "elapsed_s": time.perf_counter() - t0, "latencies_ns": lat}


def _worker(job: tuple[str, int, int, dict[int, str], int, list[str]]) -> dict[str, Any]:
    path, n, concurrency, leaders, seed, accounts = job
    return trio.run(routed_load, load(path), n, concurrency, leaders, 5.0, seed, accounts)


def run_load(pc: ProcCluster, orders: int, concurrency: int, clients: int, leaders: dict[int, str]) -> dict[str, Any]:
    """``orders`` actions split over ``clients`` processes (each its own accounts and seed), run at
    once; acked/s over the slowest one's time, latency over every ack."""
    import multiprocessing

    per = [ACCOUNTS[i::clients] for i in range(clients)]
    jobs = [(str(pc.config_path), orders // clients, concurrency, leaders, 1 + i, per[i]) for i in range(clients)]
    with multiprocessing.get_context("fork").Pool(clients) as pool:
        parts = pool.map(_worker, jobs)
    elapsed = max(p["elapsed_s"] for p in parts)
    stats = {k: sum(p[k] for p in parts) for k in ("sent", "acked", "rejected", "errors", "to_leader")}
    summ = latency_summary(x for p in parts for x in p["latencies_ns"])
    return {**stats, "elapsed_s": round(elapsed, 3), "acked_per_s": round(stats["acked"] / elapsed, 1),
            "ack_latency_ms": {"p50": summ["p50_us"] / 1e3, "p99": summ["p99_us"] / 1e3, "max": summ["max_us"] / 1e3}}


def run_shards(shards: list[int], nodes: int = 4, orders: int = 6000, concurrency: int = 64,
               clients: int = 4) -> list[dict[str, Any]]:
    """One cluster per K in ``shards``: leaders, then the load (and the nodes' CPU seconds)."""
    out = []
    for k in shards:
        with _ShardCluster(nodes, k) as pc:
            leaders = _leaders(pc.cfg)
            cpu0 = pc.cpu_seconds()
            res = run_load(pc, orders, concurrency, clients, leaders)
            cpu1 = pc.cpu_seconds()
        cpu = round(cpu1 - cpu0, 2) if cpu0 is not None and cpu1 is not None else None
        res.update({"shards": k, "nodes": nodes, "clients": clients, "leaders": leaders, "node_cpu_s": cpu,
                    "node_cpu_ms_per_acked": round(cpu * 1e3 / res["acked"], 3) if cpu and res["acked"] else None})
        out.append(res)
    return out


class _ShardCluster(ProcCluster):
    """``ProcCluster`` on ``_rewrite``'s config: strong mode, 4 instruments in ``k`` shards."""

    def __init__(self, nodes: int, k: int) -> None:
        super().__init__(nodes, trace=False, mode="strong")
        write_private(self.config_path, _rewrite(cluster_text(nodes, "strong"), k))
        self.cfg = load(self.config_path)


def table(rows: list[dict[str, Any]]) -> list[str]:
    base = next((r["acked_per_s"] for r in rows if r["shards"] == 1), None)
    lines = []
    for r in rows:
        x = f" ({r['acked_per_s'] / base:.2f}x K=1)" if base else ""
        lines.append(f"strong {r['nodes']} nodes, {r['shards']} shard{'s' if r['shards'] > 1 else ''}: "
                     f"{r['acked_per_s']:,.0f} acked/s{x}, ack p50 {r['ack_latency_ms']['p50']:.1f} ms, p99 "
                     f"{r['ack_latency_ms']['p99']:.1f} ms; {r['errors']} errors, {r['rejected']} rejected; "
                     f"node CPU {r['node_cpu_ms_per_acked']} ms per acked; leaders {sorted(set(r['leaders'].values()))}")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gossipbook.bench.shards", description=__doc__.split("\n")[0])
    p.add_argument("--shards", default="1,2,4", help="comma-separated K values (default 1,2,4)")
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--orders", type=int, default=6000)
    p.add_argument("--concurrency", type=int, default=64, help="requests in flight per client process")
    p.add_argument("--clients", type=int, default=4, help="load processes (default 4)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    if not 1 <= a.clients <= len(ACCOUNTS):
        raise SystemExit(f"--clients from 1 to {len(ACCOUNTS)}")
    rows = run_shards(parse_shards(a.shards), a.nodes, a.orders, a.concurrency, a.clients)
    print(json.dumps(rows, indent=2) if a.json else "\n".join(table(rows)))
    return 0


def parse_shards(text: str) -> list[int]:
    try:
        ks = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"--shards wants numbers like 1,2,4, not {text!r}") from None
    if not ks or not all(1 <= k <= INSTRUMENTS for k in ks):
        raise SystemExit(f"--shards: each K from 1 to {INSTRUMENTS} (the bench trades {INSTRUMENTS} instruments)")
    return ks


if __name__ == "__main__":
    raise SystemExit(main())
