"""``gossipbook watch`` against a real node process: ``--json`` prints one object per fill as the
node pushes it, Ctrl-C ends it cleanly (exit 0, the node told at once), a node that does not answer
is one error line and exit 3, a user mistake one line and exit 2."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from gossipbook.cli.main import main

from ..node.harness import Cluster, cli

PY = sys.executable


def _lines(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    q: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            q.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return q


def _counters(c: Cluster) -> dict[str, Any]:
    return c.status()[0].get("counters", {})


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def test_watch_json_prints_fills_and_ctrl_c_ends_it(tmp_path: Path) -> None:
    c = Cluster(tmp_path, 1)
    try:
        c.start_all()
        alice, bob = (str(tmp_path / "clients" / f"{a}.toml") for a in ("alice", "bob"))
        # the child starts with Ctrl-C's default disposition and unblocked, whatever this worker
        # inherited (a process started with SIGINT ignored keeps ignoring it, as Unix wants for
        # background jobs: twice in CI one xdist worker's watch never saw the signal)
        inherited = (signal.getsignal(signal.SIGINT), signal.pthread_sigmask(signal.SIG_BLOCK, []))
        w = subprocess.Popen([PY, "-m", "gossipbook", "watch", "-c", alice, "--json"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=_default_sigint)
        try:
            out = _lines(w)
            deadline = time.monotonic() + 15
            while _counters(c).get("feed_subscribes", 0) < 1:
                assert time.monotonic() < deadline and w.poll() is None, "watch never subscribed"
                time.sleep(0.1)
            cli("submit", "-c", alice, "sell", "2", "@", "100", check=True)
            cli("submit", "-c", bob, "buy", "2", "@", "100", check=True)
            fill = json.loads(out.get(timeout=10))
            assert fill["type"] == "fill" and fill["node"] == "n1" and fill["symbol"] == "GBX"
            assert (fill["side"], fill["amount"], fill["role"]) == ("sell", "2", "maker")
            assert float(fill["price"]) == 100 and fill["trade_id"].endswith("/0")
            assert fill["status"] == "final" and fill["final"] is True and fill["undone"] is False  # one node
            w.send_signal(signal.SIGINT)
            try:
                assert w.wait(timeout=10) == 0
            except subprocess.TimeoutExpired:
                raise AssertionError(f"watch did not end on SIGINT (this worker's SIGINT handler and mask: "
                                     f"{inherited})") from None
            assert "Traceback" not in w.stderr.read()  # type: ignore[union-attr]
            assert out.empty()  # exactly one line for one fill
            assert _counters(c)["feed_unsubscribes"] == 1  # the node was told, not left to the lease
        finally:
            if w.poll() is None:
                w.kill()
                w.wait(timeout=5)
    finally:
        c.stop()


def test_watch_errors_are_one_line(tmp_path: Path, capsys: Any) -> None:
    c = Cluster(tmp_path, 1)  # written, never started: nobody answers
    alice = str(tmp_path / "clients" / "alice.toml")
    for argv, code, text in [(["--timeout", "0.5"], 3, "gossipbook: error: node n1 at 127.0.0.1:"),
                             (["--book", "NOPE"], 2, "NOPE"), (["--book", "GBX", "--depth", "0"], 2, "--depth")]:
        assert main(["watch", "-c", alice, *argv]) == code, argv
        err = capsys.readouterr().err
        assert text in err and err.startswith("gossipbook: error: ") and err.count("\n") == 1, err
    assert c.procs == {}
