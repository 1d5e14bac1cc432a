"""The demo's panels: each a small function ``snapshot -> renderable``, no state, no protocol logic.

Everything drawn here comes from a ``DemoSnapshot`` (``gossipbook/demo/snapshot.py``), so every panel
can be rendered from a fabricated snapshot in a test. Colours carry meaning, never decoration:
equal digests share a colour (the most common digest is green), red is a cut link or a failure.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from rich.align import Align
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.panel import Panel
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from ..demo.snapshot import DemoResult, DemoSnapshot, LogEvent, NodeView

#: digest colours, most common digest first
PALETTE = ("green", "magenta", "cyan", "yellow", "blue", "bright_red", "bright_white", "orange3")
SPARK = "▁▂▃▄▅▆▇█"
EVENT_STYLE = {"info": ("·", "dim"), "partition": ("✂", "bold red"), "heal": ("⚭", "bold green"),
               "suspect": ("?", "yellow"), "dead": ("†", "red"), "alive": ("●", "green"), "left": ("-", "dim"),
               "revised": ("↺", "magenta"), "converged": ("✔", "bold green"), "diverged": ("≠", "bold yellow"),
               "error": ("!", "bold red"), "member": ("⇄", "bold cyan")}
MEMBER_MARK = {"alive": ("●", "green"), "suspect": ("?", "yellow"), "dead": ("†", "red"), "left": ("-", "dim")}
PHASE_STYLE = {"starting": "dim", "running": "bold cyan", "partitioned": "bold white on red",
               "healed": "bold black on yellow", "converged": "bold black on green", "draining": "bold cyan",
               "done": "bold black on green", "interrupted": "bold white on red",
               # --replace
               "killed": "bold white on red", "removing": "bold black on yellow", "removed": "bold black on yellow",
               "adding": "bold black on yellow", "joining": "bold black on cyan", "caught up": "bold black on green"}


class SideBySide:
    """Renderables in equal columns, each given exactly its share of the width (a ``Table.grid``
    would measure every cell first, which costs more than drawing them; the screen redraws 10x/s)."""

    def __init__(self, items: list[RenderableType]) -> None:
        self.items = items

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        n = max(1, len(self.items))
        w = options.max_width
        widths = [w // n + (1 if i < w % n else 0) for i in range(n)]
        cols = [console.render_lines(it, options.update(width=wi), pad=True)
                for it, wi in zip(self.items, widths, strict=False)]
        height = max((len(c) for c in cols), default=0)
        new_line = Segment.line()
        for row in range(height):
            for c, wi in zip(cols, widths, strict=False):
                yield from (c[row] if row < len(c) else [Segment(" " * wi)])
            yield new_line


# ---- formatting helpers ---------------------------------------------------------------------------
def digest_colours(nodes: Iterable[NodeView]) -> dict[str, str]:
    """Digest -> colour: the most common digest first (ties: the first node's), so a converged
    cluster is all green and each diverged side keeps a colour of its own."""
    nodes = list(nodes)
    count = Counter(n.digest for n in nodes)
    first = {}
    for i, n in enumerate(nodes):
        first.setdefault(n.digest, i)
    order = sorted(count, key=lambda d: (-count[d], first[d]))
    return {d: PALETTE[i % len(PALETTE)] for i, d in enumerate(order)}


def fmt_us(us: float | None) -> str:
    """A duration in µs, short: ``85µs``, ``1.2ms``, ``3.4s``."""
    if us is None:
        return "—"
    a = abs(us)
    sign = "-" if us < 0 else ""
    if a < 1000:
        return f"{sign}{a:.0f}µs"
    if a < 1_000_000:
        return f"{sign}{a / 1000:.1f}ms"
    return f"{sign}{a / 1e6:.1f}s"


def fmt_signed_us(us: float | None) -> str:
    if us is None:
        return "—"
    return ("+" if us >= 0 else "") + fmt_us(us)


def fmt_age(ms: float | None) -> str:
    if ms is None:
        return "none yet"
    if ms < 1000:
        return f"{ms:.0f}ms"
    return f"{ms / 1000:.1f}s"


def fmt_price(ticks: int, tick: Decimal) -> str:
    return str((Decimal(ticks) * tick).quantize(tick))


def fmt_clock(v: NodeView) -> tuple[str, str]:
    """This node's clock against the time reference, short: ``±45µs +40.0ppm`` (the error bound
    and the measured drift), coloured by what it means for orders: green takes them, yellow
    free-running (the bound grows), red refuses them or has no bound yet."""
    if v.clock_status is None:
        return "bound —", "dim"
    if v.clock_status == "unsynced" or v.clock_bound_us is None:
        return "± unsynced", "bold red" if v.ready else "yellow"
    drift = "" if v.clock_drift_ppm is None else f" {v.clock_drift_ppm:+.1f}ppm"
    style = "bold red" if not v.clock_takes_orders else "yellow" if v.clock_status == "free-running" else "green"
    return f"±{fmt_us(v.clock_bound_us)}{drift}", style


def fmt_fairness(orders: int, tied: int) -> str:
    """Orders whose time priority against another node's was a coin toss, of those placed."""
    if not orders:
        return "coin tosses: no orders yet"
    return f"coin tosses {100 * tied / orders:.1f}% of {orders} orders"


