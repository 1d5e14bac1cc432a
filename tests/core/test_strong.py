"""``StrongNodeCore`` (strong mode) driven by a tiny in-test router: virtual time, real wire codec.

``Net`` delivers every datagram through ``wire.encode`` / ``wire.decode`` (so the no-op / 1-tuple
entry encoding is exercised), after a fixed one-way delay, and drops what crosses a blocked link or
goes to a crashed node. Each node's persisted state is the fold of its ``take_persist()`` deltas,
taken before its outbox is sent (the shell's durability rule); a restart builds the node from it.

What must hold (module header of ``gossipbook/core/strong.py``): a submit through a follower is
committed, then acknowledged; a node that cannot reach a leader says "no quorum" within
``no_leader_wait_ns`` (and nothing of that request is ever committed); after the leader crashes a
new one commits; replicas at equal commit index have equal books; an acknowledged order survives a
crash of its leader; a request id folds once however often it is committed.
"""

from __future__ import annotations

import heapq
import random
from typing import Any

import pytest

from gossipbook.core.instrument import Venue
from gossipbook.core.node import E_NO_QUORUM, E_TIMEOUT, E_UNKNOWN_ORDER, OK, Client
from gossipbook.core.ops import AMEND, CANCEL, NEW, Op
from gossipbook.core.sequencer import PersistentState, apply_delta
from gossipbook.core.strong import SequencedBooks, StrongConfig, StrongNodeCore
from gossipbook.core.wire import ClientReply, ClientSubmit, Forward, Keys, decode, encode
from gossipbook.workload.orders import OrderFlow

KEY = bytes(range(32))
ACCOUNT_KEY = bytes(range(2, 34))
MS = 1_000_000
T0 = 1_000_000 * MS


