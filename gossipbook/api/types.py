"""The library's value types: enums for side, order type, time in force and ack level, and frozen
dataclasses for what a ``Client`` returns and what ``Node.events()`` adds to the core's events.

Rules that hold: every price and quantity here is a ``Decimal`` on its instrument's grid (the core's
integer ticks and lots never reach this surface); every value is immutable; an enum member compares
equal to its lowercase name (``Side.BUY == "buy"``), so code that passes strings keeps working.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

from ..core.book import Trade


class Side(StrEnum):
    """Which side of the book an order is on."""

    BUY = "buy"
    SELL = "sell"


class OrderType(StrEnum):
    """``LIMIT`` orders carry a price; ``MARKET`` orders take whatever the book offers and never rest."""

    LIMIT = "limit"
    MARKET = "market"


class TimeInForce(StrEnum):
    """``GTC`` rests what it does not fill; ``IOC`` drops the remainder; ``FOK`` fills completely or
    not at all."""

    GTC = "gtc"
    IOC = "ioc"
    FOK = "fok"


class AckLevel(StrEnum):
    """How far an order had got when the node answered: ``ACCEPTED`` (durable at that node),
    ``REPLICATED`` (a majority holds it) or ``FINAL`` (below the stable watermark: its trades can no
    longer be revised)."""

    ACCEPTED = "accepted"
    REPLICATED = "replicated"
    FINAL = "final"


#: wire level number -> AckLevel
LEVELS = (AckLevel.ACCEPTED, AckLevel.REPLICATED, AckLevel.FINAL)


@dataclass(frozen=True, slots=True)
class Fill:
    """One of my fills. ``price`` and ``amount`` are this trade's, ``side`` and ``order_id`` are mine
    (never the counterparty's). ``final``: it can no longer be revised; ``revisions``: how often a
    replay changed it; ``undone``: a replay took it back (it did not happen)."""

    trade_id: str
    symbol: str
    order_id: str
    side: Side
    price: Decimal
    amount: Decimal
    role: str  # "maker" or "taker"
    final: bool = False
    revisions: int = 0
    undone: bool = False

    @property
    def status(self) -> str:
        """``"undone"``, ``"final"`` or ``"provisional"``."""
        return "undone" if self.undone else "final" if self.final else "provisional"

    @property
    def cost(self) -> Decimal:
        """``price * amount`` (zero when undone)."""
        return Decimal(0) if self.undone else self.price * self.amount


@dataclass(frozen=True, slots=True)
class Order:
    """An order as the client knows it. From ``create_order``: what the ack said (``filled`` and
    ``fills`` are the trades this node made at once; ``status`` is ``"open"`` if a GTC remainder
    rests, ``"closed"`` if it filled completely, ``"canceled"`` if an IOC/FOK/market remainder was
    dropped). From ``fetch_open_orders``: a resting order (``amount`` is then its remaining quantity;
    the original is not kept by the node)."""

    id: str
    symbol: str
    side: Side
    price: Decimal | None
    amount: Decimal
    remaining: Decimal
    type: OrderType = OrderType.LIMIT
    time_in_force: TimeInForce = TimeInForce.GTC
    status: str = "open"
    filled: Decimal = Decimal(0)
    fills: tuple[Fill, ...] = ()
    node: str = ""
    level: AckLevel | None = None


@dataclass(frozen=True, slots=True)
class Ack:
    """A node's answer to a cancel, amend or mass cancel: the order acted on (for a mass cancel, the
    id of the mass-cancel op), the level reached, and any fills an amend made at once."""

    order_id: str
    node: str
    level: AckLevel
    request_id: str
    fills: tuple[Fill, ...] = ()


@dataclass(frozen=True, slots=True)
class BookLevel:
    """One price level: its price, total quantity and number of orders."""

    price: Decimal
    amount: Decimal
    orders: int


@dataclass(frozen=True, slots=True)
class OrderBook:
    """Top levels of one book as one node holds it: bids best (highest) first, asks best (lowest)
    first. ``digest`` is the node's digest of all its books (equal digests, equal books)."""

    symbol: str
    bids: tuple[BookLevel, ...]
    asks: tuple[BookLevel, ...]
    node: str
    digest: str = ""

    @property
    def best_bid(self) -> Decimal | None:
        return self.bids[0].price if self.bids else None

    @property
    def best_ask(self) -> Decimal | None:
        return self.asks[0].price if self.asks else None


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """A summary of a node's ``status`` (``raw`` holds all of it; keys in docs/operations.md)."""

    id: str
    ready: bool
    accepting: bool
    digest: str
    ops: int
    resting_orders: int
    trades_final: int
    trades_provisional: int
    members: dict[str, str] = field(hash=False)
    raw: dict[str, Any] = field(hash=False, repr=False)
    #: this node's clock against the time reference (``status["clock"]``; None in strong mode or
    #: while unsynced): ``clock_status`` synced | free-running | unsynced
    clock_status: str = ""
    clock_offset_us: float | None = None
    clock_bound_us: float | None = None
    clock_drift_ppm: float | None = None

    @classmethod
    def from_status(cls, s: dict[str, Any]) -> NodeStatus:
        members = s.get("members") or {}
        clock = s.get("clock") or {}
        return cls(id=str(s.get("id", "")), ready=bool(s.get("ready")), accepting=bool(s.get("accepting", True)),
                   digest=str(s.get("digest", "")), ops=int(s.get("ops", 0)),
                   resting_orders=int(s.get("resting_orders", 0)), trades_final=int(s.get("trades_final", 0)),
                   trades_provisional=int(s.get("trades_provisional", 0)),
                   members={str(k): str(v) for k, v in members.items()}, raw=s,
                   clock_status=str(clock.get("status", "")), clock_offset_us=clock.get("offset_us"),
                   clock_bound_us=clock.get("bound_us"), clock_drift_ppm=clock.get("drift_ppm"))


