"""Properties of the wire format (``gossipbook.core.wire``), version 4.

What must hold (the module's "rules that hold"): a frame is ``MAGIC (2) | VERSION (1) | KEYID (1) |
STAMP (6, ms, big-endian) | PLEN (1) | PRINCIPAL | msgpack body | tag (16)``, the tag keyed BLAKE2b-128
over the cluster label and the destination's id (length-prefixed, never sent) and then everything
before the tag; ``KEYID`` names the key of the principal's ring that signed, so a receiver computes
one MAC whatever the size of its ring; an empty principal means the peer key (nodes only), a
non-empty one names an account whose own credential signs the frame; under an account credential
only the client types (``ClientSubmit``, ``ClientReply``, ``ClientQuery``, ``QueryReply``) are valid
(anything else is ``not_peer``), under the peer key never (``not_account``), and an unknown account, a
credential that is not the named account's, a key id nobody here holds, another destination or
another cluster is ``auth``; a stamp further than ``window_ms`` from the receiver's clock is ``stale``
(checked only once the tag verified); every registered message survives encode/decode unchanged
under the principal it belongs to; ``decode`` either returns a fully validated ``Frame`` or raises
``WireError`` -- whatever the bytes, whether the tag is wrong (random bytes, truncations, flipped
bits) or right (a body built or mutated by someone holding the key), and a replica fed only what
decodes never changes on a rejected frame (a client's credential cannot make it take an
``OpBatch``); ``Keys`` never shows a secret, verifies with every key of a ring and signs with the
first (or the one a request came in under); ``encode_ops`` packs ops in order into frames no larger
than the MTU; ``ReplayGuard`` accepts each ``(sender, counter)`` at most once inside its sliding
window, and keeps at most ``max_senders`` windows (least recently refreshed dropped, counted).

The layout is written down here a second time (``seal``, ``split``, ``bind``, ``kid``), independent
of wire.py: a frame built here must decode there and the other way round. So is the shape of every
message, as a small test-side schema (``SCHEMA``). Valid values (for round trips) and invalid ones
(for rejection) are both derived from it, so a new message type needs one schema entry, and a type
registered without one fails ``test_every_message_type_has_a_schema``. Which types an account may
sign is written down here too (``CLIENT_TYPE_NOS``).

Unless a test says otherwise, frames are addressed to ``ME`` in cluster ``LABEL`` and stamped
``STAMP`` (``to_me``, ``sign``, ``seal``), and ``rejects`` decodes them the way a node does: with
``KEYS`` (bound to ``LABEL`` and ``ME``) and its clock at ``NOW_MS``, so the stale check is live.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from gossipbook.core import wire
from gossipbook.core.errors import WireError
from gossipbook.core.membership import Ack, IndirectAck, PingReq, Probe, Update
from gossipbook.core.membership import Gossip as MemberGossip
from gossipbook.core.ops import Op
from gossipbook.core.replica import Replica
from gossipbook.core.sequencer import (
    AppendEntries,
    AppendReply,
    Entry,
    ForcedVote,
    InstallSnapshot,
    RequestVote,
    TimeoutNow,
    VoteReply,
)
from gossipbook.core.venuecheck import VenueInfo, VenueQuery
from gossipbook.core.wire import (
    ACCOUNT_TYPES,
    DEFAULT_REPLAY_WINDOW_MS,
    MAGIC,
    MAX_DATAGRAM,
    MAX_SHARDS,
    MESSAGES,
    TAG_LEN,
    VERSION,
    ClientQuery,
    ClientReply,
    ClientSubmit,
    FeedAck,
    FeedDelta,
    FeedSnapshot,
    FeedSubscribe,
    Forward,
    ForwardReply,
    Frame,
    Heartbeat,
    Keys,
    LeaderHint,
    OpBatch,
    Pull,
    QueryReply,
    ReplayGuard,
    Sharded,
    SnapshotChunk,
    Summary,
    decode,
    encode,
    encode_ops,
    key_id,
)
from gossipbook.workload.history import make_history

KEY = bytes(range(32))  # the peer key: nodes only
ALICE_KEY = bytes(range(100, 132))  # account credentials: each client holds only its own
BOB_KEY = bytes(range(200, 232))
ACCOUNTS = {"alice": ALICE_KEY, "bob": BOB_KEY}
LABEL = "gb-test"  # the cluster every frame here belongs to, unless a test says otherwise
ME = "n2"  # the node every frame here is addressed to
STAMP = 1_765_432_109_876  # the senders' clock (ms since the epoch) ...
NOW_MS = STAMP + 1_234  # ... and the receiver's, a little ahead: well inside the window
WINDOW = DEFAULT_REPLAY_WINDOW_MS
KEYS = Keys(KEY, ACCOUNTS, label=LABEL, me=ME)  # what node ME verifies with
#: the types an account credential signs, and only those: a client's requests and a node's replies
#: to it (ClientSubmit, ClientReply, ClientQuery, QueryReply), and the feeds' subscribe, ack and pushes
#: (22-25). Written here independently of wire.py.
CLIENT_TYPE_NOS = frozenset({5, 6, 7, 8}) | frozenset({22, 23, 24, 25}) | frozenset({31})
U64 = (1 << 64) - 1
MAX_INT = 1 << 53
BIG = 1 << 24  # a ``max_size`` for tests that must reach validation whatever the frame's size
STAMP_LEN = 6
#: where things sit in a v4 frame: magic 0-1, version 2, key id 3, stamp 4-9, PLEN 10, principal 11..
KID_AT, STAMP_AT, PLEN_AT, NAME_AT = 3, 4, 10, 11


def is_client_type(type_no: Any) -> bool:
    return type(type_no) is int and type_no in CLIENT_TYPE_NOS


def type_no_of(msg: Any) -> int:
    return next(t for t, (cls, _) in MESSAGES.items() if cls is type(msg))


def credential(type_no: Any) -> tuple[bytes, str]:
    """``(key, principal)`` that properly signs a frame of ``type_no``: alice's credential for a
    client type, the peer key (empty principal) for everything else."""
    return (ALICE_KEY, "alice") if is_client_type(type_no) else (KEY, "")


def to_me(msg: Any, sender: str, counter: int, key: bytes, account: str | None = None, *, dst: str = ME,
          label: str = LABEL, stamp_ms: int = STAMP) -> bytes:
    """``wire.encode``, addressed to ``ME`` in cluster ``LABEL`` and stamped ``STAMP`` unless told."""
    return encode(msg, sender, counter, key, account=account, dst=dst, label=label, stamp_ms=stamp_ms)


def sign(msg: Any, sender: str = "n1", counter: int = 1, **where: Any) -> bytes:
    """``msg`` encoded under the principal it belongs to (see ``credential``); ``where``: ``to_me``'s
    ``dst``, ``label``, ``stamp_ms``."""
    key, principal = credential(type_no_of(msg))
    return to_me(msg, sender, counter, key, account=principal or None, **where)


def kid(key: bytes) -> int:
    """A key's one-byte id, derived here independently: keyed BLAKE2b-8 of a fixed string."""
    return hashlib.blake2b(b"gossipbook key id", key=key, digest_size=1).digest()[0]


def bind(label: str, dst: str) -> bytes:
    """What the tag covers before the frame (and the frame never carries): ``len:label len:dst``,
    lengths in bytes of UTF-8, so no two (label, destination) pairs bind alike."""
    lb, db = label.encode(), dst.encode()
    return str(len(lb)).encode() + b":" + lb + str(len(db)).encode() + b":" + db


def tag(key: bytes, head: bytes, label: str = LABEL, dst: str = ME) -> bytes:
    return hashlib.blake2b(bind(label, dst) + head, key=key, digest_size=TAG_LEN).digest()


def seal(body: bytes, key: bytes = KEY, version: int = VERSION, principal: str | bytes = "", *,
         key_no: int | None = None, stamp_ms: int = STAMP, label: str = LABEL, dst: str = ME) -> bytes:
    """A v4 frame around ``body`` with a correct tag under ``key`` for destination ``dst`` in
    cluster ``label``, naming ``principal`` (empty: the peer key) and key id ``key_no`` (default:
    ``key``'s own): what a party holding that key can send."""
    name = principal.encode("ascii") if isinstance(principal, str) else principal
    key_no = kid(key) if key_no is None else key_no
    head = (MAGIC + bytes([version, key_no]) + stamp_ms.to_bytes(STAMP_LEN, "big") + bytes([len(name)]) + name
            + body)
    return head + tag(key, head, label, dst)


def seal_as(type_no: Any, body: bytes, version: int = VERSION) -> bytes:
    """``seal`` under the principal a frame of ``type_no`` belongs to."""
    key, principal = credential(type_no)
    return seal(body, key, version, principal)


def split(frame: bytes) -> tuple[bytes, bytes]:
    """``(principal, body)`` of a frame built by ``encode``."""
    plen = frame[PLEN_AT]
    return frame[NAME_AT:NAME_AT + plen], frame[NAME_AT + plen:-TAG_LEN]


def resealed(frame: bytes | bytearray, key: bytes = KEY, label: str = LABEL, dst: str = ME) -> bytes:
    """``frame`` (its header possibly edited) with a fresh, correct tag."""
    head = bytes(frame[:-TAG_LEN])
    return head + tag(key, head, label, dst)


def raw(type_no: Any, *fields: Any, sender: Any = "n1", counter: Any = 1) -> bytes:
    return seal_as(type_no, msgpack.packb([type_no, sender, counter, *fields], use_bin_type=True))


def rejects(data: bytes, reason: str | None = None, max_size: int = MAX_DATAGRAM,
            keys: Keys | bytes = KEYS, now_ms: int | None = NOW_MS) -> WireError:
    """``decode`` must raise ``WireError`` (with ``reason``); its message is one short line."""
    with pytest.raises(WireError) as info:
        decode(data, keys, max_size, now_ms=now_ms)
    err = info.value
    if reason is not None:
        assert err.reason == reason, f"reason {err.reason!r} ({err}), expected {reason!r}"
    text = str(err)
    assert text and "\n" not in text and len(text) < 300, text
    return err


def decode_or_wire_error(data: bytes, max_size: int = MAX_DATAGRAM) -> Frame | None:
    """Anything but a ``Frame`` or a ``WireError`` escaping ``decode`` fails the test."""
    try:
        frame = decode(data, KEYS, max_size, now_ms=NOW_MS)
    except WireError:
        return None
    assert type(frame) is Frame
    return frame


