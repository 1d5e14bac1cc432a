"""Instrument groups in eventual mode: K independent clusters side by side, the instruments split.

``python -m gossipbook.bench.groups --nodes 4 --groups 1,2`` runs, for each K, K eventual-mode
clusters of ``--nodes`` node processes each at the same time on this host (each cluster its own
name, peer key and loopback ports: nothing is shared but the machine), the bench's 4 instruments
(``--instruments``) dealt round robin among them (``ShardMap.round_robin``; K = 1 is today's single cluster, the
baseline, measured in the same run). It is the "one node process per instrument group" design of
issue 21: a host that runs one node of every group puts K single-threaded processes on its cores,
and an op costs only the processes of its own group.

Every node stamps ``--ops / K`` orders itself (``node --generate``, as ``bench throughput``: no
client process), all groups from the same instant, so every K folds the same total number of ops
on the same number of processes per group. The generator stamps onto its cluster's first
instrument (``Runner.generate``), so K groups trade K of the 4 instruments; a book's fold cost per
op does not depend on the idle books beside it. Reported per K:

- ``ops_per_s``: every op of every group held by every node of its group, over the span from the
  first op stamped in any group to the last one folded anywhere (the traces);
- ``cpu_us_per_op_per_node``: every node process's CPU (``/proc``) over the window, per op and per
  replica that folds it (each op is folded by the ``--nodes`` processes of its group): the figure
  whose K = 2 / K = 1 ratio is the design's overhead;
- ``datagrams_per_op`` and ``bytes_per_op``: what every node sent, per op;
- ``estimate``: the capacity per host for C cores, ``min(K, C) x cpu(K=1) / cpu(K)``, K's
  processes each held to one core (a node is one trio thread), instruments' load even.

On a 2-core box the K = 1 nodes already fill both cores, so ops/s stays flat; the overhead is the
finding. Runs are bounded: each K stops by itself after ``--timeout`` seconds at most.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import trio

from ..config import load, write_private
from ..core.instrument import DEFAULT_INSTRUMENT
from ..core.shards import ShardMap
from .procs import ProcCluster, cluster_text
from .split import timed_floor

#: the bench's instruments by default (the default one's rules); K groups hold them round robin
SYMBOLS = ("GBX", "GBX2", "GBX3", "GBX4")


def symbols(n: int) -> tuple[str, ...]:
    """``n`` instruments, ``GBX``, ``GBX2``, ... (``--instruments``: K can be at most ``n``)."""
    return ("GBX",) + tuple(f"GBX{i}" for i in range(2, n + 1))
CORES = (2, 4, 8, 16)


def _instrument_lines(symbols: tuple[str, ...]) -> str:
    out = []
    for sym in symbols:
        conf = {**DEFAULT_INSTRUMENT.to_config(), "symbol": sym}
        out += ["[[instruments]]"] + [f"{k} = {json.dumps(v)}" for k, v in conf.items()] + [""]
    return "\n".join(out)


def group_text(nodes: int, symbols: tuple[str, ...]) -> str:
    """An eventual-mode ``cluster.toml`` for ``nodes`` nodes on free loopback ports (its own name
    and key) trading ``symbols``."""
    text = cluster_text(nodes)
    head, sep, tail = text.partition("[[instruments]]")
    rest = tail.partition("\n\n")[2]  # the default instrument's table ends at the first blank line
    return head + _instrument_lines(symbols) + "\n" + rest if sep else text


class GroupCluster(ProcCluster):
    """``ProcCluster`` whose config trades ``symbols`` (one instrument group)."""

    def __init__(self, nodes: int, symbols: tuple[str, ...], node_args: list[str]) -> None:
        super().__init__(nodes, node_args=node_args)
        write_private(self.config_path, group_text(nodes, symbols))
        self.cfg = load(self.config_path)
        self.symbols = symbols

    def wait_ready(self, timeout: float = 90) -> None:
        """K groups start at once: on a loaded 2-core box 16 processes take more than the 20 s
        ``ProcCluster`` allows one cluster."""
        super().wait_ready(timeout)


def _progress(pcs: list[GroupCluster], per_group: int) -> bool:
    """Every node of every group holds its group's ``per_group`` ops and has none pending."""
    from ..cli.status import gather_status

    for pc in pcs:
        pr = trio.run(gather_status, pc.cfg, 1.0, "progress")
        if not all(p.get("reachable") and p.get("ops", 0) >= per_group and not p.get("pending") for p in pr):
            return False
    return True


def _cpu(pcs: list[GroupCluster]) -> float | None:
    parts = [pc.cpu_seconds() for pc in pcs]
    return None if any(p is None for p in parts) else sum(p for p in parts if p is not None)