class Net:
    """N strong nodes on a fake network (fixed delay, blockable links, crash / restart)."""

    def __init__(self, n: int = 3, seed: int = 1, delay_ns: int = 1 * MS, config: StrongConfig | None = None,
                 loss: float = 0.0, dup: float = 0.0, jitter_ns: int = 0) -> None:
        self.ids = [f"n{i + 1}" for i in range(n)]
        self.rng = random.Random(seed)
        self.loss, self.dup, self.jitter = loss, dup, jitter_ns
        self.seed = seed
        self.config = config
        self.delay = delay_ns
        self.now = T0
        self.disk: dict[str, PersistentState] = {}
        self.nodes: dict[str, StrongNodeCore] = {}
        self.down: set[str] = set()
        self.blocked: set[tuple[str, str]] = set()
        self.q: list[tuple[int, int, str, bytes]] = []
        self.n_msgs = 0
        self.counter = 0
        self.replies: dict[str, list[tuple[int, ClientReply]]] = {}
        self.digests: dict[int, set[str]] = {}  # commit index -> digests seen on any node there
        for nid in self.ids:
            self.start(nid)

    def start(self, nid: str) -> None:
        self.down.discard(nid)
        self.nodes[nid] = StrongNodeCore(nid, self.ids, rng=random.Random(self.seed * 100 + int(nid[1:])),
                                         config=self.config, persisted=self.disk.get(nid))
        self.flush(nid)

    def crash(self, nid: str) -> None:
        self.down.add(nid)

    def cut(self, side_a: list[str], side_b: list[str]) -> None:
        self.blocked |= {(a, b) for a in side_a for b in side_b} | {(b, a) for a in side_a for b in side_b}

    def heal(self) -> None:
        self.blocked.clear()

    def flush(self, nid: str) -> None:
        core = self.nodes[nid]
        d = core.take_persist()
        if d is not None:
            self.disk[nid] = apply_delta(self.disk.get(nid, PersistentState()), d)
        for dst, msg in core.outbox():
            self.counter += 1
            if isinstance(dst, Client):  # a reply to a client: signed with its account's credential
                data = encode(msg, nid, self.counter, ACCOUNT_KEY, dst.account or "anyone")
                rep = decode(data, Keys(None, {dst.account or "anyone": ACCOUNT_KEY})).msg
                self.replies.setdefault(rep.req, []).append((self.now, rep))
                continue
            data = encode(msg, nid, self.counter, KEY)
            if (nid, dst) not in self.blocked:
                for _copy in range(2 if self.rng.random() < self.dup else 1):
                    if self.rng.random() < self.loss:
                        continue
                    self.n_msgs += 1
                    at = self.now + self.delay + (self.rng.randint(0, self.jitter) if self.jitter else 0)
                    heapq.heappush(self.q, (at, self.n_msgs, dst, data))
        r = core.replica
        self.digests.setdefault(r.index, set()).add(r.digest())

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

    def submit(self, nid: str, msg: ClientSubmit) -> None:
        self.nodes[nid].receive(msg, "client-1", ("127.0.0.1", 9), self.now)
        self.flush(nid)

    def leader(self) -> str | None:
        leaders = {n for n in self.ids if n not in self.down and self.nodes[n].seq.role == "leader"}
        return next(iter(leaders)) if len(leaders) == 1 else None

    def wait_leader(self, limit_ns: int = 3_000 * MS, exclude: str | None = None) -> str:
        t0 = self.now
        while self.now - t0 < limit_ns:
            lead = self.leader()
            if lead is not None and lead != exclude and all(
                    self.nodes[n].seq.leader() == lead for n in self.ids if n not in self.down and
                    not any((n, m) in self.blocked for m in self.ids)):
                return lead
            self.run(10 * MS)
        raise AssertionError(f"no leader within {limit_ns / 1e9} s")

    def reply(self, req: str) -> ClientReply | None:
        got = self.replies.get(req)
        return got[-1][1] if got else None

    def wait_reply(self, req: str, limit_ns: int = 3_000 * MS) -> tuple[int, ClientReply]:
        t0 = self.now
        while req not in self.replies:
            if self.now - t0 > limit_ns:
                raise AssertionError(f"no reply to {req} within {limit_ns / 1e9} s")
            self.run(1 * MS)
        t, rep = self.replies[req][0]
        return t - t0, rep

    def committed_reqs(self, nid: str) -> list[str]:
        """Request ids in the node's log up to its commit index, in order (duplicates kept)."""
        s = self.nodes[nid].seq
        out = []
        for i in range(s.snapshot_index + 1, s.commit_index + 1):
            e = s.entry(i)
            if e is not None and e.value is not None:
                out.append(e.value.req)
        return out


_req = iter(range(1, 1 << 30))


def new(side: int = 0, price: int = 10_000, qty: int = 5, tif: int = 0, timeout_ms: int = 3000) -> ClientSubmit:
    return ClientSubmit(f"r{next(_req)}", NEW, "GBX", "", side, price, qty, tif, 0, timeout_ms)


def cancel(oid: str) -> ClientSubmit:
    return ClientSubmit(f"r{next(_req)}", CANCEL, "GBX", oid, 0, 0, 0, 0, 0, 3000)


def amend(oid: str, price: int, qty: int) -> ClientSubmit:
    return ClientSubmit(f"r{next(_req)}", AMEND, "GBX", oid, 0, price, qty, 0, 0, 3000)


def assert_books_agree(net: Net) -> None:
    bad = {i: d for i, d in net.digests.items() if len(d) > 1}
    assert not bad, f"different digests at one commit index: {bad}"


