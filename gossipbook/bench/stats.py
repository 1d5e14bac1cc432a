"""Small helpers shared by the benchmarks: medians of repeats, HDR latency summaries."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable

from hdrh.histogram import HdrHistogram


def rate(fn: Callable[[], int], repeats: int = 3) -> float:
    """Median items/s of ``fn`` (which returns how many items it processed) over ``repeats`` runs."""
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = fn()
        rates.append(n / max(time.perf_counter() - t0, 1e-9))
    return statistics.median(rates)


def latency_summary(samples_ns: Iterable[int]) -> dict[str, float]:
    """p50 / p99 / p99.9 / max in microseconds from an HDR histogram (1 ns .. 60 s, 3 digits)."""
    h = HdrHistogram(1, 60_000_000_000, 3)
    n = 0
    for s in samples_ns:
        h.record_value(max(1, int(s)))
        n += 1
    if not n:
        return {"count": 0, "p50_us": 0.0, "p99_us": 0.0, "p999_us": 0.0, "max_us": 0.0}
    return {"count": n, "p50_us": h.get_value_at_percentile(50) / 1e3,
            "p99_us": h.get_value_at_percentile(99) / 1e3,
            "p999_us": h.get_value_at_percentile(99.9) / 1e3, "max_us": h.get_max_value() / 1e3}