def strict_eq(a: Any, b: Any) -> bool:
    """Equality that also compares types all the way down: here ``1`` and ``True`` differ, as do ``[1]`` and ``(1,)``."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(strict_eq(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(strict_eq(a[k], b[k]) for k in a)
    if dataclasses.is_dataclass(a):
        return all(strict_eq(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    if isinstance(a, float) and a != a:  # NaN (a corrupted inf in a reply's loosely typed trades)
        return b != b
    return a == b


# ---- the schema, written independently of wire.py ------------------------------------------------
@dataclass(frozen=True)
class U:  # unsigned int in [0, hi]
    hi: int = U64


@dataclass(frozen=True)
class S:  # str of min..max characters
    max: int
    min: int = 0


@dataclass(frozen=True)
class B:  # bytes of at most max
    max: int


@dataclass(frozen=True)
class Bool:
    pass


@dataclass(frozen=True)
class One:  # an int from a fixed set
    values: tuple[int, ...]


@dataclass(frozen=True)
class L:  # list of at most max items
    item: Any
    max: int
    gen_max: int = 6  # how long the valid lists hypothesis draws get (frames stay datagram-sized)


@dataclass(frozen=True)
class M:  # map of at most max entries
    key: Any
    value: Any
    max: int
    gen_max: int = 6


@dataclass(frozen=True)
class T:  # a list on the wire, a tuple once decoded
    items: L


@dataclass(frozen=True)
class R:  # positional record built into cls
    cls: Any
    fields: tuple[Any, ...]


@dataclass(frozen=True)
class Plain:  # any plain msgpack value, containers nested at most ``depth`` deep
    depth: int


NODE = S(64, 1)


def _triple(*f: Any) -> tuple[Any, ...]:
    return tuple(f)


OP = R(Op, (U(), U(1 << 32), NODE, U(U64 >> 1), One((1, 2, 3, 4, 5, 6, 7, 8, 9)), S(32), S(96), One((0, 1)), U(MAX_INT),
            U(MAX_INT), One((0, 1, 2, 3)), S(64), S(64)))
SUBMIT = (S(64, 1), One((1, 2, 3, 4, 5, 7, 9)), S(32), S(96), One((0, 1)), U(MAX_INT), U(MAX_INT), One((0, 1, 2, 3)),
          One((0, 1, 2)), U(600_000))
REPLY = (S(64), U(255), S(1024), S(96), U(2), L(L(Plain(1), 8), 1024))
VV = M(NODE, U(U64 >> 1), 1024)
UPDATES = T(L(R(Update, (NODE, U(), One(("alive", "suspect", "dead", "left")), NODE)), 256))
FILL = R(_triple, (S(128, 1), S(32, 1), S(96), One((0, 1)), U(MAX_INT), U(MAX_INT), One((0, 1)), Bool(), U(1 << 32),
                   Bool()))
LEVEL = R(_triple, (One((0, 1)), U(MAX_INT), U(), U(1 << 32)))

SCHEMA: dict[type, tuple[Any, ...]] = {
    OpBatch: (L(OP, 4096),),
    Summary: (VV, Bool(), VV),
    Pull: (L(R(_triple, (NODE, U(), U())), 1024),),
    Heartbeat: (U(), U(1 << 32), U(), VV),
    ClientSubmit: SUBMIT,
    ClientReply: REPLY,
    ClientQuery: (S(64, 1), S(16, 1), S(32), U(1000)),
    QueryReply: (S(64), U(255), S(1024), Plain(6)),
    SnapshotChunk: (U(), U(1 << 20), U(1 << 20), B(MAX_DATAGRAM)),
    Probe: (U(), U(), U(), UPDATES, B(8)),  # + the sender's venue fingerprint (venuecheck.py)
    Ack: (U(), U(), U(), U(), U(), UPDATES, B(8)),
    PingReq: (U(), NODE, U(), UPDATES),
    IndirectAck: (U(), NODE, U(), U(), UPDATES),
    MemberGossip: (U(), UPDATES),
    VenueQuery: (B(8),),  # 26, 27: a venue fingerprint, and one with the venue's description
    VenueInfo: (B(8), B(60_000)),
    # strong mode: an entry's value is () for the leader's no-op, (op,) for a client op
    RequestVote: (U(), U(), U(), Bool()),
    VoteReply: (U(), Bool(), Bool(), NODE),
    AppendEntries: (U(), U(), U(), U(), T(L(R(Entry, (U(), T(L(OP, 1)))), 1024))),
    AppendReply: (U(), Bool(), U(), U()),
    InstallSnapshot: (U(), U(), U(), U(), U(), B(MAX_DATAGRAM)),
    Forward: (*SUBMIT, S(64)),  # + the account the follower verified the submit for
    ForwardReply: (S(130), *REPLY[1:]),  # req: "<account>/<req>"
    # feeds: a fill row and a book level are records decoded as tuples
    FeedSubscribe: (S(64, 1), S(32, 1), S(16, 1), S(32), U(1000), U(600_000), Bool()),
    FeedAck: (S(64), U(255), S(1024), S(32), U(600_000), U(), Bool()),
    FeedSnapshot: (S(32, 1), U(), U(4096), U(4096), L(FILL, 256), L(LEVEL, 256)),
    FeedDelta: (S(32, 1), U(), L(FILL, 256), L(LEVEL, 256)),
    # strong-mode shards (core/shards.py): group s's peer messages inside ``Sharded`` (``Forward``, the
    # widest, stands for every inner kind here: a NamedTuple, so the raw-field tests can pack it),
    # leadership transfer, a client's leader hint
    Sharded: (U(MAX_SHARDS - 1), One((20,)), R(Forward, (*SUBMIT, S(64)))),
    TimeoutNow: (U(),),
    ForcedVote: (U(), U(), U()),
    LeaderHint: (S(64), U(MAX_SHARDS - 1), NODE),
}

TEXT = st.characters(codec="utf-8")
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(1 << 63), U64),
                    st.floats(allow_nan=False), st.text(TEXT, max_size=20), st.binary(max_size=20))


def plain_values(depth: int) -> st.SearchStrategy[Any]:
    if depth == 0:
        return SCALARS
    inner = st.deferred(lambda: plain_values(depth - 1))
    return st.one_of(SCALARS, st.lists(inner, max_size=3),
                     st.dictionaries(st.text(TEXT, max_size=256), inner, max_size=3))


def valid(spec: Any) -> st.SearchStrategy[Any]:
    """Values the spec admits, boundaries included."""
    match spec:
        case U(hi):
            return st.integers(0, hi)
        case S(mx, mn):
            return st.text(TEXT, min_size=mn, max_size=mx)
        case B(mx):
            return st.binary(max_size=min(mx, 2048))
        case Bool():
            return st.booleans()
        case One(values):
            return st.sampled_from(values)
        case L(item, mx, gen_max):
            return st.lists(valid(item), max_size=min(mx, gen_max))
        case M(k, v, mx, gen_max):
            return st.dictionaries(valid(k), valid(v), max_size=min(mx, gen_max))
        case T(items):
            return valid(items).map(tuple)
        case R(cls, fields):
            return st.tuples(*map(valid, fields)).map(lambda f: cls(*f))
        case Plain(depth):
            return plain_values(depth)
    raise AssertionError(f"no strategy for spec {spec!r}")


def minimal(spec: Any, i: int = 0) -> Any:
    """A small valid value (the ``i``-th of a family, so map keys can differ)."""
    match spec:
        case U():
            return i
        case S(_mx, mn):
            return str(i).rjust(max(mn, 1), "x") if mn else ""
        case B():
            return b""
        case Bool():
            return False
        case One(values):
            return values[0]
        case L() | T():
            return []
        case M():
            return {}
        case Plain():
            return None
        case R(_cls, fields):
            return [minimal(f) for f in fields]
    raise AssertionError(spec)


NOT_INT = st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False), st.text(max_size=3),
                    st.binary(max_size=3), st.just([1]))


def invalid(spec: Any) -> st.SearchStrategy[Any]:
    """Wire values (before packing) the spec must refuse: wrong type, out of range, too long."""
    match spec:
        case U(hi):
            bad = [NOT_INT, st.integers(-(1 << 63), -1)]
            if hi < U64:
                bad.append(st.integers(hi + 1, U64))
            return st.one_of(bad)
        case S(mx, mn):
            bad = [st.text(TEXT, min_size=mx + 1, max_size=mx + 4), st.integers(0, 9), st.none(),
                   st.binary(min_size=mn, max_size=mn + 2), st.just([minimal(spec)])]
            if mn:
                bad.append(st.just(""))
            return st.one_of(bad)
        case B(mx):
            return st.one_of(st.text(max_size=3), st.integers(0, 9), st.none(), st.just(b"\0" * (mx + 1)))
        case Bool():
            return st.one_of(st.integers(0, 1), st.none(), st.text(max_size=2), st.just([True]))
        case One(values) if isinstance(values[0], str):
            return st.one_of(st.text(max_size=20).filter(lambda v: v not in values), st.integers(0, 3), st.none())
        case One(values):
            return st.one_of(st.integers(-(1 << 63), U64).filter(lambda v: v not in values),
                             st.sampled_from(values).map(str), st.just(values[0] == 1), st.none())
        case L(item, mx):
            return st.one_of(
                st.just({}), st.integers(0, 9), st.text(max_size=3),
                st.just([minimal(item, 0)] * (mx + 1)),
                st.tuples(st.lists(valid(item), max_size=2), invalid(item)).map(lambda t: [*t[0], t[1]]),
            )
        case M(k, v, mx):
            return st.one_of(
                st.just([]), st.integers(0, 9),
                st.just({minimal(k, i): minimal(v) for i in range(mx + 1)}),
                st.tuples(invalid(k).filter(_hashable), valid(v)).map(lambda t: {t[0]: t[1]}),
                st.tuples(valid(k), invalid(v)).map(lambda t: {t[0]: t[1]}),
            )
        case T(items):
            return invalid(items)
        case R(_cls, fields):
            full = st.tuples(*(valid(f) for f in fields)).map(list)
            return st.one_of(
                st.just({}), st.integers(0, 9),
                full.map(lambda f: f[:-1]),  # a field short
                full.map(lambda f: [*f, 0]),  # a field too many
                _replace_one(fields),
            )
        case Plain(depth):
            nest = st.integers(depth + 1, depth + 30).map(_nested)
            return st.one_of(nest, st.just({1: 1}), st.just({b"k": 1}), st.just({"k" * 257: 1}),
                             st.just(msgpack.ExtType(5, b"x")), st.just([msgpack.ExtType(1, b"")]))
    raise AssertionError(spec)


def _hashable(v: Any) -> bool:
    try:
        hash(v)
    except TypeError:
        return False
    return True


def _nested(depth: int) -> Any:
    """``depth + 1`` lists around a scalar: the scalar sits at depth ``depth + 1``."""
    v: Any = 0
    for _ in range(depth + 1):
        v = [v]
    return v


@st.composite
def _replace_one(draw: st.DrawFn, fields: tuple[Any, ...]) -> list[Any]:
    """Valid fields but one, which gets a value its spec refuses."""
    values = [draw(valid(f)) for f in fields]
    i = draw(st.integers(0, len(fields) - 1))
    values[i] = draw(invalid(fields[i]))
    return values


def messages(cls: type) -> st.SearchStrategy[Any]:
    return st.tuples(*(valid(f) for f in SCHEMA[cls])).map(lambda f: cls(*f))


ANY_MESSAGE = st.one_of([messages(MESSAGES[t][0]) for t in sorted(MESSAGES) if MESSAGES[t][0] in SCHEMA])
SENDERS = valid(NODE)
COUNTERS = st.one_of(st.integers(0, 1000), st.integers(0, U64))
#: any principal the layout can carry (PLEN is one byte; the name is ASCII), real account ids among them
PRINCIPALS = st.one_of(st.sampled_from(sorted(ACCOUNTS)),
                       st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=64),
                       st.text(st.characters(max_codepoint=127), min_size=1, max_size=255))
CREDENTIALS = st.binary(min_size=16, max_size=64)


# ---- round trips ---------------------------------------------------------------------------------
def test_every_message_type_has_a_schema() -> None:
    missing = [f"{t} ({MESSAGES[t][0].__name__})" for t in sorted(MESSAGES) if MESSAGES[t][0] not in SCHEMA]
    assert not missing, f"message types without a test schema in {__name__}.SCHEMA: {', '.join(missing)}"


def test_the_account_types_are_the_client_types() -> None:
    """wire.py's own list agrees with the one written here (what decode enforces is tested below)."""
    assert {MESSAGES[t][0] for t in CLIENT_TYPE_NOS} == {ClientSubmit, ClientReply, ClientQuery, QueryReply,
                                                         FeedSubscribe, FeedAck, FeedSnapshot, FeedDelta,
                                                         LeaderHint}
    assert set(ACCOUNT_TYPES) == {MESSAGES[t][0] for t in CLIENT_TYPE_NOS}


