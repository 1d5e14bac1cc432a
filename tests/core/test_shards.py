"""Strong-mode shards (``core/shards.py``): K sequencer groups per node, driven by an in-test router.

``ShardNet`` is ``test_strong.Net`` for ``ShardedStrongCore``: virtual time, every datagram through
``wire.encode`` / ``wire.decode`` (so the ``Sharded`` envelope is exercised), a fixed delay, blockable
links, crash / restart from each shard's persisted state (the fold of its ``take_persist_shards()``
deltas, taken before the outbox is sent, as the shell does).

What must hold: every instrument is in one shard and an order id names its shard; each shard's
replicas agree at an equal folded index and an acknowledged request is in that shard's committed
log; leaders spread over the nodes (shard s prefers ``members[s mod N]``) and come back to the
preferred node after a failover settles; requests for every shard (mass cancel, kill switch,
account-wide limit) are fanned out and answered once; a client asking a non-leader hears who leads;
a ``Sharded`` for a shard the node does not run changes nothing.
"""

from __future__ import annotations

import dataclasses
import heapq
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gossipbook.core.errors import RemoteError, WireError
from gossipbook.core.instrument import DEFAULT_INSTRUMENT, Venue
from gossipbook.core.node import E_NO_QUORUM, E_TIMEOUT, OK, Client, reply_size, request_size
from gossipbook.core.ops import CANCEL, CANCEL_ALL, NEW, parse_order_id
from gossipbook.core.risk import DIM_NOTIONAL, HALT, LIMIT, OPERATOR
from gossipbook.core.sequencer import AppendEntries, PersistentState, SequencerConfig, TimeoutNow, apply_delta
from gossipbook.core.shards import ShardedStrongCore, ShardMap, _combine, limit_share, shard_of_order
from gossipbook.core.strong import StrongConfig
from gossipbook.core.wire import (
    MAX_SHARDS,
    ClientQuery,
    ClientReply,
    ClientSubmit,
    Keys,
    LeaderHint,
    decode,
    encode,
    sharded,
)

KEY = bytes(range(32))
ACCOUNT_KEY = bytes(range(2, 34))
MS = 1_000_000
T0 = 1_000_000 * MS
SYMBOLS = ["AAA", "BBB", "CCC", "DDD"]
VENUE = Venue.of([dataclasses.replace(DEFAULT_INSTRUMENT, symbol=s) for s in SYMBOLS])


