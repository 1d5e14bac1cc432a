"""Node processes for benchmarks: a temp config on free loopback ports, start, stop, collect traces."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..config import load, render, write_private


def free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def stop_procs(procs: Iterable[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every process still running (each leaves its cluster), then wait; kill what has not
    exited within 10 s."""
    procs = list(procs)
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def cluster_text(n: int, mode: str = "eventual", data_root: str | None = None) -> str:
    """A ``cluster.toml`` for ``n`` nodes on free loopback ports."""
    text = render(n, 7000, mode=mode, data_root=data_root)
    for i, p in enumerate(free_ports(n)):
        text = text.replace(f'addr = "127.0.0.1:{7000 + i}"', f'addr = "127.0.0.1:{p}"')
    return text


def wait_leader(cfg: Any, ids: list[str], timeout: float = 20.0, caught_up: bool = False,
                where: str = "") -> tuple[str, dict[str, dict[str, Any]]]:
    """The strong-mode leader every node of ``ids`` names (and that says it leads), with everyone's
    status; with ``caught_up`` also wait until they all have its commit index."""
    import trio

    from ..cli.status import gather_status
    deadline = time.monotonic() + timeout
    while True:
        st = {s["id"]: s for s in trio.run(gather_status, cfg, 0.5)}
        lead = {st[n].get("leader") for n in ids if st[n]["reachable"]}
        if all(st[n]["reachable"] for n in ids) and len(lead) == 1 and None not in lead:
            leader = lead.pop()
            if leader in st and st[leader].get("role") == "leader" and (
                    not caught_up or len({st[n]["commit_index"] for n in ids}) == 1):
                return leader, st
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {'caught-up ' if caught_up else ''}leader among {ids} within {timeout} s: "
                               f"{ {n: {k: st[n].get(k) for k in ('role', 'leader', 'term', 'commit_index')} for n in ids} }"
                               f"{where}")
        time.sleep(0.05)


class ProcCluster:
    """``n`` ``gossipbook node`` processes on loopback; use as a context manager."""

    def __init__(self, n: int, extra_config: str = "", trace: bool = True, node_args: list[str] | None = None,
                 fsync: str | None = None, mode: str = "eventual") -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="gossipbook-bench-"))
        text = cluster_text(n, mode, str(self.dir / "data") if fsync else None)
        if fsync:  # durable nodes: a data dir each, with this fsync policy
            text = text.replace('fsync = "batch"', f'fsync = "{fsync}"')
        self.config_path = self.dir / "cluster.toml"
        write_private(self.config_path, text + extra_config)
        self.cfg = load(self.config_path)
        self.trace = trace
        self.node_args = node_args or []
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        #: after ``stop``: per node, the runner's per-op stage stamps (``Runner.stages``)
        self.stages: dict[str, dict[str, list[int]]] = {}

    def __enter__(self) -> ProcCluster:
        for nid in self.cfg.ids:
            # GOSSIPBOOK_BENCH_PROFILE=DIR runs each node under cProfile, writing DIR/<id>.prof on exit
            prof = os.environ.get("GOSSIPBOOK_BENCH_PROFILE")
            run = ["-m", "cProfile", "-o", str(Path(prof) / f"{nid}.prof")] if prof else []
            args = [sys.executable, *run, "-m", "gossipbook", "node", "-c", str(self.config_path), "--id", nid,
                    "--log-level", "warning", *self.node_args]
            if self.trace:
                args += ["--trace", str(self.dir / f"{nid}.trace.json")]
            self.procs[nid] = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(self.dir / f"{nid}.log", "w"))
        try:
            self.wait_ready()
        except BaseException:  # not entered, so __exit__ will not run: stop what did start
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float = 20) -> None:
        import trio

        from ..cli.status import gather_status
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = trio.run(gather_status, self.cfg, 0.5)
            if all(s["reachable"] and s.get("ready") for s in st):
                return
            time.sleep(0.1)
        raise RuntimeError(f"benchmark nodes did not start; logs in {self.dir}")

    def cpu_seconds(self) -> float | None:
        """User + system CPU the node processes have used so far (Linux ``/proc``; else None), in
        whole clock ticks per process (``os.sysconf("SC_CLK_TCK")``, usually 100 a second): a
        difference of two readings is short by up to one tick per process."""
        tick = os.sysconf("SC_CLK_TCK")
        total = 0
        for p in self.procs.values():
            try:
                fields = Path(f"/proc/{p.pid}/stat").read_text().rpartition(")")[2].split()
            except OSError:
                return None
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        return total / tick

    def stop(self) -> dict[str, dict[str, int]]:
        stop_procs(self.procs.values())
        traces = {}
        for nid in self.procs:
            f = self.dir / f"{nid}.trace.json"
            traces[nid] = json.loads(f.read_text()) if f.exists() else {}
            g = self.dir / f"{nid}.trace.json.stages"
            self.stages[nid] = json.loads(g.read_text()) if g.exists() else {}
        return traces

    def __exit__(self, *exc: Any) -> None:
        self.stop()