LABELS = st.text(TEXT, max_size=24)
STAMPS = st.one_of(st.integers(0, (1 << 48) - 1), st.sampled_from([0, STAMP, (1 << 48) - 1]))


@pytest.mark.parametrize("type_no", sorted(MESSAGES))
@given(data=st.data(), sender=SENDERS, counter=COUNTERS, label=LABELS, dst=SENDERS, stamp=STAMPS,
       skew=st.integers(-WINDOW, WINDOW))
def test_round_trip(type_no: int, data: st.DataObject, sender: str, counter: int, label: str, dst: str,
                    stamp: int, skew: int) -> None:
    """Every message of every type, under the principal it belongs to, signed by any key of the
    principal's ring, for any destination in any cluster, stamped anywhere the 6 bytes reach and
    received anywhere inside the window: the layout is the documented one, and the frame decodes
    as it was sent, at its destination, with the principal and key id that signed it."""
    cls = MESSAGES[type_no][0]
    if cls not in SCHEMA:
        pytest.fail(f"message type {type_no} ({cls.__name__}) has no schema in {__name__}.SCHEMA: add one")
    msg = data.draw(messages(cls), label="msg")
    key = data.draw(CREDENTIALS, label="signing key")
    ring = data.draw(st.lists(CREDENTIALS, max_size=2).flatmap(
        lambda others: st.integers(0, len(others)).map(lambda i: [*others[:i], key, *others[i:]])), label="ring")
    if is_client_type(type_no):  # signed by an account with its own credential
        account: str | None = data.draw(PRINCIPALS, label="account")
        assert account
        name = account.encode("ascii")
        keys = Keys(KEY, {**ACCOUNTS, account: ring}, label=label, me=dst)  # a node: every account's credentials
        own = Keys(None, {account: ring}, label=label, me=dst)  # a client: its own only
    else:  # node to node: the peer keyring, no principal
        account, name = None, b""
        keys = Keys(ring, ACCOUNTS, label=label, me=dst)
        own = Keys(ring, label=label, me=dst)
    frame = encode(msg, sender, counter, key, account=account, dst=dst, label=label, stamp_ms=stamp)
    # the documented layout: MAGIC | VERSION | KEYID | STAMP | PLEN | PRINCIPAL | [type, sender, counter, *fields] | tag
    assert frame[:NAME_AT] == (MAGIC + bytes([VERSION, kid(key)]) + stamp.to_bytes(STAMP_LEN, "big")
                               + bytes([len(name)]))
    assert frame[NAME_AT:NAME_AT + len(name)] == name
    assert frame[-TAG_LEN:] == tag(key, frame[:-TAG_LEN], label, dst)
    assert msgpack.unpackb(frame[NAME_AT + len(name):-TAG_LEN], raw=False)[:3] == [type_no, sender, counter]
    assert key_id(key) == kid(key)
    for k in (keys, own):
        got = decode(frame, k, now_ms=stamp + skew)
        assert strict_eq(got, Frame(sender, counter, msg, account, kid(key), stamp)), (got, msg)
        assert strict_eq(decode(frame, k), got)  # no clock given: no stale check
    if account is None:  # plain bytes for keys: the peer key, no label, no destination
        plain = encode(msg, sender, counter, key)
        assert plain[STAMP_AT:PLEN_AT] == bytes(STAMP_LEN) and plain[-TAG_LEN:] == tag(key, plain[:-TAG_LEN], "", "")
        assert strict_eq(decode(plain, key), Frame(sender, counter, msg, None, kid(key), 0))


@pytest.mark.parametrize("type_no", sorted(MESSAGES))
@given(data=st.data())
def test_every_type_under_the_other_kind_of_principal_is_refused(type_no: int, data: st.DataObject) -> None:
    """A node-to-node type under an account credential is ``not_peer`` (a client cannot speak as a
    node), a client type under the peer key ``not_account`` (requests act for an account); and only
    once the tag checked out: with a bad tag both are plain ``auth``, saying nothing about the body."""
    msg = data.draw(messages(MESSAGES[type_no][0]), label="msg")
    if is_client_type(type_no):
        frame, reason = to_me(msg, "n1", 1, KEY), "not_account"
    else:
        frame, reason = to_me(msg, "n1", 1, BOB_KEY, account="bob"), "not_peer"
    rejects(frame, reason, max_size=BIG)
    rejects(frame[:-1] + bytes([frame[-1] ^ 1]), "auth", max_size=BIG)
    assert decode(sign(msg), KEYS, BIG).msg == msg  # positive control: the right principal decodes


def test_ops_and_membership_under_an_account_credential_are_not_peer() -> None:
    """A client holds only its own credential: whatever it signs, a node never takes ops, membership
    news, votes or a ``Forward`` (whose account field peers trust) from it."""
    updates = (Update("n2", 9, "dead", "n1"), Update("alice", 1, "alive", "alice"))
    entry = Entry(3, (HISTORY[0],))
    submit = ClientSubmit("r1", 1, "GBX", "", 0, 100, 1, 0, 0, 0)
    for msg in (OpBatch(HISTORY[:5]), Probe(1, 1, 0, updates), MemberGossip(1, updates), Ack(1, 1, 0, 0, 0, updates),
                PingReq(1, "n2", 1, updates), Summary({"n1": 3}, True), Pull([("n1", 0, 3)]),
                Heartbeat(1, 0, 1, {}), AppendEntries(5, 0, 0, 0, (entry,)), RequestVote(9, 0, 0, False),
                Forward(*submit, "bob"), ForwardReply("bob/r1", 0, "", "", 2, [])):
        for account, key in ACCOUNTS.items():
            err = rejects(to_me(msg, "alice", 1, key, account=account), "not_peer")
            assert type(msg).__name__ in str(err), str(err)
        assert decode(to_me(msg, "n1", 1, KEY), KEYS).msg == msg  # under the peer key it is fine


def test_an_op_batch_under_an_account_credential_leaves_the_replica_unchanged() -> None:
    replica = Replica("n9", members=["n1", "n2", "n9"])
    replica.receive(HISTORY[:10], NOW)
    before = _state(replica)
    for account, key in ACCOUNTS.items():
        assert not deliver(replica, to_me(OpBatch(HISTORY[10:]), "n1", 5, key, account=account))
        assert _state(replica) == before
    assert deliver(replica, to_me(OpBatch(HISTORY[10:]), "n1", 5, KEY))  # positive control
    assert replica.op_count == len(HISTORY)


def test_client_requests_and_replies_under_the_peer_key_are_not_account() -> None:
    """Whoever holds the peer key still cannot submit without naming an account: a request acts for
    the account whose credential verified it, never for no one."""
    for msg in (ClientSubmit("r1", 1, "GBX", "", 0, 100, 1, 0, 0, 0), ClientSubmit("r2", 4, "", "", 0, 0, 0, 0, 0, 0),
                ClientQuery("q1", "orders", "", 0), ClientReply("r1", 0, "", "n1:1", 1, []),
                QueryReply("q1", 0, "", {"orders": []})):
        err = rejects(to_me(msg, "n1", 1, KEY), "not_account")
        assert type(msg).__name__ in str(err), str(err)
        got = decode(to_me(msg, "n1", 1, ALICE_KEY, account="alice"), KEYS)  # positive control
        assert got.msg == msg and got.account == "alice"


def test_unknown_and_revoked_accounts_are_auth() -> None:
    submit = ClientSubmit("r1", 1, "GBX", "", 0, 100, 1, 0, 0, 0)
    carol_key = bytes(range(50, 82))
    rejects(to_me(submit, "c", 1, carol_key, account="carol"), "auth")  # never known
    rejects(to_me(submit, "c", 1, ALICE_KEY, account="Alice"), "auth")  # names are exact
    rejects(to_me(submit, "c", 1, ALICE_KEY, account="alice "), "auth")
    # a reload that drops bob: his next frame, correctly signed, is refused; alice is unaffected
    keys = Keys(KEY, dict(ACCOUNTS), label=LABEL, me=ME)
    bob_frame = to_me(submit, "c", 1, BOB_KEY, account="bob")
    assert decode(bob_frame, keys).account == "bob"
    keys.accounts = {"alice": ALICE_KEY}
    rejects(bob_frame, "auth", keys=keys)
    assert decode(to_me(submit, "c", 2, ALICE_KEY, account="alice"), keys).account == "alice"
    # a rotated credential: the old one no longer verifies
    keys.accounts = {"alice": bytes(range(7, 39))}
    rejects(to_me(submit, "c", 3, ALICE_KEY, account="alice"), "auth", keys=keys)
    # a party with no accounts at all (or no peer key) refuses what it cannot verify as auth
    rejects(encode(submit, "c", 1, ALICE_KEY, account="alice"), "auth", keys=KEY)
    rejects(to_me(submit, "c", 1, ALICE_KEY, account="alice"), "auth", keys=Keys(KEY, {}, label=LABEL, me=ME))
    rejects(to_me(Summary({}, False), "n1", 1, KEY), "auth", keys=Keys(None, {"alice": ALICE_KEY}, label=LABEL, me=ME))


def test_a_credential_signing_for_another_principal_is_auth() -> None:
    """The tag is checked with the named principal's key: alice's credential cannot make a frame
    that passes as bob's, as the peer's, or the other way round, however the principal is spliced in."""
    submit = ClientSubmit("r1", 2, "GBX", "n1:7", 0, 0, 0, 0, 0, 0)
    body = split(to_me(submit, "c", 1, ALICE_KEY, account="alice"))[1]
    rejects(seal(body, ALICE_KEY, principal="bob"), "auth")  # alice signs, naming bob
    rejects(to_me(submit, "c", 1, ALICE_KEY, account="bob"), "auth")
    rejects(seal(body, BOB_KEY, principal="alice"), "auth")
    rejects(seal(body, KEY, principal="bob"), "auth")  # the peer key is not bob's credential either
    rejects(seal(body, ALICE_KEY), "auth")  # alice's credential as the peer key
    # alice's valid frame with the principal renamed (the tag covers PLEN and the name)
    good = to_me(submit, "c", 1, ALICE_KEY, account="alice")
    body_at = NAME_AT + len("alice")
    rejects(good[:PLEN_AT] + bytes([3]) + b"bob" + good[body_at:], "auth")
    rejects(good[:PLEN_AT] + bytes([0]) + good[body_at:], "auth")
    keys = Keys(KEY, {"alice": ALICE_KEY, "bob": ALICE_KEY[::-1]}, label=LABEL, me=ME)
    err = rejects(seal(body, ALICE_KEY, principal="bob"), "auth", keys=keys)
    for secret in (KEY, ALICE_KEY, BOB_KEY):  # the error never carries key material
        assert secret.hex()[:16] not in str(err) and repr(secret)[2:20] not in str(err)
    assert decode(seal(body, ALICE_KEY, principal="alice"), KEYS).account == "alice"  # positive control