class ShardNet:
    """N sharded strong nodes on a fake network (fixed delay, blockable links, crash / restart)."""

    def __init__(self, n: int = 4, k: int = 4, seed: int = 1, delay_ns: int = 1 * MS,
                 config: StrongConfig | None = None) -> None:
        self.config = config
        self.ids = [f"n{i + 1}" for i in range(n)]
        self.map = ShardMap.round_robin(SYMBOLS, k)
        self.seed, self.delay, self.now = seed, delay_ns, T0
        self.disk: dict[str, list[PersistentState]] = {nid: [PersistentState()] * k for nid in self.ids}
        self.handed: dict[str, list[list[str]]] = {nid: [[] for _ in range(k)] for nid in self.ids}
        self.nodes: dict[str, ShardedStrongCore] = {}
        self.down: set[str] = set()
        self.blocked: set[tuple[str, str]] = set()
        self.q: list[tuple[int, int, str, bytes]] = []
        self.counter = 0
        self.boots = 0
        self.replies: dict[str, list[tuple[int, Any]]] = {}
        self.digests: dict[tuple[int, int], set[str]] = {}  # (shard, folded index) -> digests seen there
        self.folded: dict[tuple[int, int], tuple[str, int, str]] = {}  # (shard, index) -> (req, code, order id)
        for nid in self.ids:
            self.start(nid)

    def start(self, nid: str) -> None:
        self.down.discard(nid)
        self.boots += 1
        core = ShardedStrongCore(nid, self.ids, VENUE, self.map, random.Random(self.seed * 1000 + self.boots),
                                 self.config, persisted=self.disk[nid], handed=self.handed[nid])
        core.on_shard_fold = lambda s, i, op, out, nid=nid: self._folded(nid, s, i, op, out)
        # (a restart refolds the persisted prefix inside the constructor, before the hook is set)
        self.nodes[nid] = core
        self.flush(nid)

    def _folded(self, nid: str, s: int, index: int, op: Any, out: Any) -> None:
        if op is None or out is None:
            return
        seen = (op.req, out.code, out.order_id)
        prior = self.folded.setdefault((s, index), seen)
        assert prior == seen, f"shard {s} index {index} folded as {seen} on {nid}, as {prior} before"

    def crash(self, nid: str) -> None:
        self.down.add(nid)

    def cut(self, side_a: list[str], side_b: list[str]) -> None:
        self.blocked |= {(a, b) for a in side_a for b in side_b} | {(b, a) for a in side_a for b in side_b}

    def heal(self) -> None:
        self.blocked.clear()

    def flush(self, nid: str) -> None:
        core = self.nodes[nid]
        for s, (d, handed) in enumerate(core.take_persist_shards()):
            if d is not None:
                self.disk[nid][s] = apply_delta(self.disk[nid][s], d)
            self.handed[nid][s] += handed
        for dst, msg in core.outbox():
            self.counter += 1
            if isinstance(dst, Client):  # to a client: signed with its account's credential
                acct = dst.account or "anyone"
                got = decode(encode(msg, nid, self.counter, ACCOUNT_KEY, acct), Keys(None, {acct: ACCOUNT_KEY})).msg
                self.replies.setdefault(got.req, []).append((self.now, got))
                continue
            if (nid, dst) not in self.blocked:
                heapq.heappush(self.q, (self.now + self.delay, self.counter, dst, encode(msg, nid, self.counter, KEY)))
        for s, g in enumerate(core.groups):
            self.digests.setdefault((s, g.replica.index), set()).add(g.replica.digest())

    def run(self, dt_ns: int) -> None:
        end = self.now + dt_ns
        while True:
            live = [n for n in self.ids if n not in self.down]
            tick_at = min((self.nodes[n].next_deadline(), n) for n in live)
            msg_at = self.q[0][0] if self.q else end + 1
            t = min(tick_at[0], msg_at)
            if t > end:
                self.now = end
                return
            self.now = max(self.now, t)
            if msg_at <= tick_at[0]:
                _t, _n, dst, data = heapq.heappop(self.q)
                if dst in self.down:
                    continue
                f = decode(data, KEY)
                self.nodes[dst].receive(f.msg, f.sender, None, self.now)
                self.flush(dst)
            else:
                self.nodes[tick_at[1]].tick(self.now)
                self.flush(tick_at[1])

    def submit(self, nid: str, msg: Any, account: str = "alice", budget_addr: Any = ("127.0.0.1", 9)) -> None:
        self.nodes[nid].receive(msg, "client-1", budget_addr, self.now, account)
        self.flush(nid)

    def query(self, nid: str, q: ClientQuery, account: str) -> Any:
        """A query's payload, answering an address check (a reply over the source's budget) as the
        wire client does: again with the cookie."""
        self.submit(nid, q, account)
        self.run(5 * MS)
        rep = self.replies[q.req][-1][1]
        if rep.code == 12:
            self.submit(nid, q._replace(req=f"{q.req}#{rep.message}"), account)
            self.run(5 * MS)
            rep = self.replies[q.req][-1][1]
        assert rep.code == OK, rep
        return rep.payload

    def leaders(self) -> list[str | None]:
        """Each shard's leader, if exactly one live node leads it and every live node follows it."""
        out: list[str | None] = []
        live = [n for n in self.ids if n not in self.down]
        for s in range(self.map.k):
            lead = {n for n in live if self.nodes[n].groups[s].seq.role == "leader"}
            known = {self.nodes[n].groups[s].seq.leader() for n in live}
            out.append(next(iter(lead)) if len(lead) == 1 and known == lead else None)
        return out

    def settle(self, want: list[str] | None = None, limit_ns: int = 6_000 * MS) -> list[str | None]:
        t0 = self.now
        while self.now - t0 < limit_ns:
            lead = self.leaders()
            if None not in lead and (want is None or lead == want):
                return lead
            self.run(20 * MS)
        raise AssertionError(f"leaders {self.leaders()} (wanted {want}) after {limit_ns / 1e9} s")

    def reply(self, req: str, limit_ns: int = 3_000 * MS) -> ClientReply:
        t0 = self.now
        while not any(type(m) is ClientReply for _t, m in self.replies.get(req, ())):
            if self.now - t0 > limit_ns:
                raise AssertionError(f"no reply to {req} within {limit_ns / 1e9} s")
            self.run(1 * MS)
        return next(m for _t, m in self.replies[req] if type(m) is ClientReply)

    def assert_agree(self) -> None:
        bad = {k: d for k, d in self.digests.items() if len(d) > 1}
        assert not bad, f"different digests at one (shard, folded index): {bad}"


