"""Prometheus metrics for a node: gauges refreshed from the trio loop once a second (the HTTP
server runs in prometheus-client's thread and only reads the registry, never the node)."""

from __future__ import annotations

from typing import Any

import trio
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from ..core.errors import UsageError


async def serve_metrics(runner: Any, port: int, interval_s: float = 1.0) -> None:
    reg = CollectorRegistry()
    node = runner.node_id
    g_ops = Gauge("gossipbook_ops", "ops held (compacted included)", ["node"], registry=reg)
    g_trades = Gauge("gossipbook_trades", "trades by finality", ["node", "finality"], registry=reg)
    g_counter = Gauge("gossipbook_counter", "node counters", ["node", "name"], registry=reg)
    g_offset = Gauge("gossipbook_peer_offset_seconds", "estimated peer clock offset", ["node", "peer"], registry=reg)
    g_rtt = Gauge("gossipbook_peer_rtt_seconds", "round trip to peer", ["node", "peer"], registry=reg)
    try:
        start_http_server(port, addr="127.0.0.1", registry=reg)
    except OSError as e:
        raise UsageError(f"cannot serve metrics on 127.0.0.1:{port}: {e.strerror}") from None
    while True:
        st = runner.status()
        g_ops.labels(node).set(st["ops"])
        g_trades.labels(node, "final").set(st["trades_final"])
        g_trades.labels(node, "provisional").set(st["trades_provisional"])
        for k, v in st["counters"].items():
            if isinstance(v, int | float):
                g_counter.labels(node, k).set(v)
            elif isinstance(v, dict):
                for k2, v2 in v.items():
                    g_counter.labels(node, f"{k}_{k2}").set(v2)
        for p, est in st["peers"].items():
            if est:
                g_offset.labels(node, p).set(est["offset_us"] / 1e6)
                g_rtt.labels(node, p).set(est["rtt_us"] / 1e6)
        await trio.sleep(interval_s)