# ---- the scenarios the issue names ---------------------------------------------------------------
def test_submit_via_a_follower_is_committed_then_acknowledged() -> None:
    net = Net(3)
    lead = net.wait_leader()
    follower = next(n for n in net.ids if n != lead)
    m = new()
    net.submit(follower, m)
    took, rep = net.wait_reply(m.req)
    assert rep.code == OK and rep.level == 2, rep
    assert rep.order_id.startswith(f"{lead}:")
    # acknowledged only once committed: the leader's log holds it at or below its commit index
    assert m.req in net.committed_reqs(lead)
    assert took < 20 * MS  # forward + append + ack round trips at 1 ms each
    net.run(200 * MS)
    assert {net.nodes[n].replica.digest() for n in net.ids} == {net.nodes[lead].replica.digest()}
    # a cancel of that order through the other follower, checked against the committed state
    other = next(n for n in net.ids if n not in (lead, follower))
    c = cancel(rep.order_id)
    net.submit(other, c)
    _t, crep = net.wait_reply(c.req)
    assert crep.code == OK and crep.order_id == rep.order_id
    c2 = cancel(rep.order_id)  # now closed: refused without taking a log index
    net.submit(other, c2)
    _t, crep2 = net.wait_reply(c2.req)
    assert crep2.code == E_UNKNOWN_ORDER and "not open" in crep2.message
    assert c2.req not in net.committed_reqs(lead)
    assert_books_agree(net)


def test_trades_amends_and_retries_fold_the_same_everywhere() -> None:
    net = Net(3, seed=2)
    lead = net.wait_leader()
    f = [n for n in net.ids if n != lead]
    sell = new(side=1, price=10_000, qty=10)
    net.submit(f[0], sell)
    _t, s = net.wait_reply(sell.req)
    a = amend(s.order_id, 10_001, 8)
    net.submit(f[1], a)
    _t, ar = net.wait_reply(a.req)
    assert ar.code == OK
    buy = new(side=0, price=10_001, qty=3)
    net.submit(lead, buy)
    _t, b = net.wait_reply(buy.req)
    assert b.code == OK and [t[1:] for t in b.trades] == [[10_001, 3, s.order_id, b.order_id]]
    # a retry of a committed request gets the same answer, and nothing new is appended
    before = net.nodes[lead].seq.last_index
    net.submit(f[0], sell)
    net.submit(lead, buy)
    net.run(50 * MS)
    assert net.reply(sell.req).order_id == s.order_id and net.reply(buy.req).order_id == b.order_id
    assert net.nodes[lead].seq.last_index == before
    net.run(200 * MS)
    st = [net.nodes[n].status() for n in net.ids]
    assert len({(x["digest"], x["commit_index"], x["trades_final"]) for x in st}) == 1
    assert st[0]["trades_final"] == 1 and st[0]["trades_provisional"] == 0
    assert_books_agree(net)


def test_minority_answers_no_quorum_within_the_bound_and_never_commits_it() -> None:
    cfg = StrongConfig()
    net = Net(3, seed=3, config=cfg)
    lead = net.wait_leader()
    minority = next(n for n in net.ids if n != lead)
    net.cut([minority], [n for n in net.ids if n != minority])
    net.run(1_000 * MS)  # past its election timeout: it knows no leader now
    m = new()
    net.submit(minority, m)
    took, rep = net.wait_reply(m.req)
    assert rep.code == E_NO_QUORUM and "no quorum" in rep.message, rep
    assert took <= cfg.no_leader_wait_ns + 10 * MS
    # the majority side keeps committing
    m2 = new(side=1, price=10_050)
    net.submit(lead, m2)
    assert net.wait_reply(m2.req)[1].code == OK
    net.heal()
    net.run(2_000 * MS)
    for n in net.ids:
        assert m.req not in net.committed_reqs(n)
    assert len({net.nodes[n].replica.digest() for n in net.ids}) == 1
    assert_books_agree(net)


def test_isolated_leader_steps_down_and_then_says_no_quorum() -> None:
    net = Net(3, seed=4)
    lead = net.wait_leader()
    rest = [n for n in net.ids if n != lead]
    net.cut([lead], rest)
    # a submit right at the cut is appended on the old leader but cannot commit: never acknowledged
    early = new()
    net.submit(lead, early)
    net.run(1_000 * MS)
    assert net.nodes[lead].seq.role != "leader"
    late = new()
    net.submit(lead, late)
    took, rep = net.wait_reply(late.req)
    assert rep.code == E_NO_QUORUM and took <= 410 * MS
    _t, rep_early = net.wait_reply(early.req, 5_000 * MS)
    assert rep_early.code == E_TIMEOUT and "may still commit" in rep_early.message
    net.heal()
    net.run(2_000 * MS)
    for n in net.ids:
        assert early.req not in net.committed_reqs(n)  # the new leader overwrote it
    assert len({net.nodes[n].seq.commit_index for n in net.ids}) == 1
    assert_books_agree(net)


