"""Measure the FIX gateway: NewOrderSingle -> ExecutionReport (New) latency through it, beside the
client protocol's own ack latency in the same run, and the orders per second one session pushes.

Run: ``python -m gossipbook.fix.bench [--orders N] [--pipelined N]`` (a 3-node cluster, the gateway
and an initiator in one process, loopback only; about 10 s for the defaults). The initiator is
gossipbook's own session layer in initiator role over trio TCP. Orders rest without trading (buys
at 90, sells at 110), so each measures order entry alone; the sequential runs time one order at a
time, the pipelined run sends ``--pipelined`` orders back to back and times the last report.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import Any

import trio

from . import tags as T
from .config import from_dict
from .gateway import Gateway
from .session import AppMessage, Session, SessionConfig

PW = "bench-password"


class Engine:
    """An initiator: our pure Session on a trio TCP stream; counts ExecutionReports New by ClOrdID."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.s = Session(SessionConfig(comp_id="BENCH", peer_comp_id="GBX", password=PW, initiator=True,
                                       heartbeat_s=30, app_types=frozenset({"8", "9", "r"})))
        self.news: dict[str, int] = {}
        self.rejected = 0
        self.changed = trio.Event()
        self.logged_on = trio.Event()

    async def flush(self) -> None:
        data = self.s.data_to_send()
        if data:
            await self.stream.send_all(data)
        for ev in self.s.events():
            if isinstance(ev, AppMessage) and ev.msg.get(T.ExecType) in (b"0", b"8"):
                self.news[(ev.msg.get(T.ClOrdID) or b"").decode()] = time.perf_counter_ns()
                self.rejected += ev.msg.get(T.ExecType) == b"8"
                self.changed.set()
            elif not isinstance(ev, AppMessage):
                self.logged_on.set()
        self.s.journal()

    async def reader(self) -> None:
        while True:
            data = await self.stream.receive_some(65536)
            if not data:
                return
            self.s.receive_data(data, time.time_ns())
            await self.flush()

    async def order(self, clordid: str, side: str) -> None:
        self.s.send_app("D", [(T.ClOrdID, clordid), (T.Symbol, "GBX"), (T.Side, side), (T.OrderQty, 1),
                              (T.OrdType, 2), (T.Price, "90" if side == "1" else "110"), (T.TimeInForce, 1)],
                        time.time_ns())
        await self.flush()

    async def wait_for(self, clordid: str) -> int:
        while clordid not in self.news:
            self.changed = trio.Event()
            await self.changed.wait()
        return self.news[clordid]


def pct(xs: list[int], q: float) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[int(q) - 1] / 1e3 if len(xs) > 1 else xs[0] / 1e3


async def measure(orders: int, pipelined: int, fsync: str = "always") -> dict[str, Any]:
    import gossipbook as gb

    cfg = gb.local_cluster(nodes=3, accounts=("alice", "bob"))
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        fix = from_dict({"gateway": {"comp_id": "GBX", "data_dir": tmp, "max_stored": 100_000, "fsync": fsync},
                         "sessions": [{"sender_comp_id": "BENCH", "password": PW, "account": "alice"}]})
        gw = Gateway(fix, cfg)
        async with trio.open_nursery() as nursery:
            nodes = [await nursery.start(gb.Node(cfg, nid).serve) for nid in cfg.ids]
            for n in nodes:
                await n.ready(timeout=10)
            port = await nursery.start(gw.serve, "127.0.0.1", 0)
            eng = Engine(await trio.open_tcp_stream("127.0.0.1", port))
            eng.s.connect(time.time_ns())
            nursery.start_soon(eng.reader)
            await eng.flush()
            with trio.fail_after(10):
                await eng.logged_on.wait()
            async with gb.Client(cfg, account="bob") as bob:
                fix_lat: list[int] = []
                ack_lat: list[int] = []
                client_refused = 0
                for k in range(orders):  # interleaved, so both see the same cluster load
                    side = "1" if k % 2 else "2"
                    t0 = time.perf_counter_ns()
                    await eng.order(f"s{k}", side)
                    fix_lat.append(await eng.wait_for(f"s{k}") - t0)
                    t0 = time.perf_counter_ns()
                    try:
                        await bob.create_order("GBX", "buy" if k % 2 else "sell", "1", "90" if k % 2 else "110")
                    except gb.GossipbookError:
                        client_refused += 1
                        continue
                    ack_lat.append(time.perf_counter_ns() - t0)
            t0 = time.perf_counter_ns()
            for k in range(pipelined):
                await eng.order(f"p{k}", "1" if k % 2 else "2")
            with trio.fail_after(120):
                last = await eng.wait_for(f"p{pipelined - 1}")
            for k in range(pipelined):
                await eng.wait_for(f"p{k}")
            secs = (last - t0) / 1e9
            out = {"orders": orders, "fix_new_us": {"p50": pct(fix_lat, 50), "p99": pct(fix_lat, 99)},
                   "client_ack_us": {"p50": pct(ack_lat, 50), "p99": pct(ack_lat, 99)},
                   "pipelined": pipelined, "pipelined_s": round(secs, 3),
                   "orders_per_s_one_session": round(pipelined / secs), "commits": gw.counters["commits"],
                   "refused": {"fix": eng.rejected, "client": client_refused}}
            nursery.cancel_scope.cancel()
    return out


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m gossipbook.fix.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--orders", type=int, default=1000, help="sequential orders through each path (default 1000)")
    p.add_argument("--pipelined", type=int, default=2000, help="orders sent back to back (default 2000)")
    p.add_argument("--fsync", choices=("always", "never"), default="always", help="the store's fsync policy")
    a = p.parse_args()
    r = trio.run(measure, max(2, a.orders), max(1, a.pipelined), a.fsync)
    print(f"NewOrderSingle -> ExecutionReport New through the gateway: p50 {r['fix_new_us']['p50']:.0f} us, "
          f"p99 {r['fix_new_us']['p99']:.0f} us ({r['orders']} orders)")
    print(f"client protocol ack (create_order), same run:            p50 {r['client_ack_us']['p50']:.0f} us, "
          f"p99 {r['client_ack_us']['p99']:.0f} us")
    print(f"one session, {r['pipelined']} orders back to back: {r['pipelined_s']} s = "
          f"{r['orders_per_s_one_session']} orders/s ({r['commits']} store commits)")
    print(f"refused by the node (counted in the latencies above only for FIX): {r['refused']}")


if __name__ == "__main__":
    main()
