"""``gossipbook top``: the adapter from status dicts to the demo's snapshot, and the real command
watching a real 4-process cluster in an 80x24 pty while half of it is cut off from the other."""

from __future__ import annotations

import re
import time
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import trio
from rich.console import Console

from gossipbook.tui.top import TopState, cut_links, frame, sides, snapshot_from_status

from .ptyterm import Term

IDS = ("n1", "n2", "n3", "n4")
BOUND = r"±\d+(?:\.\d)?(?:µs|ms) [+-]\d+\.\dppm"  # a node panel's clock line: error bound, drift
SIDE = {"n1": 0, "n2": 0, "n3": 1, "n4": 1}


def status(nid: str, now: int, split: bool = True) -> dict[str, Any]:
    """A node's ``status`` reply as ``gossipbook status --json`` lists it."""
    same = {m: SIDE[m] == SIDE[nid] or not split for m in IDS}
    return {"id": nid, "reachable": True, "digest": ("a1" * 16 if SIDE[nid] == 0 or not split else "b2" * 16),
            "ops": 150, "version_vector": {"n1": 40, "n2": 38, "n3": 35, "n4": 37},
            "watermark": [now - 300_000_000, 0], "trades_final": 27, "trades_provisional": 7,
            "members": {m: "alive" if same[m] else "dead" for m in IDS},
            "peers": {m: {"offset_us": -38.0, "rtt_us": 261.0, "uncertainty_us": 90.0} for m in IDS if m != nid},
            "counters": {"revised_trades": 1, "pushed_ops": 100, "repair_ops": 2}, "hlc": [now, 0],
            "clock_in_sync": True, "accepting": True, "resting_orders": 12, "ready": True,
            "addr": f"127.0.0.1:4000{nid[1]}",
            "clock": {"status": "synced", "reference": "n1", "offset_us": -38.0, "bound_us": 45.4 + int(nid[1]),
                      "drift_ppm": 3.3, "max_error_us": 10000.0, "max_drift_ppm": 50.0, "rts25_ok": True,
                      "takes_orders": True},
            "fairness": {"orders": 100, "tied_orders": 2, "pairs": 2, "unknown": 0, "origins_over": 0,
                         "coin_toss_rate": 0.02, "recent": 32}}


def cuts(screen: str) -> int:
    """✕ marks in the link matrix (not its legend)."""
    return sum(line.count("✕") for line in screen.splitlines() if "✕cut" not in line)


def render(nodes: list[dict[str, Any]], width: int = 80, height: int = 24) -> str:
    buf = StringIO()
    Console(file=buf, width=width, height=height, color_system=None, force_terminal=False).print(
        frame(nodes, "cluster.toml", ports={n: 40000 + int(n[1:]) for n in IDS}))
    return buf.getvalue()


def test_partition_fits_80x24() -> None:
    now = time.time_ns()
    nodes = [status(n, now) for n in IDS]
    assert cut_links(nodes) == {(a, b) for a in IDS for b in IDS if SIDE[a] != SIDE[b]}
    assert sides(nodes, cut_links(nodes)) == (("n1", "n2"), ("n3", "n4"))
    out = render(nodes)
    lines = out.splitlines()
    assert len(lines) <= 24 and max(len(x) for x in lines) <= 80, out
    for nid in IDS:
        assert re.search(rf"{nid} :4000{nid[1]}", out), f"no panel for {nid}:\n{out}"
    assert "PARTITIONED n1 n2 | n3 n4" in out and "CUT n1 n2 | n3 n4" in out, out
    assert "links: row sees col" in out and cuts(out) == 8, out  # both directions of 2 x 2 links
    assert "DIGESTS DIFFER (2)" in out
    for nid in IDS:  # issue 18: each node's bound and drift, and the cluster's coin-toss rate
        assert f"±{45 + int(nid[1])}µs +3.3ppm" in out, out
    assert "coin tosses 2.0% of 400 orders" in out, out
    v = snapshot_from_status(nodes).nodes[0]
    assert (v.clock_status, v.clock_bound_us, v.clock_drift_ppm, v.clock_takes_orders) == ("synced", 46.4, 3.3, True)
    assert (v.fair_orders, v.fair_tied) == (100, 2)