def node_state(v: NodeView) -> tuple[str, str]:
    """A one-word state and its style: what an operator would want to know first."""
    if v.stopped:
        return "stopped", "dim"
    if v.down:  # killed for good (demo --replace): dead until the operator removes it
        return ("removed" if v.role == "removed" else "killed"), "bold red"
    if v.role != "voter":  # run-time membership: removed, leaving, or a learner still catching up
        return v.role, "bold red" if v.role == "removed" else "yellow"
    if v.clock_status not in (None, "unsynced") and not v.clock_takes_orders:
        return "clock ±", "bold red"  # its error bound is over the limit: refusing orders
    if not v.ready:
        return "syncing", "yellow"
    if not v.accepting:
        return "no disk", "bold red"
    if not v.clock_in_sync:
        return "clock!", "bold red"
    peers = {m: s for m, s in v.members.items() if m != v.id}
    alive = sum(1 for s in peers.values() if s == "alive")
    if alive == len(peers):
        return "ok", "green"
    return f"sees {alive}/{len(peers)}", "yellow"


# ---- header ---------------------------------------------------------------------------------------
def header(s: DemoSnapshot) -> Text:
    """One line: what is happening now first (it survives truncation), then the run's settings."""
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append(" gossipbook demo ", "bold white on blue")
    phase, style = s.phase.upper(), PHASE_STYLE.get(s.phase, "bold")
    r = s.result
    if s.partitioned and s.groups:
        phase = "PARTITIONED " + " | ".join(" ".join(g) for g in s.groups)
    elif r is not None and not r.interrupted and r.replaced is not None:
        x = r.replaced
        phase, style = ((f"REPLACED {x['killed']} → {x['added']}", PHASE_STYLE["done"]) if r.converged
                        else ("REPLACE INCOMPLETE", "bold white on red"))
    elif r is not None and not r.interrupted:
        if r.converged:
            phase = f"CONVERGED in {r.convergence_ms_after_heal:.0f} ms" if r.convergence_ms_after_heal else "CONVERGED"
        else:
            phase, style = "DIGESTS DIFFER", "bold white on red"
    elif s.phase == "converged" and s.converged_ms is not None:
        phase = f"CONVERGED in {s.converged_ms:.0f} ms"
    t.append(f" {phase} ", style)
    t.append(f" t {s.t:.1f}/{s.duration:g}s ", "cyan")
    t.append(f" {s.mode} · {sum(1 for v in s.nodes if not v.down)} nodes · seed {s.seed} · {s.rate:g}/s/node", "bold")
    epoch = max((v.epoch for v in s.nodes), default=0)
    if epoch:
        t.append(f" · epoch {epoch}", "bold")
    return t


# ---- nodes ----------------------------------------------------------------------------------------
def node_panel(v: NodeView, colour: str, tick: Decimal = Decimal("0.01")) -> Panel:
    """One node: state, digest (in its colour), ops and lag, trades, finality, clocks."""
    state, style = node_state(v)
    body = Text(no_wrap=True, overflow="ellipsis")
    body.append("■ ", colour)
    body.append(v.digest[:10], f"bold {colour}")
    body.append("\nops ")
    body.append(str(v.ops), "bold")
    body.append("  lag ")
    body.append(str(v.lag), "bold yellow" if v.lag else "dim")
    body.append("\ntrades ")
    body.append(f"✓{v.trades_final}", "green")
    body.append(f" ~{v.trades_provisional}", "yellow" if v.trades_provisional else "dim")
    body.append(f" ↺{v.revised}", "magenta" if v.revised else "dim")
    body.append("\nfinal ")
    age = v.watermark_age_ms
    body.append(f"{fmt_age(age)} behind" if age is not None else "none yet",
                "red" if age is None or age > 2000 else "yellow" if age > 500 else "green")
    body.append("\nclk ")
    body.append(fmt_signed_us(v.clock_offset_us), "cyan")
    body.append(" rtt ")
    body.append(fmt_us(v.rtt_us), "cyan")
    body.append("\n")
    body.append(*fmt_clock(v))
    title = Text.assemble((v.id, "bold"), (f" :{v.port} ", "dim"), (state, style))
    return Panel(body, title=title, title_align="left", border_style=colour, padding=(0, 1), height=8)


