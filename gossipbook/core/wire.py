"""The wire format: versioned, authenticated msgpack frames with strict validation.

Theory of operation
-------------------
A frame is ``MAGIC (2) | VERSION (1) | PLEN (1) | PRINCIPAL (PLEN) | body | tag (16)``. ``body`` is a
msgpack array ``[type, sender, counter, *fields]``; ``tag`` is keyed BLAKE2b-128 of everything before
it (BLAKE2b's keyed mode is a MAC by design and ~1.5x faster than HMAC-SHA256 here; see
floors/REPORT.md). Message bodies are positional arrays, not maps: smaller and faster.

Two kinds of principal sign frames. An empty ``PRINCIPAL`` means the peer key: only nodes hold it,
and it signs every node-to-node type. A non-empty one names an *account*, whose own credential
signs the frame: a client acting for that account, or a node answering it. Under an account
credential only the client types (``ACCOUNT_TYPES``) are valid, under the peer key never: a client
that holds only its own credential cannot speak as a node (``not_peer``), and the account a request
acts for is the one whose key verified it, never a field the client fills in.

Rules that hold:
- ``decode`` either returns a fully validated ``Frame`` or raises ``WireError``; nothing else
  escapes, whatever the bytes. The tag is checked (constant time) before anything is unpacked.
- Type numbers are append-only; a new field goes at the end of a message with a default, so an
  older reader ignores nothing silently: extra trailing fields are rejected by length.
- ``counter`` grows per sender; ``ReplayGuard`` drops a frame seen before (sliding window), so a
  captured datagram replayed later changes nothing. The shell keys the window by principal and
  sender, so one account's frames can never move another principal's window.
"""

from __future__ import annotations

import hashlib
import hmac
import reprlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import msgpack

from .book import Trade
from .errors import WireError
from .membership import Ack, IndirectAck, PingReq, Probe, Update
from .membership import Gossip as MemberGossip
from .ops import Op
from .sequencer import AppendEntries, AppendReply, Entry, InstallSnapshot, RequestVote, VoteReply

MAGIC = b"GB"
VERSION = 3  # 3: principals (accounts), Op.account, CANCEL_ALL, trades name accounts (2026-12-04)
TAG_LEN = 16
HEADER = MAGIC + bytes([VERSION])
MAX_DATAGRAM = 65_507  # the largest UDP payload; gossip batches stay under ``mtu``
DEFAULT_MTU = 1400
KEY_LEN = 32
U64 = (1 << 64) - 1
MAX_INT = (1 << 53)  # prices, quantities: exact in JSON doubles too


# ---- validators ------------------------------------------------------------------------------------
Check = Callable[[Any], Any]


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 60, 60


def _fail(what: str, value: Any) -> WireError:
    # bounded repr: a plain repr() of peer data 1000 lists deep raises RecursionError (and a big one
    # costs time), and decode must raise nothing but WireError
    text = _REPR.repr(value)
    return WireError(f"bad {what}: {text[:60]}")


def uint(hi: int = U64) -> Check:
    def check(v: Any) -> int:
        if type(v) is not int or not 0 <= v <= hi:
            raise _fail("unsigned int", v)
        return v
    return check


def string(max_len: int, min_len: int = 0) -> Check:
    def check(v: Any) -> str:
        if type(v) is not str or not min_len <= len(v) <= max_len:
            raise _fail(f"string (length {min_len}..{max_len})", v)
        return v
    return check


def binary(max_len: int) -> Check:
    def check(v: Any) -> bytes:
        if type(v) is not bytes or len(v) > max_len:
            raise _fail("bytes", v)
        return v
    return check


def boolean(v: Any) -> bool:
    if type(v) is not bool:
        raise _fail("bool", v)
    return v


def one_of(*allowed: Any) -> Check:
    def check(v: Any) -> Any:
        if type(v) is not int or v not in allowed:
            raise _fail(f"value (one of {allowed})", v)
        return v
    return check


def list_of(item: Check, max_len: int) -> Check:
    def check(v: Any) -> list[Any]:
        if type(v) is not list or len(v) > max_len:
            raise _fail("list", v)
        return [item(x) for x in v]
    return check


