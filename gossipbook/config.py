"""``cluster.toml`` and client files: reading, validating and writing them.

Every mistake in a config file becomes one ``ConfigError`` line that names the file and the key, so
``gossipbook node`` never starts half-configured and never shows a traceback for a typo.

Two kinds of file, two kinds of principal:
- ``cluster.toml`` (nodes and the operator) holds the peer key and every account's credential
  (``[accounts]``, account id -> hex secret).
- a client file (``clients/alice.toml``) holds one ``[client]`` account and its credential, the node
  addresses and the instruments (public: a client needs the grid to turn decimals into ticks), and
  never the peer key.
Both hold secrets, so ``load`` refuses a file that group or others can read.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import secrets
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .core.clockbound import ClockConfig
from .core.errors import UsageError
from .core.gossip import GossipConfig
from .core.hlc import DEFAULT_MAX_OFFSET_NS
from .core.instrument import DEFAULT_INSTRUMENT, Instrument, Venue
from .core.membership import MembershipConfig
from .core.node import ClientLimits, NodeConfig
from .core.risk import RiskConfig

MODES = ("eventual", "strong")
FSYNC = ("always", "batch", "never")
#: ``[cluster] max_clock_error_us`` when not given: 10 ms, loose enough for a loaded host and a partition
#: of a minute or two; RTS 25 venues set 1000 (100 for HFT). 0 turns the gate off
DEFAULT_MAX_CLOCK_ERROR_US = 10_000
OPERATOR = "operator"  # the account an operator acts as with cluster.toml as its client file


class ConfigError(UsageError):
    """The cluster config is missing or wrong."""


@dataclass(frozen=True, slots=True)
class NodeEntry:
    id: str
    host: str
    port: int
    data_dir: str | None = None
    #: a node added at run time (``gossipbook cluster add-node``): it takes orders only once it holds
    #: its own add op (docs/operations.md, "Changing membership")
    join: bool = False

    @property
    def addr(self) -> tuple[str, int]:
        return (self.host, self.port)


def check_id(text: object, what: str) -> str:
    """Node and account ids: 1-64 letters, digits, '-', '_' or '.' (they appear in logs, order ids
    and frame headers, so nothing else)."""
    if not isinstance(text, str) or not text or len(text) > 64 or not all(
            c.isascii() and (c.isalnum() or c in "-_.") for c in text):
        raise ConfigError(f"{what} must be 1-64 letters, digits, '-', '_' or '.', not {text!r}")
    return text


@dataclass(slots=True)
class ClusterConfig:
    #: the primary peer key: None in a client file (clients never hold it)
    key: bytes | None = field(repr=False)
    nodes: list[NodeEntry]
    instruments: list[Instrument] = field(default_factory=lambda: [DEFAULT_INSTRUMENT])
    mode: str = "eventual"
    max_offset_ns: int = DEFAULT_MAX_OFFSET_NS
    gossip: GossipConfig = field(default_factory=GossipConfig)
    membership: MembershipConfig = field(default_factory=MembershipConfig)
    fsync: str = "batch"
    path: str = "<memory>"
    #: account id -> its credentials, primary first (cluster.toml: every account; a client file: its own)
    accounts: dict[str, tuple[bytes, ...]] = field(default_factory=dict, repr=False)
    #: the account a client acts as: the client file's, or ``operator`` for cluster.toml
    account: str = OPERATOR
    #: the cluster's name: bound into every frame's MAC (frames of another cluster never verify)
    name: str = ""
    #: the whole peer keyring, primary first (``key`` is its first); from ``key`` or ``key_file``
    key_ring: tuple[bytes, ...] = field(default=(), repr=False)
    #: ``[cluster] venue``: "package.module:factory" making the venue (hooks) nodes fold with
    venue_factory: str = ""
    #: ``[cluster] time_source``, ``max_clock_error_us``, ``max_drift_ppm``: the clock's error bound
    clock: ClockConfig = field(default_factory=lambda: ClockConfig(max_error_ns=DEFAULT_MAX_CLOCK_ERROR_US * 1000))
    #: ``[cluster] audit_file_mb``, ``audit_keep``: the audit trail's file size and how many it keeps
    audit_file_bytes: int = 64 << 20
    audit_keep: int = 16
    #: ``[risk]``: how escrowed risk headroom is split and moved between nodes (core/risk.py)
    risk: RiskConfig = field(default_factory=RiskConfig)
    #: strong mode: ``[cluster] shards`` / ``[[shards]]``, each shard's instruments (empty: one group)
    shards: tuple[tuple[str, ...], ...] = ()

    def __post_init__(self) -> None:
        if self.key is not None and not self.key_ring:
            self.key_ring = (self.key,)
        self.accounts = {a: (k,) if isinstance(k, bytes) else tuple(k) for a, k in self.accounts.items()}

    @property
    def is_client_file(self) -> bool:
        return self.key is None

    def client_credential(self, account: str | None = None) -> tuple[str, tuple[bytes, ...]]:
        """``(account, credentials)`` a client using this file signs with (the first) and verifies
        replies with (any); ``account``: another account whose credential the file holds."""
        name = account or self.account
        secret = self.accounts.get(name)
        if not secret:
            raise ConfigError(f"{self.path}: no credential for account {name!r} (cluster.toml needs "
                              f"[accounts] {OPERATOR} = \"<hex>\" for operator commands; "
                              f"gossipbook cluster init makes one)")
        return name, secret

    def node(self, node_id: str) -> NodeEntry:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise ConfigError(f"{self.path}: no node {node_id!r}; the nodes are {', '.join(n.id for n in self.nodes)}")

    @property
    def ids(self) -> list[str]:
        return [n.id for n in self.nodes]

    def venue(self) -> Venue:
        """The venue nodes fold with: the instruments, and the hooks of ``[cluster] venue`` if set
        (``"package.module:factory"``, called as ``factory(instruments) -> Venue``)."""
        if not self.venue_factory:
            return Venue.of(self.instruments)
        mod_name, _, attr = self.venue_factory.partition(":")
        try:
            factory = getattr(importlib.import_module(mod_name), attr)
            venue = factory(list(self.instruments))
        except Exception as e:  # the user's module: any failure is one clear line
            raise ConfigError(f"{self.path}: cluster.venue {self.venue_factory!r} failed: "
                              f"{type(e).__name__}: {e}") from None
        if not isinstance(venue, Venue):
            raise ConfigError(f"{self.path}: cluster.venue {self.venue_factory!r} returned "
                              f"{type(venue).__name__}, not a gossipbook Venue")
        if sorted(venue.instruments) != sorted(i.symbol for i in self.instruments):
            raise ConfigError(f"{self.path}: cluster.venue trades {sorted(venue.instruments)}, the config lists "
                              f"{sorted(i.symbol for i in self.instruments)}: they must be the same")
        return venue

    def shard_map(self) -> Any:
        """The instruments of each sequencer group (``core.shards.ShardMap``); one shard holding
        every instrument unless ``[cluster] shards`` / ``[[shards]]`` says otherwise."""
        from .core.shards import ShardMap

        return ShardMap(self.shards or (tuple(i.symbol for i in self.instruments),))

    def node_config(self) -> NodeConfig:
        # the client cookies' key: from the OS here, never from the core's seeded rng (``ClientLimits``)
        return NodeConfig(max_offset_ns=self.max_offset_ns, gossip=self.gossip, membership=self.membership,
                          clock=self.clock, risk=self.risk, clients=ClientLimits(cookie_secret=secrets.token_bytes(32)))


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


def check_private(p: Path) -> None:
    """Refuse a secret-holding file that group or others can read (ssh's rule for private keys)."""
    try:
        mode = stat.S_IMODE(p.stat().st_mode)
    except OSError:
        return  # the read below reports it
    if mode & 0o077:
        raise ConfigError(f"{p} holds secrets but is readable by group or others (mode {mode:04o}); "
                          f"fix it with: chmod 600 {p}")


def load(path: str | Path) -> ClusterConfig:
    """Read and validate a cluster config or a client file; ``ConfigError`` with one clear line on
    any problem (a secret file others can read included)."""
    p = Path(path)
    check_private(p)
    try:
        raw = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {p} not found (create one with: gossipbook cluster init > {p})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {p}: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p} is not valid TOML: {e}") from None
    return from_dict(raw, str(p))


