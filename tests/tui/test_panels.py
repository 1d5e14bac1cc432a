"""Every panel of the demo screen, rendered from fabricated snapshots to a 100-column console."""

from __future__ import annotations

from dataclasses import replace
from io import StringIO

import pytest
from rich.console import Console

from gossipbook.demo.snapshot import LogEvent
from gossipbook.tui import panels
from gossipbook.tui.app import DemoView

from .fixtures import A, B, finished, partitioned, result


def render(obj: object, width: int = 100, height: int | None = None) -> str:
    c = Console(file=StringIO(), width=width, height=height or 30, color_system=None, force_terminal=False)
    c.print(obj)
    return c.file.getvalue()  # type: ignore[attr-defined]


def test_header_says_what_is_happening_first() -> None:
    s = partitioned()
    out = render(panels.header(s), width=60)
    assert "PARTITIONED n1 n2 | n3 n4" in out  # survives a narrow terminal: it comes first
    out = render(panels.header(s))
    assert "eventual" in out and "4 nodes" in out and "5.5/16s" in out
    assert "CONVERGED in 254 ms" in render(panels.header(finished()))
    bad = replace(finished(), result=result(converged=False, digests={"n1": A, "n2": A, "n3": B, "n4": B}))
    assert "DIGESTS DIFFER" in render(panels.header(bad))


def test_node_panel_shows_every_field() -> None:
    s = partitioned()
    v = s.nodes[0]
    out = render(panels.node_panel(v, "green"), width=26)
    for needle in ("n1", ":40001", "sees 1/3", A[:10], "ops 152", "lag 32", "✓27", "~7", "↺0",
                   "2.3s behind", "-38µs", "rtt 261µs", "±45µs -25.0ppm"):
        assert needle in out, needle
    ok = replace(v, members={m: "alive" for m in v.members}, watermark_age_ms=None)
    out = render(panels.node_panel(ok, "green"), width=26)
    assert " ok" in out and "none yet" in out
    assert "syncing" in render(panels.node_panel(replace(v, ready=False), "green"), width=26)
    assert "clock!" in render(panels.node_panel(replace(v, clock_in_sync=False), "green"), width=26)
    assert "stopped" in render(panels.node_panel(replace(v, stopped=True), "green"), width=26)


def test_node_panel_shows_the_clock_bound_drift_and_the_gate() -> None:
    """Issue 18: each node's error bound and drift, and a refusing clock named as the node's state."""
    v = partitioned().nodes[0]
    assert panels.fmt_clock(v) == ("±45µs -25.0ppm", "green")
    assert panels.fmt_clock(replace(v, clock_status="free-running", clock_bound_us=1184.0)) == ("±1.2ms -25.0ppm", "yellow")
    over = replace(v, clock_bound_us=12_000.0, clock_takes_orders=False, ready=False)
    assert panels.fmt_clock(over) == ("±12.0ms -25.0ppm", "bold red")
    out = render(panels.node_panel(over, "green"), width=26)
    assert "clock ±" in out and "±12.0ms" in out, out  # not "syncing": it is the clock that refuses
    unsynced = replace(v, clock_status="unsynced", clock_bound_us=None, clock_takes_orders=False, ready=False)
    out = render(panels.node_panel(unsynced, "green"), width=26)
    assert "syncing" in out and "± unsynced" in out, out
    assert "bound —" in render(panels.node_panel(replace(v, clock_status=None), "green"), width=26)
    table = render(panels.nodes_table(partitioned(8)), width=100)
    assert "±clock" in table and table.count("±45µs") == 8, table


def test_fairness_line_adds_up_every_node() -> None:
    s = partitioned()  # 4 nodes, each placed 150 orders, 3 of them coin tosses
    assert panels.fairness_line(s).plain == "coin tosses 2.0% of 600 orders"
    v = DemoView()
    v.update(s)
    assert "coin tosses 2.0% of 600 orders" in render(v, 100, 30)
    none = replace(s, nodes=tuple(replace(n, fair_orders=0, fair_tied=0) for n in s.nodes))
    assert panels.fairness_line(none).plain == "coin tosses: no orders yet"


def test_equal_digests_share_a_colour_and_the_majority_is_green() -> None:
    s = partitioned()
    colours = panels.digest_colours(s.nodes)
    assert colours[A] != colours[B]
    assert colours[A] == "green"  # a 2|2 tie: the first node's digest wins
    three = replace(s, nodes=(replace(s.nodes[0], digest=B),) + s.nodes[1:])
    assert panels.digest_colours(three.nodes)[B] == "green"  # B is on three nodes now
    assert set(panels.digest_colours(finished().nodes).values()) == {"green"}


def test_link_matrix_draws_the_partition() -> None:
    out = render(panels.link_matrix(partitioned()), width=30)
    rows = {line.split()[1]: line for line in out.splitlines() if line.startswith("│ n")}
    assert rows["n1"].count("✕") == 2 and rows["n3"].count("✕") == 2
    assert rows["n1"].split()[2:6] == ["·", "●", "✕", "✕"]
    assert "CUT n1 n2 | n3 n4" in out
    healed = replace(finished(), t=11.0)
    out = render(panels.link_matrix(healed), width=30)
    assert "✕" not in out.split("✕cut")[0] and "healed at 10s" in out
    suspect = replace(finished(), nodes=(replace(finished().nodes[0], members={"n1": "alive", "n2": "suspect",
                                                                              "n3": "dead", "n4": "alive"}),)
                      + finished().nodes[1:])
    row = next(line for line in render(panels.link_matrix(suspect), width=30).splitlines() if line.startswith("│ n1"))
    assert row.split()[2:6] == ["·", "?", "†", "●"]


