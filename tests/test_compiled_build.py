"""The compiled fold (setup.py, mypyc) against the pure-Python reference, and how a process picks one.

- The simulator folds alike on both builds: the same seeds give the same trace hashes, eventual and
  strong mode (subprocesses, one with ``GOSSIPBOOK_PURE=1``).
- ``GOSSIPBOOK_PURE=1`` runs the ``.py`` modules of a compiled install; a build whose sources
  changed since it was compiled is never used (an edited ``.py`` is what runs), with one line
  saying how to rebuild.
- ``gossipbook sim --break`` of a break that patches the core's classes still catches it on a
  compiled build (its seeds run pure).
- In CI (``.ci/run``: the README's install) the build must have compiled, where a C compiler is.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import gossipbook
from gossipbook import _compiled

ROOT = Path(gossipbook.__file__).resolve().parent.parent
#: a short simulation: 3 nodes, 8 virtual seconds of faults, 120 orders
SIM = ["sim", "--nodes", "3", "--duration", "8", "--orders", "120", "--bound", "15", "--json"]
IS_COMPILED = gossipbook.compiled()
needs_build = pytest.mark.skipif(not IS_COMPILED, reason="this install is pure Python (no compiled build to compare)")


def _env(pure: bool, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "GOSSIPBOOK_PURE"}
    if pure:
        env["GOSSIPBOOK_PURE"] = "1"
    env.update(extra)
    return env


def _cli(args: list[str], pure: bool) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "gossipbook.cli.main", *args], env=_env(pure),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _py(code: str, pure: bool = False, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], env=_env(pure, **env), capture_output=True, text=True,
                          timeout=120, cwd=cwd)


@needs_build
@pytest.mark.parametrize("mode", ["eventual", "strong"])
def test_the_compiled_and_pure_builds_give_the_same_trace_hashes(mode: str) -> None:
    args = [*SIM, "--mode", mode, "--seeds", "4"]
    procs = {pure: _cli(args, pure) for pure in (False, True)}  # both at once: 2 cores
    runs = {}
    for pure, p in procs.items():
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
        runs[pure] = json.loads(out)
    hashes = {pure: [r["trace_hash"] for r in run["results"]] for pure, run in runs.items()}
    assert len(hashes[False]) == 4 and all(hashes[False])
    assert hashes[False] == hashes[True]
    # and they are different runs of the same thing, not one build twice
    assert runs[False]["results"][0]["counters"] == runs[True]["results"][0]["counters"]


@needs_build
def test_gossipbook_pure_runs_the_py_modules() -> None:
    code = ("import gossipbook, gossipbook.core.replica as r, gossipbook._compiled as c; "
            "print(gossipbook.compiled(), r.__file__.endswith('.py'), c.status()['build'])")
    assert _py(code, pure=True).stdout.split(maxsplit=2) == ["False", "True", "GOSSIPBOOK_PURE is set\n"]
    assert _py(code).stdout.split(maxsplit=2) == ["True", "False", "compiled with mypyc\n"]


@needs_build
def test_a_stale_build_is_not_used(tmp_path: Path) -> None:
    """Edit a compiled module's source after the build: the edited source runs, and one line says so."""
    shutil.copytree(ROOT / "gossipbook", tmp_path / "gossipbook", ignore=shutil.ignore_patterns("__pycache__"))
    book = tmp_path / "gossipbook" / "core" / "book.py"
    book.write_text(book.read_text() + "\nEDITED_AFTER_THE_BUILD = True\n")
    code = ("import gossipbook, gossipbook.core.book as b; from gossipbook.core.replica import Replica; "
            "r = Replica('n1'); print(gossipbook.compiled(), b.EDITED_AFTER_THE_BUILD, r.digest() != '')")
    p = _py(code, cwd=tmp_path, PYTHONPATH=str(tmp_path))  # (``-c`` puts the cwd first on sys.path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["False", "True", "True"]
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "stale (book.py changed" in lines[0] and "pip install -e ." in lines[0]


def test_stale_sources_are_found_by_their_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``_stale`` compares each compiled module's source with the hash recorded at build time."""
    import hashlib

    monkeypatch.setattr(_compiled, "_PKG", str(tmp_path))
    (tmp_path / "core").mkdir()
    info = {}
    for mod in _compiled.COMPILED:
        src = tmp_path / "core" / (mod.rpartition(".")[2] + ".py")
        src.write_text(f"# {mod}\n")
        info[mod] = hashlib.sha256(src.read_bytes()).hexdigest()
    assert _compiled._stale() == list(_compiled.COMPILED)  # no record: nothing is trusted
    (tmp_path / _compiled.BUILD_INFO).write_text(json.dumps(info))
    assert _compiled._stale() == []
    (tmp_path / "core" / "replica.py").write_text("# edited\n")
    assert _compiled._stale() == ["gossipbook.core.replica"]


def test_a_break_that_patches_the_core_still_runs_from_the_cli() -> None:
    """``no-replay`` patches ``Replica``: on a compiled build its seeds run pure, and are caught."""
    p = _cli([*SIM, "--break", "no-replay", "--seeds", "3", "--faults", "reorder,partition"], pure=False)
    out, err = p.communicate(timeout=300)
    res = json.loads(out)
    assert res["config"]["break"] == "no-replay" and res["runs"] == 3
    assert res["failures"] >= 1, err[-2000:]


@pytest.mark.skipif(not os.environ.get("CI") or shutil.which("gcc") is None,
                    reason="only CI (.ci/run, the README's install) must have built the compiled fold")
def test_ci_runs_the_compiled_build() -> None:
    assert IS_COMPILED, f"the README's install did not compile the fold here: {_compiled.status()}"
