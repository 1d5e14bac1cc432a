"""``gossipbook sim``: flags, JSON shape, clear usage errors, and the replay line of a failing seed."""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

import pytest

from gossipbook.cli import sim as sim_cli
from gossipbook.core.errors import UsageError

FAST = ["--nodes", "3", "--duration", "4", "--orders", "40", "--bound", "15"]


def run_cli(argv: list[str]) -> int:
    """Parse and run like ``gossipbook`` does (``main`` maps UsageError to one line, exit 2)."""
    p = argparse.ArgumentParser(prog="gossipbook")
    sim_cli.add_parser(p.add_subparsers(dest="command"))
    args = p.parse_args(["sim", *argv])
    return int(args.func(args))


def test_json_output_has_the_documented_shape(capsys: pytest.CaptureFixture[str]) -> None:
    rc = run_cli([*FAST, "--seeds", "2", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == (1 if out["failures"] else 0)
    assert out["runs"] == 2 and len(out["results"]) == 2
    r = out["results"][0]
    for key in ("seed", "ok", "violations", "convergence_s", "msgs_per_op", "bytes_per_op", "trace_hash",
                "ops", "trades", "revised_trades", "final_trades", "faults", "command"):
        assert key in r
    assert [x["seed"] for x in out["results"]] == [1, 2]
    assert "by_fault" in out["summary"]


def test_a_seed_alone_is_one_run(capsys: pytest.CaptureFixture[str]) -> None:
    run_cli([*FAST, "--seed", "9", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert [r["seed"] for r in out["results"]] == [9]


def test_the_table_names_the_seed_and_hash(capsys: pytest.CaptureFixture[str]) -> None:
    run_cli([*FAST, "--seed", "4"])
    text = capsys.readouterr().out
    assert "seed 4" in text and "trace hash" in text


def test_a_failing_seed_prints_the_command_that_replays_it(capsys: pytest.CaptureFixture[str]) -> None:
    rc = run_cli([*FAST, "--seeds", "3", "--faults", "partition,loss", "--break", "no-anti-entropy"])
    text = capsys.readouterr().out
    assert rc == 1
    line = next(ln for ln in text.splitlines() if "replay:" in ln)
    cmd = line.split("replay:", 1)[1].strip()
    assert cmd.startswith("gossipbook sim ") and "--break no-anti-entropy" in cmd
    # the printed command replays the run exactly
    seed = int(cmd.split("--seed ")[1].split()[0])
    run_cli([*FAST, "--seeds", "3", "--faults", "partition,loss", "--break", "no-anti-entropy", "--json"])
    batch = {r["seed"]: r["trace_hash"] for r in json.loads(capsys.readouterr().out)["results"]}
    run_cli([*shlex.split(cmd)[2:], "--json"])
    again = json.loads(capsys.readouterr().out)["results"][0]
    assert again["trace_hash"] == batch[seed] and not again["ok"]


def test_trace_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "trace.txt"
    run_cli([*FAST, "--seed", "2", "--json", "--trace", str(f)])
    h = json.loads(capsys.readouterr().out)["results"][0]["trace_hash"]
    text = f.read_text()
    assert text.startswith("# seed 2") and h in text and "ClientSubmit" in text


@pytest.mark.parametrize(("argv", "message"), [
    (["--faults", "partition,meteor"], "unknown fault 'meteor'"),
    (["--break", "no-brakes"], "unknown --break 'no-brakes'"),
    (["--nodes", "0"], "--nodes"),
    (["--seeds", "0"], "--seeds"),
    (["--duration", "-1"], "--duration"),
    (["--orders", "-5"], "--orders"),
    (["--jobs", "0"], "--jobs"),
    (["--gossip", "nope=1"], "unknown key 'nope'"),
    (["--gossip", "defer_min_ops"], "KEY=VALUE"),
    (["--gossip", "defer_ms=soon"], "not a number"),
    (["--gossip", "interval_ms=0"], "interval must be positive"),
])
def test_bad_flags_are_one_clear_usage_error(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("-", r"\-").replace("'", "'")):
        run_cli(argv)


def test_jobs_give_the_same_results(capsys: pytest.CaptureFixture[str]) -> None:
    run_cli([*FAST, "--seeds", "3", "--json"])
    one = [r["trace_hash"] for r in json.loads(capsys.readouterr().out)["results"]]
    run_cli([*FAST, "--seeds", "3", "--jobs", "2", "--json"])
    two = [r["trace_hash"] for r in json.loads(capsys.readouterr().out)["results"]]
    assert one == two


def test_a_gossip_setting_changes_the_run_and_its_replay_line_keeps_it(capsys: pytest.CaptureFixture[str]) -> None:
    """``--gossip`` reaches the nodes (a different trace) and the replay command carries it."""
    from gossipbook.core.gossip import GossipConfig
    from gossipbook.sim import SimConfig
    from gossipbook.sim.run import replay_command

    run_cli([*FAST, "--seed", "2", "--json"])
    plain = json.loads(capsys.readouterr().out)["results"][0]["trace_hash"]
    run_cli([*FAST, "--seed", "2", "--json", "--gossip", "interval_ms=37", "--gossip", "push=false"])
    changed = json.loads(capsys.readouterr().out)["results"][0]
    assert changed["trace_hash"] != plain
    cmd = replay_command(2, SimConfig(gossip=GossipConfig(interval_ns=37_000_000, push=False)))
    assert "--gossip interval_ns=37000000" in cmd and "--gossip push=false" in cmd
    assert sim_cli._config(_parsed(shlex.split(cmd)[2:])).gossip == GossipConfig(interval_ns=37_000_000, push=False)


def _parsed(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="gossipbook")
    sim_cli.add_parser(p.add_subparsers(dest="command"))
    return p.parse_args(["sim", *argv])
