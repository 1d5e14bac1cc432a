"""``gossipbook load``: a seeded order flow spread across the nodes, with a progress bar."""

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
                       description="Send N orders (new, cancel, amend) spread over all nodes at a target rate, "
                                   "then print sent / acked / rejected / errors and ack latency percentiles. "
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
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


async def run_load(cfg: Any, n: int, rate: float, seed: int, concurrency: int, wait: int, timeout: float,
                   nodes: list[str], progress: Any = None) -> dict[str, Any]:
    from ..node.client import Client, Unreachable

    rng = random.Random(seed)
    flow = OrderFlow(random.Random(seed + 1))
    inst = cfg.instruments[0]
    mid = (inst.min_ticks + inst.max_ticks) // 2 if inst.max_ticks - inst.min_ticks < 20_000 else inst.price_to_ticks("100")
    flow.mid = mid
    stats = {"sent": 0, "acked": 0, "rejected": 0, "errors": 0}
    lat: list[int] = []
    accounts = sorted(cfg.accounts) if not cfg.is_client_file else [cfg.account]
    by_account: dict[str, list[tuple[str, int]]] = {a: [] for a in accounts}  # each account's open orders
    limiter = trio.CapacityLimiter(concurrency)
    t0 = time.perf_counter()
    async with contextlib.AsyncExitStack() as stack:
        clients = {a: await stack.enter_async_context(Client(cfg, account=a)) for a in accounts}

        async def one(node: str, msg: ClientSubmit, c: Client) -> None:
            open_orders = by_account[c.account]
            async with limiter:
                s = time.perf_counter_ns()
                try:
                    rep = await c.request(node, msg, msg.req, timeout)
                except Unreachable:
                    stats["errors"] += 1
                    return
                finally:
                    if progress:
                        progress()
                if rep.code == 0:
                    stats["acked"] += 1
                    lat.append(time.perf_counter_ns() - s)
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
                open_orders = by_account[c.account]
                o = flow.next(open_orders)
                if o.kind in (CANCEL, AMEND):
                    open_orders[:] = [x for x in open_orders if x[0] != o.order_id]
                node = rng.choice(nodes)
                msg = ClientSubmit(c.new_req(), o.kind, inst.symbol, o.order_id, o.side, o.price if o.kind != NEW or o.tif != 3 else 0,
                                   o.qty, o.tif if o.kind == NEW else 0, wait, int(timeout * 1000))
                if o.kind != CANCEL and o.tif != 3:
                    msg = msg._replace(price=min(max(msg.price, inst.min_ticks), inst.max_ticks))
                stats["sent"] += 1
                nursery.start_soon(one, node, msg, c)
    elapsed = time.perf_counter() - t0
    summ = latency_summary(lat)
    return {**stats, "elapsed_s": round(elapsed, 3), "rate_per_s": round(stats["sent"] / elapsed, 1),
            "ack_latency_ms": {"p50": summ["p50_us"] / 1e3, "p99": summ["p99_us"] / 1e3,
                               "p999": summ["p999_us"] / 1e3, "max": summ["max_us"] / 1e3}}


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
                       LEVELS.index(args.wait), args.timeout, nodes, lambda: prog.advance(task))
    if args.json:
        print_json(res)
    else:
        al = res["ack_latency_ms"]
        Console().print(f"sent {res['sent']}  acked {res['acked']}  rejected {res['rejected']}  errors {res['errors']}  "
                        f"in {res['elapsed_s']} s; ack latency p50 {al['p50']:.3f} ms, p99 {al['p99']:.3f} ms")
    return 0 if res["errors"] == 0 else 3