def test_ladders_show_prices_side_by_side() -> None:
    out = render(panels.ladders(partitioned()), width=72)
    lines = out.splitlines()
    mid = next(i for i, line in enumerate(lines) if "spr" in line)
    best_ask, best_bid = lines[mid - 1].split("│"), lines[mid + 1].split("│")
    cells = [" ".join(c.split()) for c in best_ask if c.strip()]
    assert cells == ["100.05 1", "100.05 1", "100.02 15", "100.02 15"]  # the sides' best asks differ
    assert [" ".join(c.split()) for c in best_bid if c.strip()] == ["100.02 7", "100.02 7", "99.97 4", "99.97 4"]
    assert lines[mid].count("spr 0.03") == 2 and lines[mid].count("spr 0.05") == 2
    assert lines[mid - 3].count("100.07") == 2  # worst of three asks on top
    empty = replace(partitioned().nodes[0], bids=(), asks=())
    assert "one-sided" in render(panels.ladder(empty, "green", partitioned().tick_size), width=16)


def test_event_log_keeps_the_newest_lines_that_fit() -> None:
    s = partitioned()
    out = render(panels.event_log(s))
    for text in ("partition: n1 n2 | n3 n4", "replicas diverged", "n1, n2 see n3 suspect", "n1, n2 see n3 dead"):
        assert text in out
    many = replace(s, events=tuple(LogEvent(i / 10, "info", f"line {i}") for i in range(40)))
    out = render(DemoViewSlot(panels.event_log(many), height=6))
    assert "line 39" in out and "line 36" in out and "line 35" not in out


class DemoViewSlot:
    """A renderable at a fixed height, as a layout slot gives it."""

    def __init__(self, inner: object, height: int) -> None:
        self.inner, self.height = inner, height

    def __rich_console__(self, console: Console, options):  # type: ignore[no-untyped-def]
        yield from console.render(self.inner, options.update(height=self.height))


def test_divergence_timeline() -> None:
    s = partitioned()
    spark, window = panels.sparkline(s, 32)
    assert "▁" in spark.plain and "▃" in spark.plain
    assert spark.plain.index("▃") > spark.plain.index("▁")
    assert "━" in window.plain and "▲" in window.plain
    # window starts where the partition starts (3 s of 16 s)
    assert window.plain.index("━") == int(3 / 16 * 32)
    out = render(panels.timeline(s), width=40)
    assert "now 2 digests" in out and "orders 440" in out and "repaired 1" in out
    # an op in flight at one sample is lag, not divergence: a bucket shows its least divergence
    blip = replace(s, timeline=((0.0, 1), (0.01, 2), (0.02, 1)), partition_at=None, heal_at=None)
    assert "▃" not in panels.sparkline(blip, 32)[0].plain


def test_summary_converged() -> None:
    out = render(panels.summary(result()))
    for needle in ("CONVERGED", "all 4 digests equal", "254 ms", "diverged in partition yes",
                   "451 pushed", "612 repaired (609 after heal)", "470 sent", "258 revised"):
        assert needle in out, needle


def test_summary_says_loudly_when_digests_differ() -> None:
    r = result(converged=False, convergence_ms_after_heal=None, digests={"n1": A, "n2": A, "n3": B, "n4": B})
    out = render(panels.summary(r))
    assert "DIGESTS DIFFER" in out and "CONVERGED" not in out
    assert f"n3 {B[:10]}" in out and "not within the run" in out


def test_summary_after_ctrl_c() -> None:
    out = render(panels.summary(result(interrupted=True, converged=False)))
    assert "INTERRUPTED" in out and "CONVERGED" not in out and "all 4 digests equal" in out


def test_whole_screen_fits_100x30() -> None:
    for s in (partitioned(), finished()):
        v = DemoView()
        v.update(s)
        out = render(v, 100, 30)
        lines = out.splitlines()
        assert len(lines) == 29 and all(len(line) <= 100 for line in lines)
        for nid in ("n1", "n2", "n3", "n4"):
            assert f"{nid} :4000{nid[1]}" in out  # node panels
        assert "links: row sees col" in out and "100.0" in out
    v = DemoView()
    v.update(finished())
    assert "CONVERGED" in render(v, 100, 30)


@pytest.mark.parametrize("size", [(80, 24), (60, 18), (40, 12), (100, 10), (30, 6)])
def test_screen_degrades_on_small_terminals(size: tuple[int, int]) -> None:
    w, h = size
    for s in (partitioned(), finished(), partitioned(8)):
        v = DemoView()
        v.update(s)
        out = render(v, w, h)
        lines = out.splitlines()
        assert len(lines) <= h - 1 and all(len(line) <= w for line in lines)
        if h >= 12:
            for nid in (n.id for n in s.nodes[:4]):
                assert nid in out  # every node is still listed, as panels or as a table


def test_eight_nodes_fall_back_to_a_table_at_100_columns() -> None:
    v = DemoView()
    v.update(partitioned(8))
    out = render(v, 100, 30)
    assert "node" in out and "state" in out  # the table header
    assert all(f"n{i}" in out for i in range(1, 9))


def test_view_before_the_first_snapshot() -> None:
    assert "starting nodes" in render(DemoView(), 100, 30)
