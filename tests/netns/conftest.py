"""Fixtures for the kernel-partition tests: a private namespace network with 4 real node processes.

The tests run in the default ``python -m pytest`` (marker ``netns``, never deselected). They skip,
saying why, only when not root or when ``ip``/``nft`` are missing or unusable here; set
``GOSSIPBOOK_NETNS_REQUIRED=1`` to make that a failure instead (a CI that must run them).
Every namespace and node process a test made is removed in teardown, pass or fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from .lab import Lab, reap_stale, unavailable

_why: list[str | None] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "netns: real node processes in network namespaces, faults by nftables "
                                       "(needs root, ip, nft)")


def _require() -> None:
    if not _why:
        _why.append(unavailable())
        if _why[0] is None:
            reap_stale()
    if _why[0] is not None:
        if os.environ.get("GOSSIPBOOK_NETNS_REQUIRED"):
            pytest.fail(f"GOSSIPBOOK_NETNS_REQUIRED is set but: {_why[0]}")
        pytest.skip(_why[0])


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """4 nodes n1..n4, each in its own namespace on a private bridge, started and ready."""
    _require()
    lab = Lab(tmp_path, 4)
    try:
        lab.build()
        lab.write_config()
        lab.start_all()
        yield lab
    finally:
        lab.teardown()
