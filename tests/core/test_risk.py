"""Risk limits in eventual mode (core/risk.py, core/riskledger.py): the rights CRDT and the escrow.

- Laws of the rights matrix: balances are a function of the op-set (any delivery order, any
  duplication gives the same state on every replica); a transfer never makes a balance negative;
  the balances always add up to the limit.
- The escrow, as a stateful test: three replicas, an account with limits on every counter, orders
  (GTC and IOC, both sides) from random nodes, a counterparty that fills them, cancels, risk ticks
  (splits, asks, transfers), partitions, heartbeats (finality), compaction and restarts from a
  snapshot. After every step: no node's rights are negative and the sum over nodes of what they
  consume is at most the limit. At the end, after a heal: the replicas agree (risk state and books)
  and the converged exposure of every counter is at most its limit.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from gossipbook.core import BUY, GTC, IOC, SELL, Op, Replica
from gossipbook.core.risk import (
    COUNTER_NAMES,
    DIM_NOTIONAL,
    DIM_OPEN_BUY,
    DIM_OPEN_SELL,
    DIM_POSITION,
    LONG,
    NOTIONAL,
    OPEN_BUY,
    OPEN_SELL,
    SHORT,
    TRANSFER,
    RiskRefused,
    RiskState,
)

SYM = "GBX"
T0 = 1_000_000_000_000
NAMES = ["n1", "n2", "n3"]
LIMITS = {DIM_OPEN_BUY: 30, DIM_OPEN_SELL: 30, DIM_POSITION: 40, DIM_NOTIONAL: 60 * 10_000}


def limit_op(origin: str, seq: int, dim: int, value: int, wall: int = T0) -> Op:
    return Op(wall, seq, origin, seq, 5, SYM, "alice", 0, 0, value, dim, f"l{dim}", "operator")


def transfer(origin: str, seq: int, to: str, qty: int, wall: int) -> Op:
    return Op(wall, 0, origin, seq, TRANSFER, SYM, to, 0, 0, qty, DIM_OPEN_BUY, "", "alice")


# ---- laws of the rights matrix -----------------------------------------------------------------
@st.composite
def histories(draw: st.DrawFn) -> list[Op]:
    """A limit stamped at n1, then transfers by random donors (some too large: refused)."""
    ops = [limit_op("n1", 1, DIM_OPEN_BUY, draw(st.integers(0, 50)))]
    seqs = {"n1": 1, "n2": 0, "n3": 0}
    wall = T0
    for _ in range(draw(st.integers(0, 12))):
        donor = draw(st.sampled_from(NAMES))
        to = draw(st.sampled_from([n for n in NAMES if n != donor]))
        seqs[donor] += 1
        wall += draw(st.integers(1, 5))
        ops.append(transfer(donor, seqs[donor], to, draw(st.integers(1, 30)), wall))
    return ops


@given(histories(), st.randoms(use_true_random=False))
def test_rights_are_a_function_of_the_op_set(ops: list[Op], rnd: random.Random) -> None:
    """Whatever the delivery order and duplication, replicas agree on balances; balances never go
    negative and always add up to the limit (transfers move rights, the fold refuses an overdraft)."""
    ref = Replica("n1", members=NAMES)
    ref.receive(ops, T0 + 10**9)
    want = ref.risk.state()
    assert sum(want.balance[("alice", SYM, OPEN_BUY)].values()) == want.limits[("alice", SYM, OPEN_BUY)]
    assert min(want.balance[("alice", SYM, OPEN_BUY)].values()) >= 0
    for name in ("n2", "n3"):
        r = Replica(name, members=NAMES)
        shuffled = ops + rnd.sample(ops, k=len(ops) // 2)  # duplicates too
        rnd.shuffle(shuffled)
        for i in range(0, len(shuffled), 3):
            r.receive(shuffled[i:i + 3], T0 + 10**9)
        got = r.risk.state()
        assert got.balance == want.balance and got.limits == want.limits and got.refused == want.refused
        assert r.digest() == ref.digest()


def test_only_the_operator_sets_limits_and_a_forged_transfer_moves_nothing() -> None:
    r = Replica("n2", members=NAMES)
    bad = Op(T0, 1, "n1", 1, 5, SYM, "alice", 0, 0, 100, DIM_OPEN_BUY, "x", "mallory")  # not the operator
    over = transfer("n3", 1, "n2", 5, T0 + 1)  # n3 has no rights at all
    r.receive([bad, over], T0)
    st_ = r.risk.state()
    assert st_.limits == {} and st_.refused == {"not_operator": 1, "transfers": 1}
    assert r.counters["risk_not_operator"] == 1
    r.receive([limit_op("n1", 2, DIM_OPEN_BUY, 10, T0 + 2), transfer("n1", 3, "n2", 11, T0 + 3)], T0)
    assert r.risk.state().balance[("alice", SYM, OPEN_BUY)] == {"n1": 10}  # 11 > 10: refused
    assert r.risk.state().refused["transfers"] == 2


def test_state_round_trips_through_its_wire_form() -> None:
    r = Replica("n1", members=NAMES)
    r.receive([limit_op("n1", 1, DIM_POSITION, 40), transfer("n1", 2, "n2", 3, T0 + 1)], T0)
    s = r.risk.state()
    back = RiskState.from_wire(s.to_wire())
    assert (back.limits, back.balance, back.halted, back.ever, back.refused) == \
        (s.limits, s.balance, s.halted, s.ever, s.refused)


# ---- the escrow, stateful ---------------------------------------------------------------------------
def exposure(r: Replica, c: int, origin: str | None = None) -> int:
    """``alice``'s exposure of counter ``c`` in ``r``'s fold; with ``origin``, of the orders that
    node placed only (fills of compacted ops: the snapshot's positions)."""
    ops = {op.op_id: op for op in r.ops()}
    open_buy = open_sell = open_notional = 0
    pos = notional = 0
    if origin is not None:
        pos, notional = r.risk.positions.get(("alice", SYM, origin), (0, 0))
    for side, price, oid, q, acct in r.books[SYM].entries():
        if acct != "alice" or (origin is not None and not oid.startswith(origin + ":")):
            continue
        open_notional += q * price
        if side == BUY:
            open_buy += q
        else:
            open_sell += q
    for t in r.trades():
        for oid, acct, side, price in ((t.maker, t.maker_account, 1 - t.taker_side, t.price),
                                       (t.taker, t.taker_account, t.taker_side,
                                        ops[t.trade_id.rpartition("/")[0]].price or t.price)):
            if acct == "alice" and (origin is None or oid.startswith(origin + ":")):
                sign = 1 if side == BUY else -1
                pos += sign * t.qty
                notional += sign * t.qty * price
    return {OPEN_BUY: open_buy, OPEN_SELL: open_sell, LONG: pos + open_buy, SHORT: open_sell - pos,
            NOTIONAL: open_notional + abs(notional)}[c]


class Escrow3(RuleBasedStateMachine):
    """Three replicas of one cluster trading one limited account under partitions."""

    def __init__(self) -> None:
        super().__init__()
        self.t = T0
        self.reps = {n: Replica(n, members=NAMES, checkpoint_interval=4) for n in NAMES}
        self.all_ops: dict[tuple[str, int], Op] = {}
        self.cut: set[tuple[str, str]] = set()
        self.refused = 0
        self.n = 0

    def now(self) -> int:
        self.t += 1_000_000
        return self.t

    def _collect(self) -> None:
        for r in self.reps.values():
            for op in r.new_ops:
                self.all_ops[(op.origin, op.seq)] = op
            r.new_ops = []

    @initialize()
    def limits(self) -> None:
        n1 = self.reps["n1"]
        now = self.now()
        for dim, v in LIMITS.items():
            n1.submit_limit("alice", SYM, dim, v, now, f"lim{dim}", account="operator")
        n1.risk_tick(now)  # the even split
        self._collect()
        for r in self.reps.values():
            r.receive(list(self.all_ops.values()), now)

    @rule(node=st.sampled_from(NAMES), side=st.sampled_from([BUY, SELL]), qty=st.integers(1, 8),
          tif=st.sampled_from([GTC, GTC, IOC]), tick=st.integers(-2, 2))
    def alice_order(self, node: str, side: int, qty: int, tif: int, tick: int) -> None:
        self.n += 1
        try:
            self.reps[node].submit_new(SYM, side, 10_000 + tick, qty, tif, self.now(), f"a{self.n}", account="alice")
        except RiskRefused as e:
            assert "headroom at " + node in str(e) and "(limit " in str(e)
            self.refused += 1
        self._collect()

    @rule(node=st.sampled_from(NAMES), side=st.sampled_from([BUY, SELL]), qty=st.integers(1, 15),
          tick=st.integers(-2, 2))
    def bob_order(self, node: str, side: int, qty: int, tick: int) -> None:
        self.n += 1
        self.reps[node].submit_new(SYM, side, 10_000 + tick, qty, GTC, self.now(), f"b{self.n}", account="bob")
        self._collect()

    @rule(node=st.sampled_from(NAMES), pick=st.integers(0, 50))
    def alice_cancel(self, node: str, pick: int) -> None:
        r = self.reps[node]
        mine = [oid for oid, *_ in r.orders_of("alice")]
        if mine:
            self.n += 1
            r.submit_cancel(mine[pick % len(mine)], self.now(), f"c{self.n}", account="alice")
            self._collect()

    @rule(src=st.sampled_from(NAMES), dst=st.sampled_from(NAMES))
    def deliver(self, src: str, dst: str) -> None:
        if src == dst or (src, dst) in self.cut:
            return
        a, b = self.reps[src], self.reps[dst]
        now = self.now()
        b.receive([op for op in self.all_ops.values() if a.holds(op.origin, op.seq)
                   and not b.holds(op.origin, op.seq)], now)
        ts = a.hlc.now(now)
        b.observe(src, ts, a.vv.get(src, 0), now)  # the heartbeat: finality
        b.observe_vv(src, a.version_vector())
        self._collect()

    @rule(node=st.sampled_from(NAMES))
    def tick(self, node: str) -> None:
        self.reps[node].risk_tick(self.now())
        self._collect()

    @rule()
    def gossip_round(self) -> None:
        """Every link that is up delivers and announces, then every node ticks (asks, transfers)."""
        for a in NAMES:
            for b in NAMES:
                self.deliver(a, b)
        for n in NAMES:
            self.tick(n)

    @rule(node=st.sampled_from(NAMES))
    def compact(self, node: str) -> None:
        self.reps[node].compact()

    @rule(node=st.sampled_from(NAMES))
    def restart(self, node: str) -> None:
        """Restart from the node's own snapshot and log (what storage keeps): its consumption is
        rebuilt from them (the snapshot's fills of its orders, its resting orders, its log) and
        from finality once peers' heartbeats are back (here: the announcements it had), which
        settles again what it had settled (until then it counts those orders in full: it refuses
        rather than over-commits)."""
        old = self.reps[node]
        snap, ops = old.snapshot(), old.ops()
        new = Replica(node, members=NAMES, checkpoint_interval=4, hlc_last=old.hlc.last)
        new.install_snapshot(snap, old.hlc.last.wall)
        new.receive(ops, old.hlc.last.wall)
        new.new_ops = []
        now = self.now()
        for m in NAMES:
            if m != node:
                new.observe_vv(m, self.reps[m].version_vector())
                seen = old._announced.get(m)
                if seen is not None:
                    new.observe(m, seen[0], seen[1], now)
        self.reps[node] = new
        new.risk_tick(now)
        self._collect()

    @rule(a=st.sampled_from(NAMES))
    def partition(self, a: str) -> None:
        self.cut = {(x, y) for x in NAMES for y in NAMES if (x == a) != (y == a)}

    @rule()
    def heal(self) -> None:
        self.cut = set()

    @invariant()
    def rights_hold(self) -> None:
        """No node's rights below zero; the sum over nodes of what they consume at most the limit."""
        for key, lim in self.reps["n1"].risk.state().limits.items():
            used = 0
            for r in self.reps.values():
                s = r.risk.state()
                if key in s.limits:
                    assert r.risk.escrow.rights(s, key) >= 0, (r.node_id, COUNTER_NAMES[key[2]])
                used += r.risk.escrow.consumption(key)
            assert used <= lim, (COUNTER_NAMES[key[2]], used, lim)

    @invariant()
    def consumption_covers_own_orders(self) -> None:
        """What a node consumes bounds what its own orders hold in its own view (the escrow's
        promise, checked where it could first break: a node releasing rights too early)."""
        for n, r in self.reps.items():
            for key in r.risk.state().limits:
                assert exposure(r, key[2], n) <= r.risk.escrow.consumption(key), (n, COUNTER_NAMES[key[2]])

    def teardown(self) -> None:
        """Heal, exchange everything, and check the converged state on a replica that saw it all."""
        self.cut = set()
        for _ in range(2):
            for a in NAMES:
                for b in NAMES:
                    self.deliver(a, b)
        digests = {r.digest() for r in self.reps.values()}
        states = {repr(sorted(r.risk.state().balance.items())) for r in self.reps.values()}
        assert len(digests) == 1 and len(states) == 1
        obs = Replica("n1", members=NAMES)
        obs.receive(list(self.all_ops.values()), self.now())
        assert obs.digest() in digests
        for key, lim in obs.risk.state().limits.items():
            assert exposure(obs, key[2]) <= lim, (COUNTER_NAMES[key[2]], exposure(obs, key[2]), lim)


TestEscrow = Escrow3.TestCase
TestEscrow.settings = settings(max_examples=40, stateful_step_count=40, deadline=None)


def test_escrow_catches_a_node_that_ignores_its_rights() -> None:
    """The mechanism broken on purpose (each node checks the whole limit against its own orders,
    as ``--break no-escrow`` does): a partition lets both sides fill the limit, and the sum of
    consumption passes it. The same flow with the escrow stays within it."""
    from gossipbook.sim.breaks import broken

    def run() -> tuple[int, int]:
        reps = {n: Replica(n, members=NAMES) for n in NAMES}
        n1 = reps["n1"]
        n1.submit_limit("alice", SYM, DIM_OPEN_BUY, 30, T0, "l", account="operator")
        n1.risk_tick(T0)
        ops = [op for op in n1.ops()]
        for n in ("n2", "n3"):
            reps[n].receive(ops, T0)
        accepted = 0
        for i in range(12):  # partitioned: nobody hears anybody
            r = reps[NAMES[i % 3]]
            try:
                r.submit_new(SYM, BUY, 10_000, 5, GTC, T0 + i + 1, f"o{i}", account="alice")
                accepted += 5
            except RiskRefused:
                pass
        used = sum(r.risk.escrow.consumption(("alice", SYM, OPEN_BUY)) for r in reps.values())
        return accepted, used

    accepted, used = run()
    assert accepted <= 30 and used <= 30
    with broken("no-escrow"):
        accepted, used = run()
    assert accepted > 30 and used > 30


def test_hostile_risk_ops_are_bounded() -> None:
    """Correctly signed but hostile risk ops: malformed ones are dropped (``invalid_ops``); a flood
    of asks to one node is a capped, counted queue; forged operator limits pushing a balance past
    anything real leave snapshots encodable (balances are held within 2^62)."""
    from gossipbook.core.risk import ASK, MAX_LIMIT
    from gossipbook.core.wire import snapshot_from_bytes, snapshot_to_bytes

    r = Replica("n1", members=NAMES)
    bad = [Op(T0, 0, "n2", 1, TRANSFER, SYM, "n1", 0, 0, 0, DIM_OPEN_BUY, "", "alice"),  # a transfer of nothing
           Op(T0, 0, "n3", 1, 5, "", "alice", 0, 0, 10, DIM_POSITION, "p", "operator"),  # position without symbol
           Op(T0, 0, "n3", 1, 5, SYM, "al ice", 0, 0, 10, DIM_OPEN_BUY, "p", "operator")]  # not an account name
    for op in bad:
        before = r.counters["invalid_ops"]
        r.receive([op], T0)
        assert r.counters["invalid_ops"] == before + 1 and not r.holds(op.origin, op.seq)
    asks = [Op(T0 + i, 0, "n2", i, ASK, SYM, "n1", 0, 0, 5, DIM_OPEN_BUY, "", "alice") for i in range(1, 301)]
    r.receive(asks, T0 + 400)
    assert len(r.risk.asks_in) == 256 and r.counters["risk_asks_dropped"] == 44
    flood = [Op(T0 + 1000 + i, 0, "n2" if i % 2 else "n3", 100 + i // 2 if i % 2 else i // 2, 5, SYM, "alice", 0,
                0, MAX_LIMIT if i % 2 else 0, DIM_OPEN_BUY, f"f{i}", "operator") for i in range(1, 1201)]
    r2 = Replica("n1", members=NAMES)
    r2.receive([op for op in asks if op.seq < 100] + flood, T0 + 10**6)
    st_ = r2.risk.state()
    assert r2.counters["ops_applied"] == 99 + 1200 and st_.refused["not_operator"] == 0
    assert max(abs(v) for v in st_.balance[("alice", SYM, OPEN_BUY)].values()) == (1 << 62) - 1  # held at the cap
    r2.risk.compact(r2.ops(), [[] for _ in r2.ops()])
    back = snapshot_from_bytes(snapshot_to_bytes(r2.snapshot()))
    assert RiskState.from_wire(back.risk[0]).balance == r2.risk.base.balance
