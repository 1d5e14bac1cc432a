"""Order-lifecycle events for ``Node.events()``: what happened to each order, as this node folded it.

Theory of operation: the core reports trades (``TradeExecuted`` / ``TradeRevised``); a venue
builder also wants to hear that an order was accepted, rested, filled, cancelled, amended or
refused. ``OrderTracker`` derives those from what the node folds, in fold order: the ops it folded
in one step of its loop, the trades that step made, and the books as they stand after the step
(eventual mode: one step is one flush of the node loop; strong mode: one committed entry, with the
fold's outcome, so refusals by the fold are reported too). It is pure (no trio): the ``Node`` feeds
it, tests feed it a ``Book`` directly.

Rules that hold:
- Events describe this node's fold *when it first folded the op*. In eventual mode a replay after a
  heal can change what an order did: the changed trades come as ``TradeRevised``, and the order's
  state now is what ``fetch_open_orders`` / ``Node.book`` show; lifecycle events are not re-issued.
- Per op, in fold order: a NEW gives ``OrderAccepted``, then an ``OrderFilled`` per side of each
  trade it made, then ``OrderRested`` (its remainder rests) or ``OrderCancelled(reason="unfilled")``
  (an IOC / FOK / market remainder, or self-trade prevention, dropped it) unless it filled
  completely. A CANCEL of an order this tracker saw resting gives ``OrderCancelled("cancel")``, a
  mass cancel one ``OrderCancelled("cancel_all")`` per order it took; an AMEND of a resting order
  ``OrderAmended`` (and fills if it crossed). A cancel or amend of an order already gone is silent
  here (its client's reply says so).
- Bounded: at most ``max_open`` resting orders are remembered (the oldest forgotten first: a cancel
  of a forgotten order is then silent).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal

from ..core.book import BUY, FOK, IOC, MARKET, Trade
from ..core.instrument import Venue
from ..core.ops import AMEND, CANCEL, CANCEL_ALL, NEW, Op
from ..core.risk import HALT
from .types import OrderType, Side, TimeInForce


@dataclass(frozen=True, slots=True)
class OrderAccepted:
    """A NEW order entered this node's fold (stamped here or received from ``node``)."""

    order_id: str
    account: str
    symbol: str
    side: Side
    type: OrderType
    time_in_force: TimeInForce
    price: Decimal | None
    amount: Decimal
    node: str


@dataclass(frozen=True, slots=True)
class OrderRested:
    """What a NEW order did not fill at once rests in the book."""

    order_id: str
    account: str
    symbol: str
    remaining: Decimal


@dataclass(frozen=True, slots=True)
class OrderFilled:
    """One side of one trade: ``order_id`` (``account``'s) traded ``amount`` at ``price``.
    ``remaining``: what of the order still rests after this fold step (0: it is done)."""

    order_id: str
    account: str
    symbol: str
    side: Side
    price: Decimal
    amount: Decimal
    trade_id: str
    role: str  # "maker" or "taker"
    remaining: Decimal


@dataclass(frozen=True, slots=True)
class OrderCancelled:
    """An order left the book without filling: ``reason`` is ``"cancel"`` (its owner cancelled it),
    ``"cancel_all"`` (a mass cancel), ``"kill_switch"`` (the operator disabled the account),
    ``"unfilled"`` (an IOC / FOK / market remainder, or self-trade prevention on the incoming order,
    dropped what did not fill) or ``"self_trade"`` (self-trade prevention took this resting order)."""

    order_id: str
    account: str
    symbol: str
    reason: str


@dataclass(frozen=True, slots=True)
class OrderAmended:
    """A resting order's price or quantity changed (``remaining`` is its new resting quantity)."""

    order_id: str
    account: str
    symbol: str
    price: Decimal
    remaining: Decimal


@dataclass(frozen=True, slots=True)
class OrderRejected:
    """A request was refused: at this node before it became an op (``request`` is the client's
    request id), or by the strong-mode fold (``order_id`` then names the op)."""

    account: str
    request: str
    code: int
    message: str
    order_id: str = ""


OrderEvent = OrderAccepted | OrderRested | OrderFilled | OrderCancelled | OrderAmended | OrderRejected

