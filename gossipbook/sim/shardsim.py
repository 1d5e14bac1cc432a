"""The simulator's strong mode with shards (``SimConfig.shards`` > 1, ``gossipbook sim --shards K``).

What changes against one sequencer group (``cluster.py`` calls in here where it differs):

- **Venue**: K instruments (``GBX``, ``GBX2``, ... as ``cluster init --shards`` writes them), one per
  shard (``ShardMap.round_robin``); every node runs a ``ShardedStrongCore``, whose shard s keeps its
  sequencer state on a disk of its own (``storage.open_shards``' layout).
- **Workload** (``ShardedWorkload``): the same clients and draws; each NEW (and each mass cancel
  that names a symbol) gets a symbol drawn from a stream of its own (the seed's, not the
  workload's), so every shard takes orders and the other draws stay the same.
- **Checker** (``ShardedChecker``): one ``StrongChecker`` per shard, sharing the run's violation
  registry. Folds, digests and trades go to their shard's (a trade by its id's tag); a request's
  copies and replies to the shard it was routed to (``ShardMap.of_request``). A fan-out (mass
  cancel of every symbol, kill switch) is checked in every shard's log as committed there; its
  combined OK reply is held to shard 0's commit (its order id is shard 0's), and a combined
  refusal is not attributed (it may have happened on other shards: no cross-shard atomicity).
- **Nemesis**: the i-th leader-aimed fault strikes the leader of shard ``i mod K``.
- **Liveness**: settled when, in every shard, one leader is followed by every node and every fold
  is at its commit index with nothing waiting.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

from ..core.instrument import DEFAULT_INSTRUMENT, Venue
from ..core.node import OK
from ..core.ops import CANCEL_ALL, NEW, TradeExecuted
from ..core.shards import ShardedStrongCore, ShardMap, shard_of_order
from .clock import MS
from .disk import Disk
from .strong_check import StrongChecker
from .workload import RISK_CLIENTS, Request, Workload


def symbols(k: int) -> list[str]:
    """The instruments of a K-shard run (``config.render(shards=K)``'s names)."""
    base = DEFAULT_INSTRUMENT.symbol
    return [base] + [f"{base}{i}" for i in range(2, k + 1)]


class ShardedWorkload(Workload):
    """``Workload`` with each NEW's symbol (and a mass cancel's, when it names one) drawn from
    ``symbols`` by a stream of its own; risk clients keep the market's symbol (their limits name it)."""

    symbols: list[str]
    shard_rng: random.Random

    def new_request(self, client: str, t: int) -> Request:
        rq = super().new_request(client, t)
        m = rq.msg
        if client not in RISK_CLIENTS and (m.kind == NEW or (m.kind == CANCEL_ALL and m.symbol)):
            rq.msg = m._replace(symbol=self.shard_rng.choice(self.symbols))
        return rq


class ShardedChecker:
    """One ``StrongChecker`` per shard behind ``StrongChecker``'s interface (see the module header)."""

    def __init__(self, base: Any, shard_map: ShardMap, workload: Workload) -> None:
        self.base = base
        self.map = shard_map
        self.workload = workload
        self.parts = [StrongChecker(base) for _ in range(shard_map.k)]

    def _shards(self, req: str) -> list[int]:
        rq = self.workload.requests.get(req)
        if rq is None:
            return [0]
        if self.map.fans_out(rq.msg):
            return list(range(self.map.k))
        return [self.map.of_request(rq.msg)]

    def booted(self, node: str) -> None:
        for p in self.parts:
            p.booted(node)

    def folded(self, s: int, node: str, index: int, op: Any, out: Any, t: int) -> None:
        self.parts[s].folded(node, index, op, out, t)

    def digest(self, s: int, node: str, index: int, digest: str, t: int) -> None:
        self.parts[s].digest(node, index, digest, t)

    def submitted(self, node: str, req: str, t: int) -> None:
        for s in self._shards(req):
            self.parts[s].submitted(node, req, t)

    def replied(self, node: str, req: str, code: int, order_id: str, rows: list[list[Any]], t: int) -> None:
        shards = self._shards(req)
        if len(shards) > 1:  # a fan-out's combined answer: an OK names shard 0's commit
            if code == OK:
                self.parts[0].replied(node, req, code, order_id, rows, t)
            return
        self.parts[shards[0]].replied(node, req, code, order_id, rows, t)

    def events(self, node: str, evs: list[Any], t: int) -> None:
        for ev in evs:
            if type(ev) is TradeExecuted:
                s = shard_of_order(ev.trade.trade_id.rpartition("/")[0], self.map.k)
                self.parts[s].events(node, [ev], t)

    def final_state(self, folds: dict[str, Any], t: int) -> None:
        for s, p in enumerate(self.parts):
            p.final_state({n: f.parts[s] for n, f in folds.items()}, t)

    def risk_check(self, fold: Any, node: str, t: int) -> None:
        for s, p in enumerate(self.parts):
            if hasattr(p, "risk_check"):
                p.risk_check(fold.parts[s], node, t)

    @property
    def log(self) -> dict[tuple[int, int], Any]:
        return {(s, i): f for s, p in enumerate(self.parts) for i, f in p.log.items()}

    @property
    def acks(self) -> dict[str, Any]:
        return {k: v for p in self.parts for k, v in p.acks.items()}

    @property
    def refused(self) -> dict[str, Any]:
        return {k: v for p in self.parts for k, v in p.refused.items()}


def setup(sim: Any) -> None:
    """Make ``sim`` (a ``Simulation`` being built) a sharded one: the venue, the map, the checker,
    each node's extra disks (shard 0's is the node's own)."""
    k = sim.cfg.shards
    syms = symbols(k)
    sim.venue = Venue.of([dataclasses.replace(DEFAULT_INSTRUMENT, symbol=s) for s in syms])
    sim.shard_map = ShardMap.round_robin(syms, k)
    wl = sim.workload
    wl.symbols, wl.shard_rng = syms, random.Random(f"gossipbook shards {sim.seed}")
    sim.strong_checker = ShardedChecker(sim.checker, sim.shard_map, wl)
    sim.shard_disks = {n: [sim.nodes[n].disk] + [Disk() for _ in range(k - 1)] for n in sim.ids}
    sim.shard_folded = {n: [-1] * k for n in sim.ids}
    sim.leader_fault_n = 0


def boot(sim: Any, node: Any, t: int, now: int) -> None:
    """``_boot_strong`` for a sharded node: each shard's stored state, the refold reported."""
    disks = sim.shard_disks[node.id]
    node.state = "up"
    sim._fresh_life(node, now)
    sim.shard_folded[node.id] = [-1] * sim.cfg.shards
    sc = sim.strong_checker
    sc.booted(node.id)

    def folded(s: int, index: int, op: Any, out: Any) -> None:
        sc.folded(s, node.id, index, op, out, sim.now)

    try:
        node.core = ShardedStrongCore(node.id, sim.ids, sim.venue, sim.shard_map,
                                      random.Random(sim._core_rng.getrandbits(64)), sim.strong_config,
                                      persisted=[d.seq for d in disks],
                                      incarnation=max(node.disk.incarnation + 1, now // MS),
                                      handed=[d.handed for d in disks], breaks=sim.cfg.shard_breaks,
                                      on_shard_fold=folded)
    except Exception as e:  # noqa: BLE001 - a core bug: report it, keep simulating
        sim._core_error(node, t, e)
        return
    sim._trace(t, f"{node.id} boot #{node.boots} strong, {sim.cfg.shards} shards, terms "
                  f"{[d.seq.term if d.seq else 0 for d in disks]}")
    sim._step(node, t, (), force_tick=True)


def flush(sim: Any, node: Any, t: int) -> None:
    """``_flush_strong`` for a sharded node: each shard's delta to its disk before anything leaves."""
    core = node.core
    disks = sim.shard_disks[node.id]
    for (d, handed), disk in zip(core.take_persist_shards(), disks, strict=True):
        disk.persist_seq(d, handed, core.membership.incarnation)
    sc = sim.strong_checker
    sim._send_outbox(node, core.outbox(), t,
                     lambda msg: sc.replied(node.id, msg.req, msg.code, msg.order_id, msg.trades, t))
    evs = core.events()
    if evs:
        sc.events(node.id, evs, t)
        sim._hash_events(node.id, t, evs)
    seen = sim.shard_folded[node.id]
    for s, g in enumerate(core.groups):
        if g.replica.index != seen[s]:
            seen[s] = g.replica.index
            sc.digest(s, node.id, g.replica.index, g.replica.digest(), t)


def leaders(sim: Any) -> list[tuple[int, str]]:
    """The leaders of the next shard in turn, as ``(term, node)`` (``_leader_fault`` aims at the top)."""
    s = sim.leader_fault_n % sim.cfg.shards
    sim.leader_fault_n += 1
    return [(n.core.groups[s].seq.term, n.id) for n in sim.nodes.values()
            if n.state == "up" and n.core is not None and n.core.groups[s].seq.role == "leader"]


def settled(cores: list[Any]) -> bool:
    """``_strong_settled`` per shard."""
    for s in range(len(cores[0].groups)):
        gs = [c.groups[s] for c in cores]
        lead = {g.seq.leader() for g in gs}
        if len(lead) != 1 or None in lead:
            return False
        commit = gs[0].seq.commit_index
        if any(g.seq.commit_index != commit or g.replica.index != commit or g._waits for g in gs):
            return False
        if len({g.replica.digest() for g in gs}) != 1:
            return False
    return True


def stall_detail(sim: Any, folds: dict[str, Any]) -> str:
    """What ``_finish_strong`` says of a sharded run that did not converge: every shard of every node."""
    return "; " + ", ".join(
        f"{n} shard {s}: {g.seq.role} term {g.seq.term} leader {g.seq.leader()} commit {g.seq.commit_index} "
        f"folded {g.replica.index} waiting {len(g._waits)}"
        for n in folds for s, g in enumerate(sim.nodes[n].core.groups))
