"""Membership changes in the strong-mode simulator (issue 20, ``gossipbook sim --mode strong --members``).

Theory of operation
-------------------
With ``SimConfig.members`` in strong mode a seed draws, from the ``members`` stream (so every other
stream is drawn as without it), one or two **scenarios** over the safety phase, among the random
partitions, crashes, pauses and leader faults of the seed:

- ``grow``: the operator adds a node through a live one (``cluster add-node``); once the add is
  acknowledged (its learner entry committed) the new node boots with ``join = true``, catches up as
  a learner and is promoted to voter by the leader;
- ``grow2``: two nodes added by two commands sent at the same moment through two nodes: the second
  meets "a configuration change is already in flight" and is retried (one change at a time);
- ``shrink``: a live follower is removed; once acknowledged the operator stops it;
- ``remove-leader``: whoever leads when the command goes out is removed: it commits its own
  removal, hands over (``TimeoutNow``) and steps down; the operator then stops it;
- ``replace``: a node is killed for good (its disk gone with the host), removed, and a new one added.

Removals keep at least three voters. The operator (sender ``opsadmin``, account ``operator``)
resends each command every ``RETRY_NS`` to a live node other than its target until one answers
``ok``, through "retry" refusals (a change in flight, a new leader without a commit) and losses.

Checks (violation kinds registered in ``strong_check.py``), on top of the strong checker's
(``commit_conflict``: committed logs are prefixes of each other; ``two_leaders``: at most one
leader per term; ``lost_ack``: no acknowledged request lost, the operator's included):

- ``conf_two_pending``: when a node's log gains a configuration entry, every earlier configuration
  entry in that log is committed there (the one-at-a-time rule, seen from every log: a leader
  appends a change only once the previous one committed, and the message that carries the new one
  carries a commit index covering the old one). ``--break joint-majority-skip`` breaks it.
- ``conf_diverged``: at the end, every node of the cluster holds one committed configuration;
- ``membership_stalled``: every command was acknowledged by the end of the liveness phase, and
  every added node became a voter.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from ..core.config_epoch import ADD, MEMBER, REMOVE, add_target
from ..core.node import E_INVALID, E_NOT_READY, E_TIMEOUT, OK
from ..core.sequencer import LEADER
from ..core.wire import ClientReply, ClientSubmit
from .clock import MS, SEC
from .members import NemesisDriver

SCENARIOS = ("grow", "grow2", "shrink", "remove-leader", "replace")
MIN_VOTERS = 3


@dataclass(slots=True)
class Command:
    """One operator command: add ``node`` at ``addr``, or remove ``node`` (``leader``: whoever leads
    when it is first sent)."""

    req: str
    kind: int  # ADD or REMOVE
    node: str = ""
    addr: str = ""
    leader: bool = False
    scenario: str = ""
    sent: int = 0
    done_at: int | None = None
    via: str = ""
    refusals: dict[str, int] = field(default_factory=dict)

    def msg(self) -> ClientSubmit:
        target = add_target(self.node, self.addr) if self.kind == ADD else self.node
        return ClientSubmit(self.req, MEMBER, "", target, self.kind, 0, 0, 0, 1, 2_000)


@dataclass(frozen=True, slots=True)
class Step:
    at_ns: int
    kind: str  # add, remove, kill
    node: str = ""  # "" for remove: a follower (shrink) or the leader (remove-leader), picked then
    leader: bool = False
    scenario: str = ""


class StrongMembersNemesis:
    """One seed's strong-mode membership scenarios and the operator's commands."""

    def __init__(self, rng: random.Random, ids: list[str], duration_ns: int) -> None:
        self.rng = rng
        self.ids0 = list(ids)
        self.steps: list[Step] = []
        self.commands: dict[str, Command] = {}
        self.scenarios: list[str] = []
        self.removed: dict[str, Command] = {}
        self.added: list[str] = []
        self.promoted: set[str] = set()  # voters in a configuration some leader committed
        self.counters = {"commands_sent": 0, "refused": 0, "acked": 0, "removed_messages": 0, "stopped": 0}
        self._n = 0
        self._next_id = len(ids) + 1
        self._plan(duration_ns)

    def _plan(self, duration_ns: int) -> None:
        rng = self.rng
        k = 1 if rng.random() < 0.5 else 2
        span = max(SEC, duration_ns - 2 * SEC) // k
        voters = len(self.ids0)
        alive = list(self.ids0)
        for i in range(k):
            t = SEC + i * span + rng.randrange(max(1, span // 3))
            choices = [s for s in SCENARIOS if voters > MIN_VOTERS or s in ("grow", "grow2", "replace")]
            scen = rng.choice(choices)
            self.scenarios.append(scen)
            if scen == "grow":
                self.steps.append(Step(t, "add", self._new_id(), scenario=scen))
                voters += 1
            elif scen == "grow2":
                self.steps += [Step(t, "add", self._new_id(), scenario=scen), Step(t, "add", self._new_id(), scenario=scen)]
                voters += 2
            elif scen in ("shrink", "remove-leader"):
                self.steps.append(Step(t, "remove", leader=scen == "remove-leader", scenario=scen))
                voters -= 1
            else:  # replace
                x = rng.choice(alive)
                alive.remove(x)
                self.steps += [Step(t, "kill", x, scenario=scen),
                               Step(t + rng.randint(SEC // 2, 2 * SEC), "remove", x, scenario=scen),
                               Step(t + rng.randint(SEC, 3 * SEC), "add", self._new_id(), scenario=scen)]
        self.steps.sort(key=lambda s: s.at_ns)

    def _new_id(self) -> str:
        nid = f"n{self._next_id}"
        self._next_id += 1
        return nid

    def describe(self) -> list[str]:
        return [f"{s.at_ns / SEC:8.3f}s members: {s.kind} {s.node or ('the leader' if s.leader else 'a follower')} "
                f"({s.scenario})" for s in self.steps]

    def command(self, step: Step, node: str) -> Command:
        self._n += 1
        addr = f"10.0.0.{int(node[1:]) % 250 + 1}:7401" if step.kind == "add" else ""
        c = Command(f"member-{self._n}", ADD if step.kind == "add" else REMOVE, node, addr, step.leader, step.scenario)
        self.commands[c.req] = c
        return c

    def pending(self) -> list[Command]:
        """Commands not acknowledged yet, and (as ``promote`` commands) added nodes no leader has
        committed as voters yet: the run settles only once both are done."""
        return ([c for c in self.commands.values() if c.done_at is None]
                + [Command(f"promote-{n}", ADD, n, scenario="promote") for n in self.added if n not in self.promoted])

    def on_reply(self, node: str, rep: ClientReply, t: int) -> Command | None:
        """A reply to a command from ``node``: the command if this acknowledged it."""
        c = self.commands.get(rep.req)
        if c is None or c.done_at is not None:
            return None
        if rep.code == E_TIMEOUT and rep.order_id:  # appended, not committed within the wait: ask anew
            del self.commands[c.req]
            self._n += 1
            c.req = f"member-{self._n}"
            self.commands[c.req] = c
            return None
        if not (rep.code == OK or (rep.code == E_INVALID and "already" in rep.message and c.sent > 1)):
            self.counters["refused"] += 1
            key = "retry" if rep.code == E_NOT_READY else f"code {rep.code}: {rep.message[:60]}"
            c.refusals[key] = c.refusals.get(key, 0) + 1
            return None
        c.done_at, c.via = t, node
        self.counters["acked"] += 1
        if c.kind == REMOVE:
            self.removed[c.node] = c
        else:
            self.added.append(c.node)
        return c

    def stats(self) -> dict[str, Any]:
        return {"scenarios": self.scenarios, **self.counters, "removed": sorted(self.removed), "added": list(self.added)}


class StrongMembersDriver(NemesisDriver):
    """The simulator's side (``cluster.py`` calls these hooks, as it does ``members.MembersDriver``'s)."""

    nem: StrongMembersNemesis
    command = Command

    def __init__(self, nemesis: StrongMembersNemesis, event_kind: int) -> None:
        super().__init__(nemesis, event_kind)
        self.voters_at: dict[str, set[str]] = {}  # (eventual mode's; unused here)
        #: node -> (its boot count, the configuration entries its log held after its last step)
        self.confs_seen: dict[str, tuple[int, set[int]]] = {}
        self.committed_epoch = 0  # the latest configuration epoch a leader committed

    # ---- scheduling ---------------------------------------------------------------------------------
    def _step(self, sim: Any, s: Step, t: int) -> None:
        if s.kind == "kill":
            sim._trace(t, f"members: kill {s.node} for good ({s.scenario})")
            self._kill(sim, s.node)
            return
        node = s.node
        if s.kind == "remove" and not node:
            lead = self._leader(sim)
            if s.leader:
                node = lead or ""
            else:
                cands = sorted(n for n in sim.ids if n != lead and sim.nodes[n].state != "down"
                               and n not in self.nem.added)
                node = self.nem.rng.choice(cands) if cands else ""
            if not node:  # nobody to pick now: try again shortly
                sim._push(t + 200 * MS, self.kind, s)
                return
        sim._trace(t, f"members: {s.kind} {node} ({s.scenario})")
        self._send(sim, self.nem.command(s, node), t)

    def liveness(self, sim: Any) -> None:
        for nid in self.nem.added:  # acknowledged, not started yet: the operator starts it now
            if nid not in sim.nodes:
                self._boot_new(sim, nid, sim.now)

    def reapply_cut(self, sim: Any) -> None:
        """(no cut of its own: the random nemesis' partitions stand)"""

    @staticmethod
    def _leader(sim: Any) -> str | None:
        best = None
        for n in sim.ids:
            core = sim.nodes[n].core
            if core is not None and core.seq.role is LEADER and (best is None or core.seq.term > best[0]):
                best = (core.seq.term, n)
        return best[1] if best else None

    # ---- commands -----------------------------------------------------------------------------------
    def _target(self, sim: Any, c: Command) -> str | None:
        cands = sorted(n for n in sim._up() if n != c.node)
        return self.nem.rng.choice(cands) if cands else None

    def on_frame(self, sim: Any, frame: Any, t: int) -> None:
        if type(frame.msg) is not ClientReply:
            return
        c = self.nem.on_reply(frame.sender, frame.msg, t)
        if c is None:
            return
        if c.kind == ADD:
            sim._trace(t, f"members: {c.node} added as a learner via {frame.sender}")
            delay = 0 if sim.heal_t is not None else self.nem.rng.randint(100 * MS, 1500 * MS)
            sim._push(t + delay, self.kind, ("boot", c.node))
        elif c.node in sim.ids:  # the runbook: a removed node is stopped (it stops itself once it sees it)
            sim._trace(t, f"members: {c.node} removed via {frame.sender}; stopping it")
            self.nem.counters["stopped"] += 1
            self._kill(sim, c.node)

    def _link_ns(self) -> int:
        return self.nem.rng.randint(50_000, MS)

    # ---- hooks --------------------------------------------------------------------------------------
    def for_clients(self, up: list[str]) -> list[str]:
        return up

    def boot_args(self, node: str, file_ids: list[str]) -> tuple[list[str], bool]:
        """The initial configuration (the original nodes) and whether ``node`` joins as a learner."""
        return file_ids, node not in file_ids

    def expected_refusal(self, reason: str, sender: str) -> bool:
        """Membership changed under the message: an added node's probes reaching a node that does
        not hold its learner entry yet, a node being removed (forgotten where its removal is
        appended, before the operator stops it): dropped and counted, as the shell does."""
        leaving = {c.node for c in self.nem.commands.values() if c.kind == REMOVE}
        if sender in self.nem.added or sender in leaving:
            self.nem.counters["removed_messages"] += 1
            return True
        return False

    def holders(self, sim: Any, node: Any, op: Any, level: int) -> tuple[int, list[str]]:  # eventual only
        raise AssertionError("strong mode acknowledges at commit")

    def after_flush(self, sim: Any, node: Any, t: int) -> None:
        """``conf_two_pending`` (see the module header), after each step of ``node``."""
        core = node.core
        if core is None:
            return
        seq = core.seq
        now = set(seq.conf_indices())
        last = self.confs_seen.get(node.id)
        self.confs_seen[node.id] = (node.boots, now)
        if seq.role is LEADER and seq.conf.index <= seq.commit_index and seq.conf.epoch > self.committed_epoch:
            # a change committed since convergence was judged: judge it again, with the change
            self.committed_epoch = seq.conf.epoch
            self.nem.promoted |= seq.conf.voters
            sim.converged_t = None
        if last is None or last[0] != node.boots:
            return  # first look after a boot: a restart's commit index is only a hint
        seen = last[1]
        for j in sorted(now - seen):
            older = [i for i in now if i < j and i > seq.commit_index]
            if older:
                sim.checker.violation("conf_two_pending", node.id, t,
                                      f"{node.id} appended configuration entry {j} while entry {older[0]} was "
                                      f"uncommitted (commit index {seq.commit_index}): two changes at once")

    def finish(self, sim: Any, t: int) -> None:
        """``conf_diverged`` and ``membership_stalled`` (see the module header)."""
        cores = {n: sim.nodes[n].core for n in sim.ids if sim.nodes[n].core is not None}
        # the committed configuration (a leader may have appended a promotion a moment ago)
        at = {n: c.seq.conf_at(c.seq.commit_index) for n, c in cores.items()}
        confs = {n: (c.epoch, sorted(c.voters), sorted(c.learners)) for n, c in at.items()}
        if len(set(map(repr, confs.values()))) > 1:
            sim.checker.violation("conf_diverged", "", t, "configurations at the end: "
                                  + "; ".join(f"{n} {v}" for n, v in sorted(confs.items())))
        for c in self.nem.pending():
            if c.scenario == "promote":
                sim.checker.violation("membership_stalled", c.node, t, f"{c.node} was added but no leader "
                                      f"committed it as a voter")
                continue
            sim.checker.violation("membership_stalled", "", t, f"{'add' if c.kind == ADD else 'remove'} {c.node} "
                                  f"was never acknowledged ({c.sent} attempts; refusals {c.refusals})")

