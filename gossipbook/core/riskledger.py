"""The replica's side of risk limits: which risk ops are in force where, and how rights move.

Theory of operation
-------------------
``Replica`` holds one ``RiskLedger``. The ledger keeps the risk ops above the snapshot (``LIMIT``,
``TRANSFER``, ``HALT``) in fold order, with whether each one is *effective* (the fold says: a
retried request is a no-op, as for any op), on top of ``base``, the ``RiskState`` of the
compacted prefix. From these it answers, always as a function of the op-set:

- ``state()``: limits, balances and disabled accounts with every op held (what a node checks
  new orders against);
- ``account_at(account, op)``: whether the account had a limit (now, or ever) and was disabled
  at ``op``'s place in the fold (what the fold itself decides by: a disabled account's NEW and a
  limited account's AMEND are no-ops there, on every replica).

Compaction folds the compacted risk ops into ``base`` and books the fills of compacted ops into
``positions`` (per account, instrument and the origin of the order), so a snapshot carries both.

The ledger also owns this node's ``Escrow`` (its consumption), fed by the fold (``touch``) and by
finality (``sweep``), and the policy that moves rights (``plan``): the initial split of a limit
this node stamped, answers to asks addressed to it, and asks of its own (after a refusal, and the
background rebalance). ``plan`` returns what to stamp; the replica stamps it. Every queue a peer
can fill here is capped and counted (``max_asks_queued``), and stamping is rate-bounded.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections import deque
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from .ops import Op, parse_order_id
from .risk import (
    ASK,
    COUNTER_NAMES,
    HALT,
    LIMIT,
    MAX_LIMIT,
    NOTIONAL,
    OPERATOR,
    TRANSFER,
    Escrow,
    Held,
    Key,
    Positions,
    RiskConfig,
    RiskRefused,
    RiskState,
    add_fill,
    counter_of,
    counters_of,
    dim_side,
    fmt_amount,
    need,
    positions_from_wire,
    positions_to_wire,
    visible_accounts,
)

_BUY = 0
_MARKET = 3
COUNTERS = ("risk_refused_open_buy", "risk_refused_open_sell", "risk_refused_long", "risk_refused_short",
            "risk_refused_notional", "risk_refused_disabled", "risk_refused_amend", "risk_refused_market",
            "risk_not_operator", "risk_disabled_noop", "risk_amend_noop", "risk_asks_sent", "risk_asks_answered",
            "risk_asks_declined", "risk_asks_stale", "risk_asks_dropped", "risk_transfers_out",
            "risk_transfers_in", "risk_split_transfers", "risk_ops_rate_limited", "risk_settled")
_REFUSED = ("risk_refused_open_buy", "risk_refused_open_sell", "risk_refused_long", "risk_refused_short",
            "risk_refused_notional")
_Status = tuple[bool, bool, bool]  # (has a limit, ever had one, disabled)


class RiskLedger:
    """Risk ops in force (deterministic) and this node's rights (its own)."""

    def __init__(self, node_id: str, members: set[str], instruments: Mapping[str, Any], config: RiskConfig,
                 counters: dict[str, int]) -> None:
        self.me = node_id
        self.members = members  # the replica's own set: membership changes show here
        self.instruments = instruments
        self.config = config
        self.counters = counters
        for k in COUNTERS:
            counters.setdefault(k, 0)
        self.base = RiskState()
        self.positions: Positions = {}
        self.live: list[Op] = []  # LIMIT / TRANSFER / HALT ops above the snapshot, fold order
        self.eff: dict[Op, bool] = {}  # whether the fold found each one effective
        self.by_acct: dict[str, list[Op]] = {}  # LIMIT / HALT ops above the snapshot by the account they name
        self.accounts: set[str] = set()  # accounts any LIMIT / HALT op held names: the fold's fast filter
        self._marks: dict[str, tuple[list[Op], list[_Status]]] = {}
        self._state: RiskState | None = None
        self.escrow = Escrow(node_id)
        # moving rights (node-local)
        self.short: dict[Key, int] = {}  # shortfalls a refusal found, to ask for
        #: key -> (this node's recent demand for it in units per second, when): where the flow is
        self._rate: dict[Key, tuple[float, int]] = {}
        self._largest: dict[Key, float] = {}  # key -> the largest recent order's need here (decays as the rate)
        self.asks_in: deque[Op] = deque()
        self.splits: list[list[tuple[Key, int]]] = []  # limits stamped here, to split among members
        self._last_ask: dict[Key, int] = {}
        self._backoff: dict[Key, int] = {}  # key -> the wait before the next ask (doubles while unanswered)
        self._asked: dict[Key, tuple[str, int]] = {}  # key -> (donor asked, our balance then)
        self._tokens = config.max_ops_per_s
        self._tokens_at: int | None = None
        self._next_rebalance = 0

    # ==== what the op-set says ======================================================================
    def note(self, op: Op) -> None:
        """A risk op entered the op-set (once per op and replica life)."""
        k = op.kind
        if k == ASK:
            if op.order_id == self.me:
                if len(self.asks_in) >= self.config.max_asks_queued:
                    self.counters["risk_asks_dropped"] += 1
                else:
                    self.asks_in.append(op)
            return
        if k == TRANSFER and op.order_id == self.me:
            self.counters["risk_transfers_in"] += 1
        insort(self.live, op)
        if k != TRANSFER:
            insort(self.by_acct.setdefault(op.order_id, []), op)
            self.accounts.add(op.order_id)
            self._marks.pop(op.order_id, None)

    def effective(self, op: Op, eff: bool) -> None:
        """The fold decided whether ``op`` takes effect (every fold of it: live, replay, compaction)."""
        if self.eff.get(op) is not eff:
            self.eff[op] = eff
            self._state = None
            if op.kind != TRANSFER:
                self._marks.pop(op.order_id, None)

    def state(self) -> RiskState:
        """Limits and balances with every effective op held (cached until an op's effect changes)."""
        st = self._state
        if st is None:
            st = self.base.copy()
            eff = self.eff
            for op in self.live:
                if eff.get(op):
                    st.apply(op)
            self._state = st
        return st

    def account_at(self, account: str, op: Op) -> _Status:
        """``account``'s (has a limit, ever had one, disabled) just below ``op`` in the fold."""
        marks = self._marks.get(account)
        if marks is None:
            marks = self._marks[account] = self._build_marks(account)
        keys, states = marks
        return states[bisect_left(keys, op)]

    def _build_marks(self, account: str) -> tuple[list[Op], list[_Status]]:
        b = self.base
        mini = RiskState()
        mini.limits = {k: v for k, v in b.limits.items() if k[0] == account}
        mini.halted = {account} & b.halted
        mini.ever = {account} & b.ever

        def status() -> _Status:
            return bool(mini.limits), account in mini.ever, account in mini.halted

        keys: list[Op] = []
        states = [status()]
        for op in self.by_acct.get(account, ()):
            if self.eff.get(op):
                mini.apply(op)
                keys.append(op)
                states.append(status())
        return keys, states

    # ==== the fold's hooks ============================================================================
    def fold_new(self, oid: str, op: Op) -> bool:
        """A NEW of an account named by risk ops folds: False if it is a no-op (disabled there)."""
        _lim, ever, halted = self.account_at(op.account, op)
        if halted:
            self.counters["risk_disabled_noop"] += 1
            return False
        if ever and op.origin == self.me:
            self.escrow.track(oid, op)
        return True

    def amend_refused(self, op: Op) -> bool:
        """An AMEND of an account that has had a limit is a no-op on every replica: a replay can turn
        a size-down into a re-entry larger than the order was charged for."""
        if self.account_at(op.account, op)[1]:
            self.counters["risk_amend_noop"] += 1
            return True
        return False

    def touch(self, op: Op, trades: list[Any]) -> None:
        """``op`` folded with ``trades``: the tracked orders they filled."""
        esc = self.escrow
        key = (op.wall, op.logical)
        orders = esc.orders
        for t in trades:
            if t.maker in orders:
                esc.touch(t.maker, key)
            if t.taker in orders:
                esc.touch(t.taker, key)

    def fold_halt(self, op: Op, books: Mapping[str, Any]) -> bool:
        """A HALT folds: True if it disables (the caller then cancels the account's resting orders)."""
        if op.account != OPERATOR:
            self.counters["risk_not_operator"] += 1
            return False
        if op.side == 0:
            key = (op.wall, op.logical)
            self.escrow.touch_account(op.order_id, key, books, close_before=key if op.origin == self.me else None)
            return True
        return False

    # ==== finality ======================================================================================
    def sweep(self, applied: list[Op], op_trades: list[list[Any]], compacted: int, final_count: int,
              watermark: tuple[int, int], resting: Callable[[str, str], bool]) -> None:
        """Count the fills of this node's tracked orders that became final, then settle the orders
        whose outcome is final (``Escrow.settle``)."""
        esc = self.escrow
        if not esc.orders:
            esc.fin_pos = max(esc.fin_pos, compacted + final_count)
            return
        orders = esc.orders
        for i in range(max(0, esc.fin_pos - compacted), final_count):
            ts = op_trades[i]
            if not ts:
                continue
            price = applied[i].price
            for t in ts:
                if t.maker in orders:
                    esc.final_fill(t.maker, t.qty, t.price)
                if t.taker in orders:
                    esc.final_fill(t.taker, t.qty, price or t.price)
        esc.fin_pos = max(esc.fin_pos, compacted + final_count)
        self.counters["risk_settled"] += esc.settle(watermark, resting)

    # ==== compaction and snapshots ========================================================================
    def compact(self, ops: list[Op], op_trades: list[list[Any]]) -> None:
        """``ops`` (a fold prefix, with their trades) move into the snapshot."""
        if not self.live and not self.base.ever:
            return
        base, eff, pos = self.base, self.eff, self.positions
        for op, ts in zip(ops, op_trades, strict=True):
            if op.kind in (LIMIT, TRANSFER, HALT) and eff.get(op):
                base.apply(op)
            if ts and base.ever:
                price = op.price
                for t in ts:
                    if t.maker_account in base.ever:
                        add_fill(pos, (t.maker_account, t.symbol, t.maker.rpartition(":")[0]), 1 - t.taker_side,
                                 t.qty, t.price)
                    if t.taker_account in base.ever:
                        add_fill(pos, (t.taker_account, t.symbol, t.taker.rpartition(":")[0]), t.taker_side,
                                 t.qty, price or t.price)
        n = bisect_right(self.live, ops[-1]) if ops else 0
        for op in self.live[:n]:
            eff.pop(op, None)
            if op.kind != TRANSFER:
                lst = self.by_acct[op.order_id]
                lst.remove(op)
                if not lst:
                    del self.by_acct[op.order_id]
        del self.live[:n]
        self._marks.clear()
        self._state = None

    def to_wire(self) -> list[Any]:
        b = self.base
        if not (b.limits or b.halted or b.ever or self.positions):
            return []
        return [b.to_wire(), positions_to_wire(self.positions)]

    def install(self, raw: list[Any], books: Mapping[str, Any], end: int) -> None:
        """Adopt a snapshot's risk state (``raw``: ``to_wire``'s form, [] for none) whose books are
        ``books`` and which ends at fold position ``end``. This node's consumption restarts from it:
        the snapshot's fills of its own orders, and its own resting orders as placed now; the ops
        above the snapshot are folded again by the caller and tracked as they fold."""
        self.base = RiskState.from_wire(raw[0]) if raw else RiskState()
        self.positions = positions_from_wire(raw[1]) if raw else {}
        self.live, self.eff, self.by_acct, self._marks, self._state = [], {}, {}, {}, None
        b = self.base
        self.accounts = {k[0] for k in b.limits} | b.halted | b.ever
        esc = self.escrow = Escrow(self.me)
        esc.fin_pos = end
        for (a, s, o), v in self.positions.items():
            if o == self.me:
                esc.fills.setdefault(a, {})[s] = list(v)
        for sym, book in books.items():
            for side, price, oid, qty, acct in book.entries():
                if acct in b.ever and oid.rpartition(":")[0] == self.me:
                    esc.add(oid, Held(acct, sym, side, price, qty, True, (0, 0)))

    # ==== the checks at the stamping node =================================================================
    def check_new(self, account: str, symbol: str, side: int, price: int, qty: int, tif: int, now: int = 0) -> None:
        """Refuse (``RiskRefused``, one line naming the limit) a NEW this node's rights do not cover.
        Every order asked for, placed or refused, counts as demand here (``_targets``)."""
        st = self.state()
        if account in st.halted:
            self.counters["risk_refused_disabled"] += 1
            raise RiskRefused(f"risk: {account} is disabled by the kill switch; nothing was placed "
                              f"(gossipbook risk enable {account} lifts it)")
        for key in st.keys_for(account, symbol):
            c = key[2]
            if c == NOTIONAL and tif == _MARKET:
                self.counters["risk_refused_market"] += 1
                raise RiskRefused(f"risk: {account} has a notional limit, so a market order cannot be valued; "
                                  f"give a limit price")
            n = need(c, side, price, qty, tif)
            if not n:
                continue
            self._demand(key, n, now)
            have = self.escrow.rights(st, key)
            if n > have:
                self.counters[_REFUSED[c]] += 1
                self.short[key] = max(self.short.get(key, 0), n - max(have, 0))
                raise RiskRefused(f"risk: {account}'s {COUNTER_NAMES[c]} headroom at {self.me} is "
                                  f"{self.fmt(key, max(have, 0))} (limit {self.fmt(key, st.limits[key], unit=False)})")

    def check_amend(self, account: str) -> None:
        st = self.state()
        if account in st.ever or account in st.halted:
            self.counters["risk_refused_amend"] += 1
            raise RiskRefused(f"risk: {account} has risk limits, so orders cannot be amended (a replay could "
                              f"turn an amend into a larger order); cancel and place a new one")

    def fmt(self, key: Key, amount: int, unit: bool = True) -> str:
        c = key[2]
        if c != NOTIONAL:
            return fmt_amount(c, amount) if unit else str(amount)
        inst = self.instruments.get(key[1]) or next(iter(self.instruments.values()), None)
        tick: Decimal | None = getattr(inst, "tick_size", None)
        lot: Decimal | None = getattr(inst, "lot_size", None)
        return fmt_amount(c, amount, tick, lot)

    # ==== moving rights ==================================================================================
    def plan(self, now: int, books: Mapping[str, Any]) -> list[tuple[int, str, str, int, int, int, str]]:
        """Risk ops to stamp now, as ``(kind, symbol, order_id, side, qty, tif, account)``: the
        split of limits stamped here, answers to asks, asks of our own. Rate-bounded."""
        cfg = self.config
        if self._tokens_at is None or now > self._tokens_at:
            if self._tokens_at is not None:
                self._tokens = min(cfg.max_ops_per_s, self._tokens + (now - self._tokens_at) * cfg.max_ops_per_s / 1e9)
            self._tokens_at = now
        out: list[tuple[int, str, str, int, int, int, str]] = []
        rebalance = cfg.rebalance and now >= self._next_rebalance
        if not (self.splits or self.asks_in or self.short or rebalance):
            return out
        if rebalance:
            self._next_rebalance = now + cfg.rebalance_ns
        st = self.state()
        esc = self.escrow
        targets, reserves = self._targets(now, st)
        spare: dict[Key, int] = {}

        def can_give(key: Key) -> int:
            """What we can give: our free rights above what our own demand needs before an ask of
            ours could be answered."""
            if key not in spare:
                free = min(st.balance_of(key, self.me), esc.rights(st, key))
                spare[key] = max(0, free - reserves.get(key, 0))
            return spare[key]

        def emit(kind: int, key: Key, to: str, qty: int) -> bool:
            if self._tokens < 1:
                self.counters["risk_ops_rate_limited"] += 1
                return False
            self._tokens -= 1
            tif, side = dim_side(key[2])
            out.append((kind, key[1], to, side, qty, tif, key[0]))
            if kind == TRANSFER:
                spare[key] = can_give(key) - qty
            return True

        # the initial split of a limit stamped here: an equal share to every other member
        while self.splits:
            shares = self.splits[0]
            others = sorted(self.members - {self.me})
            n = len(others) + 1
            for key, delta in shares:
                share = delta // n
                for m in others:
                    give = min(share, max(0, min(st.balance_of(key, self.me), esc.rights(st, key))))
                    if give >= 1:
                        if not emit(TRANSFER, key, m, give):
                            return out  # the rest of the split next time
                        spare.pop(key, None)
                        st.balance[key][self.me] -= give  # (this plan's view; the fold agrees)
                        self.counters["risk_split_transfers"] += 1
            self.splits.pop(0)
            self._state = None
        # asks addressed to us: give what we hold above our own target; of several asks of one
        # node for one limit waiting here (a partition held them back), only the newest counts
        if len(self.asks_in) > 1:
            newest: dict[tuple[str, str, str, int], Op] = {}
            for a in self.asks_in:
                newest[(a.origin, a.account, a.symbol, counter_of(a.tif, a.side))] = a
            if len(newest) < len(self.asks_in):
                self.counters["risk_asks_declined"] += len(self.asks_in) - len(newest)
                self.asks_in = deque(sorted(newest.values()))
        while self.asks_in:
            ask = self.asks_in[0]
            key = (ask.account, ask.symbol, counter_of(ask.tif, ask.side))
            if ask.wall < now - cfg.ask_ttl_ns:
                self.asks_in.popleft()
                self.counters["risk_asks_stale"] += 1
                continue
            give = min(ask.qty, can_give(key)) if key in st.limits else 0
            if give < 1:
                self.asks_in.popleft()
                self.counters["risk_asks_declined"] += 1
                continue
            if not emit(TRANSFER, key, ask.origin, give):
                return out
            self.asks_in.popleft()
            self.counters["risk_asks_answered"] += 1
            self.counters["risk_transfers_out"] += 1
        # asks of our own: where our balance is below our target (a refusal raises it at once)
        for key, target in targets.items():
            bal = st.balance_of(key, self.me)
            if bal >= target:
                continue
            asked = self._asked.get(key)
            if asked is not None and bal > asked[1]:
                self._backoff.pop(key, None)  # the last ask was answered: ask as often as needed
            wait = self._backoff.get(key, cfg.ask_interval_ns)
            if now < self._last_ask.get(key, -1 << 62) + wait:
                continue
            donor, est = self._richest(st, key, books)
            if donor is None or est < 1:
                continue
            # what the target lacks, or half of what the donor seems to hold free if more (PotionDB:
            # half the difference): one answer then covers a while of growing demand
            free = max(0, esc.rights(st, key))
            amount = max(target - bal, (est - free) // 2)
            if not emit(ASK, key, donor, min(MAX_LIMIT, amount)):
                break
            if asked is not None and bal <= asked[1]:  # unanswered: wait longer (up to 4 intervals)
                self._backoff[key] = min(4 * cfg.ask_interval_ns, 2 * wait)
            self._last_ask[key] = now
            self._asked[key] = (donor, bal)
            self.counters["risk_asks_sent"] += 1
        return out

    def _demand(self, key: Key, amount: int, now: int) -> None:
        """Count ``amount`` of demand for ``key`` now: an exponentially weighted rate (units per
        second) that halves every ``demand_halflife`` without demand."""
        h = self.config.demand_halflife_ns
        rate, at = self._rate.get(key, (0.0, now))
        decay = 0.5 ** ((now - at) / h) if now > at else 1.0
        self._rate[key] = (rate * decay + amount * 0.6931 * 1e9 / h, max(now, at))
        self._largest[key] = max(self._largest.get(key, 0.0) * decay, float(amount))

    def _targets(self, now: int, st: RiskState) -> tuple[dict[Key, int], dict[Key, int]]:
        """Per limit where this node has demand: the balance it aims to hold, and the reserve it
        keeps when asked. The reserve is what its demand rate asks for in ``reserve_ns`` (about the
        time an ask of its own takes to be answered), and at least its largest order, plus one; the
        target is its use plus that.
        So rights go where the orders come: a node without flow keeps nothing idle and gives
        what it holds free (PotionDB's rule, below half a fair share, would keep 1/2n of the limit
        at every node: with 80% of the flow at one node and the account near its limit, more than
        the slack), and a refusal asks at once for what the refused order lacked."""
        esc = self.escrow
        targets: dict[Key, int] = {}
        reserves: dict[Key, int] = {}
        horizon = self.config.reserve_ns / 1e9
        for key in set(self._rate) | set(self.short):
            lim = st.limits.get(key)
            if lim is None:
                self._rate.pop(key, None)
                self.short.pop(key, None)
                continue
            rate, at = self._rate.get(key, (0.0, now))
            decay = 0.5 ** ((now - at) / self.config.demand_halflife_ns) if now > at else 1.0
            if rate * decay < 0.01 and key not in self.short:
                self._rate.pop(key, None)  # no demand left
                self._largest.pop(key, None)
                continue
            reserve = min(lim, int(max(rate * decay * horizon, self._largest.get(key, 0.0) * decay)) + 1)
            use = max(0, esc.consumption(key))
            want = use + reserve
            if key in self.short:  # a refusal: at least what the refused order lacked
                want = max(want, st.balance_of(key, self.me) + self.short.pop(key))
            reserves[key] = reserve
            targets[key] = min(lim, want)
        return targets, reserves

    def _richest(self, st: RiskState, key: Key, books: Mapping[str, Any]) -> tuple[str | None, int]:
        """The peer with the most rights for ``key`` as this node can tell: its balance less the open
        exposure of its orders resting here (its fills are not known here). A peer asked last
        time that has not given since is passed over for another that seems to hold some."""
        acct, scope, c = key
        use: dict[str, int] = {}
        for sym, b in books.items():
            if scope and sym != scope:
                continue
            for side, price, oid, q in b.orders_of(acct):
                p = parse_order_id(oid)
                if p is None:
                    continue
                h = Held(acct, sym, side, price, q, True, (0, 0))
                use[p[0]] = use.get(p[0], 0) + h.hold(c)
        bal = st.balance.get(key, {})
        skip, then = self._asked.get(key, (None, 0))
        if skip is not None and st.balance_of(key, self.me) > then:
            skip = None  # it gave: ask it again if it is still the richest
        cands = sorted(((bal.get(m, 0) - use.get(m, 0), m) for m in self.members if m != self.me), reverse=True)
        for est, m in cands:
            if m != skip and est >= 1:
                return m, est
        return (cands[0][1], cands[0][0]) if cands else (None, 0)  # nobody else: the same one again

    # ==== status ==========================================================================================
    def near_limits(self, within_pct: int = 10, most: int = 20) -> list[dict[str, Any]]:
        """For ``status``: the limits where this node's own headroom is below ``within_pct`` of the
        limit (the accounts close to what this node may take), with the rights each node holds."""
        st = self.state()
        out = []
        for key, lim in sorted(st.limits.items()):
            have = self.escrow.rights(st, key)
            if have * 100 < within_pct * lim:
                out.append({"account": key[0], "symbol": key[1], "limit_kind": COUNTER_NAMES[key[2]], "limit": lim,
                            "headroom_here": have, "rights": dict(sorted(st.balance.get(key, {}).items()))})
                if len(out) >= most:
                    break
        return out

    def status(self, viewer: str, account: str = "", max_accounts: int = 100) -> dict[str, Any]:
        """The ``risk`` query's answer: limits, rights per node and this node's use; the operator
        sees every account, any other account only its own."""
        st = self.state()
        esc = self.escrow
        names = visible_accounts(st, viewer, account)
        out: dict[str, Any] = {}
        for a in names[:max_accounts]:
            rows = []
            for key in sorted(k for k in st.limits if k[0] == a):
                rows.append({"symbol": key[1], "limit_kind": COUNTER_NAMES[key[2]], "limit": st.limits[key],
                             "rights": dict(sorted(st.balance.get(key, {}).items())),
                             "used_here": esc.consumption(key), "headroom_here": esc.rights(st, key)})
            out[a] = {"disabled": a in st.halted, "limits": rows}
        return {"accounts": out, "truncated": len(names) > max_accounts,
                "counters": {k: self.counters[k] for k in COUNTERS}, "transfers_refused": st.refused["transfers"],
                "limits_refused": st.refused["not_operator"]}


__all__ = ["COUNTERS", "RiskLedger", "counters_of"]
