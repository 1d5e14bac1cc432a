"""The two kinds of error the core raises, after h11's Local/RemoteProtocolError split.

- ``RemoteError``: a *peer* sent something wrong (bad frame, a clock too far ahead, a fenced op).
  The shell drops the input and counts it by ``reason``; the core's state is unchanged.
- ``UsageError``: the *caller* (a client, the CLI, a library user) asked for something invalid
  (an order off the price band, an unknown order). The message is one line a user can act on.
"""

from __future__ import annotations


class GossipbookError(Exception):
    """Base of every error the package raises on purpose."""


class RemoteError(GossipbookError):
    """Input from the network was rejected; ``reason`` is a short stable counter key."""

    reason = "remote"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class WireError(RemoteError):
    """A frame could not be authenticated, parsed or validated."""

    reason = "malformed"


class ClockOffsetError(RemoteError):
    """A remote HLC timestamp is further ahead of local physical time than ``max_offset`` allows."""

    reason = "clock_offset"


class UsageError(GossipbookError):
    """The caller asked for something invalid; nothing was changed."""


class InvalidOrder(UsageError):
    """An order's fields break the instrument's rules (grid, band, size)."""


class UnknownOrder(UsageError):
    """A cancel or amend names an order this node does not hold."""


class NotOwner(UsageError):
    """A cancel or amend names an order of another account."""


class DuplicateRequest(UsageError):
    """A NEW reuses the request id of an order this node placed and has since compacted away."""


class UnknownInstrument(UsageError):
    """An op names an instrument the venue does not define."""


class ClockOutOfSync(UsageError):
    """This node's clock is too far from its peers' median to stamp client orders."""