def map_of(key: Check, value: Check, max_len: int) -> Check:
    def check(v: Any) -> dict[Any, Any]:
        if type(v) is not dict or len(v) > max_len:
            raise _fail("map", v)
        return {key(k): value(x) for k, x in v.items()}
    return check


def record(cls: Callable[..., Any], fields: Sequence[Check]) -> Check:
    """A positional array validated field by field and built into ``cls``."""
    n = len(fields)

    def check(v: Any) -> Any:
        if type(v) is not list or len(v) != n:
            raise _fail(f"{getattr(cls, '__name__', 'record')} ({n} fields)", v)
        return cls(*[f(x) for f, x in zip(fields, v, strict=True)])
    return check


def plain(depth: int = 6) -> Check:
    """Any msgpack value of plain types (for query replies), nesting bounded."""
    def check(v: Any, d: int = 0) -> Any:
        if d > depth:
            raise _fail("nesting", "...")
        t = type(v)
        if v is None or t in (bool, int, float, str, bytes):
            return v
        if t is list:
            return [check(x, d + 1) for x in v]
        if t is dict:
            return {string(256)(k): check(x, d + 1) for k, x in v.items()}
        raise _fail("value", v)
    return check


NODE_ID = string(64, 1)
ORDER_ID = string(96)
SYMBOL = string(32, 1)
ACCOUNT = string(64)
_OP_FIELDS = record(Op, [uint(), uint(1 << 32), NODE_ID, uint(U64 >> 1), one_of(1, 2, 3, 4), string(32), ORDER_ID,
                         one_of(0, 1), uint(MAX_INT), uint(MAX_INT), one_of(0, 1, 2, 3), string(64), ACCOUNT])


def OP_CHECK(v: Any) -> Op:  # noqa: N802 (a check, named like the others)
    """``_OP_FIELDS`` in one expression for the common case (every op of every batch goes through
    here: ~12 closure calls per op were a third of decoding); anything it does not accept goes to
    ``_OP_FIELDS``, which accepts exactly the same values and names what is wrong."""
    if (type(v) is list and len(v) == 13
            and type(v[0]) is int and 0 <= v[0] <= U64
            and type(v[1]) is int and 0 <= v[1] <= 1 << 32
            and type(v[2]) is str and 1 <= len(v[2]) <= 64
            and type(v[3]) is int and 0 <= v[3] <= U64 >> 1
            and type(v[4]) is int and v[4] in (1, 2, 3, 4)
            and type(v[5]) is str and len(v[5]) <= 32
            and type(v[6]) is str and len(v[6]) <= 96
            and type(v[7]) is int and v[7] in (0, 1)
            and type(v[8]) is int and 0 <= v[8] <= MAX_INT
            and type(v[9]) is int and 0 <= v[9] <= MAX_INT
            and type(v[10]) is int and v[10] in (0, 1, 2, 3)
            and type(v[11]) is str and len(v[11]) <= 64
            and type(v[12]) is str and len(v[12]) <= 64):
        return Op(*v)
    return _OP_FIELDS(v)  # type: ignore[no-any-return]
VV = map_of(NODE_ID, uint(U64 >> 1), 1024)


# ---- messages --------------------------------------------------------------------------------------
class OpBatch(NamedTuple):
    """Ops pushed eagerly or sent in answer to a summary; many per datagram."""

    ops: list[Op]


class Summary(NamedTuple):
    """Anti-entropy: "this is what I hold". The peer sends what we lack and, when ``reply`` is
    set, answers with its own summary so we can send what it lacks (push-pull). ``skip``: per
    origin, ops up to that seq need not be sent either — they arrived and wait to be folded, or
    another peer is sending them; unlike ``vv`` it promises nothing about what is held."""

    vv: dict[str, int]
    reply: bool
    skip: dict[str, int] = {}  # noqa: RUF012 (never mutated)


class Pull(NamedTuple):
    """Ask for specific ops: per origin, the seq range ``[from, to]`` wanted."""

    ranges: list[tuple[str, int, int]]


