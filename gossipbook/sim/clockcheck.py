"""The clock checker: the core's ``ClockBound`` against clocks whose truth the simulator knows.

Theory of operation
-------------------
DESIGN.md invariant 7: the true offset to the time reference never leaves the interval a node
reports (while it reports one: ``status`` synced or free-running). One seed draws a small cluster
(2-5 nodes), its reference (a ``time_source`` member or the members' median), every node's clock
(``NodeClock``: skew up to +-100 ms, drift up to +-200 ppm, so two clocks drift apart at up to
400 ppm, far past ``max_drift_ppm``) and every directed link's delay: a base, a one-way extra
(asymmetry up to 3 ms, which no round trip can see), exponential jitter and queueing spikes up to
20 ms. Pauses cut a node off for seconds (no probe answered either way), so bounds free-run and
grow. Each node probes its peers in turn, as membership does, and feeds the four timestamps of
every answered probe to its own ``ClockBound``, exactly what ``NodeCore`` does with a
``ClockSample``.

Every ``check_ns`` of true time each node is asked for ``read(now)`` on its own clock, and the
reference's true reading at that instant must lie in ``[earliest, latest]``. ``max_ratio`` is the
largest ``|truth - middle| / bound`` seen (it must stay <= 1). ``--break`` mutations
(``clockbound.BREAKS``) remove one mechanism each; ``run_seeds`` must report them within 50 seeds.

Clocks here are read at 1 ns resolution and never stepped: a step smaller than the bound is outside
the model (docs/operations.md, "Time").
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..core.clockbound import UNSYNCED, ClockBound, ClockConfig
from .clock import MS, SEC, T0, US, NodeClock


@dataclass(slots=True)
class ClockRun:
    """One seed's result."""

    seed: int
    nodes: int
    reference: str
    checks: int = 0  # reads with a bound (status synced or free-running)
    unsynced: int = 0  # reads without one
    violations: list[str] = field(default_factory=list)  # first evidence, at most 3
    violation_count: int = 0
    max_ratio: float = 0.0  # max |truth - middle| / bound over all checks
    bounds_ns: list[int] = field(default_factory=list)
    resets: int = 0
    trace_hash: str = ""

    @property
    def ok(self) -> bool:
        return self.violation_count == 0

    def to_json(self) -> dict[str, Any]:
        b = sorted(self.bounds_ns)
        return {"seed": self.seed, "ok": self.ok, "nodes": self.nodes, "reference": self.reference,
                "checks": self.checks, "unsynced": self.unsynced, "violations": self.violations,
                "violation_count": self.violation_count, "max_ratio": round(self.max_ratio, 4),
                "bound_p50_us": _pct(b, 0.50) / US, "bound_p99_us": _pct(b, 0.99) / US, "resets": self.resets,
                "trace_hash": self.trace_hash}


def _pct(xs: list[int], q: float) -> int:
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else 0


@dataclass(slots=True)
class _Link:
    base: int
    extra: int  # one-way only: the asymmetry
    jitter_mean: int
    spike_p: float

    def delay(self, rng: random.Random) -> int:
        d = self.base + self.extra + int(rng.expovariate(1.0) * self.jitter_mean)
        if rng.random() < self.spike_p:
            d += rng.randrange(20 * MS)
        return d


def _median2(xs: list[int]) -> int:
    """Twice the median (exact for an even count: the sum of the middle two)."""
    s = sorted(xs)
    k = len(s) // 2
    return 2 * s[k] if len(s) % 2 else s[k - 1] + s[k]