def run_groups(k: int, nodes: int = 4, ops: int = 3000, timeout_s: float = 60,
               start_s: float | None = None, instruments: int = len(SYMBOLS)) -> dict[str, Any]:
    """K clusters of ``nodes`` side by side, every node stamping ``ops // k`` orders from the same
    instant, ``start_s`` after the processes are launched (default 3 s + 1 s per process; a start
    missed because the groups were not all ready is run again with twice the lead, and
    ``late_start`` says if it was missed again); what each group held, and the totals."""
    start_s = start_s if start_s is not None else 3.0 + 1.0 * nodes * k
    smap = ShardMap.round_robin(symbols(instruments), k)
    per_node = max(1, ops // k)
    per_group = per_node * nodes
    for lead in (start_s, 2 * start_s):  # a start missed (a loaded box) is run again, once, later
        start = time.monotonic() + lead  # every group's nodes start stamping at this instant
        with contextlib.ExitStack() as stack:
            pcs = _start_all(stack, [GroupCluster(nodes, tuple(smap.shards[g]),
                                                  ["--generate", f"0:{per_node}:@{start:.3f}"]) for g in range(k)])
            late = time.monotonic() > start - 0.1
            if late and lead == start_s:
                continue
            return _measure(pcs, per_group, start, timeout_s) | {"late_start": late, "start_s": lead}
    raise AssertionError("unreachable")


def _start_all(stack: contextlib.ExitStack, pcs: list[GroupCluster]) -> list[GroupCluster]:
    """Start every group's processes at once (one thread each: a loaded box takes seconds per
    group) and wait until all are ready; whatever started is stopped on the way out."""
    for pc in pcs:
        stack.callback(pc.stop)
    with ThreadPoolExecutor(len(pcs)) as ex:
        for f in [ex.submit(pc.__enter__) for pc in pcs]:
            f.result()
    return pcs


def _measure(pcs: list[GroupCluster], per_group: int, start: float, timeout_s: float) -> dict[str, Any]:
    """Wait for the start, then until every group is held everywhere (at most ``timeout_s``);
    the nodes' CPU over that window, their counters and traces."""
    from ..cli.status import gather_status

    k, nodes = len(pcs), len(pcs[0].cfg.ids)
    deadline = time.monotonic() + timeout_s
    time.sleep(max(0.0, start - 0.05 - time.monotonic()))
    wall0, cpu0 = time.monotonic(), _cpu(pcs)  # the CPU window: from the start until all held
    while time.monotonic() < deadline and not _progress(pcs, per_group):
        time.sleep(0.1)
    cpu1, wall1 = _cpu(pcs), time.monotonic()
    counters = [[s.get("counters", {}) for s in trio.run(gather_status, pc.cfg, 1.0)] for pc in pcs]
    traces = [pc.stop() for pc in pcs]
    groups = []
    for pc, tr, cs in zip(pcs, traces, counters, strict=True):
        stamps = [v for t in tr.values() for v in t.values()]
        groups.append({"symbols": list(pc.symbols), "ops": per_group,
                       "held_min": min(len(t) for t in tr.values()),
                       "complete": all(len(t) >= per_group for t in tr.values()),
                       "first_ns": min(stamps, default=0), "last_ns": max(stamps, default=0),
                       "dgrams_out": sum(c.get("dgrams_out", 0) for c in cs),
                       "bytes_out": sum(c.get("bytes_out", 0) for c in cs)})
    total = per_group * k
    elapsed = (max(g["last_ns"] for g in groups) - min(g["first_ns"] for g in groups)) / 1e9
    cpu = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
    dgrams = sum(g["dgrams_out"] for g in groups)
    return {"groups": k, "nodes": nodes, "processes": k * nodes, "ops": total, "per_node": per_group // nodes,
            "complete": all(g["complete"] for g in groups), "elapsed_s": round(elapsed, 3),
            "ops_per_s": round(total / elapsed) if elapsed > 0 else None,
            "cpu_us_per_op_per_node": round(cpu * 1e6 / (total * nodes), 2) if cpu is not None else None,
            "cores_busy": round(cpu / (wall1 - wall0), 2) if cpu is not None else None,
            "datagrams_per_op": round(dgrams / total, 3),
            "bytes_per_op": round(sum(g["bytes_out"] for g in groups) / total, 1),
            "per_group": [{k2: v for k2, v in g.items() if not k2.endswith("_ns")} for g in groups]}


def estimate(cpu_1: float, cpu_k: float, k: int) -> dict[str, float]:
    """Capacity per host relative to one cluster, for C cores: K processes per host each get one
    core at most (a node is one thread), every op costs ``cpu_k`` on each process of its group."""
    return {f"C={c}": round(min(k, c) * cpu_1 / cpu_k, 2) for c in CORES}


def run(ks: list[int], nodes: int = 4, ops: int = 3000, rounds: int = 1, timeout_s: float = 60,
        instruments: int = len(SYMBOLS)) -> dict[str, Any]:
    """``rounds`` passes over ``ks`` (alternating, so a change in the machine's load hits every K
    alike); per K the median of its rounds, its ratio to K = 1 and the estimate per core count."""
    floor = timed_floor(4000, 3)
    runs = [run_groups(k, nodes, ops, timeout_s, instruments=instruments) for _ in range(rounds) for k in ks]
    out: dict[str, Any] = {"floor_cpu_us_per_op": round(floor["decode_us_per_op"] + floor["fold_us_per_op"], 2),
                           "floor": floor, "runs": runs, "by_k": {}}
    for k in ks:
        mine = [r for r in runs if r["groups"] == k]
        med = {f: statistics.median(r[f] for r in mine if r[f] is not None)
               for f in ("ops_per_s", "cpu_us_per_op_per_node", "datagrams_per_op", "cores_busy")
               if any(r[f] is not None for r in mine)}
        out["by_k"][k] = {**med, "complete": all(r["complete"] for r in mine)}
    base = out["by_k"].get(1, {}).get("cpu_us_per_op_per_node")
    for k, row in out["by_k"].items():
        if base and row.get("cpu_us_per_op_per_node"):
            row["cpu_vs_k1"] = round(row["cpu_us_per_op_per_node"] / base, 3)
            row["estimate_per_host"] = estimate(base, row["cpu_us_per_op_per_node"], k)
    return out


def table(res: dict[str, Any]) -> list[str]:
    lines = [f"floor (one process, no sockets): decode + auth {res['floor']['decode_us_per_op']} + fold "
             f"{res['floor']['fold_us_per_op']} = {res['floor_cpu_us_per_op']} us CPU per op"]
    for r in res["runs"]:
        lines.append(f"K={r['groups']} ({r['processes']} processes): {r['ops_per_s'] or 0:,} ops/s held everywhere "
                     f"({r['ops']} ops, {r['elapsed_s']} s, complete {r['complete']}), "
                     f"{r['cpu_us_per_op_per_node']} us CPU per op per node, {r['cores_busy']} cores busy, "
                     f"{r['datagrams_per_op']} datagrams/op, {r['bytes_per_op']} B/op")
    for k, row in res["by_k"].items():
        if "cpu_vs_k1" in row:
            est = ", ".join(f"{c} {x}x" for c, x in row["estimate_per_host"].items())
            lines.append(f"K={k}: CPU per op {row['cpu_vs_k1']}x K=1; capacity per host vs one cluster: {est}")
    return lines


def parse_groups(text: str, instruments: int = len(SYMBOLS)) -> list[int]:
    try:
        ks = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"--groups wants numbers like 1,2, not {text!r}") from None
    if not ks or not all(1 <= k <= instruments for k in ks):
        raise SystemExit(f"--groups: each K from 1 to {instruments} (the bench trades {instruments} instruments: "
                         "raise --instruments)")
    return ks


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gossipbook.bench.groups", description=__doc__.split("\n")[0])
    p.add_argument("--groups", default="1,2", help="comma-separated K values (default 1,2)")
    p.add_argument("--nodes", type=int, default=4, help="node processes per group (default 4)")
    p.add_argument("--ops", type=int, default=3000, help="orders each node stamps, split over the K groups")
    p.add_argument("--rounds", type=int, default=1, help="passes over the K values, alternating (default 1)")
    p.add_argument("--timeout", type=float, default=60, help="seconds a K may run at most (default 60)")
    p.add_argument("--instruments", type=int, default=len(SYMBOLS), help="instruments dealt to the groups (default 4)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    if (not 2 <= a.nodes <= 8 or not 1 <= a.ops <= 1_000_000 or not 1 <= a.rounds <= 20 or not 0 < a.timeout <= 600
            or not 1 <= a.instruments <= 64):
        raise SystemExit("--nodes 2-8, --ops 1-1000000, --rounds 1-20, --timeout up to 600 s, --instruments 1-64")
    res = run(parse_groups(a.groups, a.instruments), a.nodes, a.ops, a.rounds, a.timeout, a.instruments)
    print(json.dumps(res, indent=2) if a.json else "\n".join(table(res)))
    return 0 if all(r["complete"] for r in res["runs"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
