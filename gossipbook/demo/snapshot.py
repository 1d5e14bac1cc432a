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
               "diverged", "error", "member")


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
    # risk limits as this node holds them (``risk_fields``): how many (None: not asked, only the
    # status's limits near their end are known), how many are near their end here, the tightest
    # (what, this node's headroom as a % of the limit), the accounts the kill switch disabled, and
    # orders this node refused for risk (code 14)
    risk_limits: int | None = None
    risk_near: int = 0
    risk_tightest: tuple[str, float] | None = None
    risk_disabled: tuple[str, ...] = ()
    risk_refused: int = 0
    # run-time membership (status.config): the configuration epoch this node holds and its own role
    # in it (voter / learner / leaving / removed)
    epoch: int = 0
    role: str = "voter"
    #: killed for good by the demo (``--replace``): its process is gone, what it shows is frozen
    down: bool = False


def clock_fields(st: dict[str, Any]) -> dict[str, Any]:
    """``NodeView``'s clock, fairness and risk fields from a node's status dict (the demo and top
    share it; risk: see ``risk_fields``)."""
    c = st.get("clock") or {}
    f = st.get("fairness") or {}
    conf = st.get("config") or {}
    return {"epoch": int(conf.get("epoch", 0)), "role": str((conf.get("roles") or {}).get(st.get("id"), "voter")),
            "clock_status": c.get("status"), "clock_bound_us": c.get("bound_us"), "clock_drift_ppm": c.get("drift_ppm"),
            "clock_takes_orders": bool(c.get("takes_orders", True)),
            "fair_orders": int(f.get("orders", 0)), "fair_tied": int(f.get("tied_orders", 0)), **risk_fields(st)}


def _pct(part: Any, whole: Any) -> float | None:
    if type(part) is not int or type(whole) is not int or whole <= 0:
        return None
    return max(0.0, 100.0 * part / whole)


def risk_fields(st: dict[str, Any]) -> dict[str, Any]:
    """``NodeView``'s risk fields from a node's status dict. Status carries only the limits near
    their end at that node (``risk``: headroom under 10% of the limit) and the refusal counters;
    ``gossipbook top`` adds the node's answer to the ``risk`` query as ``risk_query``, from which
    every limit and the disabled accounts are counted. Malformed parts count as absent (a view
    never fails on what a node sent)."""
    counters = st.get("counters") or {}
    refused = sum(v for k, v in counters.items() if isinstance(k, str) and k.startswith("risk_refused")
                  and type(v) is int)
    near = st.get("risk") if isinstance(st.get("risk"), list) else []
    tight: tuple[str, float] | None = None

    def consider(row: Any, account: str, free: Any) -> None:
        nonlocal tight
        if not isinstance(row, dict):
            return
        pct = _pct(free, row.get("limit"))
        if pct is not None and (tight is None or pct < tight[1]):
            tight = (f"{account} {row.get('limit_kind', '?')}" + (f" {row['symbol']}" if row.get("symbol") else ""),
                     pct)

    for row in near:
        if isinstance(row, dict):
            consider(row, str(row.get("account", "?")), row.get("headroom_here"))
    q = st.get("risk_query")
    limits: int | None = None
    disabled: list[str] = []
    if isinstance(q, dict) and isinstance(q.get("accounts"), dict):
        limits = 0
        for acct, a in q["accounts"].items():
            if not isinstance(a, dict):
                continue
            if a.get("disabled") is True:
                disabled.append(str(acct))
            rows = a.get("limits") if isinstance(a.get("limits"), list) else []
            limits += len(rows)
            for row in rows:
                if isinstance(row, dict):  # eventual: this node's own headroom; strong: the exact room left
                    free = row.get("headroom_here") if "headroom_here" in row else (
                        row["limit"] - row["used"] if type(row.get("limit")) is int and type(row.get("used")) is int
                        else None)
                    consider(row, str(acct), free)
    return {"risk_limits": limits, "risk_near": len(near), "risk_tightest": tight,
            "risk_disabled": tuple(sorted(disabled)), "risk_refused": refused}


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
    #: ``--replace``: what happened to the membership (``Scenario.replace_facts``): the killed and the
    #: added node, the epoch and roles every remaining node holds, the fence, the time from the
    #: removal until the trades provisional then were final everywhere, and the new node's catch-up
    replaced: dict[str, Any] | None = None

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
            **({"replace": self.replaced} if self.replaced is not None else {}),
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
        """Among running nodes (a killed node's digest stays where it died)."""
        return len({n.digest for n in self.nodes if not n.down})
