"""``bench core``: the pure core's speed, each beside a plain baseline on the same data.

- book: the fold's book operations vs the same ops into a dict (insert / delete by order id);
- replica in order / shuffled: ``Replica.receive`` in 64-op batches vs a dict union of the same ops;
  shuffled delivery interleaves origins' batches at random, so rollback and replay happen;
- stamp: ``Replica.submit_new`` (validate, HLC, fold) of the workload's new orders vs a dict insert
  of the same orders (what a node does per client order, before any network);
- wire: ``encode_ops`` + ``decode`` (auth, validation) vs raw msgpack of the same tuples.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import msgpack

from ..core.book import Book
from ..core.ops import AMEND, CANCEL, NEW, Op
from ..core.replica import Replica
from ..core.wire import decode, encode_ops
from ..workload.history import make_history
from .stats import rate

BATCH = 64
KEY = bytes(range(32))


def _book_run(ops: list[Op]) -> Callable[[], int]:
    def run() -> int:
        b = Book("GBX")
        for op in ops:
            if op.kind == CANCEL:
                b.cancel(op.order_id)
            elif op.kind == AMEND:
                b.amend(op.order_id, op.price, op.qty, op.op_id)
            else:
                b.submit(op.op_id, op.side, op.price, op.qty, op.tif)
        return len(ops)
    return run


def _dict_run(ops: list[Op]) -> Callable[[], int]:
    def run() -> int:
        d: dict[str, Op] = {}
        for op in ops:
            if op.kind == CANCEL:
                d.pop(op.order_id, None)
            else:
                d[op.target] = op
        return len(ops)
    return run


def _replica_run(batches: list[list[Op]]) -> Callable[[], int]:
    def run() -> int:
        # the workload's origins are members: a replica refuses non-members' ops (``non_member_ops``),
        # and this row folded nothing from 2026-12-04 18:29 (61addcc) until it said so
        r = Replica("bench", members=["bench", "n1", "n2", "n3", "n4"])
        n = 0
        for b in batches:
            r.receive(b, 1 << 62)
            n += len(b)
        assert r.counters["ops_applied"] == n, r.counters  # every op folded, none refused
        return n
    return run


def _union_run(batches: list[list[Op]]) -> Callable[[], int]:
    def run() -> int:
        d: dict[tuple[str, int], Op] = {}
        n = 0
        for b in batches:
            for op in b:
                d[(op.origin, op.seq)] = op
            n += len(b)
        return n
    return run


def _shuffled_batches(ops: list[Op], rng: random.Random) -> list[list[Op]]:
    """Each origin's ops in seq order, cut in batches; batches of different origins interleaved
    at random (a peer's delivery order), so later-stamped ops often arrive first."""
    per: dict[str, list[Op]] = {}
    for op in ops:
        per.setdefault(op.origin, []).append(op)
    queues = {o: [v[i:i + BATCH] for i in range(0, len(v), BATCH)] for o, v in per.items()}
    out = []
    while queues:
        o = rng.choice(sorted(queues))
        out.append(queues[o].pop(0))
        if not queues[o]:
            del queues[o]
    return out


def _stamp_run(ops: list[Op]) -> Callable[[], int]:
    news = [op for op in ops if op.kind == NEW]

    def run() -> int:
        r = Replica(news[0].origin, members=[news[0].origin])
        now = news[0].wall
        for i, op in enumerate(news):
            r.submit_new(op.symbol, op.side, op.price, op.qty, op.tif, now + i)
        return len(news)
    return run


def _insert_run(ops: list[Op]) -> Callable[[], int]:
    news = [op for op in ops if op.kind == NEW]

    def run() -> int:
        d: dict[int, Op] = {}
        for i, op in enumerate(news):
            d[i] = op
        return len(news)
    return run


def _wire_run(ops: list[Op]) -> Callable[[], int]:
    def run() -> int:
        n = 0
        for f in encode_ops(ops, "bench", 1, KEY):
            n += len(decode(f, KEY).msg.ops)
        return n
    return run


def _msgpack_run(ops: list[Op]) -> Callable[[], int]:
    chunks = [ops[i:i + 20] for i in range(0, len(ops), 20)]

    def run() -> int:
        n = 0
        for c in chunks:
            n += len(msgpack.unpackb(msgpack.packb(c)))
        return n
    return run


def run_core(n_ops: int = 20_000, repeats: int = 3, seed: int = 7,
             progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """All core figures as rows: name, ops_per_s, baseline, baseline_ops_per_s, ratio."""
    say = progress or (lambda _s: None)
    say(f"generating {n_ops} ops")
    ops = sorted(make_history(n_ops, origins=4, seed=seed, deliver_every=1))
    in_order = [ops[i:i + BATCH] for i in range(0, len(ops), BATCH)]
    shuffled = _shuffled_batches(ops, random.Random(seed))
    rows = []
    for name, fn, base_name, base in [
        ("book apply", _book_run(ops), "dict insert/delete", _dict_run(ops)),
        ("replica apply, in order", _replica_run(in_order), "dict union", _union_run(in_order)),
        ("replica apply, shuffled (replay)", _replica_run(shuffled), "dict union", _union_run(shuffled)),
        ("replica stamp (submit_new)", _stamp_run(ops), "dict insert", _insert_run(ops)),
        ("frame encode+decode", _wire_run(ops), "raw msgpack pack+unpack", _msgpack_run(ops)),
    ]:
        say(name)
        v, b = rate(fn, repeats), rate(base, repeats)
        rows.append({"name": name, "ops_per_s": round(v), "baseline": base_name,
                     "floor_ops_per_s": round(b), "ratio": round(v / b, 4)})
    return rows
