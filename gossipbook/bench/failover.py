"""Strong-mode failover: SIGKILL the sequencer leader, time until a new leader commits a client order.

One round: find the leader (every live node names the same one), SIGKILL it, and at once send an
order to a surviving node, again and again (a new request id after each "no quorum") until one is
acknowledged -- committed by a majority under a new leader. The failover time is kill -> that ack,
so it holds the dead leader's detection (an election timeout), the pre-vote and vote round trips,
the new leader's no-op commit and the relay of the order. Then the killed node is restarted (on its
data dir with ``--data``) and must catch up to the leader's commit index before the next round.

Run: ``python -m gossipbook.bench.failover --nodes 3 --kills 20 [--data] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from ..config import ClusterConfig, load, write_private
from ..core.ops import NEW
from ..core.wire import ClientSubmit
from .procs import cluster_text, wait_leader
from .stats import latency_summary

OK, E_NO_QUORUM = 0, 4


class StrongCluster:
    """``n`` strong-mode node processes on loopback, each restartable; a context manager."""

    def __init__(self, n: int, data: bool = False, extra_config: str = "", root: Path | None = None) -> None:
        self._own_dir = root is None  # a temp dir of ours: removed on exit
        self.dir = root or Path(tempfile.mkdtemp(prefix="gossipbook-failover-"))
        text = cluster_text(n, "strong", str(self.dir / "data") if data else None)
        self.config_path = self.dir / "cluster.toml"
        write_private(self.config_path, text + extra_config)
        self.cfg: ClusterConfig = load(self.config_path)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, nid: str, *args: str) -> None:
        log = open(self.dir / f"{nid}.log", "a")
        self.procs[nid] = subprocess.Popen(
            [sys.executable, "-m", "gossipbook", "node", "-c", str(self.config_path), "--id", nid,
             "--log-level", "info", *args], stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
        log.close()

    def kill(self, nid: str) -> None:
        p = self.procs[nid]
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)

    def __enter__(self) -> StrongCluster:
        for nid in self.cfg.ids:
            self.start(nid)
        return self

    def __exit__(self, *exc: Any) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=5)
        if self._own_dir and exc[0] is None:  # on an error keep the logs for a look
            shutil.rmtree(self.dir, ignore_errors=True)

    def status(self, timeout: float = 0.5) -> dict[str, dict[str, Any]]:
        from ..cli.status import gather_status
        return {s["id"]: s for s in trio.run(gather_status, self.cfg, timeout)}

    def wait_leader(self, ids: list[str] | None = None, timeout: float = 20.0,
                    caught_up: bool = False) -> tuple[str, dict[str, dict[str, Any]]]:
        """``procs.wait_leader`` over ``ids`` (default: every running node)."""
        ids = ids or [n for n, p in self.procs.items() if p.poll() is None]
        return wait_leader(self.cfg, ids, timeout, caught_up, where=f"; logs in {self.dir}")


async def time_to_commit(cfg: ClusterConfig, nodes: list[str], limit_s: float = 10.0,
                         price: int = 10_000) -> tuple[float, dict[str, int]]:
    """Send orders to ``nodes`` in turn until one is acknowledged; seconds taken and reply codes seen."""
    from ..node.client import Client, Unreachable

    codes: dict[str, int] = {}
    t0 = time.perf_counter()
    async with Client(cfg, retry_s=0.1) as c:
        i = 0
        while time.perf_counter() - t0 < limit_s:
            node = nodes[i % len(nodes)]
            i += 1
            req = c.new_req()
            msg = ClientSubmit(req, NEW, cfg.instruments[0].symbol, "", i % 2, price, 1, 0, 0, 3000)
            try:
                rep = await c.request(node, msg, req, 4.0)
            except Unreachable:
                codes["unreachable"] = codes.get("unreachable", 0) + 1
                continue
            key = {OK: "ok", E_NO_QUORUM: "no_quorum"}.get(rep.code, str(rep.code))
            codes[key] = codes.get(key, 0) + 1
            if rep.code == OK:
                return time.perf_counter() - t0, codes
    raise RuntimeError(f"no order acknowledged within {limit_s} s ({codes})")


def run_failover(nodes: int = 3, kills: int = 20, data: bool = False) -> dict[str, Any]:
    samples: list[int] = []
    rounds = []
    with StrongCluster(nodes, data=data) as sc:
        leader, _st = sc.wait_leader()
        trio.run(time_to_commit, sc.cfg, [n for n in sc.cfg.ids if n != leader])  # warm: a first commit
        for k in range(kills):
            leader, st = sc.wait_leader(caught_up=True)
            survivors = [n for n in sc.cfg.ids if n != leader]
            term = st[leader]["term"]
            sc.kill(leader)
            took, codes = trio.run(time_to_commit, sc.cfg, survivors)
            samples.append(int(took * 1e9))
            new_leader, st2 = sc.wait_leader(survivors)
            rounds.append({"round": k + 1, "killed": leader, "term": term, "new_leader": new_leader,
                           "new_term": st2[new_leader]["term"], "failover_ms": round(took * 1e3, 1), "replies": codes})
            sc.start(leader)
        sc.wait_leader(caught_up=True)
    s = latency_summary(samples)
    return {"nodes": nodes, "kills": kills, "data_dir": data,
            "failover_ms": {"p50": s["p50_us"] / 1e3, "p99": s["p99_us"] / 1e3, "max": s["max_us"] / 1e3},
            "rounds": rounds}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gossipbook.bench.failover", description=__doc__.split("\n")[0])
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--data", action="store_true", help="give every node a data dir (restarts recover from it)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    res = run_failover(args.nodes, args.kills, args.data)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        f = res["failover_ms"]
        for r in res["rounds"]:
            print(f"round {r['round']:2d}: killed {r['killed']} (term {r['term']}) -> {r['new_leader']} "
                  f"(term {r['new_term']}) committed after {r['failover_ms']} ms  {r['replies']}")
        print(f"failover over {args.kills} leader kills ({args.nodes} nodes): p50 {f['p50']:.0f} ms, "
              f"p99 {f['p99']:.0f} ms, max {f['max']:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
