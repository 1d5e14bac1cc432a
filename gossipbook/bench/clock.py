"""Clock bounds on loopback, against injected truth and beside the same run's one-way trio floor.

Three node processes, ``time_source = "n1"``; n2 and n3 get an injected skew and drift
(``--clock-skew-ms`` / ``--clock-drift-ppm``), which their status reports (``injected_clock``), so
the true offset to n1 at any instant is known: ``-(skew + (t - t0) * drift)``. Every ``poll_s`` the
bench asks each node for its status and compares the offset it reports with the truth at the moment
the answer came back (the status is computed on arrival of the query; the drift moves the truth by
well under 1 µs in the round trip). The floor is ``bench.floor.udp_rtt("trio")`` / 2, measured after
the nodes stop: no bound built on trio UDP timestamps can honestly go below one one-way hop.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from ..config import load, write_private
from .procs import cluster_text, stop_procs


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def run_clock_bench(duration_s: float = 60.0, poll_s: float = 0.1, floor_n: int = 2000,
                    injected: dict[str, tuple[float, float]] | None = None) -> dict[str, Any]:
    """See the module docstring; returns the numbers (µs) and every violation found."""
    from ..cli.status import gather_status
    from .floor import udp_rtt

    injected = injected or {"n2": (30.0, 40.0), "n3": (-20.0, -25.0)}
    with tempfile.TemporaryDirectory(prefix="gb-clock-") as tmp:
        path = Path(tmp) / "cluster.toml"
        text = cluster_text(3).replace("[cluster]\n", '[cluster]\ntime_source = "n1"\n', 1)
        write_private(path, text)
        cfg = load(path)
        procs = []
        for nid in cfg.ids:
            skew, drift = injected.get(nid, (0.0, 0.0))
            extra = ["--clock-skew-ms", str(skew), "--clock-drift-ppm", str(drift)] if nid in injected else []
            procs.append(subprocess.Popen([sys.executable, "-m", "gossipbook", "node", "-c", str(path), "--id", nid,
                                           "--log-level", "warning", *extra],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        samples: list[dict[str, float]] = []
        statuses: dict[str, int] = {}
        try:
            deadline = time.monotonic() + 30
            while True:
                st = trio.run(gather_status, cfg, 1.0)
                if all(s["reachable"] and s.get("ready") for s in st):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"cluster not ready in 30 s: {st}")
                time.sleep(0.2)
            end = time.monotonic() + duration_s
            while time.monotonic() < end:
                st = trio.run(gather_status, cfg, 1.0)
                t = time.time_ns()
                for s in st:
                    inj, c = s.get("injected_clock"), s.get("clock") or {}
                    if not s["reachable"] or not inj:
                        continue
                    statuses[c.get("status", "?")] = statuses.get(c.get("status", "?"), 0) + 1
                    if c.get("bound_us") is None:
                        continue
                    truth_us = -(inj["skew_ns"] + (t - inj["t0_ns"]) * inj["drift_ppm"] / 1e6) / 1e3
                    samples.append({"node": s["id"], "error_us": c["offset_us"] - truth_us, "bound_us": c["bound_us"],
                                    "drift_ppm": c["drift_ppm"], "drift_true_ppm": -inj["drift_ppm"]})
                time.sleep(poll_s)
        finally:
            stop_procs(procs)
    floor = udp_rtt("trio", n=floor_n)
    one_way = {k[:3]: v / 2 for k, v in floor.items() if k in ("p50_us", "p99_us")}
    bounds = [x["bound_us"] for x in samples]
    errs = [abs(x["error_us"]) for x in samples]
    ratio = max((abs(x["error_us"]) / x["bound_us"] if x["bound_us"] else 0.0) for x in samples) if samples else 0.0
    return {
        "duration_s": duration_s, "samples": len(samples), "statuses": statuses,
        "violations": [x for x in samples if abs(x["error_us"]) > x["bound_us"]][:5],
        "bound_p50_us": _pct(bounds, 0.5), "bound_p99_us": _pct(bounds, 0.99), "bound_max_us": max(bounds, default=0),
        "error_p50_us": _pct(errs, 0.5), "error_p99_us": _pct(errs, 0.99), "error_max_us": max(errs, default=0),
        "max_error_over_bound": round(ratio, 4),
        "drift_error_ppm_max": max((abs(x["drift_ppm"] - x["drift_true_ppm"]) for x in samples), default=0),
        "floor_one_way_p50_us": one_way.get("p50"), "floor_one_way_p99_us": one_way.get("p99"),
        "bound_p50_over_floor": round(_pct(bounds, 0.5) / one_way["p50"], 2) if one_way.get("p50") else None,
    }