def _secret(text: object, where: str) -> bytes:
    try:
        key = bytes.fromhex(str(text))
    except ValueError:
        raise ConfigError(f"{where} must be hex") from None
    if not 16 <= len(key) <= 64:
        raise ConfigError(f"{where} must be 16 to 64 bytes of hex (gossipbook cluster init makes one)")
    return key


def _ring(v: Any, what: str) -> tuple[bytes, ...]:
    """One secret (hex) or a list of them, primary first (a rotation in progress)."""
    items = v if isinstance(v, list) else [v]
    if not items:
        raise ConfigError(f"{what} must name at least one credential")
    ring = tuple(_secret(x, what) for x in items)
    if len(set(ring)) != len(ring):
        raise ConfigError(f"{what} lists a credential twice")
    return ring


def _accounts(raw: Any, where: str) -> dict[str, tuple[bytes, ...]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: [accounts] must be a table of account = \"<hex credential>\"")
    return {check_id(a, f"{where}: account id"): _ring(v, f"{where}: accounts.{a}") for a, v in raw.items()}


def _key_file(path: Any, where: str) -> tuple[bytes, ...]:
    """The peer keyring from ``cluster.key_file``: one hex key per line (``#`` comments), the first
    primary. A file others can read is refused like the config itself."""
    if not isinstance(path, str) or not path:
        raise ConfigError(f"{where}: cluster.key_file must be a path")
    p = Path(path)
    if not p.is_absolute() and where not in ("<config>", "<memory>"):
        p = Path(where).parent / p
    check_private(p)
    try:
        lines = p.read_text().splitlines()
    except OSError as e:
        raise ConfigError(f"{where}: cannot read key_file {p}: {e}") from None
    keys = [ln.split("#", 1)[0].strip() for ln in lines]
    return _ring([k for k in keys if k], f"{p}: a key")


