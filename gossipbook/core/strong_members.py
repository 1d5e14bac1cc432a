"""Strong-mode membership: the sequencer's configuration, changed through its log one server at a time.

Everything that decides who votes, who only learns and who was removed in a strong-mode group
lives here: the ``Conf`` value, the single-server ``ConfChange`` and its rules, how a change rides
in a log entry (an ``Op`` of kind ``MEMBER``), and how a snapshot carries the configuration as of
its index. ``sequencer.py`` applies them; ``strong.py`` turns an operator's request into a change.

Theory of operation
-------------------
**One server at a time** (Raft dissertation §4.1, etcd-raft's single ``ConfChange``). A
configuration entry takes effect on each server as soon as it is *appended* to its log, not when
it commits, and every quorum (votes, commit, the leader's quorum check) is counted over the
configuration in force at that server. Two configurations that differ by one voter have
overlapping majorities, so the old and the new configuration can never elect two leaders of one
term or commit two different entries at one index. That argument holds for one step only: the
leader refuses a second change while one is uncommitted (``Refused``), and only proposes a change
after it has committed an entry of its own term (dissertation §4.1's fix for the bug found in 2015:
a new leader whose term has committed nothing may hold a stale configuration).

**Learners.** An added server first joins as a *learner*: it gets appends and snapshots but does
not vote and does not count for any quorum, so adding a server that is empty (or dead) never
stalls commits. The leader promotes it (a second change) once its match index is within
``promote_lag`` entries of the leader's commit index and it answered within the last heartbeats:
a voter that far behind would be part of the new majority, and until it caught up the cluster
would tolerate one failure fewer (a 3 -> 4 change needs 3 of 4: one slow new voter plus one
failure stalls every commit).

**Removal.** ``remove`` takes a member out of the voters (or learners); it is *leaving* while its
removal is uncommitted and *removed* after. A leader that removes itself keeps leading (without
counting itself) until the removal commits, then hands over with ``TimeoutNow`` to its most
caught-up voter and steps down. Ids are never reused: a removed id cannot be added again.

**Truncation.** The configuration in force is that of the last configuration entry in the log (or
the snapshot's), so truncating an uncommitted configuration entry reverts it, and a restart
restores it from the stored snapshot and log.

**Encoding.** A change is an ``Op`` of kind ``MEMBER`` (9) by the operator account, fields as
``config_epoch.py`` uses them: ``order_id`` ``"id@host:port"`` with ``side`` 0 adds a learner;
``"id"`` with ``side`` 0 promotes it; ``"id"`` with ``side`` 1 removes it. The wire and the
storage carry it like any op. A snapshot whose configuration differs from the initial one is
``MAGIC`` + msgpack ``[conf, data]`` (``wrap`` / ``unwrap``); the caller only ever sees ``data``.

Bounds (hostile input): a configuration from a peer (a snapshot's) has at most ``MAX_IDS`` ids,
each ``name_ok``, each address ``addr_ok``, an epoch and index up to 2**62; anything else is a bad
snapshot, refused before anything changes. Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgpack

from .config_epoch import MEMBER, OPERATOR, addr_ok, name_ok
from .errors import UsageError

LEARNER, PROMOTE, REMOVE = "learner", "promote", "remove"
KINDS = (LEARNER, PROMOTE, REMOVE)
MAX_IDS = 256  # voters, learners and removed ids of one group, together
MAX_COUNT = 1 << 62
MAGIC = b"\xc1GBCONF1"  # 0xc1 is never used by msgpack: no caller snapshot of ours starts with it


class Refused(UsageError):
    """A configuration change the leader will not append now (one line: why, what to do);
    ``transient``: retrying shortly may succeed (a change in flight, a leader without a commit)."""

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True, slots=True)
class ConfChange:
    """One single-server change: ``learner`` (add, with its address), ``promote`` or ``remove``."""

    kind: str
    member: str
    addr: str = ""


@dataclass(frozen=True, slots=True)
class Conf:
    """A group's configuration: who votes, who learns, who was removed; ``epoch`` counts the
    changes applied since the initial configuration and ``index`` is the log index of the entry
    that made this one (0: the initial one)."""

    voters: frozenset[str]
    learners: frozenset[str] = frozenset()
    removed: frozenset[str] = frozenset()
    addrs: tuple[tuple[str, str], ...] = ()
    epoch: int = 0
    index: int = 0

    @property
    def members(self) -> frozenset[str]:
        return self.voters | self.learners

    @property
    def majority(self) -> int:
        return len(self.voters) // 2 + 1

    def address(self, member: str) -> str | None:
        return dict(self.addrs).get(member)

    def quorum(self, ids: Iterable[str]) -> bool:
        """Whether ``ids`` hold a majority of the voters (learners and strangers never count)."""
        return len(self.voters.intersection(ids)) >= self.majority

    def check(self, ch: ConfChange) -> str | None:
        """Why ``ch`` cannot be applied to this configuration (None: it can)."""
        m = ch.member
        if ch.kind not in KINDS or not name_ok(m):
            return f"bad configuration change {ch.kind} {m[:64]!r}"
        if m in self.removed:
            if ch.kind == REMOVE:
                return f"{m} is already removed (epoch {self.epoch})"
            return f"{m} was removed (epoch {self.epoch}) and ids are never reused; add the new host under another id"
        if ch.kind == LEARNER:
            if not addr_ok(ch.addr):
                return f"address {ch.addr[:64]!r} must look like HOST:PORT"
            if m in self.members:
                return f"{m} is already a {'voter' if m in self.voters else 'learner'} (epoch {self.epoch})"
            if any(a == ch.addr for x, a in self.addrs if x in self.members):
                return f"{ch.addr} is another member's address; give the new node its own"
            if len(self.members | self.removed) >= MAX_IDS:
                return f"a group holds at most {MAX_IDS} ids"
            return None
        if ch.kind == PROMOTE:
            return None if m in self.learners else f"{m} is not a learner (epoch {self.epoch})"
        if m not in self.members:
            return f"{m} is not a member (members: {', '.join(sorted(self.members))})"
        if self.voters == {m}:
            return f"{m} is the last voter; add and promote another node before removing it"
        return None

    def apply(self, ch: ConfChange, index: int) -> Conf:
        """The configuration after ``ch`` (appended at ``index``). Total: a change that ``check``
        would refuse (only a bug or a broken leader appends one) changes nothing but the epoch."""
        voters, learners, removed, addrs = set(self.voters), set(self.learners), set(self.removed), dict(self.addrs)
        m = ch.member
        if self.check(ch) is None:
            if ch.kind == LEARNER:
                learners.add(m)
                addrs[m] = ch.addr
            elif ch.kind == PROMOTE:
                learners.discard(m)
                voters.add(m)
            else:
                voters.discard(m)
                learners.discard(m)
                removed.add(m)
        return Conf(frozenset(voters), frozenset(learners), frozenset(removed), tuple(sorted(addrs.items())),
                    min(self.epoch + 1, MAX_COUNT), index)

    def roles(self, committed: bool = True, prev: Conf | None = None) -> dict[str, str]:
        """Each id's role: voter, learner, removed, or *leaving* (its removal is appended here but
        not committed yet: ``committed`` False and ``prev`` the configuration before it)."""
        out = {m: "voter" for m in self.voters}
        out.update({m: "learner" for m in self.learners})
        for m in self.removed:
            out[m] = "leaving" if not committed and prev is not None and m in prev.members else "removed"
        return dict(sorted(out.items()))

    # ---- snapshots -----------------------------------------------------------------------------
    def to_wire(self) -> list[Any]:
        return [sorted(self.voters), sorted(self.learners), sorted(self.removed),
                [list(a) for a in self.addrs], self.epoch, self.index]

    @staticmethod
    def from_wire(raw: Any) -> Conf:
        """A configuration from a snapshot (``ValueError`` if it breaks any bound)."""
        if type(raw) is not list or len(raw) != 6:
            raise ValueError("configuration: 6 fields")
        voters, learners, removed, addrs, epoch, index = raw
        ids: list[str] = []
        for group in (voters, learners, removed):
            if type(group) is not list or not all(type(m) is str and name_ok(m) for m in group):
                raise ValueError("configuration: bad id list")
            ids += group
        if len(ids) != len(set(ids)) or len(ids) > MAX_IDS or not voters:
            raise ValueError("configuration: ids repeated, too many, or no voter")
        if (type(addrs) is not list or len(addrs) > MAX_IDS
                or not all(type(a) is list and len(a) == 2 and type(a[0]) is str and name_ok(a[0])
                           and type(a[1]) is str and addr_ok(a[1]) for a in addrs)):
            raise ValueError("configuration: bad addresses")
        if not all(type(x) is int and 0 <= x <= MAX_COUNT for x in (epoch, index)):
            raise ValueError("configuration: epoch / index out of bounds")
        return Conf(frozenset(voters), frozenset(learners), frozenset(removed),
                    tuple(sorted((a, b) for a, b in addrs)), epoch, index)


def wrap(conf: Conf, initial: Conf, data: bytes) -> bytes:
    """The snapshot bytes the sequencer keeps and sends: ``data`` alone while the configuration is
    the initial one (so a group that never changes keeps its old format), else MAGIC + both."""
    if conf == initial:
        return data
    return MAGIC + msgpack.packb([conf.to_wire(), data], use_bin_type=True)


def unwrap(raw: bytes, initial: Conf) -> tuple[Conf, bytes]:
    """``(configuration, caller's data)`` of stored or received snapshot bytes (``ValueError`` when
    they carry a configuration that does not parse)."""
    if not raw.startswith(MAGIC):
        return initial, raw
    try:
        body = msgpack.unpackb(raw[len(MAGIC):], raw=False, use_list=True, strict_map_key=True, max_ext_len=0)
    except Exception as e:  # msgpack raises several types for bad input; all mean the same here
        raise ValueError(f"undecodable configuration in snapshot: {type(e).__name__}") from None
    if type(body) is not list or len(body) != 2 or type(body[1]) is not bytes:
        raise ValueError("snapshot: [configuration, data] expected")
    return Conf.from_wire(body[0]), body[1]


# ---- log entries (Op of kind MEMBER) ------------------------------------------------------------
def change_of(value: Any) -> ConfChange | None:
    """The change a log entry's value carries (an ``Op`` of kind MEMBER by the operator), else None."""
    if getattr(value, "kind", None) != MEMBER or getattr(value, "account", None) != OPERATOR:
        return None
    target = value.order_id
    if value.side == 0:
        member, sep, addr = target.partition("@")
        return ConfChange(LEARNER, member, addr) if sep else ConfChange(PROMOTE, member)
    return ConfChange(REMOVE, target)