_n = iter(range(1, 1 << 30))


def new(symbol: str, side: int = 0, price: int = 10_000, qty: int = 5) -> ClientSubmit:
    return ClientSubmit(f"r{next(_n)}", NEW, symbol, "", side, price, qty, 0, 0, 3000)


def cancel(oid: str) -> ClientSubmit:
    return ClientSubmit(f"r{next(_n)}", CANCEL, "", oid, 0, 0, 0, 0, 0, 3000)


# ---- the map --------------------------------------------------------------------------------------
@given(symbols=st.lists(st.text("ABCDEFGHIJ", min_size=1, max_size=4), unique=True, min_size=1, max_size=30),
       k=st.integers(1, 12))
def test_round_robin_puts_every_instrument_in_exactly_one_shard(symbols: list[str], k: int) -> None:
    m = ShardMap.round_robin(symbols, k)
    assert m.k == k and sorted(s for shard in m.shards for s in shard) == sorted(symbols)
    assert all(m.of_symbol(s) == i % k for i, s in enumerate(symbols))
    sizes = [len(shard) for shard in m.shards]
    assert max(sizes) - min(sizes) <= 1  # spread evenly


@given(origin=st.text("abn1234-_.", min_size=1, max_size=12), index=st.integers(1, 1 << 40),
       s=st.integers(0, 300), k=st.integers(1, 256))
def test_an_order_id_names_its_shard(origin: str, index: int, s: int, k: int) -> None:
    oid = f"{origin}#{s}:{index}" if s else f"{origin}:{index}"
    assert shard_of_order(oid, k) == (s if s < k else 0)  # a shard this cluster lacks: shard 0 says "unknown"
    assert parse_order_id(oid) is not None


@given(limit=st.integers(0, 1 << 53), k=st.integers(1, 64))
def test_limit_shares_add_up_to_the_limit(limit: int, k: int) -> None:
    shares = [limit_share(limit, s, k) for s in range(k)]
    assert sum(shares) == limit and max(shares) - min(shares) <= 1


def test_a_map_refuses_an_instrument_in_two_shards() -> None:
    with pytest.raises(ValueError, match="in shards 0 and 1"):
        ShardMap([["AAA"], ["AAA"]])
    with pytest.raises(ValueError, match="in no shard"):
        ShardedStrongCore("n1", ["n1"], VENUE, ShardMap([["AAA"], ["BBB"]]))


