"""Time as an interval: how far this node's clock may be from the cluster's time reference.

Theory of operation
-------------------
A clock reading is only useful with its error (AWS ClockBound, Meta's fbclock, Spanner's TrueTime):
``read(now)`` answers ``(earliest, latest, status)``: the reference's clock reads somewhere in
``[earliest, latest]`` when ours reads ``now``, or ``status`` says we cannot tell. The reference is
a configured member (``time_source``, whose clock the operator keeps UTC-traceable) or, with none
configured, the median of every member's clock (ours included).

**One sample.** A probe/ack exchange gives four timestamps (``clocksync``): ``t1`` (we send, our
clock), ``t2`` / ``t3`` (the peer receives / answers, its clock), ``t4`` (we receive, our clock).
Whatever the two one-way delays are (both >= 0), the peer's offset ``theta`` (peer minus us) at the
moments the peer read its clock satisfies, exactly and in integers,

    t3 - t4  <=  theta  <=  t2 - t1          (width: the round trip, so the bound is rtt / 2)

which holds at some instant between ``t1`` and ``t4`` on our clock. Queueing only widens it, and
so does any time a node spends between a datagram and its clock reading: the shell takes ``t2`` /
``t4`` from the kernel's receive time and ``t1`` / ``t3`` just before the send (membership's
``rx_ns`` and ``probe_sent``), each on the side of its event that keeps the inequality true.

**Drift.** Two samples far enough apart (``min_span_ns``) bound the average rate at which the
offset moves: for samples ``a`` before ``b``, ``slope in [(b.lo - a.hi) / D, (b.hi - a.lo) / D]``
with ``D`` the time between them (taken at its least or most, whichever widens the range). The
intersection over every such pair in the window is ``S``, the measured drift: sound as long as the
drift is constant over the window (a quartz oscillator's wanders by far less than the measurement
resolves in 16 samples). The reported ``drift_ppm`` is a least-squares fit over the samples with
the lowest round trips (the ones not delayed by queueing), kept inside ``S``. Before two samples are
far enough apart, and always as an outer limit, ``S`` is within ``+-MAX_PLAUSIBLE_DRIFT_PPM`` (1000
ppm, 86 s a day: no working pair of clocks drifts apart faster), so one sample is enough to start.

**The interval.** Every sample in the window is carried to the newest one's time ``T`` at the
measured drift (``S``, widened the way that loosens it) and the intervals are intersected, so an old
sample with a short round trip and a fresh one with a long one both count; the intersection can be
narrower than any one sample. After ``T`` the offset may move at any rate in
``R = [S.lo - max_drift, S.hi + max_drift]``: ``max_drift_ppm`` (default 50) is how far the rate may
stray from the measured drift before the next sample says so (temperature, ageing; far more than a
quartz oscillator does in seconds, so the bound stays honest through minutes of silence). A read is
O(1): the interval at ``T`` and ``R`` are kept per new sample.

**Status.** ``unsynced`` until the first sample (no bound is claimed, so a node that started a
moment ago refuses orders instead of guessing), and after our clock reads earlier than the newest
sample (it stepped back). ``synced`` while the newest sample is younger than ``stale_ns``, then
``free-running`` (the bound keeps growing at ``R``; the gate closes when it passes the limit).

**The model's check.** If the samples contradict each other (``S`` empty, or the predictions'
intersection empty) a clock stepped (ours or the reference's) or the drift was not constant over
the window: the oldest samples are dropped until the rest agree (``clock_resets``).
A step smaller than the bound can go unnoticed: the model assumes clocks are slewed, not stepped.

**Median reference.** Each peer's interval comes from its own filter, ours is ``[0, 0]`` and a peer
with no interval yet is ``(-inf, +inf)``; the median is monotone in every clock, so the true median
lies between the median of the lower ends and the median of the upper ends (the mean of the middle
two when the count is even). One wild or silent clock cannot move it far.

Rules that hold:
- Pure: time is the ``now`` passed in (this node's clock, ns), no clock is read here.
- Integers throughout (drift in ppb, rounded outwards), so the interval holds after rounding.
- A peer's sample is bounded before use: offsets beyond ``MAX_SAMPLE_OFFSET_NS`` or round trips
  beyond ``MAX_SAMPLE_RTT_NS`` are refused and counted (``clock_samples_refused``); memory is
  ``window`` samples per member.
- The HLC's max-offset rule (``clocksync.in_sync``) is separate and still applies.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

UNSYNCED, SYNCED, FREE_RUNNING = "unsynced", "synced", "free-running"
#: the reply code of an order refused because the clock's error bound is over the limit (or unknown)
E_CLOCK_BOUND = 13
PPB = 1_000_000_000
US, MS, SEC = 1_000, 1_000_000, 1_000_000_000
MAX_SAMPLE_OFFSET_NS = 86_400 * SEC  # a peer claiming a clock a day away from ours is not believed
MAX_SAMPLE_RTT_NS = 10 * SEC
QUEUE_SLACK_NS = 20 * US  # a sample is "queued" beyond 2 x the window's least round trip + this
MAX_QUEUED_IN_A_ROW = 3  # then it is kept anyway: the path itself may have become slower
RTS25_HFT_NS = 100 * US  # MiFID II RTS 25, HFT: within 100 µs of UTC
MAX_PLAUSIBLE_DRIFT_PPB = 1_000_000  # 1000 ppm: the drift range before (and beyond) any measurement

#: deliberate mutations for the clock checker (``gossipbook clock check --break``): each removes
#: one mechanism the bound relies on, and the checker must catch it
BREAKS: dict[str, str] = {
    "no-drift": "clocks are taken not to drift: no measured drift, no growth since a sample",
    "rtt-not-halved": "a sample's offset subtracts the whole round trip from t2 - t1, not half of it",
}


@dataclass(frozen=True, slots=True)
class ClockConfig:
    """How a node bounds its clock error and when it refuses orders for it."""

    #: the member whose clock is the reference ("" : the median of all members' clocks)
    time_source: str = ""
    #: how far the clock's rate may stray from the measured drift after the newest sample (ppm)
    max_drift_ppm: float = 50.0
    #: refuse orders while the bound is over this (None: never refuse; cluster.toml defaults to 1 ms)
    max_error_ns: int | None = None
    window: int = 16  # samples kept per member
    min_span_ns: int = 150 * MS  # two samples at least this far apart measure the drift
    stale_ns: int = 5 * SEC  # no sample for this long: free-running
    breaks: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if not 0 <= self.max_drift_ppm <= 100_000:
            raise ValueError("max_drift_ppm must be within 0..100000")
        if self.max_error_ns is not None and self.max_error_ns < 1:
            raise ValueError("max_clock_error must be positive")
        if self.window < 2 or self.min_span_ns < 1 or self.stale_ns < 1:
            raise ValueError("clock window must be at least 2 samples and its spans positive")
        unknown = set(self.breaks) - set(BREAKS)
        if unknown:
            raise ValueError(f"unknown clock break(s): {', '.join(sorted(unknown))}")

    @property
    def max_drift_ppb(self) -> int:
        return round(self.max_drift_ppm * 1000)


class ClockReading(NamedTuple):
    """What ``ClockBound.read(now)`` answers. Offsets are reference minus this node's clock."""

    earliest: int  # the reference's clock reads at least this when ours reads ``now`` (0 if unsynced)
    latest: int  # ... and at most this
    status: str  # unsynced | synced | free-running
    offset_ns: int  # the middle of the interval, minus ``now`` (0 if unsynced)
    bound_ns: int  # half the interval's width, rounded up (-1 if unsynced: unknown)
    drift_ppb: int  # our clock's drift against the reference, as measured (reference minus us, per s)

    @property
    def utc_ns(self) -> int:
        """The reference's (UTC-traceable) time now: the middle of the interval."""
        return (self.earliest + self.latest) // 2


