"""Risk limits in strong mode: the committed fold checks every limit exactly.

Theory of operation
-------------------
In strong mode every request is an entry of one log, folded in index order on every replica
(``strong.SequencedBooks``), so there is nothing to escrow: the fold itself knows the account's
exact exposure at the entry's place and refuses a NEW (or an AMEND) whose worst case would take it
past a limit, with a ``risk:`` outcome the client is told. Every replica folds the same entries the
same way, so they agree on every refusal; a minority side has no leader and takes no orders at all.

Exposure is counted as in eventual mode (``risk.py``): open buy / sell quantity of resting orders,
position (long = position + open buys, short = open sells - position) and notional (resting orders
at their price plus, per instrument, the absolute net of fills valued at the order's limit price:
the maker's resting price, the taker's limit). Fills count for accounts that had a limit when they
folded (``RiskState.ever``). A HALT disables an account: its resting orders are cancelled there and
its NEWs refused until an enabling HALT.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .risk import (
    COUNTER_NAMES,
    LONG,
    NOTIONAL,
    OPEN_BUY,
    OPEN_SELL,
    OPERATOR,
    SHORT,
    Key,
    RiskState,
    add_fill,
    fmt_amount,
    need,
    visible_accounts,
)

_BUY, _SELL, _MARKET = 0, 1, 3


class ExactRisk:
    """Limits, disabled accounts and positions of the committed fold (strong mode)."""

    def __init__(self, counters: dict[str, int] | None = None) -> None:
        self.state = RiskState()
        self.pos: dict[tuple[str, str], list[int]] = {}  # (account, symbol) -> [net qty, net notional]
        self.counters = counters if counters is not None else {}
        for k in ("risk_refused", "risk_refused_disabled", "risk_not_operator"):
            self.counters.setdefault(k, 0)

    @property
    def accounts(self) -> set[str]:
        return self.state.ever | self.state.halted

    # ---- ops -----------------------------------------------------------------------------------------
    def fold_limit(self, op: Any) -> str | None:
        """A LIMIT entry; its refusal (not the operator's) or None."""
        if not self.state.apply(op):
            self.counters["risk_not_operator"] += 1
            return f"risk: only the {OPERATOR} account sets limits"
        return None

    def fold_halt(self, op: Any) -> str | None:
        if not self.state.apply(op):
            self.counters["risk_not_operator"] += 1
            return f"risk: only the {OPERATOR} account uses the kill switch"
        return None

    def on_trades(self, trades: Any, taker_price: int) -> None:
        """Book fills of accounts with limits (maker at its resting price, taker at its limit)."""
        ever = self.state.ever
        if not ever:
            return
        for t in trades:
            if t.maker_account in ever:
                add_fill(self.pos, (t.maker_account, t.symbol), 1 - t.taker_side, t.qty, t.price)
            if t.taker_account in ever:
                add_fill(self.pos, (t.taker_account, t.symbol), t.taker_side, t.qty, taker_price or t.price)

    # ---- exposure ------------------------------------------------------------------------------------
    def exposure(self, key: Key, books: Mapping[str, Any], without: str = "") -> int:
        """``key``'s exposure now (``without``: leave that resting order out)."""
        acct, scope, c = key
        total = 0
        for sym, b in books.items():
            if scope and sym != scope:
                continue
            for side, price, oid, q in b.orders_of(acct):
                if oid == without:
                    continue
                if c == NOTIONAL:
                    total += q * price
                elif (c in (OPEN_BUY, LONG)) == (side == _BUY):
                    total += q
        for (a, sym), (q, n) in self.pos.items():
            if a != acct or (scope and sym != scope):
                continue
            if c == LONG:
                total += q
            elif c == SHORT:
                total -= q
            elif c == NOTIONAL:
                total += abs(n)
        return total

    def check(self, account: str, symbol: str, side: int, price: int, qty: int, tif: int,
              books: Mapping[str, Any], without: str = "") -> str | None:
        """The refusal of an order of ``account`` (or an amend of order ``without`` to it), or None."""
        st = self.state
        if account in st.halted:
            self.counters["risk_refused_disabled"] += 1
            return (f"risk: {account} is disabled by the kill switch; nothing was placed "
                    f"(gossipbook risk enable {account} lifts it)")
        for key in st.keys_for(account, symbol):
            c = key[2]
            if c == NOTIONAL and tif == _MARKET:
                self.counters["risk_refused"] += 1
                return f"risk: {account} has a notional limit, so a market order cannot be valued; give a limit price"
            n = need(c, side, price, qty, tif)
            if not n:
                continue
            have = st.limits[key] - self.exposure(key, books, without)
            if n > have:
                self.counters["risk_refused"] += 1
                return (f"risk: {account}'s {COUNTER_NAMES[c]} headroom is {fmt_amount(c, max(have, 0))} "
                        f"(limit {st.limits[key]})")
        return None

    # ---- snapshots and status -----------------------------------------------------------------------
    def to_wire(self) -> list[Any]:
        if not (self.state.limits or self.state.halted or self.state.ever):
            return []
        return [self.state.to_wire(), [[a, s, q, n] for (a, s), (q, n) in sorted(self.pos.items())]]

    def install(self, raw: Any) -> None:
        """``to_wire``'s form ([] for none); ``WireError`` if malformed."""
        from .errors import WireError

        self.state, self.pos = RiskState(), {}
        if not raw:
            return
        if type(raw) is not list or len(raw) != 2 or type(raw[1]) is not list or len(raw[1]) > 1 << 22:
            raise WireError("bad risk state in strong snapshot", reason="bad_snapshot")
        self.state = RiskState.from_wire(raw[0])
        for row in raw[1]:
            if (type(row) is not list or len(row) != 4 or type(row[0]) is not str or type(row[1]) is not str
                    or type(row[2]) is not int or type(row[3]) is not int):
                raise WireError("bad risk position in strong snapshot", reason="bad_snapshot")
            self.pos[(row[0], row[1])] = [row[2], row[3]]

    def status(self, viewer: str, account: str, books: Mapping[str, Any], max_accounts: int = 100) -> dict[str, Any]:
        st = self.state
        names = visible_accounts(st, viewer, account)
        out: dict[str, Any] = {}
        for a in names[:max_accounts]:
            rows = [{"symbol": k[1], "limit_kind": COUNTER_NAMES[k[2]], "limit": st.limits[k],
                     "used": self.exposure(k, books)} for k in sorted(k for k in st.limits if k[0] == a)]
            out[a] = {"disabled": a in st.halted, "limits": rows}
        return {"accounts": out, "truncated": len(names) > max_accounts,
                "counters": {k: v for k, v in self.counters.items() if k.startswith("risk_")}}


__all__ = ["ExactRisk", "OPEN_SELL", "SHORT"]