# ---- routing, leaders, hints -------------------------------------------------------------------------
def test_leaders_spread_and_orders_commit_in_their_shard_through_any_node() -> None:
    net = ShardNet()
    assert net.settle(want=["n1", "n2", "n3", "n4"]) == ["n1", "n2", "n3", "n4"]  # shard s prefers members[s]
    ids: dict[str, str] = {}
    for sym in SYMBOLS:
        for nid in net.ids:
            m = new(sym, side=int(nid[1:]) % 2)
            net.submit(nid, m)
            rep = net.reply(m.req)
            assert rep.code == OK, rep
            ids[m.req] = rep.order_id
            s = SYMBOLS.index(sym)
            assert shard_of_order(rep.order_id, 4) == s and (s == 0) == ("#" not in rep.order_id)
    net.run(100 * MS)
    for nid in net.ids:  # every node holds every shard's books, the same at the same index
        books = net.nodes[nid].replica.books
        assert sorted(books) == SYMBOLS
        assert all(len(books[s]) > 0 for s in SYMBOLS)
    assert len({net.nodes[n].replica.digest() for n in net.ids}) == 1
    net.assert_agree()
    # a cancel goes to the shard its order id names, from any node
    some = ids[next(iter(ids))]
    m = cancel(next(o for o in ids.values() if "#2:" in o))
    net.submit("n1", m)
    assert net.reply(m.req).code == OK
    m2 = cancel(some)
    net.submit("n4", m2)
    assert net.reply(m2.req).code in (OK, 2)  # (it may have traded away)


def test_a_client_asking_a_non_leader_hears_who_leads_unless_the_reply_budget_is_spent() -> None:
    net = ShardNet()
    net.settle(want=["n1", "n2", "n3", "n4"])
    m = new("CCC")  # shard 2, led by n3
    net.submit("n1", m)
    got = [msg for _t, msg in net.replies[m.req]] if net.reply(m.req) else []
    assert got[0] == LeaderHint(m.req, 2, "n3") and type(got[1]) is ClientReply and got[1].code == OK
    m = new("AAA")  # shard 0: n1 leads it, nothing to hint
    net.submit("n1", m)
    net.reply(m.req)
    assert [type(msg) for _t, msg in net.replies[m.req]] == [ClientReply]
    # a reply that carries a trade fills the budget of an unproven source (3x its request): no hint
    for _ in range(3):
        rest = new("CCC", side=1, price=10_005, qty=1)  # (above alice's resting buy: they rest)
        net.submit("n3", rest, account="bob")
        assert net.reply(rest.req).code == OK
    take = ClientSubmit("t1", NEW, "CCC", "", 0, 10_005, 3, 0, 0, 3000)
    net.submit("n1", take)
    rep = net.reply(take.req)
    assert rep.code == OK and len(rep.trades) == 3
    assert [type(msg) for _t, msg in net.replies[take.req]] == [ClientReply]
    assert reply_size(rep, "n1", "alice") + reply_size(LeaderHint("t1", 2, "n3"), "n1", "alice") > \
        3 * request_size(take, "alice")
    hints = sum(net.nodes[n].counters["leader_hints"] for n in net.ids)
    assert hints == 1


def test_a_failover_moves_a_shard_and_the_preferred_node_takes_it_back() -> None:
    net = ShardNet(seed=3)
    net.settle(want=["n1", "n2", "n3", "n4"])
    net.crash("n2")  # leads shard 1
    t0 = net.now
    lead = net.settle()
    assert lead[1] not in (None, "n2") and lead[0] == "n1" and lead[2] == "n3" and lead[3] == "n4"
    m = new("BBB")
    net.submit("n3", m)
    assert net.reply(m.req).code == OK
    assert net.now - t0 < 2_000 * MS  # shard 1 commits again within 2 s
    net.start("n2")
    net.settle(want=["n1", "n2", "n3", "n4"], limit_ns=5_000 * MS)  # handed back once n2 caught up
    assert sum(net.nodes[n].groups[1].seq.counters["transfers_sent"] for n in net.ids) >= 1
    assert net.nodes["n2"].groups[1].seq.counters["transfers_taken"] == 1
    m = new("BBB")
    net.submit("n1", m)
    assert net.reply(m.req).code == OK
    net.run(200 * MS)
    net.assert_agree()


