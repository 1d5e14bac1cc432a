"""Client requests over spoofable UDP (issue 15, "No amplification"; security review 2da4a4d §3
"Reflection" and "Parked client waits are scanned linearly"), in both modes through ``ClientGate``:

- a reply to a source that has not echoed an address-check cookie is at most 3x its request in
  bytes on the wire (measured with ``wire.encode``: status and book depth 1000 over 20k resting
  orders, and a submit ack listing many trades); the cookie lifts the cap and the retry is the same
  request (no second order);
- a token bucket per account (``client_rate_limited``);
- parked waits capped per node and per account (``client_waits_refused``) and indexed (a message
  costs O(log n) in them, not O(n)).
"""

from __future__ import annotations

import random
import time
from typing import Any

import pytest

from gossipbook.core import strong as strong_mod
from gossipbook.core.node import (
    E_ADDRESS,
    E_RATE_LIMITED,
    E_TIMEOUT,
    OK,
    REPLICATED,
    Client,
    ClientGate,
    ClientLimits,
    NodeConfig,
    NodeCore,
)
from gossipbook.core.ops import NEW
from gossipbook.core.strong import StrongNodeCore
from gossipbook.core.wire import (
    ClientQuery,
    ClientReply,
    ClientSubmit,
    Heartbeat,
    QueryReply,
    Summary,
    encode,
)

MS = 1_000_000
T0 = 1_000_000 * MS
KEY = bytes(range(32))
CLIENT_ID = "client-0123456789ab"  # what gossipbook.node.client sends as
ADDR = ("192.0.2.7", 40_000)
RESTING = 20_000
#: wire bytes of ``msg`` from a client (a time-based counter, as the shell's client sends) and to it
STAMP_MS = 1_767_000_000_000


def bytes_in(msg: Any, account: str) -> int:
    return len(encode(msg, CLIENT_ID, STAMP_MS * MS, KEY, account, dst="n1", label="gossipbook", stamp_ms=STAMP_MS))


def bytes_out(msg: Any, account: str) -> int:
    return len(encode(msg, "n1", STAMP_MS * MS, KEY, account, dst=CLIENT_ID, label="gossipbook", stamp_ms=STAMP_MS))


