"""``gossipbook top``: the demo's screen watching any running cluster, read-only.

A poll asks every node for its ``status`` and its ``risk`` query (in parallel, short timeouts); ``TopState.update`` turns the
answers into the demo's ``DemoSnapshot`` (``snapshot_from_status`` is the pure adapter), so the demo's
panels (``panels.py``) draw node panels and the link matrix unchanged. What top adds is what the demo
knew and a status poll does not: which links are cut is *inferred* from the member views (a link
a→b is cut when a sees b suspect/dead/left while b answers us), the sides of a partition are the
connected parts of the links that are not cut, and the event log is made of the differences between
two polls. ``run_top`` drives ``rich.live.Live(auto_refresh=False)`` from the trio loop: one redraw per
poll, no refresh thread; Ctrl-C (SIGINT) ends it cleanly.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.layout import Layout
from rich.panel import Panel
from rich.text import Text

from ..demo.snapshot import DemoSnapshot, LogEvent, NodeView, clock_fields
from . import load as loadview
from . import panels

#: member states that mean "I cannot reach that node"
CUT_STATES = ("suspect", "dead", "left")

NODES_H = 8
MIDDLE_MIN_H = 9
LINKS_W = 27
MIN_PANEL_W = 20  # node panels side by side down to 80 columns for 4 nodes; below, one table


# ---- the adapter: status dicts -> DemoSnapshot ------------------------------------------------------
def _port(st: dict[str, Any], ports: dict[str, int]) -> int:
    if st["id"] in ports:
        return ports[st["id"]]
    addr = str(st.get("addr", ""))
    tail = addr.rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def cut_links(nodes: Sequence[dict[str, Any]]) -> frozenset[tuple[str, str]]:
    """(a, b) for each link a→b where a believes b suspect/dead/left while b answers us."""
    up = {n["id"] for n in nodes if n.get("reachable")}
    out = set()
    for n in nodes:
        if n["id"] not in up:
            continue
        for m, state in (n.get("members") or {}).items():
            if m != n["id"] and m in up and state in CUT_STATES:
                out.add((n["id"], m))
    return frozenset(out)


def sides(nodes: Sequence[dict[str, Any]], cut: frozenset[tuple[str, str]]) -> tuple[tuple[str, ...], ...]:
    """The connected parts of the reachable nodes over the links cut in neither direction."""
    up = [n["id"] for n in nodes if n.get("reachable")]
    seen: set[str] = set()
    groups = []
    for a in up:
        if a in seen:
            continue
        comp, todo = [], [a]
        seen.add(a)
        while todo:
            x = todo.pop()
            comp.append(x)
            for y in up:
                if y not in seen and (x, y) not in cut and (y, x) not in cut:
                    seen.add(y)
                    todo.append(y)
        groups.append(tuple(sorted(comp, key=up.index)))
    return tuple(groups)


def node_view(st: dict[str, Any], union: dict[str, int], port: int, group: int | None,
              now_ns: int | None = None, ids: Sequence[str] = ()) -> NodeView:
    """One status dict as the demo's ``NodeView`` (an unreachable node: ``stopped``, members unknown)."""
    nid = st["id"]
    if not st.get("reachable"):
        # its beliefs are unknown: "left" draws as a dim "-" in the link matrix (never a cut)
        return NodeView(id=nid, port=port, group=None, ready=False, accepting=False, clock_in_sync=False,
                        digest="", ops=0, lag=0, watermark_age_ms=None, trades_final=0, trades_provisional=0,
                        revised=0, members={m: "left" for m in ids if m != nid}, clock_offset_us=None,
                        rtt_us=None, stopped=True)
    vv = st.get("version_vector") or {}
    lag = sum(max(0, s - vv.get(o, 0)) for o, s in union.items())
    wm = (st.get("watermark") or [0])[0]
    now_ns = time.time_ns() if now_ns is None else now_ns
    age = max(0.0, (now_ns - wm) / 1e6) if wm else None
    ests = [p for p in (st.get("peers") or {}).values() if p]
    offset = max((p["offset_us"] for p in ests), key=abs) if ests else None
    rtt = statistics.median(p["rtt_us"] for p in ests) if ests else None
    counters = st.get("counters") or {}
    return NodeView(
        id=nid, port=port, group=group, ready=bool(st.get("ready", True)), accepting=bool(st.get("accepting", True)),
        clock_in_sync=bool(st.get("clock_in_sync", True)), digest=str(st.get("digest", "")), ops=int(st.get("ops", 0)),
        lag=lag, watermark_age_ms=age, trades_final=int(st.get("trades_final", 0)),
        trades_provisional=int(st.get("trades_provisional", 0)), revised=int(counters.get("revised_trades", 0)),
        members=dict(st.get("members") or {}), clock_offset_us=offset, rtt_us=rtt, **clock_fields(st))