def test_leadership_comes_back_under_steady_load() -> None:
    """Orders for shard 1 every millisecond while n2 returns: the leader pauses appends for the
    hand-over, so n2 catches up and takes shard 1 back; every order sent meanwhile is answered ok."""
    quick = StrongConfig(sequencer=SequencerConfig(max_batch=16, max_inflight=16, transfer_settle_ns=300 * MS))
    net = ShardNet(seed=5, config=quick)
    net.settle(want=["n1", "n2", "n3", "n4"])
    net.crash("n2")
    net.settle()
    net.start("n2")
    sent = []
    t0 = net.now
    while net.now - t0 < 1_500 * MS and net.leaders()[1] != "n2":
        m = new("BBB", side=len(sent) % 2, price=10_000 + len(sent) % 7)
        net.submit(["n1", "n3", "n4"][len(sent) % 3], m)  # one a millisecond: appends always in flight
        sent.append(m.req)
        net.run(1 * MS)
    assert net.leaders()[1] == "n2", net.leaders()
    assert len(sent) > 300  # (the hand-over waits 300 ms to settle here: all of it under load)
    codes = [net.reply(req, limit_ns=5_000 * MS).code for req in sent]
    assert codes.count(OK) == len(codes), {c: codes.count(c) for c in set(codes)}
    net.assert_agree()


def test_a_mass_cancel_of_every_symbol_is_fanned_out_and_answered_once() -> None:
    net = ShardNet()
    net.settle()
    for sym in SYMBOLS:
        for _ in range(2):
            m = new(sym)
            net.submit("n2", m)
            assert net.reply(m.req).code == OK
    other = new("DDD", side=0)
    net.submit("n2", other, account="bob")
    net.reply(other.req)
    mc = ClientSubmit("mass-1", CANCEL_ALL, "", "", 0, 0, 0, 0, 0, 3000)
    net.submit("n3", mc)
    rep = net.reply(mc.req)
    assert rep.code == OK and rep.message == "mass cancel: 8 orders cancelled (4 shards)", rep
    assert [type(m) for _t, m in net.replies[mc.req]] == [ClientReply]  # one answer, no hint
    net.run(50 * MS)
    books = net.nodes["n1"].replica.books
    assert all(not b.orders_of("alice") for b in books.values()) and books["DDD"].orders_of("bob")
    assert net.nodes["n3"].counters["fanouts"] == 1 and not net.nodes["n3"]._fan
    # a retry of the same request: every shard answers from what it committed, nothing is cancelled twice
    net.replies.pop(mc.req)
    net.submit("n3", mc)
    assert net.reply(mc.req).code == OK
    net.run(50 * MS)
    assert sum(g.replica.counters["duplicates"] for g in net.nodes["n1"].groups) == 0  # (answered from caches)


def test_a_fan_out_on_a_node_paused_past_its_deadline_is_answered_once() -> None:
    """n1, cut off, takes a mass cancel (every shard waits), then freezes past the request's
    deadline; the client's retry is its first input when it resumes. Every shard's timeout lands in
    the one fan-out (simulator seed 24 once got a shard's raw answer, sent on its own, when the
    fan-out expired in the tick that made its shards answer)."""
    net = ShardNet(n=3, k=3)
    net.settle()
    net.cut(["n1"], ["n2", "n3"])
    mc = ClientSubmit("mass-p", CANCEL_ALL, "", "", 0, 0, 0, 0, 0, 1000)
    net.submit("n1", mc)
    net.down.add("n1")  # paused: no input, no timers, state kept
    net.run(2_000 * MS)
    net.down.discard("n1")
    net.heal()
    net.submit("n1", mc)  # the retry, past the fan-out's deadline
    net.run(20 * MS)
    got = [m for _t, m in net.replies.get(mc.req, ())]
    assert len(got) == 1 and type(got[0]) is ClientReply, got
    assert got[0].code in (E_TIMEOUT, E_NO_QUORUM) and "shard 0:" in got[0].message, got[0]
    assert net.nodes["n1"].counters["fanouts_expired"] == 0


