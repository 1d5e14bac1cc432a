"""One seeded run as a result record, and the summary of many.

``run_seed(seed, config, break_name)`` builds a ``Simulation``, runs it (inside the named break, if
any) and returns a ``RunResult``: plain data the CLI prints as a table or JSON. ``replay_command``
is the one line that reproduces a run; ``summarize`` turns a list of results into the figures the
CLI reports (failures, convergence percentiles overall and per fault type, messages per op).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..core.gossip import GossipConfig
from ..core.shards import SHARD_BREAKS
from .breaks import MEMBER_BREAKS, RISK_BREAKS, STRONG_BREAKS, broken
from .clock import SEC
from .cluster import SimConfig, Simulation
from .nemesis import FAULTS


@dataclass(slots=True)
class RunResult:
    seed: int
    ok: bool
    violations: list[dict[str, Any]]
    violation_counts: dict[str, int]
    convergence_s: float | None  # virtual seconds from the heal to one digest everywhere
    finality_s: float | None  # ... to every op final everywhere (None: not reached or not required)
    msgs_per_op: float  # node-to-node datagrams per op in the op-set
    bytes_per_op: float
    op_msgs_per_op: float  # of which OpBatch datagrams (push and repair)
    ops: int
    trades: int
    revised_trades: int  # distinct trade ids some replica revised
    final_trades: int  # trades final on every replica at the end
    orders: int
    acked: int
    rejected: int
    faults: list[str]
    plan: dict[str, Any]
    trace_hash: str
    wall_s: float
    virtual_s: float
    nemesis_actions: int
    counters: dict[str, int] = field(default_factory=dict)
    command: str = ""
    mode: str = "eventual"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def replay_command(seed: int, cfg: SimConfig, break_name: str | None = None) -> str:
    """The one command line that replays ``seed`` exactly."""
    faults = ",".join(cfg.faults) if cfg.faults else "none"
    parts = ["gossipbook sim"] + (["--mode strong"] if cfg.mode == "strong" else []) + (
             [f"--shards {cfg.shards}"] if cfg.shards > 1 else []) + [
             f"--nodes {cfg.nodes}", f"--seed {seed}", f"--duration {cfg.duration_s:g}",
             f"--orders {cfg.orders}", f"--faults {faults if tuple(cfg.faults) != FAULTS else 'all'}"]
    if cfg.bound_s != SimConfig().bound_s:
        parts.append(f"--bound {cfg.bound_s:g}")
    if cfg.risk:
        parts.append("--risk")
    if cfg.members:
        parts.append("--members")
    if break_name:
        parts.append(f"--break {break_name}")
    if cfg.gossip is not None:
        parts += [f"--gossip {f.name}={getattr(cfg.gossip, f.name)}".replace("=True", "=true").replace("=False", "=false")
                  for f in dataclasses.fields(cfg.gossip)
                  if getattr(cfg.gossip, f.name) != getattr(GossipConfig(), f.name)]
    return " ".join(parts)


def run_seed(seed: int, cfg: SimConfig, break_name: str | None = None,
             trace: Callable[[str], None] | None = None) -> RunResult:
    t0 = time.perf_counter()
    if break_name in SHARD_BREAKS:  # a ShardedStrongCore rule, not a sequencer one (shards.py)
        cfg = dataclasses.replace(cfg, shard_breaks=frozenset({break_name}))
    elif break_name in STRONG_BREAKS:
        cfg = dataclasses.replace(cfg, seq_breaks=frozenset({break_name}))
    if break_name in RISK_BREAKS and not cfg.risk:  # a risk break needs the risk workload to show
        cfg = dataclasses.replace(cfg, risk=True)
    if break_name in MEMBER_BREAKS and not cfg.members:  # a membership break needs membership changes
        cfg = dataclasses.replace(cfg, members=True)
    with broken(break_name):
        sim = Simulation(seed, cfg, trace=trace).run()
    wall = time.perf_counter() - t0
    ck = sim.checker
    reps = [n.core.replica for n in sim.nodes.values() if n.core is not None]
    ops = max((r.op_count for r in reps), default=0)
    st = sim.stats
    heal = sim.heal_t
    conv = (sim.converged_t - heal) / SEC if sim.converged_t is not None and heal is not None else None
    fin = (sim.final_t - heal) / SEC if sim.final_t is not None and heal is not None else None
    counters: dict[str, int] = {
        "datagrams": st.msgs, "client_datagrams": st.client_msgs, "delivered": st.delivered,
        "dropped_node_down": st.dropped_down, "dropped_socket_buffer": st.dropped_buffer,
        "dropped_replay_guard": st.dropped_replay, "steps": st.steps, "ticks": st.ticks,
        "busy_ticks": sim.busy_ticks, "boots": sum(n.boots for n in sim.nodes.values()),
    }
    counters.update({f"net_{k}": v for k, v in sim.net.counters.items()})
    counters.update({f"msg_{k}": v for k, v in sorted(st.by_type.items())})
    for key in ("replays", "replayed_ops", "revised_trades", "held_back_clock", "snapshots_installed",
                "compactions", "duplicates", "waiting_gap"):
        counters[f"replica_{key}"] = sum(r.counters.get(key, 0) for r in reps)
    if sim.strong:  # (per node life: a restart starts its counters over)
        # (with shards: every sequencer group of every node)
        cores = [g for n in sim.nodes.values() if n.core is not None
                 for g in getattr(n.core, "groups", [n.core])]
        for key in ("elections", "became_leader", "step_downs", "snapshots_sent", "snapshots_installed",
                    "votes_misaddressed"):
            counters[f"seq_{key}"] = sum(c.seq.counters.get(key, 0) for c in cores)
        for key in ("no_quorum", "resubmitted", "forwards_out", "forward_retries", "client_timeouts", "compactions"):
            counters[f"strong_{key}"] = sum(c.counters.get(key, 0) for c in cores)
        counters["strong_committed_entries"] = len(sim.strong_checker.log)
    wl = sim.workload.counters
    for key in ("foreign", "foreign_refused", "foreign_acked", "mass_cancels"):
        counters[f"client_{key}"] = wl[key]
    counters["replica_not_owner"] = sum(r.counters.get("not_owner", 0) for r in reps)
    if cfg.risk:  # (per node life, as the replica counters above)
        for key in ("risk_sent", "risk_refused", "risk_admin_acked"):
            counters[f"client_{key}"] = wl.get(key, 0)
        for key in sorted({k for r in reps for k in r.counters if k.startswith("risk_")}):
            counters[f"replica_{key}"] = sum(r.counters.get(key, 0) for r in reps)
        counters["risk_samples"] = ck.risk_samples
    if sim.members is not None:  # membership changes (members.py)
        counters.update({f"members_{k}": v for k, v in sim.members.nem.counters.items()})
        counters["members_added"] = len(sim.members.nem.added)
        counters["members_removed"] = len(sim.members.nem.removed)
        for key in ("fenced", "fenced_cut", "non_member_ops"):
            counters[f"replica_{key}"] = sum(r.counters.get(key, 0) for r in reps)
    return RunResult(
        seed=seed, ok=ck.ok, violations=[v.to_json() for v in ck.first()], violation_counts=dict(ck.counts),
        convergence_s=conv, finality_s=fin,
        msgs_per_op=round(st.msgs / ops, 2) if ops else 0.0,
        bytes_per_op=round(st.bytes / ops, 1) if ops else 0.0,
        op_msgs_per_op=round(st.op_msgs / ops, 2) if ops else 0.0,
        ops=ops, trades=max((r.trade_count for r in reps), default=0), revised_trades=len(ck.revised_ids),
        final_trades=min((r.trades_final() for r in reps), default=0),
        orders=wl["submitted"], acked=wl["acked"], rejected=wl["rejected"],
        faults=sim.plan.active(), plan=sim.plan.to_json(), trace_hash=sim.trace_hash,
        wall_s=round(wall, 3), virtual_s=round((sim.end_t - sim.start) / SEC, 3),
        nemesis_actions=len(sim.schedule) + len(sim.leader_faults), counters=counters,
        command=replay_command(seed, cfg, break_name), mode=cfg.mode)


def percentile(xs: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (``p`` in 0..100); None for no data."""
    if not xs:
        return None
    s = sorted(xs)
    k = max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))
    return s[k]


