"""``gossipbook load``: a seeded order flow over every instrument, spread across the nodes by
measured latency and load (or at random), following shard leader hints, with a progress bar; it
reports how the requests spread over the nodes."""

from __future__ import annotations

import argparse
import contextlib
import random
import time
from typing import Any

import trio
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ..bench.stats import latency_summary
from ..core.errors import UsageError
from ..core.ops import AMEND, CANCEL, NEW
from ..core.wire import LEVELS, ClientSubmit
from ..workload.orders import OrderFlow
from .common import add_config, config, print_json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("load", help="send a seeded order flow to the cluster",
                       description="Send N orders (new, cancel, amend) over every instrument, spread over the "
                                   "nodes at a target rate, then print sent / acked / rejected / errors, ack "
                                   "latency percentiles and, per node, the requests it answered and its p50. "
                                   "A submit goes to its shard's leader once a node's hint named it. "
                                   "With cluster.toml the flow is spread over every account it holds (so "
                                   "accounts trade with each other); with a client file, its account only.")
    add_config(p)
    p.add_argument("--orders", type=int, required=True, help="number of client actions to send")
    p.add_argument("--rate", type=float, default=1000.0, help="target actions per second (default 1000)")
    p.add_argument("--seed", type=int, default=1, help="seed of the order flow (default 1)")
    p.add_argument("--concurrency", type=int, default=64, help="requests in flight at most (default 64)")
    p.add_argument("--wait", choices=LEVELS, default="accepted", help="ack level (default accepted)")
    p.add_argument("--timeout", type=float, default=5.0, help="per-request timeout in seconds (default 5)")
    p.add_argument("--nodes", default="", help="comma-separated node ids to use (default all)")
    p.add_argument("--spread", choices=("latency", "random"), default="latency",
                   help="how a request that no leader hint routes picks its node: by measured latency and "
                        "requests in flight, avoiding a node that misses replies (default), or at random")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


async def run_load(cfg: Any, n: int, rate: float, seed: int, concurrency: int, wait: int, timeout: float,
                   nodes: list[str], progress: Any = None, spread: str = "latency") -> dict[str, Any]:
    """Send ``n`` actions over every instrument and return the summary (``load --json``).

    Where each goes is the wire client's routing (``node/client.py``, "Routing"), shared by the
    clients of every account: a submit to its shard's leader once a hint named it; else, with
    ``spread="latency"``, the node of ``nodes`` with the lowest measured latency x requests in
    flight (away from one that misses replies, back when it answers), or with ``"random"`` a node
    of ``nodes`` drawn from the seed (the fallback of a hinted leader that does not answer)."""
    from ..core.balance import Balancer
    from ..node.client import Client, Unreachable

    rng = random.Random(seed)
    symbols = [i.symbol for i in cfg.instruments]
    insts = {i.symbol: i for i in cfg.instruments}
    flows = {}
    for k, sym in enumerate(symbols):  # the first symbol's flow is the one a one-instrument load always sent
        inst = insts[sym]
        f = flows[sym] = OrderFlow(random.Random(seed + 1 + k))
        f.mid = (inst.min_ticks + inst.max_ticks) // 2 if inst.max_ticks - inst.min_ticks < 20_000 \
            else inst.price_to_ticks("100")
    stats = {"sent": 0, "acked": 0, "rejected": 0, "errors": 0, "to_leader": 0, "moved": 0}
    lat: list[int] = []
    per_node: dict[str, list[int]] = {nid: [] for nid in nodes}  # latencies of the acks each node gave
    answered: dict[str, int] = {nid: 0 for nid in nodes}
    accounts = sorted(cfg.accounts) if not cfg.is_client_file else [cfg.account]
    by_account: dict[tuple[str, str], list[tuple[str, int]]] = {(a, s): [] for a in accounts for s in symbols}
    limiter = trio.CapacityLimiter(concurrency)
    t0 = time.perf_counter()
    async with contextlib.AsyncExitStack() as stack:
        clients = {a: await stack.enter_async_context(Client(cfg, account=a)) for a in accounts}
        router = clients[accounts[0]]
        router.balancer = Balancer(nodes)
        router.balancing = spread == "latency"
        for c in clients.values():  # one set of leader hints and one balancer for every account
            if c is not router:
                c.share_routing(router)
                c.balancing = router.balancing

        async def one(default: str, msg: ClientSubmit, c: Client, key: tuple[str, str]) -> None:
            open_orders = by_account[key]
            async with limiter:
                s = time.perf_counter_ns()
                try:
                    got = await c.send(msg, default, timeout)
                except Unreachable:
                    stats["errors"] += 1
                    return
                finally:
                    if progress:
                        progress()
                rep, took = got.reply, time.perf_counter_ns() - s
                stats["to_leader"] += got.how == "leader"
                stats["moved"] += got.moved
                if got.node in answered:
                    answered[got.node] += 1
                if rep.code == 0:
                    stats["acked"] += 1
                    lat.append(took)
                    per_node.setdefault(got.node, []).append(took)
                    if msg.kind == NEW and msg.tif == 0 and sum(t[2] for t in rep.trades) < msg.qty:
                        open_orders.append((rep.order_id, msg.side))
                        del open_orders[:-200]
                else:
                    stats["rejected"] += 1

        async with trio.open_nursery() as nursery:
            for i in range(n):
                target = t0 + i / rate
                delay = target - time.perf_counter()
                if delay > 0:
                    await trio.sleep(delay)
                await limiter.acquire_on_behalf_of(i)
                limiter.release_on_behalf_of(i)
                c = clients[accounts[i % len(accounts)]]
                sym = symbols[rng.randrange(len(symbols))] if len(symbols) > 1 else symbols[0]
                inst, key = insts[sym], (c.account, sym)
                open_orders = by_account[key]
                o = flows[sym].next(open_orders)
                if o.kind in (CANCEL, AMEND):
                    open_orders[:] = [x for x in open_orders if x[0] != o.order_id]
                default = rng.choice(nodes)
                msg = ClientSubmit(c.new_req(), o.kind, sym, o.order_id, o.side, o.price if o.kind != NEW or o.tif != 3 else 0,
                                   o.qty, o.tif if o.kind == NEW else 0, wait, int(timeout * 1000))
                if o.kind != CANCEL and o.tif != 3:
                    msg = msg._replace(price=min(max(msg.price, inst.min_ticks), inst.max_ticks))
                stats["sent"] += 1
                nursery.start_soon(one, default, msg, c, key)
        seen = router.spread()
    elapsed = time.perf_counter() - t0
    summ = latency_summary(lat)
    spread_out = {}
    for nid in nodes:
        ls = per_node.get(nid) or []
        p50 = latency_summary(ls)["p50_us"] / 1e3 if ls else None
        spread_out[nid] = {"answered": answered.get(nid, 0), "acked": len(ls), "p50_ms": p50,
                           "tries": seen[nid]["sent"], "missed": seen[nid]["missed"],
                           "avoidances": seen[nid]["avoidances"]}
    return {**stats, "elapsed_s": round(elapsed, 3), "rate_per_s": round(stats["sent"] / elapsed, 1),
            "ack_latency_ms": {"p50": summ["p50_us"] / 1e3, "p99": summ["p99_us"] / 1e3,
                               "p999": summ["p999_us"] / 1e3, "max": summ["max_us"] / 1e3},
            "spread": spread, "symbols": symbols, "per_node": spread_out}


