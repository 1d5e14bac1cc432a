"""Clock offset estimation from probe/ack timestamps (NTP's on-wire calculation).

Theory of operation
-------------------
Every probe/ack exchange with a peer yields four timestamps, each read on the clock of the node
that took it:

    t1  we send the probe          (our clock)
    t2  the peer receives it       (peer's clock)
    t3  the peer sends the ack     (peer's clock)
    t4  we receive the ack         (our clock)

If the peer's clock reads ``theta`` more than ours and the two one-way delays are ``d1`` (out) and
``d2`` (back), then ``t2 = t1 + d1 + theta`` and ``t4 = t3 + d2 - theta``, so

    offset = ((t2 - t1) + (t3 - t4)) / 2  = theta + (d1 - d2) / 2
    rtt    = (t4 - t1) - (t3 - t2)        = d1 + d2

The error ``(d1 - d2) / 2`` is unknown (the delays cannot be told apart) but it is bounded:
``|offset - theta| <= rtt / 2``, whatever the asymmetry. That bound is the ``uncertainty`` we
report, and it is why we keep the last ``window`` samples per peer and report from the one with the
*lowest* RTT: the shortest round trip has the tightest bound (NTP's clock filter, simplified).

Rules that hold:
- Everything is an integer number of nanoseconds. The offset is floored and the uncertainty is
  ``ceil(rtt / 2)``, so the bound still holds exactly after rounding.
- A sample with a negative RTT (the peer claims it held the probe longer than the whole round
  trip, or timestamps run backwards) cannot come from honest clocks; it is dropped and counted in
  ``rejected``, never stored. ``add_sample`` does not raise, so a driver feeding samples from
  membership events cannot be stopped by one bad peer.
- ``offset`` is *peer minus us*: positive means the peer's clock is ahead of ours.
- No drift model here: a sample ages out only when ``window`` newer ones arrive. With probes every
  few hundred ms and drift in the ppm range this costs far less than the delay asymmetry does.
  What needs a *proof* of the error (the order gate, the audit trail) asks ``bound``: a
  ``clockbound.ClockBound`` fed the same samples, which models drift and answers an interval
  against the cluster's time reference. ``ClockSync`` without one (strong mode) refuses nothing.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from .clockbound import ClockBound


@dataclass(frozen=True, slots=True)
class PeerClock:
    """Our best estimate of one peer's clock, from its lowest-RTT recent sample."""

    offset_ns: int  # peer clock minus our clock
    uncertainty_ns: int  # |offset_ns - true offset| <= uncertainty_ns (= ceil(rtt / 2))
    rtt_ns: int  # round trip of the sample the estimate comes from
    samples: int  # samples currently in the window


@dataclass(frozen=True, slots=True)
class _Sample:
    offset: int
    rtt: int


class ClockSync:
    """Per-peer offset estimates and the "is my own clock usable" verdict."""

    __slots__ = ("window", "rejected", "_samples", "bound")

    def __init__(self, window: int = 8, bound: ClockBound | None = None) -> None:
        if window < 1:
            raise ValueError("window must be at least 1 sample")
        self.window = window
        self.rejected = 0
        self._samples: dict[str, deque[_Sample]] = {}
        #: the interval clock the order gate and the audit trail read (None: no gate)
        self.bound = bound

    def add_sample(self, peer: str, t1: int, t2: int, t3: int, t4: int) -> bool:
        """Record one exchange with ``peer``; returns False (and counts it) if it is impossible."""
        rtt = (t4 - t1) - (t3 - t2)
        if rtt < 0 or t4 < t1 or t3 < t2:
            self.rejected += 1
            return False
        offset = ((t2 - t1) + (t3 - t4)) // 2
        q = self._samples.get(peer)
        if q is None:
            q = self._samples[peer] = deque(maxlen=self.window)
        q.append(_Sample(offset, rtt))
        if self.bound is not None:
            self.bound.add_sample(peer, t1, t2, t3, t4)
        return True

    def refusal(self, now: int) -> str | None:
        """Why an order must be refused for the clock's error bound now (one line), or None."""
        return None if self.bound is None else self.bound.refusal(now)

    def estimate(self, peer: str) -> PeerClock | None:
        """The estimate from the lowest-RTT sample in the window (newest wins ties); None if none."""
        q = self._samples.get(peer)
        if not q:
            return None
        best = q[-1]
        for s in reversed(q):
            if s.rtt < best.rtt:
                best = s
        return PeerClock(best.offset, (best.rtt + 1) // 2, best.rtt, len(q))

    def estimates(self) -> dict[str, PeerClock]:
        """Every peer with at least one sample, sorted by id (for the TUI and the audit log)."""
        out: dict[str, PeerClock] = {}
        for peer in sorted(self._samples):
            est = self.estimate(peer)
            if est is not None:
                out[peer] = est
        return out

    def forget(self, peer: str) -> None:
        """Drop a peer's samples (it left or was removed; a dead clock must not vote)."""
        self._samples.pop(peer, None)
        if self.bound is not None:
            self.bound.forget(peer)

    def median_offset(self) -> int | None:
        """Median of the peers' offsets relative to us (mean of the middle two if even); None if no peers.

        Our own clock sits ``-median`` from the peers' median clock, so ``abs(median)`` is how far
        off *we* are by the majority's reckoning; one wild peer cannot move it far.
        """
        offs = sorted(e.offset_ns for e in self.estimates().values())
        if not offs:
            return None
        mid = len(offs) // 2
        if len(offs) % 2:
            return offs[mid]
        return (offs[mid - 1] + offs[mid]) // 2

    def in_sync(self, max_offset_ns: int) -> bool:
        """Whether our clock is within ``max_offset_ns / 2`` of the cluster's median (DESIGN: Time).

        A node that is out of sync stops stamping client orders. With no samples yet there is
        nothing to be out of sync with, so a lone node (or one just booted) counts as in sync.
        """
        med = self.cluster_median_offset()
        return med is None or 2 * abs(med) <= max_offset_ns

    def cluster_median_offset(self) -> int | None:
        """Median offset of every clock in the cluster relative to ours, ours (0) included.

        With two peers the peers-only median is their mean, and one wild peer would take the
        healthy nodes out of sync too; counting our own clock lets the majority decide.
        """
        if not self._samples:
            return None
        offs = sorted([0] + [e.offset_ns for e in self.estimates().values()])
        mid = len(offs) // 2
        return offs[mid] if len(offs) % 2 else (offs[mid - 1] + offs[mid]) // 2
