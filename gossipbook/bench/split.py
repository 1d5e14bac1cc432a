"""Where a node's CPU per op goes, split into per-instrument work and work shared by all instruments.

``python -m gossipbook.bench.split --nodes 4 --ops 3000`` runs ``bench throughput`` with every node
under cProfile (``GOSSIPBOOK_BENCH_PROFILE``) and profiles the single-process floor (decode +
authenticate + fold, no sockets), then sums each profile's *self* time by the kind of work
(``KINDS``), leaving out the idle wait (epoll), start-up (imports) and the benchmark's own order
generator, trace file and status polls. A builtin with no module of
its own (``len``, ``dict.get``) counts for the functions that called it, in proportion.

Why: issue 21 asks whether per-instrument fold work can move to separate processes on one host.
How much it can gain is bounded by the share that really is per instrument (Amdahl): the book's
matching, and the replica's bookkeeping per op (which would split with the op-set if every
instrument group kept its own). The rest (receive, decode, authenticate, dedupe, HLC, gossip,
encode, send, timers) happens once per datagram or per node, whichever instrument an op is for.
Which build folds (compiled with mypyc, or pure Python: ``GOSSIPBOOK_PURE=1``) is reported,
since the compiled build shrinks exactly the per-instrument share. cProfile sees a compiled
module's methods as builtins: those of its classes are counted for their module's kind; its
module-level functions still count for their callers.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import re
import tempfile
from pathlib import Path
from typing import Any

#: kind -> path fragments of its modules (first match wins; checked in this order)
KINDS: dict[str, tuple[str, ...]] = {
    "book": ("gossipbook/core/book.py", "gossipbook/core/fills.py", "gossipbook/core/instrument.py",
             "sortedcontainers/"),
    "fold": ("gossipbook/core/replica.py", "gossipbook/core/ops.py", "gossipbook/core/venuecheck.py"),
    "wire": ("gossipbook/core/wire.py", "msgspec", "msgpack", "/hmac.py", "/hashlib.py"),
    "protocol": ("gossipbook/core/node.py", "gossipbook/core/gossip.py", "gossipbook/core/hlc.py",
                 "gossipbook/core/membership.py", "gossipbook/core/clock", "gossipbook/core/config_epoch.py"),
    "features": ("gossipbook/core/fairness.py", "gossipbook/core/risk", "gossipbook/node/audit.py",
                 "gossipbook/core/feeds.py"),
    "io": ("gossipbook/node/runner.py", "gossipbook/node/transport.py", "gossipbook/node/metrics.py",
           "/trio/", "/outcome/", "/sniffio/", "selectors.py", "socket.py"),
}
#: per-instrument kinds: they would move with their instruments to another process
PER_INSTRUMENT = ("book", "fold")
#: builtins whose time is their own kind, whoever calls them
BUILTIN_KINDS = (("poll", "idle"), ("sendto", "io"), ("recv", "io"))
#: start-up (imports, class creation, config parsing): not per op, left out of the shares
STARTUP = ("<frozen", "importlib", "tomllib", "_distutils", "setuptools", "/dataclasses.py", "/typing.py",
           "/enum.py", "/attr/", "/re/", "/argparse.py", "/inspect.py", "/abc.py", "/collections/__init__.py")
STARTUP_BUILTINS = ("compile", "builtins.exec", "marshal", "__build_class__", "_imp.", "open_code", "posix.stat")
#: the benchmark's own work (its order generator, the trace file written on exit): left out too
BENCH = ("gossipbook/workload/", "/random.py", "/json/")
#: status queries (the bench polls them while nodes start; a status digests every book): left out
PROBE = ("digest", "status", "_query")


def _compiled_classes() -> dict[str, str]:
    """Class name -> kind, for the classes of the modules a compiled build compiles: cProfile shows
    their methods as builtins (``<method 'receive' of 'Replica' objects>``), which would otherwise
    count for their callers and hide the fold."""
    from .._compiled import COMPILED, _source

    out: dict[str, str] = {}
    for mod in COMPILED:
        kind = next((k for k, frags in KINDS.items() if any(_source(mod).endswith(f.rpartition("/")[2]) and
                                                                 f.startswith("gossipbook/") for f in frags)), "other")
        try:
            text = Path(_source(mod)).read_text()
        except OSError:
            continue
        out.update((m.group(1), kind) for m in re.finditer(r"^class (\w+)", text, re.M))
    return out


_CLASSES: dict[str, str] | None = None


def _kind_of(func: tuple[str, int, str]) -> str | None:
    """The kind of a profiled function, or None for a builtin that counts for its callers."""
    global _CLASSES
    path, _line, name = func
    if path == "~":
        if any(f in name for f in STARTUP_BUILTINS):
            return "startup"
        m = re.search(r"of '(\w+)' objects", name)
        if m:
            if _CLASSES is None:
                _CLASSES = _compiled_classes()
            if m.group(1) in _CLASSES:
                return _CLASSES[m.group(1)]
        for frag, kind in BUILTIN_KINDS:
            if frag in name and (kind != "idle" or "epoll" in name or "select" in name):
                return kind
        return None
    if any(s in path for s in STARTUP):
        return "startup"
    if any(s in path for s in BENCH) or ("gossipbook/core/" in path and name in PROBE):
        return "bench"
    for kind, frags in KINDS.items():
        if any(f in path for f in frags):
            return kind
    return "other"


def split(stats: pstats.Stats) -> dict[str, float]:
    """Self seconds per kind (and ``idle``, ``startup``) over one profile."""
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    out: dict[str, float] = {}
    for func, (_cc, _nc, tt, _ct, callers) in raw.items():
        kind = _kind_of(func)
        if kind is not None:
            out[kind] = out.get(kind, 0.0) + tt
            continue
        # a builtin: its time goes to its callers' kinds, in proportion to the time under each
        edges = {c: e[2] for c, e in callers.items()} if callers else {}
        total = sum(edges.values())
        if not total:
            out["other"] = out.get("other", 0.0) + tt
            continue
        for caller, t in edges.items():
            ck = _kind_of(caller) or "other"
            out[ck] = out.get(ck, 0.0) + tt * t / total
    return out


def shares(seconds: dict[str, float]) -> dict[str, Any]:
    """Busy seconds (no idle, start-up or bench generator), each kind's share of them, the per-instrument share
    ``p`` and Amdahl's speed-up ``1 / ((1 - p) + p / C)`` for a process per core sharing the rest."""
    busy = {k: v for k, v in seconds.items() if k not in ("idle", "startup", "bench")}
    total = sum(busy.values()) or 1e-9
    p = sum(busy.get(k, 0.0) for k in PER_INSTRUMENT) / total
    return {"busy_s": round(total, 3), "share": {k: round(v / total, 3) for k, v in sorted(busy.items())},
            "per_instrument": round(p, 3),
            "amdahl": {f"C={c}": round(1 / ((1 - p) + p / c), 2) for c in (2, 4, 8, 16)},
            "amdahl_limit": round(1 / (1 - p), 2) if p < 1 else None}


