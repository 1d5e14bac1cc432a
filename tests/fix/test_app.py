"""The pure application mapping (gossipbook.fix.app): FIX orders to library commands, outcomes and
fills to ExecutionReports.

What must hold: a valid NewOrderSingle becomes one ``Place`` in Decimal; a value off the
instrument's grid is an ExecutionReport Rejected whose OrdRejReason and Text name the problem, and a
value that is not a FIX decimal is a session Reject naming the tag; a reused ClOrdID is refused;
every fill is reported once (ExecType F), a revision as Trade Correct (G) and an undo as Trade Cancel
(H), each with ExecRefID = the original fill's ExecID, finality as ExecType I with GbFinality=F;
CumQty always equals the quantity of the fills that stand; fills that beat the order's ack wait and
are then reported; the journal restores everything.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from gossipbook.core.instrument import Instrument
from gossipbook.fix import tags as T
from gossipbook.fix.app import App, Cancel, FillRec, MassCancel, OrderRec, Out, Place, Reject, Replace
from gossipbook.fix.codec import Message

T0 = 1_700_000_000 * 10**9
GBX = Instrument("GBX", tick_size="0.05", lot_size="10", min_price="1", max_price="500")


@dataclass(frozen=True)
class F:
    trade_id: str
    order_id: str
    price: Decimal
    amount: Decimal
    final: bool = False
    revisions: int = 0
    undone: bool = False


def msg(mt: str, **kw: object) -> Message:
    tags = {"clordid": 11, "orig": 41, "symbol": 55, "side": 54, "qty": 38, "ordtype": 40, "price": 44, "tif": 59,
            "mctype": 530, "order_id": 37}
    pairs = [(35, mt.encode())] + [(tags[k], str(v).encode()) for k, v in kw.items()]
    return Message.of(pairs)


def new(clordid: str = "c1", qty: str = "30", price: str | None = "100.05", side: int = 1, **kw: object) -> Message:
    base: dict[str, object] = dict(clordid=clordid, symbol="GBX", side=side, qty=qty, ordtype=2 if price else 1)
    if price:
        base["price"] = price
    base.update(kw)
    return msg("D", **base)


def fields(o: Out) -> dict[int, str]:
    return {t: str(v) for t, v in o.fields}


def placed(app: App, clordid: str = "c1", oid: str = "n1:1", **kw: object) -> list[Out]:
    cmd = app.on_message(new(clordid, **kw), T0)
    assert isinstance(cmd, Place), cmd
    return app.on_placed(cmd, oid, (), T0)


def test_a_new_order_becomes_one_place_and_an_er_new() -> None:
    app = App("alice", {"GBX": GBX}, new_req=lambda: "r1")
    cmd = app.on_message(new(tif=3), T0)
    assert cmd == Place("c1", "GBX", "buy", Decimal("30"), Decimal("100.05"), "limit", "ioc", "r1")
    assert app.orders["c1"].req == "r1"  # in the record the shell commits before sending
    [er] = app.on_placed(cmd, "n1:7", (), T0)[:1]
    f = fields(er)
    assert (f[T.ExecType], f[T.OrdStatus], f[T.OrderID], f[T.LeavesQty], f[T.Account]) == ("0", "0", "n1:7", "30",
                                                                                              "alice")


def test_grid_and_field_problems_are_named() -> None:
    app = App("alice", {"GBX": GBX})

    def rejected(m: Message) -> dict[int, str]:
        out = app.on_message(m, T0)
        assert isinstance(out, list) and fields(out[0])[T.ExecType] == "8", out
        return fields(out[0])

    f = rejected(new("q1", qty="15"))
    assert f[T.OrdRejReason] == "13" and "lot size 10" in f[T.Text]
    f = rejected(new("q2", price="100.01"))
    assert f[T.OrdRejReason] == "99" and "tick size 0.05" in f[T.Text]
    assert rejected(new("q3", price="600"))[T.OrdRejReason] == "99"  # outside the band
    assert rejected(new("q4", symbol="XYZ"))[T.OrdRejReason] == "1"
    assert rejected(new("q5", tif=0))[T.OrdRejReason] == "11"
    assert rejected(new("q6", side=5))[T.OrdRejReason] == "11"
    for m, tag, reason in ((new("q7", qty="1e3"), 38, 6), (new("q8", price="-5"), 44, 6),
                           (msg("D", symbol="GBX", side=1, qty=10, ordtype=2, price=100), 11, 1),
                           (new("q9", price=None, ordtype=2), 44, 1)):
        r = app.on_message(m, T0)
        assert r == Reject(tag, reason, r.text) and r.text, r  # type: ignore[union-attr]


def test_a_reused_clordid_is_refused_and_the_first_order_is_untouched() -> None:
    app = App("alice", {"GBX": GBX})
    placed(app)
    out = app.on_message(new("c1"), T0)
    assert isinstance(out, list) and fields(out[0])[T.OrdRejReason] == "6"
    assert app._by_name["c1"].order_id == "n1:1" and not app._by_name["c1"].rejected


def test_cancel_replace_and_their_rejects() -> None:
    app = App("alice", {"GBX": GBX})
    placed(app)
    out = app.on_message(msg("F", clordid="x1", orig="nope"), T0)
    assert isinstance(out, list) and fields(out[0])[T.CxlRejReason] == "1" and out[0].msg_type == "9"
    cmd = app.on_message(msg("G", clordid="c2", orig="c1", qty="50", price="101"), T0)
    assert cmd == Replace("c2", "c1", "n1:1", "GBX", Decimal("50"), Decimal("50"), Decimal("101"))
    [rep] = app.on_replaced(cmd, (), T0)
    assert (fields(rep)[T.ExecType], fields(rep)[T.OrigClOrdID], fields(rep)[T.OrderQty]) == ("5", "c1", "50")
    app.on_fill(F("t1", "n1:1", Decimal("101"), Decimal("20")), T0)
    bad = app.on_message(msg("G", clordid="c3", orig="c2", qty="20", price="101"), T0)  # not above CumQty
    assert isinstance(bad, list) and bad[0].msg_type == "9" and "CumQty" in fields(bad[0])[T.Text]
    cmd = app.on_message(msg("F", clordid="c4", orig="c2"), T0)
    assert cmd == Cancel("c4", "c2", "n1:1")
    [c] = app.on_canceled(cmd, T0)
    assert (fields(c)[T.OrdStatus], fields(c)[T.LeavesQty], fields(c)[T.CumQty]) == ("4", "0", "20")
    late = app.on_message(msg("F", clordid="c5", orig="c1"), T0)  # the first ClOrdID still names it
    assert isinstance(late, list) and fields(late[0])[T.CxlRejReason] == "0"


def test_mass_cancel_reports_each_working_order() -> None:
    app = App("alice", {"GBX": GBX})
    placed(app, "c1", "n1:1")
    placed(app, "c2", "n1:2")
    cmd = app.on_message(msg("q", clordid="m1", mctype=7), T0)
    assert cmd == MassCancel("m1", None, "7")
    out = app.on_mass_canceled(cmd, "n1:3", T0)
    assert out[0].msg_type == "r" and fields(out[0])[T.TotalAffectedOrders] == "2"
    assert {fields(o)[T.ClOrdID] for o in out[1:]} == {"c1", "c2"}
    bad = app.on_message(msg("q", clordid="m2", mctype=3), T0)
    assert isinstance(bad, list) and fields(bad[0])[T.MassCancelResponse] == "0"


def test_fill_correct_cancel_final_and_reinstate() -> None:
    app = App("alice", {"GBX": GBX})
    placed(app)
    f1 = F("n1:9/0", "n1:1", Decimal("100.05"), Decimal("20"))
    [er] = app.on_fill(f1, T0)
    first = fields(er)
    assert (first[T.ExecType], first[T.ExecID], first[T.CumQty], first[T.OrdStatus], first[20002]) == \
        ("F", "n1:9/0", "20", "1", "P")
    assert app.on_fill(f1, T0) == []  # the same state again: nothing
    [g] = app.on_fill(replace(f1, amount=Decimal("10"), revisions=1), T0)
    assert (fields(g)[T.ExecType], fields(g)[T.ExecRefID], fields(g)[T.CumQty], fields(g)[T.LastQty]) == \
        ("G", "n1:9/0", "10", "10")
    [h] = app.on_fill(replace(f1, amount=Decimal("10"), revisions=2, undone=True), T0)
    assert (fields(h)[T.ExecType], fields(h)[T.ExecRefID], fields(h)[T.CumQty], fields(h)[T.OrdStatus]) == \
        ("H", "n1:9/0", "0", "0")
    [back] = app.on_fill(replace(f1, revisions=3), T0)
    assert fields(back)[T.ExecType] == "F" and fields(back)[T.ExecID] not in ("n1:9/0", fields(h)[T.ExecID])
    [fin] = app.on_fill(replace(f1, revisions=3, final=True), T0)
    assert (fields(fin)[T.ExecType], fields(fin)[T.ExecRefID], fields(fin)[20002]) == \
        ("I", fields(back)[T.ExecID], "F")
    ids = [fields(o)[T.ExecID] for o in (er, g, h, back, fin)]
    assert len(set(ids)) == len(ids)


def test_a_fill_that_beats_the_ack_waits_for_it() -> None:
    app = App("alice", {"GBX": GBX}, park_s=1)
    cmd = app.on_message(new("c1"), T0)
    assert app.on_fill(F("t1", "n1:5", Decimal("100"), Decimal("10")), T0) == []
    out = app.on_placed(cmd, "n1:5", (), T0)  # type: ignore[arg-type]
    assert [fields(o)[T.ExecType] for o in out] == ["0", "F"]
    app.on_fill(F("t2", "n9:1", Decimal("100"), Decimal("10")), T0)  # someone else's order of this account
    app.expire(T0 + 2 * 10**9)
    assert app.counters["foreign_fills"] == 1 and app.counters["parked"] == 2


fill_states = st.lists(st.tuples(st.sampled_from(["t1", "t2", "t3"]), st.integers(1, 3), st.sampled_from(["100", "100.05"]),
                                 st.booleans(), st.booleans()), max_size=25)


@settings(max_examples=80)
@given(fill_states)
def test_cum_qty_is_the_standing_fills_and_refs_point_at_fills(updates: list[tuple[str, int, str, bool, bool]]) -> None:
    app = App("alice", {"GBX": GBX})
    placed(app, qty="100")
    truth: dict[str, F] = {}
    fill_exec: dict[str, set[str]] = {}
    for tid, lots, px, undone, final in updates:
        f = F(tid, "n1:1", Decimal(px), Decimal(lots * 10), final, 0, undone)
        truth[tid] = f
        for o in app.on_fill(f, T0):
            d = fields(o)
            if d[T.ExecType] == "F":
                fill_exec.setdefault(tid, set()).add(d[T.ExecID])
            elif d[T.ExecType] in ("G", "H", "I"):
                assert d[T.ExecRefID] in fill_exec[tid]
            standing = sum((x.amount for x in truth.values() if not x.undone and x.trade_id in app.fills
                            and not app.fills[x.trade_id].undone), Decimal(0))
            assert Decimal(d[T.CumQty]) == standing
    r = app._by_name["c1"]
    assert r.cum == sum((f.amount for f in truth.values() if not f.undone), Decimal(0))


def test_the_journal_restores_orders_and_fills() -> None:
    app = App("alice", {"GBX": GBX})
    placed(app)
    app.on_fill(F("t1", "n1:1", Decimal("100.05"), Decimal("10")), T0)
    cmd = app.on_message(msg("G", clordid="c2", orig="c1", qty="40", price="100"), T0)
    app.on_replaced(cmd, (), T0)  # type: ignore[arg-type]
    journal = app.journal()
    orders = [OrderRec.from_json(d) for k, _, d in journal if k == "order" and d]
    fills = [FillRec.from_json(d) for k, _, d in journal if k == "fill" and d]
    again = App("alice", {"GBX": GBX})
    again.restore(orders, fills)
    assert isinstance(again.on_message(msg("F", clordid="c3", orig="c2"), T0), Cancel)
    assert again.on_fill(F("t1", "n1:1", Decimal("100.05"), Decimal("10")), T0) == []
    assert again._by_name["c1"].cum == Decimal("10") and again._by_name["c1"].qty == Decimal("40")


def test_the_order_table_is_bounded() -> None:
    app = App("alice", {"GBX": GBX}, max_orders=10)
    for k in range(10):
        placed(app, f"c{k}", f"n1:{k}")
    out = app.on_message(new("c10"), T0)
    assert isinstance(out, list) and fields(out[0])[T.OrdRejReason] == "3"  # all ten are working
    app.on_canceled(Cancel("x", "c0", "n1:0"), T0)
    assert isinstance(app.on_message(new("c11"), T0), Place) and app.counters["orders_evicted"] == 1


junk = st.one_of(st.sampled_from([b"1", b"2", b"3", b"7", b"0", b"4", b"GBX", b"100.05", b"30", b"c1", b"n1:1"]),
                 st.binary(min_size=1, max_size=40).filter(lambda b: b.isascii() and b"\x01" not in b))


@settings(max_examples=300)
@given(st.lists(st.tuples(st.sampled_from("DFGq"), st.lists(st.tuples(
    st.sampled_from([11, 41, 55, 54, 38, 40, 44, 59, 530, 37]), junk), max_size=9)), min_size=1, max_size=6))
def test_any_application_message_is_answered_and_never_raises(msgs: list[tuple[str, list[tuple[int, bytes]]]]) -> None:
    from gossipbook.fix.codec import encode_body

    app = App("alice", {"GBX": GBX})
    for k, (mt, fs) in enumerate(msgs):
        res = app.on_message(Message.of([(35, mt.encode())] + fs), T0)
        if isinstance(res, Place):
            res = app.on_placed(res, f"n1:{k}", (), T0)
        elif isinstance(res, Cancel):
            res = app.on_canceled(res, T0)
        elif isinstance(res, Replace):
            res = app.on_replaced(res, (), T0)
        elif isinstance(res, MassCancel):
            res = app.on_mass_canceled(res, "op", T0)
        if isinstance(res, Reject):
            assert res.text and res.reason in (0, 1, 4, 5, 6, 11, 13)
            continue
        assert res, "every message gets an answer"
        for o in res:
            encode_body(o.fields)  # every answer can be sent: no empty value, no SOH


def test_an_order_sent_but_never_recorded_is_resumed_under_the_same_request_id() -> None:
    ids = iter(f"r{i}" for i in range(1, 10))
    app = App("alice", {"GBX": GBX}, new_req=lambda: next(ids))

    def arrive(m: Message, at: int = T0) -> tuple[str, object]:
        req = app.intend(m, at)  # the shell: on arrival, committed with the sequence numbers
        return req, app.on_message(m, at, req)  # the worker, later

    r1, c1 = arrive(new("c1"))  # sent; the gateway stops before the answer is recorded
    committed = app.journal()  # ... but the record (with its request id) was committed
    r2, c2 = arrive(new("c2", price="100.10"))  # sent; neither its record nor its answer was committed
    arrive(new("c3", price="100.15"), T0 - 60 * 10**9)  # arrived 65 s before the restart
    r4, c4 = arrive(new("c4"))
    app.on_placed(c4, "n1:4", (), T0)  # answered and recorded: its intent is settled
    rr, rej = arrive(new("c5", qty="33"))  # off the grid: Rejected at once, never sent
    assert isinstance(rej, list) and rr not in app.intents and r4 not in app.intents
    assert sorted(app.intents) == ["r1", "r2", "r3"]

    restarted = App("alice", {"GBX": GBX}, new_req=lambda: "unused")
    restarted.restore([OrderRec.from_json(d) for kind, _, d in committed if kind == "order" and d], [],
                      {k: v for k, v in app.intents.items()})
    places, outs = restarted.resume(T0 + 5 * 10**9)
    assert places == [c1, c2] and [p.req for p in places] == [r1, r2] and outs == []
    assert (restarted.counters["resumed"], restarted.counters["in_doubt"]) == (2, 1)
    assert "r3" not in restarted.intents  # in doubt: forgotten, and the deletion is journaled
    assert ("intent", "r3", None) in restarted.journal()
    er = fields(restarted.on_placed(places[0], "n1:1", (), T0 + 6 * 10**9)[0])
    assert (er[T.ExecType], er[T.OrderID], er[T.ClOrdID]) == ("0", "n1:1", "c1")
    restarted.on_place_failed(places[1], T.ORR_OTHER, "no", T0 + 6 * 10**9)
    assert restarted.intents == {} and restarted.resume(T0 + 7 * 10**9) == ([], [])


def test_a_clock_refusal_is_exchange_closed_with_a_text_that_says_what_to_do() -> None:
    from gossipbook.api.errors import from_reply
    from gossipbook.fix.gateway import ord_rej_reason, refusal_text

    e = from_reply(13, "clock not synced with chrony yet: error bound unknown, limit 10000 µs", node="n1")
    assert ord_rej_reason(e) == T.ORR_EXCHANGE_CLOSED  # not 99: the venue is closed to new orders for now
    text = refusal_text(e)
    assert text.startswith("venue closed to new orders and replaces for now") and "retry shortly" in text
    assert "error bound unknown" in text and "(node n1)" in text  # the node's own words stay
    assert refusal_text(from_reply(1, "price off the grid", node="n1")) == "price off the grid (node n1)"
