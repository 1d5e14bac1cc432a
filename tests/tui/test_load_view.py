"""Per-shard and per-node load (gossipbook/tui/load.py): the rows and tables from fixed status
dicts, top's load panel, and one live pair of status calls against a 2-shard cluster."""

from __future__ import annotations

import dataclasses
import io
import time
from decimal import Decimal
from typing import Any

import trio
from rich.console import Console

import gossipbook as g
from gossipbook.cli.status import gather_status
from gossipbook.tui import load as lv
from gossipbook.tui.top import TopState, TopView


def _node(nid: str, commits: list[int], leads: list[int], answered: int, waiting: int = 0,
          reachable: bool = True) -> dict[str, Any]:
    if not reachable:
        return {"id": nid, "reachable": False}
    leaders = ["n1", "n2", "n3"]
    shards = [{"shard": s, "instruments": [f"S{s}"], "role": "leader" if s in leads else "follower",
               "term": 2 + s, "leader": leaders[s % 3], "commit_index": c, "waiting": waiting}
              for s, c in enumerate(commits)]
    return {"id": nid, "reachable": True, "term": 2, "role": "leader" if 0 in leads else "follower",
            "leader": "n1", "commit_index": commits[0], "shards": shards,
            "counters": {"client_submits": answered, "client_queries": 5, "waiting": waiting * len(commits)}}


PREV = [_node("n1", [100, 100, 100], [0], 1000), _node("n2", [100, 100, 99], [1], 500),
        _node("n3", [99, 100, 100], [2], 0)]
# over 2 s: shard 0 +40, shard 1 +60, shard 2 +400 (mean 166.7: 2 x mean = 333 <= 400 -> hot)
CUR = [_node("n1", [140, 160, 500], [0], 1300, waiting=2), _node("n2", [139, 160, 500], [1], 520, waiting=1),
       _node("n3", [140, 158, 499], [2], 0)]


def test_shard_rows_give_leader_term_commit_rate_waiting_and_mark_the_hot_shard() -> None:
    rows = lv.shard_rows(PREV, CUR, 2.0)
    assert [(r.shard, r.leader, r.term, r.commit_index, r.committed_per_s, r.waiting, r.hot) for r in rows] == [
        (0, "n1", 2, 140, 20.0, 3, False), (1, "n2", 3, 160, 30.0, 3, False), (2, "n3", 4, 500, 200.0, 3, True)]
    assert rows[2].instruments == ("S2",)
    # no earlier poll: rates unknown, nothing hot
    assert all(r.committed_per_s is None and not r.hot for r in lv.shard_rows(None, CUR, 0.0))


def test_no_shard_is_hot_when_the_load_is_even_or_small() -> None:
    even = [_node("n1", [140, 140, 140], [0], 0)]
    assert not any(r.hot for r in lv.shard_rows(PREV[:1], even, 2.0))
    small = [_node("n1", [101, 101, 130], [0], 0)]  # 15/s against 0.5/s: below HOT_MIN_PER_S
    assert not any(r.hot for r in lv.shard_rows(PREV[:1], small, 2.0))
    one = [{"id": "n1", "reachable": True, "term": 3, "role": "leader", "leader": "n1", "commit_index": 900,
            "counters": {"waiting": 4}}]  # one group: shard 0 from the top-level keys, never hot
    r = lv.shard_rows([{**one[0], "commit_index": 100}], one, 1.0)
    assert [(x.shard, x.leader, x.committed_per_s, x.waiting, x.hot) for x in r] == [(0, "n1", 800.0, 4, False)]
    assert lv.shard_rows(None, [{"id": "n1", "reachable": True, "counters": {}}], 1.0) == []  # eventual mode


def test_node_rows_give_requests_per_second_and_what_each_leads() -> None:
    cur = CUR[:2] + [_node("n3", [1, 1, 1], [], 0, reachable=False)]
    rows = lv.node_rows(PREV, cur, 2.0)
    assert [(r.node, r.requests_per_s, r.leads, r.waiting, r.reachable) for r in rows] == [
        ("n1", 150.0, (0,), 6, True), ("n2", 10.0, (1,), 3, True), ("n3", None, (), 0, False)]
    restarted = [_node("n1", [1, 1, 1], [0], 3)]  # counters went down: no rate, not a negative one
    assert lv.node_rows(PREV, restarted, 2.0)[0].requests_per_s is None


def _render(renderable: Any, width: int = 140, height: int | None = None) -> str:
    con = Console(file=io.StringIO(), width=width, height=height or 60, color_system=None)
    con.print(renderable)
    return con.file.getvalue()  # type: ignore[attr-defined]


def test_tables_and_top_show_the_load_with_the_hot_shard_marked() -> None:
    shards, nodes = lv.load_rows(PREV, CUR, 2.0)
    text = _render(lv.shard_table(shards))
    assert "HOT" in text and "200.0" in text and text.count("HOT") == 1
    assert "150.0" in _render(lv.node_table(nodes))
    js = lv.as_json(shards, nodes, 2.0)
    assert [s["hot"] for s in js["shards"]] == [False, False, True] and js["nodes"][0]["requests_per_s"] == 150.0
    st = TopState("cluster.toml", t0=0.0)
    st.update(PREV, now=1.0)
    snap = st.update(CUR, now=3.0)
    view = TopView(reserve_lines=0, interval=1.0)
    view.update(snap, st.meta)
    tall = _render(view, 140, 40)
    assert "HOT shard 2" in tall and "requests/s" in tall
    assert "HOT shard" not in _render(view, 80, 24)  # no room at 80x24: the demo's panels keep theirs


async def test_a_live_status_pair_shows_each_shards_leader_and_rate() -> None:
    cfg = g.local_cluster([g.Instrument("AAA"), g.Instrument("BBB")], nodes=3, mode="strong")
    cfg = dataclasses.replace(cfg, shards=(("AAA",), ("BBB",)))
    async with g.Node(cfg, "n1") as n1, g.Node(cfg, "n2") as n2, g.Node(cfg, "n3"):
        await n1.ready(timeout=15)
        with trio.fail_after(15):
            while [n1.runner.core.leaders(), n2.runner.core.leaders()] != [["n1", "n2"]] * 2:
                await trio.sleep(0.05)
        before = await gather_status(cfg, 1.0)
        t0 = time.monotonic()
        async with g.Client(cfg, account="alice", node="n3") as alice:
            for i in range(30):
                await alice.create_order("BBB", "buy", "1", str(90 + i % 5), node="n3")
        after = await gather_status(cfg, 1.0)
        shards, nodes = lv.load_rows(before, after, time.monotonic() - t0)
    assert [(r.shard, r.instruments, r.leader) for r in shards] == [(0, ("AAA",), "n1"), (1, ("BBB",), "n2")]
    assert shards[1].committed_per_s and shards[1].committed_per_s > 0
    assert shards[1].commit_index - shards[0].commit_index >= 25  # BBB's 30 orders, AAA's none
    by = {r.node: r for r in nodes}
    assert by["n3"].requests_per_s and by["n3"].requests_per_s > 0  # it answered alice (and the status queries)
    assert by["n1"].leads == (0,) and by["n2"].leads == (1,)
    assert Decimal(str(shards[1].committed_per_s)) > 0