#: resting(symbol, order_id) -> ``(price ticks, remaining lots)`` if it rests after the step, else None
Resting = Callable[[str, str], "tuple[int, int] | None"]

_TIF = {IOC: TimeInForce.IOC, FOK: TimeInForce.FOK}
#: self-trade prevention modes that can take a *resting* order out of the book without a fill
_STP_TAKES_RESTING = {"cancel-oldest", "cancel-both", "decrement"}


def _cause(trade_id: str) -> str:
    return trade_id.rpartition("/")[0]


class OrderTracker:
    """Derives ``OrderEvent``s from folded ops, their trades and the books after the step."""

    def __init__(self, venue: Venue, max_open: int = 100_000) -> None:
        self.venue = venue
        self.max_open = max_open
        #: order id -> (account, symbol) of the orders seen resting and not yet seen leave
        self._open: OrderedDict[str, tuple[str, str]] = OrderedDict()
        #: (account, symbol) -> those of its orders in ``_open``: what a mass cancel or self-trade
        #: prevention can take, found without a pass over every open order
        self._owned: dict[tuple[str, str], set[str]] = {}
        self._stp_takes_resting = {s for s, i in venue.instruments.items() if i.stp in _STP_TAKES_RESTING}

    def __len__(self) -> int:
        return len(self._open)

    def clear(self) -> None:
        self._open.clear()
        self._owned.clear()

    def step(self, ops: Iterable[Op], trades: Iterable[Trade], resting: Resting) -> list[OrderEvent]:
        """The events of one fold step: ``ops`` folded (any order; sorted here into the fold's),
        ``trades`` made by the step, ``resting`` the books after it."""
        by_cause: dict[str, list[Trade]] = {}
        for t in trades:
            by_cause.setdefault(_cause(t.trade_id), []).append(t)
        ops = sorted(ops)
        # orders a later op of this step acted on: they rested in between, whatever they are now
        later: dict[str, int] = {}
        for i, op in enumerate(ops):
            if op.kind in (CANCEL, AMEND):
                later[op.order_id] = i
            for t in by_cause.get(op.op_id, ()):
                later[t.maker] = max(later.get(t.maker, -1), i)
        out: list[OrderEvent] = []
        for i, op in enumerate(ops):
            made = by_cause.pop(op.op_id, [])
            kind = op.kind
            if kind == NEW:
                out.append(self._accepted(op))
                out += self._fills(made, resting)
                out += self._outcome(op, i, made, later, ops, resting)
                out += self._self_trade(op, i, later, resting)
            elif kind == CANCEL:
                if op.order_id in self._open and resting(op.symbol, op.order_id) is None:
                    acct, sym = self._forget(op.order_id)
                    out.append(OrderCancelled(op.order_id, acct, sym, "cancel"))
            elif kind == AMEND:
                out += self._amended(op, i, made, later, resting)
                out += self._self_trade(op, i, later, resting)
            elif kind == CANCEL_ALL:
                out += self._mass_cancel(op.account, op.symbol, "cancel_all", resting)
            elif kind == HALT and op.side == 0:  # the operator's kill switch: the account's orders go
                out += self._mass_cancel(op.order_id, "", "kill_switch", resting)
        for rest in by_cause.values():  # trades a replay made for ops folded in an earlier step
            out += self._fills(rest, resting)
        return out

    # ---- pieces ------------------------------------------------------------------------------------
    def _accepted(self, op: Op) -> OrderAccepted:
        inst = self.venue.get(op.symbol)
        market = op.tif == MARKET
        return OrderAccepted(op.op_id, op.account, op.symbol, Side.BUY if op.side == BUY else Side.SELL,
                             OrderType.MARKET if market else OrderType.LIMIT,
                             _TIF.get(op.tif, TimeInForce.IOC if market else TimeInForce.GTC),
                             None if market else inst.ticks_to_price(op.price), inst.lots_to_qty(op.qty), op.origin)

    def _fills(self, trades: list[Trade], resting: Resting) -> list[OrderEvent]:
        out: list[OrderEvent] = []
        for t in trades:
            inst = self.venue.get(t.symbol)
            price, qty = inst.ticks_to_price(t.price), inst.lots_to_qty(t.qty)
            taker_side = Side.BUY if t.taker_side == BUY else Side.SELL
            maker_side = Side.SELL if taker_side is Side.BUY else Side.BUY
            for oid, acct, side, role in ((t.maker, t.maker_account, maker_side, "maker"),
                                          (t.taker, t.taker_account, taker_side, "taker")):
                now = resting(t.symbol, oid)
                if now is None and oid in self._open:
                    self._forget(oid)
                out.append(OrderFilled(oid, acct, t.symbol, side, price, qty, t.trade_id, role,
                                       inst.lots_to_qty(now[1]) if now is not None else Decimal(0)))
        return out

    def _amended(self, op: Op, i: int, made: list[Trade], later: dict[str, int],
                 resting: Resting) -> list[OrderEvent]:
        """An AMEND of an order seen resting: ``OrderAmended`` with what it asked for (the fold
        applied it: the order rested and is the account's), then the fills it made by crossing;
        if it is gone after them and no fill took it to zero, self-trade prevention took it."""
        oid = op.order_id
        known = self._open.get(oid)
        if known is None or known[0] != op.account:
            return self._fills(made, resting)
        acct, sym = known
        inst = self.venue.get(sym)
        if op.qty == 0:
            self._forget(oid)
            return [OrderCancelled(oid, acct, sym, "cancel")]
        out: list[OrderEvent] = [OrderAmended(oid, acct, sym, inst.ticks_to_price(op.price), inst.lots_to_qty(op.qty))]
        out += self._fills(made, resting)
        if oid in self._open and later.get(oid, -1) <= i and resting(sym, oid) is None:
            self._forget(oid)
            out.append(OrderCancelled(oid, acct, sym, "self_trade"))
        return out

    def _mass_cancel(self, account: str, symbol: str, reason: str, resting: Resting) -> list[OrderEvent]:
        out: list[OrderEvent] = []
        for sym in [symbol] if symbol else sorted(self.venue.instruments):
            for oid in sorted(self._owned.get((account, sym), ())):
                if resting(sym, oid) is None:
                    self._forget(oid)
                    out.append(OrderCancelled(oid, account, sym, reason))
        return out

    def _self_trade(self, op: Op, i: int, later: dict[str, int], resting: Resting) -> list[OrderEvent]:
        """Orders of ``op``'s account that self-trade prevention took from the book (cancel-oldest,
        cancel-both, decrement to zero) without a fill: only those can vanish so."""
        if op.symbol not in self._stp_takes_resting:
            return []
        out: list[OrderEvent] = []
        for oid in sorted(self._owned.get((op.account, op.symbol), ())):
            if oid != op.order_id and later.get(oid, -1) <= i and resting(op.symbol, oid) is None:
                self._forget(oid)
                out.append(OrderCancelled(oid, op.account, op.symbol, "self_trade"))
        return out

    def _outcome(self, op: Op, i: int, made: list[Trade], later: dict[str, int], ops: list[Op],
                 resting: Resting) -> list[OrderEvent]:
        oid, inst = op.op_id, self.venue.get(op.symbol)
        now = resting(op.symbol, oid)
        gone_later = later.get(oid, -1) > i or any(
            o.kind == CANCEL_ALL and o.account == op.account and o.symbol in ("", op.symbol) for o in ops[i + 1:])
        filled = sum(t.qty for t in made if t.taker == oid)
        if now is not None or (gone_later and op.tif not in (IOC, FOK, MARKET) and filled < op.qty):
            self._remember(oid, op.account, op.symbol)
            left = now[1] if now is not None and not gone_later else op.qty - filled
            return [OrderRested(oid, op.account, op.symbol, inst.lots_to_qty(left))]
        if filled < op.qty:
            return [OrderCancelled(oid, op.account, op.symbol, "unfilled")]
        return []

    def _remember(self, oid: str, account: str, symbol: str) -> None:
        self._open[oid] = (account, symbol)
        self._open.move_to_end(oid)
        self._owned.setdefault((account, symbol), set()).add(oid)
        while len(self._open) > self.max_open:
            self._forget(next(iter(self._open)))

    def _forget(self, oid: str) -> tuple[str, str]:
        acct, sym = self._open.pop(oid)
        owned = self._owned.get((acct, sym))
        if owned is not None:
            owned.discard(oid)
            if not owned:
                del self._owned[(acct, sym)]
        return acct, sym