def run_seed(seed: int, *, breaks: Iterable[str] = (), duration_s: float = 30.0,
             probe_ns: int = 200 * MS, check_ns: int = 50 * MS, max_drift_ppm: float = 50.0) -> ClockRun:
    """Simulate one seed; see the module docstring."""
    rng = random.Random(seed)
    n = rng.randint(2, 5)
    ids = [f"n{i + 1}" for i in range(n)]
    ref = rng.choice(["", *ids])
    clocks = {i: NodeClock(skew_ns=rng.randint(-100 * MS, 100 * MS), drift_ppb=rng.randint(-200_000, 200_000))
              for i in ids}
    links: dict[tuple[str, str], _Link] = {}
    for a in ids:
        for b in ids:
            if a != b:
                links[(a, b)] = _Link(base=rng.randint(20 * US, 2 * MS),
                                      extra=rng.choice([0, 0, rng.randint(0, 3 * MS)]),
                                      jitter_mean=rng.randint(0, 500 * US), spike_p=rng.choice([0.0, 0.05, 0.2]))
    end = T0 + int(duration_s * SEC)
    pauses: dict[str, list[tuple[int, int]]] = {i: [] for i in ids}
    for _ in range(rng.randint(0, 3)):
        who = rng.choice(ids)
        start = T0 + rng.randrange(end - T0)
        pauses[who].append((start, start + rng.randint(1 * SEC, 8 * SEC)))
    cfg = ClockConfig(time_source=ref, max_drift_ppm=max_drift_ppm, breaks=frozenset(breaks))
    bounds = {i: ClockBound(i, ids, cfg) for i in ids}
    run = ClockRun(seed, n, ref or "median")
    h = hashlib.blake2b(digest_size=8)

    def paused(node: str, t: int) -> bool:
        return any(a <= t < b for a, b in pauses[node])

    # events: (true time, order, kind, node); kind 0 = probe, 1 = check
    q: list[tuple[int, int, int, str]] = []
    k = 0
    for i in ids:
        q.append((T0 + rng.randrange(probe_ns), k, 0, i))
        q.append((T0 + rng.randrange(check_ns), k + 1, 1, i))
        k += 2
    heapq.heapify(q)
    turn = {i: rng.randrange(n) for i in ids}
    while q:
        t, _, kind, node = heapq.heappop(q)
        if t >= end:
            continue
        k += 1
        if kind == 0:
            heapq.heappush(q, (t + probe_ns, k, 0, node))
            peers = [p for p in ids if p != node]
            turn[node] += 1
            peer = peers[turn[node] % len(peers)]
            d1 = links[(node, peer)].delay(rng)
            hold = rng.randrange(200 * US)
            d2 = links[(peer, node)].delay(rng)
            ta, tb, tc = t + d1, t + d1 + hold, t + d1 + hold + d2
            if paused(node, t) or paused(peer, ta) or paused(peer, tb) or paused(node, tc):
                continue  # lost: a paused node answers nothing and hears nothing
            s = (clocks[node].read(t), clocks[peer].read(ta), clocks[peer].read(tb), clocks[node].read(tc))
            bounds[node].add_sample(peer, *s)
            h.update(f"{node}{peer}{s}".encode())
            continue
        heapq.heappush(q, (t + check_ns // 2 + rng.randrange(check_ns), k, 1, node))
        now = clocks[node].read(t)
        r = bounds[node].read(now)
        if r.status == UNSYNCED:
            run.unsynced += 1
            continue
        run.checks += 1
        run.bounds_ns.append(r.bound_ns)
        if ref:
            truth2 = 2 * clocks[ref].read(t)
        else:
            truth2 = 2 * now + _median2([clocks[i].read(t) - now for i in ids])
        lo2, hi2 = 2 * r.earliest, 2 * r.latest
        err2 = abs(truth2 - (lo2 + hi2) // 2)
        run.max_ratio = max(run.max_ratio, err2 / (2 * r.bound_ns) if r.bound_ns else (0.0 if not err2 else 1e9))
        if not lo2 <= truth2 <= hi2:
            run.violation_count += 1
            if len(run.violations) < 3:
                run.violations.append(
                    f"t={(t - T0) / SEC:.3f}s {node} ({r.status}): reference at {truth2 / 2 - now:+.0f} ns, "
                    f"interval [{r.earliest - now:+d}, {r.latest - now:+d}] ns")
    run.resets = sum(b.counters["clock_resets"] for b in bounds.values())
    run.trace_hash = h.hexdigest()
    return run


def run_seeds(seeds: Iterable[int], **kw: Any) -> list[ClockRun]:
    return [run_seed(s, **kw) for s in seeds]
