"""Strong-mode shards: one sequencer group per shard of instruments, on the same nodes and sockets.

Everything a node with several sequencer groups decides beyond what each group decides lives
here: which shard an instrument and an order belong to (``ShardMap``), which group a message goes
to, requests that span every shard (fan-out), leader hints for clients, and the node's status as
one view. Each group is a whole ``StrongNodeCore`` (``strong.py``) with its own term, log, leader,
fold, persistence and snapshots; they share the node's membership, clock samples, HLC, fills and
client gate (``StrongNodeCore(primary=...)``), so a node still probes its peers once.

Theory of operation
-------------------
**Shards.** ``ShardMap`` assigns every instrument to exactly one of K shards (``[[shards]]`` in
cluster.toml, else round robin in the order the instruments are listed). Shard s folds only its
instruments (its ``SequencedBooks`` has no other book, so an order for another shard's instrument
that reached it anyway is refused as unknown). Its NEW orders are named ``"<leader>#<s>:<index>"``
(shard 0 keeps ``"<leader>:<index>"``): a cancel or amend names its shard by its order id.

**Messages.** Shard 0's sequencer messages, ``Forward`` and ``ForwardReply`` travel exactly as a
single group's do; shard s >= 1 wraps each in ``wire.Sharded(s, kind, msg)`` (one small int and
the kind more per datagram). Membership runs once, in group 0. A ``Sharded`` naming a shard this
node does not run is refused (``RemoteError``, reason ``bad_shard``) before anything changes.

**Leaders.** Shard s prefers node ``members[s mod N]`` (the members sorted): its sequencer hands
leadership back to that node once a failover has settled (``SequencerConfig.preferred``, Raft's
leadership transfer with ``TimeoutNow``; see ``sequencer.py``), so with K >= N no node leads every
shard while all are up, and a node that comes back takes its shards back within about
``transfer_settle_ns``.

**Requests.** A ``ClientSubmit`` goes to the group of its shard: a NEW, a mass cancel or a
limit naming a symbol by the symbol; a cancel or amend by its order id. That group does what one
group always did (append as leader, or relay to its leader and pass the answer on). When this node
does not lead that shard, a ``LeaderHint(req, shard, leader)`` goes to the client just before the
reply (if the source's reply budget has room), so it can send that shard's next request to the
leader directly.

**Fan-out** (no cross-shard atomicity). A mass cancel of every symbol, an account's kill switch
(``HALT``) and an account-wide risk limit go to every group as K independent requests with the
same request id (each group dedupes its own). Their answers are combined into one reply once all K
came: OK only if every shard said OK (counts summed, e.g. "mass cancel: 7 orders cancelled"), else
the first failure's code with every shard's outcome in the message. What holds: each shard applies
the request at one place in its own log, exactly once; what does not: the shards apply it at
unrelated times, so an order in shard 1 placed after the mass cancel committed there may rest
while shard 2 has not yet cancelled, and a failed reply may mean it happened on some shards (the
message says which). An account-wide limit is split evenly over the shards (shard s holds
``L // K``, plus one for the first ``L % K`` shards): each shard enforces its share exactly, so the
account's exposure summed over shards never exceeds the limit, at the cost of headroom that one
shard cannot borrow from another (give a per-symbol limit for an instrument that needs more).
Pending fan-outs are capped (``MAX_FANOUTS``, refused "rate limited" past it); one outlives the
deadline of every group's wait it started (each copy of the request extends it), so every group's
answer is taken into it, and is dropped after that (counted ``fanouts_expired``: never, with
honest groups). A group's answer to a fan-out already answered (a second copy's, in the same
batch) is dropped (``fanout_parts_dropped``), never sent on its own.

Rules that hold:
- Pure: ``now`` in, messages and events out; randomness from the ``rng`` given.
- Per shard, everything ``strong.py`` promises (OK only for committed requests; equal folds at an
  equal index; the committed logs of a shard are prefixes of one another).
- K = 1 is not this module: a one-shard node is a plain ``StrongNodeCore`` (what the shell builds),
  byte for byte on the wire and on disk.

Deliberate break (tests only): ``breaks={"shared-term"}`` keeps one term and one log record per node
for all its groups, as a multi-Raft that forgot to key its hard state by group would: whenever one
group's term rises every group's does (without an election or a vote), and only group 0's state is
made durable, so a restarted node brings every group back with group 0's term, vote and log. Its
groups then vote again in terms they voted in, and fold another shard's entries as their own; the
simulator's per-shard checker must report it (``commit_conflict``, ``digest_diverged``, ...).
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import RemoteError
from .instrument import Venue
from .membership import Membership
from .node import E_RATE_LIMITED, OK, Client, orders_payload, reply_size, request_size
from .ops import AMEND, CANCEL, CANCEL_ALL, Op, parse_order_id, scoped_req
from .risk import HALT, LIMIT
from .sequencer import MS, PersistDelta, PersistentState, RoleChanged
from .strong import Outcome, StrongConfig, StrongNodeCore, _client_gate, _ParkedWaits
from .wire import (
    MAX_SHARDS,
    ClientQuery,
    ClientReply,
    ClientSubmit,
    LeaderHint,
    QueryReply,
    Sharded,
)
from .wire import sharded as wrap

#: fan-out requests (mass cancel of every symbol, kill switch, account-wide limit) pending at once
MAX_FANOUTS = 1_000
#: fan-outs answered lately, whose shards' further answers (a duplicate copy's, in the same batch) are
#: dropped rather than sent on their own
FANOUTS_DONE_KEPT = 4_096
SHARD_BREAKS = frozenset({"shared-term"})
_COOKIE_LEN = 16  # node.ClientGate's address-check cookie, appended to a request id as "#<hex>"


class ShardMap:
    """Which of K shards each instrument belongs to (every instrument in exactly one)."""

    def __init__(self, shards: Sequence[Sequence[str]]) -> None:
        if not 1 <= len(shards) <= MAX_SHARDS:
            raise ValueError(f"between 1 and {MAX_SHARDS} shards, not {len(shards)}")
        self.shards: tuple[tuple[str, ...], ...] = tuple(tuple(s) for s in shards)
        self._of: dict[str, int] = {}
        for i, syms in enumerate(self.shards):
            for sym in syms:
                if sym in self._of:
                    raise ValueError(f"instrument {sym!r} is in shards {self._of[sym]} and {i}")
                self._of[sym] = i

    @classmethod
    def round_robin(cls, symbols: Iterable[str], k: int) -> ShardMap:
        """Instruments dealt to K shards in order: the i-th to shard ``i mod K``."""
        if k < 1:
            raise ValueError("at least one shard")
        out: list[list[str]] = [[] for _ in range(k)]
        for i, sym in enumerate(symbols):
            out[i % k].append(sym)
        return cls(out)

    @property
    def k(self) -> int:
        return len(self.shards)

    def of_symbol(self, symbol: str) -> int:
        """The shard of ``symbol`` (0 for one no shard holds: shard 0 then says it is unknown)."""
        return self._of.get(symbol, 0)

    def of_order(self, order_id: str) -> int:
        """The shard an order id names (``"n1#2:17"`` -> 2; ``"n1:17"`` -> 0; nonsense -> 0)."""
        return shard_of_order(order_id, self.k)

    def of_request(self, m: ClientSubmit) -> int:
        """The shard one request goes to (not for a fan-out: see ``fans_out``)."""
        if m.kind in (CANCEL, AMEND):
            return self.of_order(m.order_id)
        return self.of_symbol(m.symbol)

    def fans_out(self, m: ClientSubmit) -> bool:
        """Whether ``m`` goes to every shard: a mass cancel of every symbol, the kill switch, an
        account-wide limit."""
        return self.k > 1 and (m.kind == HALT or (m.kind in (CANCEL_ALL, LIMIT) and not m.symbol))

    def venue(self, venue: Venue, s: int) -> Venue:
        """``venue`` with shard ``s``'s instruments only (hooks and class kept)."""
        return dataclasses.replace(venue, instruments={sym: venue.instruments[sym] for sym in self.shards[s]
                                                       if sym in venue.instruments})

    def preferred(self, s: int, members: Sequence[str]) -> str:
        """The node shard ``s`` prefers as its leader: ``members[s mod N]`` of the sorted members."""
        ms = sorted(members)
        return ms[s % len(ms)]

    def describe(self) -> list[list[str]]:
        return [list(s) for s in self.shards]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ShardMap) and other.shards == self.shards

    def __hash__(self) -> int:
        return hash(self.shards)

    def __repr__(self) -> str:
        return f"ShardMap({self.describe()!r})"


