"""The library's exceptions: one hierarchy rooted in ``GossipbookError``.

``UsageError`` and its subclasses mean the caller asked for something invalid (nothing changed);
``RequestFailed`` and its subclasses mean a node could not do a valid request now (no quorum, not
ready, storage, rate limit, no answer): retrying later may succeed. Errors from a node's reply carry
``code`` (the wire's reply code), ``node`` and ``order_id`` / ``level`` where the reply had them.
The core's own errors (``InvalidOrder``, ``UnknownOrder``, ``NotOwner``, ``RiskRefused``, ...) are re-used as they are,
so one ``except gossipbook.InvalidOrder`` catches a refusal whether the grid check ran in this
process or at the node.
"""

from __future__ import annotations

from typing import Any

from ..core.errors import (
    ClockOutOfSync,
    DuplicateRequest,
    GossipbookError,
    InvalidOrder,
    NotOwner,
    UnknownInstrument,
    UnknownOrder,
    UsageError,
)
from ..core.risk import RiskRefused


class RequestFailed(GossipbookError):
    """A node could not carry out a valid request now; ``code`` is the reply code (0-255, or -1 when
    no reply came)."""

    code = -1


class NoQuorum(RequestFailed):
    """The order could not reach a majority (strong mode: no leader, or a minority side)."""

    code = 4


class AckTimeout(RequestFailed):
    """The node accepted the request but the asked-for level was not reached in time; ``order_id``
    and ``level`` say how far it got (the order stands)."""

    code = 5


class StorageUnavailable(RequestFailed):
    """The node cannot persist orders now (disk full or read-only); reads still work."""

    code = 7


class NotReady(RequestFailed):
    """The node is catching up with its peers after start; ``await node.ready()`` or retry shortly."""

    code = 9


class RateLimited(RequestFailed):
    """The node's per-account request rate was exceeded."""

    code = 11


class ClockUncertain(RequestFailed):
    """The node's clock error bound is not known yet (just started) or is over its
    ``max_clock_error_us``; it stamps no new order or amend until it is (cancels still go)."""

    code = 13


class Unreachable(RequestFailed):
    """No answer from the node within the timeout (not running, wrong address, or it does not know
    this account's credential)."""


class BadRequest(UsageError):
    """The node refused the request as malformed (reply code 8)."""


#: reply code -> the exception a client raises for it
_BY_CODE: dict[int, type[GossipbookError]] = {
    1: InvalidOrder, 2: UnknownOrder, 3: ClockOutOfSync, 4: NoQuorum, 5: AckTimeout, 6: UnknownInstrument,
    7: StorageUnavailable, 8: BadRequest, 9: NotReady, 10: NotOwner, 11: RateLimited, 13: ClockUncertain,
    14: RiskRefused,  # a risk limit or the kill switch (core/risk.py ``E_RISK``)
}


def from_reply(code: int, message: str, *, node: str, order_id: str = "", level: Any = None) -> GossipbookError:
    """The exception for a reply with ``code`` != 0, with ``code``, ``node``, ``order_id`` and
    ``level`` set on it."""
    cls = _BY_CODE.get(code, RequestFailed)
    err = cls(f"{message} (node {node})" if message else f"request refused by node {node} (code {code})")
    err.code = code  # type: ignore[attr-defined]
    err.node = node  # type: ignore[attr-defined]
    err.order_id = order_id  # type: ignore[attr-defined]
    err.level = level  # type: ignore[attr-defined]
    return err


__all__ = [
    "AckTimeout", "BadRequest", "ClockOutOfSync", "ClockUncertain", "DuplicateRequest", "GossipbookError", "InvalidOrder", "NoQuorum",
    "NotOwner", "NotReady", "RateLimited", "RequestFailed", "RiskRefused", "StorageUnavailable", "UnknownInstrument",
    "UnknownOrder", "Unreachable", "UsageError",
]
