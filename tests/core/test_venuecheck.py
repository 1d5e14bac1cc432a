"""Venue fingerprints (issue 16): ``Venue.describe`` / ``fingerprint`` see every rule, the
difference is worded for one log line, and ``VenueCheck`` refuses exactly the peers whose last
fingerprint differs from ours, through ``Membership`` and the node cores, whatever a peer sends.
"""

from __future__ import annotations

import dataclasses
import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipbook.core.book import BUY, GTC
from gossipbook.core.errors import RemoteError
from gossipbook.core.instrument import Instrument, OrderRequest, Venue
from gossipbook.core.membership import Ack, Membership, MembershipConfig, Probe
from gossipbook.core.node import NodeCore
from gossipbook.core.replica import Replica
from gossipbook.core.strong import StrongNodeCore
from gossipbook.core.venuecheck import (
    MAX_DESCRIPTION,
    MAX_FIELD,
    MAX_NOTICES,
    SECOND,
    VenueCheck,
    VenueInfo,
    VenueQuery,
    description_blob,
    venue_diff,
)
from gossipbook.core.wire import OpBatch

BTC = Instrument("BTC-USD", tick_size="0.5", lot_size="0.001", max_price="500000")
ETH = Instrument("ETH-USD", tick_size="0.01")
MS = 1_000_000


def capped(version: str) -> Any:
    def check(req: OrderRequest) -> None:
        return None
    check.version = version  # type: ignore[attr-defined]
    return check


class Acme(Venue):
    name = "acme"
    version = "2"


class Acme3(Venue):
    name = "acme"
    version = "3"


# ==== describe and fingerprint ======================================================================
def test_the_fingerprint_sees_every_rule_and_nothing_else() -> None:
    base = Venue.of([BTC, ETH])
    variants = {
        "tick": Venue.of([dataclasses.replace(BTC, tick_size=Decimal("1")), ETH]),
        "lot": Venue.of([dataclasses.replace(BTC, lot_size=Decimal("0.01")), ETH]),
        "min": Venue.of([dataclasses.replace(BTC, min_price=Decimal("1")), ETH]),
        "max": Venue.of([dataclasses.replace(BTC, max_price=Decimal("600000")), ETH]),
        "cap": Venue.of([dataclasses.replace(BTC, max_qty_lots=5), ETH]),
        "stp": Venue.of([dataclasses.replace(BTC, stp="cancel-oldest"), ETH]),
        "matching": Venue.of([dataclasses.replace(BTC, matching="pro-rata"), ETH]),
        "fewer": Venue.of([BTC]),
        "name": Acme.of([BTC, ETH]),
        "version": Acme3.of([BTC, ETH]),
        "hook": Venue.of([BTC, ETH], capped("1")),
        "hook version": Venue.of([BTC, ETH], capped("2")),
    }
    fps = {k: v.fingerprint() for k, v in variants.items()}
    assert len(set(fps.values()) | {base.fingerprint()}) == len(fps) + 1, fps
    assert all(len(f) == 16 and int(f, 16) >= 0 for f in fps.values())
    # the same rules written otherwise, in another order: the same fingerprint
    same = Venue.of([Instrument("ETH-USD", tick_size="0.010"), Instrument("BTC-USD", tick_size="0.50",
                                                                        lot_size="0.0010", max_price="5E+5")])
    assert same.fingerprint() == base.fingerprint()
    assert Venue.of([BTC], capped("1")).fingerprint() == Venue.of([BTC], capped("1")).fingerprint()
    d = Acme.of([BTC], capped("7")).describe()
    assert d["venue"] == {"name": "acme", "version": "2"}
    assert d["hooks"] == {"validate": {"name": "tests.core.test_venuecheck.capped.<locals>.check", "version": "7"}}
    assert d["instruments"]["BTC-USD"] == {"tick_size": "0.5", "lot_size": "0.001", "min_price": "0.01",
                                          "max_price": "500000", "max_qty_lots": 1_000_000,
                                          "stp": "cancel-newest", "matching": "price-time"}
    assert Venue().describe()["venue"] == {"name": "gossipbook.core.instrument.Venue", "version": ""}