def spread_lines(res: dict[str, Any]) -> list[str]:
    """One line per node: requests it answered, its p50 ack latency, tries it missed."""
    out = []
    for nid, r in res.get("per_node", {}).items():
        p50 = "-" if r["p50_ms"] is None else f"{r['p50_ms']:.3f} ms"
        extra = f", missed {r['missed']} tries, avoided {r['avoidances']}x" if r["missed"] else ""
        out.append(f"  {nid}: {r['answered']} answered, ack p50 {p50}{extra}")
    return out


def run(args: argparse.Namespace) -> int:
    cfg = config(args)
    if args.orders < 1 or args.rate <= 0 or args.concurrency < 1:
        raise UsageError("--orders, --rate and --concurrency must be positive")
    nodes = [s.strip() for s in args.nodes.split(",") if s.strip()] or cfg.ids
    for nid in nodes:
        cfg.node(nid)
    err = Console(stderr=True)
    with Progress(TextColumn("load"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err, transient=True, disable=args.json and not err.is_terminal) as prog:
        task = prog.add_task("orders", total=args.orders)
        res = trio.run(run_load, cfg, args.orders, args.rate, args.seed, args.concurrency,
                       LEVELS.index(args.wait), args.timeout, nodes, lambda: prog.advance(task), args.spread)
    if args.json:
        print_json(res)
    else:
        al = res["ack_latency_ms"]
        Console().print(f"sent {res['sent']}  acked {res['acked']}  rejected {res['rejected']}  errors {res['errors']}  "
                        f"in {res['elapsed_s']} s; ack latency p50 {al['p50']:.3f} ms, p99 {al['p99']:.3f} ms")
        lead = f"; {res['to_leader']} sent to a hinted shard leader" if res["to_leader"] else ""
        Console().print(f"spread ({res['spread']}){lead}; {res['moved']} moved to another node:", highlight=False)
        for line in spread_lines(res):
            Console().print(line, highlight=False)
    return 0 if res["errors"] == 0 else 3