class Driver:
    """One core of either mode, fed client requests at a clock the test moves."""

    def __init__(self, mode: str, members: int = 1, limits: ClientLimits | None = None) -> None:
        ids = [f"n{i + 1}" for i in range(members)]
        self.mode = mode
        self.now = T0
        if mode == "strong":
            self.core: Any = StrongNodeCore("n1", ids)
            for _ in range(100):
                if members > 1 or self.core.seq.role == "leader":
                    break
                self.core.tick(self.now)
                self.now += 10 * MS
            self.gate: ClientGate = strong_mod._client_gate(self.core)
            if limits is not None:
                self.gate.limits = limits
        else:
            cfg = NodeConfig(clients=limits) if limits is not None else NodeConfig()
            self.core = NodeCore("n1", ids, config=cfg, recovered=True)
            self.gate = self.core.gate
        self.core.outbox()

    def send(self, msg: Any, account: str = "alice", addr: Any = ADDR, dt: int = 0) -> list[Any]:
        """Deliver one request; the client replies that come out (to ``addr``)."""
        self.now += dt
        self.core.receive(msg, CLIENT_ID, addr, self.now, account)
        return self.replies(addr)

    def tick(self, dt: int) -> list[Any]:
        self.now += dt
        self.core.tick(self.now)
        return self.replies(ADDR)

    def replies(self, addr: Any) -> list[Any]:
        return [m for d, m in self.core.outbox() if isinstance(d, Client) and d.addr == addr]

    def fill_book(self, n: int) -> None:
        """``n`` resting orders of account "mm", 5,000 price levels a side."""
        for i in range(n):
            side = i % 2
            price = 9_999 - (i // 2) % 5_000 if side == 0 else 10_001 + (i // 2) % 5_000
            self.core.receive(ClientSubmit(f"mm{i}", NEW, "GBX", "", side, price, 1, 0, 0, 3000),
                              "mm-client", ("198.51.100.1", 1), self.now, "mm")
            self.now += MS // 2  # 2,000 a second: within the default rate
            if i % 256 == 0:
                self.core.outbox()
        self.core.outbox()
        assert sum(len(b) for b in self.core.replica.books.values()) == n


@pytest.fixture(scope="module", params=["eventual", "strong"])
def deep(request: pytest.FixtureRequest) -> Driver:
    d = Driver(request.param, members=4 if request.param == "eventual" else 1)
    d.fill_book(RESTING)
    return d


def _with_cookie(msg: Any, cookie: str) -> Any:
    return msg._replace(req=f"{msg.req}#{cookie}")


# ---- no amplification -------------------------------------------------------------------------------
@pytest.mark.parametrize("what,depth", [("status", 0), ("book", 1000)])
def test_unproven_source_gets_at_most_3x_and_the_cookie_gets_the_whole_reply(deep: Driver, what: str,
                                                                             depth: int) -> None:
    acct = "alice"
    q = ClientQuery(f"q-{what}-{deep.now}", what, "GBX" if what == "book" else "", depth)
    before_challenges = deep.core.counters["client_challenges"]
    [check] = deep.send(q, acct, dt=MS)
    assert type(check) is QueryReply and check.code == E_ADDRESS and check.req == q.req
    assert len(check.message) == 16 and int(check.message, 16) >= 0
    after = bytes_out(check, acct) / bytes_in(q, acct)
    assert after <= 3.0
    assert deep.core.counters["client_challenges"] == before_challenges + 1
    # the client echoes the cookie: same request id in the reply, the whole answer
    [full] = deep.send(_with_cookie(q, check.message), acct, dt=MS)
    assert type(full) is QueryReply and full.code == OK and full.req == q.req
    if what == "book":
        assert len(full.payload["bids"]) == 1000 and len(full.payload["asks"]) == 1000
    else:
        assert full.payload["id"] == "n1" and full.payload["counters"]["client_challenges"] >= 1
    before = bytes_out(full, acct) / bytes_in(q, acct)  # what any source got before the cap
    print(f"{deep.mode} {what}: request {bytes_in(q, acct)} B; before {bytes_out(full, acct)} B "
          f"(x{before:.1f}); after {bytes_out(check, acct)} B (x{after:.2f})")
    assert before > 3.0


def test_cookie_is_bound_to_address_and_account_and_expires(deep: Driver) -> None:
    q = ClientQuery(f"s{deep.now}", "status", "", 0)
    [check] = deep.send(q, "alice", dt=MS)
    cookie = check.message
    bad = deep.core.counters["client_cookies_bad"]
    # another address (the attacker's victim) or another account: still capped
    [r] = deep.send(_with_cookie(q, cookie), "alice", addr=("203.0.113.9", 53), dt=MS)
    assert r.code == E_ADDRESS and r.message != cookie
    deep.core.outbox()
    [r] = deep.send(_with_cookie(q, cookie), "bob", dt=MS)
    assert r.code == E_ADDRESS
    assert deep.core.counters["client_cookies_bad"] == bad + 2
    # good for this rotation and the next, not after
    rot = deep.gate.limits.cookie_rotate_ns
    [r] = deep.send(_with_cookie(q, cookie), "alice", dt=rot)
    assert r.code == OK and r.req == q.req
    [r] = deep.send(_with_cookie(q, cookie), "alice", dt=rot)
    assert r.code == E_ADDRESS


@pytest.mark.parametrize("mode", ["eventual", "strong"])
def test_submit_ack_with_many_trades_is_checked_and_the_retry_makes_no_second_order(mode: str) -> None:
    d = Driver(mode)
    for i in range(30):
        [ack] = d.send(ClientSubmit(f"ask{i}", NEW, "GBX", "", 1, 10_000 + i, 1, 0, 0, 3000), "mm", dt=MS)
        assert ack.code == OK
    buy = ClientSubmit("sweep", NEW, "GBX", "", 0, 10_100, 30, 0, 0, 3000)
    [check] = d.send(buy, "taker", dt=MS)
    assert type(check) is ClientReply and check.code == E_ADDRESS and check.req == "sweep"
    assert bytes_out(check, "taker") <= 3 * bytes_in(buy, "taker")
    assert sum(len(b) for b in d.core.replica.books.values()) == 0  # it did trade, once
    ops = d.core.replica.op_count
    [full] = d.send(_with_cookie(buy, check.message), "taker", dt=MS)
    assert full.code == OK and full.req == "sweep" and len(full.trades) == 30
    assert bytes_out(full, "taker") > 3 * bytes_in(buy, "taker")
    assert d.core.replica.op_count == ops and d.core.counters["client_retries"] >= 1


def test_a_long_message_is_cut_to_the_code_name_before_a_check_is_sent() -> None:
    counters: dict[str, int] = {}
    gate = ClientGate("n1", ClientLimits(cookie_secret=b"s" * 32), counters, random.Random(0))
    req = ClientSubmit("r1", NEW, "GBX", "", 0, 10_000, 1, 0, REPLICATED, 3000)
    _m, to, refused = gate.check(req, Client(ADDR, "alice"), T0)
    assert refused is None and 0 < to.budget < 300
    long = ClientReply("r1", E_TIMEOUT, "timeout waiting for replicated; " + "x" * 200, "n1:7", 0, [])
    [(_d, short)] = gate.bound([(to, long)])
    assert short == long._replace(message="timeout")
    assert counters["client_replies_shortened"] == 1 and counters["client_challenges"] == 0
    # a destination the shell made itself (budget 0) and a request with no account: not capped
    assert gate.bound([(Client(ADDR, "alice"), long)]) == [(Client(ADDR, "alice"), long)]
    _m, to, _r = gate.check(req, Client(ADDR, ""), T0)
    assert to.budget == 0


# ---- rate per account -------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["eventual", "strong"])
def test_token_bucket_per_account(mode: str) -> None:
    d = Driver(mode, limits=ClientLimits(rate=100, burst=20))
    q = ClientQuery("p", "progress", "", 0)
    codes = [r.code for i in range(25) for r in d.send(q._replace(req=f"p{i}"), "alice")]
    assert codes == [OK] * 20 + [E_RATE_LIMITED] * 5
    assert d.core.counters["client_rate_limited"] == 5
    # another account has its own bucket; submits draw from the same one as queries
    assert [r.code for r in d.send(q._replace(req="b0"), "bob")] == [OK]
    [r] = d.send(ClientSubmit("o1", NEW, "GBX", "", 0, 9_000, 1, 0, 0, 3000), "alice")
    assert r.code == E_RATE_LIMITED and d.core.replica.op_count == 0
    # 100/s: 50 ms later, 5 more
    codes = [r.code for i in range(6) for r in d.send(q._replace(req=f"later{i}"), "alice", dt=50 * MS if i == 0 else 0)]
    assert codes == [OK] * 5 + [E_RATE_LIMITED]
    assert d.core.counters["client_rate_limited"] == 7


def test_default_rate_lets_a_burst_of_4000_through() -> None:
    d = Driver("eventual")
    assert d.gate.limits == ClientLimits() and (d.gate.limits.rate, d.gate.limits.burst) == (2_000, 4_000)
    q = ClientQuery("p", "progress", "", 0)
    for i in range(4_000):
        d.core.receive(q._replace(req=f"p{i}"), CLIENT_ID, ADDR, d.now, "alice")
    assert len(d.replies(ADDR)) == 4_000 and d.core.counters["client_rate_limited"] == 0
    [r] = d.send(q._replace(req="one-more"), "alice")
    assert r.code == E_RATE_LIMITED and d.core.counters["client_rate_limited"] == 1


# ---- parked waits -----------------------------------------------------------------------------------
def _wait(req: str, timeout_ms: int = 1_000, level: int = REPLICATED, price: int = 9_000) -> ClientSubmit:
    return ClientSubmit(req, NEW, "GBX", "", 0, price, 1, 0, level, timeout_ms)


@pytest.mark.parametrize("mode", ["eventual", "strong"])
def test_parked_waits_are_capped_per_account_and_per_node(mode: str) -> None:
    # eventual: the peer never answers, nothing gets replicated; strong: no leader, nothing commits
    d = Driver(mode, members=2 if mode == "eventual" else 3, limits=ClientLimits(max_parked=5, max_parked_per_account=3))
    waits = (lambda: d.core._waiting) if mode == "eventual" else (lambda: d.core._waits)
    for i in range(3):
        assert d.send(_wait(f"a{i}"), "alice") == []
    ops = d.core.replica.op_count
    [r] = d.send(_wait("a3"), "alice")
    assert r.code == E_RATE_LIMITED
    assert d.core.replica.op_count == ops and len(waits()) == 3  # refused before anything was done
    assert d.send(_wait("b0"), "bob") == [] and d.send(_wait("b1"), "bob") == []
    [r] = d.send(_wait("c0"), "carol")  # carol has none, but the node has 5
    assert r.code == E_RATE_LIMITED
    assert d.core.counters["client_waits_refused"] == 2 and len(waits()) == 5
    # a retry of a parked request is no new wait
    assert d.send(_wait("a0"), "alice") == [] and d.core.counters["client_waits_refused"] == 2
    # an order that does not wait is not capped
    if mode == "eventual":
        [r] = d.send(_wait("free", level=0), "alice")
        assert r.code == OK
    # they end (timeout / no quorum): room again
    out = d.tick(2_000 * MS)
    assert len(out) == 5 and not waits()
    assert d.send(_wait("a9"), "alice") == [] and len(waits()) == 1


def test_parked_waits_are_indexed_not_scanned() -> None:
    """5,000 parked waits and 2,000 peer messages that settle none of them: each message used to
    try every wait (~20 s here); now it looks at the heads of a few heaps."""
    d = Driver("eventual", members=2)
    core = d.core
    n = 5_000
    for i in range(n):
        level = REPLICATED if i % 2 else 2
        core.receive(_wait(f"w{i}", timeout_ms=600_000 - i, level=level, price=9_000 - i % 500), CLIENT_ID, ADDR,
                     d.now, f"acct{i % 5}")
    assert len(core._waiting) == n and not d.replies(ADDR)
    earliest = d.now + (600_000 - n + 1) * MS  # from the deadline heap
    assert core.next_deadline() == min(earliest, core.gossip.next_deadline(), core.membership.next_deadline())
    t = time.perf_counter()
    for _ in range(2_000):
        d.now += MS // 10
        core.receive(Heartbeat(d.now, 0, 0, {"n2": 0}), "n2", None, d.now)
        core.outbox()
    took = time.perf_counter() - t
    assert len(core._waiting) == n
    assert took < 3.0, f"2,000 messages over {n} parked waits took {took:.2f} s"
    # n2 now holds our first 2,500 ops: exactly those waits settle (both levels: its heartbeat
    # already moved the watermark past them), in seq order, nothing else
    d.now += MS
    core.receive(Summary({"n1": 2_500}, False), "n2", None, d.now)
    core.receive(Heartbeat(d.now, 0, 0, {"n1": 2_500, "n2": 0}), "n2", None, d.now)
    settled = [m for m in d.replies(ADDR) if isinstance(m, ClientReply)]
    assert sorted(int(m.req[1:]) for m in settled) == list(range(2_500))
    assert all(m.code == OK and m.level >= REPLICATED for m in settled)
    assert len(core._waiting) == n - 2_500 and core.status()["counters"]["waiting"] == n - 2_500


def test_the_cookie_key_comes_from_the_cores_seeded_rng_not_the_os() -> None:
    """Without a configured secret the key is drawn from the core's ``rng``: the simulator replays a
    seed bit for bit (a key from ``secrets`` made the default config's seed 3 differ on every run, at
    its first address check); the shell configures a key from the OS (``config.py``, ``runner.py``)."""
    to = Client(ADDR, "alice")

    def cookie(seed: int) -> str:
        return ClientGate("n1", ClientLimits(), {}, random.Random(seed)).cookie(to, 1)

    assert cookie(7) == cookie(7)
    assert cookie(7) != cookie(8)
    assert ClientGate("n1", ClientLimits(cookie_secret=b"k" * 32), {}, random.Random(7)).cookie(to, 1) != cookie(7)