def _venue_ref(v: Any, where: str) -> str:
    if v is None:
        return ""
    mod, sep, attr = str(v).partition(":")
    if not isinstance(v, str) or not sep or not mod or not attr.isidentifier():
        raise ConfigError(f"{where}: cluster.venue must look like \"package.module:factory\", not {v!r}")
    return v


def _name(v: Any, where: str) -> str:
    if v is None:
        return ""
    if not isinstance(v, str) or len(v) > 64:
        raise ConfigError(f"{where}: cluster name must be a string of at most 64 characters")
    return v


def from_dict(raw: dict[str, Any], where: str = "<config>") -> ClusterConfig:
    if "client" in raw:
        return _client_from_dict(raw, where)
    known = {"cluster", "nodes", "instruments", "gossip", "membership", "accounts", "risk", "shards"}
    extra = set(raw) - known
    if extra:
        raise ConfigError(f"{where}: unknown section(s) {', '.join(sorted(extra))}")
    cl = raw.get("cluster")
    if not isinstance(cl, dict):
        raise ConfigError(f"{where}: missing [cluster] table")
    for k in cl:
        if k not in ("key", "key_file", "mode", "max_offset_ms", "fsync", "name", "venue", "shards", *_TIME_KEYS):
            raise ConfigError(f"{where}: unknown key cluster.{k}")
    if "key" in cl and "key_file" in cl:
        raise ConfigError(f"{where}: give cluster.key or cluster.key_file, not both")
    ring = _key_file(cl["key_file"], where) if "key_file" in cl else _ring(cl.get("key", ""), f"{where}: cluster.key")
    mode = cl.get("mode", "eventual")
    if mode not in MODES:
        raise ConfigError(f"{where}: cluster.mode must be one of {', '.join(MODES)}, not {mode!r}")
    fsync = cl.get("fsync", "batch")
    if fsync not in FSYNC:
        raise ConfigError(f"{where}: cluster.fsync must be one of {', '.join(FSYNC)}, not {fsync!r}")
    mo = cl.get("max_offset_ms", DEFAULT_MAX_OFFSET_NS / 1e6)
    if not isinstance(mo, int | float) or isinstance(mo, bool) or mo <= 0:
        raise ConfigError(f"{where}: cluster.max_offset_ms must be a positive number")
    nodes = _nodes(raw.get("nodes"), where)
    instruments = _instruments(raw, where)
    return ClusterConfig(key=ring[0], nodes=nodes, instruments=instruments, mode=mode, max_offset_ns=int(mo * 1e6),
                         gossip=parse_section(GossipConfig, raw.get("gossip"), f"{where}: [gossip]"),
                         membership=parse_section(MembershipConfig, raw.get("membership"), f"{where}: [membership]"),
                         fsync=fsync, path=where, accounts=_accounts(raw.get("accounts"), where),
                         name=_name(cl.get("name"), where), key_ring=ring,
                         venue_factory=_venue_ref(cl.get("venue"), where), **_time_keys(cl, nodes, where),
                         shards=_shards(cl.get("shards"), raw.get("shards"), mode, instruments, where),
                         risk=_risk(raw.get("risk"), where))