def shard_of_order(order_id: str, k: int) -> int:
    """The shard an order id names, for a cluster of ``k`` shards (0 when it names none)."""
    p = parse_order_id(order_id)
    if p is None:
        return 0
    _origin, sep, tag = p[0].rpartition("#")
    if not sep or not tag.isdigit():
        return 0
    s = int(tag)
    return s if 0 < s < k else 0


def limit_share(limit: int, s: int, k: int) -> int:
    """Shard ``s``'s share of an account-wide limit: even, the remainder to the first shards (the
    shares add up to ``limit``)."""
    return limit // k + (1 if s < limit % k else 0)


@dataclass(frozen=True, slots=True)
class ShardRoleChanged(RoleChanged):
    """``RoleChanged`` of sequencer group ``shard`` (a sharded node reports every group's)."""

    shard: int = 0


class _VenueWithShards:
    """What membership's venue check compares: the venue's description and the shard map, so a
    node configured with other shards is refused like one with another venue."""

    def __init__(self, venue: Venue, shards: ShardMap) -> None:
        self._venue, self._shards = venue, shards

    def describe(self) -> dict[str, Any]:
        return {**self._venue.describe(), "shards": self._shards.describe()}


@dataclass(slots=True)
class _FanOut:
    """A request sent to every group: the parts answered so far (shard -> reply destination, reply)."""

    deadline: int
    parts: dict[int, tuple[Client, ClientReply]] = field(default_factory=dict)