def op_fields(ch: ConfChange) -> tuple[str, int]:
    """``(order_id, side)`` of the op that carries ``ch``."""
    if ch.kind == LEARNER:
        return f"{ch.member}@{ch.addr}", 0
    return ch.member, 0 if ch.kind == PROMOTE else 1


def request_change(target: str, side: int, conf: Conf, me: str) -> ConfChange:
    """The change an operator's ``ClientSubmit`` (kind MEMBER, as ``gossipbook cluster add-node /
    remove-node`` send it) asks for; ``Refused`` with one line when it cannot be done."""
    if side == 0:
        member, sep, addr = target.partition("@")
        if not sep:
            raise Refused("add-node needs ID@HOST:PORT")
        ch = ConfChange(LEARNER, member, addr)
    else:
        names = [n for n in target.split(",") if n]
        if len(names) != 1:
            raise Refused("strong mode changes membership one server at a time: remove one member per command "
                          "(send the next once the first is done)")
        ch = ConfChange(REMOVE, names[0])
    why = conf.check(ch)
    if why is not None:
        raise Refused(why)
    return ch


def caught_up(match: Mapping[str, int], acked: Mapping[str, bool], learners: Iterable[str], commit: int,
              lag: int) -> list[str]:
    """Learners that answered lately and hold the log to within ``lag`` entries of ``commit`` (and
    hold something: a learner that never answered is never promoted, however short the log)."""
    return sorted(m for m in learners if acked.get(m) and 0 < match.get(m, 0) and match[m] >= commit - lag)


__all__ = ["KINDS", "LEARNER", "MAGIC", "PROMOTE", "REMOVE", "Conf", "ConfChange", "Refused", "caught_up",
           "change_of", "op_fields", "request_change", "unwrap", "wrap"]
