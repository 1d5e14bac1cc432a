"""The pure FIX session layer, driven with explicit bytes and ``now`` (no sockets, no clock).

What must hold: Logon checks the password and bounds HeartBtInt, and a refused Logon changes nothing;
MsgSeqNum is checked (a gap asks for a resend and queues what came early; too low without
PossDupFlag ends the session with the reason; with PossDupFlag it is ignored); a ResendRequest is
answered with PossDupFlag resends and GapFill over admin messages, capped per request; heartbeats,
TestRequests and the heartbeat timeout follow the negotiated interval on the ``now`` given; a framed
but malformed message gets a Reject (3) naming the tag and reason and uses up its number; every
bound (outgoing buffer, store, message size) holds and is counted; the journal rebuilds the state.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gossipbook.fix import tags as T
from gossipbook.fix.codec import encode, encode_body, format_utc
from gossipbook.fix.session import (
    Disconnect,
    Forget,
    LoggedOn,
    Persisted,
    ResetStore,
    SeqNums,
    Session,
    State,
    Stored,
)

from .sessionkit import NS, T0, acceptor, logged_on, logon, raw, read


def types(data: bytes) -> list[str]:
    return [m.msg_type for m in read(data)]


def test_logon_negotiates_the_heartbeat_and_uses_sequence_numbers() -> None:
    s = acceptor()
    s.connect(T0)
    s.receive_data(logon(hb=7), T0)
    [reply] = read(s.data_to_send())
    assert reply.msg_type == "A" and reply.get(T.HeartBtInt) == b"7" and reply.get(T.MsgSeqNum) == b"1"
    assert s.events() == [LoggedOn(7, False)] and s.state is State.ACTIVE
    assert s.journal() == [SeqNums(2, 2)]


def test_a_refused_logon_changes_nothing() -> None:
    for bad in (logon(password="wrong-pw"), logon(hb=0), logon(hb=301),
                raw("A", 1, [(T.EncryptMethod, 1), (T.HeartBtInt, 30), (T.Password, "secret-pw")])):
        s = acceptor()
        s.connect(T0)
        s.receive_data(bad, T0)
        [out] = read(s.data_to_send())
        assert out.msg_type == "5" and out.get(T.Text)
        assert isinstance(s.events()[-1], Disconnect) and s.state is State.DISCONNECTED
        assert (s.next_in, s.next_out) == (1, 1) and s.journal() == []
        assert s.counters["logon_refused"] == 1


def test_first_message_must_be_a_logon() -> None:
    s = acceptor()
    s.connect(T0)
    s.receive_data(raw("D", 1, [(11, "x")]), T0)
    assert s.state is State.DISCONNECTED and s.data_to_send() == b"" and (s.next_in, s.next_out) == (1, 1)


def test_reset_seq_num_flag_resets_both_ways() -> None:
    s = logged_on()
    s.send_app("8", [(17, "e1")], T0)
    s.connection_lost(T0)
    s.connect(T0)
    s.receive_data(logon(seq=1, reset=True), T0)
    [reply] = read(s.data_to_send())
    assert reply.get(T.ResetSeqNumFlag) == b"Y" and reply.get(T.MsgSeqNum) == b"1"
    assert (s.next_in, s.next_out) == (2, 2) and s.stored() == {}
    assert any(isinstance(r, ResetStore) for r in s.journal())


def test_a_gap_asks_for_a_resend_and_queued_messages_follow_in_order() -> None:
    s = logged_on()
    s.receive_data(raw("D", 4, [(11, "c4")]) + raw("D", 5, [(11, "c5")]), T0)
    [rr] = read(s.data_to_send())
    assert rr.msg_type == "2" and rr.get(T.BeginSeqNo) == b"2" and rr.get(T.EndSeqNo) == b"0"
    assert s.events() == [] and s.next_in == 2 and s.counters["resend_requests_sent"] == 1
    # the resend: 2 as a PossDup copy, 3 gap-filled; then the queued 4 and 5 are processed
    s.receive_data(raw("D", 2, [(11, "c2")], poss_dup=True) +
                   raw("4", 3, [(T.GapFillFlag, "Y"), (T.NewSeqNo, 4)], poss_dup=True), T0)
    got = [e.msg.get(11) for e in s.events()]
    assert got == [b"c2", b"c4", b"c5"] and s.next_in == 6
    # the copies of 4 and 5 the resend also brings are ignored as duplicates
    s.receive_data(raw("D", 4, [(11, "c4")], poss_dup=True), T0)
    assert s.events() == [] and s.counters["dup_ignored"] == 1


def test_too_low_without_possdup_ends_the_session_with_the_reason() -> None:
    s = logged_on()
    s.receive_data(raw("0", 2), T0)
    s.receive_data(raw("0", 2), T0)
    [lo] = read(s.data_to_send())
    assert lo.msg_type == "5" and b"MsgSeqNum too low, expecting 3 but received 2" in (lo.get(T.Text) or b"")
    assert isinstance(s.events()[-1], Disconnect) and s.counters["too_low"] == 1


def test_possdup_without_orig_sending_time_is_rejected() -> None:
    s = logged_on()
    s.receive_data(raw("0", 2), T0)
    bad = encode("0", "CLI", "GW", 2, format_utc(T0), encode_body([(T.PossDupFlag, "Y")]))
    s.receive_data(bad, T0)
    [rej] = read(s.data_to_send())
    assert rej.msg_type == "3" and rej.get(T.RefTagID) == b"122" and rej.get(T.SessionRejectReason) == b"1"


def test_resend_request_is_answered_with_possdup_and_gap_fills() -> None:
    s = logged_on()  # our seq 1 was the Logon (admin)
    s.send_app("8", [(17, "e2")], T0)  # 2
    s.receive_data(raw("1", 2, [(T.TestReqID, "t")]), T0)  # we answer with a Heartbeat: 3 (admin)
    s.send_app("8", [(17, "e4")], T0 + NS)  # 4
    s.data_to_send()
    s.receive_data(raw("2", 3, [(T.BeginSeqNo, 1), (T.EndSeqNo, 0)], now=T0 + 2 * NS), T0 + 2 * NS)
    out = read(s.data_to_send())
    shape = [(m.msg_type, m.get(T.MsgSeqNum), m.get(T.NewSeqNo), m.get(T.PossDupFlag)) for m in out]
    assert shape == [("4", b"1", b"2", b"Y"), ("8", b"2", None, b"Y"), ("4", b"3", b"4", b"Y"), ("8", b"4", None, b"Y")]
    assert out[1].get(T.OrigSendingTime) == b"20231114-22:13:20.000" and out[1].get(17) == b"e2"
    assert out[3].get(T.OrigSendingTime) == b"20231114-22:13:21.000"
    assert s.next_out == 5  # a resend uses no new numbers


def test_a_resend_answer_is_capped() -> None:
    s = logged_on(acceptor(max_resend_batch=3))
    for k in range(10):
        s.send_app("8", [(17, f"e{k}")], T0)
    s.data_to_send()
    s.receive_data(raw("2", 2, [(T.BeginSeqNo, 2), (T.EndSeqNo, 0)]), T0)
    assert [m.msg_type for m in read(s.data_to_send())] == ["8", "8", "8"]


def test_heartbeat_test_request_and_timeout_follow_now() -> None:
    s = acceptor()
    s.connect(T0)
    s.receive_data(logon(hb=10), T0)
    s.data_to_send()
    assert s.get_timer() == T0 + 10 * NS
    s.handle_timer(T0 + 9 * NS)
    assert s.data_to_send() == b""
    s.handle_timer(T0 + 10 * NS)
    assert types(s.data_to_send()) == ["0"]
    s.handle_timer(T0 + 12 * NS)  # 1.2 x HeartBtInt of silence: a TestRequest
    [tr] = read(s.data_to_send())
    assert tr.msg_type == "1" and tr.get(T.TestReqID)
    s.handle_timer(T0 + 13 * NS)
    assert s.data_to_send() == b""  # not twice
    s.receive_data(raw("0", 2, [(T.TestReqID, tr.get(T.TestReqID))], now=T0 + 13 * NS), T0 + 13 * NS)
    s.handle_timer(T0 + 36 * NS)
    assert s.state is State.ACTIVE  # 23 s of silence: not yet
    s.handle_timer(T0 + 37 * NS)  # 2.4 x HeartBtInt after the last message in
    assert isinstance(s.events()[-1], Disconnect) and s.counters["heartbeat_timeouts"] == 1


def test_test_request_is_answered_with_its_id() -> None:
    s = logged_on()
    s.receive_data(raw("1", 2, [(T.TestReqID, "ping-7")]), T0)
    [hb] = read(s.data_to_send())
    assert hb.msg_type == "0" and hb.get(T.TestReqID) == b"ping-7"


def test_malformed_messages_get_a_reject_naming_tag_and_reason() -> None:
    s = logged_on()
    cases = [
        (raw("1", 2), T.TestReqID, T.R_REQUIRED_TAG_MISSING),
        (raw("ZZ", 3), T.MsgType, T.R_INVALID_MSG_TYPE),
        (raw("2", 4, [(T.BeginSeqNo, "x"), (T.EndSeqNo, 0)]), T.BeginSeqNo, T.R_VALUE_INCORRECT),
        (raw("4", 5, [(T.GapFillFlag, "Y"), (T.NewSeqNo, 2)]), T.NewSeqNo, T.R_VALUE_INCORRECT),
    ]
    for data, tag, reason in cases:
        s.receive_data(data, T0)
        [rej] = read(s.data_to_send())
        assert rej.msg_type == "3", rej
        assert (rej.get(T.RefTagID), rej.get(T.SessionRejectReason)) == (str(tag).encode(), str(reason).encode())
        assert rej.get(T.RefSeqNum) == raw_seq(data) and rej.get(T.Text)
    assert s.next_in == 6 and s.state is State.ACTIVE  # each used up its number


def raw_seq(data: bytes) -> bytes:
    return read(data)[0].get(T.MsgSeqNum) or b""


def test_unparseable_tag_is_rejected_and_consumes_its_number() -> None:
    s = logged_on()
    body = b"35=0\x0149=CLI\x0156=GW\x0134=2\x0152=20231114-22:13:20.000\x01x1=y\x01"
    frame = b"8=FIX.4.4\x019=%d\x01" % len(body) + body
    frame += b"10=%03d\x01" % (sum(frame) % 256)
    s.receive_data(frame, T0)
    [rej] = read(s.data_to_send())
    assert rej.msg_type == "3" and rej.get(T.SessionRejectReason) == b"0" and rej.get(T.RefSeqNum) == b"2"
    assert s.next_in == 3


def test_garbled_frames_are_ignored_and_the_gap_is_repaired() -> None:
    s = logged_on()
    good = raw("0", 2)
    bad = good[:-4] + b"999\x01"  # wrong CheckSum
    s.receive_data(bad + b"\x00\xffjunk" + raw("0", 3), T0)
    assert s.counters["garbled"] == 2 and s.next_in == 2
    assert types(s.data_to_send()) == ["2"]


def test_an_oversized_message_closes_the_session() -> None:
    s = logged_on(acceptor(max_message=512))
    s.receive_data(b"8=FIX.4.4\x019=9999\x0135=0\x01", T0)
    assert types(s.data_to_send()) == ["5"] and isinstance(s.events()[-1], Disconnect)
    assert s.counters["fatal"] == 1


def test_wrong_comp_id_and_stale_sending_time_end_the_session() -> None:
    s = logged_on()
    s.receive_data(raw("0", 2, sender="EVE"), T0)
    assert types(s.data_to_send()) == ["3", "5"] and s.state is State.DISCONNECTED
    s = logged_on()
    s.receive_data(raw("0", 2, now=T0 - 500 * NS), T0)
    out = read(s.data_to_send())
    assert [m.msg_type for m in out] == ["3", "5"] and out[0].get(T.SessionRejectReason) == b"10"


def test_a_peer_that_does_not_read_is_disconnected_and_its_messages_stay_stored() -> None:
    s = logged_on(acceptor(max_out_bytes=1 << 16))
    for k in range(2000):
        s.send_app("8", [(17, f"e{k}"), (58, "x" * 40)], T0)
    assert s.state is State.DISCONNECTED and s.counters["slow_consumer"] == 1
    assert len(s.stored()) == 2000 and s.next_out == 2002


def test_the_store_is_bounded_and_forgets_the_oldest() -> None:
    s = logged_on(acceptor(max_stored=5))
    for k in range(8):
        s.send_app("8", [(17, f"e{k}")], T0)
    assert sorted(s.stored()) == [5, 6, 7, 8, 9] and s.counters["store_evicted"] == 3
    assert [r.upto for r in s.journal() if isinstance(r, Forget)] == [3, 4, 5]
    s.data_to_send()
    s.receive_data(raw("2", 2, [(T.BeginSeqNo, 2), (T.EndSeqNo, 0)]), T0)
    out = read(s.data_to_send())
    assert (out[0].msg_type, out[0].get(T.NewSeqNo)) == ("4", b"5")  # what is gone is gap-filled


def test_logout_is_clean_and_times_out() -> None:
    s = logged_on()
    s.logout("bye", T0)
    assert types(s.data_to_send()) == ["5"] and s.state is State.LOGOUT_SENT
    s.receive_data(raw("5", 2), T0)
    assert isinstance(s.events()[-1], Disconnect) and s.data_to_send() == b""
    s = logged_on()
    s.logout("bye", T0)
    s.handle_timer(T0 + 3 * NS)
    assert s.state is State.DISCONNECTED


def replay(records: list, p: Persisted | None = None) -> Persisted:
    """What the store would hold after these journal records."""
    p = p or Persisted()
    for r in records:
        if isinstance(r, SeqNums):
            p.next_in, p.next_out = r.next_in, r.next_out
        elif isinstance(r, Stored):
            p.stored[r.seq] = r
        elif isinstance(r, Forget):
            p.stored = {k: v for k, v in p.stored.items() if k >= r.upto}
        elif isinstance(r, ResetStore):
            p.stored = {}
    return p


actions = st.lists(st.one_of(
    st.tuples(st.just("app"), st.integers(0, 3)),
    st.tuples(st.just("in"), st.sampled_from(["0", "1", "D", "ZZ"])),
    st.tuples(st.just("gap"), st.integers(1, 3)),
    st.tuples(st.just("tick"), st.integers(0, 50)),
    st.tuples(st.just("resend"), st.integers(1, 20)),
), max_size=40)


@settings(max_examples=40)
@given(actions)
def test_sequence_numbers_are_monotone_and_the_journal_rebuilds_them(acts: list[tuple[str, int]]) -> None:
    s = acceptor(max_stored=6, heartbeat_max_s=30)
    s.connect(T0)
    s.receive_data(logon(hb=5), T0)
    p = replay(s.journal())
    now, peer_seq, last_out = T0, 2, s.next_out
    for kind, arg in acts:
        if kind == "app":
            for _ in range(arg):
                s.send_app("8", [(17, "e")], now)
        elif kind == "in":
            fields = [(T.TestReqID, "t")] if arg == "1" else [(11, "c")] if arg == "D" else []
            s.receive_data(raw(arg, peer_seq, fields, now=now), now)
            peer_seq += 1
        elif kind == "gap":
            peer_seq += arg
            s.receive_data(raw("0", peer_seq, now=now), now)
            peer_seq += 1
        elif kind == "tick":
            now += arg * NS // 10
            s.handle_timer(now)
        else:
            s.receive_data(raw("2", peer_seq, [(T.BeginSeqNo, arg), (T.EndSeqNo, 0)], now=now), now)
            peer_seq += 1
        assert s.next_out >= last_out
        last_out = s.next_out
        sent = read(s.data_to_send())
        fresh = [int(m.get(T.MsgSeqNum) or 0) for m in sent if m.get(T.PossDupFlag) != b"Y"]
        assert fresh == sorted(fresh) and len(set(fresh)) == len(fresh)
        p = replay(s.journal(), p)
        assert (p.next_in, p.next_out) == (s.next_in, s.next_out)
        assert p.stored == s.stored() and len(p.stored) <= 6
        if s.state is State.DISCONNECTED:
            break
    again = Session(s.cfg, p)
    assert (again.next_in, again.next_out, again.stored()) == (s.next_in, s.next_out, s.stored())


@settings(max_examples=150)
@given(st.binary(max_size=600))
def test_garbage_bytes_never_crash_and_never_grow_memory(data: bytes) -> None:
    s = logged_on(acceptor(max_message=256))
    before = s.next_in
    s.receive_data(data, T0)
    s.receive_data(data, T0)
    assert s._framer.buffered <= 256 + 2 * len(data)
    assert s.next_in >= before and s.state in (State.ACTIVE, State.DISCONNECTED)
    for m in read(s.data_to_send()):
        assert m.msg_type in ("2", "3", "5")


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid message with a few bytes changed, inserted or removed: the checksum and body length
    are recomputed half the time so the damage reaches the field checks, not only the framer."""
    fields = draw(st.lists(st.tuples(st.sampled_from([7, 16, 36, 43, 52, 108, 112, 122, 123, 11, 999]),
                                     st.text("0123456789YNx-:.", min_size=1, max_size=12)), max_size=6))
    msg_type = draw(st.sampled_from(["0", "1", "2", "3", "4", "5", "A", "D", "8", "q"]))
    seq = draw(st.integers(0, 5))
    data = bytearray(raw(msg_type, seq, fields))
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "insert", "delete"]))
        b = draw(st.integers(0, 255))
        if op == "flip":
            data[i] = b
        elif op == "insert":
            data.insert(i, b)
        elif len(data) > 1:
            del data[i]
    if draw(st.booleans()):
        body_start = data.find(b"\x0135=")
        trailer = data.rfind(b"\x0110=")
        if body_start > 0 and trailer > body_start:
            body = bytes(data[body_start + 1:trailer + 1])
            head = b"8=FIX.4.4\x019=%d\x01" % len(body) + body
            data = bytearray(head + b"10=%03d\x01" % (sum(head) % 256))
    return bytes(data)


