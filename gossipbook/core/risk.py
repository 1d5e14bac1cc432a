"""Pre-trade risk limits that hold across partitions: escrowed headroom as a CRDT.

Theory of operation
-------------------
A **limit** caps one exposure of one account, in one instrument or in all of them (``scope`` ""):
open buy quantity, open sell quantity, net position (two counters: long = position + open buys,
short = open sells - position) or notional (working orders plus position, valued at each order's
limit price). Limits are replicated ops (``LIMIT``) that count only when the operator account
stamped them; a ``HALT`` op (the kill switch) disables an account: every resting order of it is
cancelled where the op folds, and every ``NEW`` of it that folds after it is a no-op, until an
enabling ``HALT``. Both are decided in the fold, so every replica agrees.

In eventual mode both sides of a partition keep taking orders, so a limit checked against one
node's view could be exceeded once per side. The headroom of each limit is therefore **escrowed**
(O'Neil's escrow method, the demarcation protocol, Balegas et al. SRDS 2015, AntidoteDB's bounded
counter): it is split into *rights* held by nodes, and a node takes an order only when its own
rights cover the order's worst case.

- **The rights matrix** (``RiskState``) is a deterministic function of the op-set: a ``LIMIT`` op
  adds ``new - old`` to the stamping node's balance (a raise gives headroom, a cut is that node's
  debt); a ``TRANSFER`` op, stamped by the donor, moves rights to another node and is refused in the
  fold when it is larger than the donor's balance. Every replica computes the same balances.
- **Consumption** (``Escrow``) is node-local: the worst case of the node's own orders of the
  account (full quantity for open-quantity limits, a full fill for position and notional) until
  their outcome can no longer change, plus the final fills of its own orders. A node's own rights
  (balance - consumption) depend only on its own ops, transfers to it and the outcomes of its own
  orders, so it never spends rights it does not have, whatever it has not heard yet. Rights come
  back only for outcomes that no replay can revise: an order of its own that its own cancel
  removed (the cancel folds after the order on every replica, and any replica holding the node's
  later ops holds the cancel), IOC / FOK / market orders (they never rest: no open-quantity
  headroom at all), and an order whose every fill and removal is at or below the finality
  watermark ("settled").
- **Transfers.** A node short of rights stamps an ``ASK`` op to the richest peer it knows of;
  the donor answers with a ``TRANSFER`` of what it holds above its own target. Targets follow
  the flow: 5/4 of a node's recent peak use of the limit (a refusal raises it to what the refused
  order needed), so rights move to where orders come and a node without flow keeps nothing idle
  (a demand-driven variant of PotionDB's rebalancing). Rate-bounded and counted.

The invariant (DESIGN.md invariant 6): for every limit, the sum over nodes of what they consume is
at most the limit, partitioned or not; hence the exposure of any converged replica is too.

Op encoding (no new fields; ``Op`` is shared with the book):

=========  ==========  ===============  ========  =================================  ===========
kind       ``account``  ``order_id``     ``symbol``  ``tif`` / ``side``                ``qty``
=========  ==========  ===============  ========  =================================  ===========
LIMIT (5)  operator    the account      scope     dim / 0 set, 1 clear                the limit
TRANSFER   the account  recipient node   scope     dim / long 0, short 1 (position)    amount
HALT (7)   operator    the account      ""        0 / 0 disable, 1 enable             0
ASK (8)    the account  donor node       scope     dim / long 0, short 1 (position)    wanted
=========  ==========  ===============  ========  =================================  ===========

Everything here is pure: no clock, no I/O; the replica feeds it ops, trades and the watermark.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .errors import UsageError, WireError

OPERATOR = "operator"
LIMIT, TRANSFER, HALT, ASK = 5, 6, 7, 8
RISK_KINDS = frozenset({LIMIT, TRANSFER, HALT, ASK})
#: the reply code of a risk refusal (``wire.REPLY_CODES``; the CLI exits with 14)
E_RISK = 14
#: the largest limit, transfer or request (the wire's own integer bound)
MAX_LIMIT = 1 << 53
#: balances and summed fills are held within +-CAP (forged operator ops could otherwise grow a
#: balance, and forged orders a notional, past what a snapshot can encode: msgpack stops at 64 bits)
CAP = (1 << 62) - 1


def _clamp(v: int) -> int:
    return CAP if v > CAP else -CAP if v < -CAP else v
# what a LIMIT op's ``tif`` names
DIM_OPEN_BUY, DIM_OPEN_SELL, DIM_POSITION, DIM_NOTIONAL = 0, 1, 2, 3
DIM_NAMES = ("open-buy", "open-sell", "position", "notional")
# the escrowed counters (a position limit is two of them)
OPEN_BUY, OPEN_SELL, LONG, SHORT, NOTIONAL = range(5)
COUNTER_NAMES = ("open-buy", "open-sell", "long-position", "short-position", "notional")
_COUNTERS_OF_DIM = ((OPEN_BUY,), (OPEN_SELL,), (LONG, SHORT), (NOTIONAL,))
_BUY, _SELL = 0, 1  # book.BUY / SELL (imported lazily would make a cycle with nothing gained)
_GTC, _MARKET = 0, 3

Key = tuple[str, str, int]  # (account, scope: a symbol or "" for every instrument, counter)


class RiskRefused(UsageError):
    """An order (or a risk command) refused by a risk limit: one line that names the limit."""


def counters_of(dim: int) -> tuple[int, ...]:
    """The escrowed counters a LIMIT op of ``dim`` sets."""
    return _COUNTERS_OF_DIM[dim]


def counter_of(tif: int, side: int) -> int:
    """The counter a TRANSFER or ASK op names (``tif`` the dim, ``side`` long/short for a position)."""
    return LONG + side if tif == DIM_POSITION else _COUNTERS_OF_DIM[tif][0]


def dim_side(counter: int) -> tuple[int, int]:
    """``(tif, side)`` that name ``counter`` in a TRANSFER or ASK op."""
    if counter in (LONG, SHORT):
        return DIM_POSITION, counter - LONG
    return {OPEN_BUY: DIM_OPEN_BUY, OPEN_SELL: DIM_OPEN_SELL, NOTIONAL: DIM_NOTIONAL}[counter], 0


def _name_ok(s: str) -> bool:
    return 1 <= len(s) <= 64 and s.isascii() and all(c.isalnum() or c in "-_." for c in s)


def valid_op(op: Any, symbols: Iterable[str] | Mapping[str, Any]) -> bool:
    """Whether a risk op (kind 5..8) is well formed; a malformed one is dropped like any invalid op.
    Bounds: every quantity at most ``MAX_LIMIT``; names as account and node ids are made."""
    k = op.kind
    if op.price != 0 or op.qty > MAX_LIMIT or not _name_ok(op.order_id):
        return False
    if op.symbol and op.symbol not in symbols:
        return False
    if k in (LIMIT, HALT):
        if op.account != OPERATOR and not _name_ok(op.account):
            return False
        if k == HALT:
            return not op.symbol and op.tif == 0 and op.qty == 0
        return not (op.tif == DIM_POSITION and not op.symbol)
    # TRANSFER, ASK: node-made, for an account
    if not _name_ok(op.account) or op.qty < 1 or op.req:
        return False
    if op.tif == DIM_POSITION:
        return bool(op.symbol)
    return op.side == 0


@dataclass(frozen=True, slots=True)
class RiskConfig:
    """``[risk]`` in cluster.toml: how escrowed headroom is split and moved (eventual mode)."""

    #: "even": the node that stamps a limit gives every member an equal share at once;
    #: "none": it keeps the headroom and the rebalance spreads it where orders come
    split: str = "even"
    rebalance: bool = True  # ask for rights before running out, where the flow is (``RiskLedger._targets``)
    rebalance_ns: int = 250_000_000  # how often the rebalance looks
    demand_halflife_ns: int = 2_000_000_000  # how fast a node forgets its peak use of a limit
    ask_interval_ns: int = 50_000_000  # at most one ask per limit this often (doubling while unanswered, to 4x)
    #: a node keeps (and aims to hold above its use) what its demand rate asks for in this long:
    #: about the time an ask takes to be answered (a round trip and a tick)
    reserve_ns: int = 50_000_000
    #: an ask older than this is not answered (a restart re-reads old ones); a refusal keeps its limit
    #: in the rebalance for as long, so a node cut off from the donor it asked asks again after a heal
    ask_ttl_ns: int = 10_000_000_000
    max_ops_per_s: float = 50.0  # transfers and asks this node stamps, per second (burst: one second's)
    max_asks_queued: int = 256  # asks addressed to this node waiting for an answer (more: dropped, counted)

    def __post_init__(self) -> None:
        if self.split not in ("even", "none"):
            raise ValueError(f"risk.split must be \"even\" or \"none\", not {self.split!r}")
        if min(self.rebalance_ns, self.ask_interval_ns, self.ask_ttl_ns, self.max_asks_queued,
               self.demand_halflife_ns, self.reserve_ns) < 1 \
                or self.max_ops_per_s <= 0:
            raise ValueError("risk timers, max_ops_per_s and max_asks_queued must be positive")


# ==== the rights matrix: a function of the op-set ==================================================
class RiskState:
    """Limits, balances and disabled accounts after a sequence of risk ops, applied in fold order.

    ``apply`` is the one place a risk op takes effect (the fold decides which ops are effective:
    a retried request is not). It refuses a LIMIT or HALT not stamped for the operator and a
    TRANSFER larger than the donor's balance, deterministically: every replica agrees.
    """

    __slots__ = ("limits", "balance", "halted", "ever", "refused")

    def __init__(self) -> None:
        self.limits: dict[Key, int] = {}
        self.balance: dict[Key, dict[str, int]] = {}
        self.halted: set[str] = set()
        self.ever: set[str] = set()  # accounts that had a limit at some point: their fills are kept
        self.refused = {"not_operator": 0, "transfers": 0}

    def copy(self) -> RiskState:
        s = RiskState()
        s.limits = dict(self.limits)
        s.balance = {k: dict(v) for k, v in self.balance.items()}
        s.halted = set(self.halted)
        s.ever = set(self.ever)
        s.refused = dict(self.refused)
        return s

    def apply(self, op: Any) -> bool:
        """Apply one effective risk op; False if refused (counted in ``refused``)."""
        k = op.kind
        if k == LIMIT:
            if op.account != OPERATOR:
                self.refused["not_operator"] += 1
                return False
            acct = op.order_id
            for c in counters_of(op.tif):
                key = (acct, op.symbol, c)
                if op.side == 1:  # clear: no limit (and no rights) for this counter any more
                    self.limits.pop(key, None)
                    self.balance.pop(key, None)
                    continue
                bal = self.balance.setdefault(key, {})
                bal[op.origin] = _clamp(bal.get(op.origin, 0) + op.qty - self.limits.get(key, 0))
                self.limits[key] = op.qty
            self.ever.add(acct)
            return True
        if k == HALT:
            if op.account != OPERATOR:
                self.refused["not_operator"] += 1
                return False
            if op.side == 0:
                self.halted.add(op.order_id)
            else:
                self.halted.discard(op.order_id)
            return True
        if k == TRANSFER:
            key = (op.account, op.symbol, counter_of(op.tif, op.side))
            bal = self.balance.get(key)
            to = op.order_id
            if bal is None or key not in self.limits or to == op.origin or op.qty > bal.get(op.origin, 0):
                self.refused["transfers"] += 1
                return False
            bal[op.origin] -= op.qty
            bal[to] = _clamp(bal.get(to, 0) + op.qty)
            return True
        return True  # ASK: no state

    def keys_for(self, account: str, symbol: str) -> list[Key]:
        """The limits an order of ``account`` in ``symbol`` counts against."""
        return [k for k in self.limits if k[0] == account and k[1] in ("", symbol)]

    def limited(self, account: str) -> bool:
        return any(k[0] == account for k in self.limits)

    def balance_of(self, key: Key, node: str) -> int:
        return self.balance.get(key, {}).get(node, 0)

    # ---- wire form (snapshots) -------------------------------------------------------------------
    def to_wire(self) -> list[Any]:
        return [[[a, s, c, v, dict(self.balance.get((a, s, c), {}))] for (a, s, c), v in sorted(self.limits.items())],
                sorted(self.halted), sorted(self.ever), [self.refused["not_operator"], self.refused["transfers"]]]

    @classmethod
    def from_wire(cls, raw: Any) -> RiskState:
        """Parse ``to_wire``'s form; ``WireError`` on anything else."""
        if type(raw) is not list or len(raw) != 4:
            raise WireError("bad risk state", reason="bad_snapshot")
        rows, halted, ever, refused = raw
        s = cls()
        for row in _list(rows, 1 << 20):
            if type(row) is not list or len(row) != 5:
                raise WireError("bad risk limit row", reason="bad_snapshot")
            a, sym, c, v, bal = row
            _str(a, 1)
            _str(sym, 0, 32)
            if type(c) is not int or not 0 <= c < len(COUNTER_NAMES):
                raise WireError("bad risk counter", reason="bad_snapshot")
            s.limits[(a, sym, c)] = _int(v, 0)
            if type(bal) is not dict or len(bal) > 4096:
                raise WireError("bad risk balances", reason="bad_snapshot")
            s.balance[(a, sym, c)] = {_str(n, 1): _int(x) for n, x in bal.items()}
        s.halted = {_str(a, 1) for a in _list(halted, 1 << 20)}
        s.ever = {_str(a, 1) for a in _list(ever, 1 << 20)}
        r = _list(refused, 2)
        if len(r) != 2:
            raise WireError("bad risk counters", reason="bad_snapshot")
        s.refused = {"not_operator": _int(r[0], 0), "transfers": _int(r[1], 0)}
        return s