@pytest.mark.parametrize("seed", [5, 6, 7])
def test_after_the_leader_crashes_a_new_leader_commits_and_acks_survive(seed: int) -> None:
    net = Net(3, seed=seed)
    lead = net.wait_leader()
    acked = []
    for i in range(5):
        m = new(side=i % 2, price=10_000 + 3 * i)
        net.submit(lead, m)
        acked.append((m.req, net.wait_reply(m.req)[1]))
    net.crash(lead)
    t0 = net.now
    follower = next(n for n in net.ids if n != lead)
    m = new(price=9_000)
    net.submit(follower, m)  # waits for the new leader instead of failing
    took, rep = net.wait_reply(m.req)
    assert rep.code == OK, rep
    new_lead = net.leader()
    assert new_lead not in (None, lead)
    assert net.now - t0 < 2_000 * MS
    for req, _r in acked:
        assert req in net.committed_reqs(new_lead)
    # the crashed node restarts from what it persisted and catches up
    net.start(lead)
    net.run(1_000 * MS)
    assert len({(net.nodes[n].seq.commit_index, net.nodes[n].replica.digest()) for n in net.ids}) == 1
    assert all(net.committed_reqs(n).count(req) == 1 for n in net.ids for req, _r in acked)
    assert_books_agree(net)


def test_random_load_with_partitions_and_crashes_keeps_books_equal_at_equal_index() -> None:
    net = Net(5, seed=8, config=StrongConfig(compact_every=40))
    net.wait_leader()
    rng = random.Random(8)
    flow = OrderFlow(random.Random(9))
    open_orders: list[tuple[str, int]] = []
    sent: list[ClientSubmit] = []
    for step in range(300):
        o = flow.next(open_orders)
        if o.kind == NEW:
            m = new(o.side, o.price or 10_000, o.qty, o.tif)
        elif o.kind == CANCEL:
            m = cancel(o.order_id)
        else:
            m = amend(o.order_id, o.price, o.qty)
        node = rng.choice([n for n in net.ids if n not in net.down])
        net.submit(node, m)
        sent.append(m)
        net.run(rng.randint(1, 8) * MS)
        for s in sent[-20:]:
            r = net.reply(s.req)
            if r is not None and r.code == OK and s.kind == NEW and s.tif == 0:
                if (r.order_id, s.side) not in open_orders:
                    open_orders.append((r.order_id, s.side))
        if step == 60:
            net.cut(["n1", "n2"], ["n3", "n4", "n5"])
        if step == 200:
            net.heal()
        if step == 220:
            lead = net.leader()
            if lead is not None:
                net.crash(lead)
        if step == 270:
            for n in list(net.down):
                net.start(n)
    net.heal()
    net.run(3_000 * MS)
    st = [net.nodes[n].status() for n in net.ids]
    assert len({(s["commit_index"], s["digest"], s["ops"]) for s in st}) == 1, st
    assert_books_agree(net)
    codes = [r.code if (r := net.reply(s.req)) is not None else None for s in sent]
    assert set(codes) <= {OK, E_UNKNOWN_ORDER, E_NO_QUORUM}, codes  # every request answered, none timed out
    assert codes.count(E_NO_QUORUM) > 0  # the minority side refused while cut off
    acked = {s.req for s, c in zip(sent, codes, strict=True) if c == OK}
    assert len(acked) > 150
    leader = net.leader()
    assert leader is not None
    fold = net.nodes[leader].replica
    for req in acked:  # every acknowledged request is in the committed log (the fold remembers it)
        assert f"/{req}" in fold.reqs
    assert max(s["snapshot_index"] for s in st) > 0  # compaction ran


