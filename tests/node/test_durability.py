"""SIGKILL a node under load 20 times, restart it on the same data dir: nothing acknowledged is lost."""

from __future__ import annotations

import random
import time

import trio

from gossipbook.config import load
from gossipbook.core.ops import NEW
from gossipbook.core.wire import ClientSubmit
from gossipbook.node.client import Client, Unreachable


def test_sigkill_twenty_times_loses_no_acknowledged_order(make_cluster):
    c = make_cluster(3, data=True)
    c.start_all()
    cfg = load(c.config)
    acked: dict[str, str] = {}  # req -> order id
    rng = random.Random(11)
    kills = 0

    async def orders(stop: trio.Event) -> None:
        async with Client(cfg, retry_s=0.1) as cl:
            i = 0
            while not stop.is_set():
                i += 1
                node = rng.choice(cfg.ids)
                req = cl.new_req()
                msg = ClientSubmit(req, NEW, "GBX", "", i % 2, 10_000 + rng.randint(-5, 5), rng.randint(1, 5),
                                   0, 0, 2000)
                try:
                    rep = await cl.request(node, msg, req, timeout=0.5)
                except Unreachable:
                    continue
                if rep.code == 0:
                    assert req not in acked or acked[req] == rep.order_id
                    acked[req] = rep.order_id
                await trio.sleep(0.002)

    async def killer(stop: trio.Event) -> None:
        nonlocal kills
        for _ in range(20):
            await trio.sleep(rng.uniform(0.2, 0.6))
            c.kill("n3")
            kills += 1
            await trio.sleep(rng.uniform(0.0, 0.2))
            c.start("n3")
            await trio.to_thread.run_sync(lambda: c.wait_ready(["n3"], timeout=20))
        stop.set()

    async def main() -> None:
        stop = trio.Event()
        async with trio.open_nursery() as n:
            n.start_soon(orders, stop)
            n.start_soon(killer, stop)

    trio.run(main)
    assert kills == 20
    took, st = c.wait_converged(timeout=15)
    assert len(acked) > 200
    by_origin: dict[str, list[int]] = {}
    for oid in acked.values():
        origin, seq = oid.split(":")
        by_origin.setdefault(origin, []).append(int(seq))
    for s in st:
        for origin, seqs in by_origin.items():
            assert max(seqs) <= s["version_vector"].get(origin, 0), (s["id"], origin)
    assert len(set(acked.values())) == len(acked)  # no request made two orders
    assert sum(st[0]["version_vector"].values()) == st[0]["ops"]  # every op held once
    assert st[0]["counters"]["storage"]["records"] >= 0
    assert "n3" in c.logs and c.logs["n3"].read_text().count("listening") == 21
    time.sleep(0)
