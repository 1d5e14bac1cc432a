"""The gateway's store, its ``fix.toml`` and the ``gossipbook fix`` command.

What must hold: a commit survives a reopen (sequence numbers, stored messages, records) and a second
gateway on the same data directory is refused; every mistake in ``fix.toml`` (and a file others can
read) is one ``ConfigError`` line naming the key; the real command prints one error line and no
traceback for a bad file, and on SIGTERM it logs a connected session out ("gateway shutting down")
and exits 0.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import simplefix

from gossipbook.config import ConfigError
from gossipbook.fix.config import from_dict, load
from gossipbook.fix.session import Forget, SeqNums, Stored
from gossipbook.fix.store import Store

GB = [sys.executable, "-m", "gossipbook"]


def test_the_store_survives_a_reopen_and_is_exclusive(tmp_path: Path) -> None:
    s = Store.open(tmp_path / "d")
    recs = [Stored(5, "8", b"20240101-00:00:00.000", b"17=e\x01"), Stored(6, "8", b"t", b"17=f\x01"),
            Forget(6), SeqNums(3, 7)]
    s.commit([("A->GW", recs, [("order", "c1", {"clordid": "c1", "symbol": "GBX", "side": "buy", "ord_type": "2",
                                                 "tif": "1", "qty": "10", "price": "100", "order_id": "n1:1",
                                                 "names": ["c1"]}),
                                       ("intent", "fx1", {"pairs": [[11, "c2"]], "at": 5}),
                                       ("intent", "fx2", {"pairs": [[11, "c3"]], "at": 6}),
                                       ("intent", "fx1", None)])])
    with pytest.raises(ConfigError, match="another gateway is running"):
        Store.open(tmp_path / "d")
    s.close()
    s = Store.open(tmp_path / "d")
    p = s.load_session("A->GW")
    assert (p.next_in, p.next_out, list(p.stored)) == (3, 7, [6])
    orders, fills, intents = s.load_app("A->GW")
    assert orders[0].order_id == "n1:1" and fills == []
    assert intents == {"fx2": {"pairs": [[11, "c3"]], "at": 6}}  # fx1 was settled in the same commit
    assert s.load_session("other").next_out == 1
    s.close()


GOOD = {"gateway": {"comp_id": "GBX"}, "sessions": [{"sender_comp_id": "A", "password": "password-1", "account": "a"}]}


@pytest.mark.parametrize(("patch", "expected"), [
    ({"sessions": []}, "at least one [[sessions]]"),
    ({"extra": {}}, "unknown section"),
    ({"gateway": {"comp_id": "GBX", "heartbeat_max_s": 0}}, "gateway.heartbeat_max_s must be a whole number"),
    ({"gateway": {"comp_id": "GBX", "typo": 1}}, "unknown key gateway.typo"),
    ({"sessions": [{"sender_comp_id": "A", "password": "short", "account": "a"}]}, "password must be 8-128"),
    ({"sessions": [{"sender_comp_id": "A b", "password": "password-1", "account": "a"}]}, "sender_comp_id must be"),
    ({"sessions": [{"sender_comp_id": "A", "password": "password-1"}]}, "give account"),
    ({"sessions": [{"sender_comp_id": "A", "password": "password-1", "account": "a"}] * 2}, "listed twice"),
    ({"sessions": [{"sender_comp_id": "A", "password": "password-1", "account": "a"},
                   {"sender_comp_id": "R", "password": "password-1", "drop_copy": ["zed"]}]}, "no trading session"),
    ({"gateway": {}}, "target_comp_id is required"),
])
def test_bad_fix_toml_is_one_clear_line(patch: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as e:
        from_dict({**GOOD, **patch})
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_a_readable_fix_toml_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "fix.toml"
    p.write_text('[[sessions]]\nsender_comp_id = "A"\ntarget_comp_id = "G"\npassword = "password-1"\naccount = "a"\n')
    os.chmod(p, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load(p)
    os.chmod(p, 0o600)
    assert load(p).sessions[0].key == "A->G"


def test_the_command_prints_one_line_for_a_bad_file(tmp_path: Path) -> None:
    p = tmp_path / "fix.toml"
    p.write_text("[[sessions]]\nsender_comp_id = 5\n")
    os.chmod(p, 0o600)
    r = subprocess.run(GB + ["fix", "--sessions", str(p)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "sender_comp_id" in r.stderr


def _recv_until(sock: socket.socket, parser: simplefix.FixParser, want: bytes, timeout: float) -> simplefix.FixMessage:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = parser.get_message()
        if m is not None:
            if m.get(35) == want:
                return m
            continue
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        data = sock.recv(65536)
        if not data:
            break
        parser.append_buffer(data)
    raise AssertionError(f"no MsgType {want!r} within {timeout} s")


def test_sigterm_logs_sessions_out_and_exits_cleanly(tmp_path: Path) -> None:
    subprocess.run(GB + ["cluster", "init", "--nodes", "1", "--accounts", "alice", "--out", str(tmp_path / "v")],
                   check=True, capture_output=True, timeout=60)
    fix = tmp_path / "fix.toml"
    fix.write_text('[gateway]\ncomp_id = "GBX"\ndata_dir = "gw"\n[[sessions]]\nsender_comp_id = "ALICE"\n'
                   'password = "password-1"\naccount = "alice"\nclient_file = "v/clients/alice.toml"\n')
    os.chmod(fix, 0o600)
    proc = subprocess.Popen(GB + ["fix", "--sessions", str(fix), "--listen", "127.0.0.1:0", "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert "listening on 127.0.0.1:" in line, (line, proc.stderr.read() if proc.stderr else "")
        port = int(line.split("127.0.0.1:")[1].split()[0])
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        m = simplefix.FixMessage()
        for tag, v in ((8, "FIX.4.4"), (35, "A"), (49, "ALICE"), (56, "GBX"), (34, 1)):
            m.append_pair(tag, v)
        m.append_utc_timestamp(52)
        for tag, v in ((98, 0), (108, 30), (554, "password-1")):
            m.append_pair(tag, v)
        sock.sendall(m.encode())
        parser = simplefix.FixParser()
        _recv_until(sock, parser, b"A", 10)
        proc.send_signal(signal.SIGTERM)
        lo = _recv_until(sock, parser, b"5", 10)
        assert lo.get(58) == b"gateway shutting down"
        m = simplefix.FixMessage()
        for tag, v in ((8, "FIX.4.4"), (35, "5"), (49, "ALICE"), (56, "GBX"), (34, 2)):
            m.append_pair(tag, v)
        m.append_utc_timestamp(52)
        sock.sendall(m.encode())  # the answer: the gateway closes at once
        assert proc.wait(timeout=20) == 0
        sock.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
