"""Per-shard and per-node load from two rounds of status replies: what ``gossipbook status --load``
and ``gossipbook top`` show.

Pure: status dicts (``gossipbook status --json``'s ``nodes``) in, rows and rich tables out. A rate
needs two polls: ``load_rows(prev, cur, dt)`` differences the counters of the poll ``dt`` seconds
earlier (``prev=None``: every rate is unknown, ``None``).

What a row says
---------------
- **Shard** (strong mode; a one-group cluster is shard 0): its instruments; its leader (the node
  that says it leads it, else what most nodes name); its term and commit index (the highest any
  answering node reports); **committed/s**: the rise of that commit index per second (entries,
  leader no-ops included); **waiting**: client requests waiting on it, summed over the nodes (at
  the leader for a commit, at a follower for the leader's answer).
- **Hot**: a shard whose committed/s is at least ``HOT_FACTOR`` (2) times the mean over the shards
  and at least ``HOT_MIN_PER_S`` (20/s): one shard carries well more than its share, so its leader
  is the cluster's bottleneck (give its instruments their own shard, or move others off it). Only
  with two shards or more.
- **Node**: **requests/s** it answered (client submits and queries it handled, from its
  ``client_submits`` and ``client_queries`` counters), the shards it leads, and its waiting requests.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.table import Table

#: a shard is hot at this many times the mean committed/s over the shards ...
HOT_FACTOR = 2.0
#: ... and at least this many committed/s (an idle cluster has no hot shard)
HOT_MIN_PER_S = 20.0


@dataclass(frozen=True, slots=True)
class ShardLoad:
    shard: int
    instruments: tuple[str, ...]
    leader: str | None
    term: int
    commit_index: int
    committed_per_s: float | None
    waiting: int
    hot: bool = False


@dataclass(frozen=True, slots=True)
class NodeLoad:
    node: str
    reachable: bool
    requests_per_s: float | None
    leads: tuple[int, ...]
    waiting: int


def _shards_of(n: dict[str, Any]) -> list[dict[str, Any]]:
    """A node's per-shard rows; a one-group strong node as shard 0; eventual mode: none."""
    if isinstance(n.get("shards"), list):
        return [s for s in n["shards"] if isinstance(s, dict)]
    if "term" in n:
        return [{"shard": 0, "instruments": [], "role": n.get("role"), "term": n.get("term", 0),
                 "leader": n.get("leader"), "commit_index": n.get("commit_index", 0),
                 "waiting": (n.get("counters") or {}).get("waiting", 0)}]
    return []


def _int(x: Any) -> int:
    return x if type(x) is int else 0


def shard_rows(prev: Sequence[dict[str, Any]] | None, cur: Sequence[dict[str, Any]], dt: float) -> list[ShardLoad]:
    """One row per shard (see the module header); ``hot`` by ``HOT_FACTOR`` / ``HOT_MIN_PER_S``."""
    up = [n for n in cur if n.get("reachable", True)]
    by: dict[int, list[dict[str, Any]]] = {}
    for n in up:
        for s in _shards_of(n):
            by.setdefault(_int(s.get("shard")), []).append({**s, "_node": n["id"]})
    before: dict[int, int] = {}
    for n in prev or ():
        if n.get("reachable", True):
            for s in _shards_of(n):
                k = _int(s.get("shard"))
                before[k] = max(before.get(k, 0), _int(s.get("commit_index")))
    rows = []
    for k in sorted(by):
        views = by[k]
        claimed = [v["_node"] for v in views if v.get("role") == "leader"]
        named = Counter(v.get("leader") for v in views if v.get("leader"))
        leader = claimed[0] if claimed else (named.most_common(1)[0][0] if named else None)
        commit = max(_int(v.get("commit_index")) for v in views)
        rate = None
        if prev is not None and k in before and dt > 0:
            rate = round(max(0, commit - before[k]) / dt, 1)
        inst = next((tuple(v.get("instruments") or ()) for v in views if v.get("instruments")), ())
        rows.append(ShardLoad(k, inst, leader, max(_int(v.get("term")) for v in views), commit, rate,
                              sum(_int(v.get("waiting")) for v in views)))
    rates = [r.committed_per_s for r in rows if r.committed_per_s is not None]
    if len(rows) >= 2 and len(rates) == len(rows):
        mean = sum(rates) / len(rates)
        rows = [ShardLoad(r.shard, r.instruments, r.leader, r.term, r.commit_index, r.committed_per_s, r.waiting,
                          hot=r.committed_per_s is not None and r.committed_per_s >= HOT_MIN_PER_S
                          and r.committed_per_s >= HOT_FACTOR * mean)
                for r in rows]
    return rows


