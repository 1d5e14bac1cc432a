"""Membership changes in the simulator's nemesis (issue 20): remove, add, replace, and a zombie.

Theory of operation
-------------------
With ``SimConfig.members`` a seed draws, from a stream of its own (so every other stream, and the
seeds that run without it, are unchanged), one or two **scenarios** over the safety phase:

- ``shrink``: a node is killed for good (SIGKILL, its disk gone with the host), then the operator
  removes it through a live node once the survivors have noticed (1-3 s later);
- ``grow``: the operator adds a new node through a live one; when the add is acknowledged the new
  node boots with ``join = true`` and the member list the stamping node knew (what ``gossipbook
  cluster add-node`` prints), learns the configuration, catches up and trades;
- ``replace``: ``shrink`` then ``grow``: a dead host replaced by a fresh one;
- ``zombie``: a node is cut off from every other node (clients still reach it, and it keeps
  taking orders); the operator removes it with ``--force``; the cut heals and the node runs on for
  a second or two before it is stopped: its orders stamped after the fence reach the others by
  anti-entropy, which must refuse them (``OpFenced``, counted), and it learns of its own removal
  from their answers and stops stamping. ``--break no-fence`` lets those ops in; the checker sees it.

The operator is a client of its own (sender ``opsadmin``, account ``operator``) that sends each
command to a random live node and resends it (to any live node) until one says ``ok``, through
refusals that say "retry" (a removal waits until every remaining member has reported since the
dead one was last heard from) and lost datagrams, in the liveness phase too.

Checks (``MembersCheck``, at the end of the run):

- ``removed_op_applied``: no replica holds an op of a removed member above its fence;
- ``lost_ack`` (the checker's): an op of a member that was removed dead and acknowledged
  ``replicated`` or ``final`` is inside the fence and held everywhere (one acknowledged
  ``accepted`` by the dead node alone died with its host, and one stamped after a forced fence
  is refused by design: those acknowledgements are set aside, counted in ``acks_set_aside``);
- ``membership_stalled``: every command was acknowledged by the end of the liveness phase;
- finality resuming after a removal is the checker's ``finality_stalled`` (the liveness phase
  needs every op final, which waits for a dead member until it is removed);
- a node killed for good may have called trades final in a view that counted its own ops nobody
  else received (the fence keeps them out): its own final claims are voided (``_void_final``), the
  survivors' stay held to each other.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..core.config_epoch import ADD, MEMBER, REMOVE, add_target
from ..core.node import E_INVALID, E_NOT_READY, E_TIMEOUT, OK
from ..core.wire import ClientReply, ClientSubmit
from .clock import MS, SEC

CLIENT = "opsadmin"  # the operator's sender id in the simulator (it acts as the operator account)
ACCOUNT = "operator"
SCENARIOS = ("shrink", "grow", "replace", "zombie")
RETRY_NS = 400 * MS  # a command nobody answered (or refused for now) is sent again after this
#: clients leave the zombie alone this long before its cut, so every op it stamped before the cut
#: has reached the far side or been reported there; what a forced fence cuts is then only what it
#: stamped after (a forced removal of a live member can cut ops final beyond a cut: see
#: ``check_remove``; that is the operator's risk, not what this scenario is about)
QUIET_NS = 400 * MS


@dataclass(slots=True)
class Command:
    """One operator command and how it went."""

    req: str
    kind: int  # ADD or REMOVE
    node: str
    force: bool = False
    zombie: bool = False  # the zombie's forced removal
    together: tuple[str, ...] = ()  # other dead members removed by the same command (two dead at once)
    addr: str = ""
    sent: int = 0  # attempts
    done_at: int | None = None
    via: str = ""  # the node that acknowledged it
    fence: int | None = None
    refusals: dict[str, int] = field(default_factory=dict)

    def msg(self) -> ClientSubmit:
        target = add_target(self.node, self.addr) if self.kind == ADD else ",".join(sorted({self.node, *self.together}))
        # ``replicated``, as the CLI waits: a change only its stamping node held could die with it
        return ClientSubmit(self.req, MEMBER, "", target, self.kind, 0, 0, 1 if self.force else 0, 1, 2_000)


@dataclass(frozen=True, slots=True)
class Step:
    """One scheduled membership action (true time offset from the start)."""

    at_ns: int
    kind: str  # kill, remove, add, cut, heal
    node: str = ""
    peer: str = ""  # cut: the one peer left on the node's side
    force: bool = False
    scenario: str = ""


class MembersNemesis:
    """One seed's membership scenarios, the operator's commands and their checks."""

    def __init__(self, rng: random.Random, ids: list[str], duration_ns: int, zombie: bool = True) -> None:
        """``zombie``: the seed may draw the zombie scenario (the simulator allows it only when the
        seed's clocks are not skewed: with a clock ahead, a member's last heartbeat before a cut can
        make ops stamped after the cut final beyond it, and a forced fence then cuts them: the
        operator's documented risk with --force, not a fault of the fence)."""
        self.rng = rng
        self.allow_zombie = zombie
        self.ids0 = list(ids)
        self.steps: list[Step] = []
        self.commands: dict[str, Command] = {}
        self.scenarios: list[str] = []
        self.boot_args: dict[str, tuple[list[str], bool]] = {}  # node -> (its file's members, joining)
        self.removed: dict[str, Command] = {}  # acknowledged removals
        self.added: list[str] = []  # acknowledged adds, in order
        self.cut: set[tuple[str, str]] = set()  # the zombie's partition (links blocked)
        self.zombie_side: dict[str, set[str]] = {}  # zombie -> its side of the cut (itself and one peer)
        self.draining: set[str] = set()  # nodes clients leave alone for now
        self.counters = {"commands_sent": 0, "refused": 0, "acked": 0, "acks_set_aside": 0,
                         "removed_messages": 0}
        self._n = 0
        self._next_id = len(ids) + 1
        self._plan(duration_ns)

    # ---- the plan -----------------------------------------------------------------------------------
    def _plan(self, duration_ns: int) -> None:
        """One or two scenarios, each in its own stretch of the safety phase (at most one zombie,
        and never fewer than two original nodes left)."""
        rng = self.rng
        n = len(self.ids0)
        k = 1 if rng.random() < 0.6 or n < 4 else 2
        victims = rng.sample(self.ids0, min(n - 2, k)) if n >= 3 else []
        span = max(SEC, duration_ns - 2 * SEC) // k
        for i in range(k):
            lo = SEC + i * span
            choices = [c for c in SCENARIOS if c != "zombie" or (self.allow_zombie and "zombie" not in self.scenarios)]
            scen = rng.choice(choices) if i < len(victims) else "grow"
            t = lo + rng.randrange(max(1, span // 3))
            self.scenarios.append(scen)
            if scen == "grow":
                self.steps.append(Step(t, "add", self._new_id(), scenario=scen))
                continue
            x = victims[i]
            if scen == "zombie" and lo + span - t < 3 * SEC:
                scen = self.scenarios[-1] = "shrink"
            if scen == "zombie":
                d = rng.randint(300 * MS, 1200 * MS)
                heal = t + d + rng.randint(500 * MS, 1500 * MS)
                self.steps += [Step(t - QUIET_NS, "drain", x, scenario=scen),
                               Step(t, "cut", x, scenario=scen),
                               Step(t + d, "remove", x, force=True, scenario=scen),
                               Step(heal, "heal", x, scenario=scen),
                               Step(heal + rng.randint(500 * MS, 1500 * MS), "kill", x, scenario=scen)]
                continue
            self.steps += [Step(t, "kill", x, scenario=scen),
                           Step(t + rng.randint(SEC, 3 * SEC), "remove", x, scenario=scen)]
            if scen == "replace":
                self.steps.append(Step(t + rng.randint(SEC, 4 * SEC), "add", self._new_id(), scenario=scen))
        self.steps.sort(key=lambda s: s.at_ns)

    def _new_id(self) -> str:
        nid = f"n{self._next_id}"
        self._next_id += 1
        return nid

    def describe(self) -> list[str]:
        return [f"{s.at_ns / SEC:8.3f}s members: {s.kind} {s.node}{' via ' + s.peer if s.peer else ''}"
                f"{' --force' if s.force else ''} ({s.scenario})" for s in self.steps]

    # ---- commands -----------------------------------------------------------------------------------
    def command(self, step: Step) -> Command:
        self._n += 1
        kind = ADD if step.kind == "add" else REMOVE
        addr = f"10.0.0.{int(step.node[1:]) % 250 + 1}:7401" if kind == ADD else ""
        c = Command(f"member-{self._n}", kind, step.node, force=step.force, zombie=step.force, addr=addr)
        self.commands[c.req] = c
        return c

    def pick(self, c: Command, up: Iterable[str]) -> str | None:
        """A live node to send ``c`` to: never the member being removed, nor (a forced removal)
        the peer cut off with it."""
        avoid = {c.node} | self.zombie_side.get(c.node, set())
        if c.kind == ADD:  # never through a node about to be fenced: its ops above the fence go
            avoid |= {x for side in self.zombie_side.values() for x in side} | self.draining
        cands = sorted(n for n in up if n not in avoid)
        return self.rng.choice(cands) if cands else None

    def on_reply(self, node: str, rep: ClientReply, t: int, config: Any) -> str | None:
        """A reply to a command from ``node`` (``config``: its replica's configuration then).
        Returns the id of a node the simulator must now boot (an add was acknowledged), else None."""
        c = self.commands.get(rep.req)
        if c is None or c.done_at is not None:
            return None
        done = rep.code == OK or (rep.code == E_INVALID and "already" in rep.message)
        if rep.code == E_TIMEOUT and rep.order_id:
            # stamped there, not replicated within the wait: that reply is what the node keeps for
            # this request id, so ask again under a new one ("already ..." once the change spread)
            del self.commands[c.req]
            self._n += 1
            c.req = f"member-{self._n}"
            self.commands[c.req] = c
            return None
        if not done:
            self.counters["refused"] += 1
            key = "retry" if rep.code == E_NOT_READY else f"code {rep.code}"
            c.refusals[key] = c.refusals.get(key, 0) + 1
            return None
        c.done_at, c.via = t, node
        self.counters["acked"] += 1
        if c.kind == REMOVE:
            c.fence = config.fences.get(c.node)
            self.removed[c.node] = c
            return None
        self.added.append(c.node)
        self.boot_args[c.node] = (sorted(config.members | {c.node}), True)
        return c.node

    def pending(self) -> list[Command]:
        return [c for c in self.commands.values() if c.done_at is None]

    # ---- checks -------------------------------------------------------------------------------------
    def fences(self, replicas: Mapping[str, Any]) -> dict[str, int]:
        """Removed member -> fence, as the live replicas' configurations hold them (they agree once
        converged; an acknowledgement may have been lost while the removal took effect)."""
        out: dict[str, int] = {}
        for r in replicas.values():
            for x, f in r.config.fences.items():
                out[x] = max(f, out.get(x, f))
        return out

    def set_aside(self, acks: Iterable[Any], stamped: Mapping[tuple[str, str], Any],
                  fences: Mapping[str, int]) -> list[Any]:
        """The acknowledgements the checker's ``lost_ack`` must hold, less those the removals took
        by design: an op of a removed member above its fence acknowledged ``accepted`` (it lived on
        the dead node's disk only), or stamped after a forced fence."""
        forced = {c.node for c in self.commands.values() if c.zombie}
        out = []
        for ack in acks:
            op = stamped.get((ack.node, ack.req))
            fence = fences.get(op.origin) if op is not None else None
            if fence is not None and op.seq > fence and (ack.level == 0 or op.origin in forced):
                self.counters["acks_set_aside"] += 1
                continue
            out.append(ack)
        return out

    def final_state(self, checker: Any, replicas: Mapping[str, Any], fences: Mapping[str, int], t: int) -> None:
        """``removed_op_applied`` and ``membership_stalled`` (see the module header)."""
        for x, fence in sorted(fences.items()):
            for node, r in replicas.items():
                held = r.vv.get(x, 0)
                above = [op for op in r.ops() if op.origin == x and op.seq > fence]
                if held > fence or above:
                    checker.violation("removed_op_applied", node, t, f"{node} holds ops of removed {x} up to "
                                      f"seq {held}, above its fence {fence}"
                                      f"{f' (in its fold: {above[0].op_id})' if above else ''}")
                    break
        for c in self.pending():
            took = (c.node in fences) if c.kind == REMOVE else any(r.config.added(c.node) for r in replicas.values())
            if not took:
                checker.violation("membership_stalled", "", t, f"{'add' if c.kind == ADD else 'remove'} {c.node} "
                                  f"was never acknowledged nor took effect ({c.sent} attempts; refusals "
                                  f"{c.refusals})")

    def stats(self) -> dict[str, Any]:
        return {"scenarios": self.scenarios, **self.counters,
                "removed": {x: c.fence for x, c in self.removed.items()}, "added": list(self.added)}


class NemesisDriver:
    """What the eventual and strong membership drivers share: scheduling the nemesis' steps, the
    operator's command (re)sent to a node through the simulated network, a node killed for good,
    and a new node booted with links to every other. Subclasses say where a command goes
    (``_target``), what a step does (``_step``) and how slow a new node's links are (``_link_ns``)."""

    command: type  # the subclass' command class (what ``on_event`` resends)

    def __init__(self, nemesis: Any, event_kind: int) -> None:
        self.nem = nemesis
        self.kind = event_kind  # the simulator's event code for membership events

    # ---- scheduling ---------------------------------------------------------------------------------
    def start(self, sim: Any, t0: int) -> None:
        for s in self.nem.steps:
            sim._push(t0 + s.at_ns, self.kind, s)

    def on_event(self, sim: Any, what: Any, t: int) -> None:
        """A scheduled step, a command to (re)send, or ``("boot", id)``."""
        if isinstance(what, tuple):
            self._boot_new(sim, what[1], t)
        elif isinstance(what, self.command):
            self._send(sim, what, t)
        else:
            self._step(sim, what, t)

    def _step(self, sim: Any, s: Any, t: int) -> None:
        raise NotImplementedError

    def _kill(self, sim: Any, x: str) -> None:
        node = sim.nodes[x]
        node.core = None
        node.state = "down"
        node.inbox = []
        node.wake_gen += 1
        node.wake_at = -1
        sim.gone.add(x)
        if x in sim.ids:
            sim.ids.remove(x)

    # ---- the operator's commands --------------------------------------------------------------------
    def _target(self, sim: Any, c: Any) -> str | None:
        raise NotImplementedError

    def _send(self, sim: Any, c: Any, t: int) -> None:
        if c.done_at is not None:
            return
        from ..core.wire import encode
        from .cluster import DELIVER, account_key

        node = self._target(sim, c)
        if node is not None:
            c.sent += 1
            self.nem.counters["commands_sent"] += 1
            data = encode(c.msg(), CLIENT, sim._client_counter(CLIENT), account_key(ACCOUNT), ACCOUNT)
            for d in sim.net.route(CLIENT, node):
                sim._push(t + d, DELIVER, node, data, CLIENT)
        sim._push(t + RETRY_NS, self.kind, c)

    def _link_ns(self) -> int:
        raise NotImplementedError

    def _boot_new(self, sim: Any, nid: str, t: int) -> None:
        from .cluster import SimNode

        if nid in sim.nodes:
            return
        clock = sim.plan.clocks(self.nem.rng, [nid], sim.cfg.max_offset_ns)[nid]
        sim.nodes[nid] = SimNode(nid, clock)
        net = sim.net
        for other in list(sim.nodes):
            if other != nid:
                for link in ((nid, other), (other, nid)):
                    net.base[link] = self._link_ns()
        net.base_nodes = net.base_nodes | {nid}
        sim.ids.append(nid)
        sim.converged_t = sim.final_t = None  # the cluster grew: convergence is judged again, with it
        sim._boot(sim.nodes[nid], t)


class MembersDriver(NemesisDriver):
    """The simulator's side of the membership nemesis: it acts on a ``Simulation`` (``sim``) through
    a few hooks there (``cluster.py``: ``members``, ``gone``, ``file_ids``), so that file stays a
    driver of cores and this one holds everything about membership changes."""

    nem: MembersNemesis
    command = Command

    def __init__(self, nemesis: MembersNemesis, event_kind: int) -> None:
        super().__init__(nemesis, event_kind)
        self.voters_at: dict[str, set[str]] = {}  # node -> its voters as its current step began
        self.judged: dict[tuple[str, str, int], tuple[int, list[str]]] = {}  # (node, op id, level) -> first verdict

    # ---- scheduling ---------------------------------------------------------------------------------
    def _step(self, sim: Any, s: Step, t: int) -> None:
        sim._trace(t, f"members: {s.kind} {s.node}{' --force' if s.force else ''} ({s.scenario})")
        if s.kind == "kill":
            self._kill(sim, s.node)
        elif s.kind == "drain":
            self.nem.draining.add(s.node)
        elif s.kind == "cut":
            side = {s.node}
            rest = [n for n in sim.ids if n not in side]
            self.nem.zombie_side[s.node] = side
            self.nem.draining.discard(s.node)
            self.nem.cut = {(a, b) for a in side for b in rest} | {(b, a) for a in side for b in rest}
            sim.net.blocked |= self.nem.cut
        elif s.kind == "heal":
            # the runbook: keep a forced-out member cut off until every member holds its removal
            # (its later ops then meet the fence wherever they arrive; one that arrived first could
            # be called final there, below the stamping node's last bound, and then be cut)
            live = [sim.nodes[n].core for n in sim.ids if n != s.node and sim.nodes[n].core is not None]
            if not live or not all(s.node in c.replica.config.fences for c in live) or len(live) < len(sim.ids) - 1:
                sim._push(t + 200 * MS, self.kind, s)
                return
            sim.net.blocked -= self.nem.cut
            self.nem.cut = set()
        else:
            self._send(sim, self.nem.command(s), t)

    def liveness(self, sim: Any) -> None:
        """The liveness phase heals every cut: a zombie still running is stopped first (its fence is
        the operator's word that it is gone)."""
        for x in list(self.nem.zombie_side):
            if x not in sim.gone:
                self._kill(sim, x)
        self.nem.cut = set()
        self.nem.draining = set()
        for nid in self.nem.added:  # acknowledged, not started yet: the operator starts it now
            if nid not in sim.nodes:
                self._boot_new(sim, nid, sim.now)

    def reapply_cut(self, sim: Any) -> None:
        """After the random nemesis partitions or heals: the zombie's cut stays until its own heal."""
        if self.nem.cut:
            sim.net.blocked |= self.nem.cut

    def _kill(self, sim: Any, x: str) -> None:
        super()._kill(sim, x)
        self._void_final(sim, x)

    @staticmethod
    def _void_final(sim: Any, x: str) -> None:
        """A node gone for good took its own unreplicated ops with it, and the fence keeps them out:
        the trades it called final were final *in its view*, which counted them. The checker holds
        the cluster to what the surviving nodes call final (the survivors' claims stay checked, and
        any two of them still may not disagree); ``final`` acks ``x`` gave are dropped likewise."""
        ck = sim.checker
        ck.final_on.pop(x, None)
        for tid in [tid for tid, n in ck.final_by.items() if n == x]:
            other = next((n for n, tids in sorted(ck.final_on.items()) if tid in tids), None)
            if other is not None:  # a survivor called it final too (the same version, or it was flagged)
                ck.final_by[tid] = other
                continue
            del ck.final_by[tid]
            ck.final.pop(tid, None)
        sim._final_acks[:] = [a for a in sim._final_acks if a[1] != x]

    # ---- the operator's commands --------------------------------------------------------------------
    def _target(self, sim: Any, c: Command) -> str | None:
        node = self.nem.pick(c, sim._up())
        if node is not None and c.kind == REMOVE and not c.zombie:  # two dead at once: one command
            fenced = sim.nodes[node].core.replica.config.fences if sim.nodes[node].core is not None else {}
            c.together = tuple(sorted(g for g in sim.gone if g != c.node and g not in fenced
                                      and g not in self.nem.removed))
        return node

    def on_frame(self, sim: Any, frame: Any, t: int) -> None:
        """A reply to the operator from node ``frame.sender``."""
        if type(frame.msg) is not ClientReply:
            return
        node = sim.nodes.get(frame.sender)
        core = node.core if node is not None else None
        if core is None:
            return
        boot = self.nem.on_reply(frame.sender, frame.msg, t, core.replica.config)
        if boot is not None:
            sim._trace(t, f"members: {boot} added via {frame.sender}; its file lists "
                          f"{','.join(self.nem.boot_args[boot][0])}")
            # the operator starts the new node a moment later (at once in the liveness phase)
            delay = 0 if sim.heal_t is not None else self.nem.rng.randint(100 * MS, 1500 * MS)
            sim._push(t + delay, self.kind, ("boot", boot))

    def _link_ns(self) -> int:
        """Most links fast, one in five slow (as the simulator draws the first nodes')."""
        r = self.nem.rng.random()
        return self.nem.rng.randint(50_000, MS) if r < 0.8 else self.nem.rng.randint(MS, 20 * MS)

    def holders(self, sim: Any, node: Any, op: Any, level: int) -> tuple[int, list[str]]:
        """``(disks holding op, voters)`` for a ``replicated`` ack from ``node``: the majority is of
        the voters it knew (members less learners), before or after the step that sent the ack (a
        learner that announced itself, or a removal, in the same step may move it either way)."""
        key = (node.id, op.op_id, level)
        if key in self.judged:  # a cached reply sent again: judged when it was first made
            return self.judged[key]
        best = None
        for voters in (self.voters_at.get(node.id, set()), node.core.replica.voters()):
            ids = sorted(voters)
            n = sum(1 for m in ids if m in sim.nodes and sim.nodes[m].disk.holds(op.origin, op.seq))
            if best is None or (n * 2 > len(ids) and not best[0] * 2 > len(best[1])):
                best = (n, ids)
        assert best is not None
        self.judged[key] = best
        return best

    def for_clients(self, up: list[str]) -> list[str]:
        """The live nodes clients may send to now (not one being drained before its cut)."""
        return [n for n in up if n not in self.nem.draining] if self.nem.draining else up

    def boot_args(self, node: str, file_ids: list[str]) -> tuple[list[str], bool]:
        """The member list of ``node``'s file and whether it joins (an added node's)."""
        return self.nem.boot_args.get(node, (file_ids, False))

    def expected_refusal(self, reason: str, sender: str) -> bool:
        """A core refused a message from ``sender`` because membership changed under it (a removed
        member's message in flight or its zombie talking; a new member not yet known here): the
        shell drops and counts these, and so does the simulator (not a violation)."""
        if reason == "removed_member" or sender in self.nem.added or sender in self.nem.boot_args:
            self.nem.counters["removed_messages"] += 1
            return True
        return False
