"""The application layer of one FIX session: orders in, library commands out; library results and
fills in, ExecutionReports out. Pure: no trio, no client, no clock (``now`` is passed in).

Theory of operation: ``App.on_message`` reads a NewOrderSingle (D), OrderCancelRequest (F),
OrderCancelReplaceRequest (G) or OrderMassCancelRequest (q) and returns either a command for the
shell to carry out with ``gossipbook.Client`` (``Place``, ``Cancel``, ``Replace``, ``MassCancel``) or
the answer at once (a session ``Reject`` for a malformed field, an ExecutionReport Rejected for an
order the venue would refuse, an OrderCancelReject). The shell hands the outcome back
(``on_placed``/``on_failed``, ...) and every fill of the account the library reports (``on_fill``),
and sends what those return. ``journal()`` lists the order and fill records that changed, for the
store, so a gateway restart keeps ClOrdID -> order id and what each fill was reported as.

Rules that hold:
- Prices and quantities are FIX decimals (digits, at most one point, no sign or exponent) checked on
  the instrument's grid here, before anything is sent: off the grid is an ExecutionReport Rejected
  (OrdRejReason 13 for a quantity, 99 for a price) with the grid in Text; not a decimal at all is a
  session Reject (SessionRejectReason 6) naming the tag.
- A ClOrdID names at most one order for the session's life in the store; reuse is Rejected (6).
- Every fill is reported once as ExecType F. When a replay revises it, ExecType G (Trade Correct)
  with the new LastQty/LastPx; when a replay undoes it, ExecType H (Trade Cancel); both carry
  ExecRefID = the ExecID of the original fill report. When it becomes final, ExecType I (Order
  Status) with ExecRefID and GbFinality(20002)=F. CumQty and AvgPx always count the fills that stand.
- Fills of an order id not known yet (the fill feed can beat the order's ack) wait in a bounded
  parking lot (``max_parked``) for ``park_s`` seconds, then are dropped and counted ``foreign_fills``.
- Every NewOrderSingle is sent under a request id the App chooses: ``intend`` records it with the
  order's fields (an *intent*, in the journal) when the message arrives, so the shell commits it
  with the session's sequence numbers, before the order reaches the worker and the node; the intent
  is forgotten in the journal that records the order's outcome. A gateway that crashed between the
  node's ack and that commit finds the intent on restart: ``resume`` hands the order back as the
  same ``Place`` (same request id), and the node's request dedupe answers with the order it placed
  (or places it, if the request never arrived) instead of a second order. Only intents younger
  than ``resume_s`` are resumed (the node remembers request ids for about a million ops); older
  ones are counted ``in_doubt`` and left unacknowledged.
- State is bounded: at most ``max_orders`` order records (finished ones are forgotten first; when all
  are working, new orders are Rejected) and ``max_fills`` fill records (oldest first).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from ..core.errors import InvalidOrder
from ..core.instrument import Instrument
from . import tags as T
from .codec import Message, clean_text, format_utc

_DECIMAL = re.compile(rb"\d{1,15}(?:\.\d{1,15})?")
_CLORDID = re.compile(rb"[\x21-\x7e]{1,64}")
MAX_NAMES = 16  # ClOrdIDs remembered per order (a replace chain longer than this forgets the oldest)
#: the NewOrderSingle fields an intent keeps (enough to carry the order out again after a restart)
_INTENT_TAGS = frozenset({T.ClOrdID, T.Symbol, T.Side, T.OrderQty, T.OrdType, T.Price, T.TimeInForce})
#: an order sent this recently before a restart is sent again under its request id; the node's
#: dedupe window is about a million ops (~50 s at 20k ops/s), so this stays well inside it
RESUME_S = 30.0


def random_req() -> str:
    """A request id for one NewOrderSingle (24 hex digits: never reused, short enough for the wire)."""
    return "fx" + secrets.token_hex(12)


class FillLike(Protocol):
    """What ``gossipbook.Fill`` offers (duck-typed so this module needs no client import)."""

    trade_id: str
    order_id: str
    price: Decimal
    amount: Decimal
    final: bool
    revisions: int
    undone: bool


# ---- commands (what the shell does with the library) ----------------------------------------------
@dataclass(frozen=True, slots=True)
class Place:
    clordid: str
    symbol: str
    side: str  # "buy" / "sell"
    amount: Decimal
    price: Decimal | None
    type: str  # "limit" / "market"
    tif: str  # "gtc" / "ioc" / "fok"
    req: str = ""  # the request id to send it under (persisted in the order record first)


@dataclass(frozen=True, slots=True)
class Cancel:
    clordid: str
    orig_clordid: str
    order_id: str


@dataclass(frozen=True, slots=True)
class Replace:
    clordid: str
    orig_clordid: str
    order_id: str
    symbol: str
    amount: Decimal  # the new remaining quantity (gossipbook's amend)
    qty: Decimal  # the new OrderQty (FIX's: filled included)
    price: Decimal


@dataclass(frozen=True, slots=True)
class MassCancel:
    clordid: str
    symbol: str | None
    request_type: str  # "1" by symbol, "7" all


Command = Place | Cancel | Replace | MassCancel


# ---- answers --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Reject:
    """A session-level Reject (3) of the message just received."""

    tag: int | None
    reason: int
    text: str


@dataclass(frozen=True, slots=True)
class Out:
    """An application message to send."""

    msg_type: str
    fields: tuple[tuple[int, object], ...]


# ---- records (persisted) --------------------------------------------------------------------------
@dataclass(slots=True)
class OrderRec:
    clordid: str
    symbol: str
    side: str
    ord_type: str  # "1" market, "2" limit
    tif: str  # "1" GTC, "3" IOC, "4" FOK
    qty: Decimal
    price: Decimal | None
    order_id: str = ""
    cum: Decimal = Decimal(0)
    notional: Decimal = Decimal(0)
    done: bool = False  # no longer working: cancelled, or an IOC/FOK/market order after its ack
    rejected: bool = False
    n_exec: int = 0
    names: list[str] = field(default_factory=list)  # every ClOrdID it has had, oldest first
    req: str = ""  # the request id the order was sent under ("" for a record from before request ids)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("qty", "price", "cum", "notional"):
            d[k] = None if d[k] is None else str(d[k])
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> OrderRec:
        r = cls(**{k: d[k] for k in d if k in cls.__dataclass_fields__})
        r.qty, r.cum, r.notional = Decimal(r.qty), Decimal(r.cum), Decimal(r.notional)
        r.price = None if r.price is None else Decimal(r.price)
        return r


@dataclass(slots=True)
class FillRec:
    trade_id: str
    order_id: str
    price: Decimal
    qty: Decimal
    exec_id: str  # the ExecID corrections and cancels reference
    undone: bool = False
    final: bool = False
    n: int = 0  # reports made for it (ExecIDs are derived from it)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["price"], d["qty"] = str(self.price), str(self.qty)
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> FillRec:
        r = cls(**{k: d[k] for k in d if k in cls.__dataclass_fields__})
        r.price, r.qty = Decimal(r.price), Decimal(r.qty)
        return r


def fix_decimal(d: Decimal) -> str:
    """A Decimal as a FIX decimal: plain digits, no exponent, no trailing zeros past the point."""
    s = format(d, "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s or "0"


class App:
    """The application state of one trading session (its account's orders placed through it)."""

    COUNTERS = ("orders", "rejected", "cancels", "replaces", "mass_cancels", "fills", "corrections", "busts",
                "finals", "parked", "foreign_fills", "orders_evicted", "fills_evicted", "session_rejects",
                "resumed", "in_doubt")

    def __init__(self, account: str, instruments: Mapping[str, Instrument], *, max_orders: int = 100_000,
                 max_fills: int = 100_000, max_parked: int = 10_000, park_s: float = 30.0,
                 resume_s: float = RESUME_S, new_req: Callable[[], str] = random_req) -> None:
        self.account = account
        self.resume_ns = int(resume_s * 1e9)
        self.new_req = new_req
        self.instruments = dict(instruments)
        self.max_orders, self.max_fills, self.max_parked = max_orders, max_fills, max_parked
        self.park_ns = int(park_s * 1e9)
        self.orders: dict[str, OrderRec] = {}  # first ClOrdID -> record (insertion order: oldest first)
        self._by_name: dict[str, OrderRec] = {}  # any ClOrdID it has had -> record
        self._by_oid: dict[str, OrderRec] = {}
        self.fills: dict[str, FillRec] = {}
        self._parked: dict[str, tuple[int, FillLike]] = {}  # trade id -> (parked at, fill)
        self._dirty_orders: dict[str, OrderRec] = {}
        self._dirty_fills: dict[str, FillRec] = {}
        self.intents: dict[str, dict[str, Any]] = {}  # request id -> {"pairs", "at"}: sent, outcome not recorded
        self._dirty_intents: dict[str, dict[str, Any]] = {}
        self._forgotten: list[tuple[str, str]] = []
        self.counters: dict[str, int] = dict.fromkeys(self.COUNTERS, 0)

    # ---- restore and journal -------------------------------------------------------------------------
    def restore(self, orders: Iterable[OrderRec], fills: Iterable[FillRec],
                intents: Mapping[str, dict[str, Any]] | None = None) -> None:
        for r in orders:
            self._index(r)
        for f in fills:
            self.fills[f.trade_id] = f
        self.intents.update(intents or {})

    def journal(self) -> list[tuple[str, str, dict[str, Any] | None]]:
        """``(kind, key, record or None to delete)`` for what changed since the last call."""
        out: list[tuple[str, str, dict[str, Any] | None]] = [(k, key, None) for k, key in self._forgotten]
        out += [("order", k, r.to_json()) for k, r in self._dirty_orders.items()]
        out += [("fill", k, f.to_json()) for k, f in self._dirty_fills.items()]
        out += [("intent", k, d) for k, d in self._dirty_intents.items()]
        self._forgotten, self._dirty_orders, self._dirty_fills, self._dirty_intents = [], {}, {}, {}
        return out

    # ---- intents: what a restart needs to ask the node again ---------------------------------------
    def intend(self, msg: Message, now: int) -> str:
        """A NewOrderSingle has arrived: choose its request id and record the intent (journaled, so
        it is committed before the order can reach the node). Hand the id to ``on_message``."""
        req = self.new_req()
        d = {"pairs": [[t, v.decode("latin-1")] for t, v in msg.pairs if t in _INTENT_TAGS][:16], "at": now}
        self.intents[req] = self._dirty_intents[req] = d
        return req

    def _settled(self, req: str) -> None:
        """The outcome of request ``req`` is recorded (in the same journal): forget its intent."""
        if req and self.intents.pop(req, None) is not None:
            self._dirty_intents.pop(req, None)
            self._forgotten.append(("intent", req))

    def _index(self, r: OrderRec) -> None:
        key = r.names[0] if r.names else r.clordid
        if not r.names:
            r.names.append(r.clordid)
        self.orders[key] = r
        for n in r.names:
            self._by_name[n] = r
        if r.order_id:
            self._by_oid[r.order_id] = r

    def _touch(self, r: OrderRec) -> None:
        self._dirty_orders[r.names[0]] = r

    def _make_room(self) -> bool:
        """Forget the oldest finished order if the table is full; False if every order is working."""
        if len(self.orders) < self.max_orders:
            return True
        for key, r in self.orders.items():
            if r.done or r.rejected or (r.cum >= r.qty and r.order_id):
                del self.orders[key]
                for n in r.names:
                    self._by_name.pop(n, None)
                if r.order_id:
                    self._by_oid.pop(r.order_id, None)
                self._dirty_orders.pop(key, None)
                self._forgotten.append(("order", key))
                self.counters["orders_evicted"] += 1
                return True
        return False

    # ---- messages in --------------------------------------------------------------------------------
    def on_message(self, msg: Message, now: int, req: str = "") -> Command | Reject | list[Out]:
        """``req``: a NewOrderSingle's request id from ``intend`` (else a fresh one, with no intent)."""
        mt = msg.msg_type
        if mt == T.MT_NEW_ORDER_SINGLE:
            res = self._new_order(msg, now, req or self.new_req())
            if not isinstance(res, Place):
                self._settled(req)  # refused here: it will never reach the node
            return res
        if mt == T.MT_ORDER_CANCEL_REQUEST:
            return self._cancel(msg, now)
        if mt == T.MT_ORDER_CANCEL_REPLACE:
            return self._replace(msg, now)
        if mt == T.MT_ORDER_MASS_CANCEL_REQUEST:
            return self._mass_cancel(msg, now)
        return Reject(T.MsgType, T.R_INVALID_MSG_TYPE, f"MsgType {clean_text(mt, 8)} is not supported")

    def _field_problem(self, msg: Message, required: Iterable[int]) -> Reject | None:
        for tag in required:
            if msg.get(tag) is None:
                return self._sreject(tag, T.R_REQUIRED_TAG_MISSING, f"required tag {tag} missing")
            if tag in msg.repeated:
                return self._sreject(tag, T.R_TAG_REPEATED, f"tag {tag} appears more than once")
        for tag in (T.ClOrdID, T.OrigClOrdID):
            v = msg.get(tag)
            if v is not None and not _CLORDID.fullmatch(v):
                return self._sreject(tag, T.R_VALUE_INCORRECT, f"tag {tag} must be 1-64 printable characters")
        for tag in (T.OrderQty, T.Price):
            v = msg.get(tag)
            if v is not None and not _DECIMAL.fullmatch(v):
                return self._sreject(tag, T.R_INCORRECT_DATA_FORMAT,
                                     f"tag {tag} must be a positive decimal like 100.25, not {clean_text(v.decode(), 20)}")
        return None

    def _sreject(self, tag: int | None, reason: int, text: str) -> Reject:
        self.counters["session_rejects"] += 1
        return Reject(tag, reason, text)

    def _new_order(self, msg: Message, now: int, req: str) -> Place | Reject | list[Out]:
        bad = self._field_problem(msg, (T.ClOrdID, T.Symbol, T.Side, T.OrderQty, T.OrdType))
        if bad:
            return bad
        clordid = msg.text(T.ClOrdID) or ""
        side_v, type_v = msg.get(T.Side), msg.get(T.OrdType)
        tif_v = msg.get(T.TimeInForce) or b"1"
        symbol = (msg.text(T.Symbol) or "")[:64]  # kept in the order record: bounded (symbols are <= 32)
        qty = Decimal(msg.text(T.OrderQty) or "0")
        price = Decimal(msg.text(T.Price)) if msg.get(T.Price) is not None else None
        rec = OrderRec(clordid, symbol, "buy" if side_v == b"1" else "sell", (type_v or b"2").decode()[:2],
                       tif_v.decode()[:2], qty, price)
        if clordid in self._by_name:
            return self._refuse(rec, T.ORR_DUPLICATE_ORDER, f"ClOrdID {clordid} was used before on this session",
                                now, register=False)
        if side_v not in (b"1", b"2"):
            return self._refuse(rec, T.ORR_UNSUPPORTED, "Side must be 1 (buy) or 2 (sell)", now)
        if type_v not in (b"1", b"2"):
            return self._refuse(rec, T.ORR_UNSUPPORTED, "OrdType must be 1 (market) or 2 (limit)", now)
        if type_v == b"2" and price is None:
            return self._sreject(T.Price, T.R_REQUIRED_TAG_MISSING, "a limit order (OrdType 2) needs Price(44)")
        if type_v == b"1" and price is not None:
            return self._refuse(rec, T.ORR_UNSUPPORTED, "a market order (OrdType 1) takes no Price", now)
        if tif_v == b"0":
            return self._refuse(rec, T.ORR_UNSUPPORTED, "TimeInForce 0 (Day) is not supported: the venue has no "
                                "trading day; send 1 (GTC), 3 (IOC) or 4 (FOK)", now)
        if tif_v not in (b"1", b"3", b"4"):
            return self._refuse(rec, T.ORR_UNSUPPORTED, "TimeInForce must be 1 (GTC), 3 (IOC) or 4 (FOK)", now)
        inst = self.instruments.get(symbol)
        if inst is None:
            return self._refuse(rec, T.ORR_UNKNOWN_SYMBOL, f"unknown Symbol {clean_text(symbol, 32)}; traded: "
                                f"{', '.join(sorted(self.instruments))}", now)
        try:
            inst.qty_to_lots(qty)
        except InvalidOrder as e:
            return self._refuse(rec, T.ORR_INCORRECT_QUANTITY, str(e), now)
        if price is not None:
            try:
                inst.price_to_ticks(price)
            except InvalidOrder as e:
                return self._refuse(rec, T.ORR_OTHER, str(e), now)
        if not self._make_room():
            return self._refuse(rec, T.ORR_EXCEEDS_LIMIT, f"more than {self.max_orders} working orders on this "
                                "session", now, register=False)
        rec.req = req
        self._index(rec)
        self._touch(rec)
        self.counters["orders"] += 1
        return self._place(rec)

    @staticmethod
    def _place(r: OrderRec) -> Place:
        tif = {"1": "gtc", "3": "ioc", "4": "fok"}[r.tif]
        return Place(r.clordid, r.symbol, r.side, r.qty, r.price, "market" if r.ord_type == "1" else "limit", tif,
                     r.req)

    def resume(self, now: int) -> tuple[list[Place], list[Out]]:
        """After a restart, the intents left: orders that may have reached the node but whose
        outcome was never recorded (the gateway stopped between the node's answer and its commit).
        Those within ``resume_s`` come back as their ``Place``, to be sent again under the same
        request id (and the reports of any the App now refuses); older ones are counted
        ``in_doubt`` and forgotten (whether the venue has them is unknown)."""
        places: list[Place] = []
        outs: list[Out] = []
        for req, d in list(self.intents.items()):
            if now - int(d.get("at", 0)) > self.resume_ns:
                self.counters["in_doubt"] += 1
                self._settled(req)
                continue
            pairs = [(T.MsgType, b"D")] + [(int(t), str(v).encode("latin-1")) for t, v in d.get("pairs", [])]
            msg = Message.of(pairs)
            r = self._by_name.get(msg.text(T.ClOrdID) or "")
            if r is not None and r.req == req:  # its record was committed: carry on from it
                if r.order_id or r.rejected:
                    self._settled(req)
                    continue
                self.counters["resumed"] += 1
                places.append(self._place(r))
                continue
            res = self.on_message(msg, int(d.get("at", now)), req)  # the record was not: start over
            if isinstance(res, Place):
                self.counters["resumed"] += 1
                places.append(res)
            elif isinstance(res, list):
                outs += res
        return places, outs

    def _refuse(self, rec: OrderRec, reason: int, text: str, now: int, register: bool = True) -> list[Out]:
        """An ExecutionReport Rejected for an order that never reached the venue."""
        self.counters["rejected"] += 1
        rec.rejected = rec.done = True
        if register and self._make_room():
            self._index(rec)
            self._touch(rec)
        return [self._er(rec, T.ET_REJECTED, now, [(T.OrdRejReason, reason), (T.Text, clean_text(text))],
                         exec_id=None if register else f"REJ-{now}-{self.counters['rejected']}")]

    def _lookup(self, msg: Message) -> OrderRec | None:
        r = self._by_name.get(msg.text(T.OrigClOrdID) or "")
        if r is None and msg.get(T.OrderID) is not None:
            r = self._by_oid.get(msg.text(T.OrderID) or "")
        return r

    def _cancel(self, msg: Message, now: int) -> Cancel | Reject | list[Out]:
        bad = self._field_problem(msg, (T.ClOrdID, T.OrigClOrdID))
        if bad:
            return bad
        clordid, orig = msg.text(T.ClOrdID) or "", msg.text(T.OrigClOrdID) or ""
        r = self._lookup(msg)
        if clordid in self._by_name:
            return [self._cancel_reject(clordid, orig, r, "1", 6, f"ClOrdID {clordid} was used before")]
        if r is None or not r.order_id:
            return [self._cancel_reject(clordid, orig, r, "1", T.CRR_UNKNOWN_ORDER, f"unknown order {clean_text(orig, 64)}")]
        if r.done or r.rejected or r.cum >= r.qty:
            return [self._cancel_reject(clordid, orig, r, "1", T.CRR_TOO_LATE, "the order is no longer working")]
        self.counters["cancels"] += 1
        return Cancel(clordid, r.clordid, r.order_id)

    def _replace(self, msg: Message, now: int) -> Replace | Reject | list[Out]:
        bad = self._field_problem(msg, (T.ClOrdID, T.OrigClOrdID, T.OrderQty, T.Price))
        if bad:
            return bad
        clordid, orig = msg.text(T.ClOrdID) or "", msg.text(T.OrigClOrdID) or ""
        r = self._lookup(msg)
        if clordid in self._by_name:
            return [self._cancel_reject(clordid, orig, r, "2", 6, f"ClOrdID {clordid} was used before")]
        if r is None or not r.order_id:
            return [self._cancel_reject(clordid, orig, r, "2", T.CRR_UNKNOWN_ORDER, f"unknown order {clean_text(orig, 64)}")]
        if r.done or r.rejected or r.cum >= r.qty:
            return [self._cancel_reject(clordid, orig, r, "2", T.CRR_TOO_LATE, "the order is no longer working")]
        sym, side = msg.get(T.Symbol), msg.get(T.Side)
        if (sym is not None and sym.decode() != r.symbol) or \
                (side is not None and side != (b"1" if r.side == "buy" else b"2")):
            return [self._cancel_reject(clordid, orig, r, "2", T.CRR_BROKER_OPTION,
                                        "a replace cannot change Symbol or Side")]
        qty, price = Decimal(msg.text(T.OrderQty) or "0"), Decimal(msg.text(T.Price) or "0")
        if qty <= r.cum:
            return [self._cancel_reject(clordid, orig, r, "2", T.CRR_OTHER,
                                        f"OrderQty {fix_decimal(qty)} must be above CumQty {fix_decimal(r.cum)}")]
        inst = self.instruments[r.symbol]
        try:
            inst.qty_to_lots(qty - r.cum)
            inst.price_to_ticks(price)
        except InvalidOrder as e:
            return [self._cancel_reject(clordid, orig, r, "2", T.CRR_OTHER, str(e))]
        self.counters["replaces"] += 1
        return Replace(clordid, r.clordid, r.order_id, r.symbol, qty - r.cum, qty, price)

    def _mass_cancel(self, msg: Message, now: int) -> MassCancel | Reject | list[Out]:
        bad = self._field_problem(msg, (T.ClOrdID, T.MassCancelRequestType))
        if bad:
            return bad
        clordid, rtype = msg.text(T.ClOrdID) or "", msg.text(T.MassCancelRequestType) or ""
        symbol = msg.text(T.Symbol)
        reject = None
        if rtype not in ("1", "7"):
            reject = "MassCancelRequestType must be 1 (by Symbol) or 7 (all orders)"
        elif rtype == "1" and (symbol is None or symbol not in self.instruments):
            reject = "MassCancelRequestType 1 needs a traded Symbol"
        if reject:
            return [Out(T.MT_ORDER_MASS_CANCEL_REPORT, (
                (T.ClOrdID, clordid), (T.OrderID, "NONE"), (T.MassCancelRequestType, clean_text(rtype, 4)),
                (T.MassCancelResponse, 0), (T.MassCancelRejectReason, 99), (T.Text, reject),
                (T.TransactTime, format_utc(now).decode())))]
        self.counters["mass_cancels"] += 1
        return MassCancel(clordid, symbol if rtype == "1" else None, rtype)

    # ---- outcomes -----------------------------------------------------------------------------------
    def on_placed(self, cmd: Place, order_id: str, fills: Iterable[FillLike], now: int) -> list[Out]:
        """The venue took the order (``fills``: the trades it made at once)."""
        r = self._by_name[cmd.clordid]
        r.order_id = order_id
        self._by_oid[order_id] = r
        self._settled(cmd.req)
        out = [self._er(r, T.ET_NEW, now)]
        for f in fills:
            out += self.on_fill(f, now)
        out += self._unpark(order_id, now)
        if cmd.tif != "gtc" or cmd.type == "market":
            r.done = True  # never rests: the remainder (if any) is gone
            if r.cum < r.qty:
                out.append(self._er(r, T.ET_CANCELED, now, [(T.Text, f"{cmd.tif.upper()} remainder canceled")]))
        self._touch(r)
        return out

    def on_place_failed(self, cmd: Place, reason: int, text: str, now: int) -> list[Out]:
        r = self._by_name[cmd.clordid]
        self._settled(cmd.req)
        self.counters["rejected"] += 1
        r.rejected = r.done = True
        self._touch(r)
        return [self._er(r, T.ET_REJECTED, now, [(T.OrdRejReason, reason), (T.Text, clean_text(text))])]

    def on_canceled(self, cmd: Cancel, now: int) -> list[Out]:
        r = self._by_oid[cmd.order_id]
        r.done = True
        self._rename(r, cmd.clordid)
        self._touch(r)
        return [self._er(r, T.ET_CANCELED, now, [(T.OrigClOrdID, cmd.orig_clordid)])]

    def on_replaced(self, cmd: Replace, fills: Iterable[FillLike], now: int) -> list[Out]:
        r = self._by_oid[cmd.order_id]
        self._rename(r, cmd.clordid)
        r.qty, r.price = cmd.qty, cmd.price
        out = [self._er(r, T.ET_REPLACED, now, [(T.OrigClOrdID, cmd.orig_clordid)])]
        for f in fills:
            out += self.on_fill(f, now)
        self._touch(r)
        return out

    def on_cancel_failed(self, cmd: Cancel | Replace, reason: int, text: str, now: int) -> list[Out]:
        r = self._by_oid.get(cmd.order_id)
        return [self._cancel_reject(cmd.clordid, cmd.orig_clordid, r, "1" if isinstance(cmd, Cancel) else "2",
                                    reason, text)]

    def on_mass_canceled(self, cmd: MassCancel, op_id: str, now: int) -> list[Out]:
        """Every working order of this session (in the symbol) is cancelled by the mass-cancel op:
        the report first, then one ExecutionReport Canceled per order."""
        hit = [r for r in self.orders.values() if r.order_id and not r.done and not r.rejected and r.cum < r.qty
               and (cmd.symbol is None or r.symbol == cmd.symbol)]
        out = [Out(T.MT_ORDER_MASS_CANCEL_REPORT, (
            (T.ClOrdID, cmd.clordid), (T.OrderID, op_id or "NONE"), (T.MassCancelRequestType, cmd.request_type),
            (T.MassCancelResponse, cmd.request_type), (T.TotalAffectedOrders, len(hit)),
            (T.TransactTime, format_utc(now).decode())))]
        for r in hit:
            r.done = True
            self._touch(r)
            out.append(self._er(r, T.ET_CANCELED, now, [(T.Text, f"mass cancel {cmd.clordid}")]))
        return out

    def on_mass_cancel_failed(self, cmd: MassCancel, text: str, now: int) -> list[Out]:
        return [Out(T.MT_ORDER_MASS_CANCEL_REPORT, (
            (T.ClOrdID, cmd.clordid), (T.OrderID, "NONE"), (T.MassCancelRequestType, cmd.request_type),
            (T.MassCancelResponse, 0), (T.MassCancelRejectReason, 99), (T.Text, clean_text(text)),
            (T.TransactTime, format_utc(now).decode())))]

    # ---- fills ----------------------------------------------------------------------------------------
    def on_fill(self, fill: FillLike, now: int) -> list[Out]:
        """A fill of this account, new or changed (the library's feed yields each change)."""
        r = self._by_oid.get(fill.order_id)
        prev = self.fills.get(fill.trade_id)
        if r is None:
            if prev is None:
                self._park(fill, now)
            return []
        if prev is not None and prev.order_id != fill.order_id:  # the trade moved to another order of mine
            old = self._by_oid.get(prev.order_id)
            out = self._bust(old, prev, now) if old is not None and not prev.undone else []
            del self.fills[fill.trade_id]
            return out + self.on_fill(fill, now)
        if prev is None:
            if fill.undone:
                self._keep_fill(FillRec(fill.trade_id, fill.order_id, fill.price, fill.amount, "", True, fill.final))
                return []
            f = FillRec(fill.trade_id, fill.order_id, fill.price, fill.amount, fill.trade_id, False, fill.final, 1)
            self._keep_fill(f)
            return [self._fill_er(r, f, T.ET_TRADE, now, fill.price, fill.amount)]
        if prev.undone and not fill.undone:  # reinstated by a later replay: a new execution
            prev.n += 1
            prev.exec_id = f"{fill.trade_id}~r{prev.n}"
            prev.undone, prev.price, prev.qty, prev.final = False, fill.price, fill.amount, fill.final
            r.cum += fill.amount
            r.notional += fill.price * fill.amount
            self.counters["fills"] += 1
            self._dirty_fills[prev.trade_id] = prev
            self._touch(r)
            return [self._fill_er(r, prev, T.ET_TRADE, now, fill.price, fill.amount, exec_id=prev.exec_id)]
        if prev.undone:
            return []
        if fill.undone:
            prev.final = fill.final
            return self._bust(r, prev, now)
        if (fill.price, fill.amount) != (prev.price, prev.qty):
            self.counters["corrections"] += 1
            r.cum += fill.amount - prev.qty
            r.notional += fill.price * fill.amount - prev.price * prev.qty
            prev.price, prev.qty, prev.final = fill.price, fill.amount, fill.final
            prev.n += 1
            self._dirty_fills[prev.trade_id] = prev
            self._touch(r)
            return [self._fill_er(r, prev, T.ET_TRADE_CORRECT, now, fill.price, fill.amount,
                                  exec_id=f"{fill.trade_id}~c{prev.n}", ref=prev.exec_id)]
        if fill.final and not prev.final:
            self.counters["finals"] += 1
            prev.final = True
            self._dirty_fills[prev.trade_id] = prev
            return [self._fill_er(r, prev, T.ET_ORDER_STATUS, now, None, None, exec_id=f"{fill.trade_id}~f",
                                  ref=prev.exec_id)]
        return []

    def _bust(self, r: OrderRec, prev: FillRec, now: int) -> list[Out]:
        self.counters["busts"] += 1
        r.cum -= prev.qty
        r.notional -= prev.price * prev.qty
        prev.undone = True
        prev.n += 1
        self._dirty_fills[prev.trade_id] = prev
        self._touch(r)
        return [self._fill_er(r, prev, T.ET_TRADE_CANCEL, now, prev.price, prev.qty,
                              exec_id=f"{prev.trade_id}~x{prev.n}", ref=prev.exec_id)]

    def _keep_fill(self, f: FillRec) -> None:
        if f.trade_id not in self.fills and len(self.fills) >= self.max_fills:
            old = next(iter(self.fills))
            del self.fills[old]
            self._dirty_fills.pop(old, None)
            self._forgotten.append(("fill", old))
            self.counters["fills_evicted"] += 1
        self.fills[f.trade_id] = f
        self._dirty_fills[f.trade_id] = f
        if not f.undone:
            r = self._by_oid[f.order_id]
            r.cum += f.qty
            r.notional += f.price * f.qty
            self._touch(r)
            self.counters["fills"] += 1

    def _park(self, fill: FillLike, now: int) -> None:
        if fill.trade_id in self._parked or len(self._parked) < self.max_parked:
            self._parked[fill.trade_id] = (now, fill)
            self.counters["parked"] += 1
        else:
            self.counters["foreign_fills"] += 1

    def _unpark(self, order_id: str, now: int) -> list[Out]:
        out: list[Out] = []
        for tid in [t for t, (_, f) in self._parked.items() if f.order_id == order_id]:
            _, f = self._parked.pop(tid)
            out += self.on_fill(f, now)
        return out

    def expire(self, now: int) -> None:
        """Drop parked fills older than ``park_s``: they belong to orders not placed through this
        session (the same account trading elsewhere), counted ``foreign_fills``."""
        for tid in [t for t, (at, _) in self._parked.items() if now - at > self.park_ns]:
            del self._parked[tid]
            self.counters["foreign_fills"] += 1

    # ---- message building -----------------------------------------------------------------------------
    def _rename(self, r: OrderRec, clordid: str) -> None:
        r.clordid = clordid
        r.names.append(clordid)
        self._by_name[clordid] = r
        if len(r.names) > MAX_NAMES:
            gone = r.names.pop(1)  # keep the first: it is the record's key
            self._by_name.pop(gone, None)

    def _status(self, r: OrderRec) -> str:
        if r.rejected:
            return T.OS_REJECTED
        if r.cum >= r.qty and r.cum > 0:
            return T.OS_FILLED
        if r.done:
            return T.OS_CANCELED
        return T.OS_PARTIAL if r.cum > 0 else T.OS_NEW

    def _er(self, r: OrderRec, exec_type: str, now: int, extra: Iterable[tuple[int, object]] = (),
            exec_id: str | None = None) -> Out:
        if exec_id is None:
            r.n_exec += 1
            exec_id = f"{r.order_id or r.clordid}-{r.n_exec}"
        leaves = Decimal(0) if r.done or r.rejected or r.cum >= r.qty else r.qty - r.cum
        avg = (r.notional / r.cum).quantize(Decimal("1e-8")) if r.cum > 0 else Decimal(0)
        fields: list[tuple[int, object]] = [
            (T.Account, self.account), (T.OrderID, r.order_id or "NONE"), (T.ClOrdID, r.clordid),
            (T.ExecID, exec_id), (T.ExecType, exec_type), (T.OrdStatus, self._status(r)),
            (T.Symbol, clean_text(r.symbol, 32)), (T.Side, "1" if r.side == "buy" else "2"),
            (T.OrderQty, fix_decimal(r.qty)), (T.OrdType, clean_text(r.ord_type, 2))]
        if r.price is not None:
            fields.append((T.Price, fix_decimal(r.price)))
        fields += [(T.TimeInForce, clean_text(r.tif, 2)), (T.LeavesQty, fix_decimal(leaves)),
                   (T.CumQty, fix_decimal(r.cum)), (T.AvgPx, fix_decimal(avg)),
                   (T.TransactTime, format_utc(now).decode())]
        fields += list(extra)
        return Out(T.MT_EXECUTION_REPORT, tuple(fields))

    def _fill_er(self, r: OrderRec, f: FillRec, exec_type: str, now: int, last_px: Decimal | None,
                 last_qty: Decimal | None, exec_id: str | None = None, ref: str | None = None) -> Out:
        extra: list[tuple[int, object]] = []
        if ref is not None:
            extra.append((T.ExecRefID, ref))
        if last_qty is not None and last_px is not None:
            extra += [(T.LastQty, fix_decimal(last_qty)), (T.LastPx, fix_decimal(last_px))]
        extra += [(T.GB_TRADE_ID, f.trade_id), (T.GB_FINALITY, "F" if f.final else "P")]
        return self._er(r, exec_type, now, extra, exec_id=exec_id or f.exec_id)

    def _cancel_reject(self, clordid: str, orig: str, r: OrderRec | None, response_to: str, reason: int,
                       text: str) -> Out:
        return Out(T.MT_ORDER_CANCEL_REJECT, (
            (T.Account, self.account), (T.OrderID, r.order_id if r is not None and r.order_id else "NONE"),
            (T.ClOrdID, clordid), (T.OrigClOrdID, orig or "NONE"),
            (T.OrdStatus, self._status(r) if r is not None else T.OS_REJECTED),
            (T.CxlRejResponseTo, response_to), (T.CxlRejReason, reason), (T.Text, clean_text(text))))
