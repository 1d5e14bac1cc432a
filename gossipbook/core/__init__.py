"""The pure core: every state machine, no I/O, no clock reads, no unseeded randomness.

Imports nothing outside this package and the standard library / msgpack / sortedcontainers; a
test walks the imports to keep it so.
"""

from .book import BUY, FOK, GTC, IOC, MARKET, SELL, Book, Trade
from .errors import (
    ClockOffsetError,
    ClockOutOfSync,
    GossipbookError,
    InvalidOrder,
    RemoteError,
    UnknownInstrument,
    UnknownOrder,
    UsageError,
    WireError,
)
from .hlc import HLC, Timestamp
from .instrument import DEFAULT_INSTRUMENT, Instrument, Venue
from .ops import AMEND, CANCEL, NEW, Op, OpFenced, TradeExecuted, TradeRevised
from .replica import Replica, Snapshot

__all__ = [
    "AMEND", "BUY", "CANCEL", "DEFAULT_INSTRUMENT", "FOK", "GTC", "HLC", "IOC", "MARKET", "NEW", "SELL",
    "Book", "ClockOffsetError", "ClockOutOfSync", "GossipbookError", "Instrument", "InvalidOrder", "Op",
    "OpFenced", "RemoteError", "Replica", "Snapshot", "Timestamp", "Trade", "TradeExecuted", "TradeRevised",
    "UnknownInstrument", "UnknownOrder", "UsageError", "Venue", "WireError",
]
