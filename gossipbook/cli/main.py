"""``gossipbook``: the entry point. Each command group lives in its own module with
``add_parser(subparsers)``; a user mistake prints one line and exits non-zero, never a traceback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..core.errors import UsageError
from . import audit, bench, clock, cluster, demo, fix, fuzz, load, node, orders, risk, sim, status, top, watch

COMMANDS = [demo, cluster, node, orders, risk, status, top, watch, load, sim, bench, fuzz, fix, clock, audit]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gossipbook",
        description="Replicated trading order books: an HLC-ordered op-set CRDT gossiped over UDP.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for mod in COMMANDS:
        mod.add_parser(sub)
    return p


def _unwrap(eg: BaseExceptionGroup) -> BaseException:
    """The user-facing error inside a (nested) exception group, or the group itself."""
    for kind in (UsageError, KeyboardInterrupt):
        sub = eg.subgroup(kind)
        while isinstance(sub, BaseExceptionGroup):
            sub = sub.exceptions[0]
        if sub is not None:
            return sub
    return eg


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        try:
            return int(args.func(args) or 0)
        except BaseExceptionGroup as eg:  # an error inside a trio nursery arrives wrapped
            raise _unwrap(eg) from None
    except UsageError as e:
        print(f"gossipbook: error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 2)
    except KeyboardInterrupt:
        print("gossipbook: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
