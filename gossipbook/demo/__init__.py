"""``gossipbook demo``: real nodes on this machine, an order flow, a partition and a heal."""

from .scenario import DemoOptions, Scenario, drive, make_options, run_headless
from .snapshot import DemoResult, DemoSnapshot, LogEvent, NodeView

__all__ = ["DemoOptions", "DemoResult", "DemoSnapshot", "LogEvent", "NodeView", "Scenario", "drive",
           "make_options", "run_headless"]
