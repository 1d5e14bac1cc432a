"""A stateful test of several replicas gossiping ops, checked against the op-set they hold.

Three members stamp orders at clocks that drift (sometimes beyond ``max_offset``, so their ops are
held back elsewhere until time catches up), deliver random subsets and duplicates to each other,
announce their HLC for finality, swap version vectors and compact. A fourth replica, ``x``, is not a
member: members compact without waiting for it, so it catches up by snapshot transfer.

Invariants, after every step:
- two replicas with equal version vectors have equal digests;
- every replica's books and trade count are the model fold of exactly the ops its vv says it holds;
- a client's view of trades built from the events a replica returned matches its live trades (the
  trades of ops compacted into a snapshot are not checked: see the xfail in test_replica.py);
- the watermark never goes back, a trade once final is never revised, no finality violation;
- the HLC never adopts a timestamp beyond ``now + max_offset``.
"""

from __future__ import annotations

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from gossipbook.core import BUY, GTC, IOC, SELL, Op, Replica, Timestamp, Trade, TradeExecuted, TradeRevised
from gossipbook.core.errors import DuplicateRequest
from gossipbook.core.hlc import ZERO

from .test_replica import PRICES, SYM, T0, model_fold

NAMES = ["n1", "n2", "n3"]
ALL = NAMES + ["x"]
MAX_OFF = 1000  # ns: small, so a drifting clock really gets held back
members = st.sampled_from(NAMES)
replicas = st.sampled_from(ALL)


def cause_origin(trade_id: str) -> str:
    return trade_id.rpartition("/")[0].rpartition(":")[0]


def cause_seq(trade_id: str) -> int:
    """The seq of the op whose fold made the trade (ids are ``"<origin>:<seq>/<n>"``)."""
    return int(trade_id.rpartition("/")[0].rpartition(":")[2])


