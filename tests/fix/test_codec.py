"""Framing, parsing and encoding of FIX tag=value bytes (gossipbook.fix.codec).

What must hold: any sequence of encoded messages, cut into reads at any points, frames back into
exactly those messages; any bytes at all never raise, and the framer never holds more than one
message's bound of them; a wrong CheckSum or BodyLength is reported Garbled and framing resumes at
the next message; ``parse(encode(...))`` gives back the fields; integers and timestamps are bounded.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from simplefix.data import RAW_DATA_TAGS, RAW_LEN_TAGS

from gossipbook.fix import tags as T
from gossipbook.fix.codec import (
    Fatal,
    Framer,
    Garbled,
    Message,
    ParseError,
    encode,
    encode_body,
    format_utc,
    parse,
    parse_int,
    parse_utc,
)

values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="\x01"), min_size=1,
                 max_size=30)
#: length-prefixed data fields (RawDataLength and friends) need a number: left out of the random bodies
_RAW = set(RAW_LEN_TAGS) | set(RAW_DATA_TAGS)
bodies = st.lists(st.tuples(st.integers(100, 9999).filter(lambda t: t not in T.HEADER_TAGS and t not in _RAW),
                            values), max_size=8)


def one(seq: int, fields: list[tuple[int, str]]) -> bytes:
    return encode("D", "A", "B", seq, format_utc(1_700_000_000_000_000_000), encode_body(fields))


@settings(max_examples=80)
@given(st.lists(bodies, min_size=1, max_size=6), st.lists(st.integers(1, 50), max_size=30))
def test_messages_cut_anywhere_frame_back_exactly(msgs: list[list[tuple[int, str]]], cuts: list[int]) -> None:
    stream = b"".join(one(i + 1, f) for i, f in enumerate(msgs))
    fr = Framer(4096)
    got: list[bytes] = []
    pos = 0
    for c in cuts + [len(stream)]:
        fr.feed(stream[pos:pos + c])
        pos += c
        while (f := fr.next()) is not None:
            assert isinstance(f, bytes)
            got.append(f)
    assert got == [one(i + 1, f) for i, f in enumerate(msgs)]
    for i, (frame, fields) in enumerate(zip(got, msgs, strict=True)):
        m = parse(frame)
        assert isinstance(m, Message)
        assert m.get(T.MsgSeqNum) == str(i + 1).encode()
        assert [(t, v.decode()) for t, v in m.pairs[7:-1]] == fields


@settings(max_examples=150)
@given(st.lists(st.binary(max_size=300), max_size=6))
def test_any_bytes_never_raise_and_stay_bounded(chunks: list[bytes]) -> None:
    fr = Framer(256)
    for c in chunks:
        fr.feed(c)
        for _ in range(1000):
            f = fr.next()
            if f is None or isinstance(f, Fatal):
                break
            if isinstance(f, bytes):
                assert isinstance(parse(f), Message | ParseError)
        assert fr.buffered <= 256 + len(c)


def test_bad_checksum_and_body_length_are_garbled_and_framing_resumes() -> None:
    good = one(1, [(100, "x")])
    bad_sum = good[:-4] + (b"000" if not good.endswith(b"=000\x01") else b"001") + b"\x01"
    n = int(good.split(b"\x01")[1][2:])
    bad_len = good.replace(b"9=%d" % n, b"9=%d" % (n - 1), 1)
    fr = Framer()
    fr.feed(bad_sum + bad_len + good)
    out = []
    while (f := fr.next()) is not None:
        out.append(f)
    assert isinstance(out[0], Garbled) and "CheckSum" in out[0].reason
    assert out[-1] == good and all(isinstance(x, Garbled) for x in out[:-1])


def test_a_body_length_over_the_bound_is_fatal() -> None:
    fr = Framer(300)
    fr.feed(b"8=FIX.4.4\x019=100000\x01")
    assert isinstance(fr.next(), Fatal) and fr.buffered == 0


def test_integers_and_times_are_bounded() -> None:
    assert parse_int(b"2147483647") == 2**31 - 1
    assert parse_int(b"2147483648") is None and parse_int(b"-1") is None and parse_int(b"1" * 40) is None
    assert parse_int(b"\xd9\xa3") is None  # unicode digits are not FIX digits
    ns = 1_700_000_000_123_000_000
    assert parse_utc(format_utc(ns)) == ns
    assert parse_utc(b"20231314-00:00:00") is None and parse_utc(b"yesterday") is None