def _stats(rs: Sequence[RunResult]) -> dict[str, Any]:
    conv = [r.convergence_s for r in rs if r.convergence_s is not None]
    fin = [r.finality_s for r in rs if r.finality_s is not None]
    ops = sum(r.ops for r in rs)

    def rnd(x: float | None, n: int = 3) -> float | None:
        return None if x is None else round(x, n)

    return {
        "runs": len(rs), "failures": sum(not r.ok for r in rs),
        "convergence_s": {"p50": rnd(percentile(conv, 50)), "p99": rnd(percentile(conv, 99)),
                          "max": rnd(max(conv) if conv else None)},
        "finality_s": {"p50": rnd(percentile(fin, 50)), "p99": rnd(percentile(fin, 99)),
                       "max": rnd(max(fin) if fin else None)},
        "msgs_per_op": rnd(sum(r.msgs_per_op * r.ops for r in rs) / ops if ops else None, 2),
        "bytes_per_op": rnd(sum(r.bytes_per_op * r.ops for r in rs) / ops if ops else None, 1),
        "op_msgs_per_op": rnd(sum(r.op_msgs_per_op * r.ops for r in rs) / ops if ops else None, 2),
        "ops_per_run": rnd(ops / len(rs) if rs else None, 1),
        "trades_per_run": rnd(sum(r.trades for r in rs) / len(rs) if rs else None, 1),
        "revised_per_run": rnd(sum(r.revised_trades for r in rs) / len(rs) if rs else None, 1),
        "wall_s_per_run": rnd(sum(r.wall_s for r in rs) / len(rs) if rs else None, 3),
    }


def summarize(results: Sequence[RunResult]) -> dict[str, Any]:
    """Overall figures, and the same per fault type (over the seeds where that fault was active)."""
    out = _stats(results)
    out["by_fault"] = {f: _stats([r for r in results if f in r.faults]) for f in FAULTS
                       if any(f in r.faults for r in results)}
    none = [r for r in results if not r.faults]
    if none:
        out["by_fault"]["none"] = _stats(none)
    return out
