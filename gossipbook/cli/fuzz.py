"""``gossipbook fuzz``: keyed, structure-aware fuzzing of a real cluster on loopback."""

from __future__ import annotations

import argparse
import sys

from ..core.errors import UsageError
from .common import print_json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fuzz", help="send well-formed hostile frames (signed with the peer key) to a local cluster",
        description="Start a cluster of node processes on loopback, send N well-formed frames of every "
                    "message type signed with the peer key (client types with an account credential) whose "
                    "fields take boundary and random values, then check that every node is alive, answers, "
                    "acknowledges new orders within 2 s and that all converge to one digest. Exit 1 on a "
                    "crash, a stall or no convergence.")
    p.add_argument("--nodes", type=int, default=3, help="honest node processes (default 3)")
    p.add_argument("--frames", type=int, default=100_000, help="frames to send (default 100000)")
    p.add_argument("--seed", type=int, default=1, help="seed of the frames (default 1)")
    p.add_argument("--mode", choices=("eventual", "strong"), default="eventual", help="cluster mode (default eventual)")
    p.add_argument("--rate", type=float, default=20_000.0, help="frames per second at most (default 20000; 0: no limit)")
    p.add_argument("--settle", type=float, default=20.0,
                   help="seconds the nodes get after the frames to answer and take orders (default 20)")
    p.add_argument("--impersonate", action="store_true",
                   help="also send node-to-node frames under the honest nodes' ids (counters above theirs)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.nodes <= 16:
        raise UsageError("--nodes must be 1 to 16")
    if not 0 <= args.frames <= 100_000_000:
        raise UsageError("--frames must be 0 to 100000000")
    if args.rate < 0 or args.settle <= 0:
        raise UsageError("--rate must not be negative and --settle must be positive")
    from ..fuzz import fuzz

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    res = fuzz(args.nodes, args.frames, args.seed, args.mode, args.rate, args.settle, args.impersonate, progress)
    ok = res["crashes"] == 0 and res["stalls"] == 0 and res["converged"]
    if args.json:
        print_json(res)
    else:
        print(f"{res['frames']} frames ({args.mode}, seed {args.seed}) in {res['seconds']:.1f} s: "
              f"crashes {res['crashes']}, stalls {res['stalls']}, converged {res['converged']}")
        print("by type: " + ", ".join(f"{k} {v}" for k, v in res["by_type"].items()))
        print("dropped by the nodes: " + (", ".join(f"{k} {v}" for k, v in res["dropped"].items()) or "none"))
        for nid, c in res["crashed"].items():
            print(f"CRASH {nid} (exit {c['returncode']}):\n{c['log']}")
        for nid, why in res["stalled"].items():
            print(f"STALL {nid}: {why}")
        if not res["converged"]:
            print(f"NOT CONVERGED: {res['digests']}")
        print(f"node logs: {res.get('dir')}")
    return 0 if ok else 1
