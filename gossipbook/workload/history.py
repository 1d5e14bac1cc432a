"""A stamped op history from several origin replicas that see each other's ops now and then:
realistic input (causal cancels, concurrent crossing orders) for benchmarks and tests."""

from __future__ import annotations

import random

from ..core.errors import UsageError
from ..core.ops import AMEND, CANCEL, NEW, Op
from ..core.replica import Replica
from .orders import OrderFlow


def make_history(n_ops: int, origins: int = 4, seed: int = 1, deliver_every: int = 20,
                 symbol: str = "GBX", step_ns: int = 1_000) -> list[Op]:
    """``n_ops`` ops stamped by ``origins`` replicas; each delivers its news to the others every
    ``deliver_every`` of its own ops, so histories interleave the way a cluster's do."""
    rng = random.Random(seed)
    ids = [f"n{i + 1}" for i in range(origins)]
    reps = {i: Replica(i, members=ids) for i in ids}
    flows = {i: OrderFlow(random.Random(rng.random())) for i in ids}
    out: list[Op] = []
    sent: dict[str, int] = dict.fromkeys(ids, 0)
    recent: dict[str, list[tuple[str, int]]] = {i: [] for i in ids}  # own open orders, newest last
    now = 1_000_000_000
    while len(out) < n_ops:
        nid = rng.choice(ids)
        rep = reps[nid]
        now += rng.randint(1, step_ns)
        recent[nid] = [(oid, side) for oid, side in recent[nid][-64:] if rep.order_status(oid)]
        mine = recent[nid]
        o = flows[nid].next(mine)
        try:
            if o.kind == CANCEL:
                op, _ = rep.submit_cancel(o.order_id, now)
            elif o.kind == AMEND:
                op, _ = rep.submit_amend(o.order_id, o.price, o.qty, now)
            else:
                op, _ = rep.submit_new(symbol, o.side, o.price, o.qty, o.tif, now)
        except UsageError:
            continue
        out.append(op)
        if op.kind == NEW and rep.order_status(op.target):
            recent[nid].append((op.target, op.side))
        if len(out) - sent[nid] >= deliver_every:
            sent[nid] = len(out)
            mine_ops = [x for x in out[-deliver_every * origins:] if x.origin == nid]
            for other in ids:
                if other != nid:
                    reps[other].receive(mine_ops, now)
    return out