def test_keys_repr_never_shows_secrets() -> None:
    peer = b"peer-s3cret-PEER-s3cret-PEER-s3c"
    alice = b"alice-s3cret-ALICE-s3cret-ALICE!"
    bob = bytes(range(240, 256)) + bytes(range(16))
    secrets = [peer, alice, bob, KEY, ALICE_KEY]
    for keys in (Keys(peer, {"alice": alice, "bob": bob}), Keys(None, {"alice": alice}), Keys(peer),
                 Keys(KEY, {"alice": ALICE_KEY}), KEYS):
        texts = [repr(keys), str(keys), f"{keys}", f"{keys!r}", repr([keys]), repr({"keys": keys})]
        for text in texts:
            for secret in secrets:
                forms = {secret.hex(), secret.hex().upper(), repr(secret), str(list(secret)),
                         base64.b64encode(secret).decode(), secret.decode("latin-1")}
                # no recognisable piece either: any 6-byte window in any of the usual spellings
                for i in range(len(secret) - 5):
                    w = secret[i:i + 6]
                    forms |= {w.hex(), repr(w)[2:-1], str(list(w))[1:-1]}
                leaked = sorted(f for f in forms if f and f in text)
                assert not leaked, (text, leaked)
        assert "s3cret" not in repr(keys).lower()


# ---- garbage in, WireError out -------------------------------------------------------------------
_STAMPED = STAMP.to_bytes(STAMP_LEN, "big")


@given(st.one_of(st.binary(max_size=300),
                 st.binary(max_size=300).map(lambda b: MAGIC + bytes([VERSION]) + b),
                 st.binary(max_size=300).map(lambda b: MAGIC + bytes([VERSION, kid(KEY)]) + b),
                 st.binary(max_size=300).map(lambda b: MAGIC + bytes([VERSION, kid(KEY)]) + _STAMPED + b"\0" + b),
                 st.binary(max_size=300).map(
                     lambda b: MAGIC + bytes([VERSION, kid(ALICE_KEY)]) + _STAMPED + b"\x05alice" + b)))
def test_random_bytes_are_rejected(data: bytes) -> None:
    rejects(data)


@given(body=st.binary(max_size=300), signer=st.sampled_from([("", KEY), ("alice", ALICE_KEY)]))
def test_random_bodies_with_a_valid_tag_decode_or_raise_wire_error(body: bytes, signer: tuple[str, bytes]) -> None:
    principal, key = signer
    decode_or_wire_error(seal(body, key, principal=principal))


@given(msg=ANY_MESSAGE, sender=SENDERS, counter=COUNTERS, data=st.data())
def test_truncations_are_rejected(msg: Any, sender: str, counter: int, data: st.DataObject) -> None:
    frame = sign(msg, sender, counter)
    cut = data.draw(st.integers(0, len(frame) - 1), label="cut")
    rejects(frame[:cut])


def tampered_reason(frame: bytes) -> str:
    """The reason a frame changed after signing is refused with, from the layout alone: the header
    is read before the tag can be checked (it says which key to check it with), so a bad magic, a
    PLEN running past the end or a non-ASCII name is malformed, another version is version, and
    everything else -- an unknown name, a key id no key has, another stamp (the tag covers it: never
    stale), any other change -- is auth."""
    if frame[:2] != MAGIC:
        return "malformed"
    if frame[2] != VERSION:
        return "version"
    plen = frame[PLEN_AT]
    if plen and len(frame) < NAME_AT + plen + 1 + TAG_LEN:
        return "malformed"
    if not frame[NAME_AT:NAME_AT + plen].isascii():
        return "malformed"
    return "auth"


@given(msg=ANY_MESSAGE, sender=SENDERS, counter=COUNTERS, data=st.data())
def test_every_single_byte_change_is_rejected(msg: Any, sender: str, counter: int, data: st.DataObject) -> None:
    frame = bytearray(sign(msg, sender, counter))
    plen = frame[PLEN_AT]
    pos = data.draw(st.one_of(st.integers(0, len(frame) - 1), st.integers(0, PLEN_AT + plen)), label="pos")
    if data.draw(st.booleans(), label="bit flip"):
        frame[pos] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    else:
        frame[pos] = data.draw(st.integers(0, 255).filter(lambda b: b != frame[pos]), label="byte")
    err = rejects(bytes(frame))
    expected = tampered_reason(bytes(frame))
    assert err.reason == expected, (pos, err.reason, str(err))
    if pos > PLEN_AT + plen:  # past the header: only the tag can tell
        assert expected == "auth"
    if KID_AT <= pos < PLEN_AT:  # the key id and the stamp: covered by the tag
        assert expected == "auth"


@given(msg=ANY_MESSAGE, sender=SENDERS, counter=COUNTERS, data=st.data())
def test_mutated_bodies_with_a_valid_tag_decode_or_raise_wire_error(
        msg: Any, sender: str, counter: int, data: st.DataObject) -> None:
    """Someone holding the key sends a corrupted body: validation, not the tag, must hold the line."""
    key, principal = credential(type_no_of(msg))
    name, body_bytes = split(sign(msg, sender, counter))
    assert name == principal.encode()
    body = bytearray(body_bytes)
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        pos = data.draw(st.integers(0, max(len(body) - 1, 0)), label="pos")
        kind = data.draw(st.sampled_from(["byte", "bit", "insert", "delete"]), label="kind")
        if kind == "byte" and body:
            body[pos] = data.draw(st.integers(0, 255), label="byte")
        elif kind == "bit" and body:
            body[pos] ^= 1 << data.draw(st.integers(0, 7), label="bit")
        elif kind == "insert":
            body[pos:pos] = data.draw(st.binary(min_size=1, max_size=9), label="inserted")
        else:
            del body[pos:pos + data.draw(st.integers(1, 9), label="deleted")]
    frame = decode_or_wire_error(seal(bytes(body), key, principal=principal))
    if frame is not None:  # whatever got through is a well-formed message that encodes back as it was
        assert type(frame.msg) in {cls for cls, _ in MESSAGES.values()}
        assert frame.account == (principal or None)
        assert is_client_type(type_no_of(frame.msg)) == bool(principal)  # never the other kind's type
        again = decode(to_me(frame.msg, frame.sender, frame.counter, key, account=frame.account), KEYS, BIG)
        assert strict_eq(again, frame)


# ---- well-tagged frames of the wrong shape ---------------------------------------------------------
@given(data=st.data())
def test_fields_of_the_wrong_shape_are_rejected(data: st.DataObject) -> None:
    """Wrong field count, wrong types, out-of-range ints, oversized strings and lists, bad nesting."""
    type_no = data.draw(st.sampled_from(sorted(t for t in MESSAGES if MESSAGES[t][0] in SCHEMA)), label="type")
    fields = data.draw(invalid(R(MESSAGES[type_no][0], SCHEMA[MESSAGES[type_no][0]])), label="fields")
    assume(isinstance(fields, list))  # a non-list "record" is covered at the body level below
    body = msgpack.packb([type_no, "n1", 7, *fields], use_bin_type=True)
    rejects(seal_as(type_no, body), "malformed", max_size=BIG)


@given(bad=invalid(NODE))
def test_bad_sender_is_rejected(bad: Any) -> None:
    rejects(raw(2, {}, False, sender=bad), "malformed", max_size=BIG)


@given(bad=invalid(U()))
def test_bad_counter_is_rejected(bad: Any) -> None:
    rejects(raw(2, {}, False, counter=bad), "malformed", max_size=BIG)


@given(type_no=st.one_of(st.integers(-(1 << 63), U64).filter(lambda t: t not in MESSAGES),
                         st.booleans(), st.none(), st.text(max_size=3), st.floats(allow_nan=False),
                         st.just([1])))
def test_unknown_message_types_are_rejected(type_no: Any) -> None:
    err = rejects(raw(type_no, {}, False), "unknown_type")
    assert "unknown message type" in str(err)


@pytest.mark.parametrize("body", [
    msgpack.packb({"type": 2}), msgpack.packb(2), msgpack.packb("x"), msgpack.packb([]), msgpack.packb([2]),
    msgpack.packb([2, "n1"]), msgpack.packb([2, "n1", 1, {}, False]) + b"\x00",  # trailing bytes
    msgpack.packb([2, "n1", 1, {}, False])[:-1],  # a body cut short (re-tagged)
    b"", b"\xc1",  # never-used msgpack byte
])
def test_malformed_bodies_are_rejected(body: bytes) -> None:
    rejects(seal(body), "malformed")
    rejects(seal(body, ALICE_KEY, principal="alice"), "malformed")


DEEP = [7, 100, 999, 1023, 1024, 1100, 5000]
HUGE = [b"\xdd\xff\xff\xff\xff", b"\xdc\xff\xff", b"\xdf\xff\xff\xff\xff", b"\xdb\xff\xff\xff\xff",
        b"\xc6\xff\xff\xff\xff", b"\xc9\xff\xff\xff\xff\x01", b"\xdd\x00\x01\x00\x01"]


def _positions(value: bytes) -> list[bytes]:
    """Frames, each under its type's principal, of bodies with the raw msgpack ``value`` as sender,
    as counter and as each message's first field."""
    p = msgpack.packb
    out = [seal(b"\x94\x02" + value + b"\x01\x80"), seal(b"\x94\x02\xa2n1" + value + b"\x80"),
           seal(b"\x94\x05" + value + b"\x01\x80", ALICE_KEY, principal="alice")]
    for type_no, (cls, _) in sorted(MESSAGES.items()):
        fields = SCHEMA.get(cls, (U(),))
        head = p([type_no, "n1", 1, *(minimal(f) for f in fields)])
        # same array header, same first three items, ``value`` in place of the first field
        prefix = p([type_no, "n1", 1])[1:]
        first = p(minimal(fields[0]))
        header_len = len(head) - len(prefix) - sum(len(p(minimal(f))) for f in fields)
        out.append(seal_as(type_no, head[:header_len] + prefix + value + head[header_len + len(prefix) + len(first):]))
    return out


@pytest.mark.parametrize("depth", DEEP)
def test_deep_nesting_is_rejected_anywhere(depth: int) -> None:
    for frame in _positions(b"\x91" * depth + b"\x00"):
        rejects(frame, "malformed")


@pytest.mark.parametrize("header", HUGE, ids=lambda h: h.hex())
def test_huge_declared_lengths_are_rejected_anywhere(header: bytes) -> None:
    for frame in _positions(header):
        rejects(frame, "malformed")


