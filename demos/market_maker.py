"""A market maker, two takers and a partition: fills, revisions and P&L from a client's view.

What it shows: a quoting strategy (account ``mm`` at n1) that re-quotes around a mid, skewed by its
inventory, each time ``watch_my_trades`` reports a fill; two taker bots sending IOC orders, one at
n1 and one at n3; a partition n1 | n2 n3 in the middle of the run, during which the takers on both
sides hit the same quotes; the heal, after which the replicas fold the two sides' ops into one
order and some provisional fills are revised or undone, and the maker's feed reports them; and
at the end each account's fills, the revised ones, and the maker's P&L marked at the mid.

``watch_my_trades`` is a pushed feed: the node sends each fill as its fold makes it, again when a
replay revises or undoes it, and when it becomes final (a lease the client renews).
The partition uses ``FaultFilter``, the nodes' test-only send filter, as ``gossipbook demo`` does.

Run: ``python demos/market_maker.py`` (about 15 s; loopback ports, nothing kept).
"""

from __future__ import annotations

import random
from decimal import Decimal

import trio

import gossipbook as gb

SYMBOL = "GBX"
MID = Decimal("100.00")
HALF_SPREAD = Decimal("0.05")
QUOTE_SIZE = "3"
SKEW_PER_UNIT = Decimal("0.01")  # the maker shades both quotes down this much per unit long
PARTITION_AT, HEAL_AT, STOP_AT = 2.0, 7.0, 10.0


def pnl(fills: list[gb.Fill], mark: Decimal) -> tuple[Decimal, Decimal, Decimal]:
    """(position, cash, P&L marked at ``mark``) over fills that stand (undone ones do not count)."""
    pos = cash = Decimal(0)
    for f in fills:
        if f.undone:
            continue
        sign = 1 if f.side is gb.Side.BUY else -1
        pos += sign * f.amount
        cash -= sign * f.price * f.amount
    return pos, cash, cash + pos * mark


class Maker:
    def __init__(self, client: gb.Client) -> None:
        self.c = client
        self.fills: dict[str, gb.Fill] = {}
        self.requotes = 0
        self.revised_live: list[gb.Fill] = []

    async def quote(self) -> None:
        pos, _cash, _p = pnl(list(self.fills.values()), MID)
        skew = -pos * SKEW_PER_UNIT
        bid, ask = (MID - HALF_SPREAD + skew).quantize(Decimal("0.01")), (MID + HALF_SPREAD + skew).quantize(Decimal("0.01"))
        await self.c.cancel_all_orders(SYMBOL)
        await self.c.create_order(SYMBOL, "buy", QUOTE_SIZE, bid)
        await self.c.create_order(SYMBOL, "sell", QUOTE_SIZE, ask)
        self.requotes += 1

    async def run(self) -> None:
        await self.quote()
        async for fill in self.c.watch_my_trades(SYMBOL):
            first = fill.trade_id not in self.fills
            self.fills[fill.trade_id] = fill
            if fill.undone or fill.revisions:
                self.revised_live.append(fill)
                what = "undone" if fill.undone else f"revised to {fill.amount} @ {fill.price}"
                print(f"  maker feed: fill {fill.trade_id} {what} (after the heal)")
            if first and not fill.undone:
                await self.quote()


async def taker(client: gb.Client, seed: int, stats: dict[str, int]) -> None:
    rng = random.Random(seed)
    while True:
        side = rng.choice(("buy", "sell"))
        price = MID + Decimal("0.50") if side == "buy" else MID - Decimal("0.50")
        try:
            o = await client.create_order(SYMBOL, side, str(rng.randint(1, 3)), price, time_in_force="ioc")
            stats["orders"] += 1
            stats["fills"] += len(o.fills)
        except gb.RequestFailed as e:
            stats["failed"] += 1
            print(f"  {client.account}: {type(e).__name__}: {e}")
        await trio.sleep(rng.uniform(0.15, 0.3))


async def main() -> None:
    cfg = gb.local_cluster(nodes=3, accounts=("mm", "taker1", "taker3"))
    filters = {nid: gb.FaultFilter(seed=i) for i, nid in enumerate(cfg.ids)}
    addr = {nid: cfg.node(nid).addr for nid in cfg.ids}

    def partition(sides: list[list[str]]) -> None:
        for side in sides:
            for a in side:
                filters[a].blocked = {addr[b] for other in sides if other is not side for b in other}

    stats = {"taker1": {"orders": 0, "fills": 0, "failed": 0}, "taker3": {"orders": 0, "fills": 0, "failed": 0}}
    async with trio.open_nursery() as nursery:
        nodes = [await nursery.start(gb.Node(cfg, nid, faults=filters[nid]).serve) for nid in cfg.ids]
        for n in nodes:
            await n.ready(timeout=10)
        print(f"3 nodes up; maker quotes {SYMBOL} around {MID} at n1, takers trade at n1 and n3")
        async with gb.Client(cfg, account="mm", node="n1") as mm, \
                gb.Client(cfg, account="taker1", node="n1") as t1, \
                gb.Client(cfg, account="taker3", node="n3") as t3:
            maker = Maker(mm)
            t0 = trio.current_time()
            async with trio.open_nursery() as bots:
                bots.start_soon(maker.run)
                bots.start_soon(taker, t1, 1, stats["taker1"])
                bots.start_soon(taker, t3, 3, stats["taker3"])
                await trio.sleep_until(t0 + PARTITION_AT)
                partition([["n1"], ["n2", "n3"]])
                print(f"t={PARTITION_AT:.0f}s partition: n1 | n2 n3 (taker3 keeps hitting the quotes n3 last saw)")
                await trio.sleep_until(t0 + HEAL_AT)
                partition([["n1", "n2", "n3"]])
                print(f"t={HEAL_AT:.0f}s heal: every link restored")
                await trio.sleep_until(t0 + STOP_AT)
                bots.cancel_scope.cancel()
            await mm.cancel_all_orders(SYMBOL, wait="replicated")
            # let the last ops settle and every fill become final
            with trio.move_on_after(8):
                while True:
                    states = [await c.fetch_my_trades(SYMBOL) for c in (mm, t1, t3)]
                    if all(f.final or f.undone for fs in states for f in fs) and \
                            len({n.digest for n in nodes}) == 1:
                        break
                    await trio.sleep(0.2)
            print("\nsummary")
            for c, fills in zip((mm, t1, t3), states, strict=True):
                standing = [f for f in fills if not f.undone]
                final = sum(1 for f in standing if f.final)
                print(f"  {c.account}: {len(fills)} fills ({final} final, {len(fills) - len(standing)} undone, "
                      f"{sum(1 for f in fills if f.revisions and not f.undone)} revised)")
            revised = [f for fs in states for f in fs if f.revisions or f.undone]
            print(f"revised fills after the heal: {len(revised)}")
            for f in revised[:10]:
                state = "undone" if f.undone else f"now {f.amount} @ {f.price}"
                print(f"  {f.trade_id} {f.side} {f.symbol} ({f.role}): {state}, {f.revisions} revision(s)")
            pos, cash, total = pnl(states[0], MID)
            print(f"maker P&L: position {pos}, cash {cash}, marked at {MID}: {total} "
                  f"({maker.requotes} quotes, {len(maker.revised_live)} revisions seen live on its feed)")
            for name, s in stats.items():
                print(f"  {name}: {s['orders']} IOC orders, {s['fills']} immediate fills, {s['failed']} failed")
            print(f"digests equal on all nodes: {len({n.digest for n in nodes}) == 1}")
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
