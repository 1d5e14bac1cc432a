"""Keyring rotation without downtime (issue 15's "Done when": rotation under ``gossipbook load
--orders 20000 --rate 2000``: 0 errors, 0 rejects caused by keys), on real node processes.

Each node has its own directory (``nodes/<id>/cluster.toml`` with ``[cluster] key_file =
"peer.keys"``, and ``nodes/<id>/peer.keys``, mode 0600), as on separate hosts. Every step goes node
by node, as an operator going host to host: edit that node's file, ``kill -HUP`` it, wait for its
reload line, ``GAP`` seconds, next node (so for a while the nodes hold different keyrings). While
``load -c ops/cluster.toml --orders 20000 --rate 2000`` runs (the operator's cluster.toml: every
account but alice, whose own client is the subject below) and ``load -c clients/alice.toml`` runs:

- the PEER key, steps 1.5 s apart: install (a new line appended to peer.keys), make primary (moved to
  the first line), remove (the old line deleted);
- alice's ACCOUNT credential: install (nodes' ``alice = ["NEW", "OLD"]``), switch the client
  (``clients/alice.toml`` ``key = ["NEW", "OLD"]``; a running client read its file when it started,
  so the new key is used by a client started afterwards: a second ``load -c clients/alice.toml``,
  5,000 orders at 500/s), remove (nodes' ``alice = "NEW"``) once no client holding only the old
  credential runs (the first alice load, 4,000 orders at 500/s waiting for ``replicated``, so that
  peer links are on its path while the peer key rotates).

Asserted: every load reports ``errors`` 0 (a frame that fails authentication gets no reply at all, and
a request reaches the venue only once authenticated, so a key problem shows as an error or a node
timeout, never as a venue reject: the rejects counted are the venue's); no node's ``client_timeouts``
grows; no node's ``dropped.auth`` grows beyond ``AUTH_SLACK`` (measured: 0) and ``revoked_account_reply``,
``stale``, ``not_peer``, ``not_account`` not at all; every node logged "peer keyring reloaded" exactly
three times (2 keys primary old, 2 keys primary new, 1 key); the cluster converges; afterwards a frame
signed with the old peer key is dropped as ``auth`` while the same frame under the new key passes
authentication (and is then refused as a ``replay``, its counter being long past).

Checked by mutation when written: verifying with the primary peer key only makes ``dropped.auth`` grow
by ~160 on a node; signing a reply with the account's primary rather than the key of the request
gives the old-credential alice load ~1,700 errors.
"""
from __future__ import annotations

import json
import re
import secrets
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gossipbook.bench.procs import free_ports
from gossipbook.config import ConfigError, load, render, render_client, write_private
from gossipbook.core.wire import OpBatch, encode, key_id

from .harness import ACCOUNTS, PY, Cluster, cli

MEMBERSHIP = ("\n[membership]\nprobe_interval_ms = 100\nprobe_timeout_ms = 50\nsuspicion_timeout_ms = 400\n"
              "suspicion_max_timeout_ms = 800\n")
#: how much a node's dropped.auth may grow during the whole rotation (frames in flight at a switch);
#: measured here: 0 on every node (the install -> primary -> remove order leaves no window)
AUTH_SLACK = 5
#: seconds between one node's reload and the next node's edit, in every step
GAP = 0.3


# ==== config loading (unit level) ========================================================================
def _cluster_text(key_line: str) -> str:
    text = render(1, 7000, key=secrets.token_bytes(32))
    out = re.sub(r'^key = "[0-9a-f]+".*$', key_line, text, count=1, flags=re.M)
    assert out != text
    return out


