"""The wire's encoder is msgspec (4-5x faster than msgpack-python on op arrays): these properties
hold it to byte-identical output with ``msgpack.packb(..., use_bin_type=True)``, the encoder every
frame was written with before, for every registered message type, and hold the op batch encoder
(packed once per flush, assembled per peer) to the frames the straightforward encoder made.

A difference anywhere would change frames' MACs and sizes (so the MTU split and the simulator's
trace hashes), and would stop an older node from reading what a newer one writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipbook.core import wire
from gossipbook.core.ops import Op
from gossipbook.core.wire import MESSAGES, TAG_LEN, OpBatch, Sharded, decode, encode, encode_ops

from .test_wire import COUNTERS, KEY, OP, SENDERS, messages, valid

ME = "n2"
LABEL = "c1"


def _reference_body(msg: Any, sender: str, counter: int) -> bytes:
    """The body as ``wire.encode`` wrote it with msgpack-python: ``[type, sender, counter, *fields]``."""
    def fields_of(m: Any) -> list[Any]:
        return list(m) if isinstance(m, tuple) else [getattr(m, f) for f in m.__slots__]

    fields = fields_of(msg)
    if type(msg) is Sharded:
        fields = [msg.shard, wire._TYPE_OF[type(msg.msg)], fields_of(msg.msg)]
    return msgpack.packb([wire._TYPE_OF[type(msg)], sender, counter, *fields], use_bin_type=True)


def _body(frame: bytes) -> bytes:
    plen = frame[wire._FIXED - 1]
    return frame[wire._FIXED + plen:-TAG_LEN]


@pytest.mark.parametrize("type_no", sorted(MESSAGES))
@settings(max_examples=10, deadline=None)
@given(data=st.data(), sender=SENDERS, counter=COUNTERS)
def test_every_message_type_encodes_byte_identical_to_msgpack(type_no: int, data: st.DataObject, sender: str,
                                                              counter: int) -> None:
    msg = data.draw(messages(MESSAGES[type_no][0]), label="msg")
    frame = encode(msg, sender, counter, KEY, dst=ME, label=LABEL, stamp_ms=7)
    assert _body(frame) == _reference_body(msg, sender, counter)


def _reference_encode_ops(ops: Sequence[Op], sender: str, counter: int, key: bytes, mtu: int, **bind: Any) -> list[bytes]:
    """``encode_ops`` as it was written before the packed path: msgpack-python, op by op."""
    frames: list[bytes] = []
    overhead = len(wire._seal(msgpack.packb([1, sender, counter + max(len(ops) - 1, 0), []], use_bin_type=True),
                              key, None, **bind)) + 3
    batch: list[Op] = []
    size = overhead

    def frame(b: list[Op]) -> bytes:
        body = msgpack.packb([1, sender, counter + len(frames), b], use_bin_type=True)
        return wire._seal(body, key, None, **bind)

    for op in ops:
        s = len(msgpack.packb(op, use_bin_type=True))
        if batch and size + s > mtu:
            frames.append(frame(batch))
            batch, size = [], overhead
        batch.append(op)
        size += s
    if batch:
        frames.append(frame(batch))
    return frames


OPS = st.lists(valid(OP), max_size=40)


@settings(max_examples=60, deadline=None)
@given(ops=OPS, sender=SENDERS, counter=st.one_of(st.integers(0, 300), st.integers(0, wire.U64 - 100)),
       mtu=st.integers(60, 3000))
def test_op_batches_are_the_frames_the_straightforward_encoder_made(ops: list[Op], sender: str, counter: int,
                                                                   mtu: int) -> None:
    bind = {"dst": ME, "label": LABEL, "stamp_ms": 9}
    got = encode_ops(ops, sender, counter, KEY, mtu, **bind)
    assert got == _reference_encode_ops(ops, sender, counter, KEY, mtu, **bind)
    assert [op for f in got for op in decode(f, _keys()).msg.ops] == ops
    # packed once, sealed for two peers: each peer's frames are what encoding for it alone makes
    packed = wire.pack_ops(ops)
    for dst in ("n2", "n3"):
        alone = encode_ops(ops, sender, counter, KEY, mtu, dst=dst, label=LABEL, stamp_ms=9)
        assert wire.encode_packed_ops(packed, sender, counter, KEY, mtu, dst=dst, label=LABEL, stamp_ms=9) == alone


@settings(max_examples=20, deadline=None)
@given(n=st.integers(14, 18).map(lambda k: 1 << k))
def test_array_headers_match_msgpack_at_every_width(n: int) -> None:
    """fixarray below 16, array16 below 2**16, array32 above: the header ``encode_packed_ops`` writes."""
    for k in (0, 1, 15, 16, 17, n - 1, n, n + 1):
        assert wire._array_header(k) == msgpack.packb([None] * k)[:len(wire._array_header(k))]


def test_a_value_msgpack_cannot_carry_still_raises() -> None:
    """An int past 64 bits raises ``OverflowError`` as packb did: the shell counts ``encode_error``."""
    with pytest.raises(OverflowError):
        encode(OpBatch([]), "n1", 1 << 64, KEY, dst=ME, label=LABEL)


def _keys() -> wire.Keys:
    return wire.Keys(KEY, label=LABEL, me=ME)


