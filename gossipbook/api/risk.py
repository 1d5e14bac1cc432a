"""Risk limits and the kill switch as requests and replies: the one place ``Client`` and
``gossipbook risk`` turn amounts into ``LIMIT`` / ``HALT`` requests and ``risk`` query answers into
one view per account.

Why shared: a limit is an integer of lots (or of tick x lot for notional) on the wire, scoped to one
instrument or to every instrument; the conversion, its checks and the merge of several nodes'
answers must be the same whether an operator types ``gossipbook risk set`` or a program calls
``Client.set_risk_limit``. Nothing here does I/O: callers send the messages and pass the payloads in.

Rules that hold:
- An amount is a ``Decimal``, ``str`` or ``int`` of 0 or more on the instrument's grid and at most
  ``MAX_LIMIT`` units; anything else is a ``UsageError`` naming the flag or argument, before
  anything is sent.
- A limit without a symbol adds up every instrument's lots, so it needs instruments that share
  lot and tick sizes; a position limit always needs a symbol.
- ``merge_risk`` keeps each node's answer apart (``limit``, ``rights``, ``used``, ``headroom`` per
  node that answered); values are ``Decimal`` in the instrument's units.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from ..core.errors import UsageError
from ..core.instrument import Instrument, Venue
from ..core.risk import (
    DIM_NAMES,
    DIM_NOTIONAL,
    DIM_OPEN_BUY,
    DIM_OPEN_SELL,
    DIM_POSITION,
    HALT,
    LIMIT,
    MAX_LIMIT,
)
from ..core.wire import ClientSubmit

#: keyword / flag name (``max_open_buy`` is ``--max-open-buy``) -> the dimension a LIMIT op sets
LIMIT_FIELDS: tuple[tuple[str, int], ...] = (("max_open_buy", DIM_OPEN_BUY), ("max_open_sell", DIM_OPEN_SELL),
                                             ("max_position", DIM_POSITION), ("max_notional", DIM_NOTIONAL))


def scope_units(venue: Venue, symbol: str | None) -> tuple[str, Instrument]:
    """The scope ("" for every instrument) and the instrument whose units quantities are in."""
    if symbol:
        return symbol, venue.get(symbol)
    insts = list(venue.instruments.values())
    if len({(i.lot_size, i.tick_size) for i in insts}) > 1:
        raise UsageError("the instruments differ in lot or tick size: give a symbol (a limit without one "
                         "adds up every instrument's lots)")
    return "", insts[0]


def to_units(value: object, unit: Decimal, what: str) -> int:
    """``value`` (Decimal, str or int; 0 or more) as a whole number of ``unit``s."""
    if isinstance(value, bool) or not isinstance(value, Decimal | str | int):
        raise UsageError(f"{what} must be a Decimal, str or int, not {type(value).__name__} {value!r}")
    try:
        d = Decimal(value)
    except InvalidOperation:
        raise UsageError(f"{what} {value!r} is not a number") from None
    if not d.is_finite() or d < 0:
        raise UsageError(f"{what} must be a number of 0 or more, not {value!r}")
    n = d / unit
    if n != n.to_integral_value():
        raise UsageError(f"{what} {value} is not a multiple of {unit.normalize():f}")
    if n > MAX_LIMIT:
        raise UsageError(f"{what} {value} is too large")
    return int(n)


def limit_requests(venue: Venue, account: str, symbol: str | None, values: Mapping[str, object],
                   clear: Iterable[str], *, new_req: Any, wait: int, timeout_ms: int,
                   flag: str = "{}") -> list[tuple[ClientSubmit, str]]:
    """One ``LIMIT`` request per limit set (``values``: a ``LIMIT_FIELDS`` name -> amount, None
    skipped) or cleared (``clear``: ``DIM_NAMES``), each with a line saying what it does.
    ``flag`` formats a field's name in errors (the CLI passes ``"--{}"`` and dashes)."""
    scope, inst = scope_units(venue, symbol)
    out: list[tuple[ClientSubmit, str]] = []
    where = f" in {scope}" if scope else ""
    for name, dim in LIMIT_FIELDS:
        value = values.get(name)
        if value is None:
            continue
        what = flag.format(name.replace("_", "-") if flag != "{}" else name)
        if dim == DIM_POSITION and not scope:
            raise UsageError(f"{what} needs a symbol (a position is per instrument)")
        unit = inst.tick_size * inst.lot_size if dim == DIM_NOTIONAL else inst.lot_size
        n = to_units(value, unit, what)
        out.append((ClientSubmit(new_req(), LIMIT, scope, account, 0, 0, n, dim, wait, timeout_ms),
                    f"{account} {DIM_NAMES[dim]} {value}{where}"))
    for name in clear:
        if name not in DIM_NAMES:
            raise UsageError(f"cannot clear {name!r}: a limit kind is one of {', '.join(DIM_NAMES)}")
        dim = DIM_NAMES.index(name)
        if dim == DIM_POSITION and not scope:
            raise UsageError("clearing a position limit needs a symbol")
        out.append((ClientSubmit(new_req(), LIMIT, scope, account, 1, 0, 0, dim, wait, timeout_ms),
                    f"{account} {name} none{where}"))
    return out