def _answered(n: dict[str, Any]) -> int:
    c = n.get("counters") or {}
    return _int(c.get("client_submits")) + _int(c.get("client_queries"))


def node_rows(prev: Sequence[dict[str, Any]] | None, cur: Sequence[dict[str, Any]], dt: float) -> list[NodeLoad]:
    """One row per node of ``cur``: requests/s answered since ``prev`` (None without it, or for a node
    that did not answer both times, or whose counters went down: it restarted)."""
    old = {n["id"]: n for n in prev or () if n.get("reachable", True)}
    out = []
    for n in cur:
        ok = bool(n.get("reachable", True))
        rate = None
        p = old.get(n["id"])
        if ok and p is not None and dt > 0 and _answered(n) >= _answered(p):
            rate = round((_answered(n) - _answered(p)) / dt, 1)
        shards = _shards_of(n) if ok else []
        leads = tuple(_int(s.get("shard")) for s in shards if s.get("role") == "leader")
        waiting = sum(_int(s.get("waiting")) for s in shards) if shards else _int((n.get("counters") or {}).get("waiting"))
        out.append(NodeLoad(n["id"], ok, rate, leads, waiting if ok else 0))
    return out


def load_rows(prev: Sequence[dict[str, Any]] | None, cur: Sequence[dict[str, Any]],
              dt: float) -> tuple[list[ShardLoad], list[NodeLoad]]:
    return shard_rows(prev, cur, dt), node_rows(prev, cur, dt)


def _rate(x: float | None) -> str:
    return "-" if x is None else f"{x:,.1f}"


def shard_table(rows: Sequence[ShardLoad], title: str = "shards") -> Table:
    t = Table(title=title, title_justify="left")
    for col in ("shard", "instruments", "leader", "term", "commit", "committed/s", "waiting", ""):
        t.add_column(col, no_wrap=True)
    for r in rows:
        t.add_row(str(r.shard), ",".join(r.instruments) or "-", r.leader or "[red]none[/]", str(r.term),
                  str(r.commit_index), _rate(r.committed_per_s), str(r.waiting),
                  "[bold white on red] HOT [/]" if r.hot else "")
    return t


def node_table(rows: Sequence[NodeLoad], title: str = "node load") -> Table:
    t = Table(title=title, title_justify="left")
    for col in ("node", "requests/s", "leads shards", "waiting"):
        t.add_column(col, no_wrap=True)
    for r in rows:
        if not r.reachable:
            t.add_row(r.node, "[red]unreachable[/]", "", "")
            continue
        t.add_row(r.node, _rate(r.requests_per_s), ",".join(map(str, r.leads)) or "-", str(r.waiting))
    return t


def as_json(shards: Sequence[ShardLoad], nodes: Sequence[NodeLoad], dt: float) -> dict[str, Any]:
    """``status --load --json``'s ``load`` object."""
    return {"window_s": round(dt, 3), "hot_rule": f">= {HOT_FACTOR:g} x mean committed/s and >= {HOT_MIN_PER_S:g}/s",
            "shards": [{"shard": r.shard, "instruments": list(r.instruments), "leader": r.leader, "term": r.term,
                        "commit_index": r.commit_index, "committed_per_s": r.committed_per_s, "waiting": r.waiting,
                        "hot": r.hot} for r in shards],
            "nodes": [{"id": r.node, "reachable": r.reachable, "requests_per_s": r.requests_per_s,
                       "leads": list(r.leads), "waiting": r.waiting} for r in nodes]}


__all__ = ["HOT_FACTOR", "HOT_MIN_PER_S", "NodeLoad", "ShardLoad", "as_json", "load_rows", "node_rows", "node_table",
           "shard_rows", "shard_table"]
