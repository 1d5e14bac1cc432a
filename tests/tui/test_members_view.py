"""The configuration epoch and each member's role in ``status``, ``top`` and the demo screen."""

from __future__ import annotations

from dataclasses import replace
from io import StringIO

from rich.console import Console

from gossipbook.cli.status import config_cell, config_line
from gossipbook.demo.snapshot import clock_fields
from gossipbook.tui import panels

from .fixtures import finished


def render(obj: object, width: int = 100) -> str:
    c = Console(file=StringIO(), width=width, height=30, color_system=None, force_terminal=False)
    c.print(obj)
    return c.file.getvalue()  # type: ignore[attr-defined]


CONF = {"epoch": 3, "roles": {"n1": "voter", "n2": "removed", "n3": "voter", "n5": "learner"},
        "addresses": {"n5": "127.0.0.1:7405"}, "fences": {"n2": 57}}


def test_status_shows_the_epoch_each_nodes_role_and_the_fences() -> None:
    assert config_cell({"id": "n5", "config": CONF}) == "3 learner"
    assert "removed" in config_cell({"id": "n2", "config": CONF})
    assert config_cell({"id": "n1"}) == "-"  # strong mode: no configuration
    line = config_line([{"reachable": True, "config": {**CONF, "epoch": 2}}, {"reachable": True, "config": CONF},
                        {"reachable": False}])
    assert line == "configuration epoch 3: n1 voter, n2 removed (fence 57), n3 voter, n5 learner"


def test_top_and_the_demo_show_roles_and_the_epoch() -> None:
    fields = clock_fields({"id": "n5", "config": CONF})
    assert fields["epoch"] == 3 and fields["role"] == "learner"
    s = finished()
    v = replace(s.nodes[0], **{k: fields[k] for k in ("epoch", "role")})
    assert "learner" in render(panels.node_panel(v, "green"), width=26)
    assert "removed" in render(panels.node_panel(replace(v, role="removed"), "green"), width=26)
    assert "epoch" not in render(panels.header(s))  # no membership change yet: nothing to say
    assert "epoch 3" in render(panels.header(replace(s, nodes=[v, *s.nodes[1:]])))