def halt_request(account: str, disable: bool, *, req: str, wait: int, timeout_ms: int) -> ClientSubmit:
    """The kill switch for ``account``: a ``HALT`` op that disables (or enables) it."""
    return ClientSubmit(req, HALT, "", account, 0 if disable else 1, 0, 0, 0, wait, timeout_ms)


def _value(venue: Venue, symbol: str, kind: str, v: int) -> Decimal:
    """A wire integer of ``kind`` in ``symbol``'s units (every-instrument scope: the first's)."""
    inst = venue.instruments.get(symbol) if symbol else next(iter(venue.instruments.values()))
    if inst is None:
        return Decimal(v)
    unit = inst.tick_size * inst.lot_size if kind == "notional" else inst.lot_size
    return (v * unit).normalize()


def _parse(venue: Venue, p: Any, account: str) -> list[tuple[str, bool, list[dict[str, Any]]]]:
    """One node's ``risk`` answer as ``(account, disabled, rows)`` in ``Decimal``; ``ValueError``
    if it is not the shape a node sends (a reader never trusts a reply's shape)."""
    out = []
    try:
        for acct, a in p["accounts"].items():
            if account and acct != account:
                continue
            rows = []
            for row in a["limits"]:
                sym, kind = str(row["symbol"]), str(row["limit_kind"])

                def v(x: Any, sym: str = sym, kind: str = kind) -> Decimal:
                    if type(x) is not int:
                        raise TypeError(x)
                    return _value(venue, sym, kind, x)
                r: dict[str, Any] = {"symbol": sym, "kind": kind, "limit": v(row["limit"])}
                if "rights" in row:  # eventual: the rights matrix as this node sees it, and its own use
                    r["rights"] = {str(m): v(x) for m, x in row["rights"].items()}
                    r["used"], r["headroom"] = v(row["used_here"]), v(row["headroom_here"])
                else:  # strong: the exact use at the folded index
                    r["used"] = v(row["used"])
                rows.append(r)
            out.append((str(acct), bool(a["disabled"]), rows))
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise ValueError(f"malformed risk answer ({type(e).__name__})") from None
    return out


def merge_risk(venue: Venue, nodes: Sequence[str], answers: Mapping[str, Any],
               account: str = "") -> dict[str, dict[str, Any]]:
    """The ``risk`` answers of ``nodes`` (None: no answer; ``{"error"}``: refused) as one view per
    account: ``{account: {"disabled_at": {node: bool}, "limits": [{"symbol", "kind", "limit":
    {node: Decimal}, "rights": {node: {holder: Decimal}}, "used": {...}, "headroom": {...}}]}}``
    (``symbol`` "" for every instrument; ``rights`` and ``headroom`` empty in strong mode). A
    malformed answer counts as none (``answers[node]`` becomes ``{"error": ...}`` if mutable)."""
    accounts: dict[str, dict[str, Any]] = {}
    for nid in nodes:
        p = answers.get(nid)
        if not p or "error" in p:
            continue
        try:
            parsed = _parse(venue, p, account)
        except ValueError as e:
            if isinstance(answers, dict):
                answers[nid] = {"error": str(e)}
            continue
        for acct, disabled, rows in parsed:
            entry = accounts.setdefault(acct, {"disabled_at": {}, "limits": {}})
            entry["disabled_at"][nid] = disabled
            for r in rows:
                lim = entry["limits"].setdefault((r["symbol"], r["kind"]), {
                    "symbol": r["symbol"], "kind": r["kind"], "limit": {}, "rights": {}, "used": {}, "headroom": {}})
                lim["limit"][nid] = r["limit"]
                lim["used"][nid] = r["used"]
                if "rights" in r:
                    lim["rights"][nid] = r["rights"]
                    lim["headroom"][nid] = r["headroom"]
    return {a: {"disabled_at": e["disabled_at"], "limits": list(e["limits"].values())}
            for a, e in sorted(accounts.items())}


__all__ = ["LIMIT_FIELDS", "halt_request", "limit_requests", "merge_risk", "scope_units", "to_units"]
