"""A fuzz run: start real node processes on loopback, send them keyed hostile frames, then check them.

The cluster config lists the honest nodes (``gossipbook node`` processes) and one more member, ``fz``,
whose address is the fuzzer's own socket: the fuzzer speaks as it with the peer key, so its ops
(boundary values, unknown instruments, other accounts' orders) are accepted and folded, and its
membership and sequencer messages come from a member (in strong mode ``fz`` is a voter that never
answers honestly: the honest nodes are a quorum of the four only all together). It also speaks as
made-up nodes, and, with ``impersonate``, as the honest nodes themselves.

After the frames: every honest process must still run (else a *crash*, with its log's tail), answer
``status`` and acknowledge a new order of each of two accounts within 2 s on every node (else a
*stall*), and all must reach one digest (``converged``).
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..bench.procs import free_ports, stop_procs
from ..config import ClusterConfig, load, render, write_private
from ..core.wire import MESSAGES
from .gen import FrameGen, Target

FUZZ_MEMBER = "fz"
HONEST_ACCOUNTS = ("alice", "bob")  # the two accounts the after-check orders act as
FUZZ_ACCOUNTS = ("mallory", "trudy")  # the accounts the fuzzer's client frames are signed by
ACK_WITHIN_S = 2.0


class FuzzCluster:
    """``n`` node processes (and the fuzzer's member address); a context manager that always stops them."""

    def __init__(self, n: int, mode: str, fuzz_port: int | None) -> None:
        import secrets

        self.dir = Path(tempfile.mkdtemp(prefix="gossipbook-fuzz-"))
        accounts = {a: secrets.token_bytes(32) for a in ("operator", *HONEST_ACCOUNTS, *FUZZ_ACCOUNTS)}
        m = n + (1 if fuzz_port is not None else 0)
        text = render(m, 7000, mode=mode, accounts=accounts)
        ports = free_ports(n)
        for i in range(n):
            text = text.replace(f'addr = "127.0.0.1:{7000 + i}"', f'addr = "127.0.0.1:{ports[i]}"')
        if fuzz_port is not None:
            text = text.replace(f'id = "n{m}"\naddr = "127.0.0.1:{7000 + n}"',
                                f'id = "{FUZZ_MEMBER}"\naddr = "127.0.0.1:{fuzz_port}"')
        self.config_path = self.dir / "cluster.toml"
        write_private(self.config_path, text)
        self.cfg: ClusterConfig = load(self.config_path)
        self.honest = [f"n{i + 1}" for i in range(n)]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def log_path(self, nid: str) -> Path:
        return self.dir / f"{nid}.log"

    def __enter__(self) -> FuzzCluster:
        try:
            for nid in self.honest:
                args = [sys.executable, "-m", "gossipbook", "node", "-c", str(self.config_path), "--id", nid,
                        "--log-level", "warning"]
                with open(self.log_path(nid), "w") as err:
                    self.procs[nid] = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err)
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def status(self, timeout: float = 1.0, what: str = "status") -> dict[str, dict[str, Any]]:
        import trio

        return trio.run(gather, self.cfg, self.honest, timeout, what)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead:
                raise RuntimeError(f"node(s) {dead} exited at start; logs in {self.dir}")
            st = self.status(0.5)
            if all(s["reachable"] and s.get("ready") for s in st.values()):
                if self.cfg.mode != "strong" or self._leader(st):
                    return
            time.sleep(0.1)
        raise RuntimeError(f"fuzz cluster did not start within {timeout:g} s; logs in {self.dir}")

    @staticmethod
    def _leader(st: dict[str, dict[str, Any]]) -> str | None:
        lead = {s.get("leader") for s in st.values()}
        if len(lead) == 1 and None not in lead:
            return lead.pop()
        return None

    def crashed(self) -> dict[str, int]:
        return {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}

    def stop(self) -> None:
        stop_procs(self.procs.values())

    def __exit__(self, *exc: Any) -> None:
        self.stop()


E_ADDRESS = 12  # node.py's "address check": resend with "<req>#<cookie>" (a reply bigger than 3x the request)


async def request(c: Any, nid: str, msg: Any, timeout: float) -> Any:
    """``c.request`` that answers a node's address check (echoes the cookie once)."""
    rep = await c.request(nid, msg, msg.req, timeout)
    if rep.code == E_ADDRESS and rep.message:
        rep = await c.request(nid, msg._replace(req=f"{msg.req}#{rep.message}"), msg.req, timeout)
    return rep


