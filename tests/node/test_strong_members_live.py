"""Strong-mode membership with real processes on 127.0.0.1 (issue 20, strong half).

A 3-node strong cluster under ``gossipbook load``: ``cluster add-node --write`` adds n4, which
starts with ``join = true`` as a learner and is promoted to voter once caught up; then the leader
is removed with ``cluster remove-node``: it commits its own removal, hands over and stops, and
commits continue under the new leader; the remaining nodes' books are equal. (The refusals, one
line each, are tested on the core: tests/core/test_strong_members.py.)
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from gossipbook.bench.procs import free_ports

from .harness import PY, cli
from .test_strong import books_equal, leader_of, strong


def roles_of(c, nid: str) -> dict[str, str]:  # noqa: ANN001
    st = {s["id"]: s for s in c.status()}
    return (st.get(nid, {}).get("config") or {}).get("roles", {})


def test_add_a_learner_promote_it_then_remove_the_leader_under_load(make_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    c = strong(make_cluster, 3, data=True)
    cfg = str(c.config)
    c.start_all()
    leader_of(c, c.ids)
    load = subprocess.Popen([PY, "-m", "gossipbook", "load", "-c", cfg, "--orders", "900", "--rate", "150",
                             "--timeout", "2", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        (port,) = free_ports(1)
        r = cli("cluster", "add-node", "-c", cfg, "--id", "n4", "--addr", f"127.0.0.1:{port}",
                "--data-dir", str(tmp_path / "data" / "n4"), "--write", timeout=30)
        assert r.returncode == 0, r.stderr
        assert "added n4" in r.stderr and "join = true" in c.config.read_text()
        assert roles_of(c, "n1")["n4"] == "learner"  # added, not started: it cannot count yet
        c.ids.append("n4")
        c.start("n4")
        deadline = time.monotonic() + 15
        while roles_of(c, "n1").get("n4") != "voter":  # caught up: the leader promotes it
            assert time.monotonic() < deadline, f"n4 never promoted: {roles_of(c, 'n1')}\n{c.dump_logs()}"
            time.sleep(0.2)
        lead = leader_of(c, c.ids)
        rest = [n for n in c.ids if n != lead]
        before = max(s["commit_index"] for s in c.status() if s["id"] in rest)
        r = cli("cluster", "remove-node", "-c", cfg, lead, "--node", rest[0], "--timeout", "20", timeout=40)
        assert r.returncode == 0, r.stderr + c.dump_logs()
        # (the node asked may not have heard of the commit yet: "leaving" until it does)
        assert f"removed {lead} through {rest[0]}" in r.stdout and (f"{lead} removed" in r.stdout
                                                                   or f"{lead} leaving" in r.stdout), r.stdout
        c.procs[lead].wait(timeout=10)  # it sees its removal committed and stops by itself
        assert "was removed from the cluster" in c.logs[lead].read_text()
        new = leader_of(c, rest, timeout=10)
        assert new != lead
        load.communicate(timeout=60)
        # commits continue under the new leader (the file still names the removed node: it is skipped)
        r = cli("load", "-c", cfg, "--orders", "150", "--rate", "300", "--timeout", "2", "--json", timeout=60)
        summary = json.loads(r.stdout)
        assert summary["acked"] >= 140, summary
        st = books_equal(c, rest, timeout=15)
        assert st[0]["commit_index"] >= before + summary["acked"], (before, st[0]["commit_index"])
        for s in st:
            assert s["config"]["roles"][lead] == "removed" and s["config"]["roles"]["n4"] == "voter"
            assert s["config"]["epoch"] == 3 and s["config"]["committed"]
        print(f"after the removal: {summary['acked']} of 150 acked; commit index {before} -> {st[0]['commit_index']}")
    finally:
        if load.poll() is None:
            load.kill()
            load.wait(timeout=10)

