"""The library surface of gossipbook, re-exported by ``gossipbook`` itself (``import gossipbook as g``).

``Node`` embeds a node in a trio program, ``Client`` trades for one account, ``Venue`` and
``Instrument`` describe what is traded; the events, errors and result types are the ones those
return. ``docs/library.md`` is the guide and the reference.
"""

from __future__ import annotations

from ..config import ClusterConfig
from ..core.book import Trade
from ..core.instrument import Instrument, Venue
from ..core.membership import MemberStateChanged
from ..core.ops import OpFenced, TradeExecuted, TradeRevised
from ..core.sequencer import RoleChanged
from ..node.transport import FaultFilter
from .client import BookWatch, Client, TradeWatch
from .cluster import load_config, local_cluster
from .errors import (
    AckTimeout,
    BadRequest,
    ClockOutOfSync,
    DuplicateRequest,
    GossipbookError,
    InvalidOrder,
    NoQuorum,
    NotOwner,
    NotReady,
    RateLimited,
    RequestFailed,
    RiskRefused,
    StorageUnavailable,
    UnknownInstrument,
    UnknownOrder,
    Unreachable,
    UsageError,
)
from .lifecycle import OrderAccepted, OrderAmended, OrderCancelled, OrderFilled, OrderRejected, OrderRested
from .node import EventFeed, Node
from .types import (
    AccountRisk,
    Ack,
    AckLevel,
    BookLevel,
    Fill,
    Missed,
    NodeStatus,
    Order,
    OrderBook,
    OrderType,
    RiskLimit,
    RiskReport,
    Side,
    TimeInForce,
    TradeFinal,
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
    "Unreachable", "UsageError", "Venue", "load_config", "local_cluster",
]