def _shards(count: Any, tables: Any, mode: str, instruments: list[Instrument],
            where: str) -> tuple[tuple[str, ...], ...]:
    """``[cluster] shards = K`` (instruments dealt round robin in the order listed) and / or
    ``[[shards]] instruments = [...]`` (every instrument in exactly one); strong mode only."""
    from .core.shards import ShardMap
    from .core.wire import MAX_SHARDS

    if count is None and tables is None:
        return ()
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_SHARDS):
        raise ConfigError(f"{where}: cluster.shards must be a whole number from 1 to {MAX_SHARDS}, not {count!r}")
    symbols = [i.symbol for i in instruments]
    if tables is None:
        k = int(count)
        if k == 1:
            return ()
        if k > len(symbols):
            raise ConfigError(f"{where}: cluster.shards = {k} but only {len(symbols)} instrument(s): every shard needs "
                              f"one (add [[instruments]], or fewer shards)")
        shards = ShardMap.round_robin(symbols, k).shards
    else:
        if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables) or not tables:
            raise ConfigError(f"{where}: [[shards]] must be tables, each with instruments = [\"SYM\", ...]")
        if count is not None and count != len(tables):
            raise ConfigError(f"{where}: cluster.shards = {count} but {len(tables)} [[shards]] tables")
        if len(tables) > MAX_SHARDS:
            raise ConfigError(f"{where}: at most {MAX_SHARDS} [[shards]]")
        out: list[tuple[str, ...]] = []
        seen: dict[str, int] = {}
        for i, t in enumerate(tables):
            extra = set(t) - {"instruments"}
            syms = t.get("instruments")
            if extra or not isinstance(syms, list) or not syms or not all(isinstance(x, str) for x in syms):
                raise ConfigError(f"{where}: shards[{i}] needs instruments = [\"SYM\", ...] (at least one) and "
                                  f"nothing else")
            for sym in syms:
                if sym not in symbols:
                    raise ConfigError(f"{where}: shards[{i}] lists {sym!r}, which is not in [[instruments]]")
                if sym in seen:
                    raise ConfigError(f"{where}: {sym!r} is in shards[{seen[sym]}] and shards[{i}]: each "
                                      f"instrument belongs to one shard")
                seen[sym] = i
            out.append(tuple(syms))
        missing = [sym for sym in symbols if sym not in seen]
        if missing:
            raise ConfigError(f"{where}: [[shards]] leaves out {', '.join(missing)}: list every instrument once")
        shards = tuple(out)
        if len(shards) == 1:
            return ()
    if mode != "strong":
        raise ConfigError(f"{where}: shards are sequencer groups, a strong-mode setting; this cluster's mode is "
                          f"{mode!r} (eventual mode folds every instrument independently already)")
    return tuple(shards)


_TIME_KEYS = ("time_source", "max_clock_error_us", "max_drift_ppm", "audit_file_mb", "audit_keep")


def _time_keys(cl: dict[str, Any], nodes: list[NodeEntry], where: str) -> dict[str, Any]:
    """``[cluster]``'s clock and audit keys (docs/operations.md, "Time")."""
    def number(k: str, default: float, lo: float, hi: float) -> float:
        v = cl.get(k, default)
        if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
            raise ConfigError(f"{where}: cluster.{k} must be a number from {lo:g} to {hi:g}, not {v!r}")
        return v

    ts = cl.get("time_source", "")
    if not isinstance(ts, str) or (ts and ts not in {n.id for n in nodes}):
        raise ConfigError(f"{where}: cluster.time_source must name one of the nodes "
                          f"({', '.join(n.id for n in nodes)}), not {ts!r}")
    err = number("max_clock_error_us", DEFAULT_MAX_CLOCK_ERROR_US, 0, 60_000_000)
    clock = ClockConfig(time_source=ts, max_drift_ppm=float(number("max_drift_ppm", 50, 0, 100_000)),
                        max_error_ns=int(err * 1000) or None)
    keep = number("audit_keep", 16, 1, 100_000)
    if keep != int(keep):
        raise ConfigError(f"{where}: cluster.audit_keep must be a whole number of files")
    return {"clock": clock, "audit_file_bytes": int(number("audit_file_mb", 64, 0.001, 65_536) * (1 << 20)),
            "audit_keep": int(keep)}