def profile_nodes(nodes: int, per_node: int) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """``bench throughput`` with every node under cProfile; its result and each node's split."""
    from .throughput import run_throughput

    with tempfile.TemporaryDirectory(prefix="gossipbook-split-") as d:
        old = os.environ.get("GOSSIPBOOK_BENCH_PROFILE")
        os.environ["GOSSIPBOOK_BENCH_PROFILE"] = d
        try:
            res = run_throughput(nodes, per_node)
        finally:
            if old is None:
                del os.environ["GOSSIPBOOK_BENCH_PROFILE"]
            else:
                os.environ["GOSSIPBOOK_BENCH_PROFILE"] = old
        return res, [split(pstats.Stats(str(f))) for f in sorted(Path(d).glob("*.prof"))]


def _origins(ops: list[Any]) -> list[str]:
    """The history's origins as members: a replica drops (and counts as ``non_member_ops``) every
    op of an origin it does not know, and would fold nothing."""
    return sorted({o.origin for o in ops})


def profile_floor(n_ops: int = 20_000) -> dict[str, float]:
    """The throughput floor's work (decode + authenticate + fold the same frames) under cProfile."""
    from ..core.replica import Replica
    from ..core.wire import decode, encode_ops
    from ..workload.history import make_history
    from .throughput import KEY

    ops = sorted(make_history(n_ops, origins=4, seed=3, deliver_every=1))
    frames = encode_ops(ops, "bench", 1, KEY)
    prof = cProfile.Profile()
    prof.enable()
    r = Replica("floor", members=_origins(ops))
    for f in frames:
        r.receive(decode(f, KEY).msg.ops, 1 << 62)
    prof.disable()
    return split(pstats.Stats(prof))