def _list(v: Any, n: int) -> list[Any]:
    if type(v) is not list or len(v) > n:
        raise WireError("bad risk list", reason="bad_snapshot")
    return v


def _str(v: Any, lo: int = 0, hi: int = 64) -> str:
    if type(v) is not str or not lo <= len(v) <= hi:
        raise WireError("bad risk name", reason="bad_snapshot")
    return v


def _int(v: Any, lo: int = -(1 << 62)) -> int:
    if type(v) is not int or not lo <= v <= 1 << 62:
        raise WireError("bad risk integer", reason="bad_snapshot")
    return v


def state_at(base: RiskState, ops: Iterable[Any]) -> RiskState:
    """``base`` with the effective risk ops ``ops`` applied in order (a copy)."""
    s = base.copy()
    for op in ops:
        s.apply(op)
    return s


# ==== compacted fills: what a snapshot keeps of positions ===========================================
#: ``(account, symbol, origin of the order) -> [net quantity, net notional]`` of fills of compacted
#: ops, for accounts that had a limit when the fill folded: a function of the compacted prefix, so
#: every replica's snapshot agrees; a node restarting from one takes its own origin's rows as the
#: final fills of its own orders
Positions = dict[tuple[str, str, str], list[int]]


def positions_to_wire(p: Positions) -> list[Any]:
    return [[a, s, o, q, n] for (a, s, o), (q, n) in sorted(p.items())]