def test_the_kill_switch_and_an_account_wide_limit_reach_every_shard() -> None:
    net = ShardNet()
    net.settle()
    lim = ClientSubmit("lim-1", LIMIT, "", "alice", 0, 0, 1_000_003, DIM_NOTIONAL, 0, 3000)
    net.submit("n1", lim, account=OPERATOR)
    assert net.reply(lim.req).code == OK
    net.run(50 * MS)
    for nid in net.ids:  # split: the shards' shares add up to the limit
        shares = [sum(v for (a, _s, _c), v in g.replica.risk.state.limits.items() if a == "alice")
                  for g in net.nodes[nid].groups]
        assert shares == [250_001, 250_001, 250_001, 250_000]
    payload = net.query("n2", ClientQuery("q-risk", "risk", "alice", 0), OPERATOR)
    assert payload["accounts"]["alice"]["limits"][0]["limit"] == 1_000_003  # the shares, summed
    for sym in SYMBOLS:
        m = new(sym)
        net.submit("n4", m)
        assert net.reply(m.req).code == OK
    halt = ClientSubmit("halt-1", HALT, "", "alice", 0, 0, 0, 0, 0, 3000)
    net.submit("n2", halt, account=OPERATOR)
    rep = net.reply(halt.req)
    assert rep.code == OK and "4 orders cancelled" in rep.message, rep
    m = new("CCC")
    net.submit("n1", m)
    assert net.reply(m.req).code == 14  # disabled in every shard


def test_a_fan_out_answer_says_which_shards_did_it() -> None:
    """``_combine`` (pure): OK only if every shard said OK; else the worst first, and who did it."""
    dst = Client(("h", 1), "alice")
    ok = {s: (dst, ClientReply("r", OK, f"mass cancel: {s} order{'' if s == 1 else 's'} cancelled", f"n1#{s}:9",
                               2, [])) for s in range(3)}
    assert _combine(ok)[1].message == "mass cancel: 3 orders cancelled (3 shards)"
    mixed = dict(ok)
    mixed[1] = (dst, ClientReply("r", E_NO_QUORUM, "no quorum: ...", "", 0, []))
    rep = _combine(mixed)[1]
    assert rep.code == E_NO_QUORUM and "shard 1: no quorum" in rep.message and "shards 0, 2: done" in rep.message
    mixed[2] = (dst, ClientReply("r", E_TIMEOUT, "timeout: ...", "", 0, []))
    assert _combine(mixed)[1].code == E_NO_QUORUM


# ---- hostile input ---------------------------------------------------------------------------------
def test_a_message_for_a_shard_the_node_does_not_run_changes_nothing() -> None:
    net = ShardNet(n=3, k=2)
    net.settle()
    core = net.nodes["n1"]
    before = (core.replica.digest(), [g.seq.term for g in core.groups], core.status()["counters"]["stale_messages"])
    for bad in (sharded(2, AppendEntries(1 << 20, 0, 0, 0)), sharded(MAX_SHARDS - 1, TimeoutNow(1))):
        with pytest.raises(RemoteError) as e:
            core.receive(decode(encode(bad, "n2", 1, KEY), KEY).msg, "n2", None, net.now)
        assert e.value.reason == "bad_shard"
    with pytest.raises(WireError):  # past the wire's bound: never reaches the core
        decode(encode(sharded(MAX_SHARDS, TimeoutNow(1)), "n2", 1, KEY), KEY)
    with pytest.raises(RemoteError) as e:
        core.receive(sharded(1, TimeoutNow(1)), "n2", None, net.now, account="alice")
    assert e.value.reason == "not_peer"
    assert (core.replica.digest(), [g.seq.term for g in core.groups],
            core.status()["counters"]["stale_messages"]) == before
    assert core.counters["shard_refused"] == 2


def test_a_stale_timeout_now_is_ignored() -> None:
    net = ShardNet(n=3, k=3)
    lead = net.settle(want=["n1", "n2", "n3"])
    follower = net.nodes["n3"].groups[0]  # led by n1
    term = follower.seq.term
    for src, t in (("n2", term), ("n1", term - 1), ("n1", term + 5)):  # not the leader / old / future term
        follower.seq.receive(TimeoutNow(t), src, net.now)
    assert follower.seq.term == term and follower.seq.counters["transfers_taken"] == 0
    assert net.leaders() == lead