def test_key_file_loads_primary_first_and_resolves_next_to_the_config(tmp_path: Path) -> None:
    a, b = secrets.token_bytes(32), secrets.token_bytes(32)
    write_private(tmp_path / "cluster.toml", _cluster_text('key_file = "peer.keys"'))
    write_private(tmp_path / "peer.keys", f"# peer keyring, primary first\n{a.hex()}\n\n{b.hex()}  # the old one\n")
    cfg = load(tmp_path / "cluster.toml")
    assert cfg.key == a and cfg.key_ring == (a, b)


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    write_private(tmp_path / "cluster.toml", _cluster_text('key_file = "peer.keys"'))
    keys = tmp_path / "peer.keys"
    write_private(keys, secrets.token_bytes(32).hex() + "\n")
    keys.chmod(0o644)
    with pytest.raises(ConfigError, match=r"readable by group or others.*chmod 600"):
        load(tmp_path / "cluster.toml")
    keys.chmod(0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        load(tmp_path / "cluster.toml")
    keys.chmod(0o600)
    assert load(tmp_path / "cluster.toml").key is not None


@pytest.mark.parametrize("content", ["", "\n\n", "# only a comment\n   # and another\n"])
def test_key_file_without_keys_is_refused(tmp_path: Path, content: str) -> None:
    write_private(tmp_path / "cluster.toml", _cluster_text('key_file = "peer.keys"'))
    write_private(tmp_path / "peer.keys", content)
    with pytest.raises(ConfigError, match="at least one"):
        load(tmp_path / "cluster.toml")


def test_key_file_missing_or_with_key_is_refused(tmp_path: Path) -> None:
    write_private(tmp_path / "cluster.toml", _cluster_text('key_file = "peer.keys"'))
    with pytest.raises(ConfigError, match="cannot read key_file"):
        load(tmp_path / "cluster.toml")
    write_private(tmp_path / "peer.keys", "not hex\n")
    with pytest.raises(ConfigError, match="hex"):
        load(tmp_path / "cluster.toml")
    k = secrets.token_bytes(32).hex()
    write_private(tmp_path / "peer.keys", f"{k}\n{k}\n")
    with pytest.raises(ConfigError, match="twice"):
        load(tmp_path / "cluster.toml")
    write_private(tmp_path / "cluster.toml", _cluster_text(f'key = "{k}"\nkey_file = "peer.keys"'))
    with pytest.raises(ConfigError, match="not both"):
        load(tmp_path / "cluster.toml")


# ==== rotation under load (real processes) ===============================================================
class RotationCluster(Cluster):
    """Three nodes, each with its own ``nodes/<id>/cluster.toml`` + ``peer.keys`` (mode 0600)."""

    def __init__(self, tmp: Path, n: int = 3) -> None:
        self.tmp = tmp
        self.n = n
        self.ids = [f"n{i + 1}" for i in range(n)]
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.logs: dict[str, Path] = {}
        self.peer_old = secrets.token_bytes(32)
        self.alice_old = secrets.token_bytes(32)
        creds = {a: secrets.token_bytes(32) for a in ACCOUNTS} | {"alice": self.alice_old}
        text = render(n, 7000, key=self.peer_old, accounts=creds)
        for i, p in enumerate(free_ports(n)):
            text = text.replace(f'addr = "127.0.0.1:{7000 + i}"', f'addr = "127.0.0.1:{p}"')
        text = re.sub(r'^key = "[0-9a-f]+".*$', 'key_file = "peer.keys"  # peer keyring: one hex key a line, '
                      'the first signs', text, count=1, flags=re.M) + MEMBERSHIP
        assert 'key_file = "peer.keys"' in text and self.peer_old.hex() not in text
        self.dirs = {nid: tmp / "nodes" / nid for nid in self.ids}
        for d in self.dirs.values():
            write_private(d / "cluster.toml", text)
            write_private(d / "peer.keys", f"# peer keyring of this node, primary first\n{self.peer_old.hex()}\n")
        # the operator's copy (status, the big load): a cluster.toml without alice, whose own client is
        # what her rotation is about (a running client keeps the credential it started with)
        self.config = tmp / "ops" / "cluster.toml"
        write_private(self.config, re.sub(r"^alice = .*\n", "", text, count=1, flags=re.M))
        write_private(tmp / "ops" / "peer.keys", f"{self.peer_old.hex()}\n")
        cfg = load(self.config)
        assert "alice" not in cfg.accounts
        self.cfg = cfg
        assert cfg.key_ring == (self.peer_old,)
        self.alice_file = tmp / "clients" / "alice.toml"
        write_private(self.alice_file, render_client(load(self.dirs["n1"] / "cluster.toml"), "alice"))

    def start(self, nid: str, *extra: str) -> None:
        log = self.tmp / f"{nid}.log"
        self.logs[nid] = log
        with open(log, "a") as fh:
            self.procs[nid] = subprocess.Popen(
                [PY, "-m", "gossipbook", "node", "-c", str(self.dirs[nid] / "cluster.toml"), "--id", nid,
                 "--log-level", "info", *extra],
                stdout=fh, stderr=subprocess.STDOUT, text=True, start_new_session=True)

    # ---- file edits, exactly as an operator would make them, one node after the other ---------------
    def write_keys(self, nid: str, keys: list[bytes]) -> None:
        """Node ``nid``'s peer.keys: ``keys``, primary first (mode 0600, replaced atomically)."""
        f = self.dirs[nid] / "peer.keys"
        write_private(f, "\n".join(["# peer keyring of this node, primary first"] + [k.hex() for k in keys]) + "\n")
        assert stat.S_IMODE(f.stat().st_mode) == 0o600

    def write_alice(self, nid: str, creds: list[bytes]) -> None:
        """Node ``nid``'s ``[accounts] alice = ...`` line (one hex string, or a list, primary first)."""
        f = self.dirs[nid] / "cluster.toml"
        text = f.read_text()
        new = re.sub(r"^alice = .*$", f"alice = {_toml_ring(creds)}", text, count=1, flags=re.M)
        assert new != text
        write_private(f, new)

    def write_alice_client(self, creds: list[bytes]) -> None:
        text = self.alice_file.read_text()
        new = re.sub(r"^key = .*$", f"key = {_toml_ring(creds)}", text, count=1, flags=re.M)
        assert new != text
        write_private(self.alice_file, new)

    def count(self, nid: str, needle: str) -> int:
        return self.logs[nid].read_text().count(needle)

    def step(self, edit: Callable[[str], None], needle: str, expect: str, gap: float = GAP) -> None:
        """For each node in turn: ``edit`` its files, ``kill -HUP`` it, wait until it logs one more
        ``needle`` line containing ``expect``, then ``gap`` seconds before the next node (an operator
        going host to host: for that long the nodes hold different keyrings)."""
        for nid in self.ids:
            before = self.count(nid, needle)
            edit(nid)
            self.procs[nid].send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 5
            while self.count(nid, needle) <= before:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{nid} did not log {needle!r} after SIGHUP\n{self.dump_logs()}")
                time.sleep(0.02)
            log = self.logs[nid].read_text()
            last = [ln for ln in log.splitlines() if needle in ln][-1]
            assert expect in last, (nid, last)
            assert "not reloaded" not in log, self.dump_logs()
            time.sleep(gap)


def _toml_ring(creds: list[bytes]) -> str:
    return f'"{creds[0].hex()}"' if len(creds) == 1 else "[" + ", ".join(f'"{k.hex()}"' for k in creds) + "]"


def _load(config: Path, orders: int, rate: int, seed: int, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([PY, "-m", "gossipbook", "load", "-c", str(config), "--orders", str(orders),
                             "--rate", str(rate), "--seed", str(seed), "--json", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _result(p: subprocess.Popen[str], what: str, timeout: float = 40) -> dict[str, Any]:
    out, err = p.communicate(timeout=timeout)
    assert p.returncode in (0, 3), f"{what} exited {p.returncode}: {err[-2000:]}"
    return json.loads(out)


def _counters(c: RotationCluster) -> tuple[dict[str, dict[str, int]], dict[str, int]]:
    """Each node's ``dropped`` counters (by reason) and its ``client_timeouts``."""
    st = c.status(timeout=2.0)
    assert all(s["reachable"] for s in st), st
    return ({s["id"]: dict(s["counters"].get("dropped", {})) for s in st},
            {s["id"]: s["counters"]["client_timeouts"] for s in st})


def _dropped(c: RotationCluster) -> dict[str, dict[str, int]]:
    return _counters(c)[0]


def test_peer_and_account_rotation_under_load(tmp_path: Path) -> None:
    c = RotationCluster(tmp_path)
    loads: list[subprocess.Popen[str]] = []
    try:
        c.start_all()
        drops0, timeouts0 = _counters(c)
        peer_new, alice_new = secrets.token_bytes(32), secrets.token_bytes(32)
        old_id, new_id = key_id(c.peer_old), key_id(peer_new)

        t0 = time.monotonic()
        main = _load(c.config, 20_000, 2_000, 11)
        # alice's client, old credential; it waits for "replicated" (a majority holds the op), so the
        # peer links being rotated under it are on its path (a stall would come back as a timeout)
        alice_a = _load(c.alice_file, 4_000, 500, 12, "--wait", "replicated", "--concurrency", "256")
        loads += [main, alice_a]

        def at(s: float) -> None:
            time.sleep(max(0.0, t0 + s - time.monotonic()))

        # ---- the peer key: install -> make primary -> remove, a second apart -------------------------
        need = "peer keyring reloaded"
        at(1.0)  # install: the new key appended (verifies everywhere; the old one still signs)
        c.step(lambda n: c.write_keys(n, [c.peer_old, peer_new]), need, f"2 key(s), primary id {old_id}")
        at(2.5)  # make primary: the new key moved to the first line (signs; the old one still verifies)
        c.step(lambda n: c.write_keys(n, [peer_new, c.peer_old]), need, f"2 key(s), primary id {new_id}")
        at(4.0)  # remove: the old line deleted
        c.step(lambda n: c.write_keys(n, [peer_new]), need, f"1 key(s), primary id {new_id}")
        assert all(load(d / "cluster.toml").key_ring == (peer_new,) for d in c.dirs.values())

        # ---- alice's credential: install on the nodes -> switch the client -> remove ------------------
        acc = "accounts reloaded"
        at(5.5)  # install: nodes accept both; a reply goes out under the key its request came with
        c.step(lambda n: c.write_alice(n, [alice_new, c.alice_old]), acc, "credentials changed alice")
        at(6.5)
        c.write_alice_client([alice_new, c.alice_old])  # clients started from now on sign with the new one
        alice_b = _load(c.alice_file, 5_000, 500, 13)
        loads.append(alice_b)
        # remove only once no client holding just the old credential runs (the first alice load)
        res_alice_a = _result(alice_a, "alice load (old credential)")
        assert res_alice_a["errors"] == 0, res_alice_a
        assert alice_b.poll() is None, ("the new-credential alice load ended before the old credential was removed",
                                        res_alice_a, time.monotonic() - t0)
        t_remove = time.monotonic() - t0
        main_running = main.poll() is None
        c.step(lambda n: c.write_alice(n, [alice_new]), acc, "credentials changed alice")
        c.write_alice_client([alice_new])
        res_alice_b = _result(alice_b, "alice load (new credential)")
        res_main = _result(main, "cluster.toml load")
        elapsed = time.monotonic() - t0

        drops1, timeouts1 = _counters(c)
        report = {"main": res_main, "alice_old": res_alice_a, "alice_new": res_alice_b,
                  "t_remove_alice_old_s": round(t_remove, 1), "main_load_running_then": main_running, "elapsed_s": round(elapsed, 1),
                  "dropped_before": drops0, "dropped_after": drops1,
                  "client_timeouts": [timeouts0, timeouts1]}
        print(json.dumps(report, indent=1))
        for name, r, n in (("main", res_main, 20_000), ("alice_old", res_alice_a, 4_000),
                           ("alice_new", res_alice_b, 5_000)):
            assert r["sent"] == n and r["errors"] == 0, (name, report)
            assert r["acked"] + r["rejected"] == n, (name, report)
        for nid in c.ids:
            for reason in ("auth", "revoked_account_reply", "stale", "not_peer", "not_account"):
                grew = drops1[nid].get(reason, 0) - drops0[nid].get(reason, 0)
                limit = AUTH_SLACK if reason == "auth" else 0
                assert grew <= limit, (nid, reason, grew, report)
            assert c.count(nid, need) == 3, c.dump_logs()
            assert timeouts1[nid] == timeouts0[nid], (nid, report)
        c.wait_converged(timeout=15)

        # ---- afterwards: a frame under the old peer key is refused as auth -----------------------------
        before = _dropped(c)["n1"]
        now_ms = time.time_ns() // 1_000_000
        bind = {"dst": "n1", "label": c.cfg.name, "stamp_ms": now_ms}
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.sendto(encode(OpBatch([]), "n2", time.time_ns(), c.peer_old, **bind), c.cfg.node("n1").addr)
            # control: the same under the new key verifies (then, counter 1 being far behind n2's, replay)
            s.sendto(encode(OpBatch([]), "n2", 1, peer_new, **bind), c.cfg.node("n1").addr)
        finally:
            s.close()
        deadline = time.monotonic() + 5
        while True:
            after = _dropped(c)["n1"]
            if (after.get("auth", 0) > before.get("auth", 0) and after.get("replay", 0) > before.get("replay", 0)) \
                    or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert after.get("auth", 0) - before.get("auth", 0) == 1, (before, after)
        assert after.get("replay", 0) - before.get("replay", 0) >= 1, (before, after)
        # the cluster still serves under the new keys
        r = cli("submit", "-c", str(c.alice_file), "-n", "n2", "buy", "1", "@", "99.50", "--json", "--timeout", "3")
        assert r.returncode == 0, r.stderr
    finally:
        for p in loads:
            if p.poll() is None:
                p.kill()
                p.communicate(timeout=5)
        c.stop()