# ==== the wording ===================================================================================
def test_the_difference_is_worded_for_one_log_line() -> None:
    def diff(a: Venue, b: Venue) -> str:
        return venue_diff(a.describe(), b.describe(), "n3")

    one = Venue.of([dataclasses.replace(BTC, tick_size=Decimal("1"))])
    assert diff(Venue.of([BTC]), one) == "BTC-USD tick_size 0.5 here, 1 at n3"
    assert diff(Venue.of([BTC], capped("1")), Venue.of([BTC], capped("2"))) == (
        "validate hook tests.core.test_venuecheck.capped.<locals>.check v1 here, "
        "tests.core.test_venuecheck.capped.<locals>.check v2 at n3")
    assert diff(Venue.of([BTC]), Venue.of([BTC], capped(""))) == (
        "validate hook none here, tests.core.test_venuecheck.capped.<locals>.check at n3")
    assert diff(Acme.of([BTC]), Acme3.of([BTC])) == "venue acme v2 here, acme v3 at n3"
    assert diff(Venue.of([BTC, ETH]), Venue.of([BTC])) == "ETH-USD traded here, not at n3"
    assert diff(Venue.of([BTC]), Venue.of([BTC, ETH])) == "ETH-USD traded at n3, not here"
    pr = Venue.of([dataclasses.replace(BTC, matching="pro-rata", stp="off")])
    assert diff(Venue.of([BTC]), pr) == ("BTC-USD stp cancel-newest here, off at n3; "
                                         "BTC-USD matching price-time here, pro-rata at n3")
    many = [Instrument(f"S{i}") for i in range(10)]
    text = diff(Venue.of(many), Venue.of([dataclasses.replace(i, tick_size=Decimal("1")) for i in many]))
    assert text.count("tick_size") == 6 and text.endswith("; and 4 more")


def test_a_hostile_description_cannot_make_the_line_long_or_multiline() -> None:
    mine = Venue.of([BTC]).describe()
    theirs = {"venue": {"name": "x\n" * 500, "version": "\x1b[31m"}, "hooks": {"v\r": {"name": "a" * 9999}},
              "instruments": {"BTC-USD\nINJECTED": {"tick_size": "\x00" * 100}}}
    text = venue_diff(mine, theirs, "n3\nfake line")
    assert "\n" not in text and "\r" not in text and "\x1b" not in text and "\x00" not in text
    assert len(text) < 8 * (4 * MAX_FIELD + 40)


# ==== the check, pure ===============================================================================
def deliver(checks: dict[str, VenueCheck], now: int, rounds: int = 6) -> int:
    """Hand every check's outbox to its destination until nothing is left; returns messages sent."""
    sent = 0
    for _ in range(rounds):
        moved = [(src, dst, m) for src, c in checks.items() for dst, m in c.outbox()]
        for src, dst, m in moved:
            if dst in checks:
                checks[dst].receive(m, src, now)
        sent += len(moved)
        if not moved:
            break
    return sent


def test_hello_refusal_description_and_acceptance_after_a_fix() -> None:
    good, bad = Venue.of([BTC, ETH]), Venue.of([dataclasses.replace(BTC, tick_size=Decimal("1")), ETH])
    c = {"n1": VenueCheck("n1", good), "n2": VenueCheck("n2", good), "n3": VenueCheck("n3", bad)}
    for nid, chk in c.items():
        chk.hello([p for p in c if p != nid], 0)
    deliver(c, 0)
    assert c["n1"].refused == {"n3": "BTC-USD tick_size 0.5 here, 1 at n3"}
    assert c["n2"].refused == {"n3": "BTC-USD tick_size 0.5 here, 1 at n3"}
    assert c["n3"].refused == {"n1": "BTC-USD tick_size 1 here, 0.5 at n1", "n2": "BTC-USD tick_size 1 here, 0.5 at n2"}
    assert c["n1"].notices() == ["refusing n3: venue differs: BTC-USD tick_size 0.5 here, 1 at n3"]
    assert c["n1"].counters["venue_refusals"] == 1 and c["n1"].counters["venue_info_bad"] == 0
    # matching peers admitted, the refused one raises (and is counted)
    assert c["n1"].admit("n2") is True
    with pytest.raises(RemoteError) as e:
        c["n1"].admit("n3")
    assert e.value.reason == "venue_mismatch" and c["n1"].counters["venue_mismatch"] == 1
    # probes keep coming with the same fingerprint: no new query within the interval, no new notice
    for t in range(1, 5):
        c["n1"].observe("n3", c["n3"].fingerprint, t * 100 * MS)
    assert c["n1"].outbox() == [] and c["n1"].notices() == []
    st = c["n1"].status()
    assert st == {"fingerprint": good.fingerprint(), "refused": {"n3": "BTC-USD tick_size 0.5 here, 1 at n3"}}
    # n3 is fixed and restarted: its first probe admits it again, once
    fixed = VenueCheck("n3", good)
    c["n1"].observe("n3", fixed.fingerprint, SECOND)
    assert c["n1"].refused == {} and c["n1"].admit("n3")
    assert c["n1"].notices() == [f"accepting n3: its venue matches now ({good.fingerprint()})"]