def test_a_lagging_follower_catches_up_from_a_snapshot() -> None:
    net = Net(3, seed=9, config=StrongConfig(compact_every=10))
    lead = net.wait_leader()
    lag = next(n for n in net.ids if n != lead)
    net.cut([lag], [n for n in net.ids if n != lag])
    for i in range(40):
        m = new(side=i % 2, price=10_000 + (i % 7))
        net.submit(lead, m)
        net.run(3 * MS)
    net.run(100 * MS)
    assert net.nodes[lead].seq.snapshot_index > net.nodes[lag].seq.commit_index
    net.heal()
    net.run(1_500 * MS)
    assert net.nodes[lag].replica.counters["snapshots_installed"] >= 1
    assert len({(net.nodes[n].seq.commit_index, net.nodes[n].replica.digest()) for n in net.ids}) == 1
    # and it restarts from its persisted snapshot + log to the same books
    want = net.nodes[lag].replica.digest()
    net.crash(lag)
    net.start(lag)
    assert net.nodes[lag].replica.digest() == want or net.nodes[lag].seq.commit_index < net.nodes[lead].seq.commit_index
    net.run(500 * MS)
    assert net.nodes[lag].replica.digest() == net.nodes[lead].replica.digest()


@pytest.mark.parametrize("seed", range(12))
def test_random_faults_never_ack_a_lost_order_and_never_fold_one_twice(seed: int) -> None:
    """Loss, duplication, reordering, partitions and crashes (seeded); then quiet. Every request
    acknowledged OK is in the committed log; each request id folds at most once; replicas agree at
    every commit index; after the quiet phase everyone has the same commit index and books."""
    rng = random.Random(seed)
    net = Net(rng.choice([3, 5]), seed=seed, loss=rng.choice([0.0, 0.05, 0.2]), dup=rng.choice([0.0, 0.1]),
              jitter_ns=rng.choice([0, 3 * MS]), config=StrongConfig(compact_every=rng.choice([25, 20_000])))
    sent: list[ClientSubmit] = []
    to: dict[str, str] = {}
    orphans: set[str] = set()  # asked of a node that crashed before answering: no answer is due
    for _step in range(200):
        live = [n for n in net.ids if n not in net.down]
        m = new(side=rng.randint(0, 1), price=10_000 + rng.randint(-5, 5), qty=rng.randint(1, 5),
                tif=rng.choice([0, 0, 1]), timeout_ms=2000)
        to[m.req] = node = rng.choice(live)
        net.submit(node, m)
        sent.append(m)
        net.run(rng.randint(1, 15) * MS)
        roll = rng.random()
        if roll < 0.02 and len(net.down) < (len(net.ids) - 1) // 2:
            victim = rng.choice(live)
            orphans |= {s.req for s in sent if to[s.req] == victim and net.reply(s.req) is None}
            net.crash(victim)
        elif roll < 0.04 and net.down:
            net.start(rng.choice(sorted(net.down)))
        elif roll < 0.06:
            k = rng.randint(1, len(net.ids) - 1)
            side = rng.sample(net.ids, k)
            net.cut(side, [n for n in net.ids if n not in side])
        elif roll < 0.09:
            net.heal()
    net.heal()
    net.loss = net.dup = 0.0
    for n in sorted(net.down):
        net.start(n)
    net.run(4_000 * MS)
    st = [net.nodes[n].status() for n in net.ids]
    assert len({(s["commit_index"], s["digest"], s["ops"]) for s in st}) == 1, [
        (s["id"], s["role"], s["commit_index"], s["digest"][:8]) for s in st]
    assert_books_agree(net)
    fold = net.nodes[net.ids[0]].replica
    answered = {s.req: r for s in sent if (r := net.reply(s.req)) is not None}
    assert set(answered) | orphans == {s.req for s in sent}  # every request answered (ok, no quorum, timeout)
    for req, r in answered.items():
        if r.code == OK:
            assert f"/{req}" in fold.reqs and fold.reqs[f"/{req}"][1] == r.order_id
        if r.code == E_NO_QUORUM:
            assert f"/{req}" not in fold.reqs  # refused means never committed
    assert fold.op_count == len(fold.reqs)  # each request id folded once
    assert sum(r.code == OK for r in answered.values()) > 20


