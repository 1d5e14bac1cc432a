"""Each script in ``demos/`` runs as a user would run it (``python demos/<name>.py``) and prints
what it promises: the test reads its output, not only its exit code. Each takes under 60 s (the
limit here), on free loopback ports and temp dirs.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DEMOS = Path(__file__).resolve().parent.parent.parent / "demos"


def run_demo(name: str) -> str:
    proc = subprocess.run([sys.executable, str(DEMOS / name)], capture_output=True, text=True, timeout=60,
                          cwd=DEMOS.parent)
    assert proc.returncode == 0, f"{name} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout


def test_custom_venue() -> None:
    out = run_demo("custom_venue.py")
    assert "venue up: 3 nodes (n1, n2, n3) trading ACME, BTCX" in out
    assert "bob buys 150 ACME @ 102: closed, filled 150 in 2 fill(s) (100@101.50, 50@102.00)" in out
    assert "bob sells 0.25 BTCX @ 59990.5: closed, filled 0.250 @ 60000.0" in out
    for nid in ("n1", "n2", "n3"):  # the venue hook is on every node
        assert re.search(rf"venue hook at {nid} refused: BTCX: notional 64000\.0+ > 50000 per order", out), out
    assert "UNEXPECTED" not in out
    assert "float price refused before sending" in out
    assert "off-grid refused: quantity 15 is not a multiple of ACME's lot size 10" in out
    assert "account limit refused: alice: exposure" in out
    assert "book ACME at n3: bids [-] asks [150@102.00, 300@110.00]" in out
    assert "book BTCX at n3: bids [0.150@60000.0] asks [-]" in out
    assert re.search(r"fills of alice: sell 100 ACME @ 101\.50 \(maker, (final|provisional)\)", out), out
    assert re.search(r"fills of bob: buy 100 ACME @ 101\.50 \(taker", out), out
    assert re.search(r"summary: 3 trades .*3 resting orders, digests equal on all 3 nodes", out), out


def test_embed_trio() -> None:
    out = run_demo("embed_trio.py")
    assert "3 nodes serving inside the app" in out
    assert "faulty consumer stopped (consumer bug on the first trade); node n2 still running: True" in out
    assert re.search(r"n3 stopped by cancelling its scope \(it held \d+ ops\); <gossipbook.Node n3 stopped>", out)
    assert "serving it again is refused: node n3 was already served" in out
    assert re.search(r"n3 restarted from its data dir with \d+ ops \(>= \d+: True\)", out), out
    assert "digests equal on n1, n2, n3 while running: True" in out
    m = re.search(r"application cancelled: ticker ticked (\d+) times, gateway sent (\d+) orders \((\d+) fills\); "
                  r"n1's feed saw (\d+) trades executed, (\d+) final, (\d+) missed", out)
    assert m, out
    ticks, orders, fills, executed, final, missed = map(int, m.groups())
    assert ticks > 10 and orders > 10 and fills > 0 and executed > 0 and final > 0 and missed == 0
    assert "all nodes stopped: True" in out


def test_market_maker() -> None:
    out = run_demo("market_maker.py")
    assert "t=2s partition: n1 | n2 n3" in out and "t=7s heal: every link restored" in out
    for acct in ("mm", "taker1", "taker3"):
        assert re.search(rf"^  {acct}: \d+ fills \(\d+ final, \d+ undone, \d+ revised\)", out, re.M), out
    m = re.search(r"revised fills after the heal: (\d+)", out)
    assert m, out
    assert re.search(r"maker P&L: position -?\d+, cash -?[\d.]+, marked at 100\.00: -?[\d.]+ \(\d+ quotes, "
                     r"\d+ revisions seen live on its feed\)", out), out
    assert re.search(r"taker1: \d+ IOC orders, \d+ immediate fills", out)
    assert "digests equal on all nodes: True" in out
    # every fill settled: final or undone (nothing left provisional)
    for line in re.findall(r"^  \w+: (\d+) fills \((\d+) final, (\d+) undone", out, re.M):
        total, final, undone = map(int, line)
        assert final + undone == total, out


def test_readme_library_example(tmp_path: Path) -> None:
    """The README's library example runs as printed."""
    readme = (DEMOS.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Use it as a library", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("closed 100.25 OrderBook(symbol='GBX', bids=(), asks=(BookLevel(price=Decimal('100.25'), "
                                  "amount=Decimal('6'), orders=1),)"), proc.stdout
