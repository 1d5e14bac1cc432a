"""Fabricated demo snapshots: every panel can be drawn and checked without a single socket."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from gossipbook.demo.snapshot import DemoResult, DemoSnapshot, LogEvent, NodeView

A = "a1" * 16  # side A's digest
B = "b2" * 16  # side B's digest


def node(nid: str, digest: str, group: int | None, members: dict[str, str], **kw: object) -> NodeView:
    base = dict(id=nid, port=40000 + int(nid[1:]), group=group, ready=True, accepting=True, clock_in_sync=True,
                digest=digest, ops=150, lag=0, watermark_age_ms=12.0, trades_final=27, trades_provisional=0,
                revised=0, members=members, clock_offset_us=-38.0, rtt_us=261.0,
                bids=((9997, 4), (9996, 16), (9995, 19)), asks=((10002, 15), (10005, 1), (10006, 56)), orders=40,
                clock_status="synced", clock_bound_us=45.4, clock_drift_ppm=-25.04, fair_orders=150, fair_tied=3)
    base.update(kw)
    return NodeView(**base)  # type: ignore[arg-type]


def partitioned(n: int = 4) -> DemoSnapshot:
    """Mid-partition: two sides, two digests, cut links, suspects and deaths in the log."""
    ids = [f"n{i + 1}" for i in range(n)]
    half = n // 2
    side = {nid: 0 if i < half else 1 for i, nid in enumerate(ids)}
    nodes = []
    for nid in ids:
        members = {m: ("alive" if side[m] == side[nid] else "dead") for m in ids}
        if side[nid] == 0:
            nodes.append(node(nid, A, 0, members, ops=152, lag=32, trades_provisional=7, watermark_age_ms=2300.0,
                              bids=((10002, 7), (10001, 7), (10000, 1)),
                              asks=((10005, 1), (10006, 35), (10007, 12))))
        else:
            nodes.append(node(nid, B, 1, members, ops=148, lag=36, trades_provisional=10,
                              watermark_age_ms=2300.0))
    blocked = frozenset((a, b) for a in ids for b in ids if side[a] != side[b])
    groups = (tuple(ids[:half]), tuple(ids[half:]))
    events = (LogEvent(0.0, "info", f"{n} nodes up on 127.0.0.1"),
              LogEvent(3.0, "partition", "partition: " + " | ".join(" ".join(g) for g in groups)),
              LogEvent(3.1, "diverged", "replicas diverged: 2 distinct digests"),
              LogEvent(3.2, "suspect", "n1, n2 see n3 suspect"),
              LogEvent(3.7, "dead", "n1, n2 see n3 dead"))
    timeline = tuple((i / 10, 1) for i in range(30)) + tuple((3 + i / 10, 2) for i in range(25))
    return DemoSnapshot(t=5.5, duration=16.0, phase="partitioned", mode="eventual", seed=1, rate=20.0,
                        nodes=tuple(nodes), groups=groups, partitioned=True, partition_at=3.0, heal_at=10.0,
                        blocked=blocked, events=events, timeline=timeline,
                        orders={"sent": 440, "acked": 430, "rejected": 10, "errors": 0}, trades=37,
                        ops_pushed=430, ops_repaired=1, tick_size=Decimal("0.01"), symbol="DEMO")


def result(**kw: object) -> DemoResult:
    base = dict(nodes=4, node_ids=["n1", "n2", "n3", "n4"], mode="eventual", seed=1, partitioned=True,
                split=[["n1", "n2"], ["n3", "n4"]], diverged_during_partition=True, max_distinct_digests=2,
                converged=True, convergence_ms_after_heal=254.2, digests={f"n{i}": A for i in range(1, 5)},
                ops={f"n{i}": 451 for i in range(1, 5)}, orders={"sent": 470, "acked": 449, "rejected": 21, "errors": 0},
                trades=127, trades_final=127, revised_trades=258,
                revised_trades_by_node={"n1": 56, "n2": 56, "n3": 73, "n4": 73},
                ops_exchanged={"pushed": 451, "repaired": 612, "repaired_after_heal": 609, "datagrams": 2856},
                elapsed_s=6.0)
    base.update(kw)
    return DemoResult(**base)  # type: ignore[arg-type]


def finished(n: int = 4) -> DemoSnapshot:
    """The end of a converged run: every replica on one digest, the summary attached."""
    s = partitioned(n)
    ids = [v.id for v in s.nodes]
    nodes = tuple(node(nid, A, v.group, {m: "alive" for m in ids}, ops=451, trades_final=127, revised=56)
                  for nid, v in zip(ids, s.nodes, strict=True))
    r = result(nodes=n, node_ids=ids, digests={i: A for i in ids})
    return replace(s, t=6.0, phase="done", nodes=nodes, partitioned=False, blocked=frozenset(),
                   converged_ms=254.2, result=r,
                   events=s.events + (LogEvent(4.0, "heal", "heal: every link restored"),
                                      LogEvent(4.25, "converged", "converged in 254 ms after the heal")))
