"""``gossipbook demo --replace``: a node killed for good, removed by the operator, a fresh one added,
while the order flow keeps going.

Theory of operation
-------------------
The script drives a running ``Scenario`` (its nodes are real ``NodeRunner``\\ s in one trio run):

1. **Kill** the last node (``Scenario.kill``): every datagram it would send is dropped and its task
   is cancelled, so it vanishes without a goodbye, like a SIGKILLed process. The flow stops sending
   to it. Finality now waits for it: trades pile up provisional on every remaining node.
2. **Remove** it the way an operator does, with the real command in a child process:
   ``gossipbook cluster remove-node -c <the demo's cluster.toml> n4 --write``. The moment the first
   remaining node holds the removal is the removal's time; the trades each remaining node held then
   must all become final, and the time until they are is "finality resumed".
3. **Add** a fresh node under a new id: ``gossipbook cluster add-node ... --id n5 --write``, then
   start it from the file that command wrote (``join = true``). It is a learner until every
   remaining node has heard from it, takes orders once it holds its own add op (the flow then
   sends the killed node's desk to it), and has caught up once every live replica holds the same
   op-set and digest: the time from its start to then is "caught up".

Everything the views and the summary say comes from the nodes (their configuration, trades and
digests), never from what the script meant to do. Every wait is bounded by the run's ``duration``;
a step that does not happen is logged and the run ends with ``replace["complete"]`` false.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from .scenario import Scenario

#: how long an operator command may take (a child process on a busy machine)
COMMAND_TIMEOUT_S = 30.0
#: how long to let SWIM call the killed node dead before removing it (what an operator checks first)
SEE_DEAD_S = 3.0
POLL_S = 0.005


@dataclass
class ReplaceFacts:
    """What ``--replace`` measured (seconds are since the run's start; ``*_ms`` are durations)."""

    killed: str = ""
    added: str = ""
    killed_at: float | None = None
    removed_at: float | None = None  # the first remaining node held the removal
    fence: int | None = None
    provisional_at_removal: int = 0  # the most provisional trades a remaining node held then
    finality_ms: float | None = None  # from the removal until those trades were final everywhere
    started_at: float | None = None  # the new node's start
    ready_ms: float | None = None  # ... until it took orders
    voter_ms: float | None = None  # ... until every remaining node counted it a voter
    caught_up_ms: float | None = None  # ... until every live replica held the same op-set and digest
    commands: list[dict[str, Any]] = field(default_factory=list)  # each operator command and its exit code
    steps: list[list[Any]] = field(default_factory=list)  # [t, text]: the narration, as logged

    @property
    def complete(self) -> bool:
        return self.finality_ms is not None and self.caught_up_ms is not None


async def operator(sc: Scenario, *args: str) -> int:
    """Run ``gossipbook ARGS`` as the operator would (a child process); its output becomes events."""
    shown = "gossipbook " + " ".join(a if a != sc.config_path else "cluster.toml" for a in args)
    say(sc, "member", f"operator: {shown}")
    rc = -1
    with trio.move_on_after(COMMAND_TIMEOUT_S):
        p = await trio.run_process([sys.executable, "-m", "gossipbook", *args], capture_stdout=True,
                                   capture_stderr=True, check=False)
        rc = p.returncode
        for ln in (p.stdout + p.stderr).decode(errors="replace").splitlines():
            if ln.strip():
                say(sc, "member" if rc == 0 else "error", f"  {ln.strip()}")
    if rc == -1:
        say(sc, "error", f"  gave up after {COMMAND_TIMEOUT_S:g} s")
    sc.replace.commands.append({"command": shown, "exit": rc})
    return rc


def say(sc: Scenario, kind: str, text: str) -> None:
    """One narration line: on the screen's event log, and in ``steps`` (``--json`` carries them)."""
    sc.log(kind, text)
    sc.replace.steps.append([round(sc.now(), 2), text])


def _live(sc: Scenario) -> list[str]:
    return [n for n in sc.runners if n != sc.killed]


async def play(sc: Scenario) -> None:
    """The script; returns when it is done or cannot go on (the caller bounds it by the duration)."""
    opts, f = sc.opts, sc.replace
    victim, new = opts.victim, opts.newcomer
    f.killed, f.added = victim, new
    await sc._sleep_until_t(opts.kill_at)
    sc.kill(victim)
    f.killed_at = sc.now()
    sc.phase = "killed"
    say(sc, "dead", f"{victim} killed for good (no goodbye); finality waits for it: trades stay provisional")
    with trio.move_on_after(SEE_DEAD_S):
        while not all(sc.runners[n].core.membership.states().get(victim) == "dead" for n in _live(sc)):
            await trio.sleep(0.05)

    sc.phase = "removing"
    async with trio.open_nursery() as n:
        n.start_soon(_watch_removal, sc, victim)
        rc = await operator(sc, "cluster", "remove-node", "-c", sc.config_path, victim, "--write",
                            "--timeout", "20")
        if rc != 0:
            n.cancel_scope.cancel()
            say(sc, "error", f"the removal of {victim} failed; the run cannot go on")
            return
    if f.finality_ms is None:
        return
    sc.phase = "adding"
    await _add(sc, new)


async def _watch_removal(sc: Scenario, victim: str) -> None:
    """Note when the removal lands, then when every trade held at that moment is final everywhere."""
    f = sc.replace
    # the trades each node held just before the removal landed (the last poll without it: on
    # loopback it reaches every node within a poll, and finality moves at once)
    target: dict[str, int] = {}
    while not any(sc.runners[n].core.replica.config.removed(victim) for n in _live(sc)):
        target = {n: sc.runners[n].core.replica.trade_count for n in _live(sc)}
        f.provisional_at_removal = max(t - sc.runners[n].core.replica.trades_final() for n, t in target.items())
        await trio.sleep(POLL_S)
    stamp = next(n for n in _live(sc) if sc.runners[n].core.replica.config.removed(victim))
    conf = sc.runners[stamp].core.replica.config
    f.fence = conf.fences.get(victim)
    # the removal's time is its op's stamp (this poll may come a few ms after it was stamped)
    op = next((o for o in conf.ops() if o.order_id == victim and o.side == 1), None)
    late_s = max(0.0, (sc.runners[stamp].clock() - op.wall) / 1e9) if op is not None else 0.0
    f.removed_at = round(sc.now() - min(late_s, 1.0), 3)
    sc.phase = "removed"
    k = f.provisional_at_removal
    say(sc, "member", f"{victim} removed (held first by {stamp}; its ops above seq {f.fence} refused everywhere); "
                     f"{k} trade{'s' if k != 1 else ''} provisional just before")
    while not all(sc.runners[n].core.replica.trades_final() >= t for n, t in target.items()):
        await trio.sleep(POLL_S)
    f.finality_ms = round((sc.now() - f.removed_at) * 1000, 1)
    say(sc, "converged", f"finality resumed: every trade held at the removal is final on {', '.join(target)} "
                        f"{f.finality_ms:.0f} ms after it")


async def _add(sc: Scenario, new: str) -> None:
    from ..config import load
    from .scenario import free_ports

    f = sc.replace
    port = free_ports(1)[0]
    rc = await operator(sc, "cluster", "add-node", "-c", sc.config_path, "--id", new, "--addr",
                        f"127.0.0.1:{port}", "--write", "--timeout", "20")
    if rc != 0:
        say(sc, "error", f"the addition of {new} failed; the run cannot go on")
        return
    cfg = load(sc.config_path)  # what the command wrote: the killed node gone, the new one with join = true
    await sc.start_node(cfg, new)
    f.started_at = sc.now()
    sc.phase = "joining"
    say(sc, "member", f"{new} started: a learner, it gets a snapshot and the ops since from the members")
    r = sc.runners[new]
    while not r.core.ready:
        await trio.sleep(POLL_S)
    f.ready_ms = round((sc.now() - f.started_at) * 1000, 1)
    sc.flow_ids.append(new)
    sc.desk_of[new] = sc.desk_of[sc.opts.victim]
    say(sc, "member", f"{new} takes orders ({f.ready_ms:.0f} ms after it started); {sc.desk_of[new]} now trades "
                     f"through it")

    def voter_everywhere() -> bool:
        for n in _live(sc):
            c = sc.runners[n].core
            if c.replica.config.roles(c.membership.states(), c.replica.heard()).get(new) != "voter":
                return False
        return True

    while not voter_everywhere():
        await trio.sleep(POLL_S)
    f.voter_ms = round((sc.now() - f.started_at) * 1000, 1)
    say(sc, "member", f"{new} is a voter on every node (learner → member, {f.voter_ms:.0f} ms after it started)")
    while not sc.converged_now():
        await trio.sleep(POLL_S / 2)
    f.caught_up_ms = round((sc.now() - f.started_at) * 1000, 1)
    sc.phase = "caught up"
    say(sc, "converged", f"{new} caught up: the same op-set and digest as every other node, "
                        f"{f.caught_up_ms:.0f} ms after it started")


def facts_json(sc: Scenario) -> dict[str, Any]:
    """``DemoResult.replaced``: the measurements and what the remaining nodes hold now."""
    f = sc.replace
    live = _live(sc)
    confs = {n: sc.runners[n].core.replica.config for n in live}
    roles = {n: c.roles(sc.runners[n].core.membership.states(), sc.runners[n].core.replica.heard())
             for n, c in confs.items()}
    return {"killed": f.killed, "added": f.added, "complete": f.complete,
            "epochs": {n: c.epoch for n, c in confs.items()},
            "killed_role": {n: r.get(f.killed) for n, r in roles.items()},
            "added_role": {n: r.get(f.added) for n, r in roles.items()},
            "fence": f.fence, "killed_at_s": f.killed_at, "removed_at_s": f.removed_at,
            "provisional_at_removal": f.provisional_at_removal, "finality_resumed_ms": f.finality_ms,
            "added_ready_ms": f.ready_ms, "added_voter_ms": f.voter_ms, "caught_up_ms": f.caught_up_ms,
            "commands": list(f.commands), "steps": list(f.steps)}


__all__ = ["ReplaceFacts", "facts_json", "operator", "play", "say"]
