"""Well-formed, authenticated frames of every registered message type, with hostile field values.

Every frame ``FrameGen`` makes passes ``wire.decode``'s validators (unless it is deliberately
mis-bound: another destination, another cluster, a stale stamp, or a replay), so it reaches the node's
logic: integers at their boundaries (0, 2^32, 2^53, 2^62, 2^64-1, each validator's maximum),
collections up to their caps (as many as fit one datagram), unknown origins, senders and accounts,
far-future and far-past clocks, ops for unknown instruments, cancels of other accounts' orders.

Determinism: everything is drawn from one ``random.Random(seed)``, except the stamps and the walls
of the fuzz member's ops, which follow the real clock (a frame must be stamped within the window to
be accepted at all). An op is a pure function of ``(origin, seq)`` (a keyed hash picks its fields), so
the fuzzer never equivocates: two nodes that receive "op fz:7" receive the same op, and any
divergence the run reports is the nodes' doing, not a byzantine double-send.
"""

from __future__ import annotations

import hashlib
import random
import string as _string
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from ..core.membership import Ack, IndirectAck, PingReq, Probe, Update
from ..core.membership import Gossip as MemberGossip
from ..core.ops import Op
from ..core.sequencer import (
    AppendEntries,
    AppendReply,
    Entry,
    ForcedVote,
    InstallSnapshot,
    RequestVote,
    TimeoutNow,
    VoteReply,
)
from ..core.venuecheck import MAX_DESCRIPTION, VenueInfo, VenueQuery
from ..core.wire import (
    _ACCOUNT_TYPE_NOS,
    MAX_DATAGRAM,
    MAX_INT,
    MAX_SHARDS,
    MESSAGES,
    U64,
    ClientQuery,
    ClientReply,
    ClientSubmit,
    FeedAck,
    FeedDelta,
    FeedSnapshot,
    FeedSubscribe,
    Forward,
    ForwardReply,
    Heartbeat,
    LeaderHint,
    OpBatch,
    Pull,
    QueryReply,
    Sharded,
    SnapshotChunk,
    Summary,
    encode,
    sharded,
)

#: integers every unsigned field is tried at (each capped at the field's own maximum)
BOUNDARY = (0, 1, 2, 127, 128, 255, 256, 65_535, 65_536, (1 << 31) - 1, 1 << 31, (1 << 32) - 1, 1 << 32,
            (1 << 32) + 1, 1 << 53, (1 << 53) + 1, 1 << 62, (1 << 63) - 1, 1 << 63, U64 - 1, U64)
U63 = U64 >> 1
NS_PER_MS = 1_000_000


def stable_rng(*parts: Any) -> random.Random:
    """A ``Random`` seeded by a hash of ``parts`` (``hash()`` of a str differs per process)."""
    h = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(h, "big"))


@dataclass
class Target:
    """What the generator knows of the cluster it attacks."""

    honest: list[str]  # the ids of the node processes
    fuzz_member: str | None  # a configured member no process runs: the fuzzer speaks as it
    key: bytes  # the peer key
    label: str  # the cluster's name
    accounts: dict[str, bytes]  # account -> credential the fuzzer signs client frames with
    symbols: list[str]  # the instruments the cluster trades
    known_orders: list[str] = field(default_factory=list)  # honest accounts' resting orders (to cancel)
    other_accounts: list[str] = field(default_factory=list)  # accounts whose orders those are
    #: node-to-node frames may claim an honest node's id as their sender, with counters above its own
    #: (the peer key does not say which node signed). Counters can no longer silence the real node
    #: (tests/node/test_fuzz_regressions.py), but a peer-key holder naming another member can still
    #: send ops under its origin (docs/operations.md, security model): off unless asked for
    impersonate: bool = False


def uint_of(rng: random.Random, hi: int = U64) -> int:
    """An unsigned int in ``0..hi``: a boundary value, the maximum or near it, or uniform."""
    r = rng.random()
    if r < 0.45:
        v = rng.choice(BOUNDARY)
        return v if v <= hi else hi
    if r < 0.6:
        return max(0, hi - rng.randrange(3))
    if r < 0.8:
        return rng.randint(0, min(hi, 1000))
    return rng.randint(0, hi)


_POOL = "".join(random.Random(0).choice(_string.ascii_letters + _string.digits + ":-_/. ") for _ in range(4096))
_WIDE = "".join(random.Random(0).choice("é€𝄞ñ\u200b") for _ in range(1024))


