"""The FIX session and application layers are pure (STYLE.md: sans-IO), like gossipbook.core.

What must hold: ``gossipbook.fix.{tags,codec,session,app}`` import no trio, socket, clock, thread or
OS module, nor the shells (node, api, cli), read from their source with ``ast``; and importing them
in a fresh interpreter loads no trio or socket, so the simulator and the property tests drive them
with explicit time only.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

FIX = Path(__file__).resolve().parents[2] / "gossipbook" / "fix"
PURE = ("tags", "codec", "session", "app")
FORBIDDEN = {"trio", "socket", "time", "os", "threading", "asyncio", "select", "selectors", "sqlite3", "subprocess"}


def imports_of(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "gossipbook" if node.level == 2 else "gossipbook.fix" if node.level == 1 else ""
            out.append(f"{base}.{node.module}" if base and node.module else node.module or base)
    return out


def test_the_pure_layers_import_nothing_that_does_io() -> None:
    bad = []
    for name in PURE:
        for target in imports_of(FIX / f"{name}.py"):
            top = target.split(".")[0]
            if top in FORBIDDEN or any(target.startswith(f"gossipbook.{s}") for s in ("node", "api", "cli", "tui")):
                bad.append(f"{name}.py imports {target}")
    assert not bad, bad


def test_importing_them_loads_no_trio_or_socket() -> None:
    code = ("import sys\nimport " + ", ".join(f"gossipbook.fix.{n}" for n in PURE) +
            "\nbad = {'trio', 'socket', 'asyncio', 'threading'} & set(sys.modules)\nassert not bad, bad\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
