"""Rich views of node snapshots: panels (pure functions of a snapshot) and the live demo screen."""

from .app import DemoView, run_tui

__all__ = ["DemoView", "run_tui"]
