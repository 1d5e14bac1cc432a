"""Hybrid logical clock (Kulkarni, Demirbas et al., 2014).

Theory of operation: a timestamp is ``(wall_ns, logical)``; ``wall_ns`` tracks the largest physical
time seen, ``logical`` counts events within one ``wall_ns``. Ops are totally ordered by
``(wall_ns, logical, node_id)``. Physical time is always passed in (``pt``), never read here.

Rules that hold:
- Every timestamp this clock issues is strictly greater than every one it issued or accepted before.
- ``receive`` returns a timestamp greater than both the remote one and the local last one.
- A remote timestamp more than ``max_offset_ns`` ahead of ``pt`` is rejected with
  ``ClockOffsetError`` and counted in ``rejected``; the clock is left unchanged, never adopts it.
"""

from __future__ import annotations

from typing import NamedTuple

from .errors import ClockOffsetError

DEFAULT_MAX_OFFSET_NS = 500_000_000  # 500 ms, CockroachDB's default


class Timestamp(NamedTuple):
    """An HLC timestamp; compares lexicographically, which is the HLC order."""

    wall: int
    logical: int


ZERO = Timestamp(0, 0)


class HLC:
    """One node's hybrid logical clock."""

    __slots__ = ("node_id", "max_offset_ns", "wall", "logical", "rejected")

    def __init__(self, node_id: str, max_offset_ns: int = DEFAULT_MAX_OFFSET_NS,
                 last: Timestamp = ZERO) -> None:
        if max_offset_ns <= 0:
            raise ValueError("max_offset_ns must be positive")
        self.node_id = node_id
        self.max_offset_ns = max_offset_ns
        self.wall, self.logical = last
        self.rejected = 0

    @property
    def last(self) -> Timestamp:
        """The latest timestamp issued or accepted (persisted so a restart never goes back)."""
        return Timestamp(self.wall, self.logical)

    def now(self, pt: int) -> Timestamp:
        """A timestamp for a local or send event at physical time ``pt`` (ns)."""
        if pt > self.wall:
            self.wall, self.logical = pt, 0
        else:
            self.logical += 1
        return Timestamp(self.wall, self.logical)

    send = now

    def check(self, remote: Timestamp, pt: int) -> None:
        """Raise ``ClockOffsetError`` (and count it) if ``remote`` is too far ahead of ``pt``."""
        if remote[0] - pt > self.max_offset_ns:
            self.rejected += 1
            raise ClockOffsetError(
                f"remote timestamp {remote[0]} is {(remote[0] - pt) / 1e6:.3f} ms ahead of local "
                f"physical time (max offset {self.max_offset_ns / 1e6:.3f} ms)")

    def receive(self, remote: Timestamp, pt: int) -> Timestamp:
        """Merge a remote timestamp at physical time ``pt``; returns the new local timestamp."""
        self.check(remote, pt)
        rw, rl = remote
        w = max(self.wall, rw, pt)
        if w == self.wall and w == rw:
            lg = max(self.logical, rl) + 1
        elif w == self.wall:
            lg = self.logical + 1
        elif w == rw:
            lg = rl + 1
        else:
            lg = 0
        self.wall, self.logical = w, lg
        return Timestamp(w, lg)
