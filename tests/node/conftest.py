from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import Cluster


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator:
    made: list[Cluster] = []

    def make(n: int, extra: str = "", data: bool = False) -> Cluster:
        c = Cluster(tmp_path, n, extra, data)
        made.append(c)
        return c
    yield make
    for c in made:
        c.stop()