def edge_valid(spec: Any) -> list[Any]:
    """Wire values right on the spec's limits, which it must accept."""
    match spec:
        case U(hi):
            return [0, hi]
        case S(mx, mn):
            return ["x" * mx, "\u00e9" * mx, "x" * max(mn, 0)]
        case B(mx):
            return [b"", b"\0" * mx]
        case Bool():
            return [False, True]
        case One(values):
            return list(values)
        case L(item, mx):
            return [[], [minimal(item)] * mx, *([v] for v in edge_valid(item))]
        case T(items):
            return edge_valid(items)
        case M(k, v, mx):
            return [{}, {minimal(k, i): minimal(v) for i in range(mx)},
                    *({kk: minimal(v)} for kk in edge_valid(k)), *({minimal(k): vv} for vv in edge_valid(v))]
        case R(_cls, fields):
            base = [minimal(f) for f in fields]
            return [base[:i] + [v] + base[i + 1:] for i, f in enumerate(fields) for v in edge_valid(f)]
        case Plain(depth):
            return [_nested(depth - 1) if depth else 0, {"k" * 256: None}, -(1 << 63), U64, 1.5, b"", ""]
    raise AssertionError(spec)


def edge_invalid(spec: Any) -> list[Any]:
    """Wire values just past the spec's limits, or of the wrong type, which it must refuse."""
    match spec:
        case U(hi):
            return [-1, True, 1.0, "1", None, [0]] + ([hi + 1] if hi < U64 else [])
        case S(mx, mn):
            return ["x" * (mx + 1), b"x", 1, None, ["x"]] + ([""] if mn else [])
        case B(mx):
            return ["x", 1, None, [b""], b"\0" * (mx + 1)]
        case Bool():
            return [0, 1, None, "true"]
        case One(values) if isinstance(values[0], str):
            return ["", values[0].upper(), values[0] + "x", 1, None]
        case One(values):
            return [max(values) + 1, min(values) - 1, str(values[0]), None, 1 in values]
        case L(item, mx):
            return [{}, 1, "x", None, [minimal(item)] * (mx + 1), *([v] for v in edge_invalid(item))]
        case T(items):
            return edge_invalid(items)
        case M(k, v, mx):
            return [[], 1, None, {minimal(k, i): minimal(v) for i in range(mx + 1)},
                    *({kk: minimal(v)} for kk in edge_invalid(k) if _hashable(kk)),
                    *({minimal(k): vv} for vv in edge_invalid(v))]
        case R(_cls, fields):
            base = [minimal(f) for f in fields]
            return [{}, 1, None, base[:-1], [*base, 0], [*base, None],
                    *(base[:i] + [v] + base[i + 1:] for i, f in enumerate(fields) for v in edge_invalid(f))]
        case Plain(depth):
            return [_nested(depth), {1: 1}, {b"k": 1}, {"k" * 257: 1}, msgpack.ExtType(5, b"x")]
    raise AssertionError(spec)


@pytest.mark.parametrize("type_no", sorted(MESSAGES))
def test_every_field_at_and_past_its_limits(type_no: int) -> None:
    """Deterministic edges for every field of every message (hypothesis samples them; this sweeps
    them all): each limit is inclusive, one past it or a wrong type is refused as malformed."""
    cls = MESSAGES[type_no][0]
    if cls not in SCHEMA:
        pytest.fail(f"message type {type_no} ({cls.__name__}) has no schema in {__name__}.SCHEMA: add one")
    record = R(cls, SCHEMA[cls])
    for fields in edge_valid(record):
        frame = decode(raw(type_no, *fields), KEYS, BIG)
        assert type(frame.msg) is cls
        assert frame.account == ("alice" if is_client_type(type_no) else None)
    for fields in edge_invalid(record):
        if isinstance(fields, list):
            rejects(raw(type_no, *fields), "malformed", max_size=BIG)
    for bad in edge_invalid(NODE):
        rejects(raw(type_no, *edge_valid(record)[0], sender=bad), "malformed", max_size=BIG)
    for bad in edge_invalid(U()):
        rejects(raw(type_no, *edge_valid(record)[0], counter=bad), "malformed", max_size=BIG)


def test_boundary_lengths() -> None:
    """The limits are inclusive: ``max`` is accepted, ``max + 1`` is not."""
    op = Op(1, 0, "n" * 64, 1, 1, "S" * 32, "o" * 96, 0, MAX_INT, MAX_INT, 3, "r" * 64, "a" * 64)
    assert decode(to_me(OpBatch([op] * 4096), "n1", 1, KEY), KEYS, BIG).msg.ops == [op] * 4096
    rejects(raw(1, [list(op)] * 4097), "malformed", max_size=BIG)
    rejects(raw(1, [[*op[:12], "a" * 65]]), "malformed")  # the op's account: at most 64
    rejects(raw(1, [[*op[:5], "S" * 33, *op[6:]]]), "malformed")
    cancel_all = Op(1, 0, "n1", 2, 4, "", "", 0, 0, 0, 0, "", "alice")  # every symbol: "" is fine now
    assert decode(to_me(OpBatch([cancel_all]), "n1", 1, KEY), KEYS).msg.ops == [cancel_all]
    rejects(raw(1, [[*cancel_all[:4], 10, *cancel_all[5:]]]), "malformed")  # 5..8: risk ops (core/risk.py), 9: membership
    submit = ClientSubmit("r", 4, "", "", 0, 0, 0, 0, 0, 0)
    assert decode(sign(submit), KEYS).msg == submit
    rejects(raw(5, "r", 6, "", "", 0, 0, 0, 0, 0, 0), "malformed")  # a risk transfer is made by nodes only
    rejects(raw(20, "r", 4, "", "", 0, 0, 0, 0, 0, 0), "malformed")  # a Forward names its account
    assert decode(raw(20, "r", 4, "", "", 0, 0, 0, 0, 0, 0, "a" * 64), KEYS).msg.account == "a" * 64
    assert decode(raw(21, "a" * 64 + "/" + "r" * 64, 0, "", "", 0, []), KEYS).msg.req == "a" * 64 + "/" + "r" * 64
    vv = {f"n{i}": i for i in range(1024)}
    assert decode(to_me(Summary(vv, True), "n1", 1, KEY), KEYS, BIG).msg.vv == vv
    rejects(raw(2, {**vv, "extra": 1}, True), "malformed", max_size=BIG)
    nested = [[[[[{"k": "leaf"}]]]]]  # six containers, the leaf at depth 6: as deep as a payload may go
    assert decode(sign(QueryReply("r", 0, "", nested)), KEYS).msg.payload == nested
    rejects(raw(8, "r", 0, "", [nested]), "malformed")
    assert decode(raw(6, "r", 0, "", "", 0, [[1, [2], "x"]]), KEYS).msg.trades == [[1, [2], "x"]]
    rejects(raw(6, "r", 0, "", "", 0, [[1, [[2]]]]), "malformed")
    # the principal: PLEN is one byte, so a name of 255 ASCII characters is the longest there is
    long_name = "p" * 255
    frame = to_me(submit, "c", 1, ALICE_KEY, account=long_name)
    assert frame[PLEN_AT] == 255
    assert decode(frame, Keys(None, {long_name: ALICE_KEY}, label=LABEL, me=ME)).account == long_name
    err = rejects(seal(split(frame)[1], ALICE_KEY, principal="\x01" * 255), "auth")  # unknown, shown short
    assert len(str(err)) < 300


# ---- key, version, size --------------------------------------------------------------------------
@given(msg=ANY_MESSAGE, key=st.binary(min_size=16, max_size=64))
def test_wrong_key_is_rejected_as_auth(msg: Any, key: bytes) -> None:
    right, principal = credential(type_no_of(msg))
    assume(key != right)
    frame = to_me(msg, "n1", 1, key, account=principal or None)
    rejects(frame, "auth")
    assert decode(frame, Keys(key, {principal: key} if principal else None, label=LABEL, me=ME)).msg == msg


@given(msg=ANY_MESSAGE, version=st.integers(0, 255).filter(lambda v: v != VERSION))
def test_other_versions_are_rejected_as_version(msg: Any, version: int) -> None:
    key, principal = credential(type_no_of(msg))
    body = split(sign(msg))[1]
    err = rejects(seal(body, key, version, principal), "version")
    assert str(version) in str(err)


def test_oversized_frames_are_rejected() -> None:
    frame = to_me(SnapshotChunk(1, 0, 1, b"x" * (MAX_DATAGRAM - 60)), "n1", 1, KEY)
    assert len(frame) <= MAX_DATAGRAM
    assert decode(frame, KEYS).msg.data == b"x" * (MAX_DATAGRAM - 60)
    rejects(frame, "oversized", max_size=len(frame) - 1)
    assert decode(frame, KEYS, max_size=len(frame)).counter == 1
    rejects(frame + b"\0" * (MAX_DATAGRAM - len(frame) + 1), "oversized")
    rejects(b"\0" * (MAX_DATAGRAM + 1), "oversized")


def test_short_frames_and_bad_magic_are_malformed() -> None:
    frame = to_me(Summary({}, False), "n1", 1, KEY)
    rejects(b"", "malformed")
    for n in range(NAME_AT + TAG_LEN + 1):  # up to a whole header and a tag, no body
        rejects(frame[:n], "malformed")
    for n in range(NAME_AT + 1):  # a tag after all or part of a header
        rejects(frame[:n] + frame[-TAG_LEN:], "malformed")
    rejects(seal(b""), "malformed")  # the peer's: a header, no body, a valid tag
    rejects(b"XB" + frame[2:], "malformed")
    query = ClientQuery("q", "status", "", 0)
    rejects(seal(b"", ALICE_KEY, principal="alice"), "malformed")  # a principal, no body
    body = split(sign(query))[1]
    long = bytearray(seal(body, ALICE_KEY, principal="alice"))
    long[PLEN_AT] = 255  # PLEN runs past the end of the frame
    rejects(resealed(long, ALICE_KEY), "malformed")
    rejects(seal(body, ALICE_KEY, principal="al\xefce".encode("latin-1")), "malformed")  # not ASCII
    assert decode(seal(body, ALICE_KEY, principal="alice"), KEYS).msg == query


# ---- v4: destination, cluster, stamp ---------------------------------------------------------------
def test_a_v3_frame_is_refused_as_version() -> None:
    """A frame of the previous layout (``MAGIC | 3 | PLEN | PRINCIPAL | body | tag``, no key id, no
    stamp, nothing bound) is refused by its version, whatever its tag."""
    body = split(sign(Summary({}, False)))[1]
    head = MAGIC + bytes([3, 0]) + body
    err = rejects(head + hashlib.blake2b(head, key=KEY, digest_size=TAG_LEN).digest(), "version")
    assert "3" in str(err)
    head = MAGIC + bytes([3, 5]) + b"alice" + split(sign(ClientQuery("q", "status", "", 0)))[1]
    rejects(head + hashlib.blake2b(head, key=ALICE_KEY, digest_size=TAG_LEN).digest(), "version")


