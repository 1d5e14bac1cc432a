"""A custom venue in one program: two instruments with different grids, venue rules, three nodes.

What it shows: a ``Venue`` with a ``validate`` hook (a per-order notional cap, run by every node for
every NEW it stamps), a per-account exposure limit kept client-side, three ``Node``s in one trio
program, two accounts trading through ``Client``, and the books and fills read back in ``Decimal``.

Run: ``python demos/custom_venue.py`` (a few seconds; loopback ports and a temp dir, nothing kept).
"""

from __future__ import annotations

import tempfile
from decimal import Decimal

import trio

import gossipbook as gb

ACME = gb.Instrument("ACME", tick_size="0.05", lot_size="10", min_price="1", max_price="500")
BTCX = gb.Instrument("BTCX", tick_size="0.5", lot_size="0.001", min_price="1000", max_price="200000")
ORDER_NOTIONAL_CAP = Decimal("50000")  # per order, enforced by the venue hook at the stamping node
ACCOUNT_EXPOSURE_CAP = Decimal("80000")  # per account, open orders included: enforced client-side


def notional_cap(inst: gb.Instrument, side: int, price_ticks: int, qty_lots: int) -> None:
    """The venue hook: runs at the node that stamps a NEW (every node has it: the venue is given to
    each ``Node``). It sees ticks and lots; the instrument converts them back to decimals."""
    notional = inst.ticks_to_price(price_ticks) * inst.lots_to_qty(qty_lots)
    if notional > ORDER_NOTIONAL_CAP:
        raise gb.InvalidOrder(f"{inst.symbol}: notional {notional} > {ORDER_NOTIONAL_CAP} per order")


class ExposureLimit:
    """A client-side pre-trade check: an account's open orders plus the new one stay under a cap."""

    def __init__(self, client: gb.Client, cap: Decimal) -> None:
        self.client, self.cap = client, cap

    async def create_order(self, symbol: str, side: str, amount: str, price: str) -> gb.Order:
        open_orders = await self.client.fetch_open_orders()
        exposure = sum((o.price * o.remaining for o in open_orders if o.price is not None), Decimal(0)).normalize()
        new = Decimal(amount) * Decimal(price)
        if exposure + new > self.cap:
            raise gb.InvalidOrder(f"{self.client.account}: exposure {exposure} + {new} > {self.cap} (client-side limit)")
        return await self.client.create_order(symbol, side, amount, price)


async def main() -> None:
    venue = gb.Venue.of([ACME, BTCX], validate=notional_cap)
    with tempfile.TemporaryDirectory(prefix="gossipbook-venue-") as tmp:
        cfg = gb.local_cluster(venue, nodes=3, accounts=("alice", "bob"), data_root=tmp)
        async with trio.open_nursery() as nursery:
            nodes = [await nursery.start(gb.Node(cfg, nid, venue=venue).serve) for nid in cfg.ids]
            for n in nodes:
                await n.ready(timeout=10)
            print(f"venue up: {len(nodes)} nodes ({', '.join(n.node_id for n in nodes)}) trading "
                  f"{', '.join(venue.instruments)}")
            async with gb.Client(cfg, account="alice", node="n1") as alice, \
                    gb.Client(cfg, account="bob", node="n2") as bob:
                # orders in: alice quotes both books, bob takes
                await alice.create_order("ACME", "sell", "100", "101.50")
                await alice.create_order("ACME", "sell", "200", "102.00")
                await alice.create_order("BTCX", "buy", "0.4", "60000.0")
                o = await bob.create_order("ACME", "buy", "150", "102", wait="replicated")
                print(f"bob buys 150 ACME @ 102: {o.status}, filled {o.filled} in {len(o.fills)} fill(s) "
                      f"({', '.join(f'{f.amount}@{f.price}' for f in o.fills)})")
                o = await bob.create_order("BTCX", "sell", "0.25", "59990.5", wait="replicated")
                print(f"bob sells 0.25 BTCX @ 59990.5: {o.status}, filled {o.filled} @ "
                      f"{o.fills[0].price if o.fills else '-'}")
                # the venue hook refuses the same order at every node
                for nid in cfg.ids:
                    try:
                        await bob.create_order("BTCX", "buy", "1", "64000", node=nid)
                        print(f"UNEXPECTED: {nid} accepted a 64000 notional order")
                    except gb.InvalidOrder as e:
                        print(f"venue hook at {nid} refused: {e}")
                # wrong types never leave the program
                try:
                    await bob.create_order("ACME", "buy", "10", 101.5)  # type: ignore[arg-type]
                except gb.InvalidOrder as e:
                    print(f"float price refused before sending: {str(e).split(' (')[0]}")
                try:
                    await bob.create_order("ACME", "buy", "15", "101.5")
                except gb.InvalidOrder as e:
                    print(f"off-grid refused: {e}")
                # a client-side per-account limit (the hook does not see accounts yet)
                risky = ExposureLimit(alice, ACCOUNT_EXPOSURE_CAP)
                await risky.create_order("ACME", "sell", "300", "110")
                try:
                    await risky.create_order("ACME", "sell", "300", "111")
                except gb.InvalidOrder as e:
                    print(f"account limit refused: {e}")
                # book and fills out, read at a third node once everything has replicated
                await trio.sleep(0.5)
                for sym in venue.instruments:
                    book = await bob.fetch_order_book(sym, 5, node="n3")
                    bids = ", ".join(f"{lv.amount}@{lv.price}" for lv in book.bids) or "-"
                    asks = ", ".join(f"{lv.amount}@{lv.price}" for lv in book.asks) or "-"
                    print(f"book {sym} at n3: bids [{bids}] asks [{asks}]")
                for c in (alice, bob):
                    fills = await c.fetch_my_trades(node="n3")
                    print(f"fills of {c.account}: " + "; ".join(
                        f"{f.side} {f.amount} {f.symbol} @ {f.price} ({f.role}, {f.status})" for f in fills))
            digests = {n.node_id: n.digest[:12] for n in nodes}
            same = len(set(digests.values())) == 1
            st = nodes[0].status()
            print(f"summary: {st.trades_final + st.trades_provisional} trades ({st.trades_final} final), "
                  f"{st.resting_orders} resting orders, digests {'equal' if same else 'DIFFER'} on all "
                  f"{len(nodes)} nodes ({next(iter(digests.values()))})")
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
