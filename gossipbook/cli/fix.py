"""``gossipbook fix``: run the FIX 4.4 order-entry gateway in front of a cluster (docs/fix.md)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys

import trio

from ..config import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fix", help="run a FIX 4.4 order-entry gateway (sessions in fix.toml)",
        description="Accept FIX 4.4 sessions on --listen and trade for each session's account through the "
                    "cluster. Sessions, passwords and limits are in --sessions (docs/fix.md). Ctrl-C or SIGTERM "
                    "logs every session out and stops.")
    p.add_argument("--config", "-c", default=None, metavar="FILE",
                   help="cluster.toml or a client file: where sessions without client_file take their account's "
                        "credential and the node addresses")
    p.add_argument("--sessions", required=True, metavar="FILE", help="fix.toml: the sessions (mode 0600)")
    p.add_argument("--listen", default="127.0.0.1:9878", metavar="HOST:PORT",
                   help="address to accept FIX connections on (default 127.0.0.1:9878; port 0 picks one)")
    p.add_argument("--quiet", "-q", action="store_true", help="log warnings only")
    p.set_defaults(func=run)


def listen_addr(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"--listen {text!r} must look like HOST:PORT (for example 127.0.0.1:9878)")
    return host.strip("[]"), int(port)


def run(args: argparse.Namespace) -> int:
    from ..fix import config as fix_config
    from ..fix.gateway import Gateway

    host, port = listen_addr(args.listen)
    fix = fix_config.load(args.sessions)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    gw = Gateway(fix, args.config)

    async def main() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                bound = await nursery.start(gw.serve, host, port)
                print(f"gossipbook fix: listening on {host}:{bound} ({len(fix.sessions)} sessions, data in "
                      f"{fix.data_dir})", flush=True)
                async for _ in signals:
                    break
                await gw.shutdown()
                nursery.cancel_scope.cancel()
        print(json.dumps(gw.status()["gateway"]), flush=True)

    trio.run(main)
    return 0