def positions_from_wire(raw: Any) -> Positions:
    out: Positions = {}
    for row in _list(raw, 1 << 22):
        if type(row) is not list or len(row) != 5:
            raise WireError("bad risk position row", reason="bad_snapshot")
        out[(_str(row[0], 1), _str(row[1], 1, 32), _str(row[2], 1))] = [_int(row[3]), _int(row[4])]
    return out


def add_fill(p: dict[Any, list[int]], key: Any, side: int, qty: int, price: int) -> None:
    """Book one fill of an order on ``side`` (``_BUY`` adds) into ``p[key]``."""
    row = p.get(key)
    if row is None:
        row = p[key] = [0, 0]
    sign = 1 if side == _BUY else -1
    row[0] = _clamp(row[0] + sign * qty)
    row[1] = _clamp(row[1] + sign * qty * price)


# ==== node-local consumption =======================================================================
class Held:
    """One of this node's own orders of an account with limits, until it is settled."""

    __slots__ = ("account", "symbol", "side", "price", "qty", "left", "rests", "closed", "touch", "key")

    def __init__(self, account: str, symbol: str, side: int, price: int, qty: int, rests: bool,
                 key: tuple[int, int]) -> None:
        self.account, self.symbol, self.side, self.price = account, symbol, side, price
        self.qty = qty  # as placed
        self.left = qty  # what can still fill: qty less its final fills
        self.rests = rests  # a GTC order: it may rest (IOC / FOK / market never do)
        self.closed = False  # removed by this node's own cancel: it can never rest again
        self.key = key  # (wall, logical) of its NEW
        self.touch = key  # (wall, logical) of the latest op that changed it, as far as any fold saw

    def hold(self, counter: int) -> int:
        """What this order may still add to ``counter`` (its worst case)."""
        if counter == OPEN_BUY:
            return self.left if self.side == _BUY and self.rests and not self.closed else 0
        if counter == OPEN_SELL:
            return self.left if self.side == _SELL and self.rests and not self.closed else 0
        if counter == LONG:
            return self.left if self.side == _BUY else 0
        if counter == SHORT:
            return self.left if self.side == _SELL else 0
        return self.left * self.price