def timed_floor(n_ops: int = 20_000, rounds: int = 5) -> dict[str, float]:
    """The floor's two parts timed without a profiler (cProfile's cost per call inflates the
    call-heavy fold more than the decode's few C calls): best-of-``rounds`` µs per op of decode +
    authenticate, and of folding the decoded ops into a fresh replica."""
    import time

    from ..core.replica import Replica
    from ..core.wire import decode, encode_ops
    from ..node.gctune import tuned_gc
    from ..workload.history import make_history
    from .throughput import KEY

    ops = sorted(make_history(n_ops, origins=4, seed=3, deliver_every=1))
    frames = encode_ops(ops, "bench", 1, KEY)
    best_dec = best_fold = float("inf")
    with tuned_gc():
        for _ in range(rounds):
            t0 = time.perf_counter()
            batches = [decode(f, KEY).msg.ops for f in frames]
            t1 = time.perf_counter()
            r = Replica("floor", members=_origins(ops))
            for b in batches:
                r.receive(b, 1 << 62)
            t2 = time.perf_counter()
            assert r.counters["ops_applied"] == len(ops), r.counters  # a floor that folds nothing is no floor
            best_dec, best_fold = min(best_dec, t1 - t0), min(best_fold, t2 - t1)
    return {"decode_us_per_op": round(best_dec * 1e6 / len(ops), 2), "fold_us_per_op": round(best_fold * 1e6 / len(ops), 2)}


def run(nodes: int = 4, per_node: int = 3000) -> dict[str, Any]:
    from .._compiled import status

    res, per = profile_nodes(nodes, per_node)
    summed: dict[str, float] = {}
    for s in per:
        for k, v in s.items():
            summed[k] = summed.get(k, 0.0) + v
    return {"build": status(), "throughput": res, "nodes": shares(summed), "floor": shares(profile_floor()),
            "floor_timed": timed_floor()}


def table(out: dict[str, Any]) -> list[str]:
    b = out["build"]
    lines = [f"build: {'compiled' if b['compiled'] else 'pure Python'} ({b['build']})",
             f"throughput (under cProfile): {out['throughput']['ops_per_s']} ops/s",
             f"floor without a profiler: decode + auth {out['floor_timed']['decode_us_per_op']} us/op, "
             f"fold {out['floor_timed']['fold_us_per_op']} us/op"]
    for name in ("nodes", "floor"):
        s = out[name]
        parts = ", ".join(f"{k} {v:.0%}" for k, v in s["share"].items())
        amd = ", ".join(f"{c} {x}x" for c, x in s["amdahl"].items())
        lines.append(f"{name}: busy {s['busy_s']} s; {parts}; per-instrument {s['per_instrument']:.0%} -> "
                     f"Amdahl {amd} (limit {s['amdahl_limit']}x)")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gossipbook.bench.split", description=__doc__.split("\n")[0])
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--ops", type=int, default=3000, help="orders each node stamps (default 3000)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    if not 2 <= a.nodes <= 8 or not 1 <= a.ops <= 1_000_000:
        raise SystemExit("--nodes 2-8, --ops 1-1000000")
    out = run(a.nodes, a.ops)
    print(json.dumps(out, indent=2) if a.json else "\n".join(table(out)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
