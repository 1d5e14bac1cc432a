"""Kernel-level faults for real node processes: each node in its own network namespace, packets dropped
by nftables in the receiving node's namespace. Three scenarios, each on a fresh 4-node cluster:
a {n1,n2}|{n3,n4} partition, a one-way cut (n1 hears nothing from n3), and 30% random loss everywhere.
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import pytest

from .lab import GOSSIPBOOK, Lab, brief, converged

pytestmark = pytest.mark.netns

HEAL_S = 15  # convergence after a heal, seconds (typically < 2 s here)


def vv(s: dict[str, Any]) -> dict[str, int]:
    return dict(s.get("version_vector") or {})


def dominates(a: dict[str, int], b: dict[str, int]) -> bool:
    return all(a.get(k, 0) >= v for k, v in b.items())


def not_alive(st: list[dict[str, Any]], observers: list[str], targets: list[str]) -> bool:
    """Every observer sees every target as something other than alive (suspect, dead, ...)."""
    by = {s["id"]: s for s in st}
    return all(by[o].get("reachable") and all((by[o].get("members") or {}).get(t) != "alive" for t in targets)
               for o in observers)


def all_alive(st: list[dict[str, Any]]) -> bool:
    return all(s.get("reachable") and set((s.get("members") or {}).values()) == {"alive"} for s in st)


def sample(est: dict[str, Any] | None) -> tuple[Any, Any] | None:
    """What identifies one clock sample of a peer: its offset and round trip (the entry also holds
    the interval clock's bound, which grows between samples, and its status)."""
    return None if not est else (est.get("offset_us"), est.get("rtt_us"))


def refreshed(samples: list[dict[str, Any]], before: dict[str, Any], peers: list[str]) -> bool:
    """Each of ``peers`` has a clock sample in ``samples`` different from the one in ``before``."""
    return all(any(sample(p.get(o)) != sample(before.get(o)) for p in samples) for o in peers)


def load(lab: Lab, nodes: list[str], orders: int, rate: int, seed: int) -> subprocess.Popen[str]:
    """``gossipbook load`` from the client namespace, in the background."""
    return subprocess.Popen(
        ["ip", "netns", "exec", lab.client_ns, *GOSSIPBOOK, "load", "-c", str(lab.config), "--nodes", ",".join(nodes),
         "--orders", str(orders), "--rate", str(rate), "--seed", str(seed), "--timeout", "2", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish(p: subprocess.Popen[str], timeout: float = 20) -> dict[str, Any]:
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, f"load exited {p.returncode}: {err.strip()} {out.strip()}"
    summary = json.loads(out)
    assert summary["acked"] > 0 and summary["errors"] == 0, summary
    return summary


def test_partition_heals_and_converges(lab: Lab) -> None:
    lab.wait_converged(10)
    a, b = ["n1", "n2"], ["n3", "n4"]
    for n in a:
        lab.drop_from(n, b)
    for n in b:
        lab.drop_from(n, a)
    # the kernel cut is seen by membership on both sides
    lab.wait(lambda st: not_alive(st, a, b) and not_alive(st, b, a), 8, "partition detected by membership")

    # orders on both sides: one explicit pair that would cross, and a flow on each side
    flows = [load(lab, a, 30, 60, seed=11), load(lab, b, 30, 60, seed=12)]
    try:
        assert lab.submit("n1", "buy", 5, "100")["ok"]
        assert lab.submit("n3", "sell", 5, "100")["ok"]
        for f in flows:
            finish(f)
    finally:
        for f in flows:
            if f.poll() is None:
                f.kill()
    st = lab.status()
    by = {s["id"]: s for s in st}
    side_a = {k: v for s in a for k, v in vv(by[s]).items()}
    side_b = {k: v for s in b for k, v in vv(by[s]).items()}
    assert not set(side_a) & set(b) and not set(side_b) & set(a), f"ops crossed the partition: {brief(st)}"
    assert by["n1"]["digest"] != by["n3"]["digest"]
    assert lab.dropped("n1") > 0 and lab.dropped("n3") > 0

    lab.heal()
    took, st = lab.wait_converged(HEAL_S)
    assert dominates(vv(st[0]), side_a) and dominates(vv(st[0]), side_b), brief(st)
    assert set(vv(st[0])) >= {"n1", "n2", "n3", "n4"}, brief(st)
    lab.wait(all_alive, 10, "every member alive again after the heal")
    print(f"partition heal: converged in {took:.2f} s at {st[0]['ops']} ops")


def test_one_way_cut_detected_and_healed(lab: Lab) -> None:
    # wait for n1's first direct clock samples of every peer: the one-way cut shows in them
    lab.wait(lambda st: converged(st) and set(st[0].get("peers") or {}) >= {"n2", "n3", "n4"}, 10,
             "n1 has clock samples of every peer")
    lab.drop_from("n1", ["n3"])  # n1 drops whatever n3 sends; n1 -> n3 still works
    time.sleep(0.3)  # anything n3 sent before the rule has been handled
    before = lab.status()[0]["peers"]

    members_flagged = stalled = False
    samples: list[dict[str, Any]] = []
    t0 = time.monotonic()
    i = 0
    # orders on both ends of the cut for at least 3 s, and until n1 has fresh samples of n2 and n4
    while time.monotonic() - t0 < 3 or (time.monotonic() - t0 < 8 and not refreshed(samples, before, ["n2", "n4"])):
        assert lab.submit("n3" if i % 2 == 0 else "n1", "sell" if i % 2 == 0 else "buy", 1, str(200 + i))["ok"]
        i += 1
        st = lab.status()
        by = {s["id"]: s for s in st}
        members_flagged |= any(v != "alive" for s in st for v in (s.get("members") or {}).values())
        stalled |= vv(by["n1"]).get("n3", 0) < vv(by["n3"]).get("n3", 0) - 2
        samples.append(by["n1"]["peers"])
    assert lab.dropped("n1") > 0, "the nftables rule in n1's namespace dropped nothing"

    # n1 hears nothing directly from n3: its clock sample of n3 stays frozen (or expires) while n2's and
    # n4's refresh
    frozen = all(sample(p.get("n3")) in (sample(before.get("n3")), None) for p in samples)
    others_refresh = refreshed(samples, before, ["n2", "n4"])
    detected = members_flagged or stalled or (frozen and others_refresh)
    assert detected, (f"one-way cut not visible: members_flagged={members_flagged} stalled={stalled} "
                      f"frozen={frozen} others_refresh={others_refresh}\n{json.dumps(samples)}")
    print(f"one-way cut: members_flagged={members_flagged} stalled={stalled} n1's n3 sample frozen={frozen}")

    lab.heal()
    lab.wait(lambda st: st[0].get("reachable") and sample(st[0]["peers"].get("n3")) not in (sample(before.get("n3")), None), 10,
             "n1 hears n3 directly again (fresh clock sample)")
    took, st = lab.wait_converged(HEAL_S)
    assert vv(st[0]).get("n3", 0) >= (i + 1) // 2, brief(st)
    lab.wait(all_alive, 10, "every member alive after the heal")
    print(f"one-way heal: converged in {took:.2f} s")


def test_random_loss_converges(lab: Lab) -> None:
    lab.wait_converged(10)
    for n in lab.ids:
        lab.random_loss(n, 30)
    flow = load(lab, lab.ids, 80, 80, seed=21)
    try:
        subs = [lab.submit(n, "buy" if k % 2 else "sell", 1 + k, "100") for k, n in enumerate(lab.ids)]
        summary = finish(flow)
    finally:
        if flow.poll() is None:
            flow.kill()
    assert all(s["ok"] for s in subs), subs
    # anti-entropy repairs what the loss took, while the loss is still on
    took_lossy, st = lab.wait_converged(HEAL_S)
    assert all(lab.dropped(n) > 0 for n in lab.ids), "some node's loss rule dropped nothing"
    assert st[0]["ops"] >= summary["acked"] + len(subs), brief(st)
    lab.heal()
    took, st = lab.wait_converged(HEAL_S)
    print(f"30% loss: converged in {took_lossy:.2f} s under loss, {took:.2f} s after removing it")
