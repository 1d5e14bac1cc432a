"""``cluster.toml``: reading, validating and writing a cluster's configuration.

Every mistake in a config file becomes one ``ConfigError`` line that names the file and the key, so
``gossipbook node`` never starts half-configured and never shows a traceback for a typo.
"""

from __future__ import annotations

import dataclasses
import secrets
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .core.errors import UsageError
from .core.gossip import GossipConfig
from .core.hlc import DEFAULT_MAX_OFFSET_NS
from .core.instrument import DEFAULT_INSTRUMENT, Instrument, Venue
from .core.membership import MembershipConfig
from .core.node import NodeConfig

MODES = ("eventual", "strong")
FSYNC = ("always", "batch", "never")


class ConfigError(UsageError):
    """The cluster config is missing or wrong."""


@dataclass(frozen=True, slots=True)
class NodeEntry:
    id: str
    host: str
    port: int
    data_dir: str | None = None

    @property
    def addr(self) -> tuple[str, int]:
        return (self.host, self.port)


@dataclass(slots=True)
class ClusterConfig:
    key: bytes
    nodes: list[NodeEntry]
    instruments: list[Instrument] = field(default_factory=lambda: [DEFAULT_INSTRUMENT])
    mode: str = "eventual"
    max_offset_ns: int = DEFAULT_MAX_OFFSET_NS
    gossip: GossipConfig = field(default_factory=GossipConfig)
    membership: MembershipConfig = field(default_factory=MembershipConfig)
    fsync: str = "batch"
    path: str = "<memory>"

    def node(self, node_id: str) -> NodeEntry:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise ConfigError(f"{self.path}: no node {node_id!r}; the nodes are {', '.join(n.id for n in self.nodes)}")

    @property
    def ids(self) -> list[str]:
        return [n.id for n in self.nodes]

    def venue(self) -> Venue:
        return Venue.of(self.instruments)

    def node_config(self) -> NodeConfig:
        return NodeConfig(max_offset_ns=self.max_offset_ns, gossip=self.gossip, membership=self.membership)


def parse_section(cls: type, raw: Any, where: str) -> Any:
    """Build a timing dataclass from a TOML table: ``*_ms`` keys map to ``*_ns`` fields."""
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table")
    names = {f.name for f in dataclasses.fields(cls)}
    defaults = cls()
    kw: dict[str, Any] = {}
    for k, v in raw.items():
        name, scale = (k[:-3] + "_ns", 1_000_000) if k.endswith("_ms") else (k, 1)
        if name not in names:
            allowed = sorted(n[:-3] + "_ms" if n.endswith("_ns") else n for n in names)
            raise ConfigError(f"{where}: unknown key {k!r} (known: {', '.join(allowed)})")
        if isinstance(getattr(defaults, name), bool):
            if not isinstance(v, bool):
                raise ConfigError(f"{where}.{k} must be true or false")
            kw[name] = v
            continue
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ConfigError(f"{where}.{k} must be a number")
        if v < 0:
            raise ConfigError(f"{where}.{k} must not be negative")
        kw[name] = int(v * scale) if scale != 1 or isinstance(v, int) else v
    try:
        return cls(**kw)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None


def parse_addr(text: str, where: str) -> tuple[str, int]:
    host, sep, port = str(text).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{where}: address {text!r} must look like HOST:PORT")
    return host, int(port)