# ---- risk limits ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RiskLimit:
    """One risk limit of one account, as the nodes that answered see it. Values are ``Decimal`` in
    the instrument's units (notional: price x quantity). Each mapping is keyed by the node that
    answered, because each node holds its own view: ``limits`` agree once the nodes hold the same
    ops; ``used`` is what that node's own orders take of it (eventual mode: their worst case and
    final fills; strong mode: the exact exposure at its folded index); ``headroom`` what that node
    may still take (eventual mode only). ``rights`` is the escrow's rights matrix (holder node ->
    rights it holds) as the first node that answered sees it (empty in strong mode)."""

    account: str
    symbol: str | None  # None: the limit adds up every instrument
    kind: str  # open-buy, open-sell, long-position, short-position (a position limit is both), notional
    limit: Decimal  # as the first node that answered holds it
    limits: dict[str, Decimal] = field(hash=False)
    rights: dict[str, Decimal] = field(hash=False)
    used: dict[str, Decimal] = field(hash=False)
    headroom: dict[str, Decimal] = field(hash=False)


@dataclass(frozen=True, slots=True)
class AccountRisk:
    """An account's limits and kill-switch state. ``disabled``: some node that answered has folded
    the kill switch (``disabled_at`` says which, per node)."""

    account: str
    disabled: bool
    disabled_at: dict[str, bool] = field(hash=False)
    limits: tuple[RiskLimit, ...] = ()

    def limit(self, kind: str, symbol: str | None = None) -> RiskLimit | None:
        """The limit of ``kind`` in ``symbol`` (None: the every-instrument one), if set."""
        return next((x for x in self.limits if x.kind == kind and x.symbol == symbol), None)


@dataclass(frozen=True, slots=True)
class RiskReport:
    """``Client.fetch_risk``'s answer: each account the asking client may see (the operator: every
    account; any other: its own) with limits or a kill switch, and which nodes answered."""

    accounts: dict[str, AccountRisk] = field(hash=False)
    answered: tuple[str, ...] = ()
    unreachable: tuple[str, ...] = ()
    mode: str = "eventual"


# ---- events the library adds to the core's ---------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TradeFinal:
    """A trade reported before (``TradeExecuted``, or the ``new`` of a ``TradeRevised``) is now final
    at this node: the op that made it is below the stable watermark, so no replay can revise it.
    Derived by the ``Node`` polling the replica's finality (about every 50 ms) for the trades it
    reported; in strong mode every trade is final when it is reported."""

    trade: Trade


@dataclass(frozen=True, slots=True)
class Missed:
    """``count`` events were dropped here because the consumer of ``Node.events()`` fell behind (its
    buffer was full). The events after this one are again complete."""

    count: int
