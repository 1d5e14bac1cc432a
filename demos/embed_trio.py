"""Nodes inside an existing trio application, stopped by cancellation.

What it shows: an application with its own tasks (a ticker and an order gateway) that also runs
three gossipbook ``Node``s in its nursery; an event consumer on ``node.events()`` (and one that
raises, which stops nothing); stopping one node by cancelling its scope and starting it again on
its data dir (it recovers its ops); and the whole application ending by cancellation, every node
announcing its leave and closing its socket on the way out.

Run: ``python demos/embed_trio.py`` (about 6 s; loopback ports and a temp dir, nothing kept).
"""

from __future__ import annotations

import tempfile

import trio

import gossipbook as gb


async def ticker(app: dict[str, int]) -> None:
    """The application's own work, unrelated to gossipbook."""
    while True:
        app["ticks"] += 1
        await trio.sleep(0.1)


async def gateway(cfg: gb.ClusterConfig, app: dict[str, int]) -> None:
    """Orders from the application: two accounts trade a few times a second, through n1 and n2."""
    async with gb.Client(cfg, account="alice", node="n1") as alice, \
            gb.Client(cfg, account="bob", node="n2") as bob:
        i = 0
        while True:
            i += 1
            price = f"{100 + i % 5}.00"
            await alice.create_order("GBX", "sell", "2", price)
            o = await bob.create_order("GBX", "buy", "1", price, time_in_force="ioc")
            app["orders"] += 2
            app["filled"] += len(o.fills)
            await trio.sleep(0.1)


async def count_trades(node: gb.Node, app: dict[str, int]) -> None:
    """A well-behaved consumer: counts trade events seen by one node."""
    async for ev in node.events(buffer=256):
        if isinstance(ev, gb.TradeExecuted):
            app["executed"] += 1
        elif isinstance(ev, gb.TradeFinal):
            app["final"] += 1
        elif isinstance(ev, gb.Missed):
            app["missed"] += ev.count


async def faulty_consumer(node: gb.Node) -> None:
    """A consumer with a bug. Its exception is the application's to handle; the node never sees it."""
    try:
        async for ev in node.events():
            if isinstance(ev, gb.TradeExecuted):
                raise RuntimeError("consumer bug on the first trade")
    except RuntimeError as e:
        print(f"faulty consumer stopped ({e}); node {node.node_id} still running: {node.running}")


async def main() -> None:
    app = {"ticks": 0, "orders": 0, "filled": 0, "executed": 0, "final": 0, "missed": 0}
    with tempfile.TemporaryDirectory(prefix="gossipbook-embed-") as tmp:
        cfg = gb.local_cluster(nodes=3, accounts=("alice", "bob"), data_root=tmp)
        with trio.CancelScope() as life:  # the application's lifetime; its end is a cancellation
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ticker, app)
                n1 = await nursery.start(gb.Node(cfg, "n1").serve)
                n2 = await nursery.start(gb.Node(cfg, "n2").serve)
                # n3 in its own cancel scope, so it can be stopped alone
                n3_scope = trio.CancelScope()

                async def run_n3(node: gb.Node, *, task_status: trio.TaskStatus[gb.Node]) -> None:
                    with n3_scope:
                        await node.serve(task_status=task_status)

                n3 = await nursery.start(run_n3, gb.Node(cfg, "n3"))
                for n in (n1, n2, n3):
                    await n.ready(timeout=10)
                print(f"3 nodes serving inside the app: {n1}, {n2}, {n3}")
                nursery.start_soon(count_trades, n1, app)
                nursery.start_soon(faulty_consumer, n2)
                nursery.start_soon(gateway, cfg, app)
                await trio.sleep(1.5)
                ops_before = n3.status().ops
                n3_scope.cancel()
                await n3.wait_stopped()
                print(f"n3 stopped by cancelling its scope (it held {ops_before} ops); {n3}")
                try:
                    await n3.serve()
                except gb.UsageError as e:
                    print(f"serving it again is refused: {e}")
                await trio.sleep(0.5)
                n3 = await nursery.start(gb.Node(cfg, "n3").serve)  # a new Node on the same data dir
                await n3.ready(timeout=10)
                print(f"n3 restarted from its data dir with {n3.status().ops} ops (>= {ops_before}: "
                      f"{n3.status().ops >= ops_before})")
                # the gateway keeps trading: wait (bounded) for a moment when all three agree
                with trio.move_on_after(10):
                    while not (n1.digest == n2.digest == n3.digest):
                        await trio.sleep(0.05)
                same = n1.digest == n2.digest == n3.digest
                print(f"digests equal on n1, n2, n3 while running: {same}")
                await trio.sleep(1.0)
                life.cancel()  # the application ends: every task and node inside is cancelled
        print(f"application cancelled: ticker ticked {app['ticks']} times, gateway sent {app['orders']} orders "
              f"({app['filled']} fills); n1's feed saw {app['executed']} trades executed, {app['final']} final, "
              f"{app['missed']} missed")
        print(f"all nodes stopped: {not (n1.running or n2.running or n3.running)}")


if __name__ == "__main__":
    trio.run(main)