def load(path: str | Path) -> ClusterConfig:
    """Read and validate a cluster config; ``ConfigError`` with one clear line on any problem."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {p} not found (create one with: gossipbook cluster init > {p})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {p}: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p} is not valid TOML: {e}") from None
    return from_dict(raw, str(p))


def from_dict(raw: dict[str, Any], where: str = "<config>") -> ClusterConfig:
    known = {"cluster", "nodes", "instruments", "gossip", "membership"}
    extra = set(raw) - known
    if extra:
        raise ConfigError(f"{where}: unknown section(s) {', '.join(sorted(extra))}")
    cl = raw.get("cluster")
    if not isinstance(cl, dict):
        raise ConfigError(f"{where}: missing [cluster] table")
    for k in cl:
        if k not in ("key", "mode", "max_offset_ms", "fsync", "name"):
            raise ConfigError(f"{where}: unknown key cluster.{k}")
    try:
        key = bytes.fromhex(str(cl.get("key", "")))
    except ValueError:
        raise ConfigError(f"{where}: cluster.key must be hex") from None
    if not 16 <= len(key) <= 64:
        raise ConfigError(f"{where}: cluster.key must be 16 to 64 bytes of hex (gossipbook cluster init makes one)")
    mode = cl.get("mode", "eventual")
    if mode not in MODES:
        raise ConfigError(f"{where}: cluster.mode must be one of {', '.join(MODES)}, not {mode!r}")
    fsync = cl.get("fsync", "batch")
    if fsync not in FSYNC:
        raise ConfigError(f"{where}: cluster.fsync must be one of {', '.join(FSYNC)}, not {fsync!r}")
    mo = cl.get("max_offset_ms", DEFAULT_MAX_OFFSET_NS / 1e6)
    if not isinstance(mo, int | float) or isinstance(mo, bool) or mo <= 0:
        raise ConfigError(f"{where}: cluster.max_offset_ms must be a positive number")
    nodes_raw = raw.get("nodes")
    if not isinstance(nodes_raw, list) or not nodes_raw:
        raise ConfigError(f"{where}: needs at least one [[nodes]] entry")
    nodes: list[NodeEntry] = []
    seen_ids: set[str] = set()
    seen_addr: set[tuple[str, int]] = set()
    for i, n in enumerate(nodes_raw):
        w = f"{where}: nodes[{i}]"
        if not isinstance(n, dict):
            raise ConfigError(f"{w} must be a table")
        for k in n:
            if k not in ("id", "addr", "data_dir"):
                raise ConfigError(f"{w}: unknown key {k!r}")
        nid = n.get("id")
        if not isinstance(nid, str) or not nid or len(nid) > 64 or not all(c.isalnum() or c in "-_." for c in nid):
            raise ConfigError(f"{w}: id must be 1-64 letters, digits, '-', '_' or '.'")
        if nid in seen_ids:
            raise ConfigError(f"{w}: duplicate node id {nid!r}")
        host, port = parse_addr(n.get("addr", ""), w)
        if (host, port) in seen_addr:
            raise ConfigError(f"{w}: address {host}:{port} is used twice")
        dd = n.get("data_dir")
        if dd is not None and not isinstance(dd, str):
            raise ConfigError(f"{w}: data_dir must be a string")
        seen_ids.add(nid)
        seen_addr.add((host, port))
        nodes.append(NodeEntry(nid, host, port, dd))
    inst_raw = raw.get("instruments", [DEFAULT_INSTRUMENT.to_config()])
    if not isinstance(inst_raw, list) or not inst_raw:
        raise ConfigError(f"{where}: [[instruments]] must list at least one instrument")
    instruments = []
    for i, r in enumerate(inst_raw):
        try:
            if not isinstance(r, dict):
                raise ValueError("must be a table")
            instruments.append(Instrument.from_config(r))
        except (ValueError, TypeError, UsageError) as e:
            raise ConfigError(f"{where}: instruments[{i}]: {e}") from None
    if len({i.symbol for i in instruments}) != len(instruments):
        raise ConfigError(f"{where}: instrument symbols must be unique")
    return ClusterConfig(key=key, nodes=nodes, instruments=instruments, mode=mode, max_offset_ns=int(mo * 1e6),
                         gossip=parse_section(GossipConfig, raw.get("gossip"), f"{where}: [gossip]"),
                         membership=parse_section(MembershipConfig, raw.get("membership"), f"{where}: [membership]"),
                         fsync=fsync, path=where)


def render(n_nodes: int, base_port: int = 7401, host: str = "127.0.0.1", mode: str = "eventual",
           data_root: str | None = None, key: bytes | None = None) -> str:
    """A fresh, valid ``cluster.toml`` (a new random key each time unless one is given)."""
    key = key or secrets.token_bytes(32)
    inst = DEFAULT_INSTRUMENT.to_config()
    lines = ["# gossipbook cluster config (gossipbook cluster init)", "[cluster]",
             f'key = "{key.hex()}"  # shared secret: every datagram is authenticated with it',
             f'mode = "{mode}"  # eventual (CRDT) or strong (sequencer)',
             f"max_offset_ms = {DEFAULT_MAX_OFFSET_NS // 1_000_000}",
             'fsync = "batch"  # always | batch | never', ""]
    for i in range(n_nodes):
        lines += ["[[nodes]]", f'id = "n{i + 1}"', f'addr = "{host}:{base_port + i}"']
        if data_root:
            lines.append(f'data_dir = "{data_root}/n{i + 1}"')
        lines.append("")
    lines += ["[[instruments]]"] + [f"{k} = {v!r}".replace("'", '"') for k, v in inst.items()] + [""]
    g = GossipConfig()
    lines += ["[gossip]", f"interval_ms = {g.interval_ns // 1_000_000}", f"heartbeat_ms = {g.heartbeat_ns // 1_000_000}", ""]
    return "\n".join(lines)
