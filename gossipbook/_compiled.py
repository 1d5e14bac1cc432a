"""Which build of the fold runs: the mypyc-compiled modules, or the pure-Python reference.

``setup.py`` compiles the modules in ``COMPILED`` (what every folded op passes through) into C
extensions beside their ``.py`` files, and records each source's hash in ``_build.json``. Python
prefers an extension to a ``.py`` of the same name, so an edited ``.py`` would be shadowed by a
stale build without a word; ``select()`` (run once, when ``gossipbook`` is imported) prevents that:

- ``GOSSIPBOOK_PURE=1`` runs the ``.py`` files even where compiled ones are installed (the
  reference the compiled build is tested against; the simulator's trace hashes must be equal);
- a compiled module whose source no longer matches its recorded hash (edited since the build), or
  a build without its record, is not used: all ``COMPILED`` modules run as ``.py`` (never a mix:
  compiled modules call each other directly) and one line on stderr says how to rebuild.

``compiled()`` says which build this process runs; ``gossipbook status`` and ``bench`` report it.
Standard library only: ``setup.py`` imports this file before the package is installed.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from types import ModuleType

#: the modules ``setup.py`` compiles (dependencies first)
COMPILED = (
    "gossipbook.core.ops",
    "gossipbook.core.book",
    "gossipbook.core.fills",
    "gossipbook.core.replica",
)
#: the build's record, beside this file: module -> sha256 of the source it was compiled from
BUILD_INFO = "_build.json"
#: mypyc's shared library of the compiled group (``setup.py``: ``group_name``)
GROUP = "gossipbook.fold"

_PKG = os.path.dirname(os.path.abspath(__file__))
#: why this process runs what it runs (``status()``)
_reason = "not selected yet"
_forced_pure = False


def _source(mod: str) -> str:
    return os.path.join(_PKG, *mod.split(".")[1:]) + ".py"


def _extension(mod: str) -> str | None:
    """The compiled module's file beside its source, if one is there."""
    base = _source(mod)[:-3]
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        if os.path.exists(base + suffix):
            return base + suffix
    return None


class _PureFinder(importlib.abc.MetaPathFinder):
    """Loads the ``.py`` of each compiled module (and never the group's shared library)."""

    def find_spec(self, name: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if name in COMPILED:
            return importlib.util.spec_from_file_location(name, _source(name))
        return None


def _stale() -> list[str]:
    """Compiled modules whose source differs from what was compiled ([] when all match)."""
    try:
        with open(os.path.join(_PKG, BUILD_INFO)) as f:
            info = json.load(f)
    except (OSError, ValueError):
        return list(COMPILED)
    out = []
    for mod in COMPILED:
        try:
            with open(_source(mod), "rb") as f:
                ok = hashlib.sha256(f.read()).hexdigest() == info.get(mod)
        except OSError:
            ok = False
        if not ok:
            out.append(mod)
    return out


def select() -> None:
    """Decide, once per process and before any compiled module is imported, which build runs."""
    global _reason, _forced_pure
    if _reason != "not selected yet":
        return
    built = [m for m in COMPILED if _extension(m) is not None]
    if os.environ.get("GOSSIPBOOK_PURE", "") not in ("", "0"):
        _reason, _forced_pure = "GOSSIPBOOK_PURE is set", bool(built)
    elif not built:
        _reason = "not compiled (no C compiler or mypyc at install, or GOSSIPBOOK_COMPILE=0)"
        return
    else:
        stale = _stale() if len(built) == len(COMPILED) else list(COMPILED)
        if not stale:
            _reason = "compiled with mypyc"
            return
        names = ", ".join(m.rpartition(".")[2] + ".py" for m in stale)
        _reason, _forced_pure = f"the compiled build is stale ({names} changed since it was built)", True
        print(f"gossipbook: {_reason}: running pure Python; rebuild with `pip install -e .` "
              "(or set GOSSIPBOOK_PURE=1 to silence this)", file=sys.stderr)
    if _forced_pure and not any(isinstance(f, _PureFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _PureFinder())


def compiled() -> bool:
    """Whether this process folds with the compiled modules (checked on the module itself)."""
    mod = importlib.import_module("gossipbook.core.replica")
    return (mod.__file__ or "").endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def status() -> dict[str, object]:
    """``compiled`` and why, for ``gossipbook status`` and ``bench``."""
    return {"compiled": compiled(), "build": _reason}