class _Sample(NamedTuple):
    t1: int  # our clock, probe sent
    t4: int  # our clock, ack received
    lo: int  # peer minus us, at least (at some instant within [t1, t4])
    hi: int  # ... and at most


def _floor_mul(rate_ppb: int, dt: int) -> int:
    return rate_ppb * dt // PPB


def _ceil_mul(rate_ppb: int, dt: int) -> int:
    return -(-rate_ppb * dt // PPB)


class PeerFilter:
    """One member's samples and what they say about its clock against ours."""

    __slots__ = ("samples", "queued", "resets", "_skipped", "_dirty", "_rate", "_edge", "_drift")

    def __init__(self, window: int) -> None:
        self.samples: deque[_Sample] = deque(maxlen=window)
        self.queued = 0
        self.resets = 0
        self._skipped = 0
        self._dirty = False
        self._rate: tuple[int, int] | None = None  # (lo, hi) ppb: how fast the offset may move after ``_edge``
        self._edge: tuple[int, int, int] | None = None  # (T, lo, hi): the window's interval at its newest t4
        self._drift = 0

    def add(self, t1: int, t2: int, t3: int, t4: int, cfg: ClockConfig) -> bool:
        """Keep one exchange; False if it was skipped as delayed by queueing (counted)."""
        if "rtt-not-halved" in cfg.breaks:
            rtt = (t4 - t1) - (t3 - t2)
            mid, half = t2 - t1 - rtt, -(-rtt // 2)
            lo, hi = mid - half, mid + half
        else:
            lo, hi = t3 - t4, t2 - t1
        s = self.samples
        if s and t4 < s[-1].t4:  # our clock stepped back: what the window says no longer holds
            s.clear()
            self.resets += 1
        if s:
            least = min(x.hi - x.lo for x in s)
            if hi - lo > 2 * least + QUEUE_SLACK_NS and self._skipped < MAX_QUEUED_IN_A_ROW:
                self._skipped += 1
                self.queued += 1
                return False
        self._skipped = 0
        s.append(_Sample(t1, t4, lo, hi))
        self._dirty = True
        return True

    # ---- the fit ---------------------------------------------------------------------------------
    @staticmethod
    def _lower(s: _Sample, r: int, now: int) -> int:
        return s.lo + _floor_mul(r, now - (s.t4 if r >= 0 else s.t1))

    @staticmethod
    def _upper(s: _Sample, r: int, now: int) -> int:
        return s.hi + _ceil_mul(r, now - (s.t1 if r >= 0 else s.t4))

    def _refresh(self, cfg: ClockConfig) -> None:
        """Fit the window: drop the oldest samples while the rest contradict each other."""
        self._dirty = False
        samples = list(self.samples)
        dropped = False
        no_drift = "no-drift" in cfg.breaks
        rho = 0 if no_drift else cfg.max_drift_ppb
        while True:
            if no_drift:
                slopes = (0, 0)
            else:
                m = self._slopes(samples, cfg.min_span_ns)
                cap = MAX_PLAUSIBLE_DRIFT_PPB
                slopes = (-cap, cap) if m is None else (max(m[0], -cap), min(m[1], cap))
            ok = slopes[0] <= slopes[1]
            edge = None
            if ok:
                # every sample, carried to the newest one's time at the measured drift
                at = samples[-1].t4
                lo = max(self._lower(x, slopes[0], at) for x in samples)
                hi = min(self._upper(x, slopes[1], at) for x in samples)
                ok = lo <= hi
                edge = (at, lo, hi)
            if ok or len(samples) == 1:
                break
            samples.pop(0)
            dropped = True
        if dropped:
            self.resets += 1
            self.samples = deque(samples, maxlen=self.samples.maxlen)
        self._edge = edge if ok else None
        self._rate = None if self._edge is None else (slopes[0] - rho, slopes[1] + rho)
        self._drift = self._fit_drift(samples, slopes) if ok else 0

    @staticmethod
    def _slopes(samples: list[_Sample], min_span: int) -> tuple[int, int] | None:
        """The drift range (ppb) every pair at least ``min_span`` apart allows; None if no pair is.
        Empty (lo > hi) when the samples contradict a constant drift."""
        lo_s: int | None = None
        hi_s: int | None = None
        n = len(samples)
        for j in range(1, n):
            b = samples[j]
            for i in range(j):
                a = samples[i]
                dmin = b.t1 - a.t4
                if dmin < min_span:
                    break  # samples are in time order: every later i is closer still
                dmax = b.t4 - a.t1
                x = b.lo - a.hi
                y = b.hi - a.lo
                s_lo = x * PPB // (dmax if x >= 0 else dmin)
                s_hi = -(-y * PPB // (dmin if y >= 0 else dmax))
                if lo_s is None or s_lo > lo_s:
                    lo_s = s_lo
                if hi_s is None or s_hi < hi_s:
                    hi_s = s_hi
        if lo_s is None or hi_s is None:
            return None
        return lo_s, hi_s

    @staticmethod
    def _fit_drift(samples: list[_Sample], slopes: tuple[int, int]) -> int:
        """Least squares over the samples not delayed by queueing, kept inside the measured range."""
        least = min(x.hi - x.lo for x in samples)
        good = [x for x in samples if x.hi - x.lo <= 2 * least + QUEUE_SLACK_NS]
        lo_s, hi_s = slopes
        mid = (lo_s + hi_s) // 2
        if len(good) < 2:
            return max(lo_s, min(hi_s, mid))
        x0 = good[0].t1
        xs = [((g.t1 + g.t4) // 2 - x0) for g in good]
        ys = [(g.lo + g.hi) / 2 for g in good]
        mx = sum(xs) / len(xs)
        my = sum(ys) / len(ys)
        sxx = sum((x - mx) ** 2 for x in xs)
        if sxx <= 0:
            return max(lo_s, min(hi_s, mid))
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
        return max(lo_s, min(hi_s, round(slope * PPB)))

    # ---- answers ---------------------------------------------------------------------------------
    def interval(self, now: int, cfg: ClockConfig) -> tuple[int, int, str] | None:
        """``(lo, hi, status)``: the peer's clock minus ours at ``now`` lies in ``[lo, hi]``; None
        while unsynced (no sample, or our clock reads before the newest sample: a step back)."""
        if self._dirty:
            self._refresh(cfg)
        rate, edge = self._rate, self._edge
        if rate is None or edge is None:
            return None
        at, lo, hi = edge
        if now < at:
            return None
        return (lo + _floor_mul(rate[0], now - at), hi + _ceil_mul(rate[1], now - at),
                SYNCED if now - at <= cfg.stale_ns else FREE_RUNNING)

    def drift_ppb(self, cfg: ClockConfig) -> int:
        if self._dirty:
            self._refresh(cfg)
        return self._drift

    def best_rtt(self) -> int:
        return min((x.hi - x.lo for x in self.samples), default=-1)


class ClockBound:
    """This node's clock against the cluster's time reference, as an interval."""

    def __init__(self, node_id: str, peers: Iterable[str], config: ClockConfig | None = None) -> None:
        self.node_id = node_id
        self.config = cfg = config or ClockConfig()
        self.peers = sorted(set(peers) - {node_id})
        if cfg.time_source and cfg.time_source != node_id and cfg.time_source not in self.peers:
            raise ValueError(f"time_source {cfg.time_source!r} is not a member "
                             f"(members: {', '.join(sorted([node_id, *self.peers]))})")
        self._filters: dict[str, PeerFilter] = {}
        self.refused = 0  # samples out of bounds (hostile or broken peers)

    @property
    def reference(self) -> str:
        """Who the reference is: the ``time_source`` member, ``median`` (of every member's clock),
        or this node itself when it is alone."""
        return self.config.time_source or ("median" if self.peers else self.node_id)

    def add_sample(self, peer: str, t1: int, t2: int, t3: int, t4: int) -> None:
        """One probe/ack exchange with ``peer`` (its impossible ones already dropped by ClockSync)."""
        if peer not in self.peers:
            return
        off = (t2 - t1) // 2 + (t3 - t4) // 2
        if abs(off) > MAX_SAMPLE_OFFSET_NS or (t4 - t1) - (t3 - t2) > MAX_SAMPLE_RTT_NS:
            self.refused += 1
            return
        f = self._filters.get(peer)
        if f is None:
            f = self._filters[peer] = PeerFilter(self.config.window)
        f.add(t1, t2, t3, t4, self.config)

    def forget(self, peer: str) -> None:
        self._filters.pop(peer, None)

    def peer_interval(self, peer: str, now: int) -> tuple[int, int, str] | None:
        f = self._filters.get(peer)
        return None if f is None else f.interval(now, self.config)

    def read(self, now: int) -> ClockReading:
        """The reference's clock when ours reads ``now``: ``[earliest, latest]`` and a status."""
        cfg = self.config
        ts = cfg.time_source
        if ts == self.node_id or (not ts and not self.peers):
            return ClockReading(now, now, SYNCED, 0, 0, 0)
        if ts:
            iv = self.peer_interval(ts, now)
            if iv is None:
                return ClockReading(0, 0, UNSYNCED, 0, -1, 0)
            lo, hi, status = iv
            return self._reading(now, lo, hi, status, self._filters[ts].drift_ppb(cfg))
        # the median of every member's clock, ours (offset 0, exact) included
        lows: list[float] = [0]
        highs: list[float] = [0]
        drifts = [0]
        fresh = 1
        for p in self.peers:
            iv = self.peer_interval(p, now)
            if iv is None:
                lows.append(float("-inf"))
                highs.append(float("inf"))
                continue
            lows.append(iv[0])
            highs.append(iv[1])
            drifts.append(self._filters[p].drift_ppb(cfg))
            fresh += iv[2] == SYNCED
        n = len(lows)
        lows.sort()
        highs.sort()
        drifts.sort()
        k = n // 2
        if n % 2:
            lo_f, hi_f = lows[k], highs[k]
        else:
            lo_f, hi_f = lows[k - 1] + lows[k], highs[k - 1] + highs[k]
        if lo_f in (float("inf"), float("-inf")) or hi_f in (float("inf"), float("-inf")):
            return ClockReading(0, 0, UNSYNCED, 0, -1, 0)
        lo, hi = int(lo_f), int(hi_f)
        if n % 2 == 0:
            lo, hi = lo // 2, -(-hi // 2)
        status = SYNCED if 2 * fresh > n else FREE_RUNNING
        return self._reading(now, lo, hi, status, drifts[len(drifts) // 2])

    @staticmethod
    def _reading(now: int, lo: int, hi: int, status: str, drift: int) -> ClockReading:
        return ClockReading(now + lo, now + hi, status, (lo + hi) // 2, -(-(hi - lo) // 2), drift)

    def refusal(self, now: int) -> str | None:
        """Why this node must not take an order now (one line), or None. Off without a limit."""
        limit = self.config.max_error_ns
        if limit is None:
            return None
        r = self.read(now)
        # short: a refusal goes to an unproven address, capped at 3x its request (``ClientGate``)
        if r.status == UNSYNCED:
            return f"clock not synced with {self.reference} yet: error bound unknown, limit {limit // US} µs"
        if r.bound_ns > limit:
            return (f"clock error bound {-(-r.bound_ns // US)} µs over the limit of {limit // US} µs "
                    f"({r.status} vs {self.reference})")
        return None

    def status(self, now: int) -> dict[str, object]:
        """The ``clock`` section of a node's status (units as documented in docs/operations.md)."""
        r = self.read(now)
        known = r.status != UNSYNCED
        lim = self.config.max_error_ns
        return {"status": r.status, "reference": self.reference,
                "offset_us": r.offset_ns / US if known else None,
                "bound_us": r.bound_ns / US if known else None,
                "drift_ppm": r.drift_ppb / 1000 if known else None,
                "max_error_us": None if lim is None else lim / US,
                "max_drift_ppm": self.config.max_drift_ppm,
                "rts25_ok": known and -(-r.bound_ns // US) * US <= RTS25_HFT_NS,
                "takes_orders": self.refusal(now) is None}

    def peer_status(self, peer: str, now: int) -> dict[str, object]:
        """Per peer: its bound, drift and status as this node's filter sees them."""
        f = self._filters.get(peer)
        iv = None if f is None else f.interval(now, self.config)
        if f is None or iv is None:
            return {"status": UNSYNCED, "bound_us": None, "drift_ppm": None}
        return {"status": iv[2], "bound_us": -(-(iv[1] - iv[0]) // 2) / US, "drift_ppm": f.drift_ppb(self.config) / 1000}

    @property
    def counters(self) -> dict[str, int]:
        fs = self._filters.values()
        return {"clock_samples_queued": sum(f.queued for f in fs), "clock_resets": sum(f.resets for f in fs),
                "clock_samples_refused": self.refused}