def test_down_node_and_healed_cluster() -> None:
    now = time.time_ns()
    nodes = [status(n, now, split=False) for n in IDS]
    out = render(nodes)
    assert "digests equal" in out and "no partition" in out and cuts(out) == 0, out
    # n4 stops answering and the others see it dead: down, not a cut
    nodes[3] = {"id": "n4", "reachable": False}
    for n in nodes[:3]:
        n["members"]["n4"] = "dead"
    snap = snapshot_from_status(nodes)
    assert not snap.partitioned and not snap.blocked and snap.nodes[3].stopped
    out = render(nodes)
    assert "n4 :40004 down" in out and "1 DOWN" in out and cuts(out) == 0, out


def test_events_follow_the_polls() -> None:
    now = time.time_ns()
    st = TopState("cluster.toml", t0=0.0)
    st.update([status(n, now, split=False) for n in IDS], now=1.0)
    st.update([status(n, now) for n in IDS], now=2.0)
    s = st.update([status(n, now, split=False) for n in IDS[:3]] + [{"id": "n4", "reachable": False}], now=3.0)
    texts = [e.text for e in s.events]
    assert "partition: n1 n2 | n3 n4" in texts and "n4 does not answer" in texts, texts
    assert any("sees n3 dead" in t for t in texts) and "replicas differ: 2 distinct digests" in texts, texts
    assert [d for _, d in s.timeline] == [1, 2, 1]


# ---- the real thing --------------------------------------------------------------------------------
async def _faults(cfg: Any, plan: dict[str, str]) -> None:
    from gossipbook.core.wire import ClientQuery
    from gossipbook.node.client import Client

    async with Client(cfg) as c:
        for nid, blocked in plan.items():
            req = c.new_req()
            await c.request(nid, ClientQuery(req, "faults", blocked, 0), req, 2.0)


@pytest.fixture
def cluster(tmp_path: Path) -> Any:
    pytest.importorskip("pyte")
    from ..node.harness import Cluster

    c = Cluster(tmp_path, 4)
    try:
        c.start_all("--fault-control")
        yield c
    finally:
        c.stop()


def test_top_in_a_pty_shows_the_partition(cluster: Any) -> None:
    from gossipbook.config import load

    cfg = load(cluster.config)
    left, right = ["n1", "n2"], ["n3", "n4"]
    trio.run(_faults, cfg, {n: ",".join(right) for n in left} | {n: ",".join(left) for n in right})
    t = Term(["-m", "gossipbook", "top", "-c", str(cluster.config), "--interval", "0.3"], 80, 24)
    try:
        ok = t.wait_for(lambda s: "CUT n1 n2 | n3 n4" in s and cuts(s) == 8
                        and all(re.search(rf"{n} :\d+", s) for n in IDS), 15)
        screen = t.text()
        assert ok, f"{screen}\n{cluster.dump_logs()}"
        assert "PARTITIONED n1 n2 | n3 n4" in screen and "links: row sees col" in screen
        assert all(len(line) <= 80 for line in t.screen.display)
        # issue 18: every node's clock error bound and drift, and the coin-toss rate
        assert t.wait_for(lambda s: len(re.findall(BOUND, s)) == 4 and "coin tosses" in s, 10), t.text()
        # heal: the matrix follows
        trio.run(_faults, cfg, {n: "" for n in IDS})
        assert t.wait_for(lambda s: "no partition" in s and cuts(s) == 0 and "heal" in s, 10), t.text()
        t.send(b"\x03")  # Ctrl-C through the terminal
        code = t.wait_exit(5)
        assert code == 0, f"exit {code} after Ctrl-C:\n{t.text()}"
        assert b"Traceback" not in t.raw, t.raw.decode(errors="replace")[-3000:]
    finally:
        t.close()


def test_top_once_prints_one_frame(cluster: Any) -> None:
    from ..node.harness import cli

    cluster.kill("n4")
    r = cli("top", "-c", str(cluster.config), "--once", "--timeout", "0.5", timeout=20)
    assert r.returncode == 3, r.stderr  # as `gossipbook status`: a node did not answer
    for nid in IDS:
        assert re.search(rf"{nid} :\d+", r.stdout), r.stdout
    assert "n4 :" in r.stdout and "down" in r.stdout and "1 DOWN" in r.stdout, r.stdout
    assert "Traceback" not in r.stderr