class Heartbeat(NamedTuple):
    """Finality announcement: the sender's HLC at send time and the highest seq it has stamped."""

    wall: int
    logical: int
    max_seq: int
    vv: dict[str, int]


class ClientSubmit(NamedTuple):
    """A client's order action; ``req`` makes retries idempotent. It acts for the account whose
    credential signed the frame (there is no account field to fill in)."""

    req: str
    kind: int  # 1 new, 2 cancel, 3 amend, 4 cancel all (``symbol`` "" for every instrument)
    symbol: str
    order_id: str
    side: int
    price: int
    qty: int
    tif: int
    wait: int  # 0 accepted, 1 replicated, 2 final
    timeout_ms: int


class ClientReply(NamedTuple):
    """The node's answer to a submit: ``code`` 0 ok, else an error class (see ``REPLY_CODES``)."""

    req: str
    code: int
    message: str
    order_id: str
    level: int
    trades: list[list[Any]]


class ClientQuery(NamedTuple):
    """A read: ``what`` is "book" (depth only), "status", "progress" (op counts only: no digest),
    "orders" (the asking account's open orders) or "trades" (the asking account's fills)."""

    req: str
    what: str
    symbol: str
    depth: int


class QueryReply(NamedTuple):
    req: str
    code: int
    message: str
    payload: Any


class SnapshotChunk(NamedTuple):
    """One piece of a msgpack-encoded ``Snapshot``; ``snap_id`` ties the pieces together."""

    snap_id: int
    index: int
    total: int
    data: bytes


TRADE = list_of(plain(1), 8)

#: type number -> (class, validator). Append only; never reuse a number.
MESSAGES: dict[int, tuple[type, Check]] = {}


def register(type_no: int, cls: type, fields: Sequence[Check]) -> None:
    if type_no in MESSAGES:
        raise ValueError(f"message type {type_no} already registered")
    MESSAGES[type_no] = (cls, record(cls, fields))
    _TYPE_OF[cls] = type_no


_TYPE_OF: dict[type, int] = {}

register(1, OpBatch, [list_of(OP_CHECK, 4096)])
register(2, Summary, [VV, boolean, VV])
register(3, Pull, [list_of(record(lambda *f: tuple(f), [NODE_ID, uint(), uint()]), 1024)])
register(4, Heartbeat, [uint(), uint(1 << 32), uint(), VV])
_SUBMIT_FIELDS = [string(64, 1), one_of(1, 2, 3, 4), string(32), ORDER_ID, one_of(0, 1), uint(MAX_INT),
                  uint(MAX_INT), one_of(0, 1, 2, 3), one_of(0, 1, 2), uint(600_000)]
_REPLY_FIELDS = [string(64), uint(255), string(1024), ORDER_ID, uint(2), list_of(TRADE, 1024)]
register(5, ClientSubmit, _SUBMIT_FIELDS)
register(6, ClientReply, _REPLY_FIELDS)
register(7, ClientQuery, [string(64, 1), string(16, 1), string(32), uint(1000)])
register(8, QueryReply, [string(64), uint(255), string(1024), plain()])
register(9, SnapshotChunk, [uint(), uint(1 << 20), uint(1 << 20), binary(MAX_DATAGRAM)])

# membership (SWIM) messages: updates are (member, incarnation, state, origin) tuples
def _member_state(v: Any) -> str:
    if v not in ("alive", "suspect", "dead", "left"):
        raise _fail("member state", v)
    return v


_UPDATES = list_of(record(Update, [NODE_ID, uint(), _member_state, NODE_ID]), 256)


def _tuple(check: Check) -> Check:
    return lambda v: tuple(check(v))


register(10, Probe, [uint(), uint(), uint(), _tuple(_UPDATES)])
register(11, Ack, [uint(), uint(), uint(), uint(), uint(), _tuple(_UPDATES)])
register(12, PingReq, [uint(), NODE_ID, uint(), _tuple(_UPDATES)])
register(13, IndirectAck, [uint(), NODE_ID, uint(), uint(), _tuple(_UPDATES)])
register(14, MemberGossip, [uint(), _tuple(_UPDATES)])


