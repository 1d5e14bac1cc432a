"""Strong-mode membership at the node core (``StrongNodeCore``): the operator's add-node and
remove-node become configuration entries; refusals are one line with the code the CLI acts on
(retry or give up) and change nothing; a caught-up learner is promoted; status reports the
configuration; a node with shards refuses changes.
"""

from __future__ import annotations

import random

from gossipbook.core.config_epoch import MEMBER
from gossipbook.core.instrument import Venue
from gossipbook.core.node import E_INVALID, E_NOT_OWNER, OK, Client
from gossipbook.core.sequencer import LEADER, AppendReply
from gossipbook.core.strong import StrongNodeCore
from gossipbook.core.wire import ClientReply, ClientSubmit

MS = 1_000_000
T0 = 10_000 * MS


def submit(core: StrongNodeCore, req: str, target: str, side: int, account: str = "operator",
           now: int = T0) -> ClientReply | None:
    # (a source of its own per request, and a long request id: a reply to an unproven source is held
    # to 3x the request's size, and a refusal's one line is longer than these requests)
    req = (req + "-" * 64)[:64]
    core.receive(ClientSubmit(req, MEMBER, "", target, side, 0, 0, 0, 1, 2_000), "cli",
                 ("127.0.0.1", 1000 + sum(map(ord, req))), now, account)
    for dst, m in core.outbox():
        if isinstance(dst, Client) and type(m) is ClientReply and m.req == req:
            return m
    return None


def alone() -> StrongNodeCore:
    core = StrongNodeCore("n1", ["n1"], Venue(), random.Random(1))
    core.tick(T0)
    core.tick(T0 + 400 * MS)
    assert core.seq.role is LEADER
    return core


def test_the_operator_adds_a_learner_and_it_is_promoted_once_caught_up() -> None:
    core = alone()
    rep = submit(core, "r1", "n2@127.0.0.1:9002", 0, now=T0 + SEC)
    assert rep is not None and rep.code == OK, rep
    conf = core.status()["config"]
    assert conf["roles"] == {"n1": "voter", "n2": "learner"} and conf["epoch"] == 1 and conf["committed"]
    assert conf["addresses"] == {"n2": "127.0.0.1:9002"}
    core.tick(T0 + SEC + 10 * MS)
    assert core.counters["promotions"] == 0  # it never answered: not promoted, however short the log
    core.receive(AppendReply(core.seq.term, True, core.seq.last_index), "n2", None, T0 + SEC + 20 * MS)
    core.tick(T0 + SEC + 30 * MS)
    assert core.counters["promotions"] == 1
    roles = core.status()["config"]["roles"]
    assert roles["n2"] == "voter" and core.status()["config"]["epoch"] == 2


def test_refusals_are_one_line_and_change_nothing() -> None:
    core = alone()
    before = core.status()["config"]
    rep = submit(core, "a1", "n2@127.0.0.1:9002", 0, account="alice", now=T0 + SEC)
    assert rep is not None and rep.code == E_NOT_OWNER and "only the operator" in rep.message
    rep = submit(core, "r2", "n2,n3", 1, now=T0 + SEC)
    assert rep is not None and rep.code == E_INVALID and "one server at a time" in rep.message
    rep = submit(core, "r3", "n1", 1, now=T0 + SEC)
    assert rep is not None and rep.code == E_INVALID and "last voter" in rep.message
    rep = submit(core, "r4", "n9", 1, now=T0 + SEC)
    assert rep is not None and rep.code == E_INVALID and "not a member" in rep.message
    rep = submit(core, "r5", "n2@bad", 0, now=T0 + SEC)
    assert rep is not None and rep.code == E_INVALID and "HOST:PORT" in rep.message
    for r in ("r2", "r3", "r4", "r5"):
        assert "\n" not in r
    assert core.status()["config"] == before and core.seq.conf.epoch == 0


def test_a_removed_leader_sees_itself_removed() -> None:
    core = alone()
    assert submit(core, "r1", "n2@127.0.0.1:9002", 0, now=T0 + SEC).code == OK  # type: ignore[union-attr]
    core.receive(AppendReply(core.seq.term, True, core.seq.last_index), "n2", None, T0 + SEC + 20 * MS)
    core.tick(T0 + SEC + 30 * MS)  # n2 promoted: 2 voters
    core.receive(AppendReply(core.seq.term, True, core.seq.last_index), "n2", None, T0 + SEC + 40 * MS)
    assert core.status()["config"]["roles"]["n2"] == "voter"
    rep = submit(core, "r2", "n1", 1, now=T0 + SEC + 50 * MS)
    assert rep is None and not core.removed  # appended, waiting for n2
    assert core.status()["config"]["roles"]["n1"] == "leaving"
    core.receive(AppendReply(core.seq.term, True, core.seq.last_index), "n2", None, T0 + SEC + 60 * MS)
    out = core.outbox()
    assert any(isinstance(d, Client) and m.req.startswith("r2-") and m.code == OK for d, m in out)
    assert core.removed and core.seq.role is not LEADER
    assert core.status()["config"]["roles"]["n1"] == "removed"


def test_shards_refuse_membership_changes() -> None:
    from gossipbook.core.shards import ShardedStrongCore, ShardMap

    from .test_shards import VENUE

    core = ShardedStrongCore("n1", ["n1"], VENUE, ShardMap([["AAA", "CCC"], ["BBB", "DDD"]]), random.Random(1))
    core.tick(T0)
    core.tick(T0 + 400 * MS)
    core.receive(ClientSubmit("r1", MEMBER, "", "n2@127.0.0.1:9002", 0, 0, 0, 0, 1, 2_000), "cli",
                 ("127.0.0.1", 1), T0 + SEC, "operator")
    reps = [m for d, m in core.outbox() if type(m) is ClientReply]
    assert reps and reps[0].code == E_INVALID and "2 shards" in reps[0].message


SEC = 1_000 * MS
