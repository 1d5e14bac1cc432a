"""FIX tag=value framing, parsing and encoding: bytes from a stream in, checked messages out.

Theory of operation: ``Framer`` cuts a TCP byte stream into frames using the two fields FIX puts
first for exactly this purpose, BeginString (8) and BodyLength (9), and checks the trailer and
CheckSum (10) itself (simplefix's parser checks neither). A frame that passes is parsed into tag/value
pairs by simplefix; encoding goes through ``simplefix.FixMessage`` too, which computes BodyLength and
CheckSum. Pure: no sockets, no clock (times are passed in as nanoseconds).

Rules that hold:
- The framer never holds more than ``max_message`` bytes of an incomplete frame: a BodyLength that
  would pass the bound is ``Fatal`` (the connection must close), garbage before a BeginString is
  skipped and reported as ``Garbled`` (one per run of junk), so hostile bytes cost bounded memory.
- A frame with a wrong BodyLength or CheckSum is ``Garbled``: FIX says to ignore a garbled message
  (its MsgSeqNum cannot be trusted); the sequence gap it leaves is repaired by a ResendRequest.
- ``parse`` never raises: anything simplefix refuses, and any value that is not ASCII, becomes a
  ``ParseError`` with the SessionRejectReason to answer with.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import simplefix

from . import tags as T

SOH = b"\x01"
_HEADER = re.compile(rb"8=(FIX[^\x01=]{1,12})\x019=(\d{1,7})\x01")
_PARTIAL = re.compile(rb"8=FIX[^\x01=]{0,12}(?:\x01(?:9(?:=\d{0,7})?)?)?")
_TRAILER = re.compile(rb"10=(\d{3})\x01")
#: a MsgSeqNum found by a plain scan (used to reference a message simplefix could not parse)
_SEQ_SCAN = re.compile(rb"\x0134=(\d{1,10})\x01")
_TYPE_SCAN = re.compile(rb"\x0135=([^\x01]{1,8})\x01")
#: the most digits an integer field may have; every integer a peer sends is bounded
MAX_INT_DIGITS = 10
MAX_SEQ = 2**31 - 1


@dataclass(frozen=True, slots=True)
class Garbled:
    """A frame (or a run of junk) to ignore and count: ``reason`` says what was wrong."""

    reason: str


@dataclass(frozen=True, slots=True)
class Fatal:
    """The stream cannot be framed safely any more (a message over the size bound): close it."""

    reason: str


class Framer:
    """Cuts a byte stream into checked FIX frames; see the module docstring for what it bounds."""

    def __init__(self, max_message: int = 8192) -> None:
        if max_message < 64:
            raise ValueError("max_message must be at least 64 bytes")
        self.max_message = max_message
        self._buf = bytearray()
        self._junk = False  # inside a run of junk already reported

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        """Append received bytes (``next`` takes them out again)."""
        self._buf += data

    def remaining(self) -> bytes:
        """The bytes not yet framed (handed on when a connection changes owner)."""
        return bytes(self._buf)

    def next(self) -> bytes | Garbled | Fatal | None:
        """The next complete frame, a ``Garbled``/``Fatal`` report, or ``None`` (need more bytes)."""
        buf = self._buf
        while True:
            if not buf:
                return None
            if not buf.startswith(b"8=FIX"):
                if len(buf) < 5 and b"8=FIX".startswith(bytes(buf)):
                    return None  # perhaps the start of a message, split across reads
                i = buf.find(b"8=FIX", 1)
                if i < 0:
                    keep = next((k for k in (4, 3, 2, 1) if buf.endswith(b"8=FIX"[:k])), 0)
                    del buf[:len(buf) - keep]
                    return self._junk_report()
                del buf[:i]
                rep = self._junk_report()
                if rep is not None:
                    return rep
                continue
            m = _HEADER.match(buf)
            if m is None:
                if _PARTIAL.fullmatch(buf):
                    return None  # the header is not all here yet
                del buf[:1]  # not a header: resynchronise on the next "8=FIX"
                self._junk = True
                return Garbled("malformed BeginString/BodyLength")
            body_len = int(m.group(2))
            total = m.end() + body_len + 7
            if total > self.max_message:
                self._buf = bytearray()
                return Fatal(f"message of {total} bytes is over the limit of {self.max_message}")
            if len(buf) < total:
                return None
            frame = bytes(buf[:total])
            t = _TRAILER.fullmatch(frame, total - 7)
            if t is None:
                del buf[:1]
                self._junk = True
                return Garbled(f"BodyLength {body_len} does not end at a CheckSum field")
            del buf[:total]
            self._junk = False
            want = sum(frame[:total - 7]) % 256
            if int(t.group(1)) != want:
                return Garbled(f"CheckSum {t.group(1).decode()} is wrong (expected {want:03d})")
            return frame

    def _junk_report(self) -> Garbled | None:
        if self._junk:
            return None
        self._junk = True
        return Garbled("bytes that are not a FIX message")


# ---- messages -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Message:
    """A parsed message: its fields in order, the first value of each tag, and the tags that appear
    more than once (repeating groups are not supported, so a repeated tag is an error wherever it
    matters)."""

    pairs: tuple[tuple[int, bytes], ...]
    first: dict[int, bytes]
    repeated: frozenset[int]

    @property
    def msg_type(self) -> str:
        return self.first.get(T.MsgType, b"").decode("ascii", "replace")

    def get(self, tag: int) -> bytes | None:
        return self.first.get(tag)

    def text(self, tag: int) -> str | None:
        """A field as text (ASCII-checked at parse time)."""
        v = self.first.get(tag)
        return None if v is None else v.decode("ascii")

    @classmethod
    def of(cls, pairs: Iterable[tuple[int, bytes]]) -> Message:
        ps = tuple(pairs)
        first: dict[int, bytes] = {}
        rep: set[int] = set()
        for t, v in ps:
            if t in first:
                rep.add(t)
            else:
                first[t] = v
        return cls(ps, first, frozenset(rep))


@dataclass(frozen=True, slots=True)
class ParseError:
    """A framed message that cannot be read: the SessionRejectReason, the tag at fault (if known), the
    MsgSeqNum and MsgType found by a plain scan (if any), and a one-line text."""

    reason: int
    text: str
    tag: int | None = None
    seq: int | None = None
    msg_type: str | None = None


_parser = simplefix.FixParser()


def parse(frame: bytes) -> Message | ParseError:
    """One framed message into fields; never raises (see the module docstring)."""
    _parser.reset()
    try:
        _parser.append_buffer(frame)
        raw = _parser.get_message()
        leftover = _parser.get_buffer()
    except simplefix.errors.TagNotNumberError:
        return _scan_error(frame, T.R_INVALID_TAG, "a tag is not a number")
    except simplefix.errors.EmptyValueError as e:
        tag = e.args[0] if e.args and isinstance(e.args[0], int) else None
        return _scan_error(frame, T.R_TAG_WITHOUT_VALUE, f"tag {tag} has no value", tag)
    except Exception as e:  # simplefix on hostile bytes: any refusal is a malformed message, never a crash
        return _scan_error(frame, T.R_INCORRECT_DATA_FORMAT, f"unparseable message ({type(e).__name__})")
    finally:
        _parser.reset()
    if raw is None or leftover:
        return _scan_error(frame, T.R_INCORRECT_DATA_FORMAT, "a length-prefixed data field runs past the message")
    pairs = []
    for tag_b, val in raw.pairs:
        tag = int(tag_b)
        if tag <= 0 or tag > 99999:
            return _scan_error(frame, T.R_INVALID_TAG, f"tag {tag} is out of range", None)
        if not val.isascii() or b"\x01" in val:
            return _scan_error(frame, T.R_INCORRECT_DATA_FORMAT, f"tag {tag} is not ASCII", tag)
        pairs.append((tag, bytes(val)))
    return Message.of(pairs)


def _scan_error(frame: bytes, reason: int, text: str, tag: int | None = None) -> ParseError:
    s = _SEQ_SCAN.search(frame)
    mt = _TYPE_SCAN.search(frame)
    msg_type = mt.group(1).decode("ascii", "replace") if mt else None
    return ParseError(reason, text, tag, int(s.group(1)) if s else None, msg_type)


# ---- values ---------------------------------------------------------------------------------------
def parse_int(value: bytes | None, lo: int = 0, hi: int = MAX_SEQ) -> int | None:
    """A bounded non-negative FIX int, or ``None`` if it is not one (too long, signed, out of range)."""
    if value is None or not value.isdigit() or len(value) > MAX_INT_DIGITS:
        return None
    n = int(value)
    return n if lo <= n <= hi else None


_TIME = re.compile(rb"(\d{4})(\d{2})(\d{2})-(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?")


def parse_utc(value: bytes | None) -> int | None:
    """A UTCTimestamp (``YYYYMMDD-HH:MM:SS[.fff...]``) as nanoseconds since the epoch, or ``None``."""
    if value is None:
        return None
    m = _TIME.fullmatch(value)
    if m is None:
        return None
    y, mo, d, h, mi, s = (int(g) for g in m.groups()[:6])
    frac = m.group(7) or b""
    try:
        dt = datetime(y, mo, d, h, mi, min(s, 59), tzinfo=UTC)
    except ValueError:
        return None
    return (int(dt.timestamp()) + (1 if s == 60 else 0)) * 1_000_000_000 + int((frac + b"000000000")[:9] or b"0")


def format_utc(now_ns: int) -> bytes:
    """``now_ns`` as a UTCTimestamp with milliseconds (what every FIX 4.4 engine reads)."""
    secs, ns = divmod(now_ns, 1_000_000_000)
    dt = datetime.fromtimestamp(secs, UTC)
    return dt.strftime("%Y%m%d-%H:%M:%S").encode() + b".%03d" % (ns // 1_000_000)


def clean_text(text: str, limit: int = 200) -> str:
    """A value safe to put in a field: printable ASCII only, at most ``limit`` characters."""
    out = "".join(c if " " <= c <= "~" else "?" for c in text)
    return out[:limit] or "?"


def encode_body(fields: Sequence[tuple[int, object]]) -> bytes:
    """Body fields (after the header) as ``tag=value<SOH>`` bytes; values must hold no SOH."""
    out = bytearray()
    for tag, value in fields:
        if value is None:
            continue
        v = value if isinstance(value, bytes) else str(value).encode("ascii")
        if not v or SOH in v:
            raise ValueError(f"tag {tag}: an empty value or one holding SOH cannot be sent")
        out += b"%d=%s\x01" % (tag, v)
    return bytes(out)


def encode(msg_type: str, sender: str, target: str, seq: int, sending_time: bytes, body: bytes,
           poss_dup: bool = False, orig_sending_time: bytes | None = None) -> bytes:
    """A whole message: the standard header, ``body`` (from ``encode_body``), BodyLength and
    CheckSum (computed by simplefix)."""
    m = simplefix.FixMessage()
    m.append_pair(T.BeginString, T.BEGIN_STRING, header=True)
    m.append_pair(T.MsgType, msg_type, header=True)
    m.append_pair(T.SenderCompID, sender, header=True)
    m.append_pair(T.TargetCompID, target, header=True)
    m.append_pair(T.MsgSeqNum, seq, header=True)
    m.append_pair(T.SendingTime, sending_time, header=True)
    if poss_dup:
        m.append_pair(T.PossDupFlag, "Y", header=True)
        m.append_pair(T.OrigSendingTime, orig_sending_time or sending_time, header=True)
    if body:
        for part in body.split(SOH)[:-1]:
            tag, _, value = part.partition(b"=")
            m.append_pair(int(tag), value)
    return m.encode()
