"""The simulated clients: a seeded order flow sent to random live nodes, with retries.

Theory of operation
-------------------
A few clients share one ``OrderFlow`` (one market, one drifting mid). At pre-drawn arrival times a
client takes the next action (new, cancel or amend of one of *its own* open orders), picks a random
node that is up, and sends a ``ClientSubmit`` with a fresh request id and an ack level (mostly
``accepted``, some ``replicated`` and ``final``). With no reply after ``retry_ns`` it resends the
same request (same id) to the same node, and after two silent tries to another node, as a real
client behind a load balancer would. The request id is what makes both safe: a node answers a
retry with its first reply, and replicas fold only the first NEW of a request.

A reply ``ok`` (or, in eventual mode, ``timeout`` with an order id: "accepted and will not be
lost") is an **acknowledgement** at the level it names; the checker holds the cluster to every one of them.
The workload only decides and records; the simulator owns time and the network.

Every client is its own account (its name). A small share of requests are hostile or awkward, drawn
from the same seeded stream: a client tries to cancel or amend *another* client's open order (the
stamping node must refuse it, "not owner", and no replica may ever apply it; ``Request.foreign``),
or sends a mass cancel (``CANCEL_ALL``) of its own orders in the market's symbol or in every book
("" symbol), after which the client's open orders are forgotten.

With ``risk`` (``SimConfig.risk``), two more clients trade under risk limits (``RISK_CLIENTS``):
the operator sets their limits (``RISK_LIMITS``, tight enough that refusals happen) as the run
starts, and their orders begin a second later. Half-way through, the operator disables
``risk-2`` with the kill switch and enables it again a few seconds later. Their draws come from a
stream of their own (``risk_rng``), so the other clients draw the same actions with or without it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..core.book import GTC, MARKET
from ..core.node import ACCEPTED, E_NOT_OWNER, E_TIMEOUT, FINAL, OK, REPLICATED
from ..core.ops import AMEND, CANCEL, CANCEL_ALL, NEW
from ..core.risk import DIM_NOTIONAL, DIM_OPEN_BUY, DIM_OPEN_SELL, DIM_POSITION, E_RISK, HALT, LIMIT, OPERATOR
from ..core.wire import ClientReply, ClientSubmit
from ..workload.orders import OrderFlow
from .clock import MS, SEC


@dataclass(slots=True)
class Request:
    """One client request and what became of it."""

    req: str
    client: str
    msg: ClientSubmit
    first_sent: int
    node: str = ""
    attempts: int = 0
    tried: list[str] = field(default_factory=list)
    reply: ClientReply | None = None
    reply_from: str = ""
    replied_at: int = 0
    foreign: str = ""  # a cancel/amend of another client's order: that client (the order's owner)


#: shares of requests that are a cancel/amend of another client's open order, and a mass cancel
FOREIGN_SHARE = 0.04
MASS_CANCEL_SHARE = 0.01
#: accounts that trade under risk limits (``risk``), and their limits in the market's symbol, in
#: lots (notional: ticks x lots); the flow's orders are 1-20 lots at about 10,000 ticks
RISK_CLIENTS = ("risk-1", "risk-2")
RISK_LIMITS = {DIM_OPEN_BUY: 40, DIM_OPEN_SELL: 40, DIM_POSITION: 60, DIM_NOTIONAL: 70 * 10_000}


@dataclass(frozen=True, slots=True)
class Ack:
    """A request the cluster acknowledged: node ``node`` said ``order_id`` reached ``level``."""

    req: str
    node: str
    kind: int
    order_id: str
    level: int
    at: int


class Workload:
    """Clients, their requests, and the acknowledgements they got."""

    def __init__(self, rng: random.Random, n_orders: int, start: int, end: int, clients: int = 4,
                 symbol: str = "GBX", mid: int = 10_000, retry_ns: int = 300 * MS, max_attempts: int = 6,
                 reply_timeout_ms: int = 3_000, ack_timeouts: bool = True,
                 risk_rng: random.Random | None = None) -> None:
        self.rng = rng
        #: eventual mode: a ``timeout`` naming an order is an ack ("accepted, will not be lost");
        #: strong mode: it means "outcome unknown", never an ack
        self.ack_timeouts = ack_timeouts
        self.flow = OrderFlow(random.Random(rng.random()), mid=mid)
        self.symbol = symbol
        self.clients = [f"client-{i + 1}" for i in range(clients)]
        self.retry_ns = retry_ns
        self.max_attempts = max_attempts
        self.reply_timeout_ms = reply_timeout_ms
        self.arrivals = self._arrivals(n_orders, start, max(start + 1, end))
        self.requests: dict[str, Request] = {}
        self.acks: list[Ack] = []
        self.open: dict[str, list[tuple[str, int]]] = {c: [] for c in self.clients}
        self._n = 0
        self.stopped = False
        self.counters = {"submitted": 0, "sent": 0, "retries": 0, "acked": 0, "rejected": 0,
                         "no_node": 0, "gave_up": 0, "late_replies": 0, "foreign": 0, "foreign_refused": 0,
                         "foreign_acked": 0, "mass_cancels": 0}
        self.rejects: dict[int, int] = {}
        self.risk = risk_rng is not None
        if risk_rng is not None:  # a stream of its own: the plain workload draws the same
            self._risk_setup(risk_rng, n_orders, start, end)

    def _risk_setup(self, rng: random.Random, n_orders: int, start: int, end: int) -> None:
        """Limits first (the operator, at ``start``), a kill switch half-way, risk clients' flow."""
        self.risk_rng = rng
        self.risk_flow = OrderFlow(random.Random(rng.random()), mid=self.flow.mid)
        self.open.update({c: [] for c in RISK_CLIENTS})
        admin: list[tuple[int, ClientSubmit]] = []
        for acct in RISK_CLIENTS:
            for dim, value in RISK_LIMITS.items():
                admin.append((start, ClientSubmit("", LIMIT, self.symbol, acct, 0, 0, value, dim, 0,
                                                  self.reply_timeout_ms)))
        mid = (start + end) // 2
        admin.append((mid, ClientSubmit("", HALT, "", RISK_CLIENTS[1], 0, 0, 0, 0, 0, self.reply_timeout_ms)))
        admin.append((min(end - 1, mid + 3 * SEC), ClientSubmit("", HALT, "", RISK_CLIENTS[1], 1, 0, 0, 0, 0,
                                                                  self.reply_timeout_ms)))
        self.admin = admin
        begin = min(end - 1, start + SEC)
        k = max(1, n_orders // 3)
        risky = sorted((rng.randrange(begin, max(begin + 1, end)), rng.choice(RISK_CLIENTS)) for _ in range(k))
        self.arrivals = sorted(self.arrivals + risky)
        self.counters.update({"risk_sent": 0, "risk_refused": 0, "risk_admin_acked": 0})

    def admin_request(self, msg: ClientSubmit, t: int) -> Request:
        """An operator request (a limit, the kill switch), sent as any other (retries included)."""
        self._n += 1
        req = f"{OPERATOR}-{self._n}"
        rq = Request(req, OPERATOR, msg._replace(req=req), t)
        self.requests[req] = rq
        return rq

    def _arrivals(self, n: int, start: int, end: int) -> list[tuple[int, str]]:
        """Order flow is bursty: a third of the arrivals open a burst of 2-5 orders from different
        clients within 2 ms (quotes moving together), which makes concurrent, conflicting ops."""
        rng = self.rng
        out: list[tuple[int, str]] = []
        while len(out) < n:
            t = rng.randrange(start, end)
            k = rng.randint(2, 5) if rng.random() < 0.33 else 1
            for c in rng.sample(self.clients, min(k, len(self.clients), n - len(out))):
                out.append((min(end - 1, t + rng.randrange(2 * MS)), c))
        out.sort()
        return out

    # ---- decisions -------------------------------------------------------------------------------
    def new_request(self, client: str, t: int) -> Request:
        """The client's next action as a request (not yet sent)."""
        if client in RISK_CLIENTS:
            return self._risk_request(client, t)
        r0 = self.rng.random()
        victims = [c for c in self.clients if c != client and self.open[c]] if r0 < FOREIGN_SHARE else []
        self._n += 1
        req = f"{client}-{self._n}"
        r = self.rng.random()
        wait = ACCEPTED if r < 0.7 else REPLICATED if r < 0.9 else FINAL
        foreign = ""
        if victims:
            # hostile: another client's open order, as if this client had guessed or seen its id
            foreign = self.rng.choice(victims)
            oid, side = self.rng.choice(self.open[foreign])
            if self.rng.random() < 0.5:
                msg = ClientSubmit(req, CANCEL, self.symbol, oid, side, 0, 0, GTC, wait, self.reply_timeout_ms)
            else:
                price = self.flow.mid + (-1 if side == 0 else 1) * self.rng.randint(-5, 20)
                msg = ClientSubmit(req, AMEND, self.symbol, oid, side, max(1, price), self.rng.randint(1, 20),
                                   GTC, wait, self.reply_timeout_ms)
            self.counters["foreign"] += 1
        elif FOREIGN_SHARE <= r0 < FOREIGN_SHARE + MASS_CANCEL_SHARE:
            sym = self.symbol if self.rng.random() < 0.5 else ""
            msg = ClientSubmit(req, CANCEL_ALL, sym, "", 0, 0, 0, GTC, wait, self.reply_timeout_ms)
            self.open[client] = []
            self.counters["mass_cancels"] += 1
        else:
            o = self.flow.next(self.open[client])
            if o.kind in (CANCEL, AMEND):
                self.open[client] = [x for x in self.open[client] if x[0] != o.order_id]
            price = 0 if (o.kind == NEW and o.tif == MARKET) else o.price
            msg = ClientSubmit(req, o.kind, self.symbol, o.order_id, o.side, price, o.qty,
                               o.tif if o.kind == NEW else GTC, wait, self.reply_timeout_ms)
        rq = Request(req, client, msg, t, foreign=foreign)
        self.requests[req] = rq
        self.counters["submitted"] += 1
        return rq

    def _risk_request(self, client: str, t: int) -> Request:
        """A risk client's next action: the same flow as the others', from its own stream."""
        rng = self.risk_rng
        self._n += 1
        req = f"{client}-{self._n}"
        wait = ACCEPTED if rng.random() < 0.8 else REPLICATED
        o = self.risk_flow.next(self.open[client])
        if o.kind in (CANCEL, AMEND):
            self.open[client] = [x for x in self.open[client] if x[0] != o.order_id]
        price = 0 if (o.kind == NEW and o.tif == MARKET) else o.price
        msg = ClientSubmit(req, o.kind, self.symbol, o.order_id, o.side, price, o.qty,
                           o.tif if o.kind == NEW else GTC, wait, self.reply_timeout_ms)
        rq = Request(req, client, msg, t)
        self.requests[req] = rq
        self.counters["submitted"] += 1
        self.counters["risk_sent"] += 1
        return rq

    def pick_node(self, rq: Request, up: Sequence[str]) -> str | None:
        """Where (re)send: the same node for two tries, then another live one."""
        if not up:
            return None
        if rq.node and rq.node in up and rq.attempts % 3 != 2:
            return rq.node
        others = [n for n in up if n != rq.node] or list(up)
        return self.rng.choice(others)

    def sent(self, rq: Request, node: str) -> None:
        if rq.attempts:
            self.counters["retries"] += 1
        rq.node = node
        rq.attempts += 1
        rq.tried.append(node)
        self.counters["sent"] += 1

    def should_retry(self, rq: Request) -> bool:
        if rq.reply is not None or self.stopped:
            return False
        if rq.attempts >= self.max_attempts:
            self.counters["gave_up"] += 1
            return False
        return True

    # ---- replies ---------------------------------------------------------------------------------
    def on_reply(self, node: str, rep: ClientReply, t: int) -> Ack | None:
        rq = self.requests.get(rep.req)
        if rq is None:
            return None
        if rq.reply is not None:
            self.counters["late_replies"] += 1
            return None
        rq.reply, rq.reply_from, rq.replied_at = rep, node, t
        if rq.foreign:
            if rep.code == E_NOT_OWNER:
                self.counters["foreign_refused"] += 1
            elif rep.code == OK:
                self.counters["foreign_acked"] += 1  # the checker flags it (``not_owner_acked``)
        if rq.client == OPERATOR and rep.code == OK:
            self.counters["risk_admin_acked"] += 1
        if rep.code == E_RISK:
            self.counters["risk_refused"] += 1
        if rep.code == OK or (self.ack_timeouts and rep.code == E_TIMEOUT and rep.order_id):
            ack = Ack(rep.req, node, rq.msg.kind, rep.order_id, rep.level, t)
            self.acks.append(ack)
            self.counters["acked"] += 1
            m = rq.msg
            if m.kind == NEW and m.tif == GTC and sum(int(tr[2]) for tr in rep.trades) < m.qty:
                lst = self.open[rq.client]
                lst.append((rep.order_id, m.side))
                del lst[:-64]
            return ack
        self.counters["rejected"] += 1
        self.rejects[rep.code] = self.rejects.get(rep.code, 0) + 1
        return None

    def outstanding(self) -> int:
        return sum(1 for r in self.requests.values() if r.reply is None)