# ---- many requests, faults: a stateful model --------------------------------------------------------
class ShardedCluster(RuleBasedStateMachine):
    """Random orders, cancels and mass cancels through random nodes of a 3-node, 3-shard cluster
    under crashes, restarts and partitions: per shard, the replicas agree at every folded index, an
    acknowledged request is in its shard's committed log with the outcome it was told, and after the
    faults heal every shard has one leader and every node the same books."""

    def __init__(self) -> None:
        super().__init__()
        self.net = ShardNet(n=3, k=3, seed=random.Random(0).randint(1, 99))
        self.net.settle()
        self.acked: dict[str, tuple[int, ClientReply]] = {}
        self.sent: list[tuple[str, ClientSubmit]] = []

    @rule(sym=st.sampled_from(SYMBOLS), node=st.sampled_from(["n1", "n2", "n3"]), side=st.integers(0, 1),
          price=st.integers(9_990, 10_010))
    def order(self, sym: str, node: str, side: int, price: int) -> None:
        if node in self.net.down:
            return
        m = new(sym, side, price)
        self.sent.append((node, m))
        self.net.submit(node, m)

    @precondition(lambda self: self.acked)
    @rule(node=st.sampled_from(["n1", "n2", "n3"]), data=st.data())
    def cancel_one(self, node: str, data: st.DataObject) -> None:
        if node in self.net.down:
            return
        oid = data.draw(st.sampled_from(sorted(r.order_id for _s, r in self.acked.values() if r.order_id)))
        m = cancel(oid)
        self.sent.append((node, m))
        self.net.submit(node, m)

    @rule(node=st.sampled_from(["n1", "n2", "n3"]))
    def mass_cancel(self, node: str) -> None:
        if node not in self.net.down:
            m = ClientSubmit(f"r{next(_n)}", CANCEL_ALL, "", "", 0, 0, 0, 0, 0, 3000)
            self.sent.append((node, m))
            self.net.submit(node, m)

    @rule(node=st.sampled_from(["n1", "n2", "n3"]))
    def crash_or_restart(self, node: str) -> None:
        if node in self.net.down:
            self.net.start(node)
        elif not self.net.down:
            self.net.crash(node)

    @rule(alone=st.sampled_from(["n1", "n2", "n3"]))
    def partition_or_heal(self, alone: str) -> None:
        if self.net.blocked:
            self.net.heal()
        else:
            self.net.cut([alone], [n for n in self.net.ids if n != alone])

    @rule(ms=st.integers(1, 400))
    def run(self, ms: int) -> None:
        self.net.run(ms * MS)
        self._collect()

    def _collect(self) -> None:
        for _node, m in self.sent:
            for _t, rep in self.net.replies.get(m.req, ()):
                if type(rep) is ClientReply and rep.code == OK and m.kind != CANCEL_ALL:
                    self.acked.setdefault(m.req, (self.net.map.of_request(m), rep))

    @invariant()
    def shards_agree_and_acks_are_committed(self) -> None:
        self.net.assert_agree()
        folded = {(s, req): (code, oid) for (s, _i), (req, code, oid) in self.net.folded.items()}
        for req, (s, rep) in self.acked.items():
            assert folded.get((s, req), (OK, rep.order_id)) == (OK, rep.order_id) or rep.order_id == ""

    def teardown(self) -> None:
        net = self.net
        net.heal()
        for n in list(net.down):
            net.start(n)
        net.settle(limit_ns=8_000 * MS)
        net.run(500 * MS)
        self._collect()
        folded = {(s, req) for (s, _i), (req, _c, _o) in net.folded.items()}
        lost = [req for req, (s, _r) in self.acked.items() if (s, req) not in folded]
        assert not lost, f"acknowledged but in no committed log: {lost}"
        assert len({net.nodes[n].replica.digest() for n in net.ids}) == 1


TestShardedCluster = ShardedCluster.TestCase
TestShardedCluster.settings = settings(max_examples=8, stateful_step_count=25, deadline=None)
