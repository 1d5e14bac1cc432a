"""Audit rows are built in one tight loop per call and packed by msgspec (node/audit.py, ``ops``):
the records must be the ones the row-by-row code wrote -- same rows, same bytes as
``msgpack.packb`` -- and the op-id -> HLC memory a trade's row is stamped from must hold the same
ops (the newest ``HLC_MEMORY``) however the ops arrive in calls."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gossipbook.core.clockbound import ClockBound
from gossipbook.core.ops import KIND_NAMES, Op
from gossipbook.node import audit
from gossipbook.node.audit import APPLY, MAGIC, STAMP, AuditLog, AuditTrail, parse_record

ME = "n1"
OPS = st.builds(lambda origin, seq, kind, sym, oid, qty, price, acct, wall, lg: Op(
    wall, lg, origin, seq, kind, sym, oid, 0, price, qty, 0, "", acct),
    st.sampled_from(["n1", "n2", "n3"]), st.integers(1, 50), st.sampled_from(sorted(KIND_NAMES)),
    st.sampled_from(["GBX", "ABC"]), st.sampled_from(["", "n2:7"]), st.integers(1, 99), st.integers(1, 20_000),
    st.sampled_from(["", "acct1"]), st.integers(0, 1 << 62), st.integers(0, 5))


def reference_row(op: Op, clock: list[Any]) -> list[Any]:
    """A row as the row-by-row code made it."""
    detail = f"{KIND_NAMES.get(op.kind, '?')} {op.symbol} {op.qty}@{op.price}"
    if op.order_id:
        detail += f" on {op.order_id}"
    return [STAMP if op.origin == ME else APPLY, op.op_id, op.account, op.wall, op.logical, *clock, detail]


def records(d: Path) -> list[bytes]:
    out = []
    for f in sorted(d.iterdir()):
        data, off = f.read_bytes(), 0
        while off < len(data):
            assert data[off:off + 2] == MAGIC
            got = parse_record(data, off, MAGIC)
            assert got is not None
            payload, off = got
            out.append(payload)
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(calls=st.lists(st.lists(OPS, max_size=6), max_size=6), memory=st.integers(1, 8))
def test_rows_bytes_and_hlc_memory_are_the_row_by_row_ones(tmp_path_factory: pytest.TempPathFactory,
                                                            monkeypatch: pytest.MonkeyPatch, calls: list[list[Op]],
                                                            memory: int) -> None:
    monkeypatch.setattr(audit, "HLC_MEMORY", memory)
    d = tmp_path_factory.mktemp("audit")
    trail = AuditTrail(AuditLog.open(d, fsync="never"), ME, lambda: 42, ClockBound(ME, []))
    clock = trail._clock()
    expect: list[bytes] = []
    hlc: OrderedDict[str, tuple[int, int]] = OrderedDict()
    for ops in calls:
        trail.ops(ops)
        if ops:
            expect.append(msgpack.packb([audit.VERSION, [reference_row(op, clock) for op in ops]], use_bin_type=True))
        for op in ops:  # the memory as the row-by-row code kept it: trimmed after each op
            hlc[op.op_id] = (op.wall, op.logical)
            if len(hlc) > memory:
                hlc.popitem(last=False)
        assert trail._hlc == hlc
    trail.close()
    assert records(d) == expect
    assert trail.counters["audit_rows"] == sum(map(len, calls))
