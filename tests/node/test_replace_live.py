"""Issue 20's operator surface with real node processes on 127.0.0.1 (the commands run in-process): ``cluster remove-node --write``
edits cluster.toml (only the removed entry goes) and refuses bad input with one line and no change;
``gossipbook status`` also asks a member added without ``--write`` (it learns it from the nodes'
configuration)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
import tomllib
from pathlib import Path
from typing import NamedTuple

import trio

from gossipbook.bench.procs import free_ports
from gossipbook.cli.main import main
from gossipbook.cli.status import gather_status
from gossipbook.config import load

from .harness import PY


def ask(cfg: Path) -> list[dict]:
    """What ``gossipbook status --json`` lists (in-process: a CLI process takes seconds to start here)."""
    return trio.run(gather_status, load(cfg), 1.0, "status", True)


class Out(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def test_remove_write_edits_the_file_and_status_finds_an_added_node(make_cluster, capsys) -> None:  # noqa: ANN001
    def cli(*args: str, timeout: float = 0) -> Out:
        """``gossipbook ARGS`` in this process (the same entry point; a process takes seconds to start here)."""
        capsys.readouterr()
        rc = main(list(args))
        got = capsys.readouterr()
        return Out(rc, got.out, got.err)

    c = make_cluster(3)
    cfg = c.config
    cfg.write_text("# ops note: keep me\n" + cfg.read_text())
    original = cfg.read_text()
    c.start_all()
    procs: list[subprocess.Popen[str]] = []
    try:
        # bad input: one line, non-zero, the file as it was, and nothing sent (epoch still 0)
        cfg.chmod(0o400)
        r = cli("cluster", "remove-node", "-c", str(cfg), "n2", "--write", "--timeout", "3", timeout=30)
        assert r.returncode != 0 and "is not writable; nothing was changed" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
        cfg.chmod(0o600)
        r = cli("cluster", "remove-node", "-c", str(cfg), "n9", "--write", "--timeout", "3", timeout=30)
        assert r.returncode != 0 and "not a member" in r.stderr and len(r.stderr.strip().splitlines()) == 1
        assert cfg.read_text() == original
        assert all(s["config"]["epoch"] == 0 for s in ask(cfg))

        # n4 added without --write: its config goes to a file of its own, cluster.toml stays as it is
        port = free_ports(1)[0]
        r = cli("cluster", "add-node", "-c", str(cfg), "--id", "n4", "--addr", f"127.0.0.1:{port}", timeout=30)
        assert r.returncode == 0, r.stderr
        n4 = c.tmp / "n4.toml"
        n4.write_text(r.stdout)
        n4.chmod(0o600)
        log = open(c.tmp / "n4.log", "w")
        procs.append(subprocess.Popen([PY, "-m", "gossipbook", "node", "-c", str(n4), "--id", "n4"], stdout=log,
                                      stderr=subprocess.STDOUT, text=True, start_new_session=True))
        log.close()
        assert cfg.read_text() == original
        deadline = time.monotonic() + 20
        while not (rows := {s["id"]: s for s in ask(cfg)}).get("n4", {}).get("reachable"):
            assert time.monotonic() < deadline, rows
            time.sleep(0.2)
        assert sorted(rows) == ["n1", "n2", "n3", "n4"] and rows["n4"].get("learned") is True
        assert "learned" not in rows["n1"]
        r = cli("status", "-c", str(cfg), timeout=30)  # the command itself: n4 marked as not in the file
        assert "n4*" in r.stdout and "learned from the configuration" in r.stdout

        # n3 killed and removed with --write: its entry, and only it, leaves the file
        c.kill("n3")
        r = cli("cluster", "remove-node", "-c", str(cfg), "n3", "--node", "n1", "--write", "--timeout", "20",
                "--json", timeout=40)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["written"] == ["n3"] and out["config"]["roles"]["n3"] == "removed"
        addr3 = tomllib.loads(original)["nodes"][2]["addr"]
        entry = f'[[nodes]]\nid = "n3"\naddr = "{addr3}"\n\n'
        assert entry in original
        assert cfg.read_text() == original.replace(entry, "")
        assert stat.S_IMODE(os.stat(cfg).st_mode) == 0o600
        rows = {s["id"]: s for s in ask(cfg)}  # the edited file loads; n4 still learned
        assert sorted(rows) == ["n1", "n2", "n4"], rows
        assert all(s["reachable"] and s["config"]["roles"]["n3"] == "removed" for s in rows.values())
    finally:
        for p in procs:
            p.kill()
            p.wait(timeout=10)