def _client_from_dict(raw: dict[str, Any], where: str) -> ClusterConfig:
    """A client file: ``[client] account, key``, the nodes' addresses, the instruments."""
    extra = set(raw) - {"client", "nodes", "instruments"}
    if extra:
        raise ConfigError(f"{where}: unknown section(s) in a client file: {', '.join(sorted(extra))} "
                          f"(a client file holds [client], [[nodes]] and [[instruments]] only)")
    cl = raw["client"]
    if not isinstance(cl, dict):
        raise ConfigError(f"{where}: [client] must be a table")
    for k in cl:
        if k not in ("account", "key", "cluster"):
            raise ConfigError(f"{where}: unknown key client.{k} (known: account, key, cluster)")
    account = check_id(cl.get("account"), f"{where}: client.account")
    secret = _ring(cl.get("key", ""), f"{where}: client.key")
    return ClusterConfig(key=None, nodes=_nodes(raw.get("nodes"), where), instruments=_instruments(raw, where),
                         path=where, accounts={account: secret}, account=account,
                         name=_name(cl.get("cluster"), where))


def _nodes(nodes_raw: Any, where: str) -> list[NodeEntry]:
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
            if k not in ("id", "addr", "data_dir", "join"):
                raise ConfigError(f"{w}: unknown key {k!r}")
        nid = check_id(n.get("id"), f"{w}: id")
        if nid in seen_ids:
            raise ConfigError(f"{w}: duplicate node id {nid!r}")
        host, port = parse_addr(n.get("addr", ""), w)
        if (host, port) in seen_addr:
            raise ConfigError(f"{w}: address {host}:{port} is used twice")
        dd = n.get("data_dir")
        if dd is not None and not isinstance(dd, str):
            raise ConfigError(f"{w}: data_dir must be a string")
        join = n.get("join", False)
        if not isinstance(join, bool):
            raise ConfigError(f"{w}: join must be true or false")
        seen_ids.add(nid)
        seen_addr.add((host, port))
        nodes.append(NodeEntry(nid, host, port, dd, join))
    return nodes


def _instruments(raw: dict[str, Any], where: str) -> list[Instrument]:
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
    return instruments


def _q(text: str) -> str:
    """A TOML basic string (JSON's string syntax is valid TOML for these): nothing a caller passes
    can end the string and add keys."""
    return json.dumps(text)


def _node_lines(n_nodes: int, base_port: int, host: str, data_root: str | None = None) -> list[str]:
    lines: list[str] = []
    for i in range(n_nodes):
        lines += ["[[nodes]]", f'id = "n{i + 1}"', f"addr = {_q(f'{host}:{base_port + i}')}"]
        if data_root:
            lines.append(f"data_dir = {_q(f'{data_root}/n{i + 1}')}")
        lines.append("")
    lines += ["[[instruments]]"] + [f"{k} = {_q(v) if isinstance(v, str) else v}"
                                    for k, v in DEFAULT_INSTRUMENT.to_config().items()] + [""]
    return lines


