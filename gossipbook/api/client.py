"""``Client``: typed order entry and reads for one trading account, in ccxt's vocabulary.

Theory of operation: a thin layer over the authenticated request/reply client
(``gossipbook.node.client.Client``). Each method checks and converts its arguments first (symbol,
side, type, time in force, ``Decimal`` price and amount onto the instrument's grid), so a wrong
value is an ``InvalidOrder`` before anything is sent; then it sends one request with a fresh request
id (retries reuse it, so a retried order is never placed twice) and turns the reply into frozen
dataclasses in ``Decimal``, or a reply code into the library's exception.

Rules that hold:
- Prices and amounts are accepted as ``Decimal``, ``str`` or ``int``; a ``float`` (or ``bool``) is an
  ``InvalidOrder``: binary floats are not on any decimal grid.
- An exception raised inside ``async with Client(...)`` comes out as itself, never wrapped in an
  ``ExceptionGroup``; the methods raise the library's own exceptions (``gossipbook.errors``).
- Each request goes to one node: the ``node`` argument, else the client's default node (the
  ``node`` given to ``Client``, else the config's first). There is no silent fail-over, with two
  exceptions: in strong mode with shards, a submit without ``node`` goes to the leader of its
  shard once a node's reply named it (a ``LeaderHint``), and to the default node if that leader
  does not answer two tries (same request id: at most one effect); and with ``balance=True`` a
  request without ``node`` goes to the node with the lowest measured latency x load (in eventual
  mode a cancel or amend to the node that stamped the order), and moves, with the same request id,
  to another node once that one misses two replies in a row (``core/balance.py``).
- ``watch_my_trades`` and ``watch_order_book`` are pushed feeds: each holds a subscription (a lease
  it renews) at one node, which pushes sequenced snapshots and deltas (core/feeds.py); a lost push
  makes it ask for a fresh snapshot, so nothing is skipped silently. A fill is yielded when made,
  again when a replay after a heal revises or undoes it, and once more when it becomes final. In
  strong mode (whose nodes push no feeds) both poll instead, every ``interval`` seconds.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from decimal import Decimal
from os import PathLike
from types import TracebackType
from typing import Any

import trio

from ..config import OPERATOR, ClusterConfig
from ..core.book import BUY, FOK, GTC, IOC, MARKET, SELL
from ..core.errors import InvalidOrder, NotOwner, UnknownOrder, UsageError
from ..core.feeds import (
    F_FINAL,
    F_ID,
    F_ORDER,
    F_PRICE,
    F_QTY,
    F_REVISIONS,
    F_ROLE,
    F_SIDE,
    F_SYMBOL,
    F_UNDONE,
    FeedUpdate,
)
from ..core.instrument import Instrument, Venue
from ..core.ops import AMEND, CANCEL, CANCEL_ALL, NEW
from ..core.wire import ClientQuery, ClientSubmit
from ..node import client as _wire_client
from .cluster import load_config
from .errors import Unreachable, from_reply
from .risk import halt_request, limit_requests, merge_risk
from .types import (
    LEVELS,
    AccountRisk,
    Ack,
    AckLevel,
    BookLevel,
    Fill,
    NodeStatus,
    Order,
    OrderBook,
    OrderType,
    RiskLimit,
    RiskReport,
    Side,
    TimeInForce,
)

Number = Decimal | str | int
#: reply code of an address check (``ClientGate``): resend with ``"<req>#<cookie>"``
E_ADDRESS = 12
_SIDE = {Side.BUY: BUY, Side.SELL: SELL}
_TIF = {TimeInForce.GTC: GTC, TimeInForce.IOC: IOC, TimeInForce.FOK: FOK}
_WAIT = {AckLevel.ACCEPTED: 0, AckLevel.REPLICATED: 1, AckLevel.FINAL: 2}
#: a caller-chosen request id: short enough for the node's address-check cookie to fit after it
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,32}")


def _enum(cls: Any, value: object, what: str) -> Any:
    if isinstance(value, cls):
        return value
    if isinstance(value, str):
        try:
            return cls(value.lower())
        except ValueError:
            pass
    choices = ", ".join(repr(m.value) for m in cls)
    raise InvalidOrder(f"{what} must be one of {choices} (or {cls.__name__}), not {value!r}")


def _number(value: object, what: str) -> Decimal | str | int:
    if isinstance(value, bool) or isinstance(value, float):
        raise InvalidOrder(f"{what} must be a Decimal, str or int, not {type(value).__name__} {value!r} "
                           f"(a float is not exact on a decimal grid: pass Decimal('...') or a string)")
    if not isinstance(value, Decimal | str | int):
        raise InvalidOrder(f"{what} must be a Decimal, str or int, not {type(value).__name__}")
    return value


def _fill_from_feed(inst: Instrument, row: tuple[Any, ...]) -> Fill:
    """A pushed fill row (``wire.FILL_ROW``) as a ``Fill``."""
    return Fill(trade_id=str(row[F_ID]), symbol=inst.symbol, order_id=str(row[F_ORDER]),
                side=Side.BUY if row[F_SIDE] == BUY else Side.SELL, price=inst.ticks_to_price(int(row[F_PRICE])),
                amount=inst.lots_to_qty(int(row[F_QTY])), role="taker" if row[F_ROLE] else "maker",
                final=bool(row[F_FINAL]), revisions=int(row[F_REVISIONS]), undone=bool(row[F_UNDONE]))


def _fill_from_row(inst: Instrument, row: dict[str, Any]) -> Fill:
    return Fill(trade_id=str(row["trade_id"]), symbol=inst.symbol, order_id=str(row["order_id"]),
                side=Side(row["side"]), price=inst.ticks_to_price(int(row["price"])),
                amount=inst.lots_to_qty(int(row["qty"])), role=str(row["role"]), final=bool(row["final"]),
                revisions=int(row["revisions"]), undone=bool(row["undone"]))


class Client:
    """One trading account's connection to a cluster; use as ``async with Client(cfg) as c``.

    ``cfg``: a client file (``clients/<account>.toml``), a ``cluster.toml`` or a ``ClusterConfig``.
    ``account``: act for this account of the config (a ``cluster.toml`` holds every account's
    credential; default: the file's own account, or ``operator``). ``node``: the default node to
    send to (default: the config's first). ``timeout``: seconds a request may take by default.
    ``balance``: send each request that names no ``node`` to the node with the lowest measured
    latency and load instead of the default node, away from a node that stops answering (and back
    once it answers again); see "Rules that hold" and ``spread()``.
    """

    def __init__(self, cfg: ClusterConfig | str | PathLike[str], *, account: str | None = None,
                 node: str | None = None, timeout: float = 5.0, balance: bool = False) -> None:
        self.cfg = load_config(cfg)
        self.venue: Venue = Venue.of(self.cfg.instruments)
        self.node = node or self.cfg.nodes[0].id
        self.cfg.node(self.node)  # an unknown node id is an error now
        if timeout <= 0:
            raise UsageError("timeout must be positive")
        self.timeout = timeout
        self._wire = _wire_client.Client(self.cfg, account=account)
        self._wire.balancing = bool(balance)
        self.account: str = self._wire.account
        #: the node that answered the last request
        self.last_node: str = self.node
        self._answered: dict[str, str] = {}  # request id -> the node that answered it (``_submit`` takes it)
        self._symbols: dict[str, str] = {}  # order id -> symbol, for the orders placed here
        self._open = False

    async def __aenter__(self) -> Client:
        await self._wire.__aenter__()
        self._open = True
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self._open = False
        await self._wire.__aexit__(None, None, None)  # the block's exception passes through as itself

    # ---- plumbing ----------------------------------------------------------------------------------
    def instrument(self, symbol: str) -> Instrument:
        """The instrument ``symbol`` (``UnknownInstrument`` if the venue does not trade it)."""
        if not isinstance(symbol, str):
            raise InvalidOrder(f"symbol must be a str, not {type(symbol).__name__}")
        return self.venue.get(symbol)

    async def _request(self, node: str | None, msg: Any, timeout: float | None) -> Any:
        if not self._open:
            raise UsageError("use the client inside 'async with Client(...) as client:'")
        if node is not None:
            self.cfg.node(node)
        # where it goes: ``node`` if given; else a submit's shard leader a hint named (falling back
        # to the default node), else the balancer's pick (``balance=True``), else the default node
        # (``node/client.py``, "Routing": the one routing piece, shared with ``gossipbook load``)
        target = node or self.node
        try:
            got = await self._wire.send(msg, self.node, timeout or self.timeout, node=node)
            target = got.node
            rep = got.reply
            if rep.code == E_ADDRESS and len(rep.message) == 16:
                # an address check (a large reply to an unproven source): send the same request
                # again with the node's cookie; the node strips it, so it is the same request
                rep = await self._wire.request(target, msg._replace(req=f"{msg.req}#{rep.message}"), msg.req,
                                               timeout or self.timeout)
            self.last_node = target
            if len(self._answered) < 10_000:
                self._answered[msg.req] = target
            return rep
        except _wire_client.Unreachable as e:
            err = Unreachable(str(e))
            err.node = target  # type: ignore[attr-defined]
            raise err from None

    def spread(self) -> dict[str, dict[str, object]]:
        """Per node, what this client's requests saw: ``sent`` / ``answered`` / ``missed`` tries,
        ``p50_ms`` (median reply latency of its newest 512 answers), ``ewma_ms``, ``in_flight``,
        ``avoidances`` and whether the balancer ``avoided`` it now (``core/balance.py``). Measured
        whether or not ``balance`` is on."""
        return self._wire.spread()

    async def _submit(self, node: str | None, msg: ClientSubmit, timeout: float | None) -> tuple[Any, str]:
        """The reply to ``msg`` and the node that gave it (an error reply raised as the library's own)."""
        try:
            rep = await self._request(node, msg, (timeout or self.timeout) + 1.0)
        finally:
            at = self._answered.pop(msg.req, node or self.node)
        if rep.code != 0:
            raise from_reply(rep.code, rep.message, node=at, order_id=rep.order_id,
                             level=LEVELS[rep.level] if 0 <= rep.level < 3 else None)
        return rep, at

    def _reply_fills(self, inst: Instrument, order_id: str, side: Side, rows: Iterable[list[Any]],
                     final: bool) -> tuple[Fill, ...]:
        out = []
        for trade_id, price, qty, maker, taker in rows:
            mine_taker = taker == order_id
            if not mine_taker and maker != order_id:
                continue
            out.append(Fill(trade_id=str(trade_id), symbol=inst.symbol, order_id=order_id, side=side,
                            price=inst.ticks_to_price(int(price)), amount=inst.lots_to_qty(int(qty)),
                            role="taker" if mine_taker else "maker", final=final))
        return tuple(out)

    async def _symbol_of(self, order_id: str, node: str | None) -> str:
        sym = self._symbols.get(order_id)
        if sym is not None:
            return sym
        for o in await self.fetch_open_orders(node=node):
            if o.id == order_id:
                return o.symbol
        raise UnknownOrder(f"order {order_id} is not open at node {node or self.node} (filled, cancelled, "
                           f"not yet replicated there, or never placed)")

    # ---- orders ------------------------------------------------------------------------------------
    async def create_order(self, symbol: str, side: Side | str, amount: Number, price: Number | None = None, *,
                           type: OrderType | str = OrderType.LIMIT,
                           time_in_force: TimeInForce | str = TimeInForce.GTC,
                           wait: AckLevel | str = AckLevel.ACCEPTED, node: str | None = None,
                           timeout: float | None = None, request_id: str | None = None) -> Order:
        """Place an order of this account: ``amount`` of ``symbol`` at ``price`` (a limit order) or
        at any price (``type="market"``, no ``price``). ``wait``: the level the node answers at
        (``AckLevel``). Returns the ``Order`` as the ack saw it, with the fills made at once.
        ``request_id`` (1-32 of ``A-Za-z0-9._-``; default: a fresh random one): the same request
        sent again with the same id, even by another process after a crash, gets the order it
        placed back instead of a second order, while the node still recognises the id (sent to
        the same node; docs/consistency.md, "Request ids").
        Raises ``InvalidOrder`` (off the grid or band, a float, a venue rule), ``UnknownInstrument``,
        ``NotReady``, ``NoQuorum``, ``AckTimeout`` (the order stands; ``.order_id``), ..."""
        if request_id is not None and (not isinstance(request_id, str) or not _REQUEST_ID.fullmatch(request_id)):
            raise UsageError(f"request_id must be 1-32 letters, digits, '.', '_' or '-', not {request_id!r}")
        inst = self.instrument(symbol)
        side_e: Side = _enum(Side, side, "side")
        type_e: OrderType = _enum(OrderType, type, "type")
        tif_e: TimeInForce = _enum(TimeInForce, time_in_force, "time_in_force")
        wait_e: AckLevel = _enum(AckLevel, wait, "wait")
        lots = inst.qty_to_lots(_number(amount, "amount"))
        if type_e is OrderType.MARKET:
            if price is not None:
                raise InvalidOrder("a market order takes no price")
            ticks, tif = 0, MARKET
        else:
            if price is None:
                raise InvalidOrder("a limit order needs a price (or type='market')")
            ticks, tif = inst.price_to_ticks(_number(price, "price")), _TIF[tif_e]
        t = timeout or self.timeout
        msg = ClientSubmit(request_id or _wire_client.new_req(), NEW, inst.symbol, "", _SIDE[side_e], ticks, lots, tif,
                           _WAIT[wait_e], int(t * 1000))
        rep, at = await self._submit(node, msg, t)
        level = LEVELS[rep.level]
        fills = self._reply_fills(inst, rep.order_id, side_e, rep.trades, level is AckLevel.FINAL)
        self._symbols[rep.order_id] = inst.symbol
        if len(self._symbols) > 100_000:
            self._symbols.pop(next(iter(self._symbols)))
        amt = inst.lots_to_qty(lots)
        filled = sum((f.amount for f in fills), Decimal(0))
        remaining = amt - filled
        if remaining <= 0:
            status = "closed"
        elif type_e is OrderType.MARKET or tif_e is not TimeInForce.GTC:
            status = "canceled"
        else:
            status = "open"
        return Order(id=rep.order_id, symbol=inst.symbol, side=side_e,
                     price=None if type_e is OrderType.MARKET else inst.ticks_to_price(ticks), amount=amt,
                     remaining=remaining if status == "open" else Decimal(0), type=type_e,
                     time_in_force=TimeInForce.IOC if type_e is OrderType.MARKET else tif_e, status=status,
                     filled=filled, fills=fills, node=at, level=level)

    async def cancel_order(self, order_id: str, *, wait: AckLevel | str = AckLevel.ACCEPTED,
                           node: str | None = None, timeout: float | None = None) -> Ack:
        """Cancel one of this account's resting orders. ``UnknownOrder`` if the node does not hold it
        open, ``NotOwner`` if it is another account's."""
        if not isinstance(order_id, str):
            raise InvalidOrder(f"order_id must be a str, not {type(order_id).__name__}")
        wait_e: AckLevel = _enum(AckLevel, wait, "wait")
        t = timeout or self.timeout
        msg = ClientSubmit(_wire_client.new_req(), CANCEL, self._symbols.get(order_id, ""), order_id, 0, 0, 0, 0,
                           _WAIT[wait_e], int(t * 1000))
        rep, at = await self._submit(node, msg, t)
        return Ack(rep.order_id or order_id, at, LEVELS[rep.level], msg.req)

    async def cancel_all_orders(self, symbol: str | None = None, *, wait: AckLevel | str = AckLevel.ACCEPTED,
                                node: str | None = None, timeout: float | None = None) -> Ack:
        """Cancel every order of this account (in ``symbol`` only, if given) that every replica folds
        before this request: the kill switch."""
        sym = self.instrument(symbol).symbol if symbol is not None else ""
        wait_e: AckLevel = _enum(AckLevel, wait, "wait")
        t = timeout or self.timeout
        msg = ClientSubmit(_wire_client.new_req(), CANCEL_ALL, sym, "", 0, 0, 0, 0, _WAIT[wait_e], int(t * 1000))
        rep, at = await self._submit(node, msg, t)
        return Ack(rep.order_id, at, LEVELS[rep.level], msg.req)

    async def amend_order(self, order_id: str, amount: Number, price: Number, *, symbol: str | None = None,
                          wait: AckLevel | str = AckLevel.ACCEPTED, node: str | None = None,
                          timeout: float | None = None) -> Ack:
        """Change a resting order's remaining ``amount`` and ``price``. A smaller amount at the same
        price keeps time priority; anything else re-enters at the back (and may trade). ``symbol``
        is looked up when not given (orders placed by this client are remembered)."""
        if not isinstance(order_id, str):
            raise InvalidOrder(f"order_id must be a str, not {type(order_id).__name__}")
        a, p = _number(amount, "amount"), _number(price, "price")
        inst = self.instrument(symbol) if symbol is not None else self.instrument(await self._symbol_of(order_id, node))
        lots, ticks = inst.qty_to_lots(a), inst.price_to_ticks(p)
        wait_e: AckLevel = _enum(AckLevel, wait, "wait")
        t = timeout or self.timeout
        msg = ClientSubmit(_wire_client.new_req(), AMEND, inst.symbol, order_id, 0, ticks, lots, 0, _WAIT[wait_e],
                           int(t * 1000))
        rep, at = await self._submit(node, msg, t)
        level = LEVELS[rep.level]
        side = Side.BUY
        fills = self._reply_fills(inst, order_id, side, rep.trades, level is AckLevel.FINAL)
        if fills:  # the reply does not say the side: ask (rare: an amend that trades)
            for f in await self.fetch_my_trades(node=node):
                if f.order_id == order_id:
                    fills = tuple(Fill(x.trade_id, x.symbol, x.order_id, f.side, x.price, x.amount, x.role,
                                       x.final) for x in fills)
                    break
        return Ack(order_id, node or self.node, level, msg.req, fills)

    # ---- risk limits and the kill switch (the operator's) -------------------------------------------
    def _operator(self, what: str) -> None:
        if self.account != OPERATOR:
            raise NotOwner(f"{what}: only the {OPERATOR} account sets risk limits and uses the kill switch; "
                           f"this client acts for {self.account} (use cluster.toml, account={OPERATOR!r})")

    async def set_risk_limit(self, account: str, *, symbol: str | None = None, max_open_buy: Number | None = None,
                             max_open_sell: Number | None = None, max_position: Number | None = None,
                             max_notional: Number | None = None, clear: Iterable[str] = (),
                             wait: AckLevel | str = AckLevel.ACCEPTED, node: str | None = None,
                             timeout: float | None = None) -> tuple[Ack, ...]:
        """Set ``account``'s pre-trade limits (operator only: ``NotOwner`` otherwise, nothing sent),
        in ``symbol`` or, without one, across every instrument (which then must share lot and tick
        sizes). Quantities in the instrument's units, notional in price x quantity; ``None`` leaves
        a limit as it is, ``clear`` names limits to remove (``"open-buy"``, ``"open-sell"``,
        ``"position"``, ``"notional"``). Each limit is one replicated op stamped at one node, sent
        in turn; the first refusal raises and the ones before it stand. Returns one ``Ack`` each.
        Why per node and not all at once: each op moves that node's escrowed rights
        (docs/consistency.md, "Risk limits")."""
        self._operator("set_risk_limit")
        if symbol is not None:
            self.instrument(symbol)
        if not isinstance(account, str) or not account:
            raise UsageError("account must be a non-empty str")
        if isinstance(clear, str):
            clear = (clear,)
        wait_e: AckLevel = _enum(AckLevel, wait, "wait")
        t = timeout or self.timeout
        reqs = limit_requests(self.venue, account, symbol,
                              {"max_open_buy": max_open_buy, "max_open_sell": max_open_sell,
                               "max_position": max_position, "max_notional": max_notional},
                              clear, new_req=_wire_client.new_req, wait=_WAIT[wait_e], timeout_ms=int(t * 1000))
        if not reqs:
            raise UsageError("set_risk_limit: nothing to set (give max_open_buy, max_open_sell, max_position, "
                             "max_notional or clear)")
        acks = []
        for msg, _what in reqs:
            rep, at = await self._submit(node, msg, t)
            acks.append(Ack(rep.order_id or account, at, LEVELS[rep.level], msg.req))
        return tuple(acks)

    async def disable_account(self, account: str, *, wait: AckLevel | str = AckLevel.ACCEPTED,
                              node: str | None = None, timeout: float | None = None) -> Ack:
        """The kill switch (operator only): every resting order of ``account`` is cancelled on each
        replica as the op folds there, and its new orders are refused (``RiskRefused``) until
        ``enable_account``. One replicated op, so every replica agrees which orders it took."""
        return await self._halt("disable_account", account, True, wait, node, timeout)

    async def enable_account(self, account: str, *, wait: AckLevel | str = AckLevel.ACCEPTED,
                             node: str | None = None, timeout: float | None = None) -> Ack:
        """Let an account the kill switch disabled trade again (operator only)."""
        return await self._halt("enable_account", account, False, wait, node, timeout)

    async def _halt(self, what: str, account: str, disable: bool, wait: AckLevel | str, node: str | None,
                    timeout: float | None) -> Ack:
        self._operator(what)
        if not isinstance(account, str) or not account:
            raise UsageError("account must be a non-empty str")
        wait_e: AckLevel = _enum(AckLevel, wait, "wait")
        t = timeout or self.timeout
        msg = halt_request(account, disable, req=_wire_client.new_req(), wait=_WAIT[wait_e], timeout_ms=int(t * 1000))
        rep, at = await self._submit(node, msg, t)
        return Ack(rep.order_id or account, at, LEVELS[rep.level], msg.req)

    async def fetch_risk(self, account: str | None = None, *, node: str | None = None,
                         timeout: float | None = None) -> RiskReport:
        """Risk limits as the nodes hold them: every node is asked at once (``node``: only that
        one), because each node's use and headroom are its own. The operator sees every account
        (or ``account``), any other account only its own. A node that does not answer within
        ``timeout`` is listed in ``unreachable``; ``Unreachable`` if none answers."""
        if not self._open:
            raise UsageError("use the client inside 'async with Client(...) as client:'")
        if account is not None and (not isinstance(account, str) or not account):
            raise UsageError("account must be a non-empty str (or None)")
        nodes = [node] if node is not None else list(self.cfg.ids)
        for n in nodes:
            self.cfg.node(n)
        got: dict[str, Any] = {}

        async def one(nid: str) -> None:
            try:
                rep = await self._request(nid, ClientQuery(_wire_client.new_req(), "risk", (account or "")[:32], 0),
                                          timeout)
            except Unreachable:
                got[nid] = None
                return
            got[nid] = rep.payload if rep.code == 0 and isinstance(rep.payload, dict) else {"error": rep.message}

        async with trio.open_nursery() as nursery:
            for nid in nodes:
                nursery.start_soon(one, nid)
        merged = merge_risk(self.venue, nodes, got, account or "")  # a malformed answer becomes an error
        answered = tuple(n for n in nodes if got.get(n) and "error" not in got[n])
        if not answered:
            bad = next((got[n] for n in nodes if got.get(n)), None)
            if bad is not None:
                raise from_reply(8, bad["error"], node=nodes[0])
            err = Unreachable(f"no node answered the risk query within {timeout or self.timeout:g} s")
            err.node = nodes[0]  # type: ignore[attr-defined]
            raise err
        accounts = {}
        for a, e in merged.items():
            limits = []
            for lim in e["limits"]:
                first = next(iter(lim["limit"].values()))
                rights = next(iter(lim["rights"].values()), {})
                limits.append(RiskLimit(account=a, symbol=lim["symbol"] or None, kind=lim["kind"], limit=first,
                                        limits=dict(lim["limit"]), rights=dict(rights), used=dict(lim["used"]),
                                        headroom=dict(lim["headroom"])))
            accounts[a] = AccountRisk(a, any(e["disabled_at"].values()), dict(e["disabled_at"]), tuple(limits))
        return RiskReport(accounts, answered, tuple(n for n in nodes if got.get(n) is None),
                          str(got[answered[0]].get("mode", "eventual")))

    # ---- reads -------------------------------------------------------------------------------------
    async def fetch_order_book(self, symbol: str, limit: int = 10, *, node: str | None = None,
                               timeout: float | None = None) -> OrderBook:
        """The top ``limit`` levels per side of ``symbol``'s book as one node holds it."""
        inst = self.instrument(symbol)
        if type(limit) is not int or not 1 <= limit <= 1000:
            raise UsageError("limit must be an int between 1 and 1000")
        rep = await self._request(node, ClientQuery(_wire_client.new_req(), "book", inst.symbol, limit), timeout)
        if rep.code != 0:
            raise from_reply(rep.code, rep.message, node=node or self.node)
        p = rep.payload

        def levels(rows: list[list[int]]) -> tuple[BookLevel, ...]:
            return tuple(BookLevel(inst.ticks_to_price(r[0]), inst.lots_to_qty(r[1]), int(r[2])) for r in rows)

        return OrderBook(inst.symbol, levels(p["bids"]), levels(p["asks"]), str(p.get("node", node or self.node)),
                         str(p.get("digest", "")))

    async def _query(self, what: str, node: str | None, timeout: float | None) -> Any:
        rep = await self._request(node, ClientQuery(_wire_client.new_req(), what, "", 0), timeout)
        if rep.code != 0:
            raise from_reply(rep.code, rep.message, node=node or self.node)
        return rep.payload

    async def fetch_open_orders(self, symbol: str | None = None, *, node: str | None = None,
                                timeout: float | None = None) -> list[Order]:
        """This account's resting orders as one node holds them (at most 500). ``amount`` and
        ``remaining`` are both the remaining quantity."""
        if symbol is not None:
            self.instrument(symbol)
        p = await self._query("orders", node, timeout)
        out = []
        for oid, sym, side, price, qty in p["orders"]:
            inst = self.venue.instruments.get(sym)
            if inst is None or (symbol is not None and sym != symbol):
                continue
            q = inst.lots_to_qty(qty)
            out.append(Order(id=oid, symbol=sym, side=Side.BUY if side == BUY else Side.SELL,
                             price=inst.ticks_to_price(price), amount=q, remaining=q, node=str(p["node"])))
        return out

    async def fetch_my_trades(self, symbol: str | None = None, *, node: str | None = None,
                              timeout: float | None = None) -> list[Fill]:
        """This account's fills as one node knows them (its newest 500, oldest first), each with its
        state: provisional, final, revised (``revisions``) or undone."""
        if symbol is not None:
            self.instrument(symbol)
        p = await self._query("trades", node, timeout)
        out = []
        for row in p["trades"]:
            inst = self.venue.instruments.get(row["symbol"])
            if inst is None or (symbol is not None and row["symbol"] != symbol):
                continue
            out.append(_fill_from_row(inst, row))
        return out

    async def status(self, node: str | None = None, *, timeout: float | None = None) -> NodeStatus:
        """A node's status (members, digest, op and trade counts; ``raw`` holds everything)."""
        return NodeStatus.from_status(await self._query("status", node, timeout))

    def watch_my_trades(self, symbol: str | None = None, *, interval: float = 0.2, node: str | None = None,
                        history: bool = False, lease: float = 10.0) -> TradeWatch:
        """A pushed feed of this account's fills: ``async for fill in client.watch_my_trades()``.
        Each fill is yielded when the node's fold makes it, again when a replay revises or undoes
        it, and once more when it becomes final (``Fill.final``). ``history``: first yield the
        fills the node already holds (its newest 200). ``lease``: seconds the node keeps the
        subscription without a renewal (renewed every third of it while you iterate; a program
        that stops iterating costs the node nothing once it runs out). ``interval``: strong mode
        only, where it polls. ``async with`` (or ``await feed.aclose()``) ends it at once."""
        if interval <= 0:
            raise UsageError("interval must be positive")
        if symbol is not None:
            self.instrument(symbol)
        return TradeWatch(self, symbol, interval, node, history, lease)

    def watch_order_book(self, symbol: str, *, depth: int = 10, node: str | None = None, lease: float = 10.0,
                         interval: float = 0.2) -> BookWatch:
        """A pushed feed of ``symbol``'s top ``depth`` levels per side (1 to 50) at one node:
        ``async for book in client.watch_order_book("GBX")`` yields an ``OrderBook`` first as the
        node holds it, then after every change the node pushes (changes are conflated to one push
        per 20 ms). ``lease`` and ``interval`` as for ``watch_my_trades``."""
        inst = self.instrument(symbol)
        if type(depth) is not int or not 1 <= depth <= 50:
            raise UsageError("depth must be an int between 1 and 50")
        if interval <= 0:
            raise UsageError("interval must be positive")
        return BookWatch(self, inst, depth, node, lease, interval)


class _Watch:
    """What both feeds share: a subscription opened on the first ``__anext__``, renewed and
    resynced by ``Subscription.next``, ended by ``aclose`` / ``async with``; errors as the library's
    own (``Unreachable``, ``RateLimited`` for a node at its subscription cap, ...)."""

    feed = ""

    def __init__(self, client: Client, node: str | None, lease: float, interval: float) -> None:
        if not 0.5 <= lease <= 600:
            raise UsageError("lease must be 0.5 to 600 seconds")
        self._c = client
        self._node = node or client.node
        client.cfg.node(self._node)
        self._lease = lease
        self._interval = interval
        self._polling = client.cfg.mode == "strong"  # strong-mode nodes push no feeds
        self._sub: _wire_client.Subscription | None = None

    def _symbol(self) -> str:
        return ""

    def _depth(self) -> int:
        return 0

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """End the subscription at the node now (else its lease ends it)."""
        if self._sub is not None:
            sub, self._sub = self._sub, None
            await sub.aclose()

    @property
    def gaps(self) -> int:
        """Pushes found missing so far (each answered with a fresh snapshot)."""
        return self._sub.rx.gaps if self._sub is not None else 0

    async def _update(self) -> FeedUpdate:
        if not self._c._open:
            raise UsageError("use the client inside 'async with Client(...) as client:'")
        try:
            if self._sub is None:
                sub = self._c._wire.subscribe(self._node, self.feed, self._symbol(), self._depth(),
                                              lease_s=self._lease)
                await sub.open(timeout=self._c.timeout)
                self._sub = sub
            return await self._sub.next()
        except _wire_client.Unreachable as e:
            err = Unreachable(str(e))
            err.node = self._node  # type: ignore[attr-defined]
            raise err from None
        except _wire_client.FeedRefused as e:
            raise from_reply(e.code, str(e), node=self._node) from None


class TradeWatch(_Watch):
    """The iterator ``Client.watch_my_trades`` returns (see there): ``Fill``s in the order the node
    pushed them. ``gaps`` counts pushes that went missing (each followed by a snapshot, from which
    the fills that changed meanwhile are yielded). In strong mode it polls; ``Unreachable`` after
    ``give_up_s`` seconds without an answer."""

    feed = "trades"
    give_up_s = 10.0

    def __init__(self, client: Client, symbol: str | None, interval: float, node: str | None,
                 history: bool, lease: float = 10.0) -> None:
        super().__init__(client, node, lease, interval)
        self._only = symbol
        self._history = history
        self._seen: dict[str, Fill] | None = None  # None until the first snapshot (or poll)
        self._queue: list[Fill] = []
        self._last_ok = trio.current_time()

    def _symbol(self) -> str:
        return self._only or ""

    def __aiter__(self) -> TradeWatch:
        return self

    async def __anext__(self) -> Fill:
        while not self._queue:
            if self._polling:
                await self._poll()
                continue
            up = await self._update()
            fills = []
            for row in up.fills:
                inst = self._c.venue.instruments.get(row[F_SYMBOL])
                if inst is not None and (self._only is None or inst.symbol == self._only):
                    fills.append(_fill_from_feed(inst, row))
            self._absorb(fills, baseline=up.snapshot)
        return self._queue.pop(0)

    def _absorb(self, fills: list[Fill], baseline: bool) -> None:
        """Queue the fills that are new or changed; a first snapshot (or poll) is the baseline
        unless ``history`` was asked for."""
        if self._seen is None:
            self._seen = {}
            if baseline and not self._history:
                self._seen = {f.trade_id: f for f in fills}
                return
        for f in fills:
            if self._seen.get(f.trade_id) != f:
                self._seen[f.trade_id] = f
                self._queue.append(f)
        if len(self._seen) > 4 * 1000:  # a node keeps ~1000 per account: forget the oldest
            for k in list(self._seen)[:len(self._seen) - 2000]:
                del self._seen[k]

    async def _poll(self) -> None:
        """Strong mode: ask for the account's fills, then wait ``interval``."""
        first = self._seen is None
        if not first:
            await trio.sleep(self._interval)
        try:
            fills = await self._c.fetch_my_trades(self._only, node=self._node, timeout=max(1.0, self._interval))
        except Unreachable:
            if trio.current_time() - self._last_ok > self.give_up_s:
                raise
            return
        self._last_ok = trio.current_time()
        self._absorb(fills, baseline=True)


class BookWatch(_Watch):
    """The iterator ``Client.watch_order_book`` returns (see there): ``OrderBook``s, the node's top
    levels after each update it pushed (``digest`` is empty: a feed carries levels only)."""

    feed = "book"

    def __init__(self, client: Client, inst: Instrument, depth: int, node: str | None, lease: float,
                 interval: float) -> None:
        super().__init__(client, node, lease, interval)
        self._inst = inst
        self._depth_n = depth
        self._levels: dict[tuple[int, int], tuple[int, int]] = {}  # (side, price ticks) -> (lots, orders)
        self._last: OrderBook | None = None

    def _symbol(self) -> str:
        return self._inst.symbol

    def _depth(self) -> int:
        return self._depth_n

    def __aiter__(self) -> BookWatch:
        return self

    async def __anext__(self) -> OrderBook:
        if self._polling:
            while True:
                if self._last is not None:
                    await trio.sleep(self._interval)
                book = await self._c.fetch_order_book(self._inst.symbol, self._depth_n, node=self._node)
                book = OrderBook(book.symbol, book.bids, book.asks, book.node)
                if book != self._last:
                    self._last = book
                    return book
        up = await self._update()
        if up.snapshot:
            self._levels = {}
        for side, price, qty, orders in up.levels:
            if qty == 0 and orders == 0:
                self._levels.pop((side, price), None)
            else:
                self._levels[(side, price)] = (qty, orders)
        inst = self._inst

        def side(s: int) -> tuple[BookLevel, ...]:
            rows = sorted(((p, v) for (sd, p), v in self._levels.items() if sd == s), reverse=s == BUY)
            return tuple(BookLevel(inst.ticks_to_price(p), inst.lots_to_qty(q), n) for p, (q, n) in rows)

        self._last = OrderBook(inst.symbol, side(BUY), side(SELL), self._node)
        return self._last