async def gather(cfg: ClusterConfig, ids: list[str], timeout: float, what: str = "status") -> dict[str, dict[str, Any]]:
    """``status`` (or ``progress``) of each node of ``ids``; ``{"reachable": False}`` for one that
    does not answer OK within ``timeout``."""
    import trio

    from ..core.wire import ClientQuery
    from ..node.client import Client, Unreachable

    out: dict[str, dict[str, Any]] = {}
    async with Client(cfg) as c:
        async def one(nid: str) -> None:
            req = c.new_req()
            try:
                rep = await request(c, nid, ClientQuery(req, what, "", 0), timeout)
            except Unreachable:
                rep = None
            if rep is None or rep.code != 0 or not isinstance(rep.payload, dict):
                out[nid] = {"id": nid, "reachable": False,
                            "error": "no reply" if rep is None else f"code {rep.code}: {rep.message}"}
            else:
                out[nid] = {**rep.payload, "id": nid, "reachable": True}
        async with trio.open_nursery() as n:
            for nid in ids:
                n.start_soon(one, nid)
    return out


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops the run like Ctrl-C (the ``finally`` blocks stop the node processes)."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


async def _orders_inner(cfg: ClusterConfig, honest: list[str], timeout: float,
                        far: bool) -> tuple[list[str], list[dict[str, Any]]]:
    """One new order per honest node per honest account, concurrently; ``(order ids, failures)``."""
    import trio

    from ..core.ops import NEW
    from ..core.wire import ClientSubmit
    from ..node.client import Client, Unreachable

    inst = cfg.instruments[0]
    ids: list[str] = []
    failures: list[dict[str, Any]] = []
    async with Client(cfg, account=HONEST_ACCOUNTS[0]) as ca, Client(cfg, account=HONEST_ACCOUNTS[1]) as cb:
        async def one(c: Client, side: int, nid: str) -> None:
            if far:  # rests far from the market: cancellable targets for the fuzzer
                price = inst.min_ticks if side == 0 else inst.max_ticks
            else:
                price = inst.price_to_ticks("100")
            req = c.new_req()
            msg = ClientSubmit(req, NEW, inst.symbol, "", side, price, 1, 0, 0, int(timeout * 1000))
            t = time.monotonic()
            try:
                rep = await request(c, nid, msg, timeout)
            except Unreachable:
                failures.append({"node": nid, "account": c.account, "error": f"no reply within {timeout:g} s"})
                return
            if rep.code != 0:
                failures.append({"node": nid, "account": c.account, "error": f"code {rep.code}: {rep.message}",
                                 "seconds": round(time.monotonic() - t, 3)})
            elif rep.order_id:
                ids.append(rep.order_id)

        async with trio.open_nursery() as nursery:
            for nid in honest:
                nursery.start_soon(one, ca, 0, nid)
                nursery.start_soon(one, cb, 1, nid)
    return ids, failures


def place_orders(cfg: ClusterConfig, honest: list[str], timeout: float, far: bool = False) -> tuple[list[str], list[dict[str, Any]]]:
    import trio

    return trio.run(_orders_inner, cfg, honest, timeout, far)


