"""The package's layering, enforced (STYLE.md "Conventions").

What must hold: ``gossipbook.core`` is pure -- it imports only itself, the standard library minus
anything that does I/O, threads or reads the clock, and the two third-party libraries named below;
``gossipbook.sim`` drives the core in virtual time and never imports trio, sockets or threads (nor
the shells that do). Imports are read from the source with ``ast`` (every ``import`` anywhere in a
module, function bodies and ``TYPE_CHECKING`` blocks included), and a subprocess checks that
importing the core really loads no network or trio module.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "gossipbook"

#: third-party distributions the core may import
CORE_THIRD_PARTY = frozenset({"msgpack", "msgspec", "sortedcontainers", "mypy_extensions"})  # (mypyc_attr: a compile hint)
#: standard-library modules the core must not import: I/O, concurrency, the clock, the environment,
#: and dynamic imports that would hide any of those from this test
CORE_FORBIDDEN_STDLIB = frozenset({
    "time", "socket", "asyncio", "threading", "os", "select", "selectors", "subprocess", "multiprocessing",
    "concurrent", "signal", "ssl", "socketserver", "http", "urllib", "importlib", "_thread", "secrets",
})
#: what ``gossipbook.sim`` must not import (the simulator owns time and the network)
SIM_FORBIDDEN = frozenset({"trio", "socket", "threading", "asyncio", "_thread", "selectors", "select"})
SIM_FORBIDDEN_SUBPACKAGES = ("node", "cli", "tui")  # the I/O shells


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, root: Path) -> list[tuple[int, str]]:
    """``(line, absolute module name)`` for every import in the file, relative ones resolved."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                if node.level > 1:
                    base = base[:-(node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if node.module is None:  # ``from . import x``: each x is a module (or a name in the package)
                out += [(node.lineno, f"{target}.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, target))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id == "__import__"):
            out.append((node.lineno, "__import__"))
    return out


def violations(root: Path) -> list[str]:
    """Every import that breaks the layering, as ``path:line: message``."""
    pkg = root.name
    bad: list[str] = []
    for path in sorted(root.rglob("*.py")):
        name = module_name(path, root)
        where = path.relative_to(root.parent)
        in_core = name == f"{pkg}.core" or name.startswith(f"{pkg}.core.")
        in_sim = name == f"{pkg}.sim" or name.startswith(f"{pkg}.sim.")
        for line, target in imports(path, root):
            top = target.split(".")[0]
            if in_core:
                if target == "__import__":
                    bad.append(f"{where}:{line}: core uses __import__")
                elif top == pkg:
                    if not (target == f"{pkg}.core" or target.startswith(f"{pkg}.core.")):
                        bad.append(f"{where}:{line}: core imports {target} (outside {pkg}.core)")
                elif top in CORE_FORBIDDEN_STDLIB:
                    bad.append(f"{where}:{line}: core imports {target} (I/O, threads or the clock)")
                elif top not in sys.stdlib_module_names and top not in CORE_THIRD_PARTY:
                    bad.append(f"{where}:{line}: core imports {target} (not stdlib, not one of "
                               f"{', '.join(sorted(CORE_THIRD_PARTY))})")
            if in_sim:
                if top in SIM_FORBIDDEN:
                    bad.append(f"{where}:{line}: sim imports {target}")
                elif any(target == f"{pkg}.{sub}" or target.startswith(f"{pkg}.{sub}.")
                         for sub in SIM_FORBIDDEN_SUBPACKAGES):
                    bad.append(f"{where}:{line}: sim imports the I/O shell {target}")
    return bad


def test_the_walk_sees_the_package() -> None:
    names = {module_name(p, ROOT) for p in ROOT.rglob("*.py")}
    assert {"gossipbook.core.wire", "gossipbook.core.replica", "gossipbook.core"} <= names
    assert any(t == "msgpack" for _, t in imports(ROOT / "core" / "wire.py", ROOT))


def test_the_package_layering_holds() -> None:
    bad = violations(ROOT)
    assert not bad, "layering broken:\n" + "\n".join(bad)


@pytest.mark.parametrize(("rel", "source", "expected"), [
    ("core/a.py", "import trio\n", "core imports trio"),
    ("core/a.py", "import time\n", "core imports time"),
    ("core/a.py", "import os.path\n", "core imports os.path"),
    ("core/a.py", "from socket import socket\n", "core imports socket"),
    ("core/a.py", "def f():\n    import asyncio\n", "core imports asyncio"),
    ("core/a.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import threading\n",
     "core imports threading"),
    ("core/a.py", "import rich\n", "core imports rich (not stdlib"),
    ("core/a.py", "from ..node import runner\n", "core imports pkg.node"),
    ("core/a.py", "from .. import config\n", "core imports pkg.config"),
    ("core/a.py", "import pkg.cli.main\n", "core imports pkg.cli.main"),
    ("core/sub/b.py", "from ...tui import view\n", "core imports pkg.tui"),
    ("core/a.py", "m = __import__('socket')\n", "core uses __import__"),
    ("sim/a.py", "import trio\n", "sim imports trio"),
    ("sim/a.py", "from threading import Thread\n", "sim imports threading"),
    ("sim/a.py", "from ..node.transport import UdpTransport\n", "sim imports the I/O shell pkg.node.transport"),
])
def test_the_checker_catches_bad_imports(tmp_path: Path, rel: str, source: str, expected: str) -> None:
    root = tmp_path / "pkg"
    for d in ("core", "core/sub", "sim", "node"):
        (root / d).mkdir(parents=True, exist_ok=True)
        (root / d / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / rel).write_text(source)
    bad = violations(root)
    assert len(bad) == 1 and expected in bad[0], bad


def test_the_checker_allows_what_the_core_may_use(tmp_path: Path) -> None:
    root = tmp_path / "pkg"
    (root / "core" / "sub").mkdir(parents=True)
    (root / "sim").mkdir()
    (root / "core" / "a.py").write_text(
        "import hashlib, random\nimport msgpack\nfrom sortedcontainers import SortedDict\n"
        "from collections.abc import Callable\nfrom . import b\nfrom .b import x\nfrom pkg.core import c\n")
    (root / "core" / "sub" / "d.py").write_text("from .. import a\nfrom ..b import y\n")
    (root / "sim" / "a.py").write_text("import random\nfrom ..core import a\nimport heapq\n")
    (root / "node.py").write_text("import trio, socket, time\n")  # shells may do I/O
    assert violations(root) == []


def test_importing_the_core_loads_no_network_or_trio() -> None:
    core = sorted(module_name(p, ROOT) for p in (ROOT / "core").rglob("*.py"))
    code = (f"import sys, {', '.join(core)}\n"
            "bad = {'trio', 'socket', 'asyncio', 'threading', 'selectors'} & set(sys.modules)\n"
            "assert not bad, bad\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=ROOT.parent)
    assert proc.returncode == 0, proc.stderr
