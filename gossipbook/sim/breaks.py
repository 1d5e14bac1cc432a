"""Deliberately broken variants of the core, so anyone can watch the checker catch each one.

``broken(name)`` is a context manager that monkeypatches one rule out of the core (and puts it
back on exit, even on error); the core files are never edited. Each variant removes a mechanism
DESIGN.md relies on, and the simulator must report a violation for some seeds:

- ``no-replay``: a late op is appended to the fold instead of rolling back and replaying, so the
  fold order depends on arrival order and replicas diverge.
- ``no-anti-entropy``: ``GossipConfig(anti_entropy=False)``: eager push only, so whatever loss,
  a partition or a crash drops is never repaired.
- ``no-dedupe``: an op that arrives again (a push and a repair crossing, a retransmission) is
  folded again: applied twice, trades duplicated.
- ``wrong-tiebreak``: ops with equal ``(wall, logical)`` are ordered with the local node's own ops
  first instead of by origin id, so replicas disagree on tie order (coarse clocks make ties common).
- ``no-offset-check``: ops stamped beyond ``now + max_offset`` are adopted at once instead of held
  back, so a clock far ahead drags every HLC with it.

- ``no-owner-check`` (both modes): ``Book.owner`` answers "whoever asks" for a resting order, so
  neither the stamping node (the eventual replica's ``_open_order``, the strong leader's
  ``_validate``) nor the fold (``Replica._fold_op``, ``SequencedBooks._fold``) refuses a cancel or
  amend by another account. (Removing the fold's check alone is invisible with honest nodes in
  eventual mode: the stamping node refuses such a request first, so it never becomes an op; the
  tests show the fold's check holding on its own with the stamping check removed, see
  ``stamp_owner_check_removed``.)

- ``no-stp`` (both modes): every instrument's self-trade prevention reads as "off" in the fold
  (the ``STP_MODES`` the replica and the strong fold build their per-symbol table from), so an
  account's order trades with its own resting order.

- ``no-escrow``: a node checks a risk limit against its own view only: its rights read as the whole
  limit less what its own orders take (``Escrow.rights``), not its escrowed share. Every node then
  accepts up to the limit on its own, so the cluster can hold several times the limit (caught by
  ``risk_exceeded``; the simulator runs a risk workload with it).
- ``no-risk-check`` (both modes): no order is checked against a risk limit at all: not by the
  stamping node (``RiskLedger.check_new``), not by the strong fold (``ExactRisk.check``).

- ``no-fence`` (issue 20): a removal takes the member out of the configuration but fences nothing:
  its ops above the fence are admitted, kept and folded (``Replica._member_change`` without the
  fence, no cut). Caught by ``removed_op_applied``; the simulator runs the membership nemesis
  (``members.py``) with it, whose zombie scenario makes such ops.

Strong mode (``--mode strong``) breaks the sequencer instead, through ``SequencerConfig.breaks``
(one condition each in ``core/sequencer.py``; nothing is patched): ``STRONG_BREAKS``.
"""

from __future__ import annotations

import dataclasses
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from ..core import book as book_mod
from ..core import gossip as gossip_mod
from ..core import replica as replica_mod
from ..core import risk as risk_mod
from ..core import riskexact as riskexact_mod
from ..core import riskledger as riskledger_mod
from ..core import strong as strong_mod
from ..core.errors import UsageError
from ..core.ops import Op, TradeExecuted

BREAKS: dict[str, str] = {
    "no-replay": "late ops are appended to the fold instead of rolled back and replayed",
    "no-anti-entropy": "no anti-entropy rounds: only eager push, nothing repairs loss or partitions",
    "no-dedupe": "an op that arrives again is folded again",
    "wrong-tiebreak": "ties in (wall, logical) put the local node's own ops first",
    "no-offset-check": "ops beyond max_offset are adopted at once (the HLC jumps ahead)",
    "no-owner-check": "any account may cancel or amend any order (no owner check at the stamping node nor in the fold)",
    "no-stp": "self-trade prevention is off for every instrument: an account trades with itself",
    "no-escrow": "a node checks risk limits against its own orders only (the whole limit as its rights)",
    "no-risk-check": "orders are not checked against risk limits (stamping node, strong fold)",
    "no-fence": "a removed member's ops above its fence are still admitted and applied",
}
#: breaks that need the risk workload (the simulator turns it on for them)
RISK_BREAKS: frozenset[str] = frozenset({"no-escrow", "no-risk-check"})
#: breaks that need the membership nemesis (members.py; strong_members.py for joint-majority-skip)
MEMBER_BREAKS: frozenset[str] = frozenset({"no-fence", "joint-majority-skip"})
#: breaks that patch the core in either mode
BOTH_MODES: frozenset[str] = frozenset({"no-owner-check", "no-stp", "no-risk-check"})