def need(counter: int, side: int, price: int, qty: int, tif: int) -> int:
    """What a new order takes from ``counter`` (the worst case: ``Held.hold`` of a fresh one)."""
    if counter == OPEN_BUY:
        return qty if side == _BUY and tif == _GTC else 0
    if counter == OPEN_SELL:
        return qty if side == _SELL and tif == _GTC else 0
    if counter == LONG:
        return qty if side == _BUY else 0
    if counter == SHORT:
        return qty if side == _SELL else 0
    return qty * price


class Escrow:
    """This node's consumption of its rights: its own orders of limited accounts and their final
    fills. Not replicated (each node knows its own); fed by the replica's fold and finality.

    What each order may still take is kept summed per account and instrument (``_sums``), and
    final fills per account and instrument (``fills``), so a check costs O(instruments), not
    O(orders): every change to an order goes through ``_change``, which moves its holds."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.orders: dict[str, Held] = {}
        self.by_acct: dict[str, set[str]] = {}
        #: account -> symbol -> [net qty, net notional] of final fills of this node's orders
        self.fills: dict[str, dict[str, list[int]]] = {}
        #: account -> symbol -> what its unsettled orders may still take, per counter
        self._sums: dict[str, dict[str, list[int]]] = {}
        self.fin_pos = 0  # fold position (compacted ops included) up to which final fills are counted
        self.settled = 0
        #: the watermark of the last ``settle``: an order placed at or below it that is not tracked
        #: was settled already (compaction folds final ops again; they must not be tracked again)
        self.settled_to: tuple[int, int] = (0, 0)
        #: account -> the latest op of it, as far as any fold saw, that removed some of its own
        #: resting orders by self-trade prevention (which ones the book does not say: all of the
        #: account's orders wait for it to be final before they settle)
        self.stp_touch: dict[str, tuple[int, int]] = {}

    def _move(self, h: Held, sign: int) -> None:
        row = self._sums.setdefault(h.account, {}).setdefault(h.symbol, [0, 0, 0, 0, 0])
        for c in range(5):
            row[c] += sign * h.hold(c)

    def add(self, oid: str, h: Held) -> None:
        self.orders[oid] = h
        self.by_acct.setdefault(h.account, set()).add(oid)
        self._move(h, 1)

    # ---- the fold's side ----------------------------------------------------------------------------
    def track(self, oid: str, op: Any) -> None:
        """An own NEW of a limited account folded (again, on a replay: nothing changes)."""
        if oid in self.orders or (op.wall, op.logical) <= self.settled_to:
            return
        self.add(oid, Held(op.account, op.symbol, op.side, op.price, op.qty, op.tif == _GTC, (op.wall, op.logical)))

    def touch(self, oid: str, key: tuple[int, int]) -> None:
        h = self.orders.get(oid)
        if h is not None and key > h.touch:
            h.touch = key

    def touch_account(self, account: str, key: tuple[int, int], books: Mapping[str, Any], symbol: str = "",
                      side: int | None = None, close_before: tuple[int, int] | None = None) -> None:
        """An op of ``account`` that may change its resting orders without a trade (self-trade
        prevention, a mass cancel, the kill switch), called before it changes ``books``: every
        tracked order of it resting there in ``symbol`` ("" all), on ``side`` (None both), is
        touched (one not resting cannot be changed by it); with ``close_before``, one of this node's
        own cancels: those placed before it can never rest again."""
        for oid in self.by_acct.get(account, ()):
            h = self.orders[oid]
            if (symbol and h.symbol != symbol) or (side is not None and h.side != side):
                continue
            if close_before is not None and h.key < close_before and not h.closed:
                self._move(h, -1)
                h.closed = True
                self._move(h, 1)
            b = books.get(h.symbol)
            if b is None or oid not in b:
                continue
            if key > h.touch:
                h.touch = key

    def stp_touched(self, account: str, key: tuple[int, int]) -> None:
        if key > self.stp_touch.get(account, (0, 0)):
            self.stp_touch[account] = key

    def close(self, oid: str) -> None:
        h = self.orders.get(oid)
        if h is not None and not h.closed:
            self._move(h, -1)
            h.closed = True
            self._move(h, 1)

    def final_fill(self, oid: str, qty: int, price: int) -> None:
        """A fill of one of this node's orders is final: it moves from the order's worst case into
        the node's final fills (which no replay can change)."""
        h = self.orders.get(oid)
        if h is None:
            return
        self._move(h, -1)
        h.left = max(0, h.left - qty)
        self._move(h, 1)
        add_fill(self.fills.setdefault(h.account, {}), h.symbol, h.side, qty, price)

    def settle(self, watermark: tuple[int, int], resting: Callable[[str, str], bool]) -> int:
        """Drop orders whose outcome is final: not resting, and every op that changed them at or
        below the watermark. Their final fills are already counted; their worst case goes."""
        self.settled_to = max(self.settled_to, watermark)
        stp = self.stp_touch
        done = [oid for oid, h in self.orders.items() if h.touch <= watermark and not resting(h.symbol, oid)
                and (not stp or stp.get(h.account, (0, 0)) <= watermark)]
        for oid in done:
            h = self.orders.pop(oid)
            self._move(h, -1)
            s = self.by_acct[h.account]
            s.discard(oid)
            if not s:
                del self.by_acct[h.account]
        self.settled += len(done)
        return len(done)

    # ---- the check ------------------------------------------------------------------------------------
    def consumption(self, key: Key) -> int:
        """What this node's orders of ``key``'s account take from it: the worst case of unsettled
        orders plus their final fills (fills that reduce an exposure give it back)."""
        acct, scope, c = key
        total = 0
        for sym, row in self._sums.get(acct, {}).items():
            if not scope or sym == scope:
                total += row[c]
        if c in (LONG, SHORT, NOTIONAL):
            for sym, (q, n) in self.fills.get(acct, {}).items():
                if not scope or sym == scope:
                    total += q if c == LONG else -q if c == SHORT else abs(n)
        return total

    def rights(self, state: RiskState, key: Key) -> int:
        """Balance less consumption: what this node may still take (negative: over, after a cut)."""
        return state.balance_of(key, self.node_id) - self.consumption(key)


