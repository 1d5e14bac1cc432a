"""Risk limits on real node processes (127.0.0.1): a limit holds across a partition, a node short of
rights gets some from the richest after the heal, the kill switch cancels everywhere and refuses,
and ``gossipbook risk`` (set / show / disable / enable) works end to end.

One cluster of three nodes runs the whole story (each step needs the one before), bounded in time.
Orders and polls go through the client library in-process (a CLI process costs half a second to
start); the CLI is run for what it must show: the limit commands, a refusal's line and exit code,
``risk show --json``.
"""

from __future__ import annotations

import json
import time
from typing import Any

import trio

from gossipbook.config import load
from gossipbook.core.book import BUY, GTC
from gossipbook.core.ops import NEW
from gossipbook.core.wire import ClientQuery, ClientSubmit

from .harness import Cluster, cli

RISK = '\n[risk]\nsplit = "none"\nrebalance_ms = 100\nask_interval_ms = 100\ndemand_halflife_ms = 500\n'


def faults(c: Cluster, plan: dict[str, str]) -> None:
    """Block, on each node of ``plan``, its sends to the listed peers (``node --fault-control``)."""
    from gossipbook.bench.convergence import _faults
    trio.run(_faults, load(c.config), plan)


def ask(c: Cluster, node: str, msg: Any, account: str | None = None) -> Any:
    """One request to ``node`` for ``account`` (cluster.toml holds every account's credential)."""
    from gossipbook.node.client import Client

    async def go() -> Any:
        async with Client(load(c.config), account=account) as cl:
            return await cl.request(node, msg, msg.req, 3.0)
    return trio.run(go)


def buy(c: Cluster, node: str, qty: int) -> Any:
    from gossipbook.node.client import new_req
    return ask(c, node, ClientSubmit(new_req(), NEW, "GBX", "", BUY, 10_000, qty, GTC, 0, 2000), "alice")


def risk(c: Cluster, node: str) -> dict[str, Any]:
    """``node``'s risk payload as the operator sees it."""
    from gossipbook.node.client import new_req
    return ask(c, node, ClientQuery(new_req(), "risk", "", 0)).payload


def open_buy(c: Cluster, node: str) -> dict[str, Any]:
    a = risk(c, node)["accounts"].get("alice")
    return next((r for r in a["limits"] if r["limit_kind"] == "open-buy"), {}) if a else {}


def wait_for(what: str, check: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_limit_holds_across_a_partition_transfers_after_heal_and_kill_switch(make_cluster) -> None:
    c = make_cluster(3, RISK)
    c.start_all("--fault-control")
    cfg = str(c.config)
    alice = str(c.tmp / "clients" / "alice.toml")
    # only the operator sets limits: alice's own client file is refused with one line (exit 10)
    r = cli("risk", "set", "-c", alice, "alice", "--max-open-buy", "100")
    assert r.returncode == 10 and r.stderr.count("\n") == 1 and "operator" in r.stderr, r.stderr
    r = cli("risk", "set", "-c", cfg, "alice", "--symbol", "GBX", "--max-open-buy", "100", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["results"][0]["ok"], r.stdout + r.stderr
    # every node holds the limit; with split "none" the node that stamped it (n1) holds the rights
    for n in c.ids:
        wait_for(f"the limit at {n}", lambda n=n: open_buy(c, n).get("rights") == {"n1": 100})

    # partition {n1} | {n2, n3}; alice sends a 60-lot buy to each side, then another to n1
    faults(c, {"n1": "n2,n3", "n2": "n1", "n3": "n1"})
    a1 = buy(c, "n1", 60)
    r = cli("submit", "-c", alice, "-n", "n2", "buy", "60", "@", "100")  # the CLI's refusal: one line, exit 14
    assert r.returncode == 14, r.stderr
    assert r.stderr.strip() == "gossipbook: error: risk: alice's open-buy headroom at n2 is 0 lots (limit 100)"
    a3 = buy(c, "n1", 60)
    assert a1.code == 0 and a3.code == 14, (a1, a3)
    assert a3.message == "risk: alice's open-buy headroom at n1 is 40 lots (limit 100)"
    rows = {n: open_buy(c, n) for n in c.ids}
    assert sum(r["used_here"] for r in rows.values()) == 60 <= 100  # accepted cluster-wide

    # heal: n2 asked the richest (n1) while partitioned; once the ask arrives, n1 transfers
    faults(c, {"n1": "", "n2": "", "n3": ""})
    got = wait_for("a transfer to n2", lambda: (lambda r: r if r.get("rights", {}).get("n2") else None)(
        open_buy(c, "n2")))
    assert got["rights"]["n2"] >= 1 and got["rights"]["n1"] + got["rights"]["n2"] == 100
    assert got["headroom_here"] == got["rights"]["n2"]
    n1, n2 = risk(c, "n1")["counters"], risk(c, "n2")["counters"]
    assert n2["risk_asks_sent"] >= 1 and n2["risk_refused_open_buy"] == 1 and n2["risk_transfers_in"] >= 1
    assert n1["risk_transfers_out"] >= 1 and n1["risk_refused_open_buy"] == 1
    assert buy(c, "n2", 1).code == 0  # n2's own rights now cover it
    c.wait_converged(timeout=15)

    # risk show --json: the limit in the instrument's units, the rights each node holds, each node's use
    out = json.loads(cli("risk", "show", "-c", cfg, "--json").stdout)
    lim = out["accounts"]["alice"]["limits"][0]
    assert (lim["symbol"], lim["kind"], set(lim["limit"].values())) == ("GBX", "open-buy", {"100"})
    assert lim["used"] == {"n1": "60", "n2": "1", "n3": "0"} and out["nodes"]["n3"]["mode"] == "eventual"
    assert sum(int(v) for v in lim["rights"]["n3"].values()) == 100

    # the kill switch: every resting order of alice is cancelled on every node, new ones refused
    r = cli("risk", "disable", "-c", cfg, "alice", "-n", "n3")
    assert r.returncode == 0, r.stderr

    def no_orders() -> bool:
        from gossipbook.node.client import new_req
        return all(not ask(c, n, ClientQuery(new_req(), "orders", "", 0), "alice").payload["orders"] for n in c.ids)
    wait_for("alice's orders cancelled everywhere", no_orders)
    a5 = buy(c, "n1", 1)
    assert a5.code == 14 and "disabled by the kill switch" in a5.message, a5
    assert all(risk(c, n)["accounts"]["alice"]["disabled"] for n in c.ids)
    r = cli("risk", "enable", "-c", cfg, "alice", "-n", "n1")
    assert r.returncode == 0, r.stderr
    assert buy(c, "n1", 1).code == 0
    c.wait_converged(timeout=15)
