"""The demo screen: one ``Layout`` built once, its slots refilled from each snapshot.

``DemoView.update(snapshot)`` puts fresh panels into the slots; rendering decides, from the size the
terminal has *now*, which slots are shown (and fills the two whose form depends on it), so the screen
degrades (ladders go first, then the log, and node panels become a table) instead of wrapping into
garbage. ``run_tui`` drives it with ``rich.live.Live(auto_refresh=False, screen=True)``: the scenario
calls ``publish`` from the trio loop ~10 times a second and that is the only time the screen is
redrawn (no refresh thread).
"""

from __future__ import annotations

from rich.console import Console, ConsoleOptions, RenderResult
from rich.layout import Layout
from rich.live import Live
from rich.text import Text

from ..demo.scenario import Scenario
from ..demo.snapshot import DemoResult, DemoSnapshot
from . import panels

NODES_H = 8  # node panels (6 lines + borders)
MIDDLE_H = 9  # ladders: 3 asks, the spread, 3 bids, borders
LINKS_W = 27
MIN_LADDER_W = 12
MIN_PANEL_W = 21  # below this per node, node panels become one table


class DemoView:
    """The whole screen; a rich renderable (``__rich_console__``) that any console can draw."""

    def __init__(self, reserve_lines: int = 1) -> None:
        self.snap: DemoSnapshot | None = None
        self.reserve_lines = reserve_lines  # a line kept free under a non-fullscreen Live
        root = Layout(name="root")
        root.split_column(Layout(name="header", size=1), Layout(name="nodes", size=NODES_H),
                          Layout(name="middle", size=MIDDLE_H), Layout(name="summary", size=3, visible=False),
                          Layout(name="bottom", ratio=1))
        root["middle"].split_row(Layout(name="links", size=LINKS_W), Layout(name="ladders", ratio=1))
        root["bottom"].split_row(Layout(name="events", ratio=3), Layout(name="timeline", ratio=2))
        root["header"].update(Text(" gossipbook demo: starting nodes…", "bold"))
        for name in ("nodes", "links", "ladders", "events", "timeline", "summary"):
            root[name].update(Text(""))
        self.layout = root

    def update(self, snap: DemoSnapshot) -> None:
        """Refill the slots from ``snap``; node panels and ladders are filled at render time, when the
        size (panels or a table? room for ladders?) is known."""
        self.snap = snap
        lay = self.layout
        lay["header"].update(panels.header(snap))
        lay["links"].update(panels.link_matrix(snap))
        lay["events"].update(panels.event_log(snap))
        lay["timeline"].update(panels.timeline(snap))
        if snap.result is not None:
            lay["summary"].update(panels.summary(snap.result))

    def _plan(self, width: int, height: int) -> None:
        """Choose what is visible at this size; the layout itself is never rebuilt."""
        s = self.snap
        lay = self.layout
        if s is None:
            for name in ("nodes", "middle", "bottom", "summary"):
                lay[name].visible = False
            return
        n = max(1, len(s.nodes))
        if width // n >= MIN_PANEL_W and height >= 12:
            lay["nodes"].update(panels.nodes_row(s))
            lay["nodes"].size = NODES_H
        else:
            lay["nodes"].update(panels.nodes_table(s))
            lay["nodes"].size = n + 1
        lay["nodes"].visible = True
        done = s.result is not None
        rest = height - 1 - lay["nodes"].size
        lay["middle"].size = middle_h = max(MIDDLE_H, n + 5)  # the link matrix needs a row per node
        show_middle = rest - middle_h >= (9 if done else 5)
        ladder_fits = (width - LINKS_W) // n >= MIN_LADDER_W
        lay["middle"].visible = show_middle
        if show_middle:
            lay["ladders"].visible = ladder_fits
            lay["links"].size = LINKS_W if ladder_fits else None
            if ladder_fits:
                lay["ladders"].update(panels.ladders(s))
            rest -= middle_h
        lay["summary"].visible = done
        if done:
            assert s.result is not None
            lay["summary"].size = min(rest, len(panels.summary_lines(s.result)) + 2)
            rest -= lay["summary"].size
        lay["bottom"].visible = rest >= 4
        if lay["bottom"].visible:
            lay["timeline"].visible = width >= 70
            lay["events"].ratio = 3

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        height = max(3, (options.height or console.height) - self.reserve_lines)
        self._plan(width, height)
        yield from panels.fitted(self.layout, console, options, width, height)


def run_tui(sc: Scenario, console: Console | None = None) -> DemoResult:
    """Play ``sc`` on the terminal's alternate screen (frames overwrite in place: no flicker, no
    scrolling), then print the last frame, summary included, on the normal screen so it stays."""
    import trio

    from ..demo.scenario import drive

    console = console or Console()
    view = DemoView(reserve_lines=0)
    with Live(view, console=console, screen=True, auto_refresh=False, redirect_stdout=False,
              redirect_stderr=False) as live:
        def publish(snap: DemoSnapshot) -> None:
            view.update(snap)
            live.refresh()

        result = trio.run(drive, sc, publish)
    view.reserve_lines = 1
    console.print(view)
    return result
