"""``gossipbook demo`` from the command line: headless JSON, plain headless, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ..tui.ptyterm import ROOT, demo_argv


def demo(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *demo_argv(*args)], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)


def test_headless_json_diverges_in_partition_and_converges_after_heal() -> None:
    r = demo("--partition", "--headless", "--json", "--duration", "8", "--partition-at", "1.5", "--heal-at", "4")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    for key in ("nodes", "mode", "partitioned", "diverged_during_partition", "converged",
                "convergence_ms_after_heal", "digests", "orders", "trades", "revised_trades"):
        assert key in out, key
    assert out["nodes"] == 4 and out["mode"] == "eventual" and out["partitioned"] is True
    assert out["split"] == [["n1", "n2"], ["n3", "n4"]]
    assert out["diverged_during_partition"] is True and out["max_distinct_digests"] >= 2
    assert out["converged"] is True and out["all_digests_equal"] is True
    assert 0 < out["convergence_ms_after_heal"] < 4000
    assert len(set(out["digests"].values())) == 1 and sorted(out["digests"]) == ["n1", "n2", "n3", "n4"]
    assert out["orders"]["sent"] > 100 and out["orders"]["acked"] > 100 and out["trades"] > 0
    assert out["ops_exchanged"]["repaired_after_heal"] > 0
    assert out["elapsed_s"] < 8 + 3.5  # ended early: converged after the heal, then a short grace
    assert "Traceback" not in r.stderr


def test_headless_without_a_terminal_prints_events_and_a_summary() -> None:
    r = demo("--nodes", "2", "--duration", "1.5", "--rate", "30")
    assert r.returncode == 0, r.stderr
    assert "2 nodes up on 127.0.0.1" in r.stdout and "summary" in r.stdout
    assert "all 2 digests equal" in r.stdout and "Traceback" not in r.stdout + r.stderr


def test_replace_kills_removes_and_adds_a_node_while_orders_flow() -> None:
    """--replace: n4 killed and removed (its role 'removed' and epoch 2 on every remaining node,
    its entry gone from the demo's file), the trades provisional just before the removal final
    within 2 s of it, n5 added and caught up: every live digest equal, n5's included."""
    r = demo("--replace", "--json", "--nodes", "4", "--rate", "15", "--duration", "40", timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    x = out["replace"]
    assert x["killed"] == "n4" and x["added"] == "n5" and x["complete"] is True, x
    assert sorted(out["digests"]) == ["n1", "n2", "n3", "n5"]
    assert out["all_digests_equal"] is True and out["converged"] is True
    assert x["epochs"] == {"n1": 2, "n2": 2, "n3": 2, "n5": 2}  # one removal, one addition
    assert set(x["killed_role"].values()) == {"removed"} and set(x["added_role"].values()) == {"voter"}
    assert x["fence"] > 0 and x["removed_at_s"] > x["killed_at_s"]
    assert x["provisional_at_removal"] > 0  # finality had stalled on the dead member ...
    assert 0 <= x["finality_resumed_ms"] < 2000  # ... and resumed once it was removed
    assert 0 < x["added_ready_ms"] <= x["caught_up_ms"] < 15000
    assert [c["exit"] for c in x["commands"]] == [0, 0]
    assert x["commands"][0]["command"].startswith("gossipbook cluster remove-node -c cluster.toml n4 --write")
    assert out["trades"] > 0 and out["orders"]["acked"] > 100  # (the last trades may still be provisional)
    # a narration line for each step, in order
    said = [text for _t, text in x["steps"] if not text.startswith("  ")]  # less the commands' own output
    expect = ["n4 killed for good", "operator: gossipbook cluster remove-node", "n4 removed", "finality resumed",
              "operator: gossipbook cluster add-node", "n5 started", "n5 takes orders", "n5 is a voter on every node",
              "n5 caught up"]
    assert [next((i for i, t in enumerate(said) if t.startswith(e)), None) for e in expect] == list(range(9)), said
    assert out["elapsed_s"] < 40 + 3.5  # ended by itself once n5 caught up


@pytest.mark.parametrize("args, message", [
    (("--split", "n1,n2"), "--split 'n1,n2' must list at least two non-empty sides"),
    (("--nodes", "12"), "--nodes must be between 2 and 8"),
    (("--partition", "--partition-at", "5", "--heal-at", "2"), "must come after --partition-at"),
    (("--replace", "--nodes", "2"), "--replace needs --nodes 3 or more"),
    (("--replace", "--partition"), "--replace runs on its own"),
])
def test_mistakes_are_one_line(args: tuple[str, ...], message: str) -> None:
    r = demo(*args, timeout=20)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [f"gossipbook: error: {r.stderr.split('error: ', 1)[1].strip()}"]
    assert message in r.stderr


async def test_demo_with_fix_accepts_a_logon_and_orders_from_a_fix_client() -> None:
    import os
    import re
    import signal

    import trio

    from ..fix.initiator import Initiator, field, is_er

    argv = [sys.executable, *demo_argv("--fix", "0", "--headless", "--nodes", "2", "--duration", "60")]
    proc = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
                                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    out = b""
    try:
        with trio.fail_after(30):
            assert proc.stdout is not None
            while not (m := re.search(rb"FIX gateway on 127\.0\.0\.1:(\d+): .*Password \(554\) (\S+)", out)):
                chunk = await proc.stdout.receive_some(4096)
                assert chunk, f"the demo ended without starting its FIX gateway:\n{out.decode()}"
                out += chunk
            assert b"SenderCompID=FIX1" in out and b"TargetCompID=GBX" in out  # the printed client settings
            fix1 = await Initiator.connect(int(m[1]), "FIX1", password=m[2].decode())
            fix2 = await Initiator.connect(int(m[1]), "FIX2", password=m[2].decode())
            assert field(await fix1.logon(), 35) == "A" and field(await fix2.logon(), 35) == "A"
            await fix1.send("D", [(11, "d1"), (55, "GBX"), (54, "1"), (38, "1"), (40, "2"), (44, "1.00"),
                                  (59, "1"), (60, "20240101-00:00:00")])
            new = await fix1.expect(is_er("0", "d1"), 10)
            assert field(new, 1) == "fix1"
            await fix1.send("F", [(11, "d2"), (41, "d1"), (55, "GBX"), (54, "1"), (60, "20240101-00:00:00")])
            assert field(await fix1.expect(is_er("4", "d2"), 10), 37) == field(new, 37)
            await fix1.logout()
            await fix1.aclose()
            proc.send_signal(signal.SIGINT)  # Ctrl-C: the gateway logs FIX2 out before the nodes stop
            bye = await fix2.expect(lambda x: field(x, 35) == "5", 10)
            assert "shutting down" in (field(bye, 58) or "")
            assert await proc.wait() == 130
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
