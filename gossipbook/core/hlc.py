"""Hybrid logical clock (Kulkarni, Demirbas et al., 2014).

Theory of operation: a timestamp is ``(wall_ns, logical)``; ``wall_ns`` tracks the largest physical
time seen, ``logical`` counts events within one ``wall_ns``. Ops are totally ordered by
``(wall_ns, logical, node_id)``. Physical time is always passed in (``pt``), never read here.

Bounds (the wire carries ``logical <= 2**32``; DESIGN.md "One hostile frame harms nothing"):
- ``MAX_LOGICAL`` (2**31) is the largest logical this clock ever issues. When the next stamp would
  pass it, the clock moves ``wall`` on by 1 ns and restarts ``logical`` at 0: still strictly above
  every earlier stamp, and never an integer the wire cannot carry. Reaching it honestly takes 2**31
  events within one nanosecond of wall time, so only a stopped physical clock or a forged remote
  stamp adopted by a caller can get there; the 1 ns it then runs ahead of physical time is noise
  beside ``max_offset_ns``. Half the wire maximum leaves room for readers that add one to a stamp
  (a search for "just after ``t``") and for a remote stamp at ``MAX_REMOTE_LOGICAL`` plus increments.
- ``MAX_REMOTE_LOGICAL`` (2**24) is the largest logical accepted from a peer (``remote_ok``;
  ``receive`` refuses larger ones with ``RemoteError`` reason ``bound``, counted in
  ``refused_logical``). An honest logical counts the cluster's events while every node's wall is
  behind the fastest clock's, which lasts at most the largest honest clock offset (under
  ``max_offset_ns``, 500 ms): 2**24 events in 500 ms is 33 M ops/s, far above any cluster's fold
  rate, while a forged value at the wire maximum is refused.

Rules that hold:
- Every timestamp this clock issues is strictly greater than every one it issued or accepted before.
- Every timestamp this clock issues has ``logical <= MAX_LOGICAL``, whatever it was built with or
  had assigned to ``wall`` / ``logical`` (a state above the bound rolls over on the next stamp).
- ``wall`` follows physical time: it is ``max(last wall, pt)``, plus 1 ns per rollover.
- ``receive`` returns a timestamp greater than both the remote one and the local last one.
- A remote timestamp more than ``max_offset_ns`` ahead of ``pt`` is rejected with
  ``ClockOffsetError`` and counted in ``rejected``; one with ``logical > MAX_REMOTE_LOGICAL`` is
  rejected with ``RemoteError`` (reason ``bound``) and counted in ``refused_logical``; in
  both cases the clock is left unchanged, never adopts it.
"""

from __future__ import annotations

from typing import NamedTuple

from .errors import ClockOffsetError, RemoteError

DEFAULT_MAX_OFFSET_NS = 500_000_000  # 500 ms, CockroachDB's default
MAX_LOGICAL = 1 << 31  # the largest logical this clock issues (the wire allows 2**32)
MAX_REMOTE_LOGICAL = 1 << 24  # the largest logical accepted from a peer (see the module header)


class Timestamp(NamedTuple):
    """An HLC timestamp; compares lexicographically, which is the HLC order."""

    wall: int
    logical: int


ZERO = Timestamp(0, 0)


def remote_ok(ts: tuple[int, int]) -> bool:
    """True if a peer's stamp ``(wall, logical)`` has a logical this node may adopt (pure, no count).

    Callers that merge remote stamps without ``HLC.receive`` (the replica's batch admit) refuse a
    stamp for which this is False; the offset check on ``wall`` is separate (``HLC.check``)."""
    return 0 <= ts[1] <= MAX_REMOTE_LOGICAL


class HLC:
    """One node's hybrid logical clock."""

    __slots__ = ("node_id", "max_offset_ns", "wall", "logical", "rejected", "refused_logical")

    def __init__(self, node_id: str, max_offset_ns: int = DEFAULT_MAX_OFFSET_NS,
                 last: Timestamp = ZERO) -> None:
        if max_offset_ns <= 0:
            raise ValueError("max_offset_ns must be positive")
        self.node_id = node_id
        self.max_offset_ns = max_offset_ns
        self.wall, self.logical = last
        self.rejected = 0
        self.refused_logical = 0

    @property
    def last(self) -> Timestamp:
        """The latest timestamp issued or accepted (persisted so a restart never goes back)."""
        return Timestamp(self.wall, self.logical)

    def now(self, pt: int) -> Timestamp:
        """A timestamp for a local or send event at physical time ``pt`` (ns)."""
        if pt > self.wall:
            self.wall, self.logical = pt, 0
        elif self.logical < MAX_LOGICAL:
            self.logical += 1
        else:  # the counter would pass its bound: move on by 1 ns instead (see the module header)
            self.wall, self.logical = self.wall + 1, 0
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
        if not remote_ok(remote):
            self.refused_logical += 1
            raise RemoteError(f"remote timestamp logical {remote[1]} is above {MAX_REMOTE_LOGICAL}",
                              reason="bound")
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
        if lg > MAX_LOGICAL:  # only a local state already at the bound gets here: roll over
            w, lg = w + 1, 0
        self.wall, self.logical = w, lg
        return Timestamp(w, lg)