def snapshot_from_status(nodes: Sequence[dict[str, Any]], *, t: float = 0.0, config_path: str = "",
                         ports: dict[str, int] | None = None, events: Sequence[LogEvent] = (),
                         timeline: Sequence[tuple[float, int]] = (), now_ns: int | None = None) -> DemoSnapshot:
    """The demo's snapshot from ``gossipbook status --json`` node dicts (``reachable`` per node)."""
    ports = ports or {}
    up = [n for n in nodes if n.get("reachable")]
    union: dict[str, int] = {}
    for n in up:
        for o, s in (n.get("version_vector") or {}).items():
            union[o] = max(union.get(o, 0), s)
    cut = cut_links(nodes)
    groups = sides(nodes, cut)
    split = len(groups) > 1
    side = {nid: i for i, g in enumerate(groups) for nid in g}
    ids = [n["id"] for n in nodes]
    views = tuple(node_view(n, union, _port(n, ports), side.get(n["id"]) if split else None, now_ns, ids)
                  for n in nodes)
    strong = any("term" in n for n in up)
    counters = [n.get("counters") or {} for n in up]
    return DemoSnapshot(
        t=t, duration=t, phase="partitioned" if split else "running", mode="strong" if strong else "eventual",
        seed=0, rate=0.0, nodes=views, groups=groups if split else None, partitioned=split, partition_at=None,
        heal_at=None, blocked=cut, events=tuple(events), timeline=tuple(timeline),
        trades=max((n.get("trades_final", 0) + n.get("trades_provisional", 0) for n in up), default=0),
        revised=sum(c.get("revised_trades", 0) for c in counters),
        ops_pushed=sum(c.get("pushed_ops", 0) for c in counters),
        ops_repaired=sum(c.get("repair_ops", 0) for c in counters), config_path=config_path)


def distinct_digests(s: DemoSnapshot) -> int:
    return len({v.digest for v in s.nodes if not v.stopped})


# ---- state across polls: events and the divergence timeline -----------------------------------------
class TopState:
    """What top remembers between polls; ``update`` returns the frame's snapshot."""

    def __init__(self, config_path: str = "", ports: dict[str, int] | None = None, t0: float | None = None) -> None:
        self.config_path = config_path
        self.ports = ports or {}
        self.t0 = time.monotonic() if t0 is None else t0
        self.prev: dict[str, dict[str, Any]] | None = None
        self.prev_groups: tuple[tuple[str, ...], ...] | None = None
        self.prev_distinct = 1
        self.events: list[LogEvent] = []
        self.timeline: list[tuple[float, int]] = []
        self.meta: dict[str, Any] = {}
        self._last: tuple[float, list[dict[str, Any]]] | None = None  # the previous poll, for rates

    def log(self, t: float, kind: str, text: str) -> None:
        self.events.append(LogEvent(round(t, 1), kind, text))
        del self.events[:-60]

    def update(self, nodes: Sequence[dict[str, Any]], now: float | None = None) -> DemoSnapshot:
        t = round((time.monotonic() if now is None else now) - self.t0, 2)
        cur = {n["id"]: n for n in nodes}
        snap = snapshot_from_status(nodes, t=t, config_path=self.config_path, ports=self.ports)
        distinct = distinct_digests(snap)
        if self.prev is None:
            up = sum(1 for n in nodes if n.get("reachable"))
            self.log(t, "info", f"watching {len(nodes)} nodes ({up} answer)")
        else:
            self._diff(t, self.prev, cur)
        groups = snap.groups if snap.partitioned else None
        if groups != self.prev_groups and (self.prev is not None or groups):
            if groups:
                self.log(t, "partition", "partition: " + " | ".join(" ".join(g) for g in groups))
            else:
                self.log(t, "heal", "healed: every link between answering nodes is up")
        if self.prev is not None and distinct != self.prev_distinct:
            if distinct > 1:
                self.log(t, "diverged", f"replicas differ: {distinct} distinct digests")
            else:
                self.log(t, "converged", "every answering replica has the same digest")
        self.prev, self.prev_groups, self.prev_distinct = cur, groups, distinct
        self.timeline.append((t, distinct))
        del self.timeline[:-4000]
        strong = [n for n in nodes if n.get("reachable") and n.get("role") == "leader"]
        self.meta = {"leader": strong[0]["id"] if strong else None,
                     "term": strong[0].get("term") if strong else None}
        mono = time.monotonic() if now is None else now
        prev = self._last
        self.meta["load"] = loadview.load_rows(prev[1] if prev else None, nodes, mono - prev[0] if prev else 0.0)
        self._last = (mono, list(nodes))
        return replace(snap, events=tuple(self.events), timeline=tuple(self.timeline))

    def _diff(self, t: float, prev: dict[str, dict[str, Any]], cur: dict[str, dict[str, Any]]) -> None:
        for nid, n in cur.items():
            p = prev.get(nid, {})
            if p.get("reachable") and not n.get("reachable"):
                self.log(t, "error", f"{nid} does not answer")
                continue
            if n.get("reachable") and not p.get("reachable"):
                self.log(t, "alive", f"{nid} answers")
                continue
            if not n.get("reachable"):
                continue
            changed: dict[tuple[str, str], list[str]] = {}
            pm, cm = p.get("members") or {}, n.get("members") or {}
            for m, state in cm.items():
                if m != nid and pm.get(m, "alive") != state:
                    changed.setdefault((state, m), []).append(nid)
            for (state, m), who in changed.items():
                self.log(t, state if state in panels.EVENT_STYLE else "info", f"{', '.join(who)} sees {m} {state}")


