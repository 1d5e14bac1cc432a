"""gossipbook: replicated trading order books.

The pure core (``gossipbook.core``) holds every state machine; ``gossipbook.node`` is the trio shell
that feeds it real sockets and time, ``gossipbook.sim`` feeds it virtual ones.

The library surface (``gossipbook.api``) is exported here: ``Venue``, ``Instrument``, ``Node``,
``Client``, the events, errors and result types (docs/library.md). They load on first use, so
``import gossipbook.core`` stays free of trio and sockets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._compiled import compiled as compiled
from ._compiled import select as _select_build

__version__ = "0.1.0"

# the compiled fold or the pure-Python one (``_compiled.py``): decided before any core module loads
_select_build()

if TYPE_CHECKING:
    from .api import (
        AccountRisk,
        Ack,
        AckLevel,
        AckTimeout,
        BadRequest,
        BookLevel,
        BookWatch,
        Client,
        ClockOutOfSync,
        ClusterConfig,
        DuplicateRequest,
        EventFeed,
        FaultFilter,
        Fill,
        GossipbookError,
        Instrument,
        InvalidOrder,
        MemberStateChanged,
        Missed,
        Node,
        NodeStatus,
        NoQuorum,
        NotOwner,
        NotReady,
        OpFenced,
        Order,
        OrderAccepted,
        OrderAmended,
        OrderBook,
        OrderCancelled,
        OrderFilled,
        OrderRejected,
        OrderRested,
        OrderType,
        RateLimited,
        RequestFailed,
        RiskLimit,
        RiskRefused,
        RiskReport,
        RoleChanged,
        Side,
        StorageUnavailable,
        TimeInForce,
        Trade,
        TradeExecuted,
        TradeFinal,
        TradeRevised,
        TradeWatch,
        UnknownInstrument,
        UnknownOrder,
        Unreachable,
        UsageError,
        Venue,
        load_config,
        local_cluster,
    )

__all__ = [
    "AccountRisk", "Ack", "AckLevel", "AckTimeout", "BadRequest", "BookLevel", "BookWatch", "Client", "ClockOutOfSync", "ClusterConfig",
    "DuplicateRequest",
    "EventFeed", "FaultFilter", "Fill", "GossipbookError", "Instrument", "InvalidOrder", "MemberStateChanged",
    "Missed", "NoQuorum", "Node", "NodeStatus", "NotOwner", "NotReady", "OpFenced", "Order", "OrderAccepted",
    "OrderAmended", "OrderBook", "OrderCancelled", "OrderFilled", "OrderRejected", "OrderRested",
    "OrderType", "RateLimited", "RequestFailed", "RiskLimit", "RiskRefused", "RiskReport",
    "RoleChanged", "Side", "StorageUnavailable", "TimeInForce",
    "Trade", "TradeExecuted", "TradeFinal", "TradeRevised", "TradeWatch", "UnknownInstrument", "UnknownOrder",
    "Unreachable", "UsageError", "Venue", "__version__", "load_config", "local_cluster",
]


def __getattr__(name: str) -> Any:
    if name in __all__ and name != "__version__":
        from . import api

        value = getattr(api, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'gossipbook' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
