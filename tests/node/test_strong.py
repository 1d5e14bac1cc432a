"""Strong mode with real node processes on 127.0.0.1 (issue 6): the CLI works the same, a killed
leader is replaced and a new one commits within 2 s with the default sequencer timeouts, a
partitioned minority answers "no quorum" (exit code 4), and after the heal every book is equal."""

from __future__ import annotations

import json
import time

import trio

from gossipbook.bench.failover import time_to_commit
from gossipbook.config import load

from .harness import Cluster, cli


def strong(make_cluster, n: int, data: bool = False) -> Cluster:
    c = make_cluster(n, data=data)
    c.config.write_text(c.config.read_text().replace('mode = "eventual"', 'mode = "strong"'))
    return c


def leader_of(c: Cluster, ids: list[str], timeout: float = 10.0) -> str:
    """The leader every node of ``ids`` names (waits for one)."""
    deadline = time.monotonic() + timeout
    while True:
        st = {s["id"]: s for s in c.status() if s["id"] in ids}
        lead = {s.get("leader") for s in st.values() if s["reachable"]}
        if len(st) == len(ids) and all(s["reachable"] for s in st.values()) and len(lead) == 1 and None not in lead:
            return lead.pop()
        assert time.monotonic() < deadline, f"no agreed leader among {ids}: {st}\n{c.dump_logs()}"
        time.sleep(0.05)


def books_equal(c: Cluster, ids: list[str], timeout: float = 10.0) -> list[dict]:
    """Wait until ``ids`` report one commit index and one digest (the strong-mode convergence)."""
    deadline = time.monotonic() + timeout
    while True:
        st = [s for s in c.status() if s["id"] in ids]
        if all(s["reachable"] for s in st) and len({(s["commit_index"], s["digest"], s["ops"]) for s in st}) == 1:
            return st
        assert time.monotonic() < deadline, json.dumps(
            [{k: s.get(k) for k in ("id", "role", "leader", "term", "commit_index", "digest")} for s in st])
        time.sleep(0.1)


def faults(c: Cluster, plan: dict[str, str]) -> None:
    """Block, on each node of ``plan``, its sends to the listed peers (``node --fault-control``)."""
    from gossipbook.bench.convergence import _faults
    trio.run(_faults, load(c.config), plan)


def partition(c: Cluster, side_a: list[str], side_b: list[str]) -> None:
    faults(c, {n: ",".join(side_b) for n in side_a} | {n: ",".join(side_a) for n in side_b})


def test_three_nodes_cli_load_sigkill_leader_and_restart_from_disk(make_cluster):
    c = strong(make_cluster, 3, data=True)
    c.start_all("--fault-control")
    cfg = load(c.config)
    lead = leader_of(c, c.ids)
    follower = next(n for n in c.ids if n != lead)
    # submit / book / status / load work as in eventual mode
    r = cli("submit", "-c", str(c.config), "-n", follower, "sell", "10", "@", "100.25", "--json")
    assert r.returncode == 0, r.stderr
    sub = json.loads(r.stdout)
    assert sub["ok"] and sub["level"] == "final" and sub["order_id"].startswith(f"{lead}:")
    r = cli("load", "-c", str(c.config), "--orders", "300", "--rate", "500", "--json", timeout=60)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["errors"] == 0 and res["acked"] > 200, res
    st = books_equal(c, c.ids)
    assert st[0]["trades_provisional"] == 0 and st[0]["ops"] >= res["acked"]
    r = cli("book", "-c", str(c.config), "-n", follower, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["digest"] == st[0]["digest"]
    assert cli("status", "-c", str(c.config)).returncode == 0  # the table (term, leader, commit columns)
    r = cli("status", "-c", str(c.config), "--json")
    nodes = json.loads(r.stdout)["nodes"]
    assert {n["leader"] for n in nodes} == {lead} and [n["id"] for n in nodes if "match_index" in n] == [lead]

    # SIGKILL the leader: a new one commits within 2 s (default sequencer timeouts)
    survivors = [n for n in c.ids if n != lead]
    c.kill(lead)
    took, codes = trio.run(time_to_commit, cfg, survivors)
    assert took < 2.0, (took, codes)
    new_lead = leader_of(c, survivors)
    assert new_lead != lead
    # the old leader restarts from its data dir, catches up, and every book is equal
    c.start(lead)
    st = books_equal(c, c.ids)
    assert {s["leader"] for s in st} == {new_lead}

    # a minority of one answers "no quorum" (exit code 4); after the heal the books are equal again
    lone = next(n for n in c.ids if n != new_lead)
    partition(c, [lone], [n for n in c.ids if n != lone])
    time.sleep(1.0)
    t0 = time.monotonic()
    r = cli("submit", "-c", str(c.config), "-n", lone, "buy", "1", "@", "99")
    assert r.returncode == 4 and "no quorum" in r.stderr, (r.returncode, r.stderr)
    assert time.monotonic() - t0 < 5.0
    took, _codes = trio.run(time_to_commit, cfg, [new_lead])
    assert took < 1.0
    faults(c, {n: "" for n in c.ids})
    books_equal(c, c.ids)


def test_five_nodes_partitioned_leader_side_says_no_quorum_heals_then_sigkill(make_cluster):
    c = strong(make_cluster, 5)
    c.start_all("--fault-control")
    cfg = load(c.config)
    lead = leader_of(c, c.ids)
    r = cli("load", "-c", str(c.config), "--orders", "200", "--rate", "500", "--json", timeout=60)
    assert r.returncode == 0 and json.loads(r.stdout)["errors"] == 0, r.stderr
    # the leader and one follower on the minority side, three nodes on the majority side
    minority = [lead, next(n for n in c.ids if n != lead)]
    majority = [n for n in c.ids if n not in minority]
    partition(c, minority, majority)
    took, _codes = trio.run(time_to_commit, cfg, majority)  # a new leader over there commits
    assert took < 2.0, took
    time.sleep(0.5)  # the old leader has stepped down by now (quorum timeout 0.3 s)
    for n in minority:
        r = cli("submit", "-c", str(c.config), "-n", n, "sell", "2", "@", "101", "--json")
        assert r.returncode == 4, (n, r.returncode, r.stdout, r.stderr)
        out = json.loads(r.stdout)
        assert out["code"] == "no quorum" and "no quorum" in out["message"]
    st = {s["id"]: s for s in c.status()}
    assert all(st[n]["role"] != "leader" for n in minority)
    r = cli("load", "-c", str(c.config), "--orders", "100", "--rate", "500", "--nodes", ",".join(majority), "--json",
            timeout=60)
    assert r.returncode == 0 and json.loads(r.stdout)["errors"] == 0, r.stderr
    faults(c, {n: "" for n in c.ids})
    st = books_equal(c, c.ids)
    new_lead = st[0]["leader"]
    assert new_lead in majority

    # SIGKILL the (new) leader of the five: a new one commits within 2 s
    survivors = [n for n in c.ids if n != new_lead]
    c.kill(new_lead)
    took, codes = trio.run(time_to_commit, cfg, survivors)
    assert took < 2.0, (took, codes)
    books_equal(c, survivors)


def test_demo_in_strong_mode_shows_the_minority_refusing_with_no_quorum():
    r = cli("demo", "--mode", "strong", "--partition", "--nodes", "3", "--duration", "7", "--json", timeout=60)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["mode"] == "strong" and res["split"] == [["n1"], ["n2", "n3"]]
    assert res["orders"]["no_quorum"] > 0 and res["orders"]["acked"] > 0
    assert res["converged"] and res["all_digests_equal"]
    assert res["trades"] == res["trades_final"] and res["revised_trades"] == 0