# ---- the screen -------------------------------------------------------------------------------------
def header(s: DemoSnapshot, meta: dict[str, Any] | None = None, interval: float | None = None) -> Text:
    """One line, the verdict first: partitioned / nodes down / digests differ / in sync."""
    meta = meta or {}
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append(" gossipbook top ", "bold white on blue")
    n = len(s.nodes)
    up = sum(1 for v in s.nodes if not v.stopped)
    d = distinct_digests(s)
    if s.partitioned and s.groups:
        t.append(" PARTITIONED " + " | ".join(" ".join(g) for g in s.groups) + " ", "bold white on red")
    elif up < n:
        t.append(f" {n - up} DOWN ", "bold white on red")
    if up == 0:
        t.append(" no node answers ", "bold white on red")
    elif d > 1:
        t.append(f" DIGESTS DIFFER ({d}) ", "bold black on yellow")
    else:
        t.append(" digests equal ", "bold black on green")
    t.append(f" {up}/{n} up ", "bold")
    if meta.get("leader"):
        t.append(f"· leader {meta['leader']} term {meta['term']} ", "cyan")
    t.append(f"· {s.mode} ", "dim")
    if s.config_path:
        t.append(f"· {s.config_path} ", "dim")
    t.append(f"· t {s.t:.0f}s" + (f" every {interval:g}s" if interval else ""), "dim")
    return t


def down_panel(v: NodeView) -> Panel:
    body = Text("unreachable\n(no status reply)", "red", no_wrap=True, overflow="ellipsis")
    title = Text.assemble((v.id, "bold"), (f" :{v.port} ", "dim"), ("down", "bold red"))
    return Panel(body, title=title, title_align="left", border_style="red", padding=(0, 1), height=NODES_H)


def node_panels(s: DemoSnapshot) -> panels.SideBySide:
    colours = panels.digest_colours(v for v in s.nodes if not v.stopped)
    return panels.SideBySide([down_panel(v) if v.stopped else panels.node_panel(v, colours[v.digest], s.tick_size)
                              for v in s.nodes])