def visible_accounts(state: RiskState, viewer: str, account: str = "") -> list[str]:
    """The accounts a ``risk`` query shows ``viewer``: every account with a limit or halted for the
    operator, only its own for anyone else; narrowed to ``account`` when given."""
    names = sorted({k[0] for k in state.limits} | state.halted)
    if viewer != OPERATOR:
        names = [a for a in names if a == viewer]
    if account:
        names = [a for a in names if a == account]
    return names


def fmt_amount(counter: int, amount: int, tick: Decimal | None = None, lot: Decimal | None = None) -> str:
    """``amount`` of ``counter`` as a user reads it: lots, or notional in price x quantity units."""
    if counter == NOTIONAL:
        if tick is None or lot is None:
            return f"{amount} tick-lots"
        return f"{(amount * tick * lot).normalize():f}"
    return f"{amount} lot{'' if amount == 1 else 's'}"


__all__ = ["ASK", "COUNTER_NAMES", "DIM_NAMES", "E_RISK", "HALT", "LIMIT", "MAX_LIMIT", "OPERATOR", "RISK_KINDS",
           "TRANSFER", "Escrow", "Held", "RiskConfig", "RiskRefused", "RiskState", "counter_of", "counters_of",
           "dim_side", "need", "state_at", "valid_op", "visible_accounts"]
