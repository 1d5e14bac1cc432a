"""Editing ``cluster.toml`` in place for ``cluster remove-node --write``: drop members' ``[[nodes]]``
entries, keep every other byte, replace the file atomically.

Why text and not "parse, edit, render": the file is the operator's (comments, key order, spacing,
secrets on lines of their own); rendering it anew would lose all of that. So the edit removes
exactly the lines of each dropped entry, and then *proves* it did only that: the edited text must
parse to the original's data less those entries, and load as a valid config. Anything else
(an entry written as an inline table, a layout this reader does not understand) is refused with one
line and the file is not touched; the operator edits it by hand.

What an entry's lines are: its ``[[nodes]]`` header up to the next table header, less the blank and
comment-only lines at its end (those introduce what follows). A comment above the header is kept:
whether it describes this entry or the one before cannot be told.
"""

from __future__ import annotations

import os
import re
import tempfile
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..config import ConfigError, from_dict

_NODES_HEADER = re.compile(r"^[ \t]*\[\[[ \t]*nodes[ \t]*\]\][ \t]*(#.*)?$")
_ANY_HEADER = re.compile(r"^[ \t]*\[")
_FILLER = re.compile(r"^[ \t]*(#.*)?$")  # a blank or comment-only line


def _entries(lines: list[str]) -> list[tuple[int, int, int]]:
    """``(start, end, span_end)`` of each ``[[nodes]]`` entry: its lines are ``start:end``; the
    blank and comment lines ``end:span_end`` lead to the next table."""
    heads = [i for i, ln in enumerate(lines) if _ANY_HEADER.match(ln)]
    out = []
    for k, i in enumerate(heads):
        if not _NODES_HEADER.match(lines[i].rstrip("\r\n")):
            continue
        span_end = heads[k + 1] if k + 1 < len(heads) else len(lines)
        end = span_end
        while end > i + 1 and _FILLER.match(lines[end - 1].rstrip("\r\n")):
            end -= 1
        out.append((i, end, span_end))
    return out


def _entry_id(lines: list[str], start: int, end: int) -> Any:
    try:
        return tomllib.loads("".join(lines[start + 1:end])).get("id")
    except tomllib.TOMLDecodeError:
        return None


def drop_nodes(text: str, ids: Iterable[str], where: str = "<config>") -> tuple[str, list[str]]:
    """``text`` without the ``[[nodes]]`` entries of ``ids``, and which of ``ids`` it listed.

    Holds: the result parses to ``text``'s data with only those entries gone, and loads as a
    config; every line outside the dropped entries is kept byte for byte (one blank line next
    to a dropped entry may go with it, so no double gap is left). ``ConfigError`` (one line) when
    the file cannot be edited safely; ``text`` is then never half-edited."""
    try:
        before = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{where} is not valid TOML ({e}); fix it first") from None
    wanted = set(ids)
    listed = [n.get("id") for n in before.get("nodes", []) if isinstance(n, dict)]
    present = [m for m in sorted(wanted) if m in listed]
    if not present:
        return text, []
    lines = text.splitlines(keepends=True)
    cut: list[tuple[int, int]] = []
    for start, end, span_end in _entries(lines):
        if _entry_id(lines, start, end) in wanted:
            stop = end
            if start == 0 or not lines[start - 1].strip():
                while stop < span_end and not lines[stop].strip():  # the blank line(s) after it, too
                    stop += 1
            cut.append((start, stop))
    drop = {i for a, b in cut for i in range(a, b)}
    out = "".join(ln for i, ln in enumerate(lines) if i not in drop)
    expected = dict(before, nodes=[n for n in before.get("nodes", []) if not (isinstance(n, dict)
                                                                              and n.get("id") in wanted)])
    try:
        after = tomllib.loads(out)
    except tomllib.TOMLDecodeError:
        after = None
    if after != expected:
        raise ConfigError(f"{where}: cannot remove the [[nodes]] entry of {', '.join(present)} safely (not written "
                          f"as a [[nodes]] table this command understands); edit the file by hand")
    from_dict(after, where)  # one line if what is left is no valid config (e.g. no node left)
    return out, present


def check_writable(path: Path) -> None:
    """One line (``ConfigError``) unless ``path`` can be replaced: the file itself writable (an
    operator who made it read-only meant it) and its folder (the temp file and the rename)."""
    if not os.access(path, os.W_OK) or not os.stat(path).st_mode & 0o222:  # root may write anything: the
        # write bits still say what the operator meant
        raise ConfigError(f"{path} is not writable; nothing was changed (drop --write, or fix its permissions)")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{path.parent} is not writable (--write replaces {path.name} through a temp file there); "
                          f"nothing was changed")


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` all at once (a temp file in its folder, flushed, renamed over
    it): a reader or a crash sees the old file or the new one, never a mix. The new file keeps the
    old one's mode (0600: it holds secrets). A symlink is followed (the file it names is replaced)."""
    real = Path(os.path.realpath(path))
    mode = os.stat(real).st_mode & 0o7777
    fd, tmp = tempfile.mkstemp(prefix=f".{real.name}.", suffix=".tmp", dir=real.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, real)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


__all__ = ["check_writable", "drop_nodes", "write_atomic"]
