"""Run-time membership: the cluster's configuration as a function of the membership ops held.

Everything that decides who is a member, at which address, and which of a removed member's ops
still count lives here; the replica calls ``Configuration.apply`` for every membership op it
admits (one place, the same on every replica) and acts on what it returns.

Theory of operation
-------------------
A membership change is an **op** (kind ``MEMBER`` = 9), stamped by the operator account through any
node and replicated like an order, so every replica learns it by the same gossip, keeps it on disk
and carries it in snapshots (``Snapshot.config``). Encoding (no new ``Op`` fields; the style of
``risk.py``'s table):

==============  ============  ======================  ========  =============  =======
kind            ``account``   ``order_id``            ``side``  ``qty``        others
==============  ============  ======================  ========  =============  =======
MEMBER (9) add  operator      ``"<id>@<host>:<port>"``  0         0              "", 0
MEMBER (9) rm   operator      ``"<id>"``                1         the fence      "", 0
==============  ============  ======================  ========  =============  =======

(``symbol`` "", ``price`` 0, ``tif`` 0, ``req`` "": a retried command is answered from the node's
reply cache, and a second identical op changes nothing, see below.)

**The configuration is a set function of the membership ops held**, not of their order:

- members = (the initial members ∪ every id added) − every id removed. *Removed is final*: an id
  once removed is never a member again (ids are never reused: ``check_add`` refuses one), so a
  replica that learns the removal of n5 before its addition ends where one that learnt them in the
  other order does.
- a member's address is the one in its add op with the greatest op key (an add of a member that
  is already one moves it to a new address);
- a removed member's fence is the greatest fence among its removal ops (two operators removing the
  same member through two nodes: the ops below the larger fence are kept, since some node held them);
- the **epoch** is the number of distinct changes held (``add id@addr``, ``remove id``): every
  replica holding the same membership ops shows the same epoch, whatever the order they came in.

Because the configuration does not depend on fold order, a rollback and replay never has to undo
it: the fold treats a membership op as a no-op, and the effect is taken once, when the op enters
the op-set (``Replica._reconfigure``). Same op-set ⇒ same configuration ⇒ same fences ⇒ same
books, which is all determinism needs.

**The fence.** A removal names the highest seq of the removed member that the stamping node holds.
Its ops at or below the fence are kept and spread (the stamping node holds every one of them, so
anti-entropy brings them to everyone); ops above it are refused on every replica (``OpFenced``,
counted ``fenced``), and ones already held are cut from the op-set with their trades reported
revised. ``check_remove`` only stamps when no remaining member has reported holding more of the
removed member than this node, and every remaining member has reported since the removed one was
last heard from: an op the dead member pushed to any live replica is then inside the fence, so
no op some replica holds (let alone calls final) is cut. ``--force`` only waives "stop it first":
a member still running is fenced, exactly so when it can reach no remaining member.

**Finality and compaction** stop waiting for a removed member once this replica holds its ops up
to the fence (``Replica._others_bound``): nothing of it above the fence can ever be admitted, so
its announcements are no longer needed to know that nothing more will come.

**Added members** count for finality from their add op on. A new node takes orders only once it
holds its own add op (``NodeCore.joining``), so its HLC is past the add op's stamp and every op it
stamps sorts above it: ``floor(member)`` is a bound the watermark may use before the new node has
announced anything, which keeps the watermark from going back when the member appears.

**Never automatic.** SWIM's DEAD is not a reason to remove: a partition looks exactly like a death
from each side, and an automatic removal would fence the live other side (every order it takes
after the fence refused everywhere). Only the operator knows that a host is gone for good.

Bounds (hostile input): at most ``MAX_CHANGES`` distinct membership ops and ``MAX_IDS`` ids ever
(members and removed together: the wire's version-vector cap); more are refused and counted.
Everything here is pure: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import InvalidOrder, UsageError

MEMBER = 9
ADD, REMOVE = 0, 1
OPERATOR = "operator"  # the account that may change membership (the same as risk.OPERATOR)
#: distinct membership ops a configuration keeps; more are refused (counted ``member_ops_refused``)
MAX_CHANGES = 4096
#: ids ever known (members and removed): the version vector carries at most 1,024 origins
MAX_IDS = 1000
#: a fence is a seq: bounded like every integer a peer sends
MAX_FENCE = 1 << 53
ROLES = ("voter", "learner", "leaving", "removed")
#: the slack (ns) a remaining member's report must come after the removed member was last heard
#: from: a heartbeat period and a little (an op the dead member pushed is in the next report)
REPORT_SLACK_NS = 200_000_000
#: ... and within this long of now: this node's last contact with the removed member may be long
#: past (a partition cut it off from us, not from the others), and an old report says nothing of
#: what it pushed the others since (simulator seed 283 of the first 500-seed sweep)
REPORT_FRESH_NS = 500_000_000


class MembershipRefused(UsageError):
    """A membership command this node will not stamp (one line saying why and what to do);
    ``transient``: it may go through if retried shortly (the CLI retries those)."""

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True, slots=True)
class ConfigChanged:
    """An event: this node now follows configuration ``epoch``; ``added`` (id, address: "" when only
    a file knows it) and ``removed`` (id, fence) since the last one. ``me_removed``: this node was
    removed itself (its shell stops: whatever it stamps now is refused everywhere)."""

    epoch: int
    added: tuple[tuple[str, str], ...] = ()
    removed: tuple[tuple[str, int], ...] = ()
    me_removed: bool = False

    def describe(self) -> str:
        parts = [f"added {m} ({a or 'address from the file'})" for m, a in self.added]
        parts += [f"removed {m} (its ops above seq {f} refused)" for m, f in self.removed]
        if self.me_removed:
            parts.append("this node itself was removed")
        return f"configuration epoch {self.epoch}: " + ("; ".join(parts) or "no member change")


@dataclass(frozen=True, slots=True)
class MemberChange:
    """One membership op, parsed."""

    op_id: str
    key: tuple[int, int, str, int]  # the op's sort key (wall, logical, origin), then seq: unique
    kind: int  # ADD or REMOVE
    member: str
    addr: str = ""  # ADD: "host:port"
    fence: int = 0  # REMOVE: the highest seq of ``member`` kept

    @property
    def change(self) -> tuple[Any, ...]:
        """What the epoch counts: two ops with the same change are one step."""
        return ("add", self.member, self.addr) if self.kind == ADD else ("remove", self.member)


def name_ok(s: str) -> bool:
    """Node ids: 1-64 letters, digits, '-', '_' or '.' (config.check_id's rule)."""
    return 1 <= len(s) <= 64 and s.isascii() and all(c.isalnum() or c in "-_." for c in s)


def addr_ok(s: str) -> bool:
    """``host:port`` with a port in 1..65535 and a host of the characters hosts and IPs use."""
    host, sep, port = s.rpartition(":")
    return (bool(sep) and 1 <= len(host) <= 253 and port.isdigit() and len(port) <= 5 and 0 < int(port) < 65536
            and host.isascii() and all(c.isalnum() or c in ".-:[]_" for c in host))


def add_target(member: str, addr: str) -> str:
    """The ``order_id`` of an add op."""
    return f"{member}@{addr}"


def valid_op(op: Any) -> bool:
    """Whether a membership op is well formed (a malformed one is dropped like any invalid op)."""
    if op.account != OPERATOR or op.symbol or op.price or op.tif or op.req:
        return False
    if op.side == ADD:
        member, sep, addr = op.order_id.partition("@")
        return bool(sep) and op.qty == 0 and name_ok(member) and addr_ok(addr)
    return op.side == REMOVE and name_ok(op.order_id) and 0 <= op.qty <= MAX_FENCE


def parse(op: Any) -> MemberChange | None:
    """The change a (well-formed) membership op makes; None if it is not one."""
    if op.kind != MEMBER or not valid_op(op):
        return None
    key = (op.wall, op.logical, op.origin, op.seq)
    if op.side == ADD:
        member, _, addr = op.order_id.partition("@")
        return MemberChange(op.op_id, key, ADD, member, addr=addr)
    return MemberChange(op.op_id, key, REMOVE, op.order_id, fence=op.qty)


class Configuration:
    """The configuration one replica knows: the initial members plus the membership ops it holds."""

    def __init__(self, initial: Iterable[str], counters: dict[str, int] | None = None) -> None:
        self.initial = frozenset(initial)
        self.counters = counters if counters is not None else {}
        for k in ("member_ops_refused",):
            self.counters.setdefault(k, 0)
        self._ops: dict[str, Any] = {}  # op id -> the membership op (carried in snapshots)
        self._changes: set[tuple[Any, ...]] = set()
        self._adds: dict[str, MemberChange] = {}  # member -> its greatest-key add (the address)
        self._first_add: dict[str, MemberChange] = {}  # member -> its least-key add (the floor)
        self._fences: dict[str, int] = {}  # removed member -> greatest fence
        self._members = set(self.initial)

    # ---- queries -----------------------------------------------------------------------------------
    @property
    def epoch(self) -> int:
        """How many distinct membership changes this replica holds (the same wherever they are)."""
        return len(self._changes)

    @property
    def members(self) -> frozenset[str]:
        return frozenset(self._members)

    @property
    def fences(self) -> Mapping[str, int]:
        return self._fences

    def is_member(self, member: str) -> bool:
        return member in self._members

    def removed(self, member: str) -> bool:
        return member in self._fences

    def added(self, member: str) -> bool:
        """Whether an add op of ``member`` is held (a joining node waits for its own)."""
        return member in self._adds

    def address(self, member: str) -> str | None:
        """Where ``member`` listens according to the configuration (None: only the file knows)."""
        a = self._adds.get(member)
        return a.addr if a is not None else None

    def addresses(self) -> dict[str, str]:
        """Every current member's address that an add op gave (file-only members are absent)."""
        return {m: a.addr for m, a in self._adds.items() if m in self._members}

    def floor(self, member: str) -> tuple[int, int] | None:
        """A stamp ``member`` can never stamp at or below, if it joined by an add op (its HLC is past
        the add op before it stamps); None for initial members."""
        if member in self.initial:
            return None
        a = self._first_add.get(member)
        return (a.key[0], a.key[1]) if a is not None else None

    def ops(self) -> list[Any]:
        """Every membership op held, in op order (what a snapshot carries)."""
        return sorted(self._ops.values())

    def roles(self, states: Mapping[str, str], heard: Iterable[str] = ()) -> dict[str, str]:
        """Each member's role, removed ones included. ``states``: SWIM's view (member -> alive /
        suspect / dead / left); ``heard``: members this node holds an announcement of. A member that
        left (SIGTERM) and is not removed yet is *leaving*; one added by an op that this node has
        not heard from yet is a *learner* (it has not caught up: finality waits for it); every other
        member is a *voter*: it counts for finality (and, in strong mode, for the majority)."""
        heard = set(heard)
        out: dict[str, str] = {}
        for m in sorted(self._members | set(self._fences)):
            if m in self._fences:
                out[m] = "removed"
            elif states.get(m) == "left":
                out[m] = "leaving"
            elif m not in self.initial and m in self._adds and m not in heard:
                out[m] = "learner"
            else:
                out[m] = "voter"
        return out

    def status(self, states: Mapping[str, str], heard: Iterable[str] = ()) -> dict[str, Any]:
        """``status()["config"]``: the epoch, each member's role and address, removed members' fences."""
        return {"epoch": self.epoch, "roles": self.roles(states, heard), "addresses": self.addresses(),
                "fences": dict(sorted(self._fences.items()))}

    # ---- changes -----------------------------------------------------------------------------------
    def apply(self, op: Any) -> MemberChange | None:
        """Take one membership op into the configuration (idempotent; any order gives the same
        result). Returns its change if it changed the members, a fence or an address (the replica
        then acts on it), else None."""
        if op.op_id in self._ops:
            return None
        ch = parse(op)
        if ch is None:
            return None
        if len(self._ops) >= MAX_CHANGES or (ch.member not in self._members and ch.member not in self._fences
                                             and len(self._members) + len(self._fences) >= MAX_IDS):
            self.counters["member_ops_refused"] += 1
            return None
        self._ops[op.op_id] = op
        self._changes.add(ch.change)
        m = ch.member
        if ch.kind == ADD:
            first = self._first_add.get(m)
            if first is None or ch.key < first.key:
                self._first_add[m] = ch
            cur = self._adds.get(m)
            if cur is not None and cur.key > ch.key:
                return None  # an older address
            self._adds[m] = ch
            if m in self._fences:
                return None  # removed is final
            self._members.add(m)
            return ch
        if self._fences.get(m, -1) >= ch.fence:
            return None
        self._fences[m] = ch.fence
        self._members.discard(m)
        return ch

    def merge(self, ops: Iterable[Any]) -> list[MemberChange]:
        """``apply`` each of ``ops`` (a snapshot's); the changes that took effect."""
        out = []
        for op in ops:
            ch = self.apply(op)
            if ch is not None:
                out.append(ch)
        return out


# ---- the stamping node's checks (a user's mistake is one line; nothing is stamped) ----------------
def check_add(config: Configuration, me: str, member: str, addr: str, file_addrs: Mapping[str, str]) -> str:
    """The ``order_id`` of an add of ``member`` at ``addr``, or ``MembershipRefused`` saying why not.
    ``file_addrs``: members' addresses from this node's file (the configuration's take precedence)."""
    if not name_ok(member):
        raise InvalidOrder(f"node id {member[:64]!r} must be 1-64 letters, digits, '-', '_' or '.'")
    if not addr_ok(addr):
        raise InvalidOrder(f"address {addr[:64]!r} must look like HOST:PORT")
    target = add_target(member, addr)
    if len(target) > 96:
        raise InvalidOrder("node id and address together must be at most 95 characters")
    if config.removed(member):
        raise MembershipRefused(f"{member} was removed (epoch {config.epoch}) and ids are never reused; "
                                f"add the new host under another id")
    known = {**file_addrs, **config.addresses()}
    if config.is_member(member) and known.get(member) == addr:
        raise MembershipRefused(f"{member} is already a member at {addr} (epoch {config.epoch})")
    for m, a in known.items():
        if a == addr and m != member and config.is_member(m):
            raise MembershipRefused(f"{addr} is {m}'s address; give the new node its own")
    if member == me:
        raise MembershipRefused(f"{me} cannot add itself; send the command to another member")
    return target


def check_remove(config: Configuration, me: str, member: str, vv: Mapping[str, int],
                 peer_vvs: Mapping[str, Mapping[str, int]], last_heard: Mapping[str, int],
                 last_report: Mapping[str, int], now: int, force: bool = False,
                 learners: Iterable[str] = (), together: Iterable[str] = ()) -> int:
    """The fence for removing ``member`` (the highest seq of it this node holds), or
    ``MembershipRefused`` saying why not now and what to do.

    - a node never removes itself (another member must stamp it, and it holds the fence);
    - every remaining member must have reported what it holds *after* ``member`` was last heard
      from here (plus ``REPORT_SLACK_NS``) and within ``REPORT_FRESH_NS`` of now, and none may hold
      more of ``member`` than this node: then every op the removed member pushed to a live replica
      (while it ran, to anyone) is inside the fence and is spread;
    - ``force`` removes a member that is still running (it may be talking right now): the rule on
      the others' reports still holds, and it is what keeps a final op from being cut. That is
      exact when the member can reach nobody (stopped, or cut off from every remaining member).
      If it still reaches some of them, ops it pushed them after this node last heard from it can
      be final there, and the fence cuts them: fence a live member only once it is cut off.
    - members this node's SWIM holds dead are waited for all the same: a member that is only
      paused or cut off by a partition looks dead from here, and may hold (and call final) ops of
      the one being removed. Two members dead at once are removed by one command (``together``).
    - ``learners`` (added, never heard from here) are not waited for: one that never started could
      otherwise block every removal, and the add that would start it may need the removal first.
    - ``together``: members removed by the same command (``remove-node n3 n4``: two dead at once,
      each of which would otherwise wait for the other's report); they are not waited for.
    """
    if not name_ok(member):
        raise InvalidOrder(f"node id {member[:64]!r} must be 1-64 letters, digits, '-', '_' or '.'")
    if member == me:
        raise MembershipRefused(f"{me} cannot remove itself; send the command to another member")
    if config.removed(member):
        raise MembershipRefused(f"{member} is already removed (epoch {config.epoch}, fence {config.fences[member]})")
    if not config.is_member(member):
        raise MembershipRefused(f"{member} is not a member (members: {', '.join(sorted(config.members))})")
    mine = vv.get(member, 0)
    rest = sorted(config.members - {member, me} - set(together))
    for p in rest:
        theirs = peer_vvs.get(p, {}).get(member, 0)
        if theirs > mine:
            raise MembershipRefused(f"{p} holds ops of {member} up to seq {theirs} and this node only up to "
                                    f"{mine}; retry in a moment (anti-entropy is bringing them)", transient=True)
    heard = last_heard.get(member)
    if not force and heard is not None and now - heard < REPORT_SLACK_NS:
        raise MembershipRefused(f"{member} was heard from {max(0, now - heard) // 1_000_000} ms ago: stop it "
                                f"first (SIGTERM or kill), or pass --force to fence it while it runs",
                                transient=True)
    since = max((heard or 0) + REPORT_SLACK_NS, now - REPORT_FRESH_NS)
    down = set(learners)
    stale = [p for p in rest if p not in down and last_report.get(p, -1) < since]
    if stale:
        raise MembershipRefused(f"{', '.join(stale)} {'has' if len(stale) == 1 else 'have'} not reported to "
                                f"{me} since {member} was last heard from, so ops of {member} only they hold "
                                f"could be cut; retry once they are reachable", transient=True)
    return mine


class Contacts:
    """When this node last heard from each peer (any message) and last had its version vector
    (a summary or heartbeat): what ``check_remove`` asks. Bounded by the configuration's ids."""

    __slots__ = ("heard", "reported")

    def __init__(self) -> None:
        self.heard: dict[str, int] = {}
        self.reported: dict[str, int] = {}

    def on_message(self, src: str, now: int, report: bool) -> None:
        self.heard[src] = now
        if report:
            self.reported[src] = now

    def forget(self, member: str) -> None:
        self.reported.pop(member, None)
