"""Prometheus metrics for a node, refreshed from the trio loop once a second (the HTTP server runs
in prometheus-client's thread and only reads the last snapshot the loop published, never the node).

Counters are counters and gauges are gauges (issue 16): every monotonic entry of ``status.counters``
(nested ones flattened, ``dropped_<reason>``, ``storage_<key>``) is exposed as
``gossipbook_counter_total{node, name}``; values that go down as well as up (``GAUGE_COUNTERS``,
ops held, resting orders, trades by finality, peers' clock estimates, feed subscriptions) are gauges.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import trio
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..core.errors import UsageError

#: entries of ``status.counters`` that are levels, not counts of events
GAUGE_COUNTERS = frozenset({"waiting"})


def flatten(counters: dict[str, Any]) -> Iterator[tuple[str, float]]:
    """``status.counters`` as ``(name, value)`` pairs, nested tables flattened as ``outer_inner``."""
    for k, v in counters.items():
        if isinstance(v, bool):
            continue
        if isinstance(v, int | float):
            yield k, v
        elif isinstance(v, dict):
            for k2, v2 in v.items():
                if isinstance(v2, int | float) and not isinstance(v2, bool):
                    yield f"{k}_{k2}", v2


class StatusCollector:
    """Builds the metric families from the last published status (None: nothing yet)."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.status: dict[str, Any] | None = None

    def collect(self) -> Iterator[Metric]:
        st, node = self.status, self.node
        if st is None:
            return
        ops = GaugeMetricFamily("gossipbook_ops", "ops held (compacted included)", labels=["node"])
        ops.add_metric([node], st["ops"])
        yield ops
        resting = GaugeMetricFamily("gossipbook_resting_orders", "orders resting in the books", labels=["node"])
        resting.add_metric([node], st.get("resting_orders", 0))
        yield resting
        trades = GaugeMetricFamily("gossipbook_trades", "trades by finality", labels=["node", "finality"])
        trades.add_metric([node, "final"], st["trades_final"])
        trades.add_metric([node, "provisional"], st["trades_provisional"])
        yield trades
        counts = CounterMetricFamily("gossipbook_counter", "node counters (events since start)",
                                     labels=["node", "name"])
        levels = GaugeMetricFamily("gossipbook_level", "node levels (go down as well as up)", labels=["node", "name"])
        for name, v in flatten(st["counters"]):
            (levels if name in GAUGE_COUNTERS else counts).add_metric([node, name], v)
        yield counts
        yield levels
        offset = GaugeMetricFamily("gossipbook_peer_offset_seconds", "estimated peer clock offset",
                                   labels=["node", "peer"])
        rtt = GaugeMetricFamily("gossipbook_peer_rtt_seconds", "round trip to peer", labels=["node", "peer"])
        for p, est in st["peers"].items():
            if est:
                offset.add_metric([node, p], est["offset_us"] / 1e6)
                rtt.add_metric([node, p], est["rtt_us"] / 1e6)
        yield offset
        yield rtt
        feeds = st.get("feeds")
        if feeds:  # eventual mode: remote clients' leased subscriptions held here (core/feeds.py)
            subs = GaugeMetricFamily("gossipbook_feed_subscriptions", "leased feed subscriptions held",
                                     labels=["node", "feed"])
            for feed in ("trades", "book"):
                subs.add_metric([node, feed], feeds.get(feed, 0))
            yield subs


async def serve_metrics(runner: Any, port: int, interval_s: float = 1.0) -> None:
    reg = CollectorRegistry()
    collector = StatusCollector(runner.node_id)
    reg.register(collector)  # type: ignore[arg-type]
    try:
        start_http_server(port, addr="127.0.0.1", registry=reg)
    except OSError as e:
        raise UsageError(f"cannot serve metrics on 127.0.0.1:{port}: {e.strerror}") from None
    while True:
        collector.status = runner.status()  # one reference swap: the scrape thread sees a whole snapshot
        await trio.sleep(interval_s)