def test_a_peer_that_does_not_describe_itself_is_named_by_fingerprints() -> None:
    me, other = VenueCheck("n1", Venue.of([BTC])), VenueCheck("n2", Venue.of([ETH]))
    for k in range(5):
        me.observe("n2", other.fingerprint, k * SECOND)
        assert [type(m) for _, m in me.outbox()] == [VenueQuery]  # asked again each interval
    assert me.notices() == [f"refusing n2: venue differs: fingerprint {me.fingerprint.hex()} here, "
                            f"{other.fingerprint.hex()} at n2 (it has not described its venue)"]
    assert me.counters["venue_queries"] == 5 and "n2" in me.refused


def test_answers_are_rate_limited_and_bad_descriptions_change_nothing() -> None:
    me, other = VenueCheck("n1", Venue.of([BTC])), VenueCheck("n2", Venue.of([ETH]))
    for k in range(10):
        me.receive(VenueQuery(other.fingerprint), "n2", k * MS)
    infos = [m for _, m in me.outbox() if type(m) is VenueInfo]
    assert len(infos) == 1 and infos[0].description and me.counters["venue_queries_limited"] == 9
    me.receive(VenueQuery(me.fingerprint), "n3", 0)  # a matching asker: no description
    assert [m.description for _, m in me.outbox() if type(m) is VenueInfo] == [b""]
    for blob in (b"not json", b"[" * 50_000, b'{"venue":1}', json.dumps({"venue": {}, "hooks": {}, "instruments": {
            "X": {"tick_size": [1]}}}).encode(), other.blob + b" "):
        me.receive(VenueInfo(other.fingerprint, blob), "n2", SECOND)
    assert me.counters["venue_info_bad"] == 5 and "n2" in me.refused
    assert not [n for n in me.notices() if "ETH" in n]  # nothing worded from bad descriptions
    me.receive(VenueInfo(other.fingerprint, other.blob), "n2", SECOND)
    assert me.notices() == ["refusing n2: venue differs: BTC-USD traded here, not at n2; ETH-USD traded at n2, not here"]
    # a description nobody asked for (a matching peer's) is counted and ignored
    me.receive(VenueInfo(me.fingerprint, other.blob), "n4", SECOND)
    assert me.counters["venue_info_unasked"] == 1 and "n4" not in me.refused


def test_a_huge_venue_is_described_by_digest() -> None:
    big = Venue.of([Instrument(f"SYM{i:05d}") for i in range(2_000)])
    small = VenueCheck("n2", Venue.of([Instrument(f"SYM{i:05d}") for i in range(1_999)]))
    me = VenueCheck("n1", big)
    assert len(me.blob) <= MAX_DESCRIPTION < len(big.canonical())
    small.receive(VenueQuery(me.fingerprint), "n1", 0)
    small.receive(VenueInfo(me.fingerprint, me.blob), "n1", 0)
    assert small.refused["n1"] == "instruments differ (1999 here, 2000 at n1, too many to list)"
    assert description_blob(Venue.of([BTC]).describe()) == Venue.of([BTC]).canonical()


# any sequence a peer can send: the refusal follows the last fingerprint, and nothing grows
FPS = st.sampled_from(["mine", "a", "b", "empty", "short"])
EVENTS = st.lists(st.tuples(st.sampled_from(["n2", "n3"]), st.sampled_from(["probe", "query", "info"]), FPS,
                            st.sampled_from(["good", "bad", "empty", "other"]), st.integers(0, 3 * SECOND)),
                  max_size=40)


@settings(max_examples=100)
@given(EVENTS)
def test_refused_exactly_while_the_last_fingerprint_differs(events: list[tuple[str, str, str, str, int]]) -> None:
    me = VenueCheck("n1", Venue.of([BTC]))
    others = {"a": VenueCheck("x", Venue.of([ETH])), "b": VenueCheck("y", Venue.of([BTC], capped("9")))}
    fp = {"mine": me.fingerprint, "a": others["a"].fingerprint, "b": others["b"].fingerprint, "empty": b"",
          "short": b"\x01\x02"}
    last: dict[str, bytes] = {}
    now = 0
    for peer, kind, f, desc, dt in events:
        now += dt
        blob = {"good": others["a"].blob, "bad": b"{", "empty": b"", "other": others["b"].blob}[desc]
        if kind == "probe":
            me.observe(peer, fp[f], now)
        elif kind == "query":
            me.receive(VenueQuery(fp[f]), peer, now)
        else:
            me.receive(VenueInfo(fp[f], blob), peer, now)
        if len(fp[f]) == 8:
            last[peer] = fp[f]
        assert len(me.outbox()) <= 2
        for p in ("n2", "n3"):
            refused = p in last and last[p] != me.fingerprint
            assert (p in me.refused) == refused
            if refused:
                with pytest.raises(RemoteError):
                    me.admit(p)
                theirs = [k for k, v in fp.items() if v == last[p]][0]
                if me.refused[p].startswith("fingerprint"):  # not described (yet)
                    assert last[p].hex() in me.refused[p]
                elif theirs == "a":
                    assert "ETH-USD" in me.refused[p]
                else:
                    assert "validate hook" in me.refused[p]
            else:
                assert me.admit(p)
    lines = me.notices()
    assert len(lines) <= MAX_NOTICES and all("\n" not in x and len(x) < 1000 for x in lines)