def spark_line(s: DemoSnapshot, width: int) -> Text:
    """Distinct digests, one column per poll, the newest at the right (it scrolls, as top does)."""
    n = max(2, len(s.nodes))
    out = Text(no_wrap=True, overflow="crop")
    for _, d in s.timeline[-max(1, width):]:
        level = 0 if d <= 1 else min(len(panels.SPARK) - 1, 2 + (d - 2) * (len(panels.SPARK) - 3) // max(1, n - 2))
        out.append(panels.SPARK[level], "green" if d <= 1 else "bold red")
    return out


class _Cluster:
    """Distinct digests over the time top has watched (the demo's sparkline), then cluster totals."""

    def __init__(self, s: DemoSnapshot) -> None:
        self.s = s

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        s = self.s
        spark = spark_line(s, options.max_width)
        now = distinct_digests(s)
        stat = Text(no_wrap=True, overflow="ellipsis")
        stat.append("now ")
        stat.append(f"{now} digest{'s' if now != 1 else ''}", "bold red" if now > 1 else "bold green")
        stat.append(f" · peak {max((d for _, d in s.timeline), default=now)}", "dim")
        if panels.has_risk(s):  # on the verdict's line: at 80x24 the panel shows three lines
            stat.append(" · ")
            stat.append_text(panels.risk_line(s))
        up = [v for v in s.nodes if not v.stopped]
        lines = [spark, stat,
                 Text.assemble("ops ", (str(max((v.ops for v in up), default=0)), "bold"), " · trades ",
                               (str(s.trades), "bold"), " · revised ", (str(s.revised), "magenta" if s.revised else "dim"),
                               " · ", panels.fairness_line(s), no_wrap=True, overflow="ellipsis"),
                 Text.assemble("ops pushed ", (str(s.ops_pushed), "bold"), " repaired ", (str(s.ops_repaired), "bold"),
                               no_wrap=True, overflow="ellipsis")]
        h = options.height or len(lines)
        out = Text("\n").join(lines[:max(1, h)])
        out.no_wrap, out.overflow = True, "ellipsis"
        yield out


def cluster_panel(s: DemoSnapshot) -> Panel:
    return Panel(_Cluster(s), title="distinct digests, a column per poll", title_align="left", border_style="blue",
                 padding=(0, 1))


def load_panel(shards: Sequence[loadview.ShardLoad], nodes: Sequence[loadview.NodeLoad]) -> Panel:
    """Per-shard and per-node load since the previous poll (``tui/load.py``), side by side."""
    from rich import box
    from rich.table import Table

    grid = Table.grid(padding=(0, 3))
    parts = []
    if shards:
        st = loadview.shard_table(shards, "")
        st.box, st.title, st.show_edge, st.padding = None, None, False, (0, 1)
        parts.append(st)
    nt = loadview.node_table(nodes, "")
    nt.box, nt.title, nt.show_edge, nt.padding = None, None, False, (0, 1)
    parts.append(nt)
    grid.add_row(*parts)
    hot = [str(r.shard) for r in shards if r.hot]
    title = "load since the last poll" + (f" · HOT shard {', '.join(hot)}" if hot else "")
    return Panel(grid, title=title, title_align="left", border_style="red" if hot else "blue", box=box.ROUNDED,
                 padding=(0, 1))


def load_height(shards: Sequence[loadview.ShardLoad], nodes: Sequence[loadview.NodeLoad]) -> int:
    """Lines ``load_panel`` takes: its border, a header and the longer table."""
    return 3 + max(len(shards), len(nodes))


class TopView:
    """The whole screen; like the demo's ``DemoView``, slots are chosen from the size at render time."""

    def __init__(self, reserve_lines: int = 0, interval: float | None = None) -> None:
        self.snap: DemoSnapshot | None = None
        self.meta: dict[str, Any] = {}
        self.interval = interval
        self.reserve_lines = reserve_lines
        root = Layout(name="root")
        root.split_column(Layout(name="header", size=1), Layout(name="nodes", size=NODES_H),
                          Layout(name="middle", size=MIDDLE_MIN_H), Layout(name="load", size=0),
                          Layout(name="bottom", ratio=1))
        root["middle"].split_row(Layout(name="links", size=LINKS_W), Layout(name="events", ratio=1))
        root["header"].update(Text(" gossipbook top: asking every node…", "bold"))
        for name in ("nodes", "links", "events", "bottom", "load"):
            root[name].update(Text(""))
        root["load"].visible = False
        self.layout = root

    def update(self, snap: DemoSnapshot, meta: dict[str, Any] | None = None) -> None:
        self.snap = snap
        self.meta = meta or {}
        lay = self.layout
        lay["header"].update(header(snap, self.meta, self.interval))
        lay["links"].update(panels.link_matrix(snap))
        lay["events"].update(panels.event_log(snap))
        lay["bottom"].update(cluster_panel(snap))
        rows = self.meta.get("load")
        if rows:
            lay["load"].update(load_panel(*rows))

    def _plan(self, width: int, height: int) -> None:
        s = self.snap
        lay = self.layout
        if s is None:
            for name in ("nodes", "middle", "bottom"):
                lay[name].visible = False
            return
        n = max(1, len(s.nodes))
        if width // n >= MIN_PANEL_W and height >= 1 + NODES_H + MIDDLE_MIN_H:
            lay["nodes"].update(node_panels(s))
            lay["nodes"].size = NODES_H
        else:
            lay["nodes"].update(panels.nodes_table(s))
            lay["nodes"].size = n + 1
        lay["nodes"].visible = True
        rest = height - 1 - lay["nodes"].size
        lay["middle"].size = middle_h = max(MIDDLE_MIN_H, n + 5)
        lay["middle"].visible = rest >= middle_h
        if lay["middle"].visible:
            rest -= middle_h
            lay["events"].visible = width - LINKS_W >= 20
            lay["links"].size = LINKS_W if lay["events"].visible else None
        rows = self.meta.get("load")
        need = load_height(*rows) if rows else 0
        lay["load"].visible = bool(need) and rest >= need + 3  # only where the cluster panel keeps 3 lines
        if lay["load"].visible:
            lay["load"].size = need
            rest -= need
        lay["bottom"].visible = rest >= 3

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        height = max(3, (options.height or console.height) - self.reserve_lines)
        self._plan(width, height)
        yield from panels.fitted(self.layout, console, options, width, height)


def frame(nodes: Sequence[dict[str, Any]], config_path: str = "", **kw: Any) -> RenderableType:
    """One screen from status dicts (no history): what ``--once`` prints."""
    st = TopState(config_path, **kw)
    view = TopView(reserve_lines=1)
    view.update(st.update(nodes), st.meta)
    return view


# ---- the loop ---------------------------------------------------------------------------------------
async def poll(client: Any, ids: Sequence[str], timeout: float, risk: bool = True) -> list[dict[str, Any]]:
    """Every node's status, asked in parallel; ``reachable`` False for a node silent for ``timeout``.
    ``risk``: also its answer to the ``risk`` query (as ``risk_query``; none if it does not answer)."""
    import trio

    from ..core.wire import ClientQuery
    from ..node.client import Unreachable

    out: dict[str, dict[str, Any]] = {}

    async def one(nid: str) -> None:
        req = client.new_req()
        try:
            rep = await client.request(nid, ClientQuery(req, "status", "", 0), req, timeout)
        except Unreachable:
            out[nid] = {"id": nid, "reachable": False}
            return
        payload = rep.payload if isinstance(rep.payload, dict) else {}
        out[nid] = {**payload, "id": nid, "reachable": bool(payload)}
        if payload and risk:
            # every limit and kill switch this config's account may see (the operator: all), for the
            # risk line; status alone carries only the limits near their end
            req = client.new_req()
            try:
                rq = await client.request(nid, ClientQuery(req, "risk", "", 0), req, timeout)
            except Unreachable:
                return
            if rq.code == 0 and isinstance(rq.payload, dict):
                out[nid]["risk_query"] = rq.payload

    async with trio.open_nursery() as n:
        for nid in ids:
            n.start_soon(one, nid)
    return [out[i] for i in ids]


async def run_top(cfg: Any, interval: float, once: bool = False, console: Console | None = None,
                  timeout: float | None = None) -> int:
    """Watch ``cfg``'s cluster until Ctrl-C (SIGINT) or SIGTERM; ``once``: print one frame and return.
    Returns 0, or 3 after ``once`` when a node did not answer (as ``gossipbook status`` does)."""
    import signal

    import trio
    from rich.live import Live

    from ..node.client import Client

    console = console or Console()
    timeout = timeout if timeout is not None else min(1.0, max(0.2, interval * 0.8))
    ids = list(cfg.ids)
    state = TopState(str(cfg.path), {e.id: e.port for e in cfg.nodes})
    async with Client(cfg) as c:
        if once:
            nodes = await poll(c, ids, timeout)
            view = TopView(reserve_lines=1, interval=None)
            view.update(state.update(nodes), state.meta)
            console.print(view)
            return 0 if all(n["reachable"] for n in nodes) else 3
        view = TopView(reserve_lines=0, interval=interval)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as sigs:
            with Live(view, console=console, screen=True, auto_refresh=False, redirect_stdout=False,
                      redirect_stderr=False) as live:
                live.refresh()
                async with trio.open_nursery() as nursery:
                    async def stop_on_signal() -> None:
                        async for _ in sigs:
                            nursery.cancel_scope.cancel()
                            return

                    nursery.start_soon(stop_on_signal)
                    nxt = trio.current_time()
                    while True:
                        nodes = await poll(c, ids, timeout)
                        view.update(state.update(nodes), state.meta)
                        live.refresh()
                        nxt = max(nxt + interval, trio.current_time() + interval / 4)
                        await trio.sleep_until(nxt)
    return 0


__all__ = ["TopState", "TopView", "cut_links", "frame", "header", "node_view", "poll", "run_top", "sides",
           "snapshot_from_status"]
