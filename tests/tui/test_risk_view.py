"""Where risk shows for an operator: ``risk_fields`` (status dict -> the views' numbers), the risk
line of ``gossipbook top`` and of the demo, and ``gossipbook status``'s risk column.

What must hold: every limit a node's ``risk`` answer lists is counted, the tightest headroom is the
smallest share of its limit (eventual: the node's own headroom; strong: limit less exact use), the
kill-switched accounts are named; top at 80x24 still fits and shows the line; a status with
nothing risk-related draws no risk line in the demo; and no shape of a node's reply makes a view fail.
"""

from __future__ import annotations

import time
from dataclasses import replace
from io import StringIO
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from gossipbook.cli.status import risk_cell
from gossipbook.demo.snapshot import risk_fields
from gossipbook.tui import panels
from gossipbook.tui.top import snapshot_from_status

from .fixtures import partitioned
from .test_top import IDS, render, status


def query(disabled: bool = False, headroom: int = 3) -> dict[str, Any]:
    """A node's answer to the ``risk`` query (eventual mode) as the operator gets it."""
    rows = [{"symbol": "GBX", "limit_kind": "open-buy", "limit": 100, "rights": {"n1": 50, "n2": 50},
             "used_here": 47, "headroom_here": headroom},
            {"symbol": "", "limit_kind": "notional", "limit": 1000, "rights": {"n1": 1000}, "used_here": 0,
             "headroom_here": 500}]
    return {"node": "n1", "mode": "eventual", "accounts": {
        "alice": {"disabled": False, "limits": rows},
        "bob": {"disabled": disabled, "limits": [rows[1]]}}, "truncated": False, "counters": {}}


def test_risk_fields_count_limits_tightest_and_disabled() -> None:
    st_ = {"risk_query": query(disabled=True), "counters": {"risk_refused_open_buy": 4, "risk_refused_disabled": 2,
                                                           "risk_asks_sent": 9},
           "risk": [{"account": "alice", "symbol": "GBX", "limit_kind": "open-buy", "limit": 100, "headroom_here": 3,
                     "rights": {}}]}
    r = risk_fields(st_)
    assert r == {"risk_limits": 3, "risk_near": 1, "risk_tightest": ("alice open-buy GBX", 3.0),
                 "risk_disabled": ("bob",), "risk_refused": 6}
    # strong mode: the room left is the limit less the exact use
    strong = {"accounts": {"carol": {"disabled": False, "limits": [
        {"symbol": "GBX", "limit_kind": "notional", "limit": 200, "used": 150}]}}}
    assert risk_fields({"risk_query": strong})["risk_tightest"] == ("carol notional GBX", 25.0)
    # status alone: the near-limit rows, no count of every limit
    only = risk_fields({"risk": st_["risk"]})
    assert only["risk_limits"] is None and only["risk_near"] == 1 and only["risk_tightest"][1] == 3.0
    assert risk_fields({}) == {"risk_limits": None, "risk_near": 0, "risk_tightest": None, "risk_disabled": (),
                               "risk_refused": 0}


JSONISH = st.recursive(st.none() | st.booleans() | st.integers(-(1 << 70), 1 << 70) | st.text(max_size=8),
                       lambda c: st.lists(c, max_size=4) | st.dictionaries(
                           st.sampled_from(["accounts", "limits", "limit", "used", "headroom_here", "disabled",
                                            "limit_kind", "symbol", "risk", "alice", "x"]), c, max_size=5),
                       max_leaves=20)


@settings(max_examples=100, deadline=None)
@given(risk=JSONISH, q=JSONISH, counters=JSONISH)
def test_no_reply_shape_breaks_the_risk_view(risk: Any, q: Any, counters: Any) -> None:
    st_ = {"risk": risk, "risk_query": q, "counters": counters if isinstance(counters, dict) else {}}
    r = risk_fields(st_)
    assert r["risk_limits"] is None or r["risk_limits"] >= 0
    assert risk_cell(st_)  # the status column too


def test_top_shows_risk_and_still_fits_80x24() -> None:
    now = time.time_ns()
    nodes = [status(n, now) for n in IDS]
    for n in nodes:
        n["risk_query"] = query(disabled=n["id"] in ("n1", "n2"), headroom=3 if n["id"] == "n1" else 40)
    nodes[0]["counters"]["risk_refused_open_buy"] = 5
    out = render(nodes)
    lines = out.splitlines()
    assert len(lines) <= 24 and max(len(x) for x in lines) <= 80, out
    assert "risk n1:3▸3%✗5 n2:3▸40%" in out and "off bob" in out, out
    # on the verdict's line, so the totals under it stay on screen; no risk at all: not a word of it
    assert "now 2 digests · peak 2 · risk n1" in out and "coin tosses 2.0%" in out, out
    plain = render([status(n, now) for n in IDS])
    assert "risk" not in plain and "coin tosses 2.0%" in plain, plain


def test_demo_timeline_shows_risk_only_when_there_is_some() -> None:
    s = partitioned()
    assert not panels.has_risk(s) and str(panels.risk_line(s)) == "risk: no limits"
    nodes = tuple(replace(v, risk_near=1, risk_tightest=("alice open-buy GBX", 4.0)) if v.id == "n3" else v
                  for v in s.nodes)
    s2 = replace(s, nodes=nodes)
    buf = StringIO()
    Console(file=buf, width=100, height=12, color_system=None).print(panels.timeline(s2))
    assert "risk n1:0near n2:0near n3:1near▸4% n4:0near" in buf.getvalue(), buf.getvalue()
    buf = StringIO()
    Console(file=buf, width=100, height=12, color_system=None).print(panels.timeline(s))
    assert "risk" not in buf.getvalue()


def test_status_column() -> None:
    near = [{"account": "alice", "symbol": "GBX", "limit_kind": "open-buy", "limit": 100, "headroom_here": 3}]
    assert risk_cell({"risk": near, "counters": {"risk_refused_notional": 2}}) == \
        "[yellow]1 near: alice open-buy GBX 3%[/] · refused 2"
    assert risk_cell({"risk": [], "counters": {}}) == "-"
    v = snapshot_from_status([{**status("n1", time.time_ns()), "risk": near}]).nodes[0]
    assert v.risk_near == 1 and v.risk_tightest == ("alice open-buy GBX", 3.0)
