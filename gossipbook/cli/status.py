"""``gossipbook status``: every node's view of the cluster, side by side."""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import time
from typing import Any

import trio
from rich.console import Console
from rich.table import Table

from ..config import ClusterConfig, ConfigError, NodeEntry, check_id, parse_addr
from ..core.errors import UsageError
from ..core.wire import ClientQuery
from ..demo.snapshot import risk_fields
from .common import add_config, config, print_json

#: members learned from status answers (not in the file) that ``status`` asks too, at most
MAX_LEARNED = 64


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="show every node's state (digest, ops, members, clocks)",
                       description="Ask every node of the cluster for its state: the nodes the file lists, "
                                   "then the members their configuration names that the file does not (added at "
                                   "run time, marked *). Unreachable nodes are listed as such after --timeout.")
    add_config(p)
    p.add_argument("--timeout", type=float, default=1.5, help="seconds to wait for each node (default 1.5)")
    p.add_argument("--json", action="store_true", help="print JSON (keys documented in docs/operations.md)")
    p.add_argument("--load", type=float, default=None, metavar="S",
                   help="ask twice, S seconds apart, and add per-shard load (leader, term, commit, committed/s, "
                        "waiting, HOT) and per-node requests/s (JSON: a 'load' object)")
    p.set_defaults(func=run)


async def gather_status(cfg: ClusterConfig, timeout: float, what: str = "status",
                        learn: bool = False) -> list[dict[str, Any]]:
    """Query every node concurrently; an unreachable node yields ``{"id", "reachable": False}``.
    ``what="progress"`` asks only for op counts and version vectors (no digest: cheap to poll).
    ``learn``: then also ask the members the answers' configurations name that the file does not
    (added with ``cluster add-node`` and no ``--write``), marked ``"learned": True``."""
    rows = await _ask(cfg, cfg.ids, timeout, what)
    extra = learned_members(cfg, rows) if learn else []
    if extra:
        wider = dataclasses.replace(cfg, nodes=[*cfg.nodes, *extra])
        rows += [{**r, "learned": True} for r in await _ask(wider, [e.id for e in extra], timeout, what)]
    return rows


def learned_members(cfg: ClusterConfig, rows: list[dict[str, Any]]) -> list[NodeEntry]:
    """Members that status answers name (``config.addresses``: members added by an op) and the file
    does not, at the address the newest configuration gives; removed ones left out. What a node says
    is bounded like any peer input: at most ``MAX_LEARNED``, ids and IP-literal addresses checked
    (no name lookups), of the file's address family; anything else is skipped."""
    best: dict[str, tuple[int, str]] = {}
    removed: set[str] = set()
    for r in rows:
        c = r.get("config") if r.get("reachable") else None
        if not isinstance(c, dict) or not isinstance(c.get("addresses"), dict):
            continue
        epoch = c.get("epoch") if type(c.get("epoch")) is int else 0
        removed |= {m for m, role in (c.get("roles") or {}).items() if role == "removed"}
        for m, a in list(c["addresses"].items())[:MAX_LEARNED * 4]:
            if isinstance(m, str) and isinstance(a, str) and (m not in best or epoch > best[m][0]):
                best[m] = (epoch, a)
    v6 = ":" in cfg.nodes[0].host
    out: list[NodeEntry] = []
    for m, (_e, a) in sorted(best.items()):
        if m in cfg.ids or m in removed:
            continue
        try:
            check_id(m, "member")
            host, port = parse_addr(a, m)
            if ipaddress.ip_address(host.strip("[]")).version != (6 if v6 else 4):
                continue
        except (ConfigError, ValueError):
            continue
        out.append(NodeEntry(m, host, port, None, True))
        if len(out) >= MAX_LEARNED:
            break
    return out


async def _ask(cfg: ClusterConfig, ids: list[str], timeout: float, what: str) -> list[dict[str, Any]]:
    from ..node.client import Client, Unreachable

    results: dict[str, dict[str, Any]] = {}
    async with Client(cfg) as c:
        async def one(nid: str) -> None:
            req = c.new_req()
            try:
                rep = await c.request(nid, ClientQuery(req, what, "", 0), req, timeout)
                results[nid] = {**rep.payload, "id": nid, "reachable": True}
            except Unreachable:
                results[nid] = {"id": nid, "reachable": False}
        async with trio.open_nursery() as n:
            for nid in ids:
                n.start_soon(one, nid)
    return [{"id": r["id"], "reachable": r["reachable"], **{k: v for k, v in r.items() if k not in ("id", "reachable")}}
            for r in (results[i] for i in ids)]


def clock_cell(c: dict[str, Any] | None) -> str:
    """This node against the time reference: status, offset ± bound, drift (red: refusing orders)."""
    if not c:
        return "-"  # strong mode: no clock bound
    if c.get("bound_us") is None:
        return f"[red]{c['status']}[/]"
    text = f"{c['status']} {c['offset_us']:+.0f} ±{c['bound_us']:.0f} {c['drift_ppm']:+.1f}ppm"
    return text if c.get("takes_orders", True) else f"[red]{text}[/]"


def config_cell(n: dict[str, Any]) -> str:
    """The configuration epoch this node holds and its own role in it (core/config_epoch.py)."""
    c = n.get("config")
    if not c:
        return "-"
    role = c.get("roles", {}).get(n["id"], "?")
    return f"{c.get('epoch', 0)} " + (f"[red]{role}[/]" if role == "removed" else role)


