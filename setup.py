"""Build script: compiles the fold's hot path with mypyc when it can, and never fails because it cannot.

``pip install .`` / ``pip install -e .`` run this (pyproject.toml holds everything else). Every op a
node folds goes through the modules in ``gossipbook/_compiled.py`` (``COMPILED``); mypyc turns
them into C extensions beside their ``.py`` files. Without a C compiler, Python headers or mypyc,
the build says so in one line and the package installs as plain Python, which is the reference:
``GOSSIPBOOK_PURE=1`` runs the ``.py`` files of a compiled install, and a compiled module whose
source changed since it was built is never used (``gossipbook/_compiled.py``).

``GOSSIPBOOK_COMPILE=0`` at install time skips compiling altogether.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "gossipbook"))
from _compiled import BUILD_INFO, COMPILED, GROUP  # noqa: E402  (gossipbook/_compiled.py, stdlib only)

sys.path.pop(0)


def _say(msg: str) -> None:
    print(f"gossipbook build: {msg}", file=sys.stderr, flush=True)


def _sources() -> list[str]:
    return [m.replace(".", "/") + ".py" for m in COMPILED]


def _build_info() -> str:
    """What ``gossipbook/_compiled.py`` checks at import: each compiled module's source hash."""
    return json.dumps({m: hashlib.sha256((ROOT / s).read_bytes()).hexdigest()
                       for m, s in zip(COMPILED, _sources(), strict=True)}, indent=1, sort_keys=True)


class BuildExt(build_ext):
    """``build_ext`` that falls back to pure Python instead of failing the install, and records
    the source hashes of what it compiled."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as e:  # no compiler, no headers, a mypyc error: pure Python it is
            for f in super().get_outputs():  # a half-built set would not import: none at all
                Path(f).unlink(missing_ok=True)
            why = (str(e).splitlines() or [""])[0]
            _say(f"compiling failed ({type(e).__name__}: {why[:120]}{'…' if len(why) > 120 else ''}); "
                 "installing pure Python")
            self.extensions = []
            return
        if not self.extensions:
            return
        info = _build_info()
        for out in {Path(self.build_lib), ROOT} if self.inplace else {Path(self.build_lib)}:
            target = out / "gossipbook" / BUILD_INFO
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(info)
        _say(f"compiled {len(COMPILED)} modules with mypyc")

    def get_outputs(self) -> list[str]:
        outs = super().get_outputs() if self.extensions else []
        return outs + ([str(Path(self.build_lib) / "gossipbook" / BUILD_INFO)] if self.extensions else [])

    def build_extension(self, ext):  # type: ignore[no-untyped-def]
        try:
            super().build_extension(ext)
        except Exception as e:
            raise RuntimeError(f"{ext.name}: {e}") from e


#: the setup.py commands that build extensions (metadata queries need no mypy run)
_BUILDS = {"build", "build_ext", "bdist_wheel", "editable_wheel", "install", "develop"}


def _ext_modules() -> list:  # type: ignore[type-arg]
    if not _BUILDS & set(sys.argv[1:]):
        return []
    if os.environ.get("GOSSIPBOOK_COMPILE", "1") == "0":
        _say("GOSSIPBOOK_COMPILE=0: installing pure Python")
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        _say("mypyc is not installed: installing pure Python")
        return []
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        return mypycify(["--ignore-missing-imports", "--follow-imports=skip", *_sources()], opt_level="3",
                        group_name=GROUP)
    except BaseException as e:  # mypyc type errors end in SystemExit
        _say(f"mypyc could not compile ({type(e).__name__}: {e}); installing pure Python")
        return []
    finally:
        os.chdir(cwd)


setup(ext_modules=_ext_modules(), cmdclass={"build_ext": BuildExt})
