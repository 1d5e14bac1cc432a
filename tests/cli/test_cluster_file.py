"""``cluster remove-node --write``'s file edit (gossipbook/cli/cluster_file.py), without a cluster:
the dropped entries go, every other line stays byte for byte, and what cannot be edited safely is
one line with the text untouched."""

from __future__ import annotations

import os
import secrets
import stat
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipbook.cli.cluster_file import check_writable, drop_nodes, write_atomic
from gossipbook.config import ConfigError, render


def _config(n: int) -> str:
    return render(n, 7400, accounts={"operator": secrets.token_bytes(32)})


@st.composite
def edited_configs(draw: st.DrawFn) -> tuple[str, list[str], list[str]]:
    """A rendered cluster.toml with an operator's comments and blank lines sprinkled in (own lines,
    and trailing ones on values), CRLF or LF; and a non-empty proper subset of its nodes to drop."""
    n = draw(st.integers(2, 6))
    lines = _config(n).splitlines()
    notes: list[str] = []  # the comment lines added
    out: list[str] = []
    for i, ln in enumerate(lines):
        if draw(st.integers(0, 4)) == 0:
            notes.append(f"# note {i}")
            out.append(notes[-1])
        if draw(st.integers(0, 6)) == 0:
            out.append("")
        if ln.startswith("addr = ") and draw(st.booleans()):
            ln += f"  # where {i}"
        out.append(ln)
    nl = draw(st.sampled_from(["\n", "\r\n"]))
    ids = [f"n{i + 1}" for i in range(n)]
    drop = draw(st.lists(st.sampled_from(ids), min_size=1, max_size=n - 1, unique=True))
    return nl.join(out) + nl, drop, notes


@settings(max_examples=60, deadline=None)
@given(edited_configs())
def test_drop_keeps_everything_else_byte_for_byte(case: tuple[str, list[str], list[str]]) -> None:
    text, drop, notes = case
    out, dropped = drop_nodes(text, drop)
    assert dropped == sorted(drop)
    before, after = tomllib.loads(text), tomllib.loads(out)
    assert after == dict(before, nodes=[n for n in before["nodes"] if n["id"] not in drop])
    # the result is the input less whole lines: each kept line in order; each line gone is blank or
    # inside a dropped entry (its header to its last key, comments between them included)
    src = text.splitlines(keepends=True)
    inside: set[int] = set()
    for i, ln in enumerate(src):
        if ln.startswith("[[nodes]]"):
            j = i + 1
            while not src[j].startswith("addr = "):
                j += 1
            if any(f'id = "{m}"' in "".join(src[i:j]) for m in drop):
                inside.update(range(i, j + 1))
    kept = out.splitlines(keepends=True)
    outside = [ln for i, ln in enumerate(src) if i not in inside]
    k = 0
    for ln in outside:  # only blank lines may go besides the entries
        if k < len(kept) and kept[k] == ln:
            k += 1
        else:
            assert not ln.strip(), f"{ln!r} was dropped"
    assert k == len(kept), "the output is not the input less some lines"
    again, none = drop_nodes(out, drop)  # idempotent: nothing more to drop
    assert (again, none) == (out, [])


def test_an_id_the_file_does_not_list_changes_nothing() -> None:
    text = _config(3)
    assert drop_nodes(text, ["n9"]) == (text, [])


@pytest.mark.parametrize("text, drop, message", [
    ('nodes = [{id = "n1", addr = "127.0.0.1:1"}, {id = "n2", addr = "127.0.0.1:2"}]\n[cluster]\nkey = "'
     + "ab" * 32 + '"\n[accounts]\noperator = "' + "cd" * 32 + '"\n', ["n2"], "cannot remove the [[nodes]] entry of n2 safely"),
    (_config(2), ["n1", "n2"], "node"),  # no node left: not a valid config
    ("[cluster\n", ["n1"], "not valid TOML"),
])
def test_what_cannot_be_edited_safely_is_one_line(text: str, drop: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        drop_nodes(text, drop, "c.toml")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_write_atomic_keeps_mode_and_follows_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real.toml"
    real.write_text("old\n")
    real.chmod(0o600)
    link = tmp_path / "cluster.toml"
    link.symlink_to(real)
    write_atomic(link, "new\n")
    assert link.is_symlink() and real.read_text() == "new\n"
    assert stat.S_IMODE(os.stat(real).st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_a_read_only_file_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "cluster.toml"
    p.write_text(_config(2))
    check_writable(p)
    p.chmod(0o400)
    with pytest.raises(ConfigError, match="is not writable; nothing was changed"):
        check_writable(p)