def render(n_nodes: int, base_port: int = 7401, host: str = "127.0.0.1", mode: str = "eventual",
           data_root: str | None = None, key: bytes | None = None,
           accounts: dict[str, bytes] | None = None, name: str | None = None, shards: int = 1) -> str:
    """A fresh, valid ``cluster.toml`` (a new random key each time unless one is given). ``accounts``
    (id -> credential) defaults to one fresh ``operator`` account. ``shards`` > 1 (strong mode):
    that many sequencer groups, one instrument each (the default instrument's rules, symbols GBX,
    GBX2, ...: rename them and add more; ``[[shards]]`` lists which shard holds which)."""
    if not host or len(host) > 253 or not all(c.isascii() and (c.isalnum() or c in ".-:[]") for c in host):
        raise ConfigError(f"--host {host!r} must be a host name or an IP address")
    parse_addr(f"{host}:{base_port}", "--host")
    key = key or secrets.token_bytes(32)
    if accounts is None:
        accounts = {OPERATOR: secrets.token_bytes(32)}
    lines = ["# gossipbook cluster config (gossipbook cluster init). It holds secrets: keep it mode 0600.",
             "[cluster]",
             f"name = {_q(name or 'gb-' + secrets.token_hex(4))}  # bound into every frame: another cluster's never verify",
             f'key = "{key.hex()}"  # peer key: nodes only; every node-to-node datagram is authenticated with it',
             f'mode = "{mode}"  # eventual (CRDT) or strong (sequencer)',
             f"max_offset_ms = {DEFAULT_MAX_OFFSET_NS // 1_000_000}",
             'fsync = "batch"  # always | batch | never', ""]
    lines += _node_lines(n_nodes, base_port, host, data_root)
    if shards > 1:
        lines += _shard_lines(shards, mode)
    g = GossipConfig()
    lines += ["[gossip]", f"interval_ms = {g.interval_ns // 1_000_000}", f"heartbeat_ms = {g.heartbeat_ns // 1_000_000}", ""]
    lines += ["[accounts]  # account id -> its credential; nodes verify client frames with these (SIGHUP reloads)"]
    lines += [f'{check_id(a, "account id")} = "{k.hex()}"' for a, k in accounts.items()] + [""]
    return "\n".join(lines)


def _shard_lines(k: int, mode: str) -> list[str]:
    """``shards`` more instruments (after the default one ``_node_lines`` wrote) and one ``[[shards]]``
    table per shard (``render(shards=...)``)."""
    from .core.wire import MAX_SHARDS

    if mode != "strong":
        raise ConfigError("--shards is for strong mode (add --mode strong): eventual mode has no sequencer groups")
    if not 1 <= k <= MAX_SHARDS:
        raise ConfigError(f"--shards must be from 1 to {MAX_SHARDS}")
    base = DEFAULT_INSTRUMENT.to_config()
    symbols = [str(base["symbol"])] + [f"{base['symbol']}{i}" for i in range(2, k + 1)]
    lines: list[str] = []
    for sym in symbols[1:]:
        lines += ["[[instruments]]"] + [f"{key} = {_q(v) if isinstance(v, str) else v}"
                                        for key, v in {**base, "symbol": sym}.items()] + [""]
    lines.append("# strong mode: one sequencer group per shard; shard i prefers node i mod N as its leader")
    for sym in symbols:
        lines += ["[[shards]]", f"instruments = [{_q(sym)}]", ""]
    return lines


def render_client(cfg: ClusterConfig, account: str) -> str:
    """The client file of ``account``: its credential, the nodes' addresses, the instruments; never
    the peer key."""
    ring = cfg.accounts[account]
    key = f'"{ring[0].hex()}"' if len(ring) == 1 else "[" + ", ".join(f'"{k.hex()}"' for k in ring) + "]"
    lines = [f"# gossipbook client file of account {account}. It holds that account's secret: keep it mode 0600.",
             "[client]", f'account = "{account}"', f"key = {key}", f"cluster = {_q(cfg.name)}", ""]
    for n in cfg.nodes:
        lines += ["[[nodes]]", f'id = "{n.id}"', f"addr = {_q(f'{n.host}:{n.port}')}", ""]
    for inst in cfg.instruments:
        lines += ["[[instruments]]"] + [f"{k} = {_q(v) if isinstance(v, str) else v}"
                                        for k, v in inst.to_config().items()] + [""]
    return "\n".join(lines)


def write_private(path: Path, text: str) -> None:
    """Create (or replace) ``path`` with mode 0600 from the first byte: a secret is never readable
    by others, not even for a moment."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _risk(raw: Any, where: str) -> RiskConfig:
    """``[risk]``: ``split`` ("even" | "none"), ``rebalance`` (bool), ``rebalance_ms``,
    ``ask_interval_ms``, ``ask_ttl_ms``, ``reserve_ms``, ``demand_halflife_ms``, ``max_ops_per_s``,
    ``max_asks_queued`` (core/risk.py ``RiskConfig``)."""
    if raw is None:
        return RiskConfig()
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: [risk] must be a table")
    raw = dict(raw)
    split = raw.pop("split", "even")
    if split not in ("even", "none"):
        raise ConfigError(f'{where}: risk.split must be "even" or "none", not {split!r}')
    return dataclasses.replace(parse_section(RiskConfig, raw, f"{where}: [risk]"), split=split)
