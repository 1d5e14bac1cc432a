"""What the demo publishes ~10 times a second, and what its views read: plain frozen data.

The scenario (``scenario.py``) is the only writer; the TUI (``gossipbook/tui``), the headless
printer and the tests are readers. Nothing here knows about trio, sockets or rich, so a view can be
tested from a fabricated snapshot and the scenario can run with no view at all.

Rules that hold:
- A snapshot is immutable and self-contained: a view never reaches back into a node.
- Times are seconds since the scenario's start (``t``), except ``watermark_age_ms``.
- Prices and quantities are the core's integers (ticks, lots); ``tick_size`` turns ticks into a
  decimal at display time only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

#: event kinds the log knows how to draw
EVENT_KINDS = ("info", "partition", "heal", "suspect", "dead", "alive", "left", "revised", "converged",
               "diverged", "error")


@dataclass(frozen=True, slots=True)
class NodeView:
    """One node as the views see it."""

    id: str
    port: int
    group: int | None  # index of its partition side in ``DemoSnapshot.groups`` (None: no split)
    ready: bool
    accepting: bool
    clock_in_sync: bool
    digest: str
    ops: int
    lag: int  # ops this replica lacks against the union of every replica's version vector
    watermark_age_ms: float | None  # how far the stable watermark trails this node's clock (None: none yet)
    trades_final: int
    trades_provisional: int
    revised: int  # trades this replica revised by replay, so far
    members: dict[str, str]  # this node's view of every member (itself included): alive/suspect/dead/left
    clock_offset_us: float | None  # the largest |peer offset| among its estimates, signed
    rtt_us: float | None  # the median RTT of its peer estimates
    bids: tuple[tuple[int, int], ...] = ()  # (price ticks, lots), best first
    asks: tuple[tuple[int, int], ...] = ()
    orders: int = 0  # client orders the demo sent to this node
    stopped: bool = False
    # this node's clock against the cluster's time reference (status.clock; None: not reported,
    # e.g. strong mode): status, error bound, measured drift, and whether it takes orders for it
    clock_status: str | None = None
    clock_bound_us: float | None = None
    clock_drift_ppm: float | None = None
    clock_takes_orders: bool = True
    # orders placed by the fairness meter, and those whose time priority was a coin toss
    fair_orders: int = 0
    fair_tied: int = 0


def clock_fields(st: dict[str, Any]) -> dict[str, Any]:
    """``NodeView``'s clock and fairness fields from a node's status dict (the demo and top share it)."""
    c = st.get("clock") or {}
    f = st.get("fairness") or {}
    return {"clock_status": c.get("status"), "clock_bound_us": c.get("bound_us"), "clock_drift_ppm": c.get("drift_ppm"),
            "clock_takes_orders": bool(c.get("takes_orders", True)),
            "fair_orders": int(f.get("orders", 0)), "fair_tied": int(f.get("tied_orders", 0))}


@dataclass(frozen=True, slots=True)
class LogEvent:
    t: float
    kind: str  # one of EVENT_KINDS
    text: str


@dataclass(frozen=True, slots=True)
class DemoResult:
    """The end of a run: what the summary and ``--json`` report."""

    nodes: int
    node_ids: list[str]
    mode: str
    seed: int
    partitioned: bool  # a partition was applied during the run
    split: list[list[str]] | None
    diverged_during_partition: bool
    max_distinct_digests: int
    converged: bool  # every replica ended with the same digest and op-set (and re-converged after the heal)
    convergence_ms_after_heal: float | None
    digests: dict[str, str]
    ops: dict[str, int]
    orders: dict[str, int]  # sent / acked / rejected / errors
    trades: int
    trades_final: int
    revised_trades: int
    revised_trades_by_node: dict[str, int]
    ops_exchanged: dict[str, int]  # pushed / repaired / repaired_after_heal / datagrams
    elapsed_s: float
    interrupted: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "nodes": self.nodes, "node_ids": self.node_ids, "mode": self.mode, "seed": self.seed,
            "partitioned": self.partitioned, "split": self.split,
            "diverged_during_partition": self.diverged_during_partition,
            "max_distinct_digests": self.max_distinct_digests, "converged": self.converged,
            "convergence_ms_after_heal": self.convergence_ms_after_heal, "digests": self.digests,
            "all_digests_equal": self.all_equal, "ops": self.ops, "orders": self.orders, "trades": self.trades,
            "trades_final": self.trades_final, "revised_trades": self.revised_trades,
            "revised_trades_by_node": self.revised_trades_by_node, "ops_exchanged": self.ops_exchanged,
            "elapsed_s": self.elapsed_s, "interrupted": self.interrupted,
        }

    @property
    def all_equal(self) -> bool:
        return len(set(self.digests.values())) == 1


@dataclass(frozen=True, slots=True)
class DemoSnapshot:
    """Everything a frame shows."""

    t: float
    duration: float
    phase: str  # starting / running / partitioned / healed / converged / draining / done / interrupted
    mode: str
    seed: int
    rate: float
    nodes: tuple[NodeView, ...]
    groups: tuple[tuple[str, ...], ...] | None  # the split (even before or after it is applied)
    partitioned: bool  # links are cut right now
    partition_at: float | None
    heal_at: float | None
    blocked: frozenset[tuple[str, str]] = frozenset()  # (from, to) links cut right now
    events: tuple[LogEvent, ...] = ()
    timeline: tuple[tuple[float, int], ...] = ()  # (t, distinct digests) samples
    converged_ms: float | None = None
    orders: dict[str, int] = field(default_factory=dict)
    trades: int = 0
    revised: int = 0
    ops_pushed: int = 0
    ops_repaired: int = 0
    tick_size: Decimal = Decimal("0.01")
    symbol: str = ""
    config_path: str = ""
    result: DemoResult | None = None

    def distinct_digests(self) -> int:
        return len({n.digest for n in self.nodes})