# ---- the fold and the relay, directly ------------------------------------------------------------
def _op(req: str, kind: int = NEW, oid: str = "", side: int = 0, price: int = 10_000, qty: int = 5) -> Op:
    return Op(1, 0, "n1", 0, kind, "GBX", oid, side, price, qty, 0, req)


def test_a_request_committed_twice_folds_once() -> None:
    a, b = SequencedBooks(Venue()), SequencedBooks(Venue())
    first = a.apply(1, _op("x"))
    assert first is not None and first.code == OK and first.order_id == "n1:1"
    a.apply(2, None)
    dup = a.apply(3, _op("x"))
    assert dup is not None and dup.code == OK and dup.order_id == "n1:1"
    assert a.op_count == 1 and a.counters["duplicates"] == 1
    assert len(a.books["GBX"]) == 1
    # the snapshot carries the request ids: a replica installing it also folds the retry as a no-op
    b.install(3, a.to_bytes())
    assert b.digest() == a.digest()
    assert b.apply(4, _op("x")).order_id == "n1:1" and b.op_count == 1
    # unknown orders and bad amends are refused by the fold, the same way everywhere
    out = a.apply(4, _op("y", CANCEL, "n1:99"))
    assert out.code == E_UNKNOWN_ORDER
    assert a.apply(5, _op("z", AMEND, "n1:1", price=0, qty=1)).code == 1  # price 0 is off the band


def test_a_forward_to_a_non_leader_is_sent_back() -> None:
    net = Net(3, seed=10)
    lead = net.wait_leader()
    follower = next(n for n in net.ids if n != lead)
    f = Forward(*new(), "")
    other = next(n for n in net.ids if n not in (lead, follower))
    net.nodes[follower].receive(f, other, None, net.now)
    out = net.nodes[follower].outbox()
    assert [(d, type(m).__name__, m.code, m.message) for d, m in out if d == other] == \
        [(other, "ForwardReply", 200, lead)]


def test_status_has_the_eventual_keys_and_the_sequencer_ones() -> None:
    net = Net(3, seed=11)
    lead = net.wait_leader()
    st: dict[str, Any] = net.nodes[lead].status()
    for k in ("id", "digest", "ops", "version_vector", "watermark", "trades_final", "trades_provisional",
              "members", "peers", "counters", "ready", "accepting", "term", "leader", "commit_index",
              "match_index", "role"):
        assert k in st, k
    assert st["role"] == "leader" and st["leader"] == lead and set(st["match_index"]) == set(net.ids) - {lead}
    fst = net.nodes[next(n for n in net.ids if n != lead)].status()
    assert "match_index" not in fst and fst["role"] == "follower" and fst["leader"] == lead


def test_a_leader_snapshot_the_fold_cannot_install_is_neither_adopted_nor_acknowledged() -> None:
    """Issue 15 (review section 5): a snapshot that does not parse was counted and skipped while the
    sequencer had already moved its commit index past it (silent divergence) and acknowledged it."""
    from gossipbook.core.sequencer import AppendReply, InstallSnapshot

    f = StrongNodeCore("n2", ["n1", "n2", "n3"], rng=random.Random(3))
    before = (f.seq.commit_index, f.replica.index, f.replica.digest())
    data = b"\x93not a snapshot"
    f.receive(InstallSnapshot(1, 500, 1, 0, len(data), data), "n1", ("h", 1), 10**18)
    out = f.outbox()
    assert not any(isinstance(m, AppendReply) and m.success for _d, m in out)
    assert (f.seq.commit_index, f.replica.index, f.replica.digest()) == before
    assert f.status()["counters"]["bad_snapshots"] == 1
