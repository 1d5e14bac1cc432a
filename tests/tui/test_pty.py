"""The real TUI in a real terminal: a pty read through pyte, as a user would see it."""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Iterator

import pytest

from .ptyterm import Term, demo_argv

pytest.importorskip("pyte")

IDS = ("n1", "n2", "n3", "n4")


@pytest.fixture
def term_factory() -> Iterator:
    made: list[Term] = []

    def make(*args: str) -> Term:
        t = Term(demo_argv(*args), 100, 30)
        made.append(t)
        return t
    yield make
    for t in made:
        t.close()


def ports_on(screen: str) -> dict[str, int]:
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"(n\d) :(\d{2,5})", screen)}


def assert_ports_free(ports: dict[str, int]) -> None:
    assert len(ports) == 4, ports
    for nid, port in ports.items():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind(("127.0.0.1", port))  # nobody holds the node's port any more
        except OSError as e:  # pragma: no cover - the failure we test for
            raise AssertionError(f"{nid}'s port {port} is still bound after exit: {e}") from None
        finally:
            s.close()


def no_process_with(marker: str) -> bool:
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmd and "gossipbook" in cmd:
            return False
    return True


def test_tui_shows_partition_and_convergence(term_factory) -> None:  # type: ignore[no-untyped-def]
    t = term_factory("--partition", "--duration", "9", "--partition-at", "1.5", "--heal-at", "3.5",
                     "--seed", "7301")
    # a frame can be caught half drawn: wait for one that shows the whole partitioned screen
    assert t.wait_for(lambda s: "PARTITIONED n1 n2 | n3 n4" in s and "see" in s and "CUT n1 n2 | n3 n4" in s
                      and "links: row sees col" in s and "partition: n1 n2 | n3 n4" in s
                      and all(re.search(rf"{n} :\d+", s) for n in IDS), 20), t.text()
    mid = t.text()
    for nid in IDS:
        assert re.search(rf"{nid} :\d+", mid), f"no panel for {nid}:\n{mid}"  # a panel per node
    assert "links: row sees col" in mid and "CUT n1 n2 | n3 n4" in mid  # the partition
    assert mid.count("✕") >= 8  # 2 x 2 links cut, both directions
    assert "partition: n1 n2 | n3 n4" in mid  # the event log
    assert "divergence: distinct digests" in mid
    # issue 18: each node panel shows its clock's error bound and drift
    assert t.wait_for(lambda s: len(re.findall(r"±\d+(?:\.\d)?(?:µs|ms) [+-]\d+\.\dppm", s)) == 4, 10), t.text()
    ports = ports_on(mid)
    code = t.wait_exit(30)
    end = t.text()
    assert code == 0, f"exit {code}:\n{end}"
    assert "CONVERGED" in end and "all 4 digests equal" in end and "converged after heal" in end, end
    assert "diverged in partition yes" in end
    assert b"Traceback" not in t.raw
    assert_ports_free(ports)


def test_ctrl_c_mid_run_exits_cleanly(term_factory) -> None:  # type: ignore[no-untyped-def]
    t = term_factory("--partition", "--seed", "7302")
    assert t.wait_for(lambda s: all(re.search(rf"{n} :\d+", s) for n in IDS) and "orders" in s, 20), t.text()
    t.pump(0.5)
    ports = ports_on(t.text())
    t0 = time.monotonic()
    t.send(b"\x03")  # Ctrl-C, through the terminal: SIGINT to the foreground process group
    code = t.wait_exit(10)
    assert code == 130, f"exit {code} after Ctrl-C:\n{t.text()}"
    assert time.monotonic() - t0 < 5
    out = t.text()
    assert b"Traceback" not in t.raw, t.raw.decode(errors="replace")[-3000:]
    assert "INTERRUPTED" in out
    assert not t.alive() and no_process_with("7302")
    assert_ports_free(ports)
