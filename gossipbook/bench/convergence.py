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


def _status(cfg: Any, what: str = "status") -> list[dict[str, Any]]:
    from ..cli.status import gather_status
    return trio.run(gather_status, cfg, 10.0, what)


def run_convergence(backlog: int, nodes: int = 4, timeout_s: float = 120) -> dict[str, Any]:
    per = backlog // nodes
    with ProcCluster(nodes, trace=False, node_args=["--fault-control", "--generate", f"0:{per}:1.0"]) as pc:
        ids = pc.cfg.ids
        left, right = ids[: nodes // 2], ids[nodes // 2:]
        plan = {n: ",".join(right) for n in left} | {n: ",".join(left) for n in right}
        trio.run(_faults, pc.cfg, plan)
        deadline = time.monotonic() + timeout_s
        while True:  # each side holds its own backlog
            st = {s["id"]: s for s in _status(pc.cfg, "progress")}
            if all(st[n].get("ops", 0) >= per * len(left) and not st[n].get("pending") for n in left) and \
                    all(st[n].get("ops", 0) >= per * len(right) and not st[n].get("pending") for n in right):
                break
            if time.monotonic() > deadline:
                return {"backlog": backlog, "error": "backlog not built in time"}
            time.sleep(0.1)
        diverged = len({s["digest"] for s in _status(pc.cfg)}) > 1
        t0 = time.monotonic()
        trio.run(_faults, pc.cfg, {n: "" for n in ids})
        while True:
            # poll the cheap progress query until every node has folded every op, then compare
            # digests (``status`` digests every book: tens of ms per node, too dear to poll a heal)
            pr = _status(pc.cfg, "progress")
            if all(p.get("ops", 0) >= per * nodes and not p.get("pending") for p in pr):
                took = time.monotonic() - t0  # nothing changes after this: every op is folded
                st2 = _status(pc.cfg)
                if len({s["digest"] for s in st2}) == 1:
                    break
            if time.monotonic() - t0 > timeout_s:
                return {"backlog": backlog, "error": "did not converge", "ops": [p.get("ops") for p in pr]}
            time.sleep(0.02)
        return {"backlog": per * nodes, "nodes": nodes, "diverged": diverged,
                "convergence_s": round(took, 3),
                "repair_ops": sum(s["counters"].get("repair_ops", 0) for s in st2),
                "revised_trades": sum(s["counters"].get("revised_trades", 0) for s in st2)}