def fuzz(nodes: int = 3, frames: int = 100_000, seed: int = 1, mode: str = "eventual", rate: float = 20_000.0,
         settle_s: float = 20.0, impersonate: bool = False, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """One fuzz run (see the module header); the result has the keys ``gossipbook fuzz --json`` prints."""
    started = time.monotonic()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    by_type: Counter[str] = Counter()
    result: dict[str, Any] = {"frames": 0, "crashes": 0, "stalls": 0, "converged": False, "by_type": {},
                              "seconds": 0.0, "dropped": {}, "seed": seed, "mode": mode, "nodes": nodes}
    try:
        with _sigterm_as_interrupt(), FuzzCluster(nodes, mode, sock.getsockname()[1]) as cl:
            cfg = cl.cfg
            result["dir"] = str(cl.dir)
            resting, _ = place_orders(cfg, cl.honest, 5.0, far=True)
            target = Target(honest=cl.honest, fuzz_member=FUZZ_MEMBER, impersonate=impersonate,
                            key=cfg.key or b"", label=cfg.name,
                            accounts={a: cfg.accounts[a][0] for a in FUZZ_ACCOUNTS},
                            symbols=[i.symbol for i in cfg.instruments], known_orders=resting,
                            other_accounts=list(HONEST_ACCOUNTS))
            gen = FrameGen(target, seed)
            addrs = {n: cfg.node(n).addr for n in cl.honest}
            names = {no: cls.__name__ for no, (cls, _v) in MESSAGES.items()}
            sent, errors = _send(gen, sock, addrs, names, by_type, frames, rate, progress)
            result["frames"] = sent
            result["send_errors"] = errors
            result["fuzz_seconds"] = round(time.monotonic() - started, 2)
            result.update(check(cl, settle_s, progress))
    finally:
        sock.close()
    result["by_type"] = dict(sorted(by_type.items()))
    result["seconds"] = round(time.monotonic() - started, 2)
    return result


def _send(gen: FrameGen, sock: socket.socket, addrs: dict[str, tuple[str, int]], names: dict[int, str],
          by_type: Counter[str], frames: int, rate: float, progress: Callable[[str], None] | None) -> tuple[int, int]:
    """Send ``frames`` frames, round-robin over the nodes, at most ``rate`` a second."""
    ids = list(addrs)
    t0 = time.monotonic()
    last = t0
    errors = 0
    for i in range(frames):
        if rate > 0 and i % 64 == 0:
            ahead = i / rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
        type_no, to, data = gen.next(ids[i % len(ids)])
        try:
            sock.sendto(data, addrs[to])
        except (BlockingIOError, OSError):
            errors += 1  # the socket buffer is full: the kernel dropped it, as a network would
        by_type[names[type_no]] += 1
        if i % 256 == 0:
            _drain(sock)
            now = time.monotonic()
            if progress is not None and now - last >= 2.0:
                last = now
                progress(f"fuzz: {i}/{frames} frames, {i / (now - t0):,.0f}/s")
    return frames, errors


def _drain(sock: socket.socket) -> None:
    """Read and discard what the nodes sent the fuzzer (replies, gossip to ``fz``)."""
    for _ in range(4096):
        try:
            sock.recv(65_536)
        except (BlockingIOError, OSError):
            return


def check(cl: FuzzCluster, settle_s: float, progress: Callable[[str], None] | None) -> dict[str, Any]:
    """After the frames: crashes, stalls, convergence, the nodes' drop counters."""
    out: dict[str, Any] = {"crashed": {}, "stalled": {}}
    crashed = cl.crashed()
    for nid, rc in crashed.items():
        out["crashed"][nid] = {"returncode": rc, "log": log_tail(cl.log_path(nid))}
    alive = [n for n in cl.honest if n not in crashed]
    if progress is not None:
        progress(f"fuzz: frames sent; checking {len(alive)} node(s)")
    # every node answers status (give a node busy with a backlog of hostile frames a few seconds)
    deadline = time.monotonic() + settle_s
    st: dict[str, dict[str, Any]] = {}
    while True:
        st = cl.status(1.0)
        if all(st[n]["reachable"] for n in alive) or time.monotonic() > deadline:
            break
    for n in alive:
        if not st[n]["reachable"]:
            out["stalled"][n] = "does not answer status"
    # new orders acknowledged within 2 s: the first try may meet an election (strong) or a backlog,
    # so the cluster gets until the settle deadline to acknowledge every one of a round in time
    failures: list[dict[str, Any]] = []
    while True:
        if cl.crashed().keys() - crashed.keys():
            break
        _ids, failures = place_orders(cl.cfg, alive, ACK_WITHIN_S)
        if not failures or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for f in failures:
        out["stalled"].setdefault(f["node"], f"orders not acknowledged within {ACK_WITHIN_S:g} s: {f}")
    # one digest
    converged = False
    digests: dict[str, Any] = {}
    conv_deadline = max(deadline, time.monotonic() + 10.0)
    while time.monotonic() < conv_deadline:
        st = cl.status(1.0)
        digests = {n: st[n].get("digest") for n in alive if st[n]["reachable"]}
        if len(digests) == len(alive) and len(set(digests.values())) == 1 and len(alive) == len(cl.honest):
            converged = True
            break
        time.sleep(0.25)
    for nid, rc in cl.crashed().items():  # crashed during the checks
        if nid not in out["crashed"]:
            out["crashed"][nid] = {"returncode": rc, "log": log_tail(cl.log_path(nid))}
    dropped: Counter[str] = Counter()
    for s in st.values():
        dropped.update(s.get("counters", {}).get("dropped", {}))
    out.update(crashes=len(out["crashed"]), stalls=len(out["stalled"]), converged=converged,
               dropped=dict(sorted(dropped.items())), digests=digests,
               ops={n: st[n].get("ops") for n in alive if st[n]["reachable"]})
    return out