@settings(max_examples=200)
@given(st.lists(mutated(), min_size=1, max_size=5))
def test_damaged_messages_get_a_reject_or_a_disconnect_never_a_crash(msgs: list[bytes]) -> None:
    s = logged_on()
    for data in msgs:
        before_in = s.next_in
        s.receive_data(data, T0)
        out = read(s.data_to_send())
        assert s.next_in >= before_in or s.state is State.DISCONNECTED
        for m in out:
            assert m.msg_type in ("0", "2", "3", "4", "5", "A", "8"), m
            if m.msg_type == "3":
                assert m.get(T.RefSeqNum) and m.get(T.SessionRejectReason) and m.get(T.Text)
        if s.state is State.DISCONNECTED:
            break


def test_another_fix_version_is_answered_with_a_logout() -> None:
    s = acceptor()
    s.connect(T0)
    frame = logon().replace(b"8=FIX.4.4", b"8=FIX.4.2")  # same length: only the CheckSum needs redoing
    body_end = frame.rindex(b"10=")
    frame = frame[:body_end] + b"10=%03d\x01" % (sum(frame[:body_end]) % 256)
    s.receive_data(frame, T0)
    [lo] = read(s.data_to_send())
    assert lo.msg_type == "5" and b"FIX.4.4" in (lo.get(T.Text) or b"")
    assert s.state is State.DISCONNECTED and (s.next_in, s.next_out) == (1, 1)
