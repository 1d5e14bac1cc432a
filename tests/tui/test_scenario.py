"""The demo scenario in-process: real nodes on real sockets, cut and healed through their fault filters."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import trio

from gossipbook.core.errors import UsageError
from gossipbook.demo.scenario import DemoOptions, Scenario, make_options, parse_split
from gossipbook.demo.snapshot import DemoSnapshot


def closed(sc: Scenario) -> bool:
    """Every socket a node bound is closed (a node cancelled before binding has none)."""
    return all(r.endpoint is None or r.endpoint.sock.fileno() == -1 for r in sc.runners.values())


async def test_partition_diverges_then_heal_converges() -> None:
    opts = DemoOptions(nodes=3, seed=5, rate=25, duration=6.0, partition=True, split=(("n1",), ("n2", "n3")),
                       partition_at=0.8, heal_at=2.0, grace=0.3)
    sc = Scenario(opts)
    snaps: list[DemoSnapshot] = []
    with trio.fail_after(20):
        r = await sc.run(snaps.append)
    assert r.partitioned and r.diverged_during_partition, sc.events
    assert r.converged and r.convergence_ms_after_heal is not None and r.all_equal, sc.events
    assert r.orders["acked"] > 50 and r.ops_exchanged["repaired_after_heal"] > 0
    assert set(r.ops.values()) == {r.ops["n1"]}
    cut = [s for s in snaps if s.partitioned]
    assert cut and cut[-1].blocked == {("n1", "n2"), ("n1", "n3"), ("n2", "n1"), ("n3", "n1")}
    assert any(s.distinct_digests() > 1 for s in cut)
    assert snaps[-1].phase == "done" and snaps[-1].result is not None and not snaps[-1].blocked
    kinds = [e.kind for e in sc.events]
    assert kinds.index("partition") < kinds.index("heal") < kinds.index("converged")
    assert closed(sc) and not Path(sc.config_path).exists()  # sockets closed, temp dir gone


async def test_cancelled_at_any_moment_leaves_nothing_behind() -> None:
    for after in (0.05, 1.2):
        sc = Scenario(DemoOptions(nodes=2, partition=True, split=(("n1",), ("n2",)), partition_at=0.5,
                                  heal_at=5, duration=8))
        with trio.move_on_after(after):
            await sc.run()
        sc.mark_interrupted()
        r = sc.result(interrupted=True)
        assert r.interrupted and not r.converged
        assert closed(sc)
        assert not sc.config_path or not Path(sc.config_path).exists()


def test_split_parsing() -> None:
    ids = ["n1", "n2", "n3", "n4"]
    assert parse_split("n1,n2|n3,n4", ids) == (("n1", "n2"), ("n3", "n4"))
    assert parse_split(" n1 | n2, n3 | n4 ", ids) == (("n1",), ("n2", "n3"), ("n4",))
    for bad, msg in (("n1,n2", "at least two"), ("n1|", "at least two"), ("n1,n2|n3,n9", "unknown node(s) n9"),
                     ("n1,n2|n2,n3,n4", "n2 on more than one side"), ("n1|n2", "missing n3, n4")):
        with pytest.raises(UsageError, match=re.escape(msg)):
            parse_split(bad, ids)


def test_options() -> None:
    o = make_options(partition=True)
    assert (o.duration, o.partition_at, o.heal_at, o.split) == (16.0, 3.0, 10.0, (("n1", "n2"), ("n3", "n4")))
    o = make_options(partition=True, duration=8)  # timings left out scale with the duration
    assert o.partition_at < o.heal_at < 8
    o = make_options(nodes=5, split="n1,n5|n2,n3,n4")
    assert o.partition and o.split == (("n1", "n5"), ("n2", "n3", "n4"))  # --split implies --partition
    assert make_options(nodes=3, partition=True).split == (("n1",), ("n2", "n3"))
    for kw, msg in ((dict(nodes=1), "between 2 and 8"), (dict(nodes=9), "between 2 and 8"),
                    (dict(rate=0), "--rate"), (dict(duration=-1), "--duration"),
                    (dict(partition=True, partition_at=5, heal_at=4), "must come after --partition-at"),
                    (dict(partition=True, duration=8, heal_at=9), "before the end of the run")):
        with pytest.raises(UsageError, match=msg):
            make_options(**kw)  # type: ignore[arg-type]