#: (label, destination) pairs that a careless binding (plain concatenation, a separator) would mix up
BINDINGS = [(LABEL, "n1"), (LABEL, "n2"), ("other", "n1"), ("", "n1"), (LABEL, ""), ("", ""), ("ab", "c"),
            ("a", "bc"), ("abc", ""), ("", "abc"), ("1:a", "b"), ("1", "a1:b"), ("a:", "1:b"), ("gb-test", "n11"),
            ("gb-test\0", "n1"), ("\u00e9", "n1"), ("\u00c3\u00a9", "n1")]

_SMALL = {2: Summary({"n1": 3}, True), 5: ClientSubmit("r1", 1, "GBX", "", 0, 100, 1, 0, 0, 0),
          6: ClientReply("r1", 0, "", "n1:1", 1, []), 17: AppendEntries(3, 0, 0, 0, ())}


@pytest.mark.parametrize("type_no", sorted(_SMALL))
def test_a_frame_verifies_only_at_its_destination_and_in_its_cluster(type_no: int) -> None:
    """The MAC binds the cluster label and the destination (neither is sent): a frame for n1 is
    refused as ``auth`` at n2 and in a cluster of another label, under the same keys; and no two
    (label, destination) pairs bind alike (the lengths are in the binding)."""
    msg = _SMALL[type_no]
    key, principal = credential(type_no)
    account = principal or None
    for label, dst in BINDINGS:
        frame = encode(msg, "n1", 9, key, account=account, dst=dst, label=label, stamp_ms=STAMP)
        for other_label, other_dst in BINDINGS:
            keys = Keys(KEY, ACCOUNTS, label=other_label, me=other_dst)
            if (other_label, other_dst) == (label, dst):
                got = decode(frame, keys, now_ms=NOW_MS)
                assert got == Frame("n1", 9, msg, account, kid(key), STAMP)
            else:
                err = rejects(frame, "auth", keys=keys)
                assert "another cluster or destination" in str(err)
    # the same frame, at n1 and at n2 of one cluster; and at n1 of another cluster
    frame = sign(msg, dst="n1")
    assert decode(frame, Keys(KEY, ACCOUNTS, label=LABEL, me="n1"), now_ms=NOW_MS).msg == msg
    rejects(frame, "auth", keys=Keys(KEY, ACCOUNTS, label=LABEL, me="n2"))
    rejects(frame, "auth", keys=Keys(KEY, ACCOUNTS, label="gb-prod", me="n1"))
    # bytes for keys bind to no cluster and no destination: a bound frame is refused there too
    rejects(frame, "auth", keys=KEY if account is None else Keys(None, {principal: key}))



@given(msg=ANY_MESSAGE, a=st.tuples(LABELS, SENDERS), b=st.tuples(LABELS, SENDERS))
def test_any_other_destination_or_cluster_is_auth(msg: Any, a: tuple[str, str], b: tuple[str, str]) -> None:
    assume(a != b)
    key, principal = credential(type_no_of(msg))
    frame = sign(msg, label=a[0], dst=a[1])
    assert decode(frame, Keys(KEY, ACCOUNTS, label=a[0], me=a[1]), BIG, now_ms=NOW_MS).msg == msg
    rejects(frame, "auth", max_size=BIG, keys=Keys(KEY, ACCOUNTS, label=b[0], me=b[1]))
    # sealed here, by the layout written in this file, it is the same frame
    assert seal(split(frame)[1], key, principal=principal, label=a[0], dst=a[1]) == frame


def test_a_reply_verifies_only_at_the_client_it_was_sent_to() -> None:
    """A node's reply is addressed to the client's sender id: another client of the same account
    (same credential) refuses it, so a reply cannot be redirected either."""
    reply = ClientReply("r1", 0, "", "n1:1", 1, [])
    frame = to_me(reply, "n1", 3, ALICE_KEY, account="alice", dst="c-1")
    assert decode(frame, Keys(None, {"alice": ALICE_KEY}, label=LABEL, me="c-1"), now_ms=NOW_MS).msg == reply
    rejects(frame, "auth", keys=Keys(None, {"alice": ALICE_KEY}, label=LABEL, me="c-2"))
    rejects(frame, "auth", keys=Keys(KEY, ACCOUNTS, label=LABEL, me="n1"))  # nor at a node


def test_stale_frames_are_refused_and_fresh_ones_accepted() -> None:
    """A frame stamped more than ``window_ms`` from the receiver's clock, either way, is ``stale``;
    at the window's edge it is accepted. Only a frame that verified can be stale (a tampered one is
    ``auth``), and without a clock nothing is."""
    for msg in (Summary({}, False), ClientQuery("q", "orders", "", 0)):
        frame = sign(msg)  # stamped STAMP
        for now in (STAMP, STAMP - WINDOW, STAMP + WINDOW, STAMP + 1, STAMP - 1):
            got = decode(frame, KEYS, now_ms=now)
            assert got.msg == msg and got.stamp_ms == STAMP
        for now in (STAMP + WINDOW + 1, STAMP - WINDOW - 1, STAMP + 10 * WINDOW, 0, (1 << 48) + STAMP):
            err = rejects(frame, "stale", now_ms=now)
            assert "stamped" in str(err)
        assert decode(frame, KEYS).msg == msg  # no clock given: not checked
        late = STAMP + WINDOW + 1
        rejects(frame[:-1] + bytes([frame[-1] ^ 1]), "auth", now_ms=late)  # a bad tag first
        for pos in range(STAMP_AT, PLEN_AT):  # a stamp moved into the window: the tag covers it
            moved = bytearray(frame)
            moved[pos] ^= 1
            rejects(bytes(moved), "auth", now_ms=int.from_bytes(moved[STAMP_AT:PLEN_AT], "big"))
    # the window is the receiver's
    narrow = Keys(KEY, ACCOUNTS, label=LABEL, me=ME, window_ms=1_000)
    frame = sign(Summary({}, False), stamp_ms=50_000)
    assert decode(frame, narrow, now_ms=51_000).stamp_ms == 50_000
    assert decode(frame, narrow, now_ms=49_000).stamp_ms == 50_000
    rejects(frame, "stale", keys=narrow, now_ms=51_001)
    rejects(frame, "stale", keys=narrow, now_ms=48_999)
    assert decode(frame, KEYS, now_ms=51_001).stamp_ms == 50_000  # the default window is 30 s
    assert WINDOW == 30_000


@given(msg=ANY_MESSAGE, stamp=STAMPS, now=st.integers(0, (1 << 48) - 1), window=st.integers(0, 1 << 40))
def test_stale_exactly_when_the_stamp_is_further_than_the_window(msg: Any, stamp: int, now: int, window: int) -> None:
    frame = sign(msg, stamp_ms=stamp)
    keys = Keys(KEY, ACCOUNTS, label=LABEL, me=ME, window_ms=window)
    if abs(stamp - now) > window:
        rejects(frame, "stale", max_size=BIG, keys=keys, now_ms=now)
    else:
        assert decode(frame, keys, BIG, now_ms=now).stamp_ms == stamp


def test_a_stamp_that_does_not_fit_six_bytes_is_never_sent() -> None:
    msg = Summary({}, False)
    assert split(to_me(msg, "n1", 1, KEY, stamp_ms=(1 << 48) - 1)) == split(sign(msg))
    for stamp in (1 << 48, -1):
        with pytest.raises((OverflowError, ValueError)):
            to_me(msg, "n1", 1, KEY, stamp_ms=stamp)


def test_refusals_stay_one_short_line_whatever_the_header_names() -> None:
    """The longest principal (255 bytes), of the characters ``repr`` spells longest (``\\x01``: four
    each), under the widest key id, an unknown account and a stamp as far as 6 bytes reach: every
    refusal is still one line under 300 characters (it goes to the log as it is)."""
    submit = split(sign(ClientSubmit("r1", 1, "GBX", "", 0, 100, 1, 0, 0, 0)))[1]
    for name in ("\x01" * 255, "\x7f" * 64, "\\" * 255, "'\"" * 127):
        for key_no in (0, 255, kid(ALICE_KEY)):
            rejects(seal(submit, ALICE_KEY, principal=name, key_no=key_no), "auth")
    rejects(seal(submit, ALICE_KEY, principal="alice", key_no=kid(KEY) ^ 0xFF), "auth")
    rejects(seal(split(sign(Summary({}, False)))[1], key_no=kid(KEY) ^ 0xFF), "auth")
    for stamp in (0, (1 << 48) - 1):
        rejects(sign(ClientQuery("q", "orders", "", 0), stamp_ms=stamp), "stale")


# ---- v4: keyrings ----------------------------------------------------------------------------------
def _keys_by_id() -> dict[int, list[bytes]]:
    out: dict[int, list[bytes]] = {}
    for i in range(400):
        k = hashlib.sha256(b"test key %d" % i).digest()
        out.setdefault(kid(k), []).append(k)
    return out


_BY_ID = _keys_by_id()
#: keys with pairwise different ids, and two keys sharing one id (a 1-in-256 accident a ring survives)
K1, K2, K3, A1, A2 = (ks[0] for ks in list(_BY_ID.values())[:5])
TWINS = next(ks[:2] for ks in list(_BY_ID.values())[5:] if len(ks) >= 2)


def test_the_test_keys_are_what_they_claim() -> None:
    assert len({kid(k) for k in (K1, K2, K3, A1, A2)}) == 5
    assert kid(TWINS[0]) == kid(TWINS[1]) and TWINS[0] != TWINS[1]
    assert kid(TWINS[0]) not in {kid(k) for k in (K1, K2, K3, A1, A2)}
    for k in (K1, K2, K3, A1, A2, *TWINS, KEY, ALICE_KEY):
        assert key_id(k) == kid(k)


