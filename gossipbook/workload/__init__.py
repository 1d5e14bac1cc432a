"""Seeded order flows shared by the benchmarks, the simulator and the load command."""
