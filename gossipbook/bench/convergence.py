"""``bench convergence``: two halves of a 4-node cluster (separate processes) build a backlog of
diverged ops during a partition; then the partition heals and we time until every replica holds
the same ops and the same digest. The backlog is split evenly over the four nodes."""

from __future__ import annotations

import time
from typing import Any

import trio

from ..core.wire import ClientQuery
from .procs import ProcCluster


async def _faults(cfg: Any, plan: dict[str, str]) -> None:
    from ..node.client import Client

    async with Client(cfg) as c:
        for nid, blocked in plan.items():
            req = c.new_req()
            await c.request(nid, ClientQuery(req, "faults", blocked, 0), req, 2.0)


def _status(cfg: Any) -> list[dict[str, Any]]:
    from ..cli.status import gather_status
    return trio.run(gather_status, cfg, 1.5)


def run_convergence(backlog: int, nodes: int = 4, timeout_s: float = 120) -> dict[str, Any]:
    per = backlog // nodes
    with ProcCluster(nodes, trace=False, node_args=["--fault-control", "--generate", f"0:{per}:1.0"]) as pc:
        ids = pc.cfg.ids
        left, right = ids[: nodes // 2], ids[nodes // 2:]
        plan = {n: ",".join(right) for n in left} | {n: ",".join(left) for n in right}
        trio.run(_faults, pc.cfg, plan)
        deadline = time.monotonic() + timeout_s
        while True:  # each side holds its own backlog
            st = {s["id"]: s for s in _status(pc.cfg)}
            if all(st[n].get("ops", 0) >= per * len(left) for n in left) and \
                    all(st[n].get("ops", 0) >= per * len(right) for n in right):
                break
            if time.monotonic() > deadline:
                return {"backlog": backlog, "error": "backlog not built in time"}
            time.sleep(0.1)
        diverged = len({s["digest"] for s in st.values()}) > 1
        t0 = time.monotonic()
        trio.run(_faults, pc.cfg, {n: "" for n in ids})
        while True:
            st2 = _status(pc.cfg)
            if all(s.get("ops", 0) >= per * nodes for s in st2) and len({s["digest"] for s in st2}) == 1:
                took = time.monotonic() - t0
                break
            if time.monotonic() - t0 > timeout_s:
                return {"backlog": backlog, "error": "did not converge", "ops": [s.get("ops") for s in st2]}
            # status makes every node digest its books: poll often early (a 1k backlog converges in
            # ~0.1 s), then back off to 5% of the elapsed time so the probe does not slow the heal
            time.sleep(min(0.25, max(0.02, (time.monotonic() - t0) / 20)))
        return {"backlog": per * nodes, "nodes": nodes, "diverged": diverged,
                "convergence_s": round(took, 3),
                "repair_ops": sum(s["counters"].get("repair_ops", 0) for s in st2),
                "revised_trades": sum(s["counters"].get("revised_trades", 0) for s in st2)}
