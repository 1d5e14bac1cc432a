"""A private network of namespaces for real ``gossipbook node`` processes, and nftables faults on it.

Layout (every name starts with ``gbtest-<pytest pid>-<random>-``, so concurrent runs never meet, and
namespaces of a run killed before its teardown are reaped by the next run)::

    gbtest-P-XXXX-n1 .. -nN   one node each: lo + eth0 (10.213.7.11 .. ), no route anywhere else
    gbtest-P-XXXX-cl          the client (status / submit): eth0 10.213.7.2
    gbtest-P-XXXX-br          a bridge br0 joining the other end of every veth pair

The veth pairs are created directly between the bridge namespace and the member namespace
(``ip -n BR link add ... peer ... netns NS``), so no interface ever exists in the host's namespace,
nothing has a default route, and no packet can leave the machine. The subnet exists only in here.

Faults are nftables rules in a table ``inet gbtest`` of a node's own namespace, on the input hook
(what that node receives). Only peer addresses are matched: the client namespace is never cut, so the
test can always observe every node.

Everything goes through the CLI (``gossipbook cluster init / node / status / submit``), so config
format or client changes are picked up as they land.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# the console script next to the interpreter running the tests (absolute: `ip netns exec` has no venv),
# or that interpreter with -m where there is no script
_SCRIPT = Path(sys.executable).parent / "gossipbook"
GOSSIPBOOK: list[str] = [str(_SCRIPT)] if os.access(_SCRIPT, os.X_OK) else [sys.executable, "-m", "gossipbook"]
SUBNET = "10.213.7"  # /24; lives only inside the namespaces below
CLIENT_IP = f"{SUBNET}.2"
PREFIX = "gbtest-"
TABLE = "gbtest"

FAST_MEMBERSHIP = ("\n[membership]\nprobe_interval_ms = 100\nprobe_timeout_ms = 50\n"
                   "suspicion_timeout_ms = 400\nsuspicion_max_timeout_ms = 800\n")


class LabError(RuntimeError):
    pass


def sh(*args: str, timeout: float = 15, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, input=input)
    if check and r.returncode != 0:
        raise LabError(f"{' '.join(args)} exited {r.returncode}: {r.stderr.strip() or r.stdout.strip()}")
    return r


def reap_stale() -> None:
    """Remove namespaces left by a test run that died without its teardown (killed pytest): their names
    carry the pid of the pytest that made them, and only those whose pytest is gone are touched."""
    out = sh("ip", "netns", "list", check=False).stdout
    for ns in re.findall(rf"^({PREFIX}(\d+)-[0-9a-f]+-\w+)", out, flags=re.M):
        name, pid = ns[0], int(ns[1])
        try:
            os.kill(pid, 0)
            continue  # its run is still going
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        for p in sh("ip", "netns", "pids", name, check=False).stdout.split():
            try:
                os.kill(int(p), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        sh("ip", "netns", "del", name, check=False)


def new_tag() -> str:
    return f"{PREFIX}{os.getpid()}-{secrets.token_hex(3)}"


def unavailable() -> str | None:
    """Why namespaces + nftables cannot be used here (None when they can)."""
    if os.geteuid() != 0:
        return "network-namespace tests need root (ip netns, nftables); run as root, as CI does"
    for tool, pkg in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return (f"'{tool}' not found: install it (apt-get install -y {pkg}); .ci/run installs it "
                    "when missing")
    ns = f"{new_tag()}-probe"
    try:
        sh("ip", "netns", "add", ns)
    except (LabError, subprocess.TimeoutExpired) as e:
        return f"cannot create a network namespace: {e}"
    try:
        sh("ip", "netns", "exec", ns, "nft", "-f", "-", input=f"table inet {TABLE} {{ }}\n")
        sh("ip", "-n", ns, "link", "add", "vp0", "type", "veth", "peer", "name", "vp1")
    except (LabError, subprocess.TimeoutExpired) as e:
        return f"nftables or veth unusable in a network namespace: {e}"
    finally:
        sh("ip", "netns", "del", ns, check=False)
    return None


class Lab:
    """N node namespaces + a client namespace on a private bridge; node processes; nftables faults."""

    def __init__(self, tmp: Path, n: int = 4) -> None:
        self.tmp = tmp
        self.tag = new_tag()
        self.ids = [f"n{i + 1}" for i in range(n)]
        self.ip = {nid: f"{SUBNET}.{11 + i}" for i, nid in enumerate(self.ids)}
        self.bridge_ns = f"{self.tag}-br"
        self.client_ns = f"{self.tag}-cl"
        self.made: list[str] = []
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}
        self.config = tmp / "cluster.toml"

    def ns(self, nid: str) -> str:
        return f"{self.tag}-{nid}"

    # -- network ------------------------------------------------------------------------------------

    def build(self) -> None:
        sh("ip", "netns", "add", self.bridge_ns)
        self.made.append(self.bridge_ns)
        br = ("ip", "-n", self.bridge_ns)
        sh(*br, "link", "add", "br0", "type", "bridge")
        sh(*br, "link", "set", "br0", "up")
        sh(*br, "link", "set", "lo", "up")
        members = [(nid, self.ns(nid), self.ip[nid]) for nid in self.ids] + [("cl", self.client_ns, CLIENT_IP)]
        for short, ns, addr in members:
            sh("ip", "netns", "add", ns)
            self.made.append(ns)
            port = f"v{short}"
            sh(*br, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh(*br, "link", "set", port, "master", "br0")
            sh(*br, "link", "set", port, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")

    def write_config(self, base_port: int = 7401, extra: str = "") -> Path:
        """``gossipbook cluster init`` output with only the ``addr`` lines moved into the namespaces."""
        r = sh(*GOSSIPBOOK, "cluster", "init", "--nodes", str(len(self.ids)), "--base-port", str(base_port))
        text, subs = r.stdout, 0

        def addr(m: re.Match[str]) -> str:
            nonlocal subs
            port = int(m.group(2))
            i = port - base_port
            if not 0 <= i < len(self.ids):
                raise LabError(f"unexpected node address in cluster init output: {m.group(0)}")
            subs += 1
            return f'{m.group(1)}"{self.ip[self.ids[i]]}:{port}"'

        text = re.sub(r'^(\s*addr\s*=\s*)"[^"]*:(\d+)"', addr, text, flags=re.M)
        if subs != len(self.ids):
            raise LabError(f"expected {len(self.ids)} addr lines in cluster init output, rewrote {subs}:\n{text}")
        if not re.search(r"^\s*\[membership\]", text, flags=re.M):
            text += FAST_MEMBERSHIP  # fast failure detection, so a cut shows within a second
        text += extra
        fd = os.open(self.config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(self.config, 0o600)
        return self.config

    # -- processes ------------------------------------------------------------------------------------

    def start(self, nid: str) -> None:
        log = self.tmp / f"{nid}.log"
        self.logs[nid] = log
        with open(log, "ab") as fh:
            self.procs[nid] = subprocess.Popen(
                ["ip", "netns", "exec", self.ns(nid), *GOSSIPBOOK, "node", "-c", str(self.config), "--id", nid,
                 "--log-level", "info"],
                stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def start_all(self, timeout: float = 20) -> None:
        for nid in self.ids:
            self.start(nid)
        self.wait(lambda st: all(s.get("reachable") and s.get("ready") for s in st), timeout, "nodes ready")

    def client(self, *args: str, timeout: float = 15) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.client_ns, *GOSSIPBOOK, *args, timeout=timeout, check=False)

    def status(self, timeout: float = 1.0) -> list[dict[str, Any]]:
        r = self.client("status", "-c", str(self.config), "--json", "--timeout", str(timeout),
                        timeout=timeout * len(self.ids) + 15)
        try:
            return json.loads(r.stdout)["nodes"]
        except (ValueError, KeyError) as e:
            raise LabError(f"status exited {r.returncode}: {r.stderr.strip()} {r.stdout[:500]}") from e

    def submit(self, nid: str, side: str, qty: int, price: str) -> dict[str, Any]:
        r = self.client("submit", "-c", str(self.config), "--node", nid, side, str(qty), "@", price, "--json")
        if r.returncode != 0:
            raise LabError(f"submit to {nid} exited {r.returncode}: {r.stderr.strip()} {r.stdout.strip()}")
        return json.loads(r.stdout)

    def wait(self, pred: Any, timeout: float, what: str, poll: float = 0.2) -> tuple[float, list[dict[str, Any]]]:
        """Poll ``status`` until ``pred(nodes)``; returns (seconds taken, last status)."""
        t0 = time.monotonic()
        while True:
            st = self.status()
            if pred(st):
                return time.monotonic() - t0, st
            dead = [nid for nid, p in self.procs.items() if p.poll() is not None]
            if dead or time.monotonic() - t0 > timeout:
                why = f"node process exited: {dead}" if dead else f"not within {timeout} s"
                raise AssertionError(f"{what}: {why}\n{brief(st)}\n{self.dump_logs()}")
            time.sleep(poll)

    def wait_converged(self, timeout: float, ops: int | None = None) -> tuple[float, list[dict[str, Any]]]:
        return self.wait(lambda st: converged(st, ops), timeout, f"convergence of {len(self.ids)} nodes"
                         + (f" at {ops} ops" if ops is not None else ""))

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 3
        for p in self.procs.values():
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(p.pid, signal.SIGKILL)  # the whole group, whatever it left behind
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    def teardown(self) -> None:
        try:
            self.stop()
        finally:
            for ns in reversed(self.made):
                # anything still running in our namespace was started by this lab
                pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
                for pid in pids:
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except (ProcessLookupError, ValueError):
                        pass
                sh("ip", "netns", "del", ns, check=False)
            self.made.clear()

    def dump_logs(self) -> str:
        return "\n".join(f"--- {k}\n{v.read_text(errors='replace')[-2500:]}"
                         for k, v in self.logs.items() if v.exists())

    # -- nftables -------------------------------------------------------------------------------------

    def nft(self, nid: str, rules: list[str]) -> None:
        """Replace node ``nid``'s fault table with an input chain holding ``rules`` (empty: no faults)."""
        ns = self.ns(nid)
        sh("ip", "netns", "exec", ns, "nft", "-f", "-", check=False,
           input=f"table inet {TABLE}\ndelete table inet {TABLE}\n")  # declare-then-delete: idempotent
        if rules:
            body = "\n".join(f"    {r}" for r in rules)
            sh("ip", "netns", "exec", ns, "nft", "-f", "-", input=(
                f"table inet {TABLE} {{\n  chain input {{\n"
                f"    type filter hook input priority filter; policy accept;\n{body}\n  }}\n}}\n"))

    def drop_from(self, nid: str, peers: list[str]) -> None:
        """Node ``nid`` drops every packet from these peers (its own sends still go out)."""
        self.nft(nid, [f"ip saddr {self.ip[p]} counter drop" for p in peers])

    def random_loss(self, nid: str, percent: int) -> None:
        """Node ``nid`` drops ``percent`` % of the packets from its peers, at random (not the client's)."""
        peers = ", ".join(self.ip[p] for p in self.ids if p != nid)
        self.nft(nid, [f"ip saddr {{ {peers} }} numgen random mod 100 < {percent} counter drop"])

    def heal(self) -> None:
        for nid in self.ids:
            self.nft(nid, [])

    def dropped(self, nid: str) -> int:
        """Packets the fault rules of ``nid`` have dropped so far."""
        out = sh("ip", "netns", "exec", self.ns(nid), "nft", "list", "table", "inet", TABLE, check=False).stdout
        return sum(int(m) for m in re.findall(r"counter packets (\d+)", out))


def converged(st: list[dict[str, Any]], ops: int | None = None) -> bool:
    if not st or not all(s.get("reachable") for s in st):
        return False
    keys = {(s.get("digest"), s.get("ops"), json.dumps(s.get("version_vector"), sort_keys=True)) for s in st}
    return len(keys) == 1 and (ops is None or st[0].get("ops") == ops)


def brief(st: list[dict[str, Any]]) -> str:
    return json.dumps([{k: s.get(k) for k in ("id", "reachable", "digest", "ops", "version_vector", "members")}
                       for s in st])
