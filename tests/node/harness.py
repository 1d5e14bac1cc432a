"""Real processes on 127.0.0.1: start a cluster of ``gossipbook node`` processes, talk to it with
the CLI, and always clean up (every test is bounded in time and leaves nothing running)."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from gossipbook.bench.procs import free_ports
from gossipbook.config import load, render, render_client, write_private

PY = sys.executable


ACCOUNTS = ("operator", "alice", "bob")


def write_config(path: Path, n: int, extra: str = "", data_root: str | None = None) -> Path:
    """cluster.toml for ``n`` nodes on free ports, with the accounts ``ACCOUNTS``; each account's
    client file is written beside it as ``clients/<account>.toml`` (mode 0600, like cluster init)."""
    ports = free_ports(n)
    text = render(n, 7000, data_root=data_root, accounts={a: secrets.token_bytes(32) for a in ACCOUNTS})
    for i, p in enumerate(ports):
        text = text.replace(f'addr = "127.0.0.1:{7000 + i}"', f'addr = "127.0.0.1:{p}"')
    # fast failure detection for tests
    text += ("\n[membership]\nprobe_interval_ms = 100\nprobe_timeout_ms = 50\nsuspicion_timeout_ms = 400\n"
             "suspicion_max_timeout_ms = 800\n") + extra
    write_private(path, text)
    cfg = load(path)
    for a in ACCOUNTS:
        write_private(path.parent / "clients" / f"{a}.toml", render_client(cfg, a))
    return path


def cli(*args: str, timeout: float = 60, check: bool = False) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([PY, "-m", "gossipbook", *args], capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"gossipbook {' '.join(args)} exited {r.returncode}: {r.stderr}")
    return r


class Cluster:
    """Node processes for one config; ``stop()`` kills whatever is left."""

    def __init__(self, tmp: Path, n: int, extra: str = "", data: bool = False) -> None:
        self.tmp = tmp
        self.n = n
        self.config = write_config(tmp / "cluster.toml", n, extra, str(tmp / "data") if data else None)
        self.ids = [f"n{i + 1}" for i in range(n)]
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.logs: dict[str, Path] = {}

    def start(self, nid: str, *extra: str) -> None:
        log = self.tmp / f"{nid}.log"
        self.logs[nid] = log
        fh = open(log, "a")
        self.procs[nid] = subprocess.Popen(
            [PY, "-m", "gossipbook", "node", "-c", str(self.config), "--id", nid, "--log-level", "info", *extra],
            stdout=fh, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        fh.close()

    def start_all(self, *extra: str, per_node: dict[str, list[str]] | None = None) -> None:
        for nid in self.ids:
            self.start(nid, *extra, *((per_node or {}).get(nid, [])))
        self.wait_ready()

    def wait_ready(self, ids: list[str] | None = None, timeout: float = 20) -> list[dict[str, Any]]:
        ids = ids or [i for i in self.ids if i in self.procs and self.procs[i].poll() is None]
        deadline = time.monotonic() + timeout
        while True:
            st = self.status()
            byid = {s["id"]: s for s in st}
            if all(byid[i]["reachable"] and byid[i].get("ready") for i in ids):
                return st
            if time.monotonic() > deadline:
                raise AssertionError(f"nodes not ready in {timeout} s: {st}\n{self.dump_logs()}")
            time.sleep(0.2)

    def status(self, timeout: float = 1.0) -> list[dict[str, Any]]:
        r = cli("status", "-c", str(self.config), "--json", "--timeout", str(timeout))
        return json.loads(r.stdout)["nodes"]

    def kill(self, nid: str, sig: int = signal.SIGKILL) -> None:
        p = self.procs[nid]
        p.send_signal(sig)
        p.wait(timeout=10)

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for p in self.procs.values():
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=5)

    def dump_logs(self) -> str:
        return "\n".join(f"--- {k}\n{v.read_text()[-3000:]}" for k, v in self.logs.items() if v.exists())

    def wait_converged(self, timeout: float = 10, ids: list[str] | None = None) -> tuple[float, list[dict[str, Any]]]:
        """Poll until every given node reports the same digest and op count; returns seconds taken."""
        t0 = time.monotonic()
        ids = ids or self.ids
        while True:
            st = [s for s in self.status() if s["id"] in ids]
            if all(s["reachable"] for s in st) and len({(s["digest"], s["ops"]) for s in st}) == 1:
                return time.monotonic() - t0, st
            if time.monotonic() - t0 > timeout:
                raise AssertionError("not converged: " + json.dumps(
                    [{k: s.get(k) for k in ("id", "digest", "ops", "version_vector", "members")} for s in st]))
            time.sleep(0.1)
