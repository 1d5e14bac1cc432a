"""Accounts on real processes (issue 14's "Done when"): a 3-node cluster from
``cluster init --accounts alice,bob --out DIR``, each participant with only its own client file.

- bob cannot cancel alice's order (exit 10) and it still rests everywhere; alice can;
- alice buying at her own resting sell makes no trade (default STP: cancel-newest);
- bob's buy there trades, and his ``trades`` show it without naming alice;
- no client file holds the peer key; every secret file is 0600, and one that group or others can read
  is refused by a node and by a client, naming the ``chmod`` that fixes it;
- a client holding only alice.toml cannot speak as a node: a well-formed gossip ``OpBatch`` and a
  membership update under her credential are dropped and counted (``not_peer``), digests unchanged;
- SIGHUP reloads [accounts]: an added account works, a revoked one is refused from then on.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from gossipbook.bench.procs import free_ports
from gossipbook.config import load, render_client, write_private
from gossipbook.core.book import GTC, SELL
from gossipbook.core.membership import Gossip as MemberGossip
from gossipbook.core.membership import Update
from gossipbook.core.ops import CANCEL, NEW, Op
from gossipbook.core.wire import OpBatch, encode

from .harness import Cluster, cli

MEMBERSHIP = ("\n[membership]\nprobe_interval_ms = 100\nprobe_timeout_ms = 50\nsuspicion_timeout_ms = 400\n"
              "suspicion_max_timeout_ms = 800\n")


def _init(out: Path, n: int = 3) -> Path:
    """``cluster init --accounts alice,bob --out``; then free loopback ports in every file (0600 kept)."""
    r = cli("cluster", "init", "--nodes", str(n), "--base-port", "7000", "--accounts", "alice,bob",
            "--out", str(out), check=True)
    assert "0600" in r.stdout
    ports = free_ports(n)
    for f in [out / "cluster.toml", *sorted((out / "clients").glob("*.toml"))]:
        text = f.read_text()
        for i, p in enumerate(ports):
            text = text.replace(f'addr = "127.0.0.1:{7000 + i}"', f'addr = "127.0.0.1:{p}"')
        if f.name == "cluster.toml":
            text += MEMBERSHIP
        write_private(f, text)
    return out


class AccountsCluster(Cluster):
    """``harness.Cluster`` on the files ``cluster init --out`` wrote."""

    def __init__(self, out: Path, n: int = 3) -> None:
        self.tmp = out
        self.n = n
        self.config = out / "cluster.toml"
        self.ids = [f"n{i + 1}" for i in range(n)]
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.logs: dict[str, Path] = {}

    def client(self, account: str) -> str:
        return str(self.tmp / "clients" / f"{account}.toml")


@pytest.fixture
def venue(tmp_path: Path):
    c = AccountsCluster(_init(tmp_path / "venue"))
    try:
        yield c
    finally:
        c.stop()


def _json(r: subprocess.CompletedProcess[str]) -> Any:
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    return json.loads(r.stdout)


def _orders(c: AccountsCluster, account: str, node: str) -> list[str]:
    return [o["order_id"] for o in _json(cli("orders", "-c", c.client(account), "--node", node, "--json"))["orders"]]


def _wait(pred, timeout: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _submit(c: AccountsCluster, account: str, *order: str, node: str = "n1", timeout: str = "3") -> \
        subprocess.CompletedProcess[str]:
    return cli("submit", "-c", c.client(account), "--node", node, *order, "--json", "--timeout", timeout)


# ==== files ===========================================================================================
def test_init_files_hold_no_peer_key_and_are_private(tmp_path: Path) -> None:
    out = _init(tmp_path / "venue")
    cfg = load(out / "cluster.toml")
    assert cfg.key is not None and set(cfg.accounts) == {"operator", "alice", "bob"}
    files = [out / "cluster.toml", *sorted((out / "clients").glob("*.toml"))]
    assert {f.name for f in files[1:]} == {"operator.toml", "alice.toml", "bob.toml"}
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    for f in files[1:]:
        text = f.read_text()
        assert cfg.key.hex() not in text, f
        cl = load(f)
        assert cl.key is None and cl.is_client_file
        # its own credential only
        assert list(cl.accounts) == [f.stem] and cl.accounts[f.stem] == cfg.accounts[f.stem]
        for other, secret in cfg.accounts.items():
            if other != f.stem:
                assert all(k.hex() not in text for k in secret)
    assert not stat.S_IMODE((out / "clients").stat().st_mode) & 0o077
    # a second init into the same DIR does not silently replace the keys
    r = cli("cluster", "init", "--nodes", "3", "--accounts", "alice,bob", "--out", str(out))
    assert r.returncode != 0 and "exists" in r.stderr


def _one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode != 0
    assert "Traceback" not in r.stderr + r.stdout
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_secret_files_readable_by_others_are_refused(tmp_path: Path) -> None:
    out = _init(tmp_path / "venue", n=1)
    node_cfg, alice = out / "cluster.toml", out / "clients" / "alice.toml"
    os.chmod(node_cfg, 0o644)
    line = _one_line_error(cli("node", "-c", str(node_cfg), "--id", "n1", timeout=20))
    assert f"chmod 600 {node_cfg}" in line
    os.chmod(alice, 0o640)
    line = _one_line_error(cli("orders", "-c", str(alice), "--timeout", "0.3"))
    assert f"chmod 600 {alice}" in line
    line = _one_line_error(cli("submit", "-c", str(alice), "buy", "1", "@", "100", "--timeout", "0.3"))
    assert "chmod 600" in line


# ==== the "Done when" ==============================================================================
def test_ownership_stp_and_private_fills_on_three_nodes(venue: AccountsCluster) -> None:
    c = venue
    c.start_all()
    # alice rests a sell
    sub = _json(_submit(c, "alice", "sell", "5", "@", "100"))
    oid = sub["order_id"]
    assert sub["ok"] and sub["trades"] == []
    # bob cannot cancel it: exit 10, one clear line (at the node that stamped it, and elsewhere)
    r = cli("cancel", "-c", c.client("bob"), "--node", "n1", oid, "--timeout", "2")
    assert r.returncode == 10, (r.returncode, r.stdout, r.stderr)
    assert f"order {oid} belongs to another account" in _one_line_error(r)
    c.wait_converged(timeout=10)
    r = cli("cancel", "-c", c.client("bob"), "--node", "n3", oid, "--json", "--timeout", "2")
    assert r.returncode == 10 and json.loads(r.stdout)["ok"] is False
    # ... nor amend it
    r = cli("amend", "-c", c.client("bob"), "--node", "n2", oid, "1", "@", "99", "--json", "--timeout", "2")
    assert r.returncode == 10, r.stdout
    # alice's order still rests on every node, unchanged
    for n in c.ids:
        rows = _json(cli("orders", "-c", c.client("alice"), "--node", n, "--json"))["orders"]
        assert [(o["order_id"], o["side"], o["qty"], o["price"]) for o in rows] == [(oid, "sell", "5", "100.00")]
    # alice buys at her own resting sell: no trade (cancel-newest), her sell stays
    own = _json(_submit(c, "alice", "buy", "5", "@", "100", node="n2", timeout="3"))
    assert own["ok"] and own["trades"] == []
    # bob buys there: a trade
    buy = _json(_submit(c, "bob", "buy", "2", "@", "100", node="n3", timeout="3"))
    assert buy["ok"] and len(buy["trades"]) == 1 and buy["trades"][0]["maker"] == oid
    assert "alice" not in json.dumps(buy)
    c.wait_converged(timeout=10)
    for n in c.ids:
        # the book shows depth only: 3 left, and alice's buy never rested
        book = _json(cli("book", "-c", c.client("bob"), "--node", n, "--json"))
        assert book["bids"] == [] and [(a["qty"], a["orders"]) for a in book["asks"]] == [("3", 1)]
        assert "alice" not in json.dumps(book) and oid not in json.dumps(book)
    # bob's fills: his, as taker, never naming alice
    r = cli("trades", "-c", c.client("bob"), "--node", "n3", "--json")
    t = _json(r)
    assert "alice" not in r.stdout
    assert t["account"] == "bob"
    assert [(x["side"], x["qty"], x["price"], x["role"]) for x in t["trades"]] == [("buy", "2", "100.00", "taker")]
    assert t["trades"][0]["order_id"] == buy["order_id"]
    # alice's fills, from another node: she was the maker (and her self-cross made none)
    _wait(lambda: len(_json(cli("trades", "-c", c.client("alice"), "--node", "n1", "--json"))["trades"]) == 1,
          what="alice's fill at n1")
    r = cli("trades", "-c", c.client("alice"), "--node", "n1", "--json")
    assert "bob" not in r.stdout
    assert [(x["side"], x["qty"], x["role"]) for x in _json(r)["trades"]] == [("sell", "2", "maker")]
    # alice's own cancel works, everywhere
    r = cli("cancel", "-c", c.client("alice"), "--node", "n2", oid, "--json", "--timeout", "3")
    assert _json(r)["ok"]
    _wait(lambda: all(_orders(c, "alice", n) == [] for n in c.ids), what="the cancel on every node")
    c.wait_converged(timeout=10)


# ==== a participant cannot speak as a node ==============================================================
def test_client_credential_cannot_send_peer_messages_and_mass_cancel(venue: AccountsCluster) -> None:
    c = venue
    c.start_all()
    oid = _json(_submit(c, "alice", "sell", "5", "@", "100"))["order_id"]
    _, st0 = c.wait_converged(timeout=10)
    before = {s["id"]: s for s in st0}
    alice = load(c.client("alice"))
    account, secret = alice.client_credential()
    assert account == "alice" and alice.key is None
    now = time.time_ns()
    # a well-formed gossip batch: a cancel of the order "from n3" (next seq), and a new buy that crosses it
    seq = max(s["version_vector"].get("n3", 0) for s in st0) + 1
    cancel = Op(now, 0, "n3", seq, CANCEL, "GBX", oid, SELL, 0, 0, GTC, "x1", "alice")
    buy = Op(now + 1, 0, "n3", seq + 1, NEW, "GBX", "", 0, 10_000, 5, GTC, "x2", "alice")
    def frames_to(n: str) -> list[bytes]:  # well-formed, bound to node n and this cluster, fresh
        bind = {"dst": n, "label": alice.name, "stamp_ms": time.time_ns() // 1_000_000}
        return [encode(OpBatch([cancel, buy]), "n3", 1, secret[0], account="alice", **bind),
                encode(OpBatch([cancel]), "n2", 2, secret[0], account="alice", **bind),
                # a membership update: "n2 is dead", as if n3 said so
                encode(MemberGossip(7, (Update("n2", 99, "dead", "n3"),)), "n3", 3, secret[0], account="alice", **bind),
                encode(MemberGossip(7, (Update("n1", 99, "left", "n1"),)), "n1", 4, secret[0], account="alice", **bind)]
    frames = frames_to("n1")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for n in c.ids:
            addr = alice.node(n).addr
            for f in frames_to(n):
                s.sendto(f, addr)
    finally:
        s.close()

    def counted() -> bool:
        return all(x["counters"]["dropped"].get("not_peer", 0) - before[x["id"]]["counters"]["dropped"].get(
            "not_peer", 0) >= len(frames) for x in c.status())
    _wait(counted, what="not_peer drops on every node")
    time.sleep(0.3)
    st = c.status()
    for x in st:
        b = before[x["id"]]
        assert (x["digest"], x["ops"]) == (b["digest"], b["ops"]), x["id"]
        assert x["version_vector"] == b["version_vector"]
        assert all(v == "alive" for v in x["members"].values()), x["members"]
    for n in c.ids:
        assert _orders(c, "alice", n) == [oid]
    # the kill switch, for real: one op, alice's orders only, on every node
    mine = [_json(_submit(c, "alice", "sell", "1", "@", f"10{i + 1}", node=f"n{i + 1}"))["order_id"]
            for i in range(3)]
    bobs = _json(_submit(c, "bob", "sell", "1", "@", "110", node="n2"))["order_id"]
    _, st = c.wait_converged(timeout=10)
    ops = {x["id"]: x["ops"] for x in st}
    r = cli("cancel", "-c", c.client("alice"), "--all", "--node", "n3", "--json", "--timeout", "3")
    assert _json(r)["ok"], r.stdout
    _, st = c.wait_converged(timeout=10)
    assert all(x["ops"] == ops[x["id"]] + 1 for x in st)  # one op
    assert all(x["resting_orders"] == 1 for x in st)
    for n in c.ids:
        assert _orders(c, "alice", n) == []
    assert _orders(c, "bob", "n1") == [bobs] and len(mine) == 3
    r = cli("cancel", "-c", c.client("alice"), "--all", "--node", "n1", "--timeout", "3")  # plain output too
    assert r.returncode == 0 and "mass cancel" in r.stdout and "Traceback" not in r.stderr, r.stderr


# ==== SIGHUP reload ======================================================================================
def _hup(c: AccountsCluster, expect: str) -> None:
    """SIGHUP every node and wait until each has logged the reload (the ``expect`` part of its line)."""
    counts = {n: c.logs[n].read_text().count("accounts reloaded") for n in c.ids}
    for n in c.ids:
        c.procs[n].send_signal(signal.SIGHUP)

    def done() -> bool:
        return all(c.logs[n].read_text().count("accounts reloaded") > counts[n] for n in c.ids)
    _wait(done, what="accounts reloaded in every log")
    for n in c.ids:
        last = [ln for ln in c.logs[n].read_text().splitlines() if "accounts reloaded" in ln][-1]
        assert expect in last, last


def _set_accounts(cfg: Path, add: dict[str, str] | None = None, drop: str | None = None) -> None:
    lines = cfg.read_text().splitlines()
    out: list[str] = []
    for ln in lines:
        if drop and re.match(rf"{re.escape(drop)}\s*=", ln):
            continue
        out.append(ln)
        if ln.startswith("[accounts]"):
            out += [f'{a} = "{k}"' for a, k in (add or {}).items()]
    write_private(cfg, "\n".join(out) + "\n")
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600


def test_sighup_adds_and_revokes_accounts(venue: AccountsCluster) -> None:
    c = venue
    c.start_all()
    assert _json(_submit(c, "bob", "sell", "1", "@", "101", timeout="2"))["ok"]
    # carol: a new credential in cluster.toml, her client file from it; unknown until the reload
    _set_accounts(c.config, add={"carol": os.urandom(32).hex()})
    write_private(Path(c.client("carol")), render_client(load(c.config), "carol"))
    assert load(c.client("carol")).key is None
    r = _submit(c, "carol", "buy", "1", "@", "99", timeout="0.5")
    assert r.returncode == 3, (r.returncode, r.stdout, r.stderr)  # her frames are refused: no reply
    _hup(c, "added carol")
    for n in ("n1", "n3"):
        r = _submit(c, "carol", "buy", "1", "@", "99", node=n, timeout="2")
        assert _json(r)["ok"], n
    # bob revoked: his requests are refused from then on, on every node
    _set_accounts(c.config, drop="bob")
    assert "bob" not in load(c.config).accounts
    _hup(c, "revoked bob")
    for n in c.ids:
        r = _submit(c, "bob", "sell", "1", "@", "102", node=n, timeout="0.5")
        assert r.returncode == 3, (n, r.returncode, r.stdout, r.stderr)
    st = c.status()
    assert all(x["counters"]["dropped"].get("auth", 0) >= 1 for x in st)
    c.wait_converged(timeout=10)
    # nothing of bob's reached the book after the revocation (his earlier order still rests)
    book = _json(cli("book", "-c", c.client("carol"), "--json"))
    assert [(a["price"], a["qty"]) for a in book["asks"]] == [("101.00", "1")]
    assert [(b["price"], b["qty"]) for b in book["bids"]] == [("99.00", "2")]
