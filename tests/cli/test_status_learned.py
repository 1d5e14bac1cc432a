"""``gossipbook status`` asks members it learns from the nodes' configuration: which ones
(``learned_members``), and that what a node says there is bounded like any peer input."""

from __future__ import annotations

import secrets
import tomllib

from gossipbook.cli.status import MAX_LEARNED, learned_members
from gossipbook.config import from_dict, render

CFG = from_dict(tomllib.loads(render(3, 7400, accounts={"operator": secrets.token_bytes(32)})))


def row(epoch: int, addresses: object, roles: object = None, reachable: bool = True) -> dict:
    return {"id": "n1", "reachable": reachable, "config": {"epoch": epoch, "addresses": addresses, "roles": roles or {}}}


def test_members_not_in_the_file_at_the_newest_address_removed_ones_left_out() -> None:
    rows = [row(1, {"n4": "127.0.0.1:7404", "n2": "127.0.0.1:9"}),
            row(3, {"n4": "127.0.0.1:7504", "n5": "127.0.0.1:7405", "n6": "127.0.0.1:7406"}, {"n6": "removed"}),
            row(9, {"n7": "127.0.0.1:7407"}, reachable=False)]  # an unreachable row says nothing
    got = learned_members(CFG, rows)
    assert [(e.id, e.host, e.port, e.join) for e in got] == [("n4", "127.0.0.1", 7504, True),
                                                            ("n5", "127.0.0.1", 7405, True)]


def test_what_a_node_says_is_checked_and_bounded() -> None:
    hostile = {"bad id": "127.0.0.1:1", "h1": "example.com:80", "h2": "[::1]:80", "h3": "127.0.0.1:99999",
               "h4": 7, **{f"x{i}": f"127.0.0.{i % 250 + 1}:{1000 + i}" for i in range(10 * MAX_LEARNED)}}
    got = learned_members(CFG, [row(1, hostile), {"id": "n2", "reachable": True, "config": "garbage"},
                                {"id": "n3", "reachable": True, "config": {"addresses": ["n9"]}}])
    assert len(got) == MAX_LEARNED and all(e.id.startswith("x") and e.host.startswith("127.0.0.") for e in got)
