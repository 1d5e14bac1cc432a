"""The simulated network: per-link latency, loss, duplication, reordering and partitions.

Theory of operation
-------------------
An endpoint is a node id (``"n1"``) or a client id (``"client-1"``). ``route(src, dst)`` decides, with
the network's own seeded ``random.Random``, what becomes of one datagram: a list of delays (empty:
lost; two: duplicated). The simulator turns each delay into a delivery event. Nothing here holds a
datagram; the event queue does.

- **Latency.** Every directed node link draws a base one-way delay when the network is built (most
  links LAN-like, a few slower), and each datagram adds an exponential jitter with a quarter of that
  mean, so datagrams on one link overtake each other now and then, as UDP allows.
- **Reordering** (a fault): a fraction of datagrams is held back by up to ``reorder_max_ns`` extra.
- **Loss** (a fault): a base drop probability on every link, plus *loss bursts* that raise it on a
  chosen set of links for a while.
- **Duplication** (a fault): a fraction of datagrams is delivered twice, with independent delays
  (the receiver's replay guard should drop the copy: both copies carry the same frame counter).
- **Partitions** cut node-to-node links only (clients sit next to every node). A partition is a set
  of blocked directed links; ``PartitionShape`` builds the usual ones.
- **Leader faults** (strong mode's nemesis, on top of the above): ``isolated`` nodes are cut from
  every other node, and ``slow`` nodes' datagrams take that much longer (a congested NIC or queue),
  so an old leader's messages arrive after its successor was elected.

Pure and deterministic: same seed, same calls, same answers.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .clock import MS, US

SHAPES = ("halves", "majority", "isolate", "ring", "bridge", "oneway")


@dataclass(slots=True)
class LinkFaults:
    """Fault rates that apply to every datagram (the nemesis changes them over time)."""

    loss: float = 0.0
    dup: float = 0.0
    reorder: float = 0.0
    reorder_max_ns: int = 50 * MS


def partition_links(shape: str, nodes: Sequence[str], rng: random.Random) -> tuple[set[tuple[str, str]], str]:
    """Blocked directed links for a partition ``shape`` over ``nodes``; and a one-line description.

    - ``halves``: two halves (sizes ``n//2`` and the rest).
    - ``majority``: a minority of ``(n-1)//2`` nodes against the rest (1 of 3, 2 of 5).
    - ``isolate``: one node alone.
    - ``ring``: each node talks only to its two neighbours on a random ring.
    - ``bridge``: two halves that cannot talk, and one node that talks to both.
    - ``oneway``: one node's datagrams to the others are lost, theirs to it arrive (asymmetric).
    """
    ids = list(nodes)
    rng.shuffle(ids)
    n = len(ids)
    blocked: set[tuple[str, str]] = set()

    def cut(a: Iterable[str], b: Iterable[str]) -> None:
        b = list(b)
        for x in a:
            for y in b:
                blocked.add((x, y))
                blocked.add((y, x))

    if shape == "halves":
        k = n // 2
        cut(ids[:k], ids[k:])
        return blocked, f"halves {sorted(ids[:k])} | {sorted(ids[k:])}"
    if shape == "majority":
        k = max(1, (n - 1) // 2)
        cut(ids[:k], ids[k:])
        return blocked, f"minority {sorted(ids[:k])} | majority {sorted(ids[k:])}"
    if shape == "isolate":
        cut(ids[:1], ids[1:])
        return blocked, f"isolate {ids[0]}"
    if shape == "ring":
        near = {(ids[i], ids[(i + 1) % n]) for i in range(n)}
        near |= {(b, a) for a, b in near}
        for x in ids:
            for y in ids:
                if x != y and (x, y) not in near:
                    blocked.add((x, y))
        return blocked, "ring " + "-".join(ids)
    if shape == "bridge":
        b, rest = ids[0], ids[1:]
        k = len(rest) // 2
        cut(rest[:k], rest[k:])
        return blocked, f"bridge {b} between {sorted(rest[:k])} and {sorted(rest[k:])}"
    if shape == "oneway":
        for y in ids[1:]:
            blocked.add((ids[0], y))
        return blocked, f"oneway: {ids[0]} cannot send"
    raise ValueError(f"unknown partition shape {shape!r}; known: {', '.join(SHAPES)}")


@dataclass(slots=True)
class Network:
    """Decides the fate of each datagram; holds the link model and the current faults."""

    rng: random.Random
    nodes: list[str]
    faults: LinkFaults = field(default_factory=LinkFaults)
    blocked: set[tuple[str, str]] = field(default_factory=set)
    burst_links: set[tuple[str, str]] = field(default_factory=set)
    burst_loss: float = 0.0
    base: dict[tuple[str, str], int] = field(default_factory=dict)
    isolated: set[str] = field(default_factory=set)
    slow: dict[str, int] = field(default_factory=dict)  # node -> extra delay (ns) on what it sends
    base_nodes: frozenset[str] = frozenset()  # the node ids (set from ``nodes``)
    client_base_ns: int = 200 * US
    counters: dict[str, int] = field(default_factory=lambda: {
        "sent": 0, "lost": 0, "blocked": 0, "duplicated": 0, "reordered": 0, "slowed": 0})

    def __post_init__(self) -> None:
        self.base_nodes = frozenset(self.nodes)
        for a in self.nodes:
            for b in self.nodes:
                if a != b:
                    r = self.rng.random()
                    # most links LAN-like (50 us - 1 ms), some slower (1 - 20 ms)
                    self.base[(a, b)] = (self.rng.randint(50 * US, 1 * MS) if r < 0.8
                                         else self.rng.randint(1 * MS, 20 * MS))

    def route(self, src: str, dst: str) -> list[int]:
        """Delays (ns) at which copies of one datagram from ``src`` arrive at ``dst``."""
        c = self.counters
        c["sent"] += 1
        link = (src, dst)
        if link in self.blocked or (self.isolated and (src in self.isolated or dst in self.isolated)
                                    and src in self.base_nodes and dst in self.base_nodes):
            c["blocked"] += 1
            return []
        f = self.faults
        rnd = self.rng.random
        loss = f.loss
        if self.burst_loss and link in self.burst_links:
            loss = 1 - (1 - loss) * (1 - self.burst_loss)
        if loss and rnd() < loss:
            c["lost"] += 1
            return []
        base = self.base.get(link, self.client_base_ns)
        out = [self._delay(base)]
        if f.dup and rnd() < f.dup:
            c["duplicated"] += 1
            out.append(self._delay(base))
        extra = self.slow.get(src) if self.slow else None
        if extra:
            c["slowed"] += 1
            out = [d + extra for d in out]
        return out

    def _delay(self, base: int) -> int:
        d = base + int(self.rng.expovariate(4.0 / base))
        f = self.faults
        if f.reorder and self.rng.random() < f.reorder:
            self.counters["reordered"] += 1
            d += self.rng.randint(0, f.reorder_max_ns)
        return d

    def partition(self, blocked: set[tuple[str, str]]) -> None:
        self.blocked = set(blocked)

    def heal(self) -> None:
        self.blocked = set()

    def heal_all(self) -> None:
        """The liveness phase: no partition, no loss, no duplication, no reordering."""
        self.blocked = set()
        self.burst_links = set()
        self.burst_loss = 0.0
        self.faults = LinkFaults()
        self.isolated = set()
        self.slow = {}
