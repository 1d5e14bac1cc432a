"""The wire format: versioned, authenticated msgpack frames with strict validation.

Theory of operation
-------------------
A frame is ``MAGIC (2) | VERSION (1) | KEYID (1) | STAMP (6) | PLEN (1) | PRINCIPAL (PLEN) | body |
tag (16)``. ``body`` is a msgpack array ``[type, sender, counter, *fields]``; ``tag`` is keyed
BLAKE2b-128 over the cluster label and the destination's id (neither is sent) and then everything
before the tag (BLAKE2b's keyed mode is a MAC by design and ~1.5x faster than HMAC-SHA256 here; see
floors/REPORT.md). Message bodies are positional arrays, not maps: smaller and faster. ``KEYID`` names
which key of the principal's ring signed (rotation without downtime: every key of a ring verifies,
the first signs); ``STAMP`` is the sender's clock in ms.

Replay: a frame verifies only at its destination and in its cluster (the MAC binds both), only
once per sender and counter (``ReplayGuard``: counters grow per sender, and a restarted sender's
counters start above everything it sent before, so its earlier frames fall out of the window), and
only within ``window_ms`` of its stamp (``stale``), which bounds a replay to a restarted receiver,
whose windows are empty.

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

import functools
import hashlib
import hmac
import reprlib
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal, NamedTuple

import msgpack
import msgspec

from .book import Trade
from .errors import WireError
from .membership import Ack, IndirectAck, PingReq, Probe, Update
from .membership import Gossip as MemberGossip
from .ops import Op
from .sequencer import (
    AppendEntries,
    AppendReply,
    Entry,
    ForcedVote,
    InstallSnapshot,
    RequestVote,
    TimeoutNow,
    VoteReply,
)
from .venuecheck import FP_LEN, MAX_DESCRIPTION, VenueInfo, VenueQuery

MAGIC = b"GB"
VERSION = 4  # 4: key id, stamp, MAC bound to cluster and destination; 3: principals (accounts), Op.account,
#              CANCEL_ALL, trades name accounts (2026-12-04)
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
#: op kinds: NEW, CANCEL, AMEND, CANCEL_ALL, then risk.LIMIT, TRANSFER, HALT, ASK (their quantities, limits
#: and transfers included, are bounded by ``MAX_INT`` like every quantity)
_OP_KINDS = (1, 2, 3, 4, 5, 6, 7, 8, 9)  # 9: config_epoch.MEMBER (membership changes)
_OP_FIELDS = record(Op, [uint(), uint(1 << 32), NODE_ID, uint(U64 >> 1), one_of(*_OP_KINDS), string(32), ORDER_ID,
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
            and type(v[4]) is int and v[4] in _OP_KINDS
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

# The op batch's body -- [1, sender, counter, [op, ...]] -- as one msgspec type, so the most common
# frame is unpacked and checked in one C call (~2x faster than unpackb and OP_CHECK per op). It
# accepts exactly what the checks above accept (``ge=0`` is ``uint()``: msgpack carries no int past
# U64; ``Literal`` is ``one_of``; lengths are in characters, as ``len``); whatever it refuses goes
# the general way, which then names what is wrong (tests/core/test_wire_fast_decode.py compares).
_U = Annotated[int, msgspec.Meta(ge=0)]
_OP_TUPLE = tuple[_U, Annotated[int, msgspec.Meta(ge=0, le=1 << 32)],
                  Annotated[str, msgspec.Meta(min_length=1, max_length=64)],
                  Annotated[int, msgspec.Meta(ge=0, le=U64 >> 1)], Literal[1, 2, 3, 4, 5, 6, 7, 8, 9],
                  Annotated[str, msgspec.Meta(max_length=32)], Annotated[str, msgspec.Meta(max_length=96)],
                  Literal[0, 1], Annotated[int, msgspec.Meta(ge=0, le=MAX_INT)],
                  Annotated[int, msgspec.Meta(ge=0, le=MAX_INT)], Literal[0, 1, 2, 3],
                  Annotated[str, msgspec.Meta(max_length=64)], Annotated[str, msgspec.Meta(max_length=64)]]
_decode_op_batch: Callable[[Any], Any] = msgspec.msgpack.Decoder(
    tuple[Literal[1], Annotated[str, msgspec.Meta(min_length=1, max_length=64)], _U,
          Annotated[list[_OP_TUPLE], msgspec.Meta(max_length=4096)]]).decode
_OP_BATCH_HEAD = b"\x94\x01"  # a 4-item array whose first item is type 1: how every op batch body starts


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
_SUBMIT_FIELDS = [string(64, 1), one_of(1, 2, 3, 4, 5, 7, 9), string(32), ORDER_ID, one_of(0, 1), uint(MAX_INT),
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


#: a venue fingerprint (venuecheck.py): ``FP_LEN`` bytes; b"" from a sender that compares nothing
#: (any other length is bounded here and ignored by ``VenueCheck``)
_FINGERPRINT = binary(FP_LEN)
register(10, Probe, [uint(), uint(), uint(), _tuple(_UPDATES), _FINGERPRINT])
register(11, Ack, [uint(), uint(), uint(), uint(), uint(), _tuple(_UPDATES), _FINGERPRINT])
register(12, PingReq, [uint(), NODE_ID, uint(), _tuple(_UPDATES)])
register(13, IndirectAck, [uint(), NODE_ID, uint(), uint(), _tuple(_UPDATES)])
register(14, MemberGossip, [uint(), _tuple(_UPDATES)])
# venue fingerprints (venuecheck.py): "describe your venue" and the description (canonical JSON)
register(26, VenueQuery, [_FINGERPRINT])
register(27, VenueInfo, [_FINGERPRINT, binary(MAX_DESCRIPTION)])


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
    key_id: int = 0  # which key of that principal's ring verified it (a reply is signed with the same)
    stamp_ms: int = 0  # the sender's wall clock when it sent the frame (ms)


#: the only types an account credential may sign: a client's requests and a node's replies to it
ACCOUNT_TYPES = frozenset({ClientSubmit, ClientQuery, ClientReply, QueryReply})
_ACCOUNT_TYPE_NOS = frozenset({5, 6, 7, 8})


# feeds (core/feeds.py): a client holds a lease on a subscription at one node, which pushes
# sequenced snapshots and deltas to it. Client types: signed by the account, like ClientQuery.
class FeedSubscribe(NamedTuple):
    """Subscribe, renew (same ``sub``), ask for a fresh snapshot (``resync``) or, with
    ``lease_ms`` 0, end the subscription. ``feed``: "trades" (this account's fills, ``symbol`` ""
    for every instrument) or "book" (``symbol``'s top ``depth`` levels)."""

    req: str
    sub: str
    feed: str
    symbol: str
    depth: int
    lease_ms: int
    resync: bool


class FeedAck(NamedTuple):
    """The answer to a ``FeedSubscribe``: ``code`` as ``ClientReply``'s; ``lease_ms`` the lease
    granted; ``seq`` the subscription's last push so far (a client that has seen less lost one);
    ``snapshot``: a snapshot follows, from ``seq + 1``."""

    req: str
    code: int
    message: str
    sub: str
    lease_ms: int
    seq: int
    snapshot: bool


class FeedSnapshot(NamedTuple):
    """Part ``part`` of ``parts`` of a subscription's full state; parts carry consecutive ``seq``s.
    ``fills``: rows of ``FILL_ROW``; ``levels``: rows of ``LEVEL_ROW`` (one of them empty)."""

    sub: str
    seq: int
    part: int
    parts: int
    fills: list[tuple[Any, ...]]
    levels: list[tuple[Any, ...]]


class FeedDelta(NamedTuple):
    """Changes since the previous push (``seq`` is one more): fills new or changed, book levels
    changed (a level with quantity 0 left the top ``depth``)."""

    sub: str
    seq: int
    fills: list[tuple[Any, ...]]
    levels: list[tuple[Any, ...]]


def _row(*f: Any) -> tuple[Any, ...]:
    return f


#: a fill as its own account sees it: trade id, symbol, my order id, my side (0 buy, 1 sell),
#: price (ticks), quantity (lots), my role (0 maker, 1 taker), final, revisions, undone
FILL_ROW = record(_row, [string(128, 1), SYMBOL, ORDER_ID, one_of(0, 1), uint(MAX_INT), uint(MAX_INT),
                         one_of(0, 1), boolean, uint(1 << 32), boolean])
#: a book level: side (0 bid, 1 ask), price (ticks), quantity (lots), orders
LEVEL_ROW = record(_row, [one_of(0, 1), uint(MAX_INT), uint(), uint(1 << 32)])
FEED_ROWS = 256  # rows of each kind in one push at most (a node fills a push to about 1,100 bytes)
register(22, FeedSubscribe, [string(64, 1), string(32, 1), string(16, 1), string(32), uint(1000),
                             uint(600_000), boolean])
register(23, FeedAck, [string(64), uint(255), string(1024), string(32), uint(600_000), uint(), boolean])
register(24, FeedSnapshot, [string(32, 1), uint(), uint(4096), uint(4096), list_of(FILL_ROW, FEED_ROWS),
                            list_of(LEVEL_ROW, FEED_ROWS)])
register(25, FeedDelta, [string(32, 1), uint(), list_of(FILL_ROW, FEED_ROWS), list_of(LEVEL_ROW, FEED_ROWS)])
ACCOUNT_TYPES |= frozenset({FeedSubscribe, FeedAck, FeedSnapshot, FeedDelta})
_ACCOUNT_TYPE_NOS |= frozenset({22, 23, 24, 25})


# strong-mode shards (core/shards.py): one sequencer group per shard of instruments on the same nodes
# and sockets. Shard 0's messages travel as they always did (a cluster of one shard sends exactly what
# it sent before shards existed); shard s >= 1 wraps each of its peer messages in ``Sharded``.
#: the most sequencer groups a cluster may run (a shard index on the wire is below it; a node's status,
#: one row per shard, stays well inside one datagram)
MAX_SHARDS = 64


class Sharded(NamedTuple):
    """A sequencer message, ``Forward`` or ``ForwardReply`` of sequencer group ``shard`` (>= 1). On
    the wire ``[shard, kind, inner fields]``, ``kind`` the inner message's type number; the inner
    message is validated as itself (``sharded`` builds one)."""

    shard: int
    kind: int
    msg: Any


#: what may travel inside ``Sharded``: the sequencer's messages and the forward pair
_SHARDABLE = (15, 16, 17, 18, 19, 20, 21, 29, 30)


def sharded(shard: int, msg: Any) -> Sharded:
    """``msg`` (a sequencer message, ``Forward`` or ``ForwardReply``) as group ``shard``'s."""
    return Sharded(shard, _TYPE_OF[type(msg)], msg)


def _sharded(v: Any) -> Sharded:
    if type(v) is not list or len(v) != 3:
        raise _fail("Sharded (3 fields)", v)
    shard = uint(MAX_SHARDS - 1)(v[0])
    kind = one_of(*_SHARDABLE)(v[1])
    return Sharded(shard, kind, MESSAGES[kind][1](v[2]))


class LeaderHint(NamedTuple):
    """Sent to a client just before the reply to request ``req`` when this node is not the leader
    of the request's shard: ``leader`` leads shard ``shard`` now, so the client may send that
    shard's next requests there directly (one hop fewer). Only nodes of a sharded cluster send it."""

    req: str
    shard: int
    leader: str


MESSAGES[28] = (Sharded, _sharded)  # (register() would build a flat record)
_TYPE_OF[Sharded] = 28
register(29, TimeoutNow, [uint()])
register(30, ForcedVote, [uint(), uint(), uint()])
register(31, LeaderHint, [string(64), uint(MAX_SHARDS - 1), NODE_ID])
ACCOUNT_TYPES |= frozenset({LeaderHint})
_ACCOUNT_TYPE_NOS |= frozenset({31})
_STAMP_LEN = 6  # ms since the epoch, big-endian: good until the year 10889
_FIXED = len(HEADER) + 1 + _STAMP_LEN + 1  # magic, version, key id, stamp, principal length
#: msgpack bytes of a message body. msgspec's encoder writes the same bytes as ``msgpack.packb(x,
#: use_bin_type=True)`` for every type a message holds (tests/core/test_wire_msgspec.py checks
#: each registered type) and is 4-5x faster on op arrays (docs/performance.md); it raises
#: ``OverflowError`` / ``TypeError`` where packb does, which the shell counts as ``encode_error``.
#: (It also packs a set, which packb refuses; no message holds one.)
_pack: Callable[[Any], bytes] = msgspec.msgpack.Encoder().encode
#: a frame stamped further than this from the receiver's clock is refused as ``stale``: a captured
#: frame can be replayed to a restarted node (whose replay windows are empty) only within it
DEFAULT_REPLAY_WINDOW_MS = 30_000


# ---- codec -----------------------------------------------------------------------------------------
def check_key(key: bytes) -> bytes:
    if not isinstance(key, bytes | bytearray) or not 16 <= len(key) <= 64:
        raise ValueError("the cluster key must be 16 to 64 bytes")
    return bytes(key)


@functools.lru_cache(maxsize=256)  # every frame encoded asks: one BLAKE2b per key, not per frame
def key_id(key: bytes) -> int:
    """A key's one-byte id, sent in the header so a receiver holding several keys (a rotation in
    progress) verifies one MAC, not one per key. A keyed hash of nothing: it reveals nothing usable."""
    return hashlib.blake2b(b"gossipbook key id", key=key, digest_size=1).digest()[0]


Ring = tuple[bytes, ...]  # a principal's keys, the first one primary (what it signs with)


def _ring(keys: bytes | Sequence[bytes] | None) -> Ring:
    if keys is None:
        return ()
    if isinstance(keys, bytes | bytearray):
        return (bytes(keys),)
    return tuple(bytes(k) for k in keys)


class Keys:
    """The credentials a party verifies frames with, and what binds a frame to one cluster and one
    destination.

    - ``peer``: the peer keyring (nodes only; empty for a client): the first key signs, every key
      verifies (rotation: install a key everywhere, make it primary, remove the old one).
    - ``accounts``: account -> its credential(s), same rule (a node knows every account's; a client
      only its own).
    - ``label``: the cluster's name, mixed into every MAC: a frame of another cluster that happens
      to share a key is refused.
    - ``me``: this party's id (a node id, or a client's sender id): frames are verified as addressed
      to it, so a frame captured on its way to one node is refused by every other.
    - ``window_ms``: how far a frame's stamp may be from this party's clock (``stale`` beyond).
    Replace the object, or ``accounts`` / ``peer``, to reload; lookups are cached per ring.
    """

    __slots__ = ("_peer", "_accounts", "label", "me", "window_ms", "_by_id", "_bound")

    def __init__(self, peer: bytes | Sequence[bytes] | None, accounts: Mapping[str, Any] | None = None,
                 label: str = "", me: str = "", window_ms: int = DEFAULT_REPLAY_WINDOW_MS) -> None:
        self._peer: Ring = _ring(peer)
        self._accounts: Mapping[str, Any] = accounts if accounts is not None else {}
        self.label, self.me, self.window_ms = label, me, window_ms
        self._by_id: dict[str | None, dict[int, list[bytes]]] = {}
        self._bound: tuple[str, str, bytes] = ("", "", _bind("", ""))

    def bound(self) -> bytes:
        """What the MAC of a frame addressed to ``me`` in ``label`` covers first (cached)."""
        b = self._bound
        if b[0] != self.label or b[1] != self.me:
            b = self._bound = (self.label, self.me, _bind(self.label, self.me))
        return b[2]

    @property
    def peer(self) -> bytes | None:
        """The primary peer key (what this node signs with), or None."""
        return self._peer[0] if self._peer else None

    @peer.setter
    def peer(self, keys: bytes | Sequence[bytes] | None) -> None:
        self._peer = _ring(keys)
        self._by_id.pop(None, None)

    @property
    def peer_ring(self) -> Ring:
        return self._peer

    @property
    def accounts(self) -> Mapping[str, Any]:
        return self._accounts

    @accounts.setter
    def accounts(self, accounts: Mapping[str, Any]) -> None:
        self._accounts = accounts
        self._by_id = {None: self._by_id[None]} if None in self._by_id else {}

    def account_ring(self, account: str) -> Ring:
        return _ring(self._accounts.get(account))

    def signing_key(self, account: str | None = None, kid: int | None = None) -> bytes | None:
        """The key to sign with: the principal's primary, or the key with id ``kid`` (a reply goes
        out under the key its request came in with, so a client not yet given a new key still
        verifies it)."""
        if kid is not None:
            found = self.candidates(account, kid)
            if found:
                return found[0]
        ring = self._peer if account is None else self.account_ring(account)
        return ring[0] if ring else None

    def candidates(self, account: str | None, kid: int) -> list[bytes]:
        by = self._by_id.get(account)
        if by is None:
            by = {}
            for k in (self._peer if account is None else self.account_ring(account)):
                by.setdefault(key_id(k), []).append(k)
            if account is None or account in self._accounts:
                self._by_id[account] = by
        return by.get(kid, [])

    def __repr__(self) -> str:  # never the secrets
        return (f"Keys(peer={len(self._peer)} key(s), accounts={sorted(self._accounts)}, label={self.label!r}, "
                f"me={self.me!r})")


def _bind(label: str, dst: str) -> bytes:
    """What a frame's MAC covers besides the frame itself: the cluster and the destination."""
    lb, db = label.encode(), dst.encode()
    return b"%d:%s%d:%s" % (len(lb), lb, len(db), db)


def _tag(key: bytes, data: bytes | memoryview, bound: bytes) -> bytes:
    h = hashlib.blake2b(bound, key=key, digest_size=TAG_LEN)
    h.update(data)
    return h.digest()


def encode(msg: Any, sender: str, counter: int, key: bytes, account: str | None = None, *,
           dst: str = "", label: str = "", stamp_ms: int = 0) -> bytes:
    """One authenticated frame for ``msg``: under the peer key, or, with ``account``, under that
    account's credential ``key``; bound to cluster ``label`` and destination ``dst`` (the MAC covers
    both, the frame carries neither) and stamped with the sender's clock ``stamp_ms``."""
    fields = msg if isinstance(msg, tuple) else [getattr(msg, f) for f in msg.__slots__]
    if type(msg) is Sharded:  # [shard, the inner type, its fields]
        inner = msg.msg
        fields = [msg.shard, _TYPE_OF[type(inner)],  # (the kind is the inner message's, whatever ``kind`` says)
                  list(inner) if isinstance(inner, tuple) else [getattr(inner, f) for f in inner.__slots__]]
    return _seal(_pack([_TYPE_OF[type(msg)], sender, counter, *fields]), key, account, dst, label, stamp_ms)


def _seal(body: bytes, key: bytes, account: str | None, dst: str, label: str, stamp_ms: int) -> bytes:
    """The frame around an already packed ``body``: header, principal, and the MAC over both."""
    name = account.encode("ascii") if account else b""
    if len(name) > 255:
        raise ValueError(f"account name of {len(name)} bytes (at most 255)")
    head = (HEADER + bytes([key_id(key)]) + stamp_ms.to_bytes(_STAMP_LEN, "big") + bytes([len(name)]) + name
            + body)
    return head + _tag(key, head, _bind(label, dst))


def decode(data: bytes, keys: Keys | bytes, max_size: int = MAX_DATAGRAM, *, now_ms: int | None = None) -> Frame:
    """Authenticate, unpack and validate one frame addressed to ``keys.me`` in cluster ``keys.label``;
    ``WireError`` on anything wrong (``reason`` says what: ``auth`` for a wrong key, another
    destination or cluster, or an unknown account; ``stale`` for a stamp more than
    ``keys.window_ms`` from ``now_ms`` (checked when given); ``not_peer`` for a node-to-node type
    under an account credential; ``not_account`` for a client type under the peer key)."""
    n = len(data)
    if n > max_size:
        raise WireError(f"frame of {n} bytes exceeds {max_size}", reason="oversized")
    if n < _FIXED + 1 + TAG_LEN:
        raise WireError(f"frame of {n} bytes is too short", reason="malformed")
    if data[:2] != MAGIC:
        raise WireError("not a gossipbook frame (bad magic)", reason="malformed")
    if data[2] != VERSION:
        raise WireError(f"wire version {data[2]} (this node speaks {VERSION})", reason="version")
    if not isinstance(keys, Keys):
        keys = Keys(keys)
    kid = data[3]
    plen = data[_FIXED - 1]
    start = _FIXED + plen
    account: str | None = None
    if plen:
        if n < start + 1 + TAG_LEN:
            raise WireError(f"frame of {n} bytes is too short", reason="malformed")
        try:
            account = data[_FIXED:start].decode("ascii")
        except UnicodeDecodeError:
            raise WireError("account name is not ASCII", reason="malformed") from None
    cands = keys.candidates(account, kid)
    if not cands:
        if account is not None:
            raise WireError(f"unknown or revoked account {account[:48]!r} (or no key with id {kid})",
                            reason="auth")
        raise WireError(f"no peer key with id {kid} here (wrong cluster key, or a rotation not installed "
                        f"here yet)", reason="auth")
    mv = memoryview(data)
    bound = keys.bound()
    head, tag = mv[:-TAG_LEN], mv[-TAG_LEN:]
    for k in cands:
        if hmac.compare_digest(_tag(k, head, bound), tag):
            break
    else:
        raise WireError("authentication failed (wrong key, another cluster or destination, or a tampered frame)",
                        reason="auth")
    stamp_ms = int.from_bytes(data[4:4 + _STAMP_LEN], "big")
    if now_ms is not None and abs(stamp_ms - now_ms) > keys.window_ms:
        raise WireError(f"frame stamped {(stamp_ms - now_ms) / 1e3:+.1f} s from this clock (window "
                        f"{keys.window_ms / 1e3:g} s): a replay, or a clock far off", reason="stale")
    if account is None and data[start:start + 2] == _OP_BATCH_HEAD:
        try:
            _, sender, counter, ops = _decode_op_batch(mv[start:-TAG_LEN])
        except Exception:  # (msgspec.MsgspecError) not a valid op batch: the general way names what is wrong
            pass
        else:
            return Frame(sender, counter, OpBatch([Op(*o) for o in ops]), None, kid, stamp_ms)
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
    return Frame(sender, counter, msg, account, kid, stamp_ms)


def pack_ops(ops: Sequence[Op]) -> list[bytes]:
    """Each op packed alone (msgpack bytes). A node pushing one batch to several peers packs it
    once and hands the result to ``encode_packed_ops`` per peer (the MAC differs per peer, the ops'
    bytes do not)."""
    return [_pack(op) for op in ops]


def _array_header(n: int) -> bytes:
    """msgpack's array header for ``n`` items, as ``packb`` writes it (fixarray, array16, array32)."""
    if n < 16:
        return bytes([0x90 | n])
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def encode_ops(ops: Sequence[Op], sender: str, counter: int, key: bytes, mtu: int = DEFAULT_MTU, *,
               dst: str = "", label: str = "", stamp_ms: int = 0) -> list[bytes]:
    """Pack ops into as few ``OpBatch`` frames as fit under ``mtu`` bytes each (in order)."""
    return encode_packed_ops(pack_ops(ops), sender, counter, key, mtu, dst=dst, label=label, stamp_ms=stamp_ms)


def encode_packed_ops(packed: Sequence[bytes], sender: str, counter: int, key: bytes, mtu: int = DEFAULT_MTU, *,
                      dst: str = "", label: str = "", stamp_ms: int = 0) -> list[bytes]:
    """``encode_ops`` for ops already packed by ``pack_ops``: the same frames, byte for byte.

    A frame's body is ``[1, sender, counter, [op, ...]]``; it is assembled from its parts (array
    header, type, sender, counter, the ops' array header and their bytes), which is what
    ``packb`` of the whole would write, so no op is packed twice. The split by ``mtu`` is the one
    this function always made: sized at the largest counter any frame here can carry (msgpack
    widens ints at 2**7, 2**8, 2**16, 2**32, so a later frame's counter may be longer), +3 for the
    ops array header, which may grow; an op larger than ``mtu`` alone still goes, in a frame of its own."""
    overhead = _FIXED + len(_pack([1, sender, counter + max(len(packed) - 1, 0), []])) + TAG_LEN + 3
    prefix = b"\x94\x01" + _pack(sender)
    frames: list[bytes] = []

    def frame(part: Sequence[bytes]) -> bytes:
        body = b"".join((prefix, _pack(counter + len(frames)), _array_header(len(part)), *part))
        return _seal(body, key, None, dst, label, stamp_ms)

    if not packed:
        return frames
    if overhead + sum(map(len, packed)) <= mtu or len(packed) == 1:  # (the usual case: one frame)
        return [frame(packed)]
    start, size = 0, overhead
    for i, blob in enumerate(packed):
        s = len(blob)
        if i > start and size + s > mtu:
            frames.append(frame(packed[start:i]))
            start, size = i, overhead
        size += s
    frames.append(frame(packed[start:]))
    return frames


class ReplayGuard:
    """Per-sender sliding window over frame counters (RFC 4303's anti-replay idea).

    ``accept`` is True exactly once per ``(sender, counter)`` within the window; counters more than
    ``window`` below the highest seen are refused as too old. At most ``max_senders`` windows are
    kept (least recently used dropped first, counted in ``evicted``): senders a peer can make up
    (clients) cost bounded memory; a dropped window only re-opens what ``stale`` still bounds.
    """

    __slots__ = ("window", "max_senders", "evicted", "_top", "_seen")

    def __init__(self, window: int = 1024, max_senders: int | None = None) -> None:
        self.window = window
        self.max_senders = max_senders
        self.evicted = 0
        self._top: dict[str, int] = {}
        self._seen: dict[str, int] = {}  # bitmap: bit i set = counter (top - i) seen

    def accept(self, sender: str, counter: int) -> bool:
        top = self._top.get(sender)
        if top is None:
            if self.max_senders is not None and len(self._top) >= self.max_senders:
                old = next(iter(self._top))  # dicts keep insertion order: the least recently refreshed
                self.forget(old)
                self.evicted += 1
            self._top[sender], self._seen[sender] = counter, 1
            return True
        if counter > top:
            shift = counter - top
            self._seen[sender] = ((self._seen[sender] << shift) | 1) & ((1 << self.window) - 1) if shift < self.window else 1
            if self.max_senders is not None:  # refresh its place in the LRU order
                del self._top[sender]
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

    def __len__(self) -> int:
        return len(self._top)


class TimeWindowGuard:
    """Replay guard for time-based counters: a sender's counter is its clock in ns (one above its
    last when it sends faster than that), so counters only grow, across its restarts too.

    ``check(sender, counter, now)`` returns None the first time it sees ``(sender, counter)`` and a
    drop reason otherwise:
    - ``future_counter``: more than ``ahead_ns`` ahead of this clock. A peer-key holder can name any
      sender; without this bound one forged frame at a huge counter would move the window past every
      counter the real sender will ever use and silence it for good.
    - ``replay``: seen already, or more than ``lookback_ns`` below the highest counter accepted.
      ``lookback_ns`` is twice ``ahead_ns``, so a forged counter that passed the bound still leaves
      the real sender's counters inside the window: forgery cannot silence a peer, and reordering
      up to ``lookback_ns`` costs nothing.
    Memory: the counters seen inside the window, at most ``max_per_sender`` per sender (beyond it
    the oldest go and the window's floor rises), at most ``max_senders`` senders (least recently
    used dropped, counted in ``evicted``); the frame's stamp (``stale``) bounds what a dropped window
    re-opens.
    """

    __slots__ = ("ahead_ns", "lookback_ns", "max_senders", "max_per_sender", "evicted", "_state")

    def __init__(self, ahead_ns: int = 1_500_000_000, lookback_ns: int | None = None,
                 max_senders: int | None = None, max_per_sender: int = 200_000) -> None:
        self.ahead_ns = ahead_ns
        self.lookback_ns = 2 * ahead_ns if lookback_ns is None else lookback_ns
        self.max_senders = max_senders
        self.max_per_sender = max_per_sender
        self.evicted = 0
        # sender -> [top, floor, seen set, seen in arrival order]
        self._state: dict[str, list[Any]] = {}

    def check(self, sender: str, counter: int, now: int) -> str | None:
        if counter > now + self.ahead_ns:
            return "future_counter"
        st = self._state.get(sender)
        if st is None:
            if self.max_senders is not None and len(self._state) >= self.max_senders:
                del self._state[next(iter(self._state))]
                self.evicted += 1
            self._state[sender] = [counter, counter - self.lookback_ns, {counter}, deque((counter,))]
            return None
        top, floor, seen, order = st
        if counter <= floor or counter in seen:
            return "replay"
        seen.add(counter)
        order.append(counter)
        if counter > top:
            st[0] = top = counter
            floor = top - self.lookback_ns
            while order and order[0] <= floor:
                seen.discard(order.popleft())
        while len(order) > self.max_per_sender:
            old = order.popleft()
            seen.discard(old)
            floor = max(floor, old)
        st[1] = max(st[1], floor)
        if self.max_senders is not None:  # refresh its place in the LRU order
            del self._state[sender]
            self._state[sender] = st
        return None

    def __len__(self) -> int:
        return len(self._state)


def trade_row(t: Trade) -> list[Any]:
    """A trade as ``ClientReply`` / ``ForwardReply`` carry it: ``[trade_id, price, qty, maker, taker]``."""
    return [t.trade_id, t.price, t.qty, t.maker, t.taker]


REPLY_CODES = {0: "ok", 1: "invalid order", 2: "unknown order", 3: "clock out of sync", 4: "no quorum",
               5: "timeout", 6: "unknown instrument", 7: "storage unavailable", 8: "bad request",
               9: "not ready", 10: "not owner", 11: "rate limited", 12: "address check", 13: "clock bound",
               14: "risk limit"}
LEVELS = ("accepted", "replicated", "final")


# ---- snapshots ----------------------------------------------------------------------------------------
_RESTING = record(lambda *f: tuple(f), [one_of(0, 1), uint(MAX_INT), ORDER_ID, uint(MAX_INT), ACCOUNT])
_FILL = record(lambda *f: Trade(*f), [string(128, 1), SYMBOL, uint(MAX_INT), uint(MAX_INT), ORDER_ID, ORDER_ID,
                                       one_of(0, 1), ACCOUNT, ACCOUNT])
_SNAPSHOT = record(lambda *f: f, [VV, map_of(SYMBOL, list_of(_RESTING, 10_000_000), 4096), uint(),
                                  binary(64), record(lambda *f: tuple(f), [uint(), uint(1 << 32), string(64)]),
                                  map_of(string(130), ORDER_ID, 10_000_000),
                                  map_of(ORDER_ID, list_of(_FILL, 1_000_000), 10_000_000)])


_SNAPSHOT_CONFIG = list_of(OP_CHECK, 4096)  # config_epoch.MAX_CHANGES


def snapshot_to_bytes(snap: Any) -> bytes:
    """A ``replica.Snapshot`` as msgpack (sent in ``SnapshotChunk`` pieces, persisted by storage)."""
    fills = {oid: [list(t) for t in ts] for oid, ts in snap.fills.items()}
    risk = getattr(snap, "risk", None)
    config = getattr(snap, "config", None)
    tail = [risk or None, [list(op) for op in config]] if config else ([risk] if risk else [])
    return msgpack.packb([snap.base_vv, snap.books, snap.trades, snap.chain, list(snap.last_key), snap.reqs,
                          fills] + tail, use_bin_type=True)


def snapshot_from_bytes(data: bytes) -> Any:
    """Parse and validate a snapshot; ``WireError`` on anything wrong."""
    from .replica import Snapshot

    try:
        raw = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True, max_ext_len=0)
    except Exception as e:
        raise WireError(f"undecodable snapshot: {type(e).__name__}", reason="bad_snapshot") from None
    if isinstance(raw, list) and len(raw) == 6:
        raw.append({})  # written before snapshots kept compacted requests' fills
    config: list[Any] = []
    if isinstance(raw, list) and len(raw) == 9:  # membership ops (config_epoch.py), then risk or None
        config = _SNAPSHOT_CONFIG(raw.pop())
        if any(op.kind != 9 for op in config):
            raise WireError("a snapshot's configuration holds an op that is no membership op", reason="bad_snapshot")
        if raw[-1] is None:
            raw.pop()
    risk: list[Any] = []
    if isinstance(raw, list) and len(raw) == 8:  # risk limits' state (risk.py): absent when there is none
        risk = raw.pop()
        if type(risk) is not list or len(risk) != 2:
            raise WireError("bad risk state in snapshot", reason="bad_snapshot")
        _risk_snapshot_check(risk)
    vv, books, trades, chain, last_key, reqs, fills = _SNAPSHOT(raw)
    return Snapshot(vv, books, trades, chain, last_key, reqs, fills, risk, config)


def _risk_snapshot_check(raw: list[Any]) -> None:
    """Validate a snapshot's risk part (``RiskLedger.to_wire``) by parsing it once."""
    from .risk import RiskState, positions_from_wire

    RiskState.from_wire(raw[0])
    positions_from_wire(raw[1])