def count_macs(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The keys ``decode`` computes a tag with, from now on (``wire._tag`` wrapped)."""
    keys: list[bytes] = []
    real = wire._tag

    def counting(key: bytes, data: Any, bound: bytes) -> bytes:
        keys.append(bytes(key))
        return real(key, data, bound)

    monkeypatch.setattr(wire, "_tag", counting)
    return keys


def test_every_key_of_a_peer_ring_verifies_and_the_first_signs() -> None:
    keys = Keys([K1, K2, K3], ACCOUNTS, label=LABEL, me=ME)
    assert keys.peer == K1 and keys.peer_ring == (K1, K2, K3) and keys.signing_key() == K1
    for i, k in enumerate((K1, K2, K3)):
        got = decode(to_me(Summary({}, False), "n1", i, k), keys, now_ms=NOW_MS)
        assert got.key_id == kid(k) and got.counter == i and got.account is None
    rejects(to_me(Summary({}, False), "n1", 1, KEY), "auth", keys=keys)  # not in the ring
    assert Keys(K2).peer_ring == (K2,) and Keys(None).peer_ring == () and Keys(None).peer is None


def test_the_key_id_selects_the_one_key_to_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two keys in a ring, one MAC per frame: the header's id picks the key. A frame signed by one
    key of the ring but naming the other's id is refused, though both keys are there; an id no key
    has costs no MAC at all; keys that share an id are both tried (and both verify)."""
    keys = Keys([K1, K2, K3], {"alice": [A1, A2]}, label=LABEL, me=ME)
    frames = {k: to_me(Summary({}, False), "n1", 1, k) for k in (K1, K2, K3)}
    asks = {k: to_me(ClientQuery("q", "orders", "", 0), "c", 1, k, account="alice") for k in (A1, A2)}
    macs = count_macs(monkeypatch)
    for k, frame in [*frames.items(), *asks.items()]:
        macs.clear()
        assert decode(frame, keys, now_ms=NOW_MS).key_id == kid(k)
        assert macs == [k], "one MAC, with the key the id names"
    for signer, named in ((K2, K1), (K3, K1), (K1, K3), (A2, A1)):
        principal = "alice" if signer in (A1, A2) else ""
        body = split(asks[signer] if principal else frames[signer])[1]
        forged = seal(body, signer, principal=principal, key_no=kid(named))
        macs.clear()
        rejects(forged, "auth", keys=keys)
        assert macs == [named]
    nobody = next(i for i in range(256) if i not in {kid(k) for k in (K1, K2, K3, A1, A2)})
    for principal, frame, signer in (("", frames[K1], K1), ("alice", asks[A1], A1)):
        macs.clear()
        err = rejects(seal(split(frame)[1], signer, principal=principal, key_no=nobody), "auth", keys=keys)
        assert macs == [] and str(nobody) in str(err)
    twins = Keys([K1, *TWINS], label=LABEL, me=ME)
    for k in TWINS:
        frame = to_me(Summary({}, False), "n1", 1, k)
        macs.clear()
        assert decode(frame, twins, now_ms=NOW_MS).key_id == kid(k)
        assert macs[-1] == k and len(macs) <= 2 and set(macs) <= set(TWINS)


def test_a_rotation_installs_promotes_and_removes_a_key() -> None:
    """Install the new key everywhere, make it primary, remove the old one: at each step what each
    key signed verifies exactly while the key is in the ring (lookups are cached: every reload must
    show at once). The same for an account's credentials."""
    keys = Keys([K1], {"alice": A1}, label=LABEL, me=ME)

    def peer_ok(k: bytes) -> bool:
        try:
            decode(to_me(Summary({}, False), "n1", 1, k), keys, now_ms=NOW_MS)
        except WireError as e:
            assert e.reason == "auth"
            return False
        return True

    def alice_ok(k: bytes) -> bool:
        try:
            return decode(to_me(ClientQuery("q", "orders", "", 0), "c", 1, k, account="alice"), keys,
                          now_ms=NOW_MS).account == "alice"
        except WireError as e:
            assert e.reason == "auth"
            return False

    assert (peer_ok(K1), peer_ok(K2), keys.signing_key()) == (True, False, K1)
    keys.peer = [K1, K2]  # installed
    assert (peer_ok(K1), peer_ok(K2), keys.signing_key()) == (True, True, K1)
    keys.peer = [K2, K1]  # made primary
    assert (peer_ok(K1), peer_ok(K2), keys.signing_key()) == (True, True, K2)
    keys.peer = K2  # the old one removed
    assert (peer_ok(K1), peer_ok(K2), keys.signing_key()) == (False, True, K2)
    keys.peer = None
    assert (peer_ok(K1), peer_ok(K2), keys.signing_key()) == (False, False, None)
    assert (alice_ok(A1), alice_ok(A2)) == (True, False)  # reloading the peer ring left accounts alone
    keys.peer = [K2]
    keys.accounts = {"alice": [A1, A2]}
    assert (alice_ok(A1), alice_ok(A2), peer_ok(K2)) == (True, True, True)
    keys.accounts = {"alice": (A2, A1)}
    assert (alice_ok(A1), alice_ok(A2), keys.signing_key("alice")) == (True, True, A2)
    keys.accounts = {"alice": [A2]}
    assert (alice_ok(A1), alice_ok(A2), peer_ok(K2)) == (False, True, True)
    keys.accounts = {}
    assert (alice_ok(A1), alice_ok(A2), peer_ok(K2)) == (False, False, True)


def test_an_account_with_two_credentials_verifies_both() -> None:
    submit = ClientSubmit("r1", 1, "GBX", "", 0, 100, 1, 0, 0, 0)
    accounts = {"alice": [A1, A2], "bob": BOB_KEY}
    for keys in (Keys(KEY, accounts, label=LABEL, me=ME), Keys(None, {"alice": (A1, A2)}, label=LABEL, me=ME)):
        for i, k in enumerate((A1, A2)):
            got = decode(to_me(submit, "c", i, k, account="alice"), keys, now_ms=NOW_MS)
            assert (got.account, got.key_id, got.msg) == ("alice", kid(k), submit)
        rejects(to_me(submit, "c", 1, A2, account="bob"), "auth", keys=keys)  # alice's key is not bob's
        rejects(to_me(submit, "c", 1, BOB_KEY, account="alice"), "auth", keys=keys)
        rejects(to_me(Summary({}, False), "c", 1, A2), "auth", keys=keys)  # nor the peer key
        rejects(to_me(Summary({}, False), "c", 1, A2, account="alice"), "not_peer", keys=keys)


def test_signing_key_picks_the_key_a_request_came_in_under() -> None:
    """``signing_key(account, kid)``: the principal's key with that id (a reply goes out under the
    key its request used, so a client given only the new credential verifies it), its primary
    without an id, or when no key has that id; None for a principal with no key."""
    keys = Keys([K1, K2], {"alice": [A1, A2], "bob": BOB_KEY}, label=LABEL, me=ME)
    assert keys.signing_key() == K1 and keys.signing_key(None) == K1
    assert keys.signing_key(None, kid(K2)) == K2 and keys.signing_key(None, kid(K1)) == K1
    assert keys.signing_key("alice") == A1
    assert keys.signing_key("alice", kid(A2)) == A2 and keys.signing_key("alice", kid(A1)) == A1
    assert keys.signing_key("bob") == BOB_KEY and keys.signing_key("bob", kid(BOB_KEY)) == BOB_KEY
    unknown = next(i for i in range(256) if i not in {kid(A1), kid(A2)})
    assert keys.signing_key("alice", unknown) == A1  # no key with that id: the primary
    assert keys.signing_key("alice", kid(K2)) == A1  # another principal's key is never picked
    assert keys.signing_key(None, kid(A2)) == K1
    assert keys.signing_key("carol") is None and keys.signing_key("carol", kid(A1)) is None
    assert Keys(None, label=LABEL, me=ME).signing_key() is None
    # the round: a client holding only the new credential A2 asks; the node answers under A2
    client = Keys(None, {"alice": A2}, label=LABEL, me="c-9")
    ask = encode(ClientQuery("q", "orders", "", 0), "c-9", 1, client.signing_key("alice"), account="alice",
                 dst=ME, label=LABEL, stamp_ms=STAMP)
    got = decode(ask, keys, now_ms=NOW_MS)
    answer = encode(QueryReply("q", 0, "", {"orders": []}), ME, 1, keys.signing_key(got.account, got.key_id),
                    account=got.account, dst=got.sender, label=LABEL, stamp_ms=STAMP)
    assert decode(answer, client, now_ms=NOW_MS).msg == QueryReply("q", 0, "", {"orders": []})
    primary = encode(QueryReply("q", 0, "", {}), ME, 1, keys.signing_key("alice"), account="alice",
                     dst="c-9", label=LABEL, stamp_ms=STAMP)
    rejects(primary, "auth", keys=client)  # what the primary would have signed: not verifiable there


# ---- a replica behind decode -----------------------------------------------------------------------
HISTORY = [op._replace(wall=op.wall + 1_700_000_000 * 10**9) for op in make_history(40, origins=2, seed=3)]
NOW = HISTORY[-1].wall


def deliver(replica: Replica, data: bytes) -> bool:
    """What the shell does with a datagram: decode, and only an ``OpBatch`` reaches the replica."""
    try:
        frame = decode(data, KEYS, now_ms=NOW_MS)
    except WireError:
        return False
    if isinstance(frame.msg, OpBatch):
        replica.receive(frame.msg.ops, NOW)
    return True


def _state(r: Replica) -> tuple[str, dict[str, int], int]:
    return r.digest(), r.version_vector(), r.op_count


@given(split=st.integers(1, len(HISTORY) - 1), retag=st.booleans(), data=st.data())
def test_replica_is_unchanged_by_rejected_frames(split: int, retag: bool, data: st.DataObject) -> None:
    replica = Replica("n9", members=["n1", "n2", "n9"])
    replica.receive(HISTORY[:split], NOW)
    frame = bytearray(to_me(OpBatch(HISTORY[split:]), "n1", 5, KEY))
    before = _state(replica)
    pos = data.draw(st.integers(NAME_AT if retag else 0, len(frame) - 1 - (TAG_LEN if retag else 0)), label="pos")
    frame[pos] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    if retag:
        frame = bytearray(seal(bytes(frame[NAME_AT:-TAG_LEN])))
    delivered = deliver(replica, bytes(frame))
    if not retag:
        assert not delivered, "a frame with a bit flipped and the old tag was accepted"
    if not delivered:
        assert _state(replica) == before
    # the intact frame still applies afterwards (positive control: the test can see a change)
    whole = Replica("n9", members=["n1", "n2", "n9"])
    whole.receive(HISTORY[:split], NOW)
    assert deliver(whole, to_me(OpBatch(HISTORY[split:]), "n1", 5, KEY))
    assert whole.op_count == len(HISTORY)


# ---- encode_ops --------------------------------------------------------------------------------------
@given(ops=st.lists(valid(OP), max_size=120), sender=SENDERS, data=st.data())
def test_encode_ops_fits_the_mtu_and_keeps_order(ops: list[Op], sender: str, data: st.DataObject) -> None:
    counter = data.draw(st.one_of(
        st.integers(0, 300),
        st.sampled_from([127, 255, 65_535, (1 << 32) - 1]).flatmap(lambda b: st.integers(b - 80, b + 2)),
        st.integers(0, U64 - 200), st.just(U64 - max(len(ops) - 1, 0))), label="counter")
    # the smallest MTU every op fits under on its own, at the largest counter the call may use
    need = max([len(to_me(OpBatch([op]), sender, counter + len(ops) - 1, KEY)) for op in ops], default=64)
    mtu = data.draw(st.integers(need, need + 3000), label="mtu")
    frames = encode_ops(ops, sender, counter, KEY, mtu, dst=ME, label=LABEL, stamp_ms=STAMP)
    assert all(len(f) <= mtu for f in frames), (mtu, [len(f) for f in frames])
    decoded = [decode(f, KEYS, max_size=mtu, now_ms=NOW_MS) for f in frames]
    assert [f.counter for f in decoded] == list(range(counter, counter + len(frames)))
    assert all(f.sender == sender and type(f.msg) is OpBatch and f.msg.ops for f in decoded)
    assert all(f.stamp_ms == STAMP and f.key_id == kid(KEY) and f.account is None for f in decoded)
    assert strict_eq([op for f in decoded for op in f.msg.ops], list(ops))
    # no frame was closed while the next op would clearly have fit (a little slack for headers)
    for f, nxt in zip(decoded, decoded[1:], strict=False):
        assert len(to_me(OpBatch([*f.msg.ops, nxt.msg.ops[0]]), sender, f.counter, KEY)) > mtu - 8


@pytest.mark.parametrize("counter", [0, 127, 255, 65_535, (1 << 32) - 1, U64 - 79])
def test_encode_ops_fits_the_mtu_where_the_counter_grows_a_byte(counter: int) -> None:
    """msgpack widens an int at 128, 256, 65536 and 2**32: a later frame's counter can take more
    bytes than the first one's. Every fill level of the second frame is tried, with fewer and with
    more than 15 ops per frame (where the ops array header grows too)."""
    ops = [Op(1_700_000_000_000_000_000 + i, 0, "n1", i + 1, 1, "GBX", "", 0, 10_000 + i, 5, 0, "", "desk-7")
           for i in range(80)]
    for mtu in range(120, 1400):
        frames = encode_ops(ops, "n1", counter, KEY, mtu, dst=ME, label=LABEL, stamp_ms=STAMP)
        assert max(map(len, frames)) <= mtu, (counter, mtu, [len(f) for f in frames])


def test_encode_ops_packs_many_typical_ops_per_datagram() -> None:
    ops = [op._replace(req=f"{op.origin}-{op.seq:08x}-4f1c-9a2e-5b7d3c1e0f6a" if op.kind == 1 else "")
           for op in make_history(400, origins=4, seed=11)]
    ops = [op._replace(wall=op.wall + 1_700_000_000 * 10**9) for op in ops]  # realistic epoch nanoseconds
    frames = encode_ops(ops, "node-eu-west-1", 1, KEY, 1400, dst=ME, label=LABEL, stamp_ms=STAMP)
    per_frame = [len(decode(f, KEYS, now_ms=NOW_MS).msg.ops) for f in frames]
    assert sum(per_frame) == len(ops)
    assert min(per_frame[:-1]) >= 10, per_frame
    assert encode_ops([], "n1", 1, KEY, dst=ME, label=LABEL, stamp_ms=STAMP) == []


def test_encode_ops_binds_every_frame_to_its_destination_cluster_and_stamp() -> None:
    ops = HISTORY[:30]
    frames = encode_ops(ops, "n1", 7, KEY, 300, dst="n3", label=LABEL, stamp_ms=STAMP)
    assert len(frames) > 1
    at_n3 = Keys(KEY, label=LABEL, me="n3")
    assert [op for f in frames for op in decode(f, at_n3, now_ms=NOW_MS).msg.ops] == ops
    for f in frames:
        assert decode(f, at_n3).stamp_ms == STAMP
        rejects(f, "auth")  # at ME (n2)
        rejects(f, "auth", keys=Keys(KEY, label="other", me="n3"))
        rejects(f, "stale", keys=at_n3, now_ms=STAMP + WINDOW + 1)


# ---- ReplayGuard ---------------------------------------------------------------------------------------
@given(window=st.integers(1, 64), data=st.data())
def test_replay_guard_accepts_out_of_order_within_the_window_once(window: int, data: st.DataObject) -> None:
    base = data.draw(st.integers(0, 1 << 40), label="base")
    counters = data.draw(st.permutations(range(base, base + window)), label="order")
    g = ReplayGuard(window)
    assert g.accept("a", base + window - 1)  # the top first: everything else arrives late
    assert all(g.accept("a", c) for c in counters if c != base + window - 1)
    assert not any(g.accept("a", c) for c in counters)  # every replay refused
    assert not g.accept("a", base - 1)  # one below the window
    assert g.accept("b", base)  # senders are independent


def test_replay_guard_keeps_at_most_max_senders_windows() -> None:
    """At most ``max_senders`` windows: a new sender beyond that drops the least recently refreshed
    one (whose top counter moved longest ago), counted in ``evicted``. An evicted sender's old
    counters are accepted again -- only then, never while its window is kept."""
    g = ReplayGuard(64, max_senders=3)
    for s in "abc":
        assert g.accept(s, 10)
    assert (len(g), g.evicted) == (3, 0)
    assert g.accept("a", 11)  # a refreshed: b is now the least recently refreshed, then c, then a
    assert not any(g.accept(s, 10) for s in "abc")  # every replay refused while the windows are kept
    assert (len(g), g.evicted) == (3, 0)
    assert g.accept("d", 1)  # a fourth sender: b goes
    assert (len(g), g.evicted) == (3, 1)
    assert not g.accept("a", 10) and not g.accept("c", 10) and not g.accept("d", 1)  # the kept windows hold
    assert g.accept("b", 10)  # b's old counter: accepted again, now that its window is gone ...
    assert (len(g), g.evicted) == (3, 2)  # ... and taking a window costs c's (least recently refreshed)
    assert not g.accept("b", 10)
    assert g.accept("c", 10)  # c's old counter too, dropping a's
    assert (len(g), g.evicted) == (3, 3)
    assert not g.accept("d", 1) and not g.accept("b", 10) and not g.accept("c", 10)
    g.forget("d")  # forgetting is not evicting
    assert (len(g), g.evicted) == (2, 3)
    unbounded = ReplayGuard(8)
    assert all(unbounded.accept(f"s{i}", 1) for i in range(5_000))
    assert (len(unbounded), unbounded.evicted) == (5_000, 0)
    assert not any(unbounded.accept(f"s{i}", 1) for i in range(5_000))


def test_an_evicted_window_reopens_only_what_stale_still_bounds() -> None:
    """What the shell does with a client's datagram: ``decode`` (with its clock), then the capped
    guard. A flood of made-up senders can evict a real client's window, and its captured frame
    passes the guard again -- but only while its stamp is inside the window: later it is ``stale``."""
    g = ReplayGuard(64, max_senders=2)
    client = Keys(KEY, ACCOUNTS, label=LABEL, me=ME)

    def receive(frame: bytes, now: int) -> str:
        try:
            got = decode(frame, client, now_ms=now)
        except WireError as e:
            return e.reason
        return "ok" if g.accept(f"{got.account}/{got.sender}", got.counter) else "replay"

    captured = sign(ClientQuery("q", "orders", "", 0), "c-1", 5)
    assert receive(captured, STAMP) == "ok"
    assert receive(captured, STAMP) == "replay"
    for i in range(2):  # made-up senders: c-1's window is the least recently refreshed
        assert receive(sign(ClientQuery("q", "status", "", 0), f"x{i}", 1), STAMP) == "ok"
    assert g.evicted >= 1
    assert receive(captured, STAMP + WINDOW + 1) == "stale"  # the residual replay, bounded by the stamp
    assert receive(captured, STAMP + WINDOW) == "ok"  # inside the window: the guard alone let it through
    assert receive(captured, STAMP + WINDOW) == "replay"


class ReplayModel(RuleBasedStateMachine):
    """``ReplayGuard`` against a set-based model: per sender, what was accepted and the top; with a
    cap, the senders in the order their top last moved (a new top is a refresh; a late counter
    accepted inside the window, or a refused one, is not), the first dropped when a new one comes."""

    @initialize(window=st.sampled_from([1, 2, 3, 8, 64, 1024]), cap=st.sampled_from([None, 1, 2, 3, 5]))
    def start(self, window: int, cap: int | None) -> None:
        self.window = window
        self.cap = cap
        self.guard = ReplayGuard(window, max_senders=cap)
        self.seen: dict[str, set[int]] = {}  # accepted counters per sender; in LRU order
        self.evicted = 0

    def _expect(self, sender: str, counter: int) -> bool:
        seen = self.seen.get(sender)
        if seen is None:
            return True
        top = max(seen)
        return counter > top or (top - counter < self.window and counter not in seen)

    def _check(self, sender: str, counter: int) -> None:
        expected = self._expect(sender, counter)
        assert self.guard.accept(sender, counter) == expected, (sender, counter, expected)
        if not expected:
            return
        seen = self.seen.get(sender)
        if seen is None:
            if self.cap is not None and len(self.seen) >= self.cap:
                del self.seen[next(iter(self.seen))]
                self.evicted += 1
            self.seen[sender] = {counter}
        elif counter > max(seen):
            self.seen[sender] = self.seen.pop(sender) | {counter}  # refreshed: last in the order
        else:
            seen.add(counter)

    @rule(sender=st.sampled_from("abcdef"), delta=st.integers(-1100, 1100))
    def near_top(self, sender: str, delta: int) -> None:
        top = max(self.seen.get(sender, {1 << 20}))
        self._check(sender, max(0, top + delta))

    @rule(sender=st.sampled_from("abcdef"), delta=st.integers(-3, 3), edge=st.booleans())
    def at_the_window_edge(self, sender: str, delta: int, edge: bool) -> None:
        top = max(self.seen.get(sender, {1 << 20}))
        self._check(sender, max(0, top - self.window + delta if edge else top + delta))

    @rule(sender=st.sampled_from("abcdef"), counter=st.integers(0, U64))
    def anywhere(self, sender: str, counter: int) -> None:
        self._check(sender, counter)

    @rule(sender=st.sampled_from("abcdef"))
    def forget(self, sender: str) -> None:
        self.guard.forget(sender)
        self.seen.pop(sender, None)  # a restarted peer may reuse counters

    @invariant()
    def replays_refused(self) -> None:
        for sender, seen in self.seen.items():
            for c in sorted(seen)[-3:]:
                assert not self.guard.accept(sender, c), f"replay of {sender}/{c} accepted"

    @invariant()
    def bounded_and_counted(self) -> None:
        assert len(self.guard) == len(self.seen)
        assert self.cap is None or len(self.guard) <= self.cap
        assert self.guard.evicted == self.evicted


TestReplayModel = ReplayModel.TestCase


_EDGES = [0, 1, 2, 3, 4, -1, True, False, None, 1.0, 1 << 32, (1 << 32) + 1, MAX_INT, MAX_INT + 1, U64 >> 1,
          (U64 >> 1) + 1, U64, U64 + 1, "", "n1", "x" * 32, "x" * 33, "x" * 64, "x" * 65, "x" * 96, "x" * 97,
          b"n1", [], {}]
_VALID_OP = [10**18, 3, "n1", 7, 1, "GBX", "", 0, 10_000, 5, 0, "r1", "alice"]


def _both(fields: list) -> tuple[object, object]:
    from gossipbook.core.wire import _OP_FIELDS, OP_CHECK

    def run(f: Callable[[Any], Any]) -> object:
        try:
            return f(list(fields))
        except WireError as e:
            return ("error", str(e))
    return run(OP_CHECK), run(_OP_FIELDS)


def test_the_op_fast_path_agrees_with_the_field_checks_on_every_edge() -> None:
    """``OP_CHECK`` short-cuts the thirteen field checks: every field of a valid op set to every edge
    value (bounds and one past them, wrong types, bools) is accepted or refused alike."""
    for i in range(13):
        for e in _EDGES:
            fields = list(_VALID_OP)
            fields[i] = e
            fast, slow = _both(fields)
            assert fast == slow, (i, e)
    for n in (0, 12, 14):
        fast, slow = _both(_VALID_OP[:n] + [0] * max(0, n - 13))
        assert fast == slow and fast[0] == "error"


@given(fields=st.lists(st.sampled_from(_EDGES), min_size=12, max_size=14))
def test_the_op_fast_path_agrees_with_the_field_checks_on_any_mix(fields: list) -> None:
    fast, slow = _both(fields)
    assert fast == slow
