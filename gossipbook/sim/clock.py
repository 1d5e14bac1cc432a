"""Virtual time and the physical clocks the simulated nodes read.

Theory of operation
-------------------
The simulator has one true time, ``t``: integer nanoseconds, starting at ``T0`` (a realistic epoch,
so clock values look like ``time.time_ns()``). No node ever sees it. Each node reads its own
``NodeClock``, which turns true time into what that host's wall clock would say:

    local(t) = quantize(t + skew + (t - T0) * drift_ppb / 1e9)

- ``skew`` is a fixed offset (an unsynchronised host); ``step`` changes it at run time (an NTP step:
  the clock jumps, possibly backwards).
- ``drift_ppb`` is a rate error in parts per billion (a quartz crystal is off by tens of ppm).
- ``resolution_ns`` quantizes the reading (a coarse OS clock: 1 µs, 1 ms, Windows' 15.6 ms). Coarse
  clocks make many HLC timestamps tie on ``wall``, which is what exercises the origin tie-break.

Rules that hold:
- ``read`` is monotonic non-decreasing in ``t`` between steps (drift is far above -1e9 ppb).
- ``when(local, not_before)`` is the earliest true time ``>= not_before`` at which ``read`` reaches
  ``local``: the simulator turns a node's ``next_deadline()`` (on its own clock) into an event time.
"""

from __future__ import annotations

from dataclasses import dataclass

T0 = 1_700_000_000 * 10**9  # the true time at which every simulation starts (2023-11-14)
SEC = 10**9
MS = 10**6
US = 10**3


@dataclass(slots=True)
class NodeClock:
    """One host's physical clock as a function of true time."""

    skew_ns: int = 0
    drift_ppb: int = 0
    resolution_ns: int = 1

    def __post_init__(self) -> None:
        if self.resolution_ns < 1:
            raise ValueError("clock resolution must be at least 1 ns")
        if not -SEC // 10 < self.drift_ppb < SEC // 10:
            raise ValueError("drift must be within +-10% (100_000_000 ppb)")

    def read(self, t: int) -> int:
        x = t + self.skew_ns + (t - T0) * self.drift_ppb // SEC
        r = self.resolution_ns
        return x - x % r if r > 1 else x

    def when(self, local: int, not_before: int) -> int:
        """Earliest true time ``>= not_before`` at which this clock reads ``>= local``."""
        if self.read(not_before) >= local:
            return not_before
        r = self.resolution_ns
        target = -(-local // r) * r  # the first reading >= local that the clock can show
        # invert the affine part, then correct the integer rounding by a short search
        u = (target - self.skew_ns - T0) * SEC // (SEC + self.drift_ppb)
        t = max(T0 + u - 2, not_before)
        step = 1
        while self.read(t) < local:  # rarely more than one or two iterations
            t += step
            step *= 2
        lo, hi = max(not_before, t - step), t
        while lo < hi:  # the smallest t in (lo, hi] with read(t) >= local
            mid = (lo + hi) // 2
            if self.read(mid) >= local:
                hi = mid
            else:
                lo = mid + 1
        return hi

    def step(self, delta_ns: int) -> None:
        """Jump the clock by ``delta_ns`` (negative: backwards), as an NTP step does."""
        self.skew_ns += delta_ns

    def offset_at(self, t: int) -> int:
        """How far this clock is from true time at ``t`` (before quantization)."""
        return self.skew_ns + (t - T0) * self.drift_ppb // SEC
