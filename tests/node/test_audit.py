"""The audit trail: rows written are the rows exported (JSON lines and CSV), files rotate and are
retired, a torn tail is dropped and middle damage refused, and on a live loopback cluster every
acknowledged order has its stamp row with a UTC estimate and bound, even after SIGKILL."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pytest

from gossipbook.cli.main import main
from gossipbook.core.book import Trade
from gossipbook.core.clockbound import ClockBound, ClockConfig
from gossipbook.core.ops import CANCEL, NEW, Op, TradeExecuted, TradeRevised
from gossipbook.node.audit import AuditLog, AuditTrail, read_rows, utc_text
from gossipbook.node.storage import StorageError

from .harness import cli, write_config

T = 1_780_000_000_000_000_000


def _op(origin: str, seq: int, kind: int = NEW, account: str = "alice", order_id: str = "") -> Op:
    return Op(T + seq * 1000, seq % 3, origin, seq, kind, "GBX", order_id, 0, 10_000 + seq, 5, 0, f"r{seq}", account)


class FakeClock:
    def __init__(self) -> None:
        self.t = T

    def __call__(self) -> int:
        self.t += 1_234
        return self.t


def _export(capsys: pytest.CaptureFixture[str], cfg: Path, data: Path, *extra: str) -> tuple[int, str]:
    code = main(["audit", "export", "-c", str(cfg), "--node", "n1", "--data-dir", str(data), *extra])
    return code, capsys.readouterr().out


def test_rows_round_trip_through_export_as_jsonl_and_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path / "cluster.toml", 1)
    clock = FakeClock()
    trail = AuditTrail(AuditLog.open(tmp_path, "batch"), "n1", clock, ClockBound("n1", []))  # alone: exact
    ops = [_op("n1", 1), _op("n2", 1, account="bob"), _op("n1", 2, CANCEL, order_id="n1:1")]
    trail.ops(ops)
    trade = Trade("n2:1/0", "GBX", 10_001, 5, "n1:1", "n2:1", 0, "alice", "bob")
    trail.events([TradeExecuted(trade), TradeRevised(trade, None), "not a trade"])
    # a node whose reference never answered: no bound, no UTC estimate
    unsynced = AuditTrail(trail.log, "n1", clock, ClockBound("n1", ["n2"], ClockConfig(time_source="n2")))
    unsynced.ops([_op("n1", 3)])
    trail.close()
    assert trail.counters["audit_rows"] == 6 and trail.counters["audit_fsyncs"] >= 1
    code, out = _export(capsys, cfg, tmp_path)
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["event"], r["op"], r["account"]) for r in rows] == [
        ("stamp", "n1:1", "alice"), ("apply", "n2:1", "bob"), ("stamp", "n1:2", "alice"),
        ("trade", "n2:1/0", "bob"), ("revise", "n2:1/0", "bob"), ("stamp", "n1:3", "alice")]
    first = rows[0]
    assert first["hlc"] == f"{T + 1000}:1" and first["wall_ns"] == T + 1_234
    assert first["utc"] == utc_text(T + 1_234) and first["bound_us"] == 0.0 and first["clock"] == "synced"
    assert rows[3]["hlc"] == f"{T + 1000}:1"  # a trade carries its cause op's HLC (n2:1)
    assert rows[3]["detail"] == "GBX 5@10001 maker n1:1 (alice) taker n2:1" and rows[4]["detail"] == "undone"
    assert rows[5]["utc"] is None and rows[5]["bound_us"] is None and rows[5]["clock"] == "unsynced"
    assert set(first) >= {"op", "account", "hlc", "wall_ns", "utc", "bound_us", "event"}
    code, out = _export(capsys, cfg, tmp_path, "--format", "csv")
    assert code == 0
    back = list(csv.DictReader(io.StringIO(out)))
    assert [(r["op"], r["event"], r["utc"], r["bound_us"]) for r in back] == [
        (r["op"], r["event"], r["utc"] or "", "" if r["bound_us"] is None else str(r["bound_us"])) for r in rows]
    # --since / --until on the UTC estimate (the wall clock for unsynced rows)
    assert rows[0]["wall_ns"] == rows[2]["wall_ns"] < rows[3]["wall_ns"] == rows[4]["wall_ns"] < rows[5]["wall_ns"]
    code, out = _export(capsys, cfg, tmp_path, "--since", utc_text(rows[3]["wall_ns"]),
                        "--until", str(rows[5]["wall_ns"]))
    assert [json.loads(x)["event"] for x in out.splitlines()] == ["trade", "revise"]
    assert main(["audit", "export", "-c", str(cfg), "--node", "n1", "--data-dir", str(tmp_path),
                 "--since", "yesterday"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a time" in err and "Traceback" not in err


def test_files_rotate_and_the_oldest_are_retired(tmp_path: Path) -> None:
    log = AuditLog.open(tmp_path, "never", max_bytes=300, keep=3)
    trail = AuditTrail(log, "n1", FakeClock(), ClockBound("n1", []))
    for i in range(1, 41):
        trail.ops([_op("n1", i)])
    trail.close()
    files = sorted(tmp_path.glob("audit-*.log"))
    assert len(files) == 3 and log.counters["audit_rotations"] >= 5
    assert log.counters["audit_files_removed"] == log.counters["audit_rotations"] + 1 - 3
    assert all(os.stat(f).st_mode & 0o777 == 0o600 for f in files)
    seqs = [int(r[1].split(":")[1]) for r in read_rows(tmp_path)]
    assert seqs == list(range(seqs[0], 41)) and seqs[0] > 1  # the newest, in order, none missing
    assert log.counters["audit_fsyncs"] == 0  # fsync = "never"


def _trail_with(tmp_path: Path, n: int) -> Path:
    trail = AuditTrail(AuditLog.open(tmp_path, "batch"), "n1", FakeClock(), ClockBound("n1", []))
    for i in range(1, n + 1):
        trail.ops([_op("n1", i)])
    trail.close()
    return next(tmp_path.glob("audit-*.log"))


def test_a_torn_tail_is_dropped_and_middle_damage_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = _trail_with(tmp_path, 3)
    size = f.stat().st_size
    with open(f, "ab") as fh:
        fh.write(b"GA\x40\x00\x00\x00partial")  # a write cut short by SIGKILL
    assert len(list(read_rows(tmp_path))) == 3  # a reader stops quietly at the newest file's torn tail
    log = AuditLog.open(tmp_path, "batch")
    assert log.counters["audit_torn_tail_dropped"] == 1 and f.stat().st_size == size
    log.close()
    data = bytearray(f.read_bytes())
    data[20] ^= 0xFF  # damage the first record: valid ones follow
    f.write_bytes(bytes(data))
    with pytest.raises(StorageError, match="damaged audit record at offset 0"):
        AuditLog.open(tmp_path, "batch")
    with pytest.raises(StorageError, match="damaged audit record"):
        list(read_rows(tmp_path))
    cfg = write_config(tmp_path / "cluster.toml", 1)
    assert main(["audit", "export", "-c", str(cfg), "--node", "n1", "--data-dir", str(tmp_path)]) == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "damaged audit record at offset 0" in err


def test_rows_the_disk_refused_are_kept_and_written_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = AuditLog.open(tmp_path, "batch")
    trail = AuditTrail(log, "n1", FakeClock(), ClockBound("n1", []), max_pending=2)
    real = AuditLog.append

    def full(self: AuditLog, rows: list, sync: bool = True) -> None:
        raise StorageError("cannot write audit file: No space left on device")

    monkeypatch.setattr(AuditLog, "append", full)
    trail.ops([_op("n1", 1), _op("n1", 2), _op("n1", 3)])
    assert trail.failed and trail.counters["audit_rows_lost"] == 1  # capped: the oldest is counted lost
    monkeypatch.setattr(AuditLog, "append", real)
    trail.ops([_op("n1", 4)])
    trail.close()
    assert [r[1] for r in read_rows(tmp_path)] == ["n1:2", "n1:3", "n1:4"] and trail.failed is None


def _rows(capsys: pytest.CaptureFixture[str], cfg: Path, nid: str) -> list[dict]:
    assert main(["audit", "export", "-c", str(cfg), "--node", nid]) == 0
    return [json.loads(x) for x in capsys.readouterr().out.splitlines()]


def test_live_cluster_every_acked_order_has_a_stamp_row_after_sigkill(make_cluster,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    c = make_cluster(3, data=True)
    c.start_all()
    alice, bob = c.tmp / "clients" / "alice.toml", c.tmp / "clients" / "bob.toml"
    placed = []
    for price in ("100", "101"):
        r = cli("submit", "-c", str(alice), "-n", "n1", "sell", "1", "@", price, "--json")
        assert r.returncode == 0, r.stderr + c.dump_logs()
        placed.append(json.loads(r.stdout)["order_id"])
    r = cli("submit", "-c", str(bob), "-n", "n2", "buy", "2", "@", "101", "--wait", "replicated", "--json")
    assert r.returncode == 0, r.stderr
    taker = json.loads(r.stdout)["order_id"]
    c.kill("n1")  # SIGKILL: no graceful close of the trail
    n1, n2 = _rows(capsys, c.config, "n1"), _rows(capsys, c.config, "n2")
    assert set(placed) <= {x["op"] for x in n1 if x["event"] == "stamp"}  # acked: recorded before the ack left
    assert set(placed) <= {x["op"] for x in n2 if x["event"] == "apply"}
    assert taker in {x["op"] for x in n2 if x["event"] == "stamp"}
    trades = [x for x in n2 if x["event"] == "trade"]
    assert len(trades) == 2 and all(t["op"].startswith(taker + "/") and t["account"] == "bob" for t in trades)
    for x in n1 + n2:
        assert x["clock"] == "synced" and 0 <= x["bound_us"] <= 1000 and x["utc"].endswith("Z")
        assert abs(int(x["hlc"].split(":")[0]) - x["wall_ns"]) < 5_000_000_000
    c.start("n1")  # the trail reopens after SIGKILL (a torn tail would be cut, counted)
    st = next(s for s in c.wait_ready(["n1"]) if s["id"] == "n1")
    assert st["counters"]["audit"]["audit_write_errors"] == 0
    r = cli("submit", "-c", str(alice), "-n", "n1", "sell", "1", "@", "110", "--json")
    assert r.returncode == 0, r.stderr
    oid = json.loads(r.stdout)["order_id"]
    assert oid in {x["op"] for x in _rows(capsys, c.config, "n1") if x["event"] == "stamp"}
