"""``demo --replace`` on the screen, from fabricated snapshots: the killed node's state (killed, then
removed), the narration, the header's verdict and the summary's facts, at 100 and 80 columns."""

from __future__ import annotations

from dataclasses import replace
from io import StringIO

from rich.console import Console

from gossipbook.demo.snapshot import LogEvent
from gossipbook.tui import panels
from gossipbook.tui.app import DemoView

from .fixtures import A, finished, node

FACTS = {"killed": "n4", "added": "n5", "complete": True, "epochs": {"n1": 2, "n2": 2, "n3": 2, "n5": 2},
         "killed_role": {n: "removed" for n in ("n1", "n2", "n3", "n5")},
         "added_role": {n: "voter" for n in ("n1", "n2", "n3", "n5")}, "fence": 56, "killed_at_s": 3.0,
         "removed_at_s": 8.6, "provisional_at_removal": 74, "finality_resumed_ms": 30.0, "added_ready_ms": 278.0,
         "added_voter_ms": 278.0, "caught_up_ms": 358.0, "commands": []}


def render(obj: object, width: int = 100, height: int = 30) -> str:
    c = Console(file=StringIO(), width=width, height=height, color_system=None, force_terminal=False)
    c.print(obj)
    return c.file.getvalue()  # type: ignore[attr-defined]


def test_a_killed_node_shows_killed_then_removed() -> None:
    v = node("n4", A, None, {})
    assert panels.node_state(replace(v, down=True)) == ("killed", "bold red")
    assert panels.node_state(replace(v, down=True, role="removed")) == ("removed", "bold red")
    assert panels.node_state(replace(v, role="learner"))[0] == "learner"  # the new node, still joining


def test_the_end_of_a_replace_run_says_what_happened() -> None:
    s = finished()
    ids = ["n1", "n2", "n3", "n5"]
    r = replace(s.result, node_ids=ids, digests={i: A for i in ids}, replaced=FACTS, partitioned=False)
    nodes = (*s.nodes[:3], replace(s.nodes[3], down=True, role="removed", epoch=0),
             node("n5", A, None, {i: "alive" for i in ids}, epoch=2))
    snap = replace(s, nodes=nodes, groups=None, partition_at=None, heal_at=None, result=r,
                   events=(LogEvent(3.0, "dead", "n4 killed for good (no goodbye)"),
                           LogEvent(8.6, "member", "n4 removed (held first by n1)"),
                           LogEvent(13.8, "converged", "n5 caught up")))
    assert "REPLACED n4 → n5" in panels.header(snap).plain
    text = "\n".join(t.plain for t in panels.summary_lines(r))
    assert "n4 killed → removed everywhere · epoch 2 · n5 added" in text
    assert "30 ms after the removal (74 provisional trades final)" in text
    assert "n5 caught up          358 ms after it started (takes orders after 278 ms)" in text
    assert panels.event_line(snap.events[1]).plain.startswith("  8.6s ⇄ n4 removed")
    for width in (100, 80):  # five nodes: panels or the table, the verdict and the facts still shown
        view = DemoView()
        view.update(snap)
        screen = render(view, width, 40)
        assert "removed" in screen and "n5" in screen and "finality resumed" in screen, screen
    incomplete = replace(r, converged=False, replaced={**FACTS, "complete": False, "caught_up_ms": None})
    assert "REPLACE INCOMPLETE" in panels.header(replace(snap, result=incomplete)).plain
    assert "not caught up within the run" in "\n".join(t.plain for t in panels.summary_lines(incomplete))
