"""``gossipbook node``: run one node until SIGINT / SIGTERM."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

import trio

from .common import add_config, config


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("node", help="run one node of a cluster until stopped",
                       description="Run one node: a UDP socket at its configured address, gossiping with its "
                                   "peers. Logs one line per event on stderr; stop with Ctrl-C or SIGTERM "
                                   "(it announces a graceful leave); SIGHUP re-reads the peer keyring and the "
                                   "[accounts] of the config (rotate keys, add or revoke accounts without a "
                                   "restart).")
    add_config(p)
    p.add_argument("--id", required=True, help="this node's id in the config (e.g. n1)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                   help="log verbosity (default info)")
    p.add_argument("--metrics-port", type=int, default=None,
                   help="serve Prometheus metrics on this TCP port (127.0.0.1)")
    p.add_argument("--data-dir", default=None, help="override the node's data_dir from the config")
    p.add_argument("--seed", type=int, default=None, help="seed the node's randomness (tests)")
    p.add_argument("--join", action="store_true",
                   help="a node added at run time (gossipbook cluster add-node): take orders only once it holds "
                        "its own add op (the same as join = true on its [[nodes]] entry)")
    g = p.add_argument_group("test-only fault injection")
    g.add_argument("--fault-drop", type=float, default=0.0, help="drop this fraction of sent datagrams")
    g.add_argument("--fault-seed", type=int, default=0, help="seed of the drop decisions")
    g.add_argument("--fault-block", default="", help="comma-separated peer ids to which nothing is sent")
    g.add_argument("--clock-skew-ms", type=float, default=0.0, help="inject a clock skew (ms)")
    g.add_argument("--clock-drift-ppm", type=float, default=0.0, help="inject a clock drift (ppm)")
    g.add_argument("--fault-control", action="store_true",
                   help="let clients with the key partition/heal this node at run time (benchmarks)")
    g.add_argument("--generate", default=None, metavar="RATE:COUNT[:DELAY|:@MONOTONIC]",
                   help="stamp COUNT orders at RATE/s inside this node (0 = as fast as possible), starting "
                        "DELAY s after it is ready (benchmarks)")
    g.add_argument("--trace", default=None, metavar="FILE",
                   help="on exit, write JSON {op id: monotonic ns it entered this node} (benchmarks); "
                        "eventual mode also writes FILE.stages: where each op's hop spent its time")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..core.errors import UsageError
    from ..node.runner import NodeRunner, WallClock
    from ..node.transport import FaultFilter

    cfg = config(args)
    entry = cfg.node(args.id)
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)-7s {args.id} %(message)s")
    blocked = set()
    for pid in filter(None, (s.strip() for s in args.fault_block.split(","))):
        blocked.add(cfg.node(pid).addr)
    faults = FaultFilter(args.fault_drop, blocked, args.fault_seed) if (args.fault_drop or blocked) else None
    storage = None
    data_dir = args.data_dir or entry.data_dir
    if data_dir:
        try:
            from ..node.storage import Storage
        except ImportError:  # pragma: no cover - storage lands with durability
            raise UsageError("this build has no storage layer; run without data_dir") from None
        storage = Storage.open(data_dir, args.id, cfg.fsync)
    runner = NodeRunner(cfg, args.id, faults=faults, seed=args.seed, storage=storage,
                        clock=WallClock(int(args.clock_skew_ms * 1e6), args.clock_drift_ppm),
                        log=logging.getLogger(f"gossipbook.{args.id}"), join=args.join)

    if args.trace:
        runner.enable_trace()
    runner.fault_control = args.fault_control
    gen = None
    if args.generate:
        try:
            parts = args.generate.split(":")
            if len(parts) not in (2, 3):
                raise ValueError
            start = parts[2] if len(parts) == 3 else "0"
            # "@T" starts at host-wide CLOCK_MONOTONIC time T (so several processes start together)
            gen = (float(parts[0]), int(parts[1]), -float(start[1:]) if start.startswith("@") else float(start))
        except ValueError:
            raise UsageError("--generate wants RATE:COUNT[:DELAY], e.g. 0:100000") from None

    from ..node.gctune import tune_gc
    tune_gc()

    async def main() -> None:
        async with trio.open_nursery() as n:
            await n.start(runner.serve)
            if gen is not None:
                n.start_soon(runner.generate, gen[0], gen[1], args.seed or 1, gen[2])
            if args.metrics_port:
                from ..node.metrics import serve_metrics
                n.start_soon(serve_metrics, runner, args.metrics_port)
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as sigs:
                async for sig in sigs:
                    if sig == signal.SIGHUP:  # accounts added or revoked in the config file
                        runner.reload_accounts()
                        continue
                    logging.getLogger(f"gossipbook.{args.id}").info(
                        "received %s, leaving the cluster", signal.Signals(sig).name)
                    n.cancel_scope.cancel()
                    break

    try:
        trio.run(main)
    finally:
        if args.trace and runner.trace is not None:
            import json
            with open(args.trace, "w") as fh:
                json.dump(runner.trace, fh)
            if runner.stages is not None:
                with open(f"{args.trace}.stages", "w") as fh:
                    json.dump(runner.stages, fh)
    return 0
