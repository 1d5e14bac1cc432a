"""Instruments and venues: the grid that turns user decimals into the core's integers.

Rules that hold: inside the core a price is an integer count of ticks and a quantity an integer
count of lots; floats never enter. Conversion happens once, at the edge, with ``Decimal`` and an
exact-grid check, so ``100.25`` on a 0.01 tick is 10025 ticks and ``100.255`` is an error.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

from .book import MATCHING_NAMES, STP_NAMES
from .errors import InvalidOrder, UnknownInstrument


def _dec(value: object, what: str) -> Decimal:
    try:
        d = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise InvalidOrder(f"{what} {value!r} is not a number") from None
    if not d.is_finite():
        raise InvalidOrder(f"{what} {value!r} is not a finite number")
    return d


@dataclass(frozen=True, slots=True)
class Instrument:
    """One tradable symbol: tick and lot sizes, a price band, a size cap, what happens when an
    account's order would trade with its own resting order (``stp``: one of ``book.STP_NAMES``), and
    how one price level is shared among resting orders (``matching``: ``"price-time"``, first come
    first filled, or ``"pro-rata"``, in proportion to size; ``book.MATCHING_NAMES``). Every node of a
    cluster must hold equal instruments: the fold follows these rules, so a node with another rule
    would make other trades from the same ops (nodes compare a venue fingerprint to catch it)."""

    symbol: str
    tick_size: Decimal = Decimal("0.01")
    lot_size: Decimal = Decimal("1")
    min_price: Decimal = Decimal("0.01")
    max_price: Decimal = Decimal("1000000")
    max_qty_lots: int = 1_000_000
    stp: str = "cancel-newest"
    matching: str = "price-time"

    def __post_init__(self) -> None:
        for name in ("tick_size", "lot_size", "min_price", "max_price"):
            object.__setattr__(self, name, _dec(getattr(self, name), name))
        if not self.symbol or len(self.symbol) > 32:
            raise ValueError(f"instrument symbol {self.symbol!r} must be 1-32 characters")
        if self.tick_size <= 0 or self.lot_size <= 0:
            raise ValueError(f"{self.symbol}: tick_size and lot_size must be positive")
        if not (0 < self.min_price <= self.max_price):
            raise ValueError(f"{self.symbol}: need 0 < min_price <= max_price")
        if self.max_qty_lots <= 0:
            raise ValueError(f"{self.symbol}: max_qty_lots must be positive")
        if self.stp not in STP_NAMES:
            raise ValueError(f"{self.symbol}: stp must be one of {', '.join(STP_NAMES)}, not {self.stp!r}")
        if self.matching not in MATCHING_NAMES:
            raise ValueError(f"{self.symbol}: matching must be one of {', '.join(MATCHING_NAMES)}, "
                             f"not {self.matching!r}")

    @property
    def min_ticks(self) -> int:
        return int(self.min_price / self.tick_size)

    @property
    def max_ticks(self) -> int:
        return int(self.max_price / self.tick_size)

    def price_to_ticks(self, price: object) -> int:
        """A user price (str, Decimal, int) to ticks; off the grid or the band is an error."""
        d = _dec(price, "price")
        ticks = d / self.tick_size
        if ticks != ticks.to_integral_value():
            raise InvalidOrder(f"price {d} is not a multiple of {self.symbol}'s tick size {self.tick_size}")
        t = int(ticks)
        self.check_ticks(t)
        return t

    def qty_to_lots(self, qty: object) -> int:
        """A user quantity to lots; off the lot grid, zero, negative or too large is an error."""
        d = _dec(qty, "quantity")
        lots = d / self.lot_size
        if lots != lots.to_integral_value():
            raise InvalidOrder(f"quantity {d} is not a multiple of {self.symbol}'s lot size {self.lot_size}")
        n = int(lots)
        self.check_lots(n)
        return n

    def check_ticks(self, ticks: int) -> None:
        if type(ticks) is not int:  # a float or a bool would become an op no peer can decode
            raise InvalidOrder(f"price must be an integer number of ticks, not {type(ticks).__name__} {ticks!r}")
        if not (self.min_ticks <= ticks <= self.max_ticks):
            raise InvalidOrder(
                f"price {self.ticks_to_price(ticks)} is outside {self.symbol}'s band "
                f"[{self.min_price}, {self.max_price}]")

    def check_lots(self, lots: int) -> None:
        if type(lots) is not int:
            raise InvalidOrder(f"quantity must be an integer number of lots, not {type(lots).__name__} {lots!r}")
        if lots <= 0:
            raise InvalidOrder("quantity must be positive")
        if lots > self.max_qty_lots:
            raise InvalidOrder(f"quantity {lots} lots exceeds {self.symbol}'s cap of {self.max_qty_lots} lots")

    def ticks_to_price(self, ticks: int) -> Decimal:
        return ticks * self.tick_size

    def lots_to_qty(self, lots: int) -> Decimal:
        return lots * self.lot_size

    def describe(self) -> dict[str, object]:
        """Every rule of this instrument, canonically (decimals normalized: a tick of ``0.50`` is
        the rule ``0.5``): what the venue fingerprint hashes and a refusal compares."""
        return {"tick_size": _canon(self.tick_size), "lot_size": _canon(self.lot_size),
                "min_price": _canon(self.min_price), "max_price": _canon(self.max_price),
                "max_qty_lots": self.max_qty_lots, "stp": self.stp, "matching": self.matching}

    def to_config(self) -> dict[str, object]:
        return {"symbol": self.symbol, "tick_size": str(self.tick_size), "lot_size": str(self.lot_size),
                "min_price": str(self.min_price), "max_price": str(self.max_price),
                "max_qty_lots": self.max_qty_lots, "stp": self.stp, "matching": self.matching}

    @classmethod
    def from_config(cls, raw: Mapping[str, object]) -> Instrument:
        known = {"symbol", "tick_size", "lot_size", "min_price", "max_price", "max_qty_lots", "stp", "matching"}
        extra = set(raw) - known
        if extra:
            raise ValueError(f"unknown instrument keys: {', '.join(sorted(extra))}")
        if "symbol" not in raw:
            raise ValueError("an instrument needs a symbol")
        return cls(**raw)  # type: ignore[arg-type]


DEFAULT_INSTRUMENT = Instrument("GBX")


def _canon(d: Decimal) -> str:
    return format(d.normalize(), "f")

@dataclass(frozen=True, slots=True)
class OrderRequest:
    """What a venue hook is shown: a NEW, or an AMEND with the order's new price and quantity, and
    who asks (``account``) with which request id (``req``)."""

    kind: str  # "new" or "amend"
    instrument: Instrument
    side: int
    price: int  # ticks (0 for a market order)
    qty: int  # lots (an amend: the new remaining quantity)
    account: str
    order_id: str = ""  # the order amended; "" for a new one
    req: str = ""


#: A venue-defined check run on every client NEW and AMEND before it is stamped (raise
#: ``InvalidOrder``): ``hook(request: OrderRequest)``, or the older ``hook(instrument, side,
#: price_ticks, qty_lots)``, which sees no account.
OrderHook = Callable[..., None]


@dataclass(slots=True)
class Venue:
    """The instruments a cluster trades, plus optional venue hooks.

    ``validate`` is called (through ``check``) on every NEW and AMEND at the node that stamps it,
    so venue rules (a max notional, a blocked account) reject bad input before it is replicated.
    Replicas never re-run it: the op-set, not the hook, is the source of truth, so every node must
    be given the same hook (strong mode runs it at the leader).

    Nodes check that they agree: ``describe()`` lists every instrument rule and the hooks' names
    and versions, ``fingerprint()`` hashes it, and a node refuses a peer whose fingerprint differs.
    A venue class names itself with ``name`` and ``version`` (class attributes); a hook function
    may carry a ``version`` attribute. Bump a version when its behaviour changes, so a node still
    running the old rules is refused rather than trading differently.
    """

    #: the venue's name in ``describe()`` ("" for the class's module and qualified name)
    name: ClassVar[str] = ""
    #: the version of the venue's rules; part of the fingerprint
    version: ClassVar[str] = ""

    instruments: dict[str, Instrument] = field(default_factory=lambda: {DEFAULT_INSTRUMENT.symbol: DEFAULT_INSTRUMENT})
    validate: OrderHook | None = None

    def check(self, req: OrderRequest) -> None:
        """Run the venue's hook on ``req`` (``InvalidOrder`` from the hook passes through)."""
        hook = self.validate
        if hook is None:
            return
        if _takes_request(hook):
            hook(req)
        else:  # the older four-argument form
            hook(req.instrument, req.side, req.price, req.qty)

    @classmethod
    def of(cls, instruments: Iterable[Instrument], validate: OrderHook | None = None) -> Venue:
        inst = {i.symbol: i for i in instruments}
        if not inst:
            raise ValueError("a venue needs at least one instrument")
        return cls(inst, validate)

    def describe(self) -> dict[str, Any]:
        """This venue as plain data, the same on every node that runs the same rules: its name and
        version, each hook's name and version, and every instrument's rules (``Instrument.describe``)."""
        cls = type(self)
        hooks = {"validate": _hook_id(self.validate)} if self.validate is not None else {}
        return {"venue": {"name": cls.name or f"{cls.__module__}.{cls.__qualname__}", "version": str(cls.version)},
                "hooks": hooks,
                "instruments": {s: self.instruments[s].describe() for s in sorted(self.instruments)}}

    def canonical(self) -> bytes:
        """``describe()`` as canonical JSON (sorted keys, no spaces): the bytes the fingerprint hashes."""
        return canonical_json(self.describe())

    def fingerprint(self) -> str:
        """A short hash (16 hex digits) of ``describe()``: equal on nodes with equal venues."""
        return fingerprint_of(self.canonical()).hex()

    def get(self, symbol: str) -> Instrument:
        try:
            return self.instruments[symbol]
        except KeyError:
            raise UnknownInstrument(
                f"unknown instrument {symbol!r}; this venue trades {', '.join(sorted(self.instruments))}") from None


def canonical_json(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def fingerprint_of(blob: bytes) -> bytes:
    """The 8-byte venue fingerprint of a canonical description."""
    return hashlib.blake2b(blob, digest_size=8).digest()


def _hook_id(hook: Callable[..., None]) -> dict[str, str]:
    """A hook's stable name (module and qualified name, the same in every process running the same
    code) and its ``version`` attribute ("" if none)."""
    named = hook if hasattr(hook, "__qualname__") else type(hook)
    return {"name": f"{getattr(named, '__module__', '?')}.{getattr(named, '__qualname__', '?')}",
            "version": str(getattr(hook, "version", ""))}


def _takes_request(hook: Callable[..., None]) -> bool:
    """Whether a hook takes one ``OrderRequest`` (else the older four positional arguments)."""
    try:
        params = [p for p in inspect.signature(hook).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
    except (TypeError, ValueError):
        return False
    return len(params) == 1
