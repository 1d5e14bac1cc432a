"""Prometheus exposition: counters are counters (``_total``), levels are gauges (issue 16)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from gossipbook.node.metrics import StatusCollector


def test_counters_are_counters_and_levels_are_gauges() -> None:
    c = StatusCollector("n1")
    reg = CollectorRegistry()
    reg.register(c)  # type: ignore[arg-type]
    assert generate_latest(reg) == b""  # nothing before the first snapshot
    c.status = {"ops": 12, "resting_orders": 3, "trades_final": 2, "trades_provisional": 1,
                "counters": {"client_submits": 7, "waiting": 4, "ready": True,
                             "dropped": {"auth": 5, "not_peer": 1}, "storage": {"fsyncs": 9}},
                "peers": {"n2": {"offset_us": 30.0, "rtt_us": 120.0}, "n3": None},
                "feeds": {"subscriptions": 3, "trades": 2, "book": 1, "accounts": 2}}
    text = generate_latest(reg).decode()
    assert "# TYPE gossipbook_counter_total counter" in text or "# TYPE gossipbook_counter counter" in text
    assert 'gossipbook_counter_total{name="client_submits",node="n1"} 7.0' in text
    assert 'gossipbook_counter_total{name="dropped_auth",node="n1"} 5.0' in text
    assert 'gossipbook_counter_total{name="storage_fsyncs",node="n1"} 9.0' in text
    assert "# TYPE gossipbook_level gauge" in text and 'gossipbook_level{name="waiting",node="n1"} 4.0' in text
    assert 'name="waiting"' not in text.split("# TYPE gossipbook_level")[0]  # a level is never a counter
    assert 'name="ready"' not in text  # a flag is neither
    assert "# TYPE gossipbook_ops gauge" in text and 'gossipbook_resting_orders{node="n1"} 3.0' in text
    assert 'gossipbook_peer_offset_seconds{node="n1",peer="n2"} 3e-05' in text
    assert "# TYPE gossipbook_feed_subscriptions gauge" in text
    assert 'gossipbook_feed_subscriptions{feed="trades",node="n1"} 2.0' in text