STRONG_BREAKS: dict[str, str] = {
    "vote-any-log": "votes are granted whatever the candidate's log (a stale node can lead)",
    "commit-without-majority": "the leader commits what it has without counting replicas",
    "no-term-check": "messages from older terms are handled as current (a deposed leader keeps going)",
    "commit-old-term": "the leader commits an older term's entry by counting it (Raft paper figure 8)",
    "joint-majority-skip": "a leader appends a membership change while another is uncommitted (two at once; "
                           "needs --members)",
}
#: strong mode with --shards: ``ShardedStrongCore(breaks=...)`` (core/shards.py), not the sequencer's
SHARDED_BREAKS: dict[str, str] = {
    "shared-term": "a node keeps one term and log record for all its shards (a term rises in every group "
                   "without an election; a restart brings every group back with shard 0's state)",
}


#: breaks that patch methods of classes ``setup.py`` compiles: a compiled class calls its own methods
#: directly, so these need the pure-Python core (``GOSSIPBOOK_PURE=1``); ``gossipbook sim`` runs
#: their seeds in fresh processes with it set (``needs_pure``)
PURE_BREAKS = frozenset({"no-replay", "wrong-tiebreak", "no-dedupe", "no-offset-check", "no-owner-check",
                         "no-fence", "no-stp"})


def needs_pure(name: str | None) -> bool:
    """Whether break ``name`` cannot run in this process (it runs the compiled core)."""
    from .._compiled import compiled

    return name in PURE_BREAKS and compiled()


def check_break(name: str | None, mode: str = "eventual") -> str | None:
    known = ({**STRONG_BREAKS, **{b: BREAKS[b] for b in BOTH_MODES}, **SHARDED_BREAKS} if mode == "strong"
             else BREAKS)
    if name is not None and name not in known:
        other = BREAKS if mode == "strong" else STRONG_BREAKS
        hint = f" ({name} is {'an eventual' if mode == 'strong' else 'a strong'}-mode break)" if name in other else ""
        raise UsageError(f"unknown --break {name!r} for {mode} mode{hint}; known: {', '.join(known)}")
    return name


def _append_fold(self: Any, fresh: list[Op], *_: Any) -> list[Any]:
    """no-replay: fold every new op on top, whatever its timestamp."""
    events: list[Any] = []
    for op in sorted(fresh):
        self._applied.append(op)
        events += [TradeExecuted(t) for t in self._apply(op)]
    return events


def _tiebreak_fold(self: Any, fresh: list[Op], *_: Any) -> list[Any]:
    """wrong-tiebreak: the real rollback-and-replay, with the local node's ops first on ties."""
    me = self.node_id

    def key(o: Op) -> tuple[int, int, bool, str]:
        return (o.wall, o.logical, o.origin != me, o.origin)

    fresh.sort(key=key)
    applied = self._applied
    if not applied or key(fresh[0]) > key(applied[-1]):
        events: list[Any] = []
        for op in fresh:
            applied.append(op)
            events += [TradeExecuted(t) for t in self._apply(op)]
        return events
    first = bisect_left(applied, key(fresh[0]), key=key)
    merged = sorted(applied[first:] + fresh, key=key)
    del applied[first:]
    applied.extend(merged)
    return self._replay_from(first)


def _patch_receive_dedupe(orig: Callable[..., Any]) -> Callable[..., Any]:
    def receive(self: Any, ops: Iterable[Op], now: int) -> list[Any]:
        ops = list(ops)
        again = [op for op in ops if op.seq <= self.vv.get(op.origin, 0) and op.origin in self._log]
        events = orig(self, ops, now)
        for op in again:  # no-dedupe: fold the copy again
            self._applied.append(op)
            events += [TradeExecuted(t) for t in self._apply(op)]
        return events
    return receive


def _patch_receive_offset(orig: Callable[..., Any]) -> Callable[..., Any]:
    def receive(self: Any, ops: Iterable[Op], now: int) -> list[Any]:
        return orig(self, ops, 1 << 62)  # no clock bound: everything is admitted at once
    return receive


def _patch_gossip_init(orig: Callable[..., Any]) -> Callable[..., Any]:
    def init(self: Any, replica: Any, peers: Any, rng: Any, config: Any = None) -> None:
        config = dataclasses.replace(config or gossip_mod.GossipConfig(), anti_entropy=False)
        orig(self, replica, peers, rng, config)
    return init


