"""Shared CLI pieces: the ``--config`` option, running trio, printing JSON or rich."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..config import ClusterConfig, load


def add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", default="cluster.toml", metavar="FILE",
                   help="cluster.toml (acts as the operator account) or a client file such as "
                        "clients/alice.toml (acts as that account); default cluster.toml; make them with "
                        "'gossipbook cluster init --accounts alice,bob --out DIR'")


def config(args: argparse.Namespace) -> ClusterConfig:
    return load(args.config)


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")