# strong mode: the sequencer's messages (its dataclasses, fields in wire order) and the forward pair
class Forward(NamedTuple):
    """A follower relays a client's submit to the leader (the fields of ``ClientSubmit``, then the
    account the follower verified it for: peers are trusted to relay that); the leader answers the
    follower with ``ForwardReply``, which the follower passes on to the client."""

    req: str
    kind: int
    symbol: str
    order_id: str
    side: int
    price: int
    qty: int
    tif: int
    wait: int
    timeout_ms: int
    account: str

    @property
    def submit(self) -> ClientSubmit:
        return ClientSubmit(*self[:-1])


class ForwardReply(ClientReply):
    """The leader's answer to a ``Forward`` (the fields of ``ClientReply``, ``req`` being the
    request id scoped to its account, ``"<account>/<req>"``; strong.py's internal ``E_RETRY`` code
    means "not the leader: try the current one", never shown to a client)."""

    __slots__ = ()


# an entry's value on the wire: () for the leader's no-op (None in the log), (op,) for a client op
_ENTRIES = _tuple(list_of(record(Entry, [uint(), _tuple(list_of(OP_CHECK, 1))]), 1024))

register(15, RequestVote, [uint(), uint(), uint(), boolean])
register(16, VoteReply, [uint(), boolean, boolean, NODE_ID])
register(17, AppendEntries, [uint(), uint(), uint(), uint(), _ENTRIES])
register(18, AppendReply, [uint(), boolean, uint(), uint()])
register(19, InstallSnapshot, [uint(), uint(), uint(), uint(), uint(), binary(MAX_DATAGRAM)])
register(20, Forward, [*_SUBMIT_FIELDS, ACCOUNT])
register(21, ForwardReply, [string(130), *_REPLY_FIELDS[1:]])  # req: the account-scoped request id


class Frame(NamedTuple):
    sender: str
    counter: int
    msg: Any
    account: str | None = None  # the account whose credential signed it; None: the peer key


#: the only types an account credential may sign: a client's requests and a node's replies to it
ACCOUNT_TYPES = frozenset({ClientSubmit, ClientQuery, ClientReply, QueryReply})
_ACCOUNT_TYPE_NOS = frozenset({5, 6, 7, 8})
_PEER = b"\0"  # PLEN 0: signed with the peer key


# ---- codec -----------------------------------------------------------------------------------------
def check_key(key: bytes) -> bytes:
    if not isinstance(key, bytes | bytearray) or not 16 <= len(key) <= 64:
        raise ValueError("the cluster key must be 16 to 64 bytes")
    return bytes(key)


class Keys:
    """The credentials a party verifies frames with: the peer key (nodes only; None for a client)
    and account credentials (a node knows every account's, a client only its own). Replacing
    ``accounts`` (a reload) takes effect for the next frame."""

    __slots__ = ("peer", "accounts")

    def __init__(self, peer: bytes | None, accounts: Mapping[str, bytes] | None = None) -> None:
        self.peer = peer
        self.accounts: Mapping[str, bytes] = accounts if accounts is not None else {}

    def __repr__(self) -> str:  # never the secrets
        return f"Keys(peer={'***' if self.peer else None}, accounts={sorted(self.accounts)})"


def _tag(key: bytes, data: bytes | memoryview) -> bytes:
    return hashlib.blake2b(data, key=key, digest_size=TAG_LEN).digest()


def encode(msg: Any, sender: str, counter: int, key: bytes, account: str | None = None) -> bytes:
    """One authenticated frame for ``msg``: under the peer key, or, with ``account``, under that
    account's credential ``key``."""
    fields = msg if isinstance(msg, tuple) else [getattr(msg, f) for f in msg.__slots__]
    body = msgpack.packb([_TYPE_OF[type(msg)], sender, counter, *fields], use_bin_type=True)
    if account:
        name = account.encode()
        head = HEADER + bytes([len(name)]) + name + body
    else:
        head = HEADER + _PEER + body
    return head + _tag(key, head)