def nodes_table(s: DemoSnapshot) -> Table:
    """Every node on one row: the fallback when panels side by side would not fit."""
    colours = digest_colours(s.nodes)
    t = Table(box=None, pad_edge=False, padding=(0, 1), expand=True, header_style="bold")
    for col, j in (("node", "left"), ("state", "left"), ("digest", "left"), ("ops", "right"), ("lag", "right"),
                   ("✓/~/↺", "right"), ("final", "right"), ("rtt", "right"), ("±clock", "right")):
        t.add_column(col, justify=j, no_wrap=True, overflow="ellipsis",  # type: ignore[arg-type]
                     min_width=max((len(v.id) for v in s.nodes), default=2) if col == "node" else None)
    for v in s.nodes:
        state, style = node_state(v)
        c = colours[v.digest]
        t.add_row(Text(v.id, "bold"), Text(state, style), Text("■ " + v.digest[:8], c), str(v.ops),
                  Text(str(v.lag), "yellow" if v.lag else "dim"),
                  f"{v.trades_final}/{v.trades_provisional}/{v.revised}", fmt_age(v.watermark_age_ms), fmt_us(v.rtt_us),
                  Text(*fmt_clock(v)))
    return t


def nodes_row(s: DemoSnapshot) -> SideBySide:
    """The node panels side by side."""
    colours = digest_colours(s.nodes)
    return SideBySide([node_panel(v, colours[v.digest], s.tick_size) for v in s.nodes])


# ---- links ----------------------------------------------------------------------------------------
def link_matrix(s: DemoSnapshot) -> Panel:
    """Row sees column: ✕ where the link is cut (coloured by what the row believes), else its belief."""
    ids = [v.id for v in s.nodes]
    w = max(len(i) for i in ids) if ids else 2
    t = Text(no_wrap=True, overflow="crop")
    t.append(" " * (w + 1))
    for b in ids:
        t.append(f"{b:>{w + 1}}", "bold")
    for v in s.nodes:
        t.append("\n")
        t.append(f"{v.id:<{w}} ", "bold")
        for b in ids:
            if b == v.id:
                t.append(f"{'·':>{w + 1}}", "dim")
                continue
            belief = v.members.get(b)
            mark, style = MEMBER_MARK.get(belief, ("?", "yellow")) if belief else ("-", "dim")  # not a member there
            if (v.id, b) in s.blocked:
                t.append(f"{'✕':>{w + 1}}", f"bold {style} on grey23")
            else:
                t.append(f"{mark:>{w + 1}}", style)
    t.append("\n")
    if s.partitioned and s.groups:
        t.append("CUT ", "bold white on red")
        t.append(" | ".join(" ".join(g) for g in s.groups), "bold red")
    elif s.groups and s.heal_at is not None and s.t >= s.heal_at:
        t.append("healed", "bold green")
        t.append(f" at {s.heal_at:g}s", "dim")
    elif s.groups and s.partition_at is not None:
        t.append(f"split at {s.partition_at:g}s", "dim")
    else:
        t.append("no partition", "dim")
    legend = Text("✕cut ●alive ?susp †dead", "dim", no_wrap=True, overflow="crop")
    return Panel(Group(t, legend), title="links: row sees col", title_align="left", padding=(0, 1),
                 border_style="red" if s.partitioned else "blue")


