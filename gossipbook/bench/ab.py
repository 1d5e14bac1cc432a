"""Before/after on a noisy machine: run one benchmark on several git revisions, alternating them
round by round (``A B A B …``), so that a slow minute hurts every revision alike; print each
revision's samples and median. Every "before → after" in docs/performance.md was measured this way.

    python -m gossipbook.bench.ab --what convergence --size 100000 --rounds 3 7257417 HEAD

Each revision is cloned from this repository into a temporary directory and run with the current
interpreter (same dependencies), one benchmark per process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

#: what -> (code printing one JSON object, the key whose median is reported)
BENCHES = {
    "convergence": ("from gossipbook.bench.convergence import run_convergence as f; r = f({size})", "convergence_s"),
    "sync": ("from gossipbook.bench.sync import run_sync as f; r = f({size}, modes=('eventual',))['eventual']",
             "p50_us"),
    "throughput": ("from gossipbook.bench.throughput import run_throughput as f; r = f(4, {size})", "ops_per_s"),
}
SIZES = {"convergence": 100_000, "sync": 500, "throughput": 3_000}


def _checkout(repo: Path, rev: str, into: Path) -> Path:
    d = into / rev.replace("/", "_")
    subprocess.run(["git", "clone", "-q", str(repo), str(d)], check=True)
    subprocess.run(["git", "-C", str(d), "checkout", "-q", rev], check=True)
    return d


def run(what: str, revs: list[str], rounds: int, size: int, repo: Path) -> dict[str, Any]:
    code, key = BENCHES[what]
    snippet = f"import json; {code.format(size=size)}; print(json.dumps(r))"
    samples: dict[str, list[dict[str, Any]]] = {r: [] for r in revs}
    with tempfile.TemporaryDirectory(prefix="gossipbook-ab-") as tmp:
        dirs = {r: _checkout(repo, r, Path(tmp)) for r in revs}
        for i in range(rounds):
            for r in revs:
                p = subprocess.run([sys.executable, "-c", snippet], cwd=dirs[r], capture_output=True, text=True,
                                   env={"PYTHONPATH": str(dirs[r]), "PATH": "/usr/bin:/bin"}, timeout=600)
                lines = p.stdout.strip().splitlines()
                res = json.loads(lines[-1]) if p.returncode == 0 and lines else {"error": p.stderr[-500:]}
                samples[r].append(res)
                print(f"round {i + 1} {r}: {res.get(key, res.get('error'))}", file=sys.stderr, flush=True)
    out: dict[str, Any] = {"what": what, "size": size, "key": key, "rounds": rounds, "revisions": {}}
    for r, rs in samples.items():
        vals = [x[key] for x in rs if isinstance(x.get(key), int | float)]
        out["revisions"][r] = {"median": statistics.median(vals) if vals else None, "samples": vals,
                               "errors": sum(1 for x in rs if "error" in x), "runs": rs}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gossipbook.bench.ab", description=__doc__.split("\n\n")[0])
    p.add_argument("revisions", nargs="+", help="git revisions to compare (e.g. a commit and HEAD)")
    p.add_argument("--what", choices=sorted(BENCHES), default="convergence", help="benchmark (default convergence)")
    p.add_argument("--size", type=int, default=None, help="backlog / orders / ops per node (default per benchmark)")
    p.add_argument("--rounds", type=int, default=3, help="rounds; each runs every revision once (default 3)")
    p.add_argument("--json", action="store_true", help="print every run as JSON")
    args = p.parse_args(argv)
    if args.rounds < 1 or (args.size is not None and args.size < 1):
        p.error("--rounds and --size must be positive")
    top = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True)
    if top.returncode != 0:
        p.error("run it inside the gossipbook git repository")
    try:
        res = run(args.what, args.revisions, args.rounds, args.size or SIZES[args.what], Path(top.stdout.strip()))
    except subprocess.CalledProcessError as e:
        p.error(f"cannot check out a revision: {' '.join(map(str, e.cmd))}")
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        for r, v in res["revisions"].items():
            print(f"{r:>12}  median {res['key']} {v['median']}  samples {v['samples']}"
                  + (f"  ({v['errors']} failed)" if v["errors"] else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