def decode(data: bytes, keys: Keys | bytes, max_size: int = MAX_DATAGRAM) -> Frame:
    """Authenticate, unpack and validate one frame; ``WireError`` on anything wrong (``reason``
    says what: ``auth`` for a wrong key or an unknown account, ``not_peer`` for a node-to-node type
    under an account credential, ``not_account`` for a client type under the peer key)."""
    n = len(data)
    if n > max_size:
        raise WireError(f"frame of {n} bytes exceeds {max_size}", reason="oversized")
    if n < len(HEADER) + 2 + TAG_LEN:
        raise WireError(f"frame of {n} bytes is too short", reason="malformed")
    if data[:2] != MAGIC:
        raise WireError("not a gossipbook frame (bad magic)", reason="malformed")
    if data[2] != VERSION:
        raise WireError(f"wire version {data[2]} (this node speaks {VERSION})", reason="version")
    if not isinstance(keys, Keys):
        keys = Keys(keys)
    plen = data[3]
    start = len(HEADER) + 1 + plen
    account: str | None = None
    if plen:
        if n < start + 1 + TAG_LEN:
            raise WireError(f"frame of {n} bytes is too short", reason="malformed")
        try:
            account = data[len(HEADER) + 1:start].decode("ascii")
        except UnicodeDecodeError:
            raise WireError("account name is not ASCII", reason="malformed") from None
        key = keys.accounts.get(account)
        if key is None:
            raise WireError(f"unknown or revoked account {account[:64]!r}", reason="auth")
    else:
        key = keys.peer  # type: ignore[assignment]
        if key is None:
            raise WireError("frame signed with the peer key, which this party does not hold", reason="auth")
    mv = memoryview(data)
    if not hmac.compare_digest(_tag(key, mv[:-TAG_LEN]), mv[-TAG_LEN:]):
        raise WireError("authentication failed (wrong key or tampered frame)", reason="auth")
    try:
        body = msgpack.unpackb(mv[start:-TAG_LEN], raw=False, use_list=True, strict_map_key=True,
                               max_str_len=65_536, max_bin_len=MAX_DATAGRAM, max_array_len=65_536,
                               max_map_len=65_536, max_ext_len=0)
    except Exception as e:  # msgpack raises several types for bad input; all mean the same here
        raise WireError(f"undecodable body: {type(e).__name__}", reason="malformed") from None
    if type(body) is not list or len(body) < 3:
        raise WireError("body is not [type, sender, counter, ...]", reason="malformed")
    spec = MESSAGES.get(body[0]) if type(body[0]) is int else None
    if spec is None:
        raise WireError(f"unknown message type {body[0]!r}", reason="unknown_type")
    if (account is not None) != (body[0] in _ACCOUNT_TYPE_NOS):
        if account is not None:
            raise WireError(f"{spec[0].__name__} under account {account!r}'s credential: only nodes "
                            f"send it", reason="not_peer")
        raise WireError(f"{spec[0].__name__} under the peer key: client requests and replies are "
                        f"signed by an account", reason="not_account")
    try:
        sender = NODE_ID(body[1])
        counter = uint()(body[2])
        msg = spec[1](body[3:])
    except WireError:
        raise
    except Exception as e:  # a constructor refusing a value: still the peer's fault
        raise WireError(f"invalid {spec[0].__name__}: {e}", reason="malformed") from None
    return Frame(sender, counter, msg, account)


def encode_ops(ops: Sequence[Op], sender: str, counter: int, key: bytes, mtu: int = DEFAULT_MTU) -> list[bytes]:
    """Pack ops into as few ``OpBatch`` frames as fit under ``mtu`` bytes each (in order)."""
    frames: list[bytes] = []
    # sized at the largest counter any frame here can carry (msgpack widens ints at 2**7, 2**8, 2**16,
    # 2**32, so a later frame's counter may be longer); +3: the ops array header may grow
    overhead = len(encode(OpBatch([]), sender, counter + max(len(ops) - 1, 0), key)) + 3
    batch: list[Op] = []
    size = overhead
    packb = msgpack.packb
    for op in ops:
        s = len(packb(op, use_bin_type=True))
        if batch and size + s > mtu:
            frames.append(encode(OpBatch(batch), sender, counter + len(frames), key))
            batch, size = [], overhead
        batch.append(op)
        size += s
    if batch:
        frames.append(encode(OpBatch(batch), sender, counter + len(frames), key))
    return frames


