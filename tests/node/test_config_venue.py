"""``[cluster] venue = "package.module:factory"``: a CLI node folds with the venue's hooks, for NEW
and AMEND, on every node (issue 16); a bad reference is one clear config error."""

from __future__ import annotations

import json

import pytest

from gossipbook.config import ConfigError, load, write_private

from .harness import cli


def test_a_node_loads_the_venue_from_config_and_refuses_on_every_node(make_cluster) -> None:
    c = make_cluster(3)
    text = c.config.read_text().replace("[cluster]\n", '[cluster]\nvenue = "tests.node.venue_fixture:capped"\n', 1)
    write_private(c.config, text)
    c.start_all()
    c.wait_ready()
    alice = str(c.config.parent / "clients" / "alice.toml")
    for n in ("n1", "n2", "n3"):  # the same refusal whichever node stamps it
        r = cli("submit", "-c", alice, "-n", n, "buy", "600", "@", "100", "--json")
        out = json.loads(r.stdout)
        assert r.returncode == 2 and "notional 60000.00 > 50000 for alice" in out["message"], r.stdout
    r = cli("submit", "-c", alice, "-n", "n1", "buy", "10", "@", "100", "--json")
    oid = json.loads(r.stdout)["order_id"]
    c.wait_converged(timeout=5)
    r = cli("amend", "-c", alice, "-n", "n2", oid, "900", "@", "100", "--json")
    assert r.returncode == 2 and "amend: notional" in json.loads(r.stdout)["message"]


def test_a_bad_venue_reference_is_one_clear_error(tmp_path) -> None:
    from gossipbook.config import render

    for ref, needle in (("nomodule_xyz:f", "ModuleNotFoundError"), ("tests.node.venue_fixture:not_a_venue",
                                                                    "not a gossipbook Venue"),
                        ("no-colon", "package.module:factory")):
        p = tmp_path / "c.toml"
        write_private(p, render(1, 7000).replace("[cluster]\n", f'[cluster]\nvenue = "{ref}"\n', 1))
        with pytest.raises(ConfigError, match=needle):
            load(p).venue()