def config_line(nodes: list[dict[str, Any]]) -> str:
    """One line under the table: every member's role in the newest configuration a node reports
    (removed members with their fence: their ops above it are refused everywhere)."""
    confs = [n["config"] for n in nodes if n.get("reachable") and n.get("config")]
    if not confs:
        return ""
    c = max(confs, key=lambda x: x.get("epoch", 0))
    fences = c.get("fences", {})
    parts = [f"{m} {r}" + (f" (fence {fences[m]})" if m in fences else "") for m, r in sorted(c.get("roles", {}).items())]
    return f"configuration epoch {c.get('epoch', 0)}: " + ", ".join(parts)


def risk_cell(n: dict[str, Any]) -> str:
    """Risk at this node, from its status: the limits near their end here (headroom under 10% of
    the limit) with the tightest, and orders it refused for risk; "-" when there is neither."""
    r = risk_fields(n)
    parts = []
    if r["risk_near"]:
        what, pct = r["risk_tightest"] or ("?", 0.0)
        parts.append(f"[yellow]{r['risk_near']} near: {what} {pct:.0f}%[/]")
    if r["risk_refused"]:
        parts.append(f"refused {r['risk_refused']}")
    return " · ".join(parts) or "-"


def run(args: argparse.Namespace) -> int:
    cfg = config(args)
    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    if args.load is not None and not 0.05 <= args.load <= 60:
        raise UsageError("--load must be from 0.05 to 60 seconds")
    load_view = None
    if args.load is not None:  # two rounds: rates are differences (tui/load.py)
        from ..tui import load as loadview

        t0 = time.monotonic()
        first = trio.run(gather_status, cfg, args.timeout, "status", True)
        ta = time.monotonic()
        time.sleep(max(0.0, args.load - (ta - t0)))
        t1 = time.monotonic()
        nodes = trio.run(gather_status, cfg, args.timeout, "status", True)
        dt = ((t1 + time.monotonic()) - (t0 + ta)) / 2  # between the rounds' midpoints
        load_view = loadview.load_rows(first, nodes, dt)
    else:
        nodes = trio.run(gather_status, cfg, args.timeout, "status", True)
    if args.json:
        extra = {"load": loadview.as_json(*load_view, dt)} if load_view is not None else {}
        print_json({"nodes": nodes, **extra})
        return 0 if all(n["reachable"] for n in nodes) else 3
    strong = any("term" in n for n in nodes)
    t = Table(title=f"cluster {cfg.path}" + (" (strong mode)" if strong else ""))
    cols = (["node", "role", "term", "leader", "commit", "match (leader)", "digest", "ops", "trades"] if strong else
            ["node", "digest", "ops", "trades final/prov", "watermark"])
    for col in [*cols, "members", "epoch role", "clock ± bound µs, drift", "peer offset / rtt (µs)", "dropped", "risk"]:
        t.add_column(col)
    digests = [n.get("digest") for n in nodes if n["reachable"]]
    for n in nodes:
        if not n["reachable"]:
            t.add_row(n["id"] + ("*" if n.get("learned") else ""), "[red]unreachable[/]", *[""] * (len(cols) + 4))
            continue
        same = digests.count(n["digest"]) == len(digests)
        members = " ".join(f"{m}:{s[0]}" for m, s in sorted(n["members"].items()))
        peers = " ".join(f"{p}:{e['offset_us']:+.0f}/{e['rtt_us']:.0f}" for p, e in sorted(n["peers"].items()) if e)
        dropped = sum(n["counters"].get("dropped", {}).values())
        digest = f"[{'green' if same else 'yellow'}]{n['digest'][:12]}[/]"
        if "term" in n:
            match = " ".join(f"{p}:{i}" for p, i in sorted(n.get("match_index", {}).items()))
            role = n["role"]
            cells = [f"[bold]{role}[/]" if role == "leader" else role, str(n["term"]), n["leader"] or "[red]none[/]",
                     str(n["commit_index"]), match, digest, str(n["ops"]), str(n["trades_final"])]
        elif strong:  # an eventual-mode node in a strong cluster's table: say so
            cells = ["eventual", "", "", "", "", digest, str(n["ops"]), str(n["trades_final"] + n["trades_provisional"])]
        else:
            cells = [digest, str(n["ops"]), f"{n['trades_final']}/{n['trades_provisional']}", str(n["watermark"][0])]
        t.add_row(n["id"] + ("*" if n.get("learned") else ""), *cells, members, config_cell(n), clock_cell(n.get("clock")), peers, str(dropped),
                  risk_cell(n))
    console = Console()
    console.print(t)
    line = config_line(nodes)
    if line:
        console.print(line)
    if any(n.get("learned") for n in nodes):
        console.print(f"* not in {cfg.path}: learned from the configuration the nodes hold")
    if load_view is not None:
        if load_view[0]:
            console.print(loadview.shard_table(load_view[0], f"shards, over {dt:.2f} s (HOT: >= "
                                                             f"{loadview.HOT_FACTOR:g}x the mean committed/s)"))
        console.print(loadview.node_table(load_view[1]))
    return 0 if all(n["reachable"] for n in nodes) else 3
