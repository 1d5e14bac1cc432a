"""User mistakes: one clear line on stderr, a non-zero exit, no traceback, nothing changed."""

from __future__ import annotations

import json
import socket

import pytest

from gossipbook.config import write_private

from .harness import cli, write_config


def _clean_error(r, code=None):
    assert r.returncode != 0
    if code is not None:
        assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_missing_config(tmp_path):
    line = _clean_error(cli("status", "-c", str(tmp_path / "nope.toml")))
    assert "not found" in line


@pytest.mark.parametrize("text,needle", [
    ("this is = = not toml", "not valid TOML"),
    ("[cluster]\nkey = 'zz'\n[[nodes]]\nid='n1'\naddr='127.0.0.1:1'\n", "hex"),
    ("[cluster]\nkey = '" + "ab" * 32 + "'\nmode='fast'\n[[nodes]]\nid='n1'\naddr='127.0.0.1:1'\n", "mode"),
    ("[cluster]\nkey = '" + "ab" * 32 + "'\n[[nodes]]\nid='n1'\naddr='nowhere'\n", "HOST:PORT"),
    ("[cluster]\nkey = '" + "ab" * 32 + "'\n", "nodes"),
    ("[cluster]\nkey = '" + "ab" * 32 + "'\n[[nodes]]\nid='n1'\naddr='127.0.0.1:1'\n[gossip]\nspeed_ms=1\n", "unknown key"),
])
def test_invalid_config(tmp_path, text, needle):
    p = tmp_path / "c.toml"
    write_private(p, text)
    line = _clean_error(cli("node", "-c", str(p), "--id", "n1"))
    assert needle in line


def test_unknown_node_id(tmp_path):
    cfg = write_config(tmp_path / "c.toml", 2)
    line = _clean_error(cli("node", "-c", str(cfg), "--id", "n9"))
    assert "n9" in line


def test_port_in_use(tmp_path):
    cfg = write_config(tmp_path / "c.toml", 1)
    from gossipbook.config import load
    addr = load(cfg).node("n1").addr
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(addr)
    try:
        line = _clean_error(cli("node", "-c", str(cfg), "--id", "n1"), code=3)
        assert "in use" in line
    finally:
        s.close()


def test_unreachable_node(tmp_path):
    cfg = write_config(tmp_path / "c.toml", 1)
    line = _clean_error(cli("submit", "-c", str(cfg), "buy", "1", "@", "10", "--timeout", "0.3"), code=3)
    assert "did not answer" in line


@pytest.mark.parametrize("args,needle", [
    (["buy", "10", "@", "100.255"], "tick size"),
    (["buy", "0", "@", "100"], "positive"),
    (["buy", "1.5", "@", "100"], "lot size"),
    (["buy", "10", "@", "-3"], "band"),
    (["hold", "10", "@", "100"], "buy|sell"),
    (["buy", "10"], "price"),
])
def test_bad_orders_rejected_before_sending(tmp_path, args, needle):
    cfg = write_config(tmp_path / "c.toml", 1)
    line = _clean_error(cli("submit", "-c", str(cfg), *args, "--timeout", "0.3"), code=2)
    assert needle in line


def test_unknown_order_id_changes_nothing(make_cluster):
    c = make_cluster(1)
    c.start_all()
    before = c.status()[0]
    line = _clean_error(cli("cancel", "-c", str(c.config), "n1:999"), code=6)
    assert "unknown order" in line
    line = _clean_error(cli("amend", "-c", str(c.config), "nobody", "1", "@", "10"), code=6)
    after = c.status()[0]
    assert (before["digest"], before["ops"]) == (after["digest"], after["ops"])


def test_every_command_has_help():
    from gossipbook.cli.main import build_parser
    top = cli("--help")
    assert top.returncode == 0
    sub = build_parser()._subparsers._group_actions[0].choices
    assert set(sub) >= {"cluster", "node", "submit", "cancel", "amend", "book", "status", "load", "bench"}
    for name in sub:
        r = cli(name, "--help")
        assert r.returncode == 0 and "usage:" in r.stdout, name
        assert name in top.stdout


def test_cluster_init_writes_a_valid_config(tmp_path):
    r = cli("cluster", "init", "--nodes", "3", "--base-port", "9100")
    assert r.returncode == 0
    p = tmp_path / "c.toml"
    write_private(p, r.stdout)
    from gossipbook.config import load
    cfg = load(p)
    assert cfg.ids == ["n1", "n2", "n3"] and cfg.node("n3").port == 9102 and len(cfg.key) == 32
    r2 = cli("cluster", "init", "--nodes", "3")
    assert r2.stdout != r.stdout  # a fresh key every time
    _clean_error(cli("cluster", "init", "--nodes", "0"))


def test_submit_json_and_book(make_cluster):
    c = make_cluster(2)
    c.start_all()
    r = cli("submit", "-c", str(c.config), "-n", "n1", "sell", "5", "@", "101", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["ok"] and out["order_id"] == "n1:1" and out["level"] in ("accepted", "replicated", "final")
    alice = c.config.parent / "clients" / "alice.toml"  # another account: the operator cannot trade with itself
    r = cli("submit", "-c", str(alice), "-n", "n2", "buy", "2", "@", "101", "--wait", "replicated", "--json")
    out = json.loads(r.stdout)
    assert out["trades"][0]["qty"] == "2" and out["trades"][0]["maker"] == "n1:1"
    b = json.loads(cli("book", "-c", str(c.config), "-n", "n1", "--json").stdout)
    assert b["asks"] == [{"price": "101.00", "qty": "3", "orders": 1}] and b["bids"] == []


def test_cluster_init_host_cannot_inject_toml(tmp_path):
    """Issue 15 (review section 6): --host was pasted into quoted TOML strings unescaped, so a host
    with a quote and a newline added keys (here a data_dir for every node)."""
    evil = '127.0.0.1:7401"\ndata_dir = "/srv/other-node"\n#'
    r = cli("cluster", "init", "--nodes", "2", "--host", evil)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "HOST:PORT" in r.stderr or "address" in r.stderr
    r = cli("cluster", "init", "--nodes", "2", "--data-root", '/tmp/x"\nmode = "strong"\n#')
    assert r.returncode == 0
    p = tmp_path / "c.toml"
    write_private(p, r.stdout)
    from gossipbook.config import load
    cfg = load(p)
    assert cfg.mode == "eventual" and cfg.node("n1").data_dir == '/tmp/x"\nmode = "strong"\n#/n1'