# ==== through Membership and the cores ==============================================================
CFG = MembershipConfig()
T = 10**12  # the cores' clock in the last test: ops are stamped and received at about this time


def run_members(ms: dict[str, Membership], until: int, step: int = 10 * MS) -> None:
    now = 0
    while now <= until:
        for m in ms.values():
            m.tick(now)
        for _ in range(4):
            msgs = [(src, dst, msg) for src, m in ms.items() for dst, msg in m.outbox()]
            for src, dst, msg in msgs:
                if dst in ms:
                    ms[dst].receive(msg, src, now)
        now += step


def test_membership_carries_fingerprints_and_refuses_the_odd_one() -> None:
    import random

    ids = ["n1", "n2", "n3"]
    good, bad = Venue.of([BTC]), Venue.of([dataclasses.replace(BTC, stp="off")])
    ms = {n: Membership(n, ids, random.Random(i), CFG, venue=bad if n == "n3" else good) for i, n in enumerate(ids)}
    first = ms["n1"]
    first.tick(0)
    hello = first.outbox()
    assert sorted((d, type(m).__name__) for d, m in hello) == [("n2", "VenueQuery"), ("n3", "VenueQuery")]
    for d, m in hello:
        ms[d].receive(m, "n1", 0)
    run_members(ms, 600 * MS)
    assert set(ms["n1"].venue.refused) == {"n3"} and set(ms["n2"].venue.refused) == {"n3"}
    assert set(ms["n3"].venue.refused) == {"n1", "n2"}
    assert ms["n1"].venue.notices() == ["refusing n3: venue differs: BTC-USD stp cancel-newest here, off at n3"]
    assert all(s == "alive" for s in ms["n1"].states().values())  # membership itself goes on
    # probes and acks carry the fingerprint
    ms["n1"].tick(10 * SECOND)
    out = [m for _, m in ms["n1"].outbox() if type(m) in (Probe, Ack)]
    assert out and all(m.venue == ms["n1"].venue.fingerprint for m in out)


def test_cores_drop_a_refused_peers_ops_and_show_it_in_status() -> None:
    good, bad = Venue.of([Instrument("GBX")]), Venue.of([Instrument("GBX", tick_size="0.5")])
    core = NodeCore("n1", ["n1", "n2", "n3"], good, recovered=True)
    op3, _ = Replica("n3", bad, ["n1", "n2", "n3"]).submit_new("GBX", BUY, 200, 1, GTC, T, account="a")
    op2, _ = Replica("n2", good, ["n1", "n2", "n3"]).submit_new("GBX", BUY, 200, 1, GTC, T, account="a")
    other = VenueCheck("n3", bad).fingerprint
    core.receive(Probe(1, 1, 0, (), other), "n3", None, T)
    with pytest.raises(RemoteError) as e:
        core.receive(OpBatch([op3]), "n3", None, T + 1)
    assert e.value.reason == "venue_mismatch"
    core.receive(OpBatch([op2]), "n2", None, T + 1)  # a peer not heard from yet is admitted
    st = core.status()
    assert st["ops"] == 1 and st["version_vector"] == {"n2": 1}
    assert st["venue"]["refused"] == {"n3": "fingerprint " + good.fingerprint() + " here, " + other.hex() + " at n3"}
    assert st["venue"]["fingerprint"] == good.fingerprint()
    # its description arrives: the refusal is worded; a matching probe later admits it again
    core.receive(VenueInfo(other, VenueCheck("n3", bad).blob), "n3", None, T + 2)
    assert core.status()["venue"]["refused"] == {"n3": "GBX tick_size 0.01 here, 0.5 at n3"}
    core.receive(Probe(2, 1, 0, (), VenueCheck("x", good).fingerprint), "n3", None, T + 3)
    core.receive(OpBatch([op3]), "n3", None, T + 4)
    assert core.status()["ops"] == 2 and core.status()["venue"]["refused"] == {}
    # strong mode: the sequencer's messages from a refused peer are dropped the same way
    s = StrongNodeCore("n1", ["n1", "n2", "n3"], good)
    s.receive(Probe(1, 1, 0, (), other), "n3", None, T)
    from gossipbook.core.sequencer import RequestVote

    with pytest.raises(RemoteError) as e:
        s.receive(RequestVote(5, 0, 0, False), "n3", None, T + 1)
    assert e.value.reason == "venue_mismatch" and s.status()["venue"]["refused"]
