"""``gossipbook audit export``: a node's audit trail as JSON lines or CSV (docs/operations.md, "Time")."""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import re
import sys
from pathlib import Path
from typing import Any, TextIO

from ..core.errors import UsageError
from .common import add_config, config


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="export a node's audit trail (every op and trade, with UTC and error bound)",
                       description="Read the audit files in a node's data dir (it may be running) and print "
                                   "its rows: every op the node stamped or applied and every trade, with the "
                                   "op's HLC, the node's wall clock, its offset to the time reference, the error "
                                   "bound and the UTC estimate.")
    s = p.add_subparsers(dest="audit_command", metavar="SUBCOMMAND")
    e = s.add_parser("export", help="print the rows as JSON lines or CSV",
                     description="Print the audit rows of one node, oldest first. Keys: op, account, hlc "
                                 "(wall:logical), wall_ns, utc (ISO 8601, ns), bound_us, event (stamp, apply, "
                                 "trade, revise), offset_ns, clock (synced, free-running, unsynced), detail.")
    add_config(e)
    e.add_argument("--node", "-n", required=True, help="the node whose data dir holds the trail (e.g. n1)")
    e.add_argument("--data-dir", default=None, help="read this data dir instead of the node's from the config")
    e.add_argument("--since", default=None, metavar="T",
                   help="only rows at or after T: ISO 8601 UTC (2026-01-31T09:00:00.5Z) or ns since the epoch")
    e.add_argument("--until", default=None, metavar="T", help="only rows before T (same forms)")
    e.add_argument("--format", choices=["jsonl", "csv"], default="jsonl", help="output format (default jsonl)")
    e.set_defaults(func=run_export)
    p.set_defaults(func=lambda _a: p.print_help() or 0)


_ISO = re.compile(r"(\d{4}-\d{2}-\d{2})(?:[T ](\d{2}:\d{2}(?::\d{2})?)(?:\.(\d{1,9}))?)?(Z|z|[+-]\d{2}:?\d{2})?")


def parse_time(text: str | None, what: str) -> int | None:
    """``--since`` / ``--until``: ns since the epoch, or ISO 8601 to the ns (UTC unless it names a
    zone)."""
    if text is None:
        return None
    t = text.strip()
    if t.isdigit():
        return int(t)
    m = _ISO.fullmatch(t)
    try:
        if m is None:
            raise ValueError
        date, clock, frac, zone = m.groups()
        zone = "+00:00" if zone in (None, "Z", "z") else zone
        dt = datetime.datetime.fromisoformat(f"{date}T{clock or '00:00'}{zone}")
    except ValueError:
        raise UsageError(f"--{what} {text!r} is not a time: give ISO 8601 such as 2026-01-31T09:00:00.25Z, "
                         f"or nanoseconds since the epoch") from None
    return int(dt.timestamp()) * 1_000_000_000 + int((frac or "0").ljust(9, "0"))


def run_export(args: argparse.Namespace) -> int:
    from ..node.audit import FIELDS, read_rows, row_dict

    cfg = config(args)
    entry = cfg.node(args.node)
    path = args.data_dir or entry.data_dir
    if not path:
        raise UsageError(f"node {args.node} has no data_dir in {cfg.path}; give --data-dir")
    since, until = parse_time(args.since, "since"), parse_time(args.until, "until")
    if not Path(path).is_dir():
        raise UsageError(f"data dir {path} of node {args.node} does not exist (is this the node's host?)")
    out: TextIO = sys.stdout
    writer: Any = None
    if args.format == "csv":
        writer = csv.DictWriter(out, fieldnames=list(FIELDS), lineterminator="\n")
        writer.writeheader()
    for row in read_rows(path):
        # filter on the UTC estimate (the node's wall clock while it had no bound)
        t = row[5] + row[6] if row[7] >= 0 else row[5]
        if (since is not None and t < since) or (until is not None and t >= until):
            continue
        d = row_dict(row)
        if writer is not None:
            writer.writerow({k: "" if v is None else v for k, v in d.items()})
        else:
            out.write(json.dumps(d, ensure_ascii=False) + "\n")
    return 0