class ReplicaCluster(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.t = T0
        self.skew = dict.fromkeys(ALL, 0)
        self.reps = {m: Replica(m, members=NAMES if m != "x" else ALL, max_offset_ns=MAX_OFF,
                                checkpoint_interval=2) for m in ALL}
        self.ops: dict[tuple[str, int], Op] = {}
        self.max_now = dict.fromkeys(ALL, 0)
        self.view: dict[str, dict[str, Trade]] = {m: {} for m in ALL}
        self.final: dict[str, dict[str, Trade]] = {m: {} for m in ALL}
        self.wm: dict[str, Timestamp] = dict.fromkeys(ALL, ZERO)

    # ---- helpers -----------------------------------------------------------------------------
    def now(self, m: str) -> int:
        n = self.t + self.skew[m]
        self.max_now[m] = max(self.max_now[m], n)
        return n

    def events(self, m: str, evs: list[object]) -> None:
        view, final = self.view[m], self.final[m]
        for e in evs:
            if isinstance(e, TradeExecuted):
                assert e.trade.trade_id not in view, f"{m} reported {e.trade} twice"
                view[e.trade.trade_id] = e.trade
            elif isinstance(e, TradeRevised):
                assert e.old.trade_id not in final, f"{m} revised a final trade: {e}"
                assert view.get(e.old.trade_id) == e.old, f"{m} revised a trade it never reported: {e}"
                del view[e.old.trade_id]
                if e.new is not None:
                    view[e.new.trade_id] = e.new

    def held(self, m: str) -> list[Op]:
        vv = self.reps[m].vv
        return [op for (o, s), op in self.ops.items() if s <= vv.get(o, 0)]

    # ---- rules -------------------------------------------------------------------------------
    @rule(dt=st.sampled_from([0, 1, 300, 2000]))
    def advance(self, dt: int) -> None:
        self.t += dt

    @rule(m=members, skew=st.sampled_from([0, 0, 200, 2500]))
    def drift(self, m: str, skew: int) -> None:
        self.skew[m] = skew

    @initialize(orders=st.lists(st.tuples(members, st.sampled_from([BUY, SELL]), PRICES, st.integers(1, 3)),
                                min_size=2, max_size=8),
                skews=st.lists(st.sampled_from([0, 0, 200, 2500]), min_size=3, max_size=3))
    def opening_orders(self, orders: list[tuple[str, int, int, int]], skews: list[int]) -> None:
        """Every run starts with drifted clocks and a few orders stamped concurrently."""
        self.skew.update(zip(NAMES, skews, strict=True))
        for m, side, price, qty in orders:
            self.submit(m, side, price, qty, GTC, "")

    @rule(m=members, side=st.sampled_from([BUY, SELL]), price=PRICES, qty=st.integers(1, 3),
          tif=st.sampled_from([GTC, GTC, IOC]), req=st.sampled_from(["", "", "", "r1", "r2"]))
    def submit(self, m: str, side: int, price: int, qty: int, tif: int, req: str) -> None:
        r = self.reps[m]
        done = r.compacted_request(req)
        if done is not None:  # this node's order for req is compacted: a retry is refused, nothing stamped
            before = (dict(r.vv), r.digest())
            with pytest.raises(DuplicateRequest):
                r.submit_new(SYM, side, price, qty, tif, self.now(m), req=req)
            assert (dict(r.vv), r.digest()) == before
            assert done[0].startswith(f"{m}:") and all(done[0] == t.taker for t in done[1])
            return
        op, evs = r.submit_new(SYM, side, price, qty, tif, self.now(m), req=req)
        self.ops[(op.origin, op.seq)] = op
        self.events(m, evs)

    @rule(m=members, data=st.data(), amend=st.booleans())
    def cancel_or_amend(self, m: str, data: st.DataObject, amend: bool) -> None:
        resting = self.reps[m].books[SYM].resting()
        if not resting:
            return
        oid = data.draw(st.sampled_from([row[2] for row in resting]))
        if amend:
            op, evs = self.reps[m].submit_amend(oid, data.draw(PRICES), data.draw(st.integers(0, 3)),
                                                self.now(m))
        else:
            op, evs = self.reps[m].submit_cancel(oid, self.now(m))
        self.ops[(op.origin, op.seq)] = op
        self.events(m, evs)

    @rule(src=members, dst=replicas, data=st.data(), how=st.sampled_from(["push", "missing", "any"]))
    def deliver(self, src: str, dst: str, data: st.DataObject, how: str) -> None:
        """Some of ``src``'s ops: its own clients' (eager push), what ``dst`` lacks, or any it holds."""
        s, d = self.reps[src], self.reps[dst]
        if src == dst:
            return
        if how == "push":
            ops = [op for op in s.ops() if op.origin == src]
        else:
            if s.needs_snapshot(d.version_vector()):
                self.events(dst, d.install_snapshot(s.snapshot(), self.now(dst)))
            ops = s.ops_missing(d.version_vector()) if how == "missing" else s.ops()
        picked = data.draw(st.lists(st.sampled_from(ops), max_size=len(ops))) if ops else []
        self.events(dst, d.receive(picked, self.now(dst)))

    @rule(dst=replicas, data=st.data())
    def redeliver(self, dst: str, data: st.DataObject) -> None:
        d = self.reps[dst]
        held = self.held(dst)
        if not held:
            return
        before = (d.digest(), d.version_vector())
        assert d.receive(data.draw(st.lists(st.sampled_from(held), min_size=1)), self.now(dst)) == []
        assert (d.digest(), d.version_vector()) == before

    @rule(m=replicas)
    def tick(self, m: str) -> None:
        self.events(m, self.reps[m].tick(self.now(m)))

    @rule(src=members)
    def heartbeat(self, src: str) -> None:
        """``src`` tells everyone its HLC and own seq (finality) and what it holds (compaction)."""
        s = self.reps[src]
        for dst, d in self.reps.items():
            d.observe(src, s.hlc.last, s.vv.get(src, 0), self.now(dst))
            d.observe_vv(src, s.version_vector())

    @rule(with_x=st.booleans())
    def anti_entropy(self, with_x: bool) -> None:
        """A full push-pull round (to ``x`` too, or not), then ticks and heartbeats everywhere."""
        for src in NAMES:
            for dst in ALL if with_x else NAMES:
                if dst != src:
                    self.deliver_all(src, dst)
        for m in ALL:
            self.tick(m)
        for m in NAMES:
            self.heartbeat(m)

    def deliver_all(self, src: str, dst: str) -> None:
        s, d = self.reps[src], self.reps[dst]
        if s.needs_snapshot(d.version_vector()):
            self.events(dst, d.install_snapshot(s.snapshot(), self.now(dst)))
        self.events(dst, d.receive(s.ops_missing(d.version_vector()), self.now(dst)))

    @rule()
    def compact(self) -> None:
        for r in self.reps.values():
            r.compact()

    def teardown(self) -> None:
        """Say which machinery the run reached (``--hypothesis-show-statistics``)."""
        for counter in ("held_back_clock", "waiting_gap", "replays", "compactions", "snapshots_installed"):
            event(f"{counter}: {bool(sum(r.counters[counter] for r in self.reps.values()))}")
        event(f"final trades: {bool(any(self.final.values()))}")

    # ---- invariants --------------------------------------------------------------------------
    @invariant()
    def equal_version_vectors_mean_equal_digests(self) -> None:
        seen: dict[tuple[tuple[str, int], ...], tuple[str, str]] = {}
        for m, r in self.reps.items():
            key = tuple(sorted(r.version_vector().items()))
            if key in seen:
                other, digest = seen[key]
                assert r.digest() == digest, f"{m} and {other} hold the same ops but differ"
            else:
                seen[key] = (m, r.digest())

    @invariant()
    def each_replica_is_the_fold_of_what_it_holds(self) -> None:
        for m, r in self.reps.items():
            resting, trades = model_fold(self.held(m))
            assert r.books[SYM].resting() == resting, m
            assert r.trade_count == len(trades), m
            compacted = len(trades) - len(r.trades())
            assert r.trades() == trades[compacted:], m
            # the client view: exactly the live trades, plus trades of compacted ops. Those are not
            # checked: a replica that reported a provisional trade of an op it later receives
            # inside a snapshot cannot revise it (see test_replica.py, the xfail on snapshots)
            base = r.snapshot().base_vv
            live = {k: v for k, v in self.view[m].items() if cause_seq(k) > base.get(cause_origin(k), 0)}
            assert live == {t.trade_id: t for t in r.trades()}, m

    @invariant()
    def finality_only_moves_forward(self) -> None:
        for m, r in self.reps.items():
            w = r.watermark()
            r._wm_others = None  # the cached part of the watermark must equal a fresh computation
            assert r.watermark() == w, f"{m}'s cached watermark is stale"
            assert w >= self.wm[m], f"{m}'s watermark went back"
            self.wm[m] = w
            assert r.counters["finality_violations"] == 0, m
            for t in r.trades()[:r.trades_final() - (r.trade_count - len(r.trades()))]:
                self.final[m].setdefault(t.trade_id, t)

    @invariant()
    def hlc_within_the_clock_bound(self) -> None:
        for m, r in self.reps.items():
            assert r.hlc.last.wall <= max(self.max_now[m], T0) + MAX_OFF, m

    @invariant()
    def honest_ops_are_never_counted_invalid(self) -> None:
        for m, r in self.reps.items():
            assert r.counters["invalid_ops"] == 0, m


# one run is cheap but reaches snapshots or clock hold-back in a minority of runs: give it 3x the profile
ReplicaCluster.TestCase.settings = settings(settings.default, max_examples=3 * settings.default.max_examples,
                                            stateful_step_count=60)
TestReplicaCluster = ReplicaCluster.TestCase
