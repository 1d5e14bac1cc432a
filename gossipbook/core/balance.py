"""Choosing the node a client request goes to: by measured latency and load, away from slow or
dead nodes, back to them once they recover.

Pure: the caller says when it sent a try to a node, when an answer came (and how long it took) and
when a try went unanswered; ``pick(now)`` names the node for the next request. The wire client
(``node/client.py``) feeds it for the library ``Client`` and ``gossipbook load``.

Theory of operation
-------------------
**Cost.** Each node has an EWMA of its reply latency and a count of tries in
flight to it (sent, neither answered nor given up). Its cost is ``ewma * (1 + in_flight)``: a slow
node, and a node already holding many of our requests, cost more (Finagle's and tower's peak-EWMA
idea, without the peak). A new sample weighs ``alpha``, or more the older the estimate is
(``1 - exp(-age / decay_ns)``, Finagle's time-decayed EWMA): a node picked only by the odd probe
is judged by that probe, not by what it did seconds ago. A node never measured costs 0, so every
node is tried early.

**Choice.** Among the healthy nodes (not avoided, not excluded by the caller) the *near-best* are
those costing at most ``best * near + slack_ns``; of those, the one picked longest ago wins, so
nodes of about equal cost share the traffic round robin instead of the first one taking it all,
and a clearly slower node gets none. A healthy node not picked for ``probe_ns`` is picked next
whatever it costs (one probe), so a node whose latency came back down is measured again and
regains its share.

**Avoidance.** ``miss_limit`` unanswered tries in a row make a node *avoided* for a back-off
(``backoff_ns``, doubling with each avoidance in a row up to ``max_backoff_ns``). An avoided node
is never picked while a healthy one exists (if every node is avoided, the one whose back-off ends
first is picked: the client must send somewhere). When the back-off ends the node is healthy
again and, not picked for a while, is probed at once; an answer clears its miss streak and its
back-off, and restarts its EWMA from that sample (the old one measured the node before it went
quiet); another miss avoids it again, for twice as long.

Rules that hold (``tests/core/test_balance.py``):
- ``pick`` never returns an avoided or excluded node while some node is neither.
- A node whose latency grows well above the others' stops being picked, except for a probe every
  ``probe_ns``; once it answers as fast as the others it is picked again.
- Everything is bounded: one record per configured node, ``SAMPLES`` latencies each.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

#: latencies kept per node for its percentiles (the newest)
SAMPLES = 512


@dataclass(frozen=True, slots=True)
class BalanceConfig:
    """How the chooser weighs nodes (times in nanoseconds)."""

    alpha: float = 0.3  # weight of a new latency sample in the EWMA (at least)
    decay_ns: int = 300_000_000  # an estimate this old weighs 1/e against a new sample
    near: float = 1.5  # a node within near x the best cost (+ slack) shares the traffic
    slack_ns: int = 200_000  # loopback latencies jitter by about this much: below it, nodes are equal
    miss_limit: int = 2  # unanswered tries in a row before a node is avoided
    backoff_ns: int = 1_000_000_000  # the first avoidance; doubles for each one in a row
    max_backoff_ns: int = 4_000_000_000
    probe_ns: int = 1_000_000_000  # a healthy node not picked for this long is picked next


@dataclass(slots=True)
class NodeLoad:
    """What the chooser knows of one node."""

    ewma_ns: float | None = None
    in_flight: int = 0
    misses: int = 0  # unanswered tries in a row
    avoided_until: int = 0
    backoff_ns: int = 0  # the next avoidance's length (0: the first)
    last_pick: int | None = None  # when it was last sent a try
    turn: int = 0  # the number of that try among all (round robin among equals, even at one instant)
    last_sample: int = 0
    picks: int = 0  # tries sent (the requests' first tries and their resends)
    answered: int = 0
    missed: int = 0  # tries unanswered, over all time
    avoidances: int = 0
    samples: deque[int] = field(default_factory=lambda: deque(maxlen=SAMPLES))

    def p50_ms(self) -> float | None:
        if not self.samples:
            return None
        s = sorted(self.samples)
        return round(s[len(s) // 2] / 1e6, 3)


class Balancer:
    """The chooser of the module header, over a fixed set of nodes."""

    def __init__(self, nodes: Iterable[str], config: BalanceConfig | None = None) -> None:
        self.config = config or BalanceConfig()
        self.nodes: dict[str, NodeLoad] = {n: NodeLoad() for n in nodes}
        if not self.nodes:
            raise ValueError("a balancer needs at least one node")
        self.counters = {"picks": 0, "probes": 0, "avoidances": 0, "all_avoided": 0}

    # ---- choosing ----------------------------------------------------------------------------------
    def avoided(self, node: str, now: int) -> bool:
        n = self.nodes.get(node)
        return n is not None and n.avoided_until > now

    def cost(self, node: str) -> float:
        n = self.nodes[node]
        return (n.ewma_ns or 0.0) * (1 + n.in_flight)

    def pick(self, now: int, exclude: Iterable[str] = ()) -> str:
        """The node for the next try (see "Choice"); it is not yet counted as sent (``sent``)."""
        ex = set(exclude)
        healthy = [k for k, n in self.nodes.items() if k not in ex and n.avoided_until <= now]
        if not healthy:
            self.counters["all_avoided"] += 1
            pool = [k for k in self.nodes if k not in ex] or list(self.nodes)
            return min(pool, key=lambda k: (self.nodes[k].avoided_until, k))
        c = self.config
        stale = [k for k in healthy if self.nodes[k].last_pick is None
                 or now - self.nodes[k].last_pick >= c.probe_ns]  # type: ignore[operator]
        if stale and len(healthy) > 1:
            self.counters["probes"] += 1
            return min(stale, key=lambda k: (self.nodes[k].turn, k))
        best = min(self.cost(k) for k in healthy)
        near = [k for k in healthy if self.cost(k) <= best * c.near + c.slack_ns]
        return min(near, key=lambda k: (self.nodes[k].turn, k))

    # ---- what happened -----------------------------------------------------------------------------
    def sent(self, node: str, now: int) -> None:
        """A try went to ``node``."""
        n = self.nodes.get(node)
        if n is None:
            return
        n.in_flight += 1
        n.picks += 1
        n.last_pick = now
        self.counters["picks"] += 1
        n.turn = self.counters["picks"]

    def answered(self, node: str, latency_ns: int, now: int) -> None:
        """A try to ``node`` was answered ``latency_ns`` after it was sent."""
        n = self.nodes.get(node)
        if n is None:
            return
        n.in_flight = max(0, n.in_flight - 1)
        n.answered += 1
        lat = max(0, int(latency_ns))
        n.samples.append(lat)
        if n.ewma_ns is None or n.backoff_ns:  # the first sample, or the first after an avoidance
            n.ewma_ns = float(lat)
        else:  # an old estimate counts less: a probe of a node idle for a while nearly replaces it
            c = self.config
            w = max(c.alpha, 1.0 - math.exp(-max(0, now - n.last_sample) / c.decay_ns))
            n.ewma_ns += w * (lat - n.ewma_ns)
        n.last_sample = now
        n.misses = 0
        n.backoff_ns = 0

    def gave_up(self, node: str) -> None:
        """A try to ``node`` ended neither answered nor timed out (its caller was cancelled)."""
        n = self.nodes.get(node)
        if n is not None:
            n.in_flight = max(0, n.in_flight - 1)

    def missed(self, node: str, now: int) -> None:
        """A try to ``node`` went unanswered (its retry interval passed)."""
        n = self.nodes.get(node)
        if n is None:
            return
        n.in_flight = max(0, n.in_flight - 1)
        n.missed += 1
        n.misses += 1
        c = self.config
        if n.misses >= c.miss_limit and n.avoided_until <= now:
            n.backoff_ns = min(c.max_backoff_ns, max(c.backoff_ns, 2 * n.backoff_ns))
            n.avoided_until = now + n.backoff_ns
            n.misses = 0
            n.avoidances += 1
            self.counters["avoidances"] += 1

    # ---- reporting ---------------------------------------------------------------------------------
    def spread(self, now: int | None = None) -> dict[str, dict[str, object]]:
        """Per node: tries sent, answered and unanswered, p50 latency (ms, of the newest
        ``SAMPLES``), EWMA (ms), in flight, avoidances and whether it is avoided now."""
        out: dict[str, dict[str, object]] = {}
        for k, n in self.nodes.items():
            out[k] = {"sent": n.picks, "answered": n.answered, "missed": n.missed, "p50_ms": n.p50_ms(),
                      "ewma_ms": None if n.ewma_ns is None else round(n.ewma_ns / 1e6, 3),
                      "in_flight": n.in_flight, "avoidances": n.avoidances,
                      "avoided": now is not None and n.avoided_until > now}
        return out


__all__ = ["SAMPLES", "BalanceConfig", "Balancer", "NodeLoad"]
