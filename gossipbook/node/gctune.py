"""Garbage-collector settings for a node process.

A node holds a large, long-lived heap (ops, trades, books) and allocates a Trade, a list or a
tuple for nearly every op it folds. With CPython's default thresholds (700 allocations per young
collection) the collector runs every few hundred ops and, every 100 young collections, walks the
whole heap: 25-30% of a 100k-op catch-up replay here (0.78-0.86 s -> 0.58 s with the thresholds
below, about the same as with the collector off). The core's data is acyclic and freed by
reference counting; the collector is still needed for the cycles trio and exceptions create, so
it is made rarer, not switched off.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

THRESHOLDS = (50_000, 20, 20)  # young collection every 50k allocations; older ones rarer still


def tune_gc() -> None:
    """Apply ``THRESHOLDS`` to this process (node processes and the benchmark floors that stand
    beside them, so a ratio to a floor is not flattered by it)."""
    gc.set_threshold(*THRESHOLDS)


@contextmanager
def tuned_gc() -> Iterator[None]:
    """``THRESHOLDS`` for the duration of a block (a benchmark floor), then the previous ones."""
    before = gc.get_threshold()
    tune_gc()
    try:
        yield
    finally:
        gc.set_threshold(*before)