def text_of(rng: random.Random, max_len: int, min_len: int = 0) -> str:
    r = rng.random()
    if r < 0.2:
        n = max_len
    elif r < 0.3:
        n = min_len
    else:
        n = rng.randint(min_len, min(max_len, 12))
    pool = _WIDE if rng.random() < 0.15 else _POOL  # multi-byte: up to 4x the bytes of its length
    at = rng.randrange(len(pool) - n) if n < len(pool) else 0
    return pool[at:at + n]


def _repeat(items: list[Any], n: int) -> list[Any]:
    """``n`` items cycling through ``items`` (a capped collection, cheap to make)."""
    return [items[i % len(items)] for i in range(n)] if items else []


class FrameGen:
    """Makes ``(type_no, destination id, frame bytes)`` for the fuzz loop; see the module header."""

    def __init__(self, target: Target, seed: int, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.t = target
        self.seed = seed
        self.rng = random.Random(seed)
        self.clock_ns = clock_ns
        self.t0 = clock_ns()
        #: the fuzz member's next op seq (its ops' walls follow the clock: t0 + seq * 100 µs)
        self.fz_seq = 0
        self.counters: dict[str, int] = {}
        self._ops: dict[tuple[str, int], Op] = {}
        self.recent: deque[tuple[int, str, bytes]] = deque(maxlen=512)
        self.unknown = [f"ghost{i}" for i in range(8)] + ["x" * 64, "n0", "n99", "-", "é"]
        self.types = sorted(MESSAGES)
        self.makers: dict[int, Callable[[], Any]] = {
            1: self.op_batch, 2: self.summary, 3: self.pull, 4: self.heartbeat, 5: self.client_submit,
            6: self.client_reply, 7: self.client_query, 8: self.query_reply, 9: self.snapshot_chunk,
            10: self.probe, 11: self.ack, 12: self.ping_req, 13: self.indirect_ack, 14: self.member_gossip,
            15: self.request_vote, 16: self.vote_reply, 17: self.append_entries, 18: self.append_reply,
            19: self.install_snapshot, 20: self.forward, 21: self.forward_reply,
        }
        self.makers.update({22: self.feed_subscribe, 23: self.feed_ack, 24: self.feed_snapshot, 25: self.feed_delta})
        self.makers.update({26: self.venue_query, 27: self.venue_info})
        self.makers.update({28: self.sharded, 29: self.timeout_now, 30: self.forced_vote, 31: self.leader_hint})
        missing = set(self.types) - set(self.makers)
        if missing:  # a new message type must get a maker here (the test checks by_type covers all)
            raise RuntimeError(f"the fuzzer has no generator for message type(s) {sorted(missing)}")

    # ---- small values -------------------------------------------------------------------------------
    def big(self) -> bool:
        """Whether this collection goes to its cap (huge) this time."""
        return self.rng.random() < 0.04

    def node_id(self) -> str:
        r = self.rng.random()
        if r < 0.5:
            return self.rng.choice(self.t.honest)
        if r < 0.65 and self.t.fuzz_member:
            return self.t.fuzz_member
        if r < 0.9:
            return self.rng.choice(self.unknown)
        return text_of(self.rng, 64, 1)

    def sender(self) -> str:
        """Who a node-to-node frame says it is from: the fuzz member, a made-up node, or (with
        ``impersonate``) an honest one."""
        r = self.rng.random()
        if self.t.impersonate and r < 0.4:
            return self.rng.choice(self.t.honest)
        if self.t.fuzz_member and r < 0.85:
            return self.t.fuzz_member
        return self.rng.choice(self.unknown) if r < 0.97 else text_of(self.rng, 64, 1)

    def account_name(self) -> str:
        r = self.rng.random()
        if r < 0.6:
            return self.rng.choice(list(self.t.accounts) + self.t.other_accounts)
        if r < 0.75:
            return ""
        return text_of(self.rng, 64)

    def symbol(self, rng: random.Random | None = None) -> str:
        rng = rng or self.rng
        r = rng.random()
        if r < 0.6:
            return rng.choice(self.t.symbols)
        if r < 0.7:
            return ""
        return rng.choice(["NOPE", "btc-usd", "x" * 32, "é" * 32]) if r < 0.85 else text_of(rng, 32)

    def order_id(self, rng: random.Random | None = None) -> str:
        rng = rng or self.rng
        r = rng.random()
        if r < 0.35 and self.t.known_orders:
            return rng.choice(self.t.known_orders)  # someone else's order
        if r < 0.5:
            return ""
        if r < 0.7:
            return f"{rng.choice(self.t.honest + [self.t.fuzz_member or 'n1'])}:{uint_of(rng, U63)}"
        if r < 0.8:
            return "x" * 96
        return text_of(rng, 96)

    def wall_ns(self, rng: random.Random) -> int:
        now = self.clock_ns()
        return rng.choice([now, now + 400 * NS_PER_MS, now + 3_600 * 10**9, now - 3_600 * 10**9, now + 100 * 365 * 86_400 * 10**9,
                           0, 1, now - 40 * 10**9, now + 40 * 10**9, uint_of(rng)])

    def updates(self) -> tuple[Update, ...]:
        big = self.big()
        ups = [Update(self.node_id(), uint_of(self.rng), self.rng.choice(("alive", "suspect", "dead", "left")),
                      self.node_id()) for _ in range(8 if big else self.rng.randint(0, 4))]
        return tuple(_repeat(ups, 256) if big else ups)

    def vv(self, cap: int = 1024) -> dict[str, int]:
        rng = self.rng
        out = {self.node_id(): uint_of(rng, U63) for _ in range(rng.randint(0, 5))}
        if self.big():  # up to the cap, mostly made-up origins
            vals = [uint_of(rng, U63) for _ in range(8)]
            base = rng.randrange(1 << 30)
            for i in range(cap - len(out)):
                out[f"o{base}-{i}"] = vals[i % 8]
        return out

    # ---- ops: one per (origin, seq), never two different ones -------------------------------------
    def op(self) -> Op:
        rng = self.rng
        r = rng.random()
        fz = self.t.fuzz_member
        if fz and r < 0.55:
            # the fuzz member's own flow: mostly its next seqs (wall on the clock, so they fold), some old
            # (draws the same numbers whatever the clock says: the frame sequence is the seed's)
            fresh, old = rng.random() < 0.8, rng.randint(1, max(1, self.fz_seq))
            if self.fz_seq < 1 or (fresh and self.t0 + (self.fz_seq + 1) * 100_000 <= self.clock_ns()):
                self.fz_seq += 1
                old = self.fz_seq
            return self.op_at(fz, old)
        if r < 0.75:  # an honest node's origin, far past its real seqs (a gap: must wait, bounded)
            return self.op_at(rng.choice(self.t.honest + [fz or self.t.honest[0]]), rng.choice([1 << 40, 1 << 53, 1 << 62, U63, U63 - 1,
                                                                      (1 << 40) + rng.randrange(1000)]))
        origin = rng.choice(self.unknown) if r < 0.95 else text_of(rng, 64, 1)
        return self.op_at(origin, uint_of(rng, U63))

    def op_at(self, origin: str, seq: int) -> Op:
        op = self._ops.get((origin, seq))
        if op is None:
            if len(self._ops) >= 100_000:
                self._ops.clear()
            op = self._ops[(origin, seq)] = self._make_op(origin, seq)
        return op

    def _make_op(self, origin: str, seq: int) -> Op:
        h = stable_rng(self.seed, origin, seq)
        # the fuzz member's own flow keeps sane clocks (one refused op would hold every later one of it
        # back for good, and the fold would see nothing more); its far seqs and other origins do not
        wild = h.random() < 0.1 and (origin != self.t.fuzz_member or seq > 1 << 32)
        if origin == self.t.fuzz_member and not wild:
            wall, logical = min(U64, self.t0 + seq * 100_000), h.choice([0, 0, 0, 1, h.randrange(1 << 16)])
        else:
            wall = h.choice([min(U64, self.t0 + seq * 100_000), self.t0 + 400 * NS_PER_MS, self.t0 + 10**18, 0, 1,
                             self.t0 - 10**15, U64, uint_of(h)])
            logical = h.choice([0, 1 << 32, (1 << 32) - 1, uint_of(h, 1 << 32)])
        kind = h.choice((1, 1, 1, 2, 2, 3, 4))
        price = h.choice([1, 100, 10_000, MAX_INT, 0, uint_of(h, MAX_INT)])
        qty = h.choice([1, 10, MAX_INT, 0, uint_of(h, MAX_INT)])
        account = h.choice(list(self.t.accounts) + self.t.other_accounts + ["", "nobody", "x" * 64])
        return Op(wall, logical, origin, seq, kind, self.symbol(h), self.order_id(h) if kind != 1 else "",
                  h.randrange(2), price, qty, h.randrange(4), text_of(h, 64) if h.random() < 0.5 else "", account)

    def ops(self, cap: int, per_op: int = 60) -> list[Op]:
        if self.big():
            return _repeat([self.op() for _ in range(16)], min(cap, MAX_DATAGRAM // per_op))
        return [self.op() for _ in range(self.rng.randint(0, 8))]

    # ---- one maker per type (field order is wire order) ---------------------------------------------
    def op_batch(self) -> OpBatch:
        return OpBatch(self.ops(4096))

    def summary(self) -> Summary:
        return Summary(self.vv(), self.rng.random() < 0.5, self.vv())

    def pull(self) -> Pull:
        big = self.big()
        ranges = [(self.node_id(), uint_of(self.rng), uint_of(self.rng)) for _ in range(8 if big else self.rng.randint(0, 4))]
        return Pull(_repeat(ranges, 1024) if big else ranges)

    def heartbeat(self) -> Heartbeat:
        return Heartbeat(self.wall_ns(self.rng), uint_of(self.rng, 1 << 32), uint_of(self.rng), self.vv())

    def submit_fields(self) -> list[Any]:
        rng = self.rng
        return [text_of(rng, 64, 1), rng.choice((1, 1, 2, 2, 3, 4)), self.symbol(), self.order_id(), rng.randrange(2),
                uint_of(rng, MAX_INT) if rng.random() < 0.5 else rng.randint(1, 20_000),
                uint_of(rng, MAX_INT) if rng.random() < 0.5 else rng.randint(1, 100),
                rng.randrange(4), rng.randrange(3), uint_of(rng, 600_000)]

    def client_submit(self) -> ClientSubmit:
        return ClientSubmit(*self.submit_fields())

    def reply_fields(self) -> list[Any]:
        rng = self.rng
        big = self.big()
        trades = [[uint_of(rng), text_of(rng, 8), None, True][: rng.randint(0, 4)] for _ in range(4 if big else rng.randint(0, 3))]
        trades = _repeat(trades, 1024) if big else trades
        return [rng.randint(0, 255), text_of(rng, 1024), self.order_id(), rng.randint(0, 2), trades]

    def client_reply(self) -> ClientReply:
        return ClientReply(text_of(self.rng, 64), *self.reply_fields())

    def client_query(self) -> ClientQuery:
        what = self.rng.choice(("book", "status", "progress", "orders", "trades", "faults", "x" * 16, "?"))
        return ClientQuery(text_of(self.rng, 64, 1), what, self.symbol(), uint_of(self.rng, 1000))

    def plain(self, depth: int = 0) -> Any:
        rng = self.rng
        r = rng.random()
        if depth >= 6 or r < 0.4:
            return rng.choice([None, True, uint_of(rng), -(1 << 63), 1e308, float("nan"), "s" * rng.randint(0, 300), b"\x00" * 10])
        if r < 0.7:
            return [self.plain(depth + 1) for _ in range(rng.randint(0, 3))]
        return {text_of(rng, 256): self.plain(depth + 1) for _ in range(rng.randint(0, 3))}

    def query_reply(self) -> QueryReply:
        return QueryReply(text_of(self.rng, 64), self.rng.randint(0, 255), text_of(self.rng, 1024), self.plain())

    def snapshot_chunk(self) -> SnapshotChunk:
        rng = self.rng
        total = uint_of(rng, 1 << 20)
        n = rng.choice([0, 1, 100, 1200, 30_000]) if not self.big() else MAX_DATAGRAM - 200
        data = rng.randbytes(n) if rng.random() < 0.5 else msgpack.packb([{}, {}, 0, b"", [0, 0, ""], {}, {}])[:n or None]
        return SnapshotChunk(uint_of(rng), uint_of(rng, 1 << 20), total, data)

    def probe(self) -> Probe:
        return Probe(uint_of(self.rng), uint_of(self.rng), self.wall_ns(self.rng), self.updates())

    def ack(self) -> Ack:
        r = self.rng
        return Ack(uint_of(r), uint_of(r), self.wall_ns(r), self.wall_ns(r), self.wall_ns(r), self.updates())

    def ping_req(self) -> PingReq:
        return PingReq(uint_of(self.rng), self.node_id(), uint_of(self.rng), self.updates())

    def indirect_ack(self) -> IndirectAck:
        r = self.rng
        return IndirectAck(uint_of(r), self.node_id(), uint_of(r), uint_of(r), self.updates())

    def member_gossip(self) -> MemberGossip:
        return MemberGossip(uint_of(self.rng), self.updates())

    def term(self) -> int:
        return self.rng.randint(0, 20) if self.rng.random() < 0.5 else uint_of(self.rng)

    def request_vote(self) -> RequestVote:
        return RequestVote(self.term(), uint_of(self.rng), self.term(), self.rng.random() < 0.5)

    def vote_reply(self) -> VoteReply:
        return VoteReply(self.term(), self.rng.random() < 0.7, self.rng.random() < 0.5, self.node_id())

    def append_entries(self) -> AppendEntries:
        rng = self.rng
        big = self.big()
        entries = [Entry(self.term(), (self.op(),) if rng.random() < 0.7 else ()) for _ in range(16 if big else rng.randint(0, 4))]
        entries = _repeat(entries, 1024) if big else entries
        return AppendEntries(self.term(), uint_of(rng), self.term(), uint_of(rng), tuple(entries))

    def append_reply(self) -> AppendReply:
        return AppendReply(self.term(), self.rng.random() < 0.5, uint_of(self.rng), uint_of(self.rng))

    def install_snapshot(self) -> InstallSnapshot:
        rng = self.rng
        n = rng.choice([0, 10, 1200]) if not self.big() else MAX_DATAGRAM - 200
        return InstallSnapshot(self.term(), uint_of(rng), self.term(), uint_of(rng), uint_of(rng), rng.randbytes(n))

    def forward(self) -> Forward:
        return Forward(*self.submit_fields(), self.account_name())

    def forward_reply(self) -> ForwardReply:
        return ForwardReply(text_of(self.rng, 130), *self.reply_fields())

    # feeds (core/feeds.py): subscriptions need an address check first, so most of these are answered
    # with a cookie and change nothing; pushes and acks sent to a node are not for it
    def feed_subscribe(self) -> FeedSubscribe:
        rng = self.rng
        return FeedSubscribe(text_of(rng, 64, 1), text_of(rng, 32, 1), rng.choice(("trades", "book", "x" * 16, "?")),
                             self.symbol(), uint_of(rng, 1000), uint_of(rng, 600_000), rng.random() < 0.5)

    def feed_ack(self) -> FeedAck:
        rng = self.rng
        return FeedAck(text_of(rng, 64), rng.randint(0, 255), text_of(rng, 1024), text_of(rng, 32),
                       uint_of(rng, 600_000), uint_of(rng), rng.random() < 0.5)

    def feed_rows(self) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        rng = self.rng
        fills = [(text_of(rng, 128, 1), text_of(rng, 32, 1), self.order_id(), rng.randrange(2), uint_of(rng, MAX_INT),
                  uint_of(rng, MAX_INT), rng.randrange(2), rng.random() < 0.5, uint_of(rng, 1 << 32),
                  rng.random() < 0.5) for _ in range(rng.randint(0, 3))]
        levels = [(rng.randrange(2), uint_of(rng, MAX_INT), uint_of(rng), uint_of(rng, 1 << 32))
                  for _ in range(rng.randint(0, 3))]
        if self.big():
            fills, levels = _repeat(fills, 256), _repeat(levels, 256)
        return fills, levels

    def feed_snapshot(self) -> FeedSnapshot:
        rng = self.rng
        return FeedSnapshot(text_of(rng, 32, 1), uint_of(rng), uint_of(rng, 4096), uint_of(rng, 4096), *self.feed_rows())

    def feed_delta(self) -> FeedDelta:
        return FeedDelta(text_of(self.rng, 32, 1), uint_of(self.rng), *self.feed_rows())

    def venue_fp(self) -> bytes:
        """A venue fingerprint: mostly none (compared with nothing); sometimes made up, which makes
        the node refuse the claimed sender until that sender's own next probe says otherwise."""
        r = self.rng.random()
        return b"" if r < 0.8 else self.rng.randbytes(8) if r < 0.95 else self.rng.randbytes(self.rng.randrange(8))

    def venue_query(self) -> VenueQuery:
        return VenueQuery(self.venue_fp())

    def venue_info(self) -> VenueInfo:
        rng = self.rng
        n = rng.choice([0, 10, 300]) if not self.big() else MAX_DESCRIPTION
        blob = rng.randbytes(n) if rng.random() < 0.5 else b'{"venue":{},"hooks":{},"instruments":{}}'
        return VenueInfo(self.venue_fp(), blob)

    # strong-mode shards (core/shards.py): a group's message for any shard (a node of one shard, or of
    # fewer, refuses it as bad_shard / unexpected), leadership transfer, a client's leader hint
    def sharded(self) -> Sharded:
        rng = self.rng
        kind = rng.choice((15, 16, 17, 18, 19, 20, 21, 29, 30))
        return sharded(rng.randrange(MAX_SHARDS), self.makers[kind]())

    def timeout_now(self) -> TimeoutNow:
        return TimeoutNow(self.term())

    def forced_vote(self) -> ForcedVote:
        return ForcedVote(self.term(), uint_of(self.rng), self.term())

    def leader_hint(self) -> LeaderHint:
        return LeaderHint(text_of(self.rng, 64), self.rng.randrange(MAX_SHARDS), self.node_id())

    # ---- frames -------------------------------------------------------------------------------------
    def next(self, dst: str) -> tuple[int, str, bytes]:
        """One frame meant for node ``dst``: ``(type_no, where to send it, bytes)``. Most are bound to
        ``dst`` and stamped now; some are bound elsewhere, stale, or a replay of an earlier frame."""
        rng = self.rng
        if self.recent and rng.random() < 0.03:  # a replay: to its node again, or to another one
            type_no, to, data = rng.choice(self.recent)
            return type_no, (to if rng.random() < 0.5 else rng.choice(self.t.honest)), data
        type_no = rng.choice(self.types)
        msg = self.makers[type_no]()
        data = self.sign(type_no, msg, dst)
        while len(data) > MAX_DATAGRAM:  # a capped collection that did not fit one datagram: halve it
            msg = _halve(msg)
            data = self.sign(type_no, msg, dst)
        self.recent.append((type_no, dst, data))
        return type_no, dst, data

    def sign(self, type_no: int, msg: Any, dst: str) -> bytes:
        rng = self.rng
        account = None
        if type_no in _ACCOUNT_TYPE_NOS:
            account = rng.choice(sorted(self.t.accounts))
            key = self.t.accounts[account]
            sender = text_of(rng, 64, 1) if rng.random() < 0.2 else f"client-fuzz{rng.randrange(50)}"
        else:
            key = self.t.key
            sender = self.sender()
        r = rng.random()
        bound_to, label = dst, self.t.label
        stamp = self.clock_ns() // NS_PER_MS
        if r < 0.04:  # bound to another node: every node but that one must refuse it
            bound_to = rng.choice([n for n in self.t.honest if n != dst] or self.unknown)
        elif r < 0.06:
            label = self.t.label + "-other"
        elif r < 0.09:
            stamp += rng.choice([-40_000, 40_000, -29_000, 29_000, 10**9])
        elif r < 0.10:
            stamp = rng.choice([0, (1 << 48) - 1])
        counter = self._counter(sender)
        return encode(msg, sender, counter, key, account, dst=bound_to, label=label, stamp_ms=stamp)

    def _counter(self, sender: str) -> int:
        rng = self.rng
        r = rng.random()
        if r < 0.01 and sender != self.t.fuzz_member and sender not in self.t.honest:
            # a boundary counter shuts that sender's window for good (so: only made-up senders', or the
            # fuzz member would silence itself after a few hundred frames; honest ids: a finding)
            return rng.choice([0, 1, U64, U64 - 1, 1 << 63, 1 << 62])
        # counters are time-based, as the shell's (``wire.TimeWindowGuard``): the sender's clock in ns,
        # or one above its last
        c = max(self.counters.get(sender, 0) + 1, self.clock_ns())
        self.counters[sender] = c
        if r < 0.03:  # one frame ahead of the sender's stream (1 us, 1 ms, ~18 min: the last is refused)
            return c + rng.choice([1024, 1 << 20, 1 << 40])
        return c


def _halve(msg: Any) -> Any:
    """``msg`` with its largest list-valued field cut in half (to fit one datagram)."""
    if type(msg) is Sharded:
        return sharded(msg.shard, _halve(msg.msg))
    fields = msg._asdict() if hasattr(msg, "_asdict") else {f: getattr(msg, f) for f in msg.__slots__}
    name = max((k for k, v in fields.items() if isinstance(v, list | tuple | dict | bytes)),
               key=lambda k: len(msgpack.packb(fields[k], use_bin_type=True, default=list)))
    v = fields[name]
    if isinstance(v, dict):
        fields[name] = dict(list(v.items())[: len(v) // 2])
    else:
        fields[name] = type(v)(v[: len(v) // 2])
    return type(msg)(**fields)