def _member_change_unfenced(orig: Callable[..., Any]) -> Callable[..., Any]:
    def member_change(self: Any, ch: Any) -> int | None:
        if ch.kind == 0 or ch.member == self.node_id:  # an add, or our own removal: as before
            return orig(self, ch)
        self.members.discard(ch.member)  # no-fence: out of the configuration, nothing fenced or cut
        self.fenced[ch.member] = 1 << 62
        self._wm_others = None
        return None
    return member_change


def _own_view_rights(self: Any, state: Any, key: Any) -> int:
    """no-escrow: the whole limit, less this node's own use, as if no other node took orders."""
    return int(state.limits.get(key, 0)) - int(self.consumption(key))


class _Anyone(str):
    """An owner equal to every account (``==`` and ``!=`` both say "same")."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return True

    def __ne__(self, other: object) -> bool:
        return False

    __hash__ = str.__hash__


def _owner_anyone(orig: Callable[..., Any]) -> Callable[..., Any]:
    def owner(self: Any, order_id: str) -> str | None:
        acct = orig(self, order_id)
        return None if acct is None else _Anyone(acct)  # no-owner-check: every account owns it
    return owner


@contextmanager
def stamp_owner_check_removed() -> Iterator[None]:
    """Not a ``--break``: only the stamping node's owner check is gone (eventual ``_open_order``,
    strong ``_validate``), the fold's stays. Non-owner cancels and amends then reach the op-set
    and the log, and the fold alone must refuse them (tests use it to exercise the fold's check)."""
    orig = book_mod.Book.owner
    R, S = replica_mod.Replica, strong_mod.StrongNodeCore
    saved = [(R, "_open_order", R.__dict__["_open_order"]), (S, "_validate", S.__dict__["_validate"]),
             (book_mod.Book, "owner", orig)]
    depth = [0]
    anyone = _owner_anyone(orig)

    def owner(self: Any, order_id: str) -> str | None:
        return anyone(self, order_id) if depth[0] else orig(self, order_id)

    def at_stamp(f: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*a: Any, **k: Any) -> Any:
            depth[0] += 1
            try:
                return f(*a, **k)
            finally:
                depth[0] -= 1
        return wrapped

    try:
        R._open_order = at_stamp(R.__dict__["_open_order"])  # type: ignore[method-assign]
        S._validate = at_stamp(S.__dict__["_validate"])  # type: ignore[method-assign]
        book_mod.Book.owner = owner  # type: ignore[method-assign]
        yield
    finally:
        for cls, attr, value in reversed(saved):
            setattr(cls, attr, value)


@contextmanager
def broken(name: str | None) -> Iterator[None]:
    """Apply the named break for the duration of the block (``None``: nothing)."""
    if name is None or name in STRONG_BREAKS or name in SHARDED_BREAKS:  # strong ones: through the config
        yield
        return
    check_break(name, "strong" if name in BOTH_MODES else "eventual")
    if needs_pure(name):
        raise UsageError(f"--break {name} patches the pure-Python core and this process runs the compiled "
                         "one: run it with GOSSIPBOOK_PURE=1")
    R, G = replica_mod.Replica, gossip_mod.Gossip
    saved: list[tuple[Any, str, Any]] = []

    def patch(cls: Any, attr: str, value: Any) -> None:
        saved.append((cls, attr, cls.__dict__[attr]))
        setattr(cls, attr, value)

    try:
        if name == "no-replay":
            patch(R, "_fold_in", _append_fold)
        elif name == "wrong-tiebreak":
            patch(R, "_fold_in", _tiebreak_fold)
        elif name == "no-dedupe":
            patch(R, "receive", _patch_receive_dedupe(R.receive))
        elif name == "no-offset-check":
            patch(R, "receive", _patch_receive_offset(R.receive))
        elif name == "no-anti-entropy":
            patch(G, "__init__", _patch_gossip_init(G.__init__))
        elif name == "no-owner-check":
            patch(book_mod.Book, "owner", _owner_anyone(book_mod.Book.owner))
        elif name == "no-fence":
            patch(R, "_member_change", _member_change_unfenced(R._member_change))
        elif name == "no-escrow":
            patch(risk_mod.Escrow, "rights", _own_view_rights)
        elif name == "no-risk-check":
            patch(riskledger_mod.RiskLedger, "check_new", lambda *_a, **_k: None)
            patch(riskexact_mod.ExactRisk, "check", lambda *_a, **_k: None)
        elif name == "no-stp":
            off = {n: book_mod.STP_OFF for n in book_mod.STP_NAMES}
            patch(replica_mod, "STP_MODES", off)
            patch(strong_mod, "STP_MODES", off)
        yield
    finally:
        for cls, attr, value in reversed(saved):
            setattr(cls, attr, value)
