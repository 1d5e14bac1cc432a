"""Ops: the unit of replication, and the events the fold reports.

An ``Op`` is a NamedTuple whose first three fields are its sort key ``(wall, logical, origin)``, so
comparing two ops *is* comparing them in the fold's total order, and ``sorted(ops)`` is the fold.
Within one origin, HLC timestamps strictly increase with ``seq``, so the key is unique per op.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from .book import Trade

NEW, CANCEL, AMEND, CANCEL_ALL = 1, 2, 3, 4
KIND_NAMES = {NEW: "new", CANCEL: "cancel", AMEND: "amend", CANCEL_ALL: "cancel-all"}


class Op(NamedTuple):
    """One client action, stamped once at its origin and never changed after."""

    wall: int
    logical: int
    origin: str
    seq: int
    kind: int
    symbol: str
    order_id: str  # target for CANCEL / AMEND; "" for NEW (its id is ``origin:seq``) and CANCEL_ALL
    side: int
    price: int  # ticks; 0 for market orders
    qty: int  # lots; for AMEND the new remaining quantity
    tif: int
    req: str  # client request id; a second op of the same account with the same non-empty req is a no-op
    account: str = ""  # who acts: a NEW's owner; a CANCEL / AMEND / CANCEL_ALL acts on its own orders only

    @property
    def req_key(self) -> str:
        """The request id as the fold dedupes it: scoped to the account, so one participant's ids
        can never shadow another's ("" when the op carries none)."""
        return scoped_req(self.account, self.req) if self.req else ""

    @property
    def op_id(self) -> str:
        return f"{self.origin}:{self.seq}"

    @property
    def target(self) -> str:
        """The order this op acts on: itself for NEW."""
        return self.order_id or f"{self.origin}:{self.seq}"


def scoped_req(account: str, req: str) -> str:
    """A request id scoped to its account: what replies, waits and the fold's dedupe are keyed by
    (account ids never contain "/", so the scoping is unambiguous)."""
    return f"{account}/{req}"


def parse_order_id(order_id: str) -> tuple[str, int] | None:
    """``"n1:42"`` -> ``("n1", 42)``; None if it is not of that shape."""
    origin, sep, seq = order_id.rpartition(":")
    if not sep or not origin or not seq.isdigit():
        return None
    return origin, int(seq)


@dataclass(frozen=True, slots=True)
class TradeExecuted:
    """A trade the fold made (provisional until its op is below the stable watermark)."""

    trade: Trade


@dataclass(frozen=True, slots=True)
class TradeRevised:
    """A trade reported before was changed (``new``) or undone (``new is None``) by a replay."""

    old: Trade
    new: Trade | None


@dataclass(frozen=True, slots=True)
class OpFenced:
    """An op from a removed member past its fence was refused (never applied)."""

    op: Op


Event = TradeExecuted | TradeRevised | OpFenced
