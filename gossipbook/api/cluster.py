"""Configs for library users: load one from a path, build a loopback cluster in memory, and hand a
``Venue`` (with its hooks) to the nodes that run it.

Rules that hold: nothing here writes a file; ``local_cluster`` picks ports that are free when it is
called (``free_ports``) and fresh random keys, so two programs never share a cluster by accident.
A venue given to a node must trade exactly the instruments the config lists, because clients read
the instruments (their price and lot grids) from the config.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import fields
from os import PathLike
from typing import Any

from ..config import OPERATOR, ClusterConfig, NodeEntry, check_id, load, parse_section
from ..core.errors import UsageError
from ..core.instrument import Instrument, Venue
from ..core.membership import MembershipConfig
from ..demo.scenario import free_ports

#: failure detection fast enough for a program on one host (the demo's and the tests' timings)
FAST_MEMBERSHIP = {"probe_interval_ms": 100, "probe_timeout_ms": 50, "suspicion_timeout_ms": 400,
                   "suspicion_max_timeout_ms": 800}

ConfigLike = ClusterConfig | str | PathLike[str]


def load_config(cfg: ConfigLike) -> ClusterConfig:
    """``cfg`` itself, or the config loaded from a ``cluster.toml`` / client-file path."""
    if isinstance(cfg, ClusterConfig):
        return cfg
    if isinstance(cfg, str | PathLike):
        return load(cfg)
    raise UsageError(f"expected a ClusterConfig or the path of a config file, not {type(cfg).__name__}")


def local_cluster(venue: Venue | Iterable[Instrument] | None = None, *, nodes: int = 3,
                  accounts: Iterable[str] = ("alice", "bob"), host: str = "127.0.0.1",
                  data_root: str | PathLike[str] | None = None, mode: str = "eventual",
                  fast: bool = True) -> ClusterConfig:
    """An in-memory cluster config for ``nodes`` nodes (``n1``, ``n2``, ...) on free ports of
    ``host``, trading ``venue``'s instruments, with a fresh peer key and a fresh credential for
    each of ``accounts`` (plus ``operator``). ``data_root``: each node's ``data_dir`` is
    ``data_root/<id>`` (else nodes keep nothing on disk). ``fast``: failure detection in about
    half a second instead of about two."""
    if not 1 <= nodes <= 64:
        raise UsageError("nodes must be between 1 and 64")
    if mode not in ("eventual", "strong"):
        raise UsageError(f"mode must be eventual or strong, not {mode!r}")
    if venue is None:
        instruments = [Instrument("GBX")]
    elif isinstance(venue, Venue):
        instruments = list(venue.instruments.values())
    else:
        instruments = list(venue)
    if not instruments:
        raise UsageError("a cluster needs at least one instrument")
    ports = free_ports(nodes)
    entries = [NodeEntry(f"n{i + 1}", host, port, None if data_root is None else f"{data_root}/n{i + 1}")
               for i, port in enumerate(ports)]
    accts = {OPERATOR: secrets.token_bytes(32)}
    for a in accounts:
        accts[check_id(a, "account id")] = secrets.token_bytes(32)
    membership = (parse_section(MembershipConfig, dict(FAST_MEMBERSHIP), "<local>") if fast
                  else MembershipConfig())
    return ClusterConfig(key=secrets.token_bytes(32), nodes=entries, instruments=instruments, mode=mode,
                         membership=membership, path="<local cluster>", accounts=accts,
                         name="gb-" + secrets.token_hex(4))


class _VenueConfig(ClusterConfig):
    """A ``ClusterConfig`` whose ``venue()`` is a given ``Venue`` (hooks included): what the node
    shell builds every core from."""

    _the_venue: Venue

    def venue(self) -> Venue:
        return self._the_venue


def _inst_key(i: Instrument) -> dict[str, object]:
    return i.to_config()


def with_venue(cfg: ClusterConfig, venue: Venue) -> ClusterConfig:
    """A copy of ``cfg`` whose nodes run ``venue`` (its ``validate`` hook included). The venue must
    trade the config's instruments exactly (clients take the grids from the config): a difference is
    a ``UsageError`` naming it."""
    if not isinstance(venue, Venue):
        raise UsageError(f"venue must be a gossipbook.Venue, not {type(venue).__name__}")
    mine = {s: _inst_key(i) for s, i in venue.instruments.items()}
    theirs = {i.symbol: _inst_key(i) for i in cfg.instruments}
    if mine != theirs:
        only_v = sorted(set(mine) - set(theirs))
        only_c = sorted(set(theirs) - set(mine))
        differ = sorted(s for s in set(mine) & set(theirs) if mine[s] != theirs[s])
        parts = ([f"only in the venue: {', '.join(only_v)}"] if only_v else []) + \
                ([f"only in the config: {', '.join(only_c)}"] if only_c else []) + \
                ([f"different rules: {', '.join(differ)}"] if differ else [])
        raise UsageError(f"{cfg.path}: the venue's instruments differ from the config's ({'; '.join(parts)}); "
                         f"list the venue's instruments in the config ([[instruments]]), since clients take "
                         f"their grids from it, or build the config with local_cluster(venue)")
    values: dict[str, Any] = {f.name: getattr(cfg, f.name) for f in fields(cfg)}
    out = _VenueConfig(**values)
    out._the_venue = venue
    return out
