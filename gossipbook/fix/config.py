"""``fix.toml``: the gateway's sessions, their passwords and accounts, and its bounds.

Every mistake is one ``ConfigError`` line naming the file and the key (gossipbook.config's rule),
so ``gossipbook fix`` never starts half-configured. The file holds the sessions' passwords, so it
must be private (mode 0600, ``check_private``), as the cluster's own files are.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ConfigError, check_id, check_private

_COMP_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")

#: [gateway] keys -> (default, lowest, highest)
GATEWAY_INTS: dict[str, tuple[int, int, int]] = {
    "heartbeat_min_s": (1, 1, 3600),
    "heartbeat_max_s": (300, 1, 3600),
    "max_message_bytes": (8192, 256, 1 << 20),
    "max_stored": (10_000, 10, 1_000_000),
    "max_queued": (1_000, 10, 100_000),
    "max_out_bytes": (4 << 20, 1 << 16, 1 << 30),
    "max_resend_batch": (5_000, 10, 1_000_000),
    "max_latency_s": (120, 1, 86_400),
    "max_connections": (256, 1, 100_000),
    "max_orders": (100_000, 10, 10_000_000),
    "max_fills": (100_000, 10, 10_000_000),
    "logon_timeout_s": (10, 1, 600),
    "watch_interval_ms": (100, 10, 10_000),
    "app_queue": (1_000, 4, 100_000),
}


@dataclass(frozen=True, slots=True)
class FixSession:
    """One ``[[sessions]]`` entry: a trading session (``account``) or a drop copy (``drop_copy``)."""

    sender_comp_id: str  # what the client puts in SenderCompID (49)
    target_comp_id: str  # what the client puts in TargetCompID (56)
    password: str = field(repr=False)
    account: str | None = None
    drop_copy: tuple[str, ...] = ()
    client_file: str | None = None
    node: str | None = None

    @property
    def key(self) -> str:
        return f"{self.sender_comp_id}->{self.target_comp_id}"


@dataclass(frozen=True, slots=True)
class FixConfig:
    sessions: tuple[FixSession, ...]
    data_dir: str
    node: str | None = None
    fsync: str = "always"
    limits: dict[str, int] = field(default_factory=lambda: {k: v[0] for k, v in GATEWAY_INTS.items()})
    path: str = "<memory>"

    def session(self, sender: str, target: str) -> FixSession | None:
        for s in self.sessions:
            if s.sender_comp_id == sender and s.target_comp_id == target:
                return s
        return None


def _comp_id(v: Any, where: str) -> str:
    if not isinstance(v, str) or not 1 <= len(v) <= 64 or not set(v) <= _COMP_ID_CHARS:
        raise ConfigError(f"{where} must be 1-64 letters, digits, '-', '_' or '.', not {v!r}")
    return v


def load(path: str | Path) -> FixConfig:
    """Read and check ``fix.toml``; one ``ConfigError`` line on any problem."""
    p = Path(path)
    check_private(p)
    try:
        raw = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"sessions file {p} not found (docs/fix.md shows one)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read sessions file {p}: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p} is not valid TOML: {e}") from None
    return from_dict(raw, str(p), base=p.parent)


def from_dict(raw: dict[str, Any], where: str = "<fix.toml>", base: Path | None = None) -> FixConfig:
    extra = set(raw) - {"gateway", "sessions"}
    if extra:
        raise ConfigError(f"{where}: unknown section(s) {', '.join(sorted(extra))} (known: gateway, sessions)")
    gw = raw.get("gateway", {})
    if not isinstance(gw, dict):
        raise ConfigError(f"{where}: [gateway] must be a table")
    known = set(GATEWAY_INTS) | {"comp_id", "data_dir", "node", "fsync"}
    for k in gw:
        if k not in known:
            raise ConfigError(f"{where}: unknown key gateway.{k} (known: {', '.join(sorted(known))})")
    limits: dict[str, int] = {}
    for k, (default, lo, hi) in GATEWAY_INTS.items():
        v = gw.get(k, default)
        if type(v) is not int or not lo <= v <= hi:
            raise ConfigError(f"{where}: gateway.{k} must be a whole number from {lo} to {hi}, not {v!r}")
        limits[k] = v
    if limits["heartbeat_min_s"] > limits["heartbeat_max_s"]:
        raise ConfigError(f"{where}: gateway.heartbeat_min_s is above gateway.heartbeat_max_s")
    default_target = _comp_id(gw["comp_id"], f"{where}: gateway.comp_id") if "comp_id" in gw else None
    data_dir = gw.get("data_dir", "fix-data")
    if not isinstance(data_dir, str) or not data_dir:
        raise ConfigError(f"{where}: gateway.data_dir must be a path")
    if base is not None and not Path(data_dir).is_absolute():
        data_dir = str(base / data_dir)
    fsync = gw.get("fsync", "always")
    if fsync not in ("always", "never"):
        raise ConfigError(f"{where}: gateway.fsync must be \"always\" or \"never\", not {fsync!r}")
    node = gw.get("node")
    if node is not None:
        check_id(node, f"{where}: gateway.node")
    sessions_raw = raw.get("sessions")
    if not isinstance(sessions_raw, list) or not sessions_raw:
        raise ConfigError(f"{where}: needs at least one [[sessions]] entry")
    sessions: list[FixSession] = []
    seen: set[tuple[str, str]] = set()
    for i, s in enumerate(sessions_raw):
        w = f"{where}: sessions[{i}]"
        if not isinstance(s, dict):
            raise ConfigError(f"{w} must be a table")
        allowed = {"sender_comp_id", "target_comp_id", "password", "account", "drop_copy", "client_file", "node"}
        for k in s:
            if k not in allowed:
                raise ConfigError(f"{w}: unknown key {k!r} (known: {', '.join(sorted(allowed))})")
        if "sender_comp_id" not in s:
            raise ConfigError(f"{w}: sender_comp_id is required (the client's SenderCompID, tag 49)")
        sender = _comp_id(s["sender_comp_id"], f"{w}.sender_comp_id")
        if "target_comp_id" not in s and default_target is None:
            raise ConfigError(f"{w}: target_comp_id is required (or set gateway.comp_id)")
        target = _comp_id(s.get("target_comp_id", default_target), f"{w}.target_comp_id")
        if (sender, target) in seen:
            raise ConfigError(f"{w}: session {sender}->{target} is listed twice")
        seen.add((sender, target))
        pw = s.get("password")
        if not isinstance(pw, str) or not 8 <= len(pw) <= 128 or not pw.isascii() or not pw.isprintable():
            raise ConfigError(f"{w}: password must be 8-128 printable ASCII characters")
        account = s.get("account")
        dc = s.get("drop_copy")
        if (account is None) == (dc is None):
            raise ConfigError(f"{w}: give account (a trading session) or drop_copy (a list of accounts), one of them")
        if account is not None:
            check_id(account, f"{w}.account")
        drop: tuple[str, ...] = ()
        if dc is not None:
            if not isinstance(dc, list) or not dc:
                raise ConfigError(f"{w}: drop_copy must be a non-empty list of account ids")
            drop = tuple(check_id(a, f"{w}.drop_copy entry") for a in dc)
        cf = s.get("client_file")
        if cf is not None:
            if not isinstance(cf, str) or not cf:
                raise ConfigError(f"{w}: client_file must be a path")
            if base is not None and not Path(cf).is_absolute():
                cf = str(base / cf)
            if account is None:
                raise ConfigError(f"{w}: client_file is for trading sessions (a drop copy places no orders)")
        sn = s.get("node")
        if sn is not None:
            check_id(sn, f"{w}.node")
        sessions.append(FixSession(sender, target, pw, account, drop, cf, sn))
    traded = {s.account for s in sessions if s.account}
    for s in sessions:
        missing = [a for a in s.drop_copy if a not in traded]
        if missing:
            raise ConfigError(f"{where}: drop copy {s.key} names account(s) {', '.join(missing)} that no trading "
                              f"session uses (a drop copy sees the execution reports of this gateway's sessions)")
    return FixConfig(tuple(sessions), data_dir, node, fsync, limits, where)