# ---- ladders --------------------------------------------------------------------------------------
def ladder(v: NodeView, colour: str, tick: Decimal, levels: int = 3) -> Panel:
    """Top of book: asks above (best nearest the middle), the spread, bids below."""
    asks = [(fmt_price(p, tick), str(q)) for p, q in v.asks[:levels]]
    bids = [(fmt_price(p, tick), str(q)) for p, q in v.bids[:levels]]
    pw = max((len(p) for p, _ in asks + bids), default=6)
    qw = max((len(q) for _, q in asks + bids), default=3)
    w = pw + 1 + qw
    t = Text(no_wrap=True, overflow="crop")
    for _ in range(levels - len(asks)):
        t.append("\n")
    for i, (p, q) in enumerate(reversed(asks)):
        best = i == len(asks) - 1
        t.append(f"{p:>{pw}}", "bold red" if best else "red")
        t.append(f" {q:>{qw}}\n", "bold" if best else "")
    if v.asks and v.bids:
        t.append(f"{'spr ' + fmt_price(v.asks[0][0] - v.bids[0][0], tick):^{w}}\n", "dim")
    else:
        t.append(f"{'one-sided':^{w}}\n", "dim")
    for i, (p, q) in enumerate(bids):
        t.append(f"{p:>{pw}}", "bold green" if i == 0 else "green")
        t.append(f" {q:>{qw}}" + ("\n" if i < len(bids) - 1 else ""), "bold" if i == 0 else "")
    return Panel(Align.center(t), title=Text(v.id, "bold"), title_align="left", border_style=colour, padding=(0, 0))


def ladders(s: DemoSnapshot, levels: int = 3) -> SideBySide:
    """Every node's top of book side by side: a divergence shows in prices, not only in hashes."""
    colours = digest_colours(s.nodes)
    return SideBySide([ladder(v, colours[v.digest], s.tick_size, levels) for v in s.nodes])


# ---- event log ------------------------------------------------------------------------------------
def event_line(e: LogEvent) -> Text:
    mark, style = EVENT_STYLE.get(e.kind, ("·", ""))
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append(f"{e.t:5.1f}s ", "dim")
    t.append(mark + " ", style)
    t.append(e.text, style if e.kind in ("partition", "heal", "converged", "diverged", "error") else "")
    return t


class _Tail:
    """The last lines that fit the height the layout gives (a log scrolls, newest at the bottom)."""

    def __init__(self, lines: list[Text]) -> None:
        self.lines = lines

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        h = options.height or len(self.lines)
        out = Text("\n").join(self.lines[-max(1, h):]) if self.lines else Text("")
        out.no_wrap, out.overflow = True, "ellipsis"
        yield out


def event_log(s: DemoSnapshot) -> Panel:
    return Panel(_Tail([event_line(e) for e in s.events]), title="events", title_align="left",
                 border_style="blue", padding=(0, 1))


