"""A venue factory for ``[cluster] venue = "tests.node.venue_fixture:capped"`` (tests)."""

from __future__ import annotations

from gossipbook.core.errors import InvalidOrder
from gossipbook.core.instrument import Instrument, OrderRequest, Venue


def capped(instruments: list[Instrument]) -> Venue:
    def hook(req: OrderRequest) -> None:
        if req.price * req.qty > 50_000 * 100:  # ticks x lots: 50,000 in price units at a 0.01 tick
            raise InvalidOrder(f"{req.kind}: notional {req.price * req.qty / 100:.2f} > 50000 for {req.account}")
    return Venue.of(instruments, hook)


def not_a_venue(instruments: list[Instrument]) -> str:
    return "nope"