class _Books:
    """The read side of one ``SequencedBooks`` over every shard (status, the demo, ``Node.book``):
    ``books`` holds every instrument's, ``digest`` hashes the shards' digests in order."""

    def __init__(self, core: ShardedStrongCore) -> None:
        self._core = core

    @property
    def parts(self) -> list[Any]:
        return [g.replica for g in self._core.groups]

    @property
    def books(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for r in self.parts:
            out.update(r.books)
        return out

    @property
    def vv(self) -> dict[str, int]:
        return {("log" if s == 0 else f"log#{s}"): r.index for s, r in enumerate(self.parts)}

    def version_vector(self) -> dict[str, int]:
        return self.vv

    @property
    def index(self) -> int:
        return sum(r.index for r in self.parts)

    @property
    def op_count(self) -> int:
        return sum(r.op_count for r in self.parts)

    @property
    def trade_count(self) -> int:
        return sum(r.trade_count for r in self.parts)

    def trades_final(self) -> int:
        return self.trade_count

    @property
    def last_stamp(self) -> Any:
        return max(r.last_stamp for r in self.parts)

    @property
    def counters(self) -> dict[str, int]:
        return _summed(r.counters for r in self.parts)

    def digest(self) -> str:
        h = hashlib.blake2b(digest_size=16)
        for r in self.parts:
            h.update(bytes.fromhex(r.digest()))
        return h.hexdigest()

    def find(self, order_id: str) -> Any:
        return self._core.groups[self._core.map.of_order(order_id)].replica.find(order_id)


def _summed(dicts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for d in dicts:
        for k, v in d.items():
            if type(v) is int and type(out.get(k, 0)) is int:
                out[k] = out.get(k, 0) + v
            else:
                out.setdefault(k, v)
    return out


_ORDERS = re.compile(r"(\d+) orders?\b")


def _combine(parts: dict[int, tuple[Client, ClientReply]]) -> tuple[Client, ClientReply]:
    """One reply for a fan-out's K answers (see "Fan-out" in the module header)."""
    order = sorted(parts)
    dst, first = parts[order[0]]
    bad = [s for s in order if parts[s][1].code != OK]
    if not bad:
        msgs = [parts[s][1].message for s in order]
        counts = [_ORDERS.search(m) for m in msgs]
        if all(counts) and len({_ORDERS.sub("N", m) for m in msgs}) == 1:
            n = sum(int(c.group(1)) for c in counts if c is not None)
            text = _ORDERS.sub(f"{n} order{'' if n == 1 else 's'}", msgs[0], count=1)
        else:
            text = msgs[0] if len(set(msgs)) == 1 else "; ".join(f"shard {s}: {m}" for s, m in zip(order, msgs,
                                                                                                  strict=True))
        rows = [r for s in order for r in parts[s][1].trades]
        return dst, ClientReply(first.req, OK, f"{text} ({len(order)} shards)", first.order_id,
                                min(parts[s][1].level for s in order), rows)
    worst = parts[bad[0]][1]
    ok = [str(s) for s in order if s not in bad]
    text = "; ".join(f"shard {s}: {parts[s][1].message}" for s in bad)
    if ok:
        text += f"; shard{'s' if len(ok) > 1 else ''} {', '.join(ok)}: done (no cross-shard atomicity)"
    return dst, ClientReply(first.req, worst.code, text[:1000], worst.order_id, 0, [])


def _strip_cookie(req: str) -> str:
    n = len(req) - _COOKIE_LEN - 1
    if n >= 1 and req[n] == "#" and all(c in "0123456789abcdef" for c in req[n + 1:]):
        return req[:n]
    return req


class ShardedStrongCore:
    """Everything one strong-mode node with K > 1 sequencer groups decides; the driver interface of
    ``StrongNodeCore`` (``receive``, ``tick``, ``outbox``, ``events``, ``next_deadline``, ``status``,
    ``leave``), with ``take_persist_shards()`` in place of ``take_persist()`` / ``take_handed()``."""

    mode = "strong"

    def __init__(self, node_id: str, members: Iterable[str], venue: Venue, shards: ShardMap,
                 rng: random.Random | None = None, config: StrongConfig | None = None,
                 persisted: Sequence[PersistentState | None] = (), incarnation: int = 0,
                 handed: Sequence[Iterable[str]] = (), breaks: Iterable[str] = (),
                 on_shard_fold: Callable[[int, int, Op | None, Outcome | None], None] | None = None) -> None:
        """``persisted[s]`` / ``handed[s]``: group s's stored sequencer state and handed request
        ids (``storage.py``: one data dir per shard). ``on_shard_fold``: see the attribute (given
        here, it also sees a restart's refold of the persisted prefix)."""
        self.node_id = node_id
        self.map = shards
        self.venue = venue
        self.config = config or StrongConfig()
        self.breaks = frozenset(breaks)
        unknown = self.breaks - SHARD_BREAKS
        if unknown:
            raise ValueError(f"unknown shard breaks {sorted(unknown)}; known: {sorted(SHARD_BREAKS)}")
        missing = sorted(set(venue.instruments) - set(shards._of))
        if missing:
            raise ValueError(f"instruments in no shard: {', '.join(missing)}")
        members = sorted(set(members) | {node_id})
        self.peers = [m for m in members if m != node_id]
        rng = rng or random.Random(0)
        if self.breaks and persisted:  # shared-term: one stored record, group 0's, for every group
            persisted, handed = [persisted[0]] * shards.k, [list(handed[0]) if handed else []] * shards.k
        #: called as ``on_fold(index, op, outcome)`` for every committed entry of every shard (the
        #: runner's trace, ``Node``'s events); ``on_shard_fold(shard, index, op, outcome)`` too
        self.on_fold: Callable[[int, Op | None, Outcome | None], None] | None = None
        self.on_shard_fold = on_shard_fold
        self.groups: list[StrongNodeCore] = []
        for s in range(shards.k):
            seq = dataclasses.replace(self.config.sequencer, preferred=shards.preferred(s, members))
            g = StrongNodeCore(node_id, members, shards.venue(venue, s), random.Random(rng.getrandbits(64)),
                               dataclasses.replace(self.config, sequencer=seq),
                               persisted=persisted[s] if s < len(persisted) else None, incarnation=incarnation,
                               on_fold=self._folder(s), handed=handed[s] if s < len(handed) else (),
                               shard=s, primary=self.groups[0] if self.groups else None)
            if s == 0:  # the node's one membership compares the whole venue and the shard map
                g.membership = Membership(node_id, g.peers, random.Random(rng.getrandbits(64)),
                                          self.config.membership, incarnation=incarnation,
                                          venue=_VenueWithShards(venue, shards))  # type: ignore[arg-type]
            self.groups.append(g)
        for g in self.groups[1:]:
            g.membership = self.groups[0].membership
        if shards.k > 1:  # (strong_members.py: one change would have to go through every group's log)
            self.groups[0].members_fixed = (f"this cluster runs {shards.k} shards: strong-mode membership changes "
                                            f"are for one group only (docs/operations.md, \"Strong mode\")")
        gate = self.gate = _client_gate(self.groups[0])  # one rate and one reply budget per client
        for g in self.groups[1:]:
            g.__dict__["_client_gate"] = gate
            g._waits = _ParkedWaits(g._waits)
        self.replica = _Books(self)
        self._out: list[tuple[Client | str, Any]] = []
        self._events: list[Any] = []
        self._fan: dict[str, _FanOut] = {}
        self._fan_done: OrderedDict[str, None] = OrderedDict()
        self._now = 0
        self.status_extra: Callable[[], dict[str, Any]] | None = None
        self.status_info: dict[str, Any] = {}
        self.counters: dict[str, int] = {"fanouts": 0, "fanouts_refused": 0, "fanouts_expired": 0,
                                         "fanout_parts_dropped": 0, "leader_hints": 0, "shard_refused": 0}

    # ---- what the shell and the demo read -------------------------------------------------------------
    @property
    def membership(self) -> Membership:
        return self.groups[0].membership

    @property
    def clock(self) -> Any:
        return self.groups[0].clock

    @property
    def hlc(self) -> Any:
        return self.groups[0].hlc

    @property
    def fills(self) -> Any:
        return self.groups[0].fills

    @property
    def ready(self) -> bool:
        return all(g.ready for g in self.groups)

    @property
    def clock_in_sync(self) -> bool:
        return self.groups[0].clock_in_sync

    @property
    def accepting(self) -> bool:
        return self.groups[0].accepting

    @accepting.setter
    def accepting(self, value: bool) -> None:
        for g in self.groups:
            g.accepting = value

    def leaders(self) -> list[str | None]:
        """Each shard's leader as this node knows it."""
        return [g.seq.leader() for g in self.groups]

    def _folder(self, s: int) -> Callable[[int, Op | None, Outcome | None], None]:
        def folded(index: int, op: Op | None, out: Outcome | None) -> None:
            if self.on_shard_fold is not None:
                self.on_shard_fold(s, index, op, out)
            if self.on_fold is not None:
                self.on_fold(index, op, out)
        return folded

    # ---- inputs ------------------------------------------------------------------------------------
    def receive(self, msg: Any, src: str, reply_to: Any, now: int, account: str | None = None) -> None:
        """One validated message (``StrongNodeCore.receive``'s contract), routed to its group."""
        self._now = max(self._now, now)
        t = type(msg)
        if t is Sharded:
            if account is not None:
                raise RemoteError(f"Sharded under account {account}'s credential", reason="not_peer")
            if not 0 <= msg.shard < self.map.k:
                self.counters["shard_refused"] += 1
                raise RemoteError(f"{type(msg.msg).__name__} for shard {msg.shard} from {src}: this node runs "
                                  f"{self.map.k} shards (are the nodes' [[shards]] the same?)", reason="bad_shard")
            self.groups[msg.shard].receive(msg.msg, src, reply_to, now, None)
        elif t is ClientSubmit:
            if self.map.fans_out(msg):
                self._fan_out(msg, src, reply_to, now, account)
            else:
                self.groups[self.map.of_request(msg)].receive(msg, src, reply_to, now, account)
        elif t is ClientQuery:
            self._query(msg, src, reply_to, now, account)
        else:  # shard 0's sequencer and forward messages, membership, venue (and whatever is wrong)
            self.groups[0].receive(msg, src, reply_to, now, account)
        self._shared_term()

    def tick(self, now: int) -> None:
        self._now = max(self._now, now)
        for g in self.groups:
            g.tick(now)
        self._shared_term()

    def leave(self, now: int) -> None:
        self.groups[0].leave(now)

    def _fan_out(self, m: ClientSubmit, src: str, reply_to: Any, now: int, account: str | None) -> None:
        key = scoped_req(account or "", _strip_cookie(m.req))
        f = self._fan.get(key)
        if f is None:
            if len(self._fan) >= MAX_FANOUTS:
                self.counters["fanouts_refused"] += 1
                to = Client(reply_to, account or "", 3 * request_size(m, account or "") if account else 0)
                self._out.append((to, ClientReply(m.req, E_RATE_LIMITED, "too many requests waiting; nothing done",
                                                  "", 0, [])))
                return
            f = self._fan[key] = _FanOut(0)
            self.counters["fanouts"] += 1
        # every group answers a request it waits on by its deadline (90 % of timeout_ms from when it
        # took it): the fan-out outlives the latest one this copy can start
        f.deadline = max(f.deadline, now + max(1, m.timeout_ms) * MS + self.config.forward_retry_ns)
        k = self.map.k
        for s, g in enumerate(self.groups):
            if s in f.parts:
                continue
            part = m._replace(qty=limit_share(m.qty, s, k)) if m.kind == LIMIT else m
            g.receive(part, src, reply_to, now, account)

    def _query(self, q: ClientQuery, src: str, reply_to: Any, now: int, account: str | None) -> None:
        if q.what == "book":
            sym = q.symbol or next(iter(self.venue.instruments))
            self.groups[self.map.of_symbol(sym)].receive(q._replace(symbol=sym), src, reply_to, now, account)
            return
        if q.what not in ("orders", "status", "progress", "risk"):
            self.groups[0].receive(q, src, reply_to, now, account)  # trades (fills are the node's), or unknown
            return
        self.groups[0].counters["client_queries"] += 1
        q, to, refused = self.gate.check(q, Client(reply_to, account or ""), now)
        if refused is not None:
            self._out.append((to, refused))
            return
        if q.what == "orders":
            rows = [(oid, sym, side, price, qty) for g in self.groups for sym in sorted(g.replica.books)
                    for side, price, oid, qty in g.replica.books[sym].orders_of(to.account)]
            payload: Any = orders_payload(self.node_id, to.account, rows)
        elif q.what == "status":
            payload = self.status()
        elif q.what == "progress":
            payload = self.progress()
        else:
            payload = self._risk(to.account, q.symbol)
        self._out.append((to, QueryReply(q.req, OK, "ok", payload)))

    def _risk(self, viewer: str, account: str) -> dict[str, Any]:
        """The risk query over every shard: per account and limit, the shards' limits and use
        summed (an account-wide limit is split over the shards; a per-symbol one is one shard's)."""
        accounts: dict[str, Any] = {}
        counters: dict[str, int] = {}
        truncated = False
        for g in self.groups:
            st = g.replica.risk.status(viewer, account, g.replica.books)
            truncated = truncated or st["truncated"]
            for k, v in st["counters"].items():
                counters[k] = counters.get(k, 0) + v
            for a, row in st["accounts"].items():
                acc = accounts.setdefault(a, {"disabled": False, "limits": {}})
                acc["disabled"] = acc["disabled"] or row["disabled"]
                for lim in row["limits"]:
                    have = acc["limits"].setdefault((lim["symbol"], lim["limit_kind"]), {**lim, "limit": 0, "used": 0})
                    have["limit"] += lim["limit"]
                    have["used"] += lim["used"]
        return {"node": self.node_id, "mode": "strong", "shards": self.map.k, "truncated": truncated,
                "counters": counters,
                "accounts": {a: {"disabled": v["disabled"], "limits": [v["limits"][k] for k in sorted(v["limits"])]}
                             for a, v in sorted(accounts.items())}}

    def _shared_term(self) -> None:
        """The ``shared-term`` break (tests only): one term counter for every group of the node."""
        if not self.breaks:
            return
        top = max(g.seq.term for g in self.groups)
        for g in self.groups:
            if g.seq.term < top:
                g.seq.term = top  # no election, no vote reset: the bug a node-wide term is

    # ---- outputs -----------------------------------------------------------------------------------
    def outbox(self) -> list[tuple[Client | str, Any]]:
        out = self.gate.bound(self._out)
        self._out = []
        for s, g in enumerate(self.groups):
            leader = g.seq.leader()
            for dst, msg in g.outbox():
                if type(dst) is not Client:
                    out.append((dst, wrap(s, msg) if s else msg))
                    continue
                if type(msg) is ClientReply:
                    key = scoped_req(dst.account, msg.req)
                    f = self._fan.get(key)
                    if f is not None:
                        f.parts[s] = (dst, msg)
                        if len(f.parts) == self.map.k:
                            del self._fan[key]
                            self._fan_done[key] = None
                            if len(self._fan_done) > FANOUTS_DONE_KEPT:
                                self._fan_done.popitem(last=False)
                            out.extend(self.gate.bound([_combine(f.parts)]))
                        continue
                    if key in self._fan_done:  # a part of a fan-out answered already (two copies in one batch)
                        self.counters["fanout_parts_dropped"] += 1
                        continue
                    if leader is not None and leader != self.node_id:
                        hint = LeaderHint(msg.req, s, leader)
                        if not dst.budget or (reply_size(hint, self.node_id, dst.account)
                                              + reply_size(msg, self.node_id, dst.account) <= dst.budget):
                            self.counters["leader_hints"] += 1
                            out.append((dst, hint))
                out.append((dst, msg))
        for key, f in list(self._fan.items()):  # after the answers above were taken (a tick's timeouts)
            if self._now > f.deadline:  # cannot happen while a group waits on it: a leftover
                del self._fan[key]
                self.counters["fanouts_expired"] += 1
        return out

    def take_new_ops(self) -> list[Op]:
        """Eventual mode's persistence hook; strong mode persists ``take_persist_shards()`` instead."""
        return []

    def take_persist_shards(self) -> list[tuple[PersistDelta | None, list[str]]]:
        """Per shard, ``StrongNodeCore.take_persist()`` and ``take_handed()``: to be made durable (each
        in its shard's store) before the next ``outbox()`` is sent."""
        out = [(g.take_persist(), g.take_handed()) for g in self.groups]
        if self.breaks:  # shared-term: one record per node, group 0's (see the module header)
            out = [out[0]] + [(None, []) for _ in out[1:]]
        return out

    def events(self) -> list[Any]:
        out, self._events = self._events, []
        for s, g in enumerate(self.groups):
            for ev in g.events():
                if type(ev) is RoleChanged:
                    ev = ShardRoleChanged(ev.role, ev.term, ev.leader, s)
                out.append(ev)
        return out

    def next_deadline(self) -> int:
        d = min(g.next_deadline() for g in self.groups)
        for f in self._fan.values():
            d = min(d, f.deadline + 1)
        return d

    # ---- introspection -----------------------------------------------------------------------------
    def progress(self) -> dict[str, Any]:
        r = self.replica
        return {"id": self.node_id, "ops": r.op_count, "version_vector": r.version_vector(), "pending": 0}

    def shard_status(self) -> list[dict[str, Any]]:
        """Per shard: its instruments, role, term, leader (and the preferred one), indices, ops and
        requests waiting here, and its digest."""
        out = []
        for s, g in enumerate(self.groups):
            st = g.seq.status()
            out.append({"shard": s, "instruments": list(self.map.shards[s]), "role": st["role"], "term": st["term"],
                        "leader": st["leader"], "preferred": g.seq.config.preferred,
                        "commit_index": st["commit_index"], "last_index": st["last_index"],
                        "snapshot_index": st["snapshot_index"], "ops": g.replica.op_count,
                        "trades": g.replica.trade_count, "waiting": len(g._waits), "digest": g.replica.digest(),
                        "transfers": g.seq.counters["transfers_sent"]})
        return out

    def status(self) -> dict[str, Any]:
        """Group 0's status for the node-wide keys (members, peers, clock, role/term/leader of shard
        0), the digest, ops and trades over every shard, each group's counters summed, and
        ``shards``: ``shard_status()``."""
        out = self.groups[0].status()
        r = self.replica
        counters = _summed([{**g.replica.counters, **g.seq.counters, **g.counters, "waiting": len(g._waits)}
                            for g in self.groups] + [self.counters, self.groups[0].gossip.counters])
        counters["clock_samples_rejected"] = self.clock.rejected
        if self.status_extra is not None:
            counters.update(self.status_extra())
        out.update({"digest": r.digest(), "ops": r.op_count, "version_vector": r.version_vector(),
                    "watermark": list(r.last_stamp), "trades_final": r.trade_count, "counters": counters,
                    "accepting": self.accepting, "ready": self.ready,
                    "resting_orders": sum(len(b) for b in r.books.values()), "shards": self.shard_status(),
                    **self.status_info})
        return out


__all__ = ["MAX_FANOUTS", "SHARD_BREAKS", "ShardMap", "ShardRoleChanged", "ShardedStrongCore", "limit_share",
           "shard_of_order"]
