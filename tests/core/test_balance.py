"""The client's node chooser (core/balance.py): laws under any sequence of events, and what a
client sending one request after another sees when a node slows down, goes quiet and recovers."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from gossipbook.core.balance import BalanceConfig, Balancer

MS = 1_000_000
NODES = ("n1", "n2", "n3")
RETRY = 250 * MS

event = st.one_of(
    st.tuples(st.just("pick"), st.sets(st.sampled_from(NODES), max_size=2)),
    st.tuples(st.just("answer"), st.sampled_from(NODES), st.integers(0, 50 * MS)),
    st.tuples(st.just("miss"), st.sampled_from(NODES)),
    st.tuples(st.just("wait"), st.integers(0, 3_000 * MS)),
)


@given(st.lists(event, max_size=120), st.integers(1, 4))
def test_never_picks_an_avoided_or_excluded_node_while_a_healthy_one_exists(events, miss_limit) -> None:
    bal = Balancer(NODES, BalanceConfig(miss_limit=miss_limit))
    now = 10**12
    for ev in events:
        now += 1
        if ev[0] == "pick":
            got = bal.pick(now, ev[1])
            ok = [n for n in NODES if n not in ev[1] and not bal.avoided(n, now)]
            if ok:
                assert got in ok
            bal.sent(got, now)
        elif ev[0] == "answer":
            bal.answered(ev[1], ev[2], now)
        elif ev[0] == "miss":
            bal.missed(ev[1], now)
            if bal.nodes[ev[1]].avoidances:
                assert bal.avoided(ev[1], now) or bal.nodes[ev[1]].avoided_until <= now
        else:
            now += ev[1]
        for n in bal.nodes.values():  # bounded, never negative
            assert n.in_flight >= 0 and len(n.samples) <= 512
            assert n.avoided_until <= now + bal.config.max_backoff_ns


Latency = Callable[[str, int], "int | None"]


def drive(bal: Balancer, latency: Latency, now: int, until: int) -> tuple[list[tuple[int, str]], int]:
    """One request after another until ``until``: each to the picked node, answered after its
    latency, or (None) unanswered for a retry interval and then sent to another node (the same
    request, as the wire client does). Returns (time, node) of every try, and the time at the end."""
    tries = []
    while now < until:
        tried: set[str] = set()
        while True:
            node = bal.pick(now, tried)
            bal.sent(node, now)
            tries.append((now, node))
            lat = latency(node, now)
            if lat is None:
                now += RETRY
                bal.missed(node, now)
                tried.add(node)
                if len(tried) == len(NODES):
                    tried = set()
                continue
            now += lat
            bal.answered(node, lat, now)
            break
    return tries, now


@settings(max_examples=20, phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(st.integers(2 * MS, 6 * MS), st.lists(st.integers(0, 20), min_size=3, max_size=3), st.integers(10, 40),
       st.integers(0, 2**32))
def test_traffic_moves_away_from_a_node_whose_latency_grows_and_back_when_it_recovers(common, pct, factor,
                                                                                      seed) -> None:
    """Three nodes within 20 % of each other's latency (so all near-best); n1 gets 10-40x slower for
    5 s, then as fast as before."""
    base = [common * (100 + p) // 100 for p in pct]
    bal = Balancer(NODES)
    t0 = 10**12
    slow_from, slow_to = t0 + 2_000 * MS, t0 + 7_000 * MS

    def latency(node: str, now: int) -> int:
        b = base[NODES.index(node)] + (seed >> (NODES.index(node) * 5 + (now // MS) % 7)) % 200_000  # jitter
        return b * factor if node == "n1" and slow_from <= now < slow_to else b

    tries, _ = drive(bal, latency, t0, t0 + 10_000 * MS)
    slow = [n for t, n in tries if slow_from + 500 * MS <= t < slow_to]
    # while slow: at most a probe a second (plus the one in flight when it slowed)
    assert Counter(slow)["n1"] <= (slow_to - slow_from) // bal.config.probe_ns + 1, Counter(slow)
    assert len(slow) > 100
    after = Counter(n for t, n in tries if t >= slow_to + bal.config.probe_ns + 200 * MS)
    # recovered: picked again, and not only as a probe
    assert after["n1"] > (10_000 * MS - 7_000 * MS) // bal.config.probe_ns + 1, after


@settings(max_examples=20, phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(st.integers(1, 3), st.integers(1_000, 6_000))
def test_a_silent_node_is_avoided_within_its_misses_and_probed_again_after_its_backoff(miss_limit, quiet_ms) -> None:
    cfg = BalanceConfig(miss_limit=miss_limit)
    bal = Balancer(NODES, cfg)
    t0 = 10**12
    q0, q1 = t0 + 1_000 * MS, t0 + (1_000 + quiet_ms) * MS

    def latency(node: str, now: int) -> int | None:
        return None if node == "n2" and q0 <= now < q1 else 3 * MS

    tries, end = drive(bal, latency, t0, q1 + 2 * cfg.max_backoff_ns + 2_000 * MS)
    quiet = [(t, n) for t, n in tries if q0 <= t < q1 and n == "n2"]
    # while quiet: the tries it misses before each avoidance, then one probe per back-off, no more
    backoffs = 0
    t, b = q0, cfg.backoff_ns
    while t < q1:
        backoffs += 1
        t += miss_limit * RETRY + b
        b = min(cfg.max_backoff_ns, 2 * b)
    assert len(quiet) <= backoffs * miss_limit + 1, (len(quiet), backoffs)
    # back: n2 gets traffic again within its longest back-off and a probe interval
    back = [t for t, n in tries if n == "n2" and t >= q1]
    assert back and back[0] - q1 <= cfg.max_backoff_ns + cfg.probe_ns + miss_limit * RETRY
    later = Counter(n for t, n in tries if t >= back[0] + cfg.probe_ns)
    assert later["n2"] * 4 >= later["n1"], later  # sharing again, round robin among equals
    assert bal.nodes["n2"].avoidances >= 1 and not bal.avoided("n2", end)


def test_equal_nodes_share_round_robin_and_in_flight_tries_spread_the_load() -> None:
    bal = Balancer(NODES)
    now = 10**12
    for n in NODES:  # measured, all equal
        bal.sent(n, now)
        bal.answered(n, MS, now)
    picks = []
    for _ in range(30):  # 30 requests at once: none answered yet
        n = bal.pick(now)
        bal.sent(n, now)
        picks.append(n)
    assert Counter(picks) == {"n1": 10, "n2": 10, "n3": 10}
    sp = bal.spread(now)
    assert sp["n1"]["sent"] == 11 and sp["n1"]["in_flight"] == 10 and sp["n1"]["p50_ms"] == 1.0
