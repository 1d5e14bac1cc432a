"""Garbage, truncated, replayed and wrong-key datagrams against a running node."""

from __future__ import annotations

import random
import socket
import time

from gossipbook.config import load
from gossipbook.core.ops import NEW, Op
from gossipbook.core.wire import OpBatch, encode


def test_hostile_datagrams_are_dropped_and_counted(make_cluster):
    c = make_cluster(2)
    c.start_all()
    cfg = load(c.config)
    n1 = cfg.node("n1").addr
    before = {s["id"]: s for s in c.status()}["n1"]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rng = random.Random(7)
    now = time.time_ns()
    # a valid frame, as if from n2: an op n2 never stamped (seq far ahead: waits for the gap, never folds)
    op = Op(now, 0, "n2", 10_000, NEW, "GBX", "", 0, 10_000, 1, 0, "")
    bind = {"dst": "n1", "label": cfg.name, "stamp_ms": now // 1_000_000}
    valid = encode(OpBatch([op]), "n2", 1, cfg.key, **bind)
    wrong_key = encode(OpBatch([op]), "n2", 2, b"x" * 32, **bind)
    sent = {"garbage": 0, "truncated": 0, "wrong_key": 0, "replay": 0, "mutated": 0}
    for _ in range(200):
        s.sendto(rng.randbytes(rng.randint(0, 1500)), n1)
        sent["garbage"] += 1
    for cut in range(1, len(valid) - 1, 3):
        s.sendto(valid[:cut], n1)
        sent["truncated"] += 1
    for _ in range(20):
        s.sendto(wrong_key, n1)
        sent["wrong_key"] += 1
    for i in range(len(valid)):
        b = bytearray(valid)
        b[i] ^= 0x40
        s.sendto(bytes(b), n1)
        sent["mutated"] += 1
    s.sendto(valid, n1)
    for _ in range(5):
        s.sendto(valid, n1)
        sent["replay"] += 1
    s.close()
    time.sleep(0.5)
    after = {x["id"]: x for x in c.status()}["n1"]
    dropped = after["counters"]["dropped"]
    total_bad = sent["garbage"] + sent["truncated"] + sent["wrong_key"] + sent["mutated"]
    assert sum(v for k, v in dropped.items() if k != "replay") >= total_bad
    assert dropped.get("auth", 0) >= sent["wrong_key"]
    assert dropped.get("replay", 0) >= sent["replay"]
    assert after["digest"] == before["digest"]
    assert after["ops"] == before["ops"]
    # still serving: a real order goes through and both nodes agree
    from .harness import cli
    r = cli("submit", "-c", str(c.config), "-n", "n1", "buy", "3", "@", "99.50", "--json")
    assert r.returncode == 0, r.stderr
    c.wait_converged(timeout=5)
