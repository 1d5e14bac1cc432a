"""An op batch is unpacked and checked by one msgspec type (core/wire.py, ``_decode_op_batch``);
every other frame, and any op batch it refuses, goes the general way (``unpackb`` and the checks).
These properties hold the fast way to the general one on valid batches, on batches with one field
wrong, and on valid bodies with bytes flipped or cut: the same ``Frame`` (ops built as ``Op``), or
the same ``WireError`` -- reason and text -- since a refused batch falls through to the general way.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipbook.core import wire
from gossipbook.core.errors import WireError
from gossipbook.core.ops import Op
from gossipbook.core.wire import OpBatch, decode

from .test_wire import KEYS, NOW_MS, OP, SCHEMA, SENDERS, R, invalid, seal, valid


def _outcome(frame: bytes) -> Any:
    try:
        f = decode(frame, KEYS, now_ms=NOW_MS)
    except WireError as e:
        return ("error", e.reason, str(e))
    if type(f.msg) is OpBatch:
        assert all(type(op) is Op for op in f.msg.ops)
    return f


def _general(frame: bytes) -> Any:
    def refuse(_body: Any) -> Any:
        raise ValueError("the fast way is off for this comparison")

    with pytest.MonkeyPatch.context() as m:
        m.setattr(wire, "_decode_op_batch", refuse)
        return _outcome(frame)


def _flip(body: bytes, at: int, xor: int) -> bytes:
    b = bytearray(body)
    b[at % len(b)] ^= xor
    return bytes(b)


U64, MAX_INT = wire.U64, wire.MAX_INT
#: per op field: values at and just past each bound the checks draw (and a wrong type or two)
EDGES: dict[int, list[Any]] = {
    0: [U64, -1, 1.0], 1: [1 << 32, (1 << 32) + 1, -1], 2: ["", "x", "x" * 64, "x" * 65, "\u00e9" * 65, b"x"],
    3: [U64 >> 1, (U64 >> 1) + 1], 4: [0, 1, 9, 10, True], 5: ["", "x" * 32, "x" * 33, "\u00e9" * 32, "\U0001f600" * 33],
    6: ["x" * 96, "x" * 97], 7: [0, 1, 2, False], 8: [0, MAX_INT, MAX_INT + 1], 9: [MAX_INT, MAX_INT + 1, None],
    10: [3, 4], 11: ["x" * 64, "x" * 65], 12: ["y" * 64, "y" * 65, 0],
}


def _edged(ops: list[Any], which: int, field: int, pick: int) -> list[Any]:
    rows = [list(op) for op in ops]
    vals = EDGES[field]
    rows[which % len(rows)][field] = vals[pick % len(vals)]
    return rows


BODIES = st.one_of(
    st.tuples(st.lists(valid(OP), min_size=1, max_size=3), st.integers(0, 2), st.integers(0, 12), st.integers(0, 5),
              st.sampled_from(["n1", "", "x" * 64, "x" * 65]), st.sampled_from([0, U64, -1]))
    .map(lambda t: msgpack.packb([1, t[4], t[5], _edged(t[0], t[1], t[2], t[3])], use_bin_type=True)),
    st.tuples(SENDERS, st.integers(0, wire.U64), st.lists(valid(OP), max_size=6))
    .map(lambda t: msgpack.packb([1, t[0], t[1], t[2]], use_bin_type=True)),
    st.tuples(SENDERS, invalid(R(OpBatch, SCHEMA[OpBatch])))  # one field (or the shape) wrong
    .map(lambda t: msgpack.packb([1, t[0], 1, *(t[1] if isinstance(t[1], list) else [t[1]])], use_bin_type=True)),
    st.tuples(st.lists(valid(OP), min_size=1, max_size=3), st.integers(0, 500), st.integers(1, 255))
    .map(lambda t: _flip(msgpack.packb([1, "n1", 7, t[0]], use_bin_type=True), t[1] + 2, t[2])),
    st.tuples(st.lists(valid(OP), min_size=1, max_size=3), st.integers(1, 40))
    .map(lambda t: msgpack.packb([1, "n1", 7, t[0]], use_bin_type=True)[:-t[1]]),
)


@settings(max_examples=250, deadline=None)
@given(body=BODIES)
def test_the_fast_op_batch_decode_agrees_with_the_general_one(body: bytes) -> None:
    frame = seal(body)
    assert _outcome(frame) == _general(frame)


@pytest.mark.parametrize(("field", "value"), [(f, v) for f, vs in EDGES.items() for v in vs])
def test_every_bound_of_every_op_field_is_where_the_general_checks_put_it(field: int, value: Any) -> None:
    op = list(Op(5, 0, "n1", 1, 1, "GBX", "", 0, 100, 2, 0, "", ""))
    op[field] = value
    frame = seal(msgpack.packb([1, "n1", 3, [op]], use_bin_type=True))
    assert _outcome(frame) == _general(frame)


def test_an_op_batch_takes_the_fast_way(monkeypatch: pytest.MonkeyPatch) -> None:
    """A valid batch never reaches ``unpackb`` (so the comparison above compares two ways)."""
    frame = seal(msgpack.packb([1, "n1", 3, [list(Op(5, 0, "n1", 1, 1, "GBX", "", 0, 100, 2, 0, "", ""))]],
                               use_bin_type=True))
    monkeypatch.setattr(wire.msgpack, "unpackb", None)
    f = decode(frame, KEYS, now_ms=NOW_MS)
    assert (f.sender, f.counter, f.msg) == ("n1", 3, OpBatch([Op(5, 0, "n1", 1, 1, "GBX", "", 0, 100, 2, 0, "", "")]))
