"""Venue hooks (issue 16): they see the account and the request, and run for NEW and AMEND, in both
modes; the older four-argument hooks keep working."""

from __future__ import annotations

import random

import pytest

from gossipbook.core.book import BUY, GTC
from gossipbook.core.errors import InvalidOrder
from gossipbook.core.instrument import Instrument, OrderRequest, Venue
from gossipbook.core.node import E_INVALID, OK, Client
from gossipbook.core.ops import AMEND, NEW
from gossipbook.core.replica import Replica
from gossipbook.core.strong import StrongNodeCore
from gossipbook.core.wire import ClientReply, ClientSubmit

GBX = Instrument("GBX")
T0 = 10**18


def notional_cap(req: OrderRequest) -> None:
    """At most 50,000 ticks x lots per order, and nothing at all from 'blocked'."""
    if req.account == "blocked":
        raise InvalidOrder(f"account {req.account} is blocked")
    if req.price * req.qty > 50_000:
        raise InvalidOrder(f"{req.kind}: notional {req.price * req.qty} > 50000")


def test_the_hook_sees_the_account_and_runs_for_new_and_amend() -> None:
    seen: list[OrderRequest] = []

    def hook(req: OrderRequest) -> None:
        seen.append(req)
        notional_cap(req)

    r = Replica("n1", Venue.of([GBX], hook), members=["n1"])
    op, _ = r.submit_new("GBX", BUY, 100, 10, GTC, T0, "q1", account="alice")
    with pytest.raises(InvalidOrder, match="notional"):
        r.submit_new("GBX", BUY, 100, 640, GTC, T0 + 1, "q2", account="alice")
    with pytest.raises(InvalidOrder, match="blocked"):
        r.submit_new("GBX", BUY, 100, 1, GTC, T0 + 2, "q3", account="blocked")
    # the review's hole: an amend to a notional the hook refuses for a NEW was accepted
    with pytest.raises(InvalidOrder, match="amend: notional"):
        r.submit_amend(op.op_id, 100, 3200, T0 + 3, "q4", account="alice")
    assert r.order_status(op.op_id) == (BUY, 100, 10)
    assert [(q.kind, q.account, q.order_id, q.req) for q in seen] == [
        ("new", "alice", "", "q1"), ("new", "alice", "", "q2"), ("new", "blocked", "", "q3"),
        ("amend", "alice", op.op_id, "q4")]


def test_a_four_argument_hook_still_works() -> None:
    def old(inst: Instrument, side: int, price: int, qty: int) -> None:
        if price * qty > 50_000:
            raise InvalidOrder("too big")

    r = Replica("n1", Venue.of([GBX], old), members=["n1"])
    op, _ = r.submit_new("GBX", BUY, 100, 10, GTC, T0, account="a")
    with pytest.raises(InvalidOrder, match="too big"):
        r.submit_amend(op.op_id, 100, 3200, T0 + 1, account="a")


def test_strong_mode_runs_the_hook_at_the_leader_for_new_and_amend() -> None:
    core = StrongNodeCore("n1", ["n1"], Venue.of([GBX], notional_cap), rng=random.Random(1))
    now = T0
    while core.seq.leader() != "n1":
        now = core.next_deadline()
        core.tick(now)

    def submit(req: str, kind: int, order_id: str, price: int, qty: int) -> ClientReply:
        core.receive(ClientSubmit(req, kind, "GBX", order_id, BUY, price, qty, GTC, 0, 1000), "c", ("h", 1),
                     now, "alice")
        replies = [m for d, m in core.outbox() if isinstance(d, Client) and isinstance(m, ClientReply)]
        assert len(replies) == 1
        return replies[0]

    ok = submit("q1", NEW, "", 100, 10)
    assert ok.code == OK
    assert submit("q2", NEW, "", 100, 640).code == E_INVALID
    bad = submit("q3", AMEND, ok.order_id, 100, 3200)
    assert bad.code == E_INVALID and "amend: notional" in bad.message
    assert core.replica.find(ok.order_id)[1] == (BUY, 100, 10)