# ---- divergence timeline --------------------------------------------------------------------------
def sparkline(s: DemoSnapshot, width: int) -> tuple[Text, Text]:
    """Distinct digests over the whole run (columns are time buckets), and the cut window under it."""
    width = max(8, width)
    n = max(2, len(s.nodes))
    span = max(s.duration, s.t, 0.1)
    cols: list[int | None] = [None] * width
    for t, d in s.timeline:
        i = min(width - 1, int(t / span * width))
        # the least divergence seen in the bucket: an op caught in flight is replication lag, not
        # divergence; a partition shows in every sample
        cols[i] = d if cols[i] is None else min(cols[i], d)
    spark: list[tuple[str, str]] = []
    for c in cols:
        if c is None:
            spark.append((" ", ""))
        else:
            level = 0 if c <= 1 else min(len(SPARK) - 1, 2 + (c - 2) * (len(SPARK) - 3) // max(1, n - 2))
            spark.append((SPARK[level], "green" if c <= 1 else "bold red"))
    window: list[tuple[str, str]] = []
    now_i = min(width - 1, int(s.t / span * width))
    for i in range(width):
        t0 = i * span / width
        cut = (s.partition_at is not None and s.heal_at is not None and s.partition_at <= t0 < s.heal_at)
        if i == now_i and s.phase not in ("done", "interrupted"):
            window.append(("▲", "bold cyan"))
        else:
            window.append(("━", "red") if cut else ("─", "dim"))
    return _runs(spark), _runs(window)


def _runs(cells: list[tuple[str, str]]) -> Text:
    """Characters with styles -> a Text with one span per run of equal style (a span per
    character renders slowly, and this redraws ten times a second)."""
    out = Text(no_wrap=True, overflow="crop")
    run, style = "", ""
    for ch, st in cells:
        if st == style:
            run += ch
            continue
        if run:
            out.append(run, style or None)
        run, style = ch, st
    if run:
        out.append(run, style or None)
    return out


class _Timeline:
    def __init__(self, s: DemoSnapshot) -> None:
        self.s = s

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        s = self.s
        spark, window = sparkline(s, options.max_width)
        now = s.distinct_digests()
        lines = [spark, window]
        stat = Text(no_wrap=True, overflow="ellipsis")
        stat.append("now ")
        stat.append(f"{now} digest{'s' if now != 1 else ''}", "bold red" if now > 1 else "bold green")
        peak = max((d for _, d in s.timeline), default=now)
        stat.append(f" · peak {peak}", "dim")
        if s.converged_ms is not None:
            stat.append(" · converged ", "green")
            stat.append(f"{s.converged_ms:.0f} ms", "bold green")
        lines.append(stat)
        o = s.orders
        lines.append(Text.assemble(
            "orders ", (str(o.get("sent", 0)), "bold"), " ✓", (str(o.get("acked", 0)), "green"),
            " ✗", (str(o.get("rejected", 0) + o.get("errors", 0)), "red" if o.get("errors") else "dim"),
            " · trades ", (str(s.trades), "bold"), no_wrap=True, overflow="ellipsis"))
        lines.append(Text.assemble("ops pushed ", (str(s.ops_pushed), "bold"), " repaired ",
                                   (str(s.ops_repaired), "bold"), no_wrap=True, overflow="ellipsis"))
        lines.append(Text.assemble("revised by replay ", (str(s.revised), "magenta" if s.revised else "dim"),
                                   no_wrap=True, overflow="ellipsis"))
        lines.insert(3, fairness_line(s))  # under the digests: the clocks' share in who came first
        if has_risk(s):  # then risk, when there is any: limits near their end and kill switches matter
            lines.insert(4, risk_line(s))
        h = options.height or len(lines)
        out = Text("\n").join(lines[:max(1, h)])
        out.no_wrap, out.overflow = True, "ellipsis"
        yield out


def fairness_line(s: DemoSnapshot) -> Text:
    """The cluster's coin-toss rate: every node's meter added up (each places every order it holds)."""
    up = [v for v in s.nodes if not v.stopped]
    orders, tied = sum(v.fair_orders for v in up), sum(v.fair_tied for v in up)
    return Text(fmt_fairness(orders, tied), "yellow" if tied else "dim", no_wrap=True, overflow="ellipsis")


def has_risk(s: DemoSnapshot) -> bool:
    """Whether any node reports a risk limit, a kill switch or a risk refusal (worth a line)."""
    return any(v.risk_limits or v.risk_near or v.risk_disabled or v.risk_refused
               for v in s.nodes if not v.stopped)


def risk_line(s: DemoSnapshot) -> Text:
    """Risk at a glance, a cell per node: limits held (or how many are near their end when only
    the status is known), the tightest headroom there as a % of its limit, refusals; then the
    accounts the kill switch disabled. Yellow under 10% headroom, red for a disabled account."""
    t = Text(no_wrap=True, overflow="ellipsis")
    up = [v for v in s.nodes if not v.stopped]
    if not has_risk(s):
        t.append("risk: no limits", "dim")
        return t
    t.append("risk ")
    for v in up:
        t.append(f"{v.id}:", "bold")
        t.append(f"{v.risk_limits}" if v.risk_limits is not None else f"{v.risk_near}near")
        if v.risk_tightest is not None:
            pct = v.risk_tightest[1]
            t.append(f"▸{pct:.0f}%", "bold yellow" if pct < 10 else "green")
        if v.risk_refused:
            t.append(f"✗{v.risk_refused}", "red")
        t.append(" ")
    disabled = sorted({a for v in up for a in v.risk_disabled})
    if disabled:
        t.append("· off ", "bold red")
        t.append(",".join(disabled), "bold red")
    return t


def timeline(s: DemoSnapshot) -> Panel:
    return Panel(_Timeline(s), title="divergence: distinct digests", title_align="left",
                 border_style="blue", padding=(0, 1))


# ---- summary --------------------------------------------------------------------------------------
def summary_lines(r: DemoResult) -> list[Text]:
    """The end of the run, one fact a line: the verdict first, loudly when it is bad."""
    lines: list[Text] = []
    if r.interrupted:
        lines.append(Text(" INTERRUPTED: stopped by Ctrl-C; every node shut down ", "bold white on red"))
    d0 = next(iter(r.digests.values()), "")
    if r.all_equal and r.converged:
        lines.append(Text.assemble((" ✔ CONVERGED ", "bold black on green"), f" all {r.nodes} digests equal ",
                                   (d0[:16], "green"), no_wrap=True, overflow="ellipsis"))
    elif r.all_equal:
        lines.append(Text.assemble(("✔", "green"), f" all {r.nodes} digests equal ", (d0[:16], "green"),
                                   no_wrap=True, overflow="ellipsis"))
    else:
        lines.append(Text(" ✘ DIGESTS DIFFER: the replicas did not converge ", "bold white on red"))
        colours = {d: PALETTE[i % len(PALETTE)] for i, d in enumerate(dict.fromkeys(r.digests.values()))}
        lines.append(Text.assemble(*[(f"{n} {d[:10]}  ", colours[d]) for n, d in r.digests.items()],
                                   no_wrap=True, overflow="ellipsis"))
    if r.partitioned:
        ms = r.convergence_ms_after_heal
        lines.append(Text.assemble("converged after heal  ", (f"{ms:.0f} ms" if ms is not None else "not within the run",
                                                              "bold green" if ms is not None else "bold red")))
        lines.append(Text.assemble("diverged in partition ", ("yes" if r.diverged_during_partition else "no", "bold"),
                                   (f" (up to {r.max_distinct_digests} distinct digests)", "dim")))
    if r.replaced is not None:
        lines += replace_lines(r.replaced)
    x = r.ops_exchanged
    lines.append(Text.assemble("ops exchanged         ", (f"{x['pushed']}", "bold"), " pushed · ",
                               (f"{x['repaired']}", "bold"), " repaired",
                               (f" ({x['repaired_after_heal']} after heal)" if r.partitioned else "", "dim"),
                               f" · {x['datagrams']} datagrams", no_wrap=True, overflow="ellipsis"))
    o = r.orders
    lines.append(Text.assemble("orders                ", (str(o.get("sent", 0)), "bold"), " sent · ",
                               (str(o.get("acked", 0)), "green"), " acked · ", str(o.get("rejected", 0)),
                               " rejected · ", (str(o.get("errors", 0)), "red" if o.get("errors") else ""),
                               " unanswered", no_wrap=True, overflow="ellipsis"))
    lines.append(Text.assemble("trades                ", (str(r.trades), "bold"), f" ({r.trades_final} final) · ",
                               (str(r.revised_trades), "magenta"), " revised by replay (all replicas)",
                               no_wrap=True, overflow="ellipsis"))
    return lines


def replace_lines(x: dict[str, Any]) -> list[Text]:
    """``--replace``'s facts, as the remaining nodes hold them: the killed node's role and the epoch
    on each, how long finality took to resume after the removal, how long the new node took."""
    def ms(v: float | None, what: str) -> tuple[str, str]:
        return ((f"{v:.0f} ms" if v < 1000 else f"{v / 1000:.2f} s") if v is not None else f"not {what} within the run",
                "bold green" if v is not None else "bold red")

    roles = set(x["killed_role"].values())
    epochs = set(x["epochs"].values())
    return [
        Text.assemble("replaced              ", (x["killed"], "bold"), " killed → ",
                      ("/".join(sorted(str(r) for r in roles)), "bold red" if roles == {"removed"} else "bold yellow"),
                      " everywhere · epoch ", ("/".join(str(e) for e in sorted(epochs)), "bold"),
                      " · ", (x["added"], "bold"), " added", no_wrap=True, overflow="ellipsis"),
        Text.assemble("finality resumed      ", ms(x["finality_resumed_ms"], "resumed"), " after the removal (",
                      str(x["provisional_at_removal"]), " provisional trades final)", no_wrap=True, overflow="ellipsis"),
        Text.assemble(f"{x['added']} caught up          "[:22], ms(x["caught_up_ms"], "caught up"),
                      " after it started (takes orders after ", ms(x["added_ready_ms"], "ready")[0], ")",
                      no_wrap=True, overflow="ellipsis"),
    ]


def summary(r: DemoResult) -> Panel:
    ok = r.all_equal and not r.interrupted and r.converged
    return Panel(Group(*summary_lines(r)), title="summary", title_align="left",
                 border_style="green" if ok else "red", padding=(0, 1))


def fitted(layout: Any, console: Console, options: ConsoleOptions, width: int, height: int) -> RenderResult:
    """``layout`` rendered at exactly ``width`` x ``height`` lines, without a newline after the last
    (a full-screen view that must never scroll the terminal by one line)."""
    lines = console.render_lines(layout, options.update(width=width, height=height))
    new_line = Segment.line()
    for i, line in enumerate(lines):
        yield from line
        if i < len(lines) - 1:
            yield new_line
