"""Real node processes on 127.0.0.1 (issue: nodes on real UDP)."""

from __future__ import annotations

import json
import time

import trio

from gossipbook.cli.status import gather_status
from gossipbook.config import load as load_config

from .harness import cli


def _load(cluster, orders: int, rate: int = 2000, seed: int = 1, nodes: str = "") -> dict:
    r = cli("load", "-c", str(cluster.config), "--orders", str(orders), "--rate", str(rate), "--seed", str(seed),
            "--json", *(["--nodes", nodes] if nodes else []), timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_four_nodes_converge_after_load(make_cluster):
    c = make_cluster(4)
    c.start_all()
    res = _load(c, 2000)
    assert res["sent"] == 2000 and res["errors"] == 0
    assert res["acked"] > 1500  # the rest are cancels / amends of orders already filled
    took, st = c.wait_converged(timeout=2.0)
    assert len({s["trades_final"] + s["trades_provisional"] for s in st}) == 1
    assert st[0]["ops"] == res["acked"]
    # the cheap poll a heal is watched with: the same counts, nothing waiting, no digest computed
    progress = trio.run(gather_status, load_config(c.config), 2.0, "progress")
    assert [(p["id"], p["ops"], p["version_vector"], p["pending"]) for p in progress] == \
        [(s["id"], s["ops"], s["version_vector"], 0) for s in st]
    assert "digest" not in progress[0]


def test_converges_with_twenty_percent_loss(make_cluster):
    c = make_cluster(4)
    c.start_all(per_node={f"n{i}": ["--fault-drop", "0.2", "--fault-seed", str(i)] for i in range(1, 5)})
    res = _load(c, 1000, rate=1000, seed=2)
    assert res["errors"] == 0
    took, st = c.wait_converged(timeout=10.0)
    assert st[0]["ops"] == res["acked"]
    assert sum(s["counters"]["send_dropped_fault"] for s in st) > 0


def test_sigkill_marks_dead_and_restart_catches_up(make_cluster):
    c = make_cluster(3)
    c.start_all()
    _load(c, 300, seed=3)
    c.kill("n3")
    t0 = time.monotonic()
    while True:  # detection bound: probe period + timeout + max suspicion (0.1 + 0.8 s) plus slack
        st = {s["id"]: s for s in c.status() if s["reachable"]}
        if all(st[i]["members"].get("n3") == "dead" for i in ("n1", "n2")):
            break
        assert time.monotonic() - t0 < 4.0, st
        time.sleep(0.1)
    detected = time.monotonic() - t0
    _load(c, 200, seed=4, nodes="n1,n2")  # progress without n3
    c.start("n3")
    c.wait_ready(["n3"])
    took, st = c.wait_converged(timeout=10.0)
    assert all(s["members"]["n3"] == "alive" for s in st)
    assert detected < 4.0