class ReplayGuard:
    """Per-sender sliding window over frame counters (RFC 4303's anti-replay idea).

    ``accept`` is True exactly once per ``(sender, counter)`` within the window; counters more than
    ``window`` below the highest seen are refused as too old.
    """

    __slots__ = ("window", "_top", "_seen")

    def __init__(self, window: int = 1024) -> None:
        self.window = window
        self._top: dict[str, int] = {}
        self._seen: dict[str, int] = {}  # bitmap: bit i set = counter (top - i) seen

    def accept(self, sender: str, counter: int) -> bool:
        top = self._top.get(sender)
        if top is None:
            self._top[sender], self._seen[sender] = counter, 1
            return True
        if counter > top:
            shift = counter - top
            self._seen[sender] = ((self._seen[sender] << shift) | 1) & ((1 << self.window) - 1) if shift < self.window else 1
            self._top[sender] = counter
            return True
        back = top - counter
        if back >= self.window:
            return False
        bit = 1 << back
        if self._seen[sender] & bit:
            return False
        self._seen[sender] |= bit
        return True

    def forget(self, sender: str) -> None:
        """Drop a sender's window (a restarted peer with a fresh counter base)."""
        self._top.pop(sender, None)
        self._seen.pop(sender, None)


def trade_row(t: Trade) -> list[Any]:
    """A trade as ``ClientReply`` / ``ForwardReply`` carry it: ``[trade_id, price, qty, maker, taker]``."""
    return [t.trade_id, t.price, t.qty, t.maker, t.taker]


REPLY_CODES = {0: "ok", 1: "invalid order", 2: "unknown order", 3: "clock out of sync", 4: "no quorum",
               5: "timeout", 6: "unknown instrument", 7: "storage unavailable", 8: "bad request",
               9: "not ready", 10: "not owner"}
LEVELS = ("accepted", "replicated", "final")


# ---- snapshots ----------------------------------------------------------------------------------------
_RESTING = record(lambda *f: tuple(f), [one_of(0, 1), uint(MAX_INT), ORDER_ID, uint(MAX_INT), ACCOUNT])
_FILL = record(lambda *f: Trade(*f), [string(128, 1), SYMBOL, uint(MAX_INT), uint(MAX_INT), ORDER_ID, ORDER_ID,
                                       one_of(0, 1), ACCOUNT, ACCOUNT])
_SNAPSHOT = record(lambda *f: f, [VV, map_of(SYMBOL, list_of(_RESTING, 10_000_000), 4096), uint(),
                                  binary(64), record(lambda *f: tuple(f), [uint(), uint(1 << 32), string(64)]),
                                  map_of(string(130), ORDER_ID, 10_000_000),
                                  map_of(ORDER_ID, list_of(_FILL, 1_000_000), 10_000_000)])


def snapshot_to_bytes(snap: Any) -> bytes:
    """A ``replica.Snapshot`` as msgpack (sent in ``SnapshotChunk`` pieces, persisted by storage)."""
    fills = {oid: [list(t) for t in ts] for oid, ts in snap.fills.items()}
    return msgpack.packb([snap.base_vv, snap.books, snap.trades, snap.chain, list(snap.last_key), snap.reqs,
                          fills], use_bin_type=True)


def snapshot_from_bytes(data: bytes) -> Any:
    """Parse and validate a snapshot; ``WireError`` on anything wrong."""
    from .replica import Snapshot

    try:
        raw = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True, max_ext_len=0)
    except Exception as e:
        raise WireError(f"undecodable snapshot: {type(e).__name__}", reason="bad_snapshot") from None
    if isinstance(raw, list) and len(raw) == 6:
        raw.append({})  # written before snapshots kept compacted requests' fills
    vv, books, trades, chain, last_key, reqs, fills = _SNAPSHOT(raw)
    return Snapshot(vv, books, trades, chain, last_key, reqs, fills)
