"""bench groups (issue 21): K eventual clusters side by side, each holding its own instruments.

Real node processes on loopback, tiny: 2 nodes per group, 120 orders per node, K = 1 then 2.
"""

from __future__ import annotations

import pstats

from gossipbook.bench.groups import SYMBOLS, estimate, group_text, run_groups
from gossipbook.bench.split import shares, split
from gossipbook.config import load, write_private


def test_groups_hold_every_op_everywhere_in_each_group() -> None:
    for k in (1, 2):
        # a short lead (a missed start is run again with twice the lead): most of the test is the wait
        r = run_groups(k, nodes=2, ops=120, timeout_s=30, start_s=2.0 + 2.5 * k)
        assert r["groups"] == k and r["processes"] == 2 * k
        assert r["ops"] == 2 * 120 // k * k
        held = [g["symbols"] for g in r["per_group"]]
        # the instruments are split: every one in exactly one group
        assert sorted(s for g in held for s in g) == sorted(SYMBOLS), held
        for g in r["per_group"]:
            assert g["complete"], r  # every node of the group holds every op the group stamped
            assert g["held_min"] >= g["ops"] == 2 * (120 // k)
            assert g["dgrams_out"] > 0
        assert r["complete"]
        assert r["ops_per_s"] and r["ops_per_s"] > 0
        assert r["datagrams_per_op"] > 0
        assert r["cpu_us_per_op_per_node"] is not None and r["cpu_us_per_op_per_node"] > 0


def test_group_configs_are_separate_clusters(tmp_path) -> None:
    cfgs = []
    for i, syms in enumerate((("GBX", "GBX3"), ("GBX2", "GBX4"))):
        p = tmp_path / f"g{i}.toml"
        write_private(p, group_text(3, syms))
        cfgs.append(load(p))
    assert [[i.symbol for i in c.instruments] for c in cfgs] == [["GBX", "GBX3"], ["GBX2", "GBX4"]]
    assert cfgs[0].name != cfgs[1].name and cfgs[0].key != cfgs[1].key  # frames of one never verify in the other
    ports = [n.port for c in cfgs for n in c.nodes]
    assert len(set(ports)) == len(ports) == 6
    assert all(c.mode == "eventual" for c in cfgs)


def test_estimate_is_cores_times_cpu_ratio() -> None:
    assert estimate(30.0, 30.0, 2) == {"C=2": 2.0, "C=4": 2.0, "C=8": 2.0, "C=16": 2.0}
    e = estimate(30.0, 40.0, 4)  # a third more CPU per op at K=4
    assert e["C=2"] == 1.5 and e["C=4"] == 3.0 and e["C=16"] == 3.0


def test_split_counts_the_book_as_per_instrument_and_builtins_for_their_caller() -> None:
    import cProfile

    from gossipbook.core.book import Book

    book = Book("GBX")
    prof = cProfile.Profile()
    prof.enable()
    for i in range(3000):
        book.submit(f"o{i}", i % 2, 10_000 + (i % 7) - 3, 5, account=f"a{i % 3}")
    prof.disable()
    raw = split(pstats.Stats(prof))
    s = shares(raw)
    # len(), dict.get() ... called from Book count as book: nothing but the book and this test ran
    assert s["share"]["book"] > 0.8, s
    assert s["per_instrument"] == s["share"]["book"] + s["share"].get("fold", 0)
    assert 1 < s["amdahl"]["C=2"] <= 2 and s["amdahl"]["C=2"] < s["amdahl"]["C=16"]


def test_split_counts_a_compiled_classes_methods_for_their_module() -> None:
    from gossipbook.bench.split import _kind_of

    # how cProfile names a mypyc-compiled method: a builtin, which would otherwise go to its caller
    assert _kind_of(("~", 0, "<method 'receive' of 'Replica' objects>")) == "fold"
    assert _kind_of(("~", 0, "<method 'submit' of 'Book' objects>")) == "book"
    assert _kind_of(("~", 0, "<method 'get' of 'dict' objects>")) is None  # counts for its caller
    assert _kind_of(("~", 0, "<method 'poll' of 'select.epoll' objects>")) == "idle"
