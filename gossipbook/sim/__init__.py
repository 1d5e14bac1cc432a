"""The deterministic cluster simulator: real ``NodeCore``s on virtual time (docs/simulator.md).

One seed drives a PRNG that decides every latency, loss, partition, crash, pause and clock skew;
the same core the trio shell runs sits inside; the checker holds every run to DESIGN.md's
invariants; and a failing seed is one command to replay. No trio, no sockets, no threads, no wall
clock, no unseeded randomness.
"""

from .breaks import BREAKS, broken
from .checker import KINDS, Checker, Violation
from .clock import SEC, T0, NodeClock
from .cluster import SimConfig, Simulation
from .nemesis import FAULTS, FaultPlan, parse_faults, random_schedule, scripted
from .run import RunResult, replay_command, run_seed, summarize

__all__ = [
    "BREAKS", "FAULTS", "KINDS", "SEC", "T0", "Checker", "FaultPlan", "NodeClock", "RunResult", "SimConfig",
    "Simulation", "Violation", "broken", "parse_faults", "random_schedule", "replay_command", "run_seed",
    "scripted", "summarize",
]
