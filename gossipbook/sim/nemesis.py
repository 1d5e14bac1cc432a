"""The nemesis: which faults a seed gets, and when they strike.

Theory of operation
-------------------
Each seed first draws its own **fault plan** (``FaultPlan.draw``): for every fault the caller enabled,
a rate (or off), so that a few hundred seeds cover the space from "a little loss" to "partitions,
crashes and a clock half a second ahead, all at once" (TigerBeetle's VOPR does the same). The plan
then becomes a **schedule**: timed ``Action``s over the safety phase, which the simulator applies.
A scripted schedule (``scripted``) replaces the random one for targeted tests.

Fault names (``FAULTS``):

- ``partition``: episodes of one partition shape at a time (``network.SHAPES``), each healed after a while.
- ``loss``: a base drop rate on every link, plus bursts of heavy loss on some links.
- ``dup``: datagrams delivered twice.
- ``reorder``: datagrams held back by extra delay, so they overtake each other.
- ``crash``: a node stops (its memory is gone, its disk is kept) and restarts later.
- ``pause``: a node freezes (a GC pause, SIGSTOP), its socket buffer fills, then it resumes.
- ``skew``: per-node clock skew, drift and resolution, sometimes one clock beyond ``max_offset``,
  and clock steps (NTP jumps, backwards too) at run time.

Everything is drawn from the ``random.Random`` passed in: same seed, same plan, same schedule.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..core.errors import UsageError
from .clock import MS, SEC, US, NodeClock
from .network import SHAPES

FAULTS = ("partition", "loss", "dup", "reorder", "crash", "pause", "skew")


def parse_faults(text: str) -> tuple[str, ...]:
    """``"partition,loss"`` -> ``("partition", "loss")``; ``"all"`` and ``"none"`` too."""
    text = text.strip()
    if text in ("", "none"):
        return ()
    if text == "all":
        return FAULTS
    out = []
    for name in (s.strip() for s in text.split(",")):
        if name not in FAULTS:
            raise UsageError(f"unknown fault {name!r}; known faults: {', '.join(FAULTS)} (or all, none)")
        if name not in out:
            out.append(name)
    return tuple(sorted(out, key=FAULTS.index))


@dataclass(slots=True)
class FaultPlan:
    """One seed's fault rates (0 = off). Rates are per minute of the safety phase."""

    partitions_per_min: float = 0.0
    loss: float = 0.0
    loss_bursts_per_min: float = 0.0
    dup: float = 0.0
    reorder: float = 0.0
    reorder_max_ms: int = 0
    crashes_per_node_min: float = 0.0
    pauses_per_node_min: float = 0.0
    skew_max_ms: float = 0.0
    drift_max_ppm: float = 0.0
    clock_resolution_ns: int = 1
    far_clock: bool = False  # one node's clock beyond max_offset
    clock_steps_per_min: float = 0.0

    @classmethod
    def draw(cls, rng: random.Random, enabled: Sequence[str]) -> FaultPlan:
        """Each enabled fault is off for this seed with probability 1/4 (unless it is the only one,
        or every one came out off); each active one draws its own rate."""
        enabled = [f for f in FAULTS if f in enabled]
        on = [f for f in enabled if len(enabled) == 1 or rng.random() >= 0.25]
        if enabled and not on:
            on = [rng.choice(enabled)]
        p = cls()
        u = rng.uniform
        if "partition" in on:
            p.partitions_per_min = u(1, 8)
        if "loss" in on:
            p.loss = u(0.005, 0.3) if rng.random() < 0.2 else u(0.005, 0.1)
            p.loss_bursts_per_min = u(0, 4)
        if "dup" in on:
            p.dup = u(0.01, 0.2)
        if "reorder" in on:
            p.reorder = u(0.05, 0.4)
            p.reorder_max_ms = rng.choice((5, 50, 50, 300))
        if "crash" in on:
            p.crashes_per_node_min = u(0.5, 4)
        if "pause" in on:
            p.pauses_per_node_min = u(0.5, 4)
        if "skew" in on:
            p.skew_max_ms = rng.choice((0.1, 5.0, 50.0, 120.0, 240.0))
            p.drift_max_ppm = rng.choice((0.0, 20.0, 200.0))
            p.clock_resolution_ns = rng.choice((1, 1, 1000, 1 * MS, 15_625_000))
            p.far_clock = rng.random() < 0.3
            p.clock_steps_per_min = rng.choice((0.0, 0.0, 1.0, 4.0))
        return p

    def active(self) -> list[str]:
        """The fault names this plan exercises."""
        out = []
        if self.partitions_per_min:
            out.append("partition")
        if self.loss or self.loss_bursts_per_min:
            out.append("loss")
        if self.dup:
            out.append("dup")
        if self.reorder:
            out.append("reorder")
        if self.crashes_per_node_min:
            out.append("crash")
        if self.pauses_per_node_min:
            out.append("pause")
        if self.skew_max_ms or self.far_clock or self.clock_steps_per_min or self.drift_max_ppm:
            out.append("skew")
        return out

    def to_json(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    def clocks(self, rng: random.Random, nodes: Sequence[str], max_offset_ns: int) -> dict[str, NodeClock]:
        """Each node's clock. Without the skew fault, clocks agree to NTP-on-a-LAN precision."""
        out = {}
        far = rng.choice(list(nodes)) if self.far_clock else None
        tie_friendly = rng.random() < 0.5
        for n in nodes:
            if not self.active() or "skew" not in self.active():
                out[n] = NodeClock(rng.randint(-20 * US, 20 * US), 0, 1)
                continue
            skew_max = self.skew_max_ms * MS
            if self.clock_resolution_ns >= MS and tie_friendly:
                skew_max = min(skew_max, self.clock_resolution_ns // 4)  # clocks tick together: HLC ties
            sk = int(rng.uniform(-1, 1) * skew_max)
            if n == far:
                # beyond the bound, mostly ahead (ahead is what the offset check must refuse)
                sk = int(rng.uniform(1.05, 2.0) * max_offset_ns) * (1 if rng.random() < 0.8 else -1)
            drift = int(rng.uniform(-1, 1) * self.drift_max_ppm * 1000)
            out[n] = NodeClock(sk, drift, self.clock_resolution_ns)
        return out


@dataclass(frozen=True, slots=True)
class Action:
    """One nemesis step at true time offset ``at_ns`` from the start of the run."""

    at_ns: int
    # partition, heal, loss_burst, loss_burst_end, crash, restart, pause, resume, clock_step; strong
    # mode also: leader_isolate, leader_slow, leader_pause (aimed at whoever leads when it strikes,
    # for ``dur_ns``; their ends are scheduled then: unisolate, unslow, resume)
    kind: str
    node: str = ""
    shape: str = ""  # partition shape, or "groups" for an explicit list
    groups: tuple[tuple[str, ...], ...] = ()
    links: tuple[tuple[str, str], ...] = ()
    value: float = 0.0  # loss burst rate, clock step in ns, or leader_slow's extra delay in ns
    dur_ns: int = 0  # leader faults: how long

    def describe(self) -> str:
        what = {"partition": f"partition {self.shape}", "loss_burst": f"loss burst {self.value:.2f} on "
                f"{len(self.links)} links", "clock_step": f"clock step {self.value / MS:+.1f} ms",
                "leader_slow": f"leader_slow +{self.value / MS:.0f} ms for {self.dur_ns / SEC:.2f}s",
                "leader_isolate": f"leader_isolate for {self.dur_ns / SEC:.2f}s",
                "leader_pause": f"leader_pause for {self.dur_ns / SEC:.2f}s"}.get(self.kind, self.kind)
        return f"{self.at_ns / SEC:8.3f}s {what}{' ' + self.node if self.node else ''}"


@dataclass(slots=True)
class Schedule:
    actions: list[Action] = field(default_factory=list)

    def __iter__(self) -> Any:
        return iter(self.actions)

    def __len__(self) -> int:
        return len(self.actions)


def _windows(rng: random.Random, per_min: float, start: int, end: int, dur: tuple[float, float]) -> list[tuple[int, int]]:
    """Non-overlapping ``[a, b)`` windows: exponential gaps at ``per_min``, uniform durations (s)."""
    out: list[tuple[int, int]] = []
    if per_min <= 0:
        return out
    t = start
    while True:
        t += int(rng.expovariate(per_min / 60.0) * SEC)
        if t >= end:
            return out
        d = int(rng.uniform(*dur) * SEC)
        out.append((t, t + d))
        t += d


def random_schedule(rng: random.Random, plan: FaultPlan, nodes: Sequence[str], duration_ns: int,
                    max_offset_ns: int) -> Schedule:
    """The plan as timed actions over ``[0, duration_ns)``.

    Most plans end with a *closing* episode (a partition, crashed or paused nodes, a loss burst)
    still in force when the safety phase ends, so the liveness phase measures recovery from that
    fault, not from a cluster that had already healed itself."""
    acts: list[Action] = []
    start, end = SEC // 2, duration_ns
    nodes = list(nodes)

    def closing(p: float, lo: float, hi: float) -> int:
        """When the closing episode starts (``end``: no closing episode)."""
        if rng.random() >= p:
            return end
        return max(start, end - int(rng.uniform(lo, hi) * SEC))

    if plan.partitions_per_min:
        close = closing(0.8, 0.5, 8.0)
        for a, b in _windows(rng, plan.partitions_per_min, start, close, (0.3, 10.0)):
            acts.append(Action(a, "partition", shape=rng.choice(SHAPES + ("halves", "majority", "isolate"))))
            if b < close:
                acts.append(Action(b, "heal"))
        if close < end:
            acts.append(Action(close, "partition", shape=rng.choice(SHAPES)))

    if plan.loss_bursts_per_min:
        close = closing(0.5, 0.5, 5.0)
        for a, b in _windows(rng, plan.loss_bursts_per_min, start, close, (0.5, 5.0)):
            acts.append(Action(a, "loss_burst", links=_burst_links(rng, nodes), value=rng.uniform(0.5, 1.0)))
            if b < close:
                acts.append(Action(b, "loss_burst_end"))
        if close < end:
            acts.append(Action(close, "loss_burst", links=_burst_links(rng, nodes), value=rng.uniform(0.5, 1.0)))

    rate = plan.crashes_per_node_min + plan.pauses_per_node_min
    closers = set(rng.sample(nodes, rng.randint(1, max(1, len(nodes) // 2)))) if rate else set()
    for n in nodes:
        close = closing(0.8, 0.1, 5.0) if n in closers else end
        t, up = start, True
        while rate > 0:
            t += int(rng.expovariate(rate / 60.0) * SEC)
            if t >= close:
                break
            kind, back, d = _down(rng, plan, rate)
            acts.append(Action(t, kind, node=n))
            t += d
            if t >= close:
                up = False  # still down when the closing episode would start: that is the closer
                break
            acts.append(Action(t, back, node=n))
        if close < end and up:
            acts.append(Action(close, _down(rng, plan, rate)[0], node=n))

    for a, _b in _windows(rng, plan.clock_steps_per_min, start, end, (0.0, 0.0)):
        step = int(rng.uniform(-1.5, 1.5) * max_offset_ns) if rng.random() < 0.5 else int(rng.uniform(-50, 50) * MS)
        acts.append(Action(a, "clock_step", node=rng.choice(nodes), value=step))

    acts.sort(key=lambda x: x.at_ns)  # stable: same-time actions keep their generation order
    return Schedule(_sanitize(acts))


def _burst_links(rng: random.Random, nodes: list[str]) -> tuple[tuple[str, str], ...]:
    if rng.random() < 0.5:  # one node's links, both ways
        n = rng.choice(nodes)
        return tuple([(n, m) for m in nodes if m != n] + [(m, n) for m in nodes if m != n])
    return tuple((x, y) for x in nodes for y in nodes if x != y and rng.random() < 0.3)


def _down(rng: random.Random, plan: FaultPlan, rate: float) -> tuple[str, str, int]:
    """A crash (mostly seconds, sometimes a restart within tens of ms: a supervisor loop) or a pause."""
    if rng.random() * rate < plan.crashes_per_node_min:
        d = int((rng.uniform(0.005, 0.08) if rng.random() < 0.2 else rng.uniform(0.2, 8.0)) * SEC)
        return "crash", "restart", d
    return "pause", "resume", int(rng.uniform(0.02, 4.0) * SEC)


def leader_schedule(rng: random.Random, plan: FaultPlan, duration_ns: int) -> list[Action]:
    """Strong mode's extra nemesis: faults aimed at the current leader, the node whose failure
    tests the sequencer. Drawn from its own stream, so the eventual-mode schedule of a seed is the
    same with or without it. Each kind only with the plan's matching fault: ``partition`` isolates
    the leader, ``reorder`` slows what it sends by 0.1-1 s (its old-term messages then arrive after
    an election), ``pause`` freezes it; 0.2-2 s each, over the whole safety phase."""
    kinds = []
    if plan.partitions_per_min:
        kinds.append("leader_isolate")
    if plan.reorder:
        kinds.append("leader_slow")
    if plan.pauses_per_node_min:
        kinds.append("leader_pause")
    if not kinds:
        return []
    out = []
    per_min = rng.choice((2.0, 6.0, 12.0))
    for a, b in _windows(rng, per_min, SEC // 2, duration_ns - SEC // 2, (0.2, 2.0)):
        kind = rng.choice(kinds)
        extra = rng.randint(100 * MS, 1000 * MS) if kind == "leader_slow" else 0
        out.append(Action(a, kind, value=extra, dur_ns=b - a))
    return out


def _sanitize(acts: list[Action]) -> list[Action]:
    """Per node, a crash / pause window may only start once the previous one ended."""
    busy: dict[str, str] = {}
    out = []
    for a in acts:
        if a.kind in ("crash", "pause"):
            if a.node in busy:
                continue
            busy[a.node] = a.kind
        elif a.kind in ("restart", "resume"):
            want = "crash" if a.kind == "restart" else "pause"
            if busy.get(a.node) != want:
                continue
            del busy[a.node]
        out.append(a)
    return out


def scripted(steps: Iterable[Sequence[Any]]) -> Schedule:
    """A schedule from ``(seconds, kind, arg...)`` tuples, for targeted tests. Examples::

        (1.0, "partition", "halves")            (1.0, "partition", [["n1", "n2"], ["n3"]])
        (4.0, "heal")                           (2.0, "crash", "n2"),  (3.0, "restart", "n2")
        (2.0, "pause", "n1"), (2.5, "resume", "n1")
        (1.0, "clock_step", "n3", -0.7)         # seconds
        (1.0, "loss_burst", 0.9), (2.0, "loss_burst_end")   # on every link
        (2.0, "leader_isolate", 1.0)            # strong: the leader (with shards: of the next shard
                                                # in turn) cut off for 1 s; also leader_pause
    """
    acts = []
    for step in steps:
        at, kind, *args = step
        at_ns = int(at * SEC)
        if kind == "partition":
            spec = args[0]
            if isinstance(spec, str):
                acts.append(Action(at_ns, kind, shape=spec))
            else:
                acts.append(Action(at_ns, kind, shape="groups", groups=tuple(tuple(g) for g in spec)))
        elif kind in ("heal", "loss_burst_end"):
            acts.append(Action(at_ns, kind))
        elif kind in ("crash", "restart", "pause", "resume"):
            acts.append(Action(at_ns, kind, node=args[0]))
        elif kind == "clock_step":
            acts.append(Action(at_ns, kind, node=args[0], value=int(args[1] * SEC)))
        elif kind == "loss_burst":
            acts.append(Action(at_ns, kind, links=(), value=float(args[0])))
        elif kind in ("leader_isolate", "leader_pause"):
            acts.append(Action(at_ns, kind, dur_ns=int(args[0] * SEC)))
        else:
            raise UsageError(f"unknown nemesis action {kind!r}")
    acts.sort(key=lambda x: x.at_ns)
    return Schedule(acts)
