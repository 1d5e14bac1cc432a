"""The FIX 4.4 session layer as a pure state machine: bytes and ``now`` in, bytes, events and a
journal out.

Theory of operation (aioquic's shape, as gossipbook.core does it): a ``Session`` never touches a
socket or a clock. The shell calls ``connect(now)`` when a transport attaches, ``receive_data(data,
now)`` with what it read, ``handle_timer(now)`` at ``get_timer()``, ``send_app(...)`` for an
application message and ``logout(text, now)`` to leave; then it drains three outputs, in this
order: ``journal()`` (records to persist, fsynced, before anything is sent: sequence numbers and the
application messages kept for resend), ``data_to_send()`` (bytes for the transport) and ``events()``
(``LoggedOn``, ``AppMessage``, ``Disconnect``). ``now`` is nanoseconds of UTC wall time: it stamps
SendingTime and drives the heartbeat timers, so tests drive a session through hours in
microseconds.

States: DISCONNECTED -> connect -> AWAIT_LOGON -> Logon -> ACTIVE -> Logout sent -> LOGOUT_SENT ->
Logout received (or a timeout) -> DISCONNECTED. Any protocol violation that FIX says ends a session
(a MsgSeqNum too low without PossDupFlag, a wrong BeginString or CompID, a SendingTime too far off)
sends Logout with the reason in Text and ends in DISCONNECTED with a ``Disconnect(reason)``.

Rules that hold (the tests in tests/fix/ check each):
- ``next_out`` strictly increases by one per message sent (gap fills reuse old numbers and never
  move it); ``next_in`` never decreases except by a Logon with ResetSeqNumFlag=Y; both are in the
  journal before the bytes that depend on them are handed out.
- A message above ``next_in`` is queued (at most ``max_queued``, drops counted) and a ResendRequest
  (BeginSeqNo=next_in, EndSeqNo=0) goes out once per gap; queued messages are processed in order
  when the gap fills. A message below ``next_in`` is ignored if PossDupFlag=Y, else the session ends.
- A ResendRequest is answered with the stored application messages (PossDupFlag=Y,
  OrigSendingTime) and SequenceReset-GapFill over admin messages and anything no longer stored; one
  answer resends at most ``max_resend_batch`` messages whatever range is asked.
- A malformed but framed message gets a Reject (3) with RefSeqNum, RefTagID where known,
  RefMsgType, SessionRejectReason and Text, and consumes its MsgSeqNum. Garbled frames (wrong
  CheckSum or BodyLength, junk) are ignored and counted; more than ``max_garbled`` per connection
  ends it. Nothing a peer sends raises out of ``receive_data``.
- Memory is bounded per session: the framer (``max_message``), the queue (``max_queued``), the store
  (``max_stored`` messages, oldest forgotten and counted), the outgoing buffer (``max_out_bytes``;
  a peer that does not read is disconnected, its messages stay stored for resend).
- A refused Logon (wrong password, HeartBtInt out of bounds, EncryptMethod) changes nothing: its
  Logout answer is sent without consuming a sequence number.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

from . import tags as T
from .codec import (
    MAX_SEQ,
    Fatal,
    Framer,
    Garbled,
    Message,
    ParseError,
    clean_text,
    encode,
    encode_body,
    format_utc,
    parse,
    parse_int,
    parse_utc,
)

NS = 1_000_000_000
T_MAX = MAX_SEQ


class State(Enum):
    DISCONNECTED = "disconnected"
    AWAIT_LOGON = "await_logon"
    ACTIVE = "active"
    LOGOUT_SENT = "logout_sent"


class SessionInUse(Exception):
    """``connect`` on a session that already has a transport: the shell must refuse the second one."""


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """What one session needs: the CompIDs, the password a Logon must carry, the heartbeat bounds
    and every size bound (defaults are what ``fix.toml`` documents)."""

    comp_id: str  # ours: SenderCompID on what we send, TargetCompID on what we receive
    peer_comp_id: str  # theirs
    password: str | None = None  # acceptor: required at Logon when set; initiator: sent at Logon
    initiator: bool = False
    heartbeat_s: int = 30  # initiator: the HeartBtInt it proposes
    heartbeat_min_s: int = 1
    heartbeat_max_s: int = 300
    reset_on_logon: bool = False  # initiator: ask for ResetSeqNumFlag=Y
    app_types: frozenset[str] = T.APP_TYPES_IN
    max_message: int = 8192
    max_stored: int = 10_000
    max_queued: int = 1_000
    max_out_bytes: int = 4 << 20
    max_resend_batch: int = 5_000
    max_latency_s: int = 120
    max_garbled: int = 100
    logon_timeout_s: float = 10.0
    logout_timeout_s: float = 2.0


@dataclass(frozen=True, slots=True)
class Stored:
    """An application message kept for resend: enough to send it again with PossDupFlag."""

    seq: int
    msg_type: str
    sending_time: bytes
    body: bytes


@dataclass(slots=True)
class Persisted:
    """What survives a restart: the next sequence numbers both ways and the stored messages."""

    next_in: int = 1
    next_out: int = 1
    stored: dict[int, Stored] = field(default_factory=dict)


# ---- outputs --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LoggedOn:
    heartbeat_s: int
    reset: bool


@dataclass(frozen=True, slots=True)
class AppMessage:
    msg: Message
    seq: int


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Close the transport once ``data_to_send()`` is flushed; ``reason`` is one line for the log."""

    reason: str


@dataclass(frozen=True, slots=True)
class SeqNums:
    next_in: int
    next_out: int


@dataclass(frozen=True, slots=True)
class Forget:
    """Stored messages below ``upto`` are gone (the store's bound)."""

    upto: int


@dataclass(frozen=True, slots=True)
class ResetStore:
    """Sequence numbers were reset: every stored message is gone."""


Event = LoggedOn | AppMessage | Disconnect
Record = SeqNums | Stored | Forget | ResetStore

COUNTERS = ("msgs_in", "msgs_out", "garbled", "fatal", "rejects_sent", "rejects_received",
            "resend_requests_sent", "resend_requests_answered", "resent", "gap_fills_sent", "dup_ignored",
            "queued", "queue_dropped", "too_low", "heartbeat_timeouts", "test_requests_sent", "logons",
            "logon_refused", "slow_consumer", "store_evicted", "stored_offline")


class Session:
    """One FIX session (a SenderCompID/TargetCompID pair), across any number of connections."""

    def __init__(self, cfg: SessionConfig, persisted: Persisted | None = None) -> None:
        self.cfg = cfg
        p = persisted or Persisted()
        if not (1 <= p.next_in <= T_MAX and 1 <= p.next_out <= T_MAX):
            raise ValueError("persisted sequence numbers out of range")
        self.next_in = p.next_in
        self.next_out = p.next_out
        self._stored: dict[int, Stored] = dict(sorted(p.stored.items())[-cfg.max_stored:])
        self.state = State.DISCONNECTED
        self.heartbeat_s = cfg.heartbeat_s
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._framer = Framer(cfg.max_message)
        self._out = bytearray()
        self._events: list[Event] = []
        self._journal: list[Record] = []
        self._seq_dirty = False
        self._queue: dict[int, Message | ParseError | None] = {}
        self._resend_upto = 0
        self._garbled = 0
        self._connected_at = self._last_in = self._last_out = 0
        self._test_req_at: int | None = None
        self._test_req_id: str | None = None
        self._test_req_n = 0
        self._logout_at = 0
        self._held: list[int] = []  # stored while a Logon was in flight, sent once logged on

    # ---- inputs -----------------------------------------------------------------------------------
    def connect(self, now: int) -> None:
        """A transport attached. An initiator sends its Logon now; an acceptor waits for one."""
        if self.state is not State.DISCONNECTED:
            raise SessionInUse(f"session {self.cfg.peer_comp_id}->{self.cfg.comp_id} is already connected")
        self._framer = Framer(self.cfg.max_message)
        self._out.clear()
        self._queue.clear()
        self._resend_upto = 0
        self._garbled = 0
        self._connected_at = self._last_in = self._last_out = now
        self._test_req_at = self._test_req_id = None
        self._held.clear()
        self.state = State.AWAIT_LOGON
        if self.cfg.initiator:
            if self.cfg.reset_on_logon:
                self._reset_seqnums()
            fields: list[tuple[int, object]] = [(T.EncryptMethod, 0), (T.HeartBtInt, self.cfg.heartbeat_s)]
            if self.cfg.reset_on_logon:
                fields.append((T.ResetSeqNumFlag, "Y"))
            if self.cfg.password:
                fields.append((T.Password, self.cfg.password))
            self._send_admin(T.MT_LOGON, fields, now)

    def connection_lost(self, now: int) -> None:
        """The transport is gone (closed by either side): unsent bytes are dropped (application
        messages stay stored for a resend after the next Logon)."""
        self.state = State.DISCONNECTED
        self._out.clear()
        self._queue.clear()

    def receive_data(self, data: bytes, now: int) -> None:
        """Bytes read from the transport; never raises on what they hold."""
        if self.state is State.DISCONNECTED:
            return
        self._framer.feed(data)
        while self.state is not State.DISCONNECTED:
            f = self._framer.next()
            if f is None:
                break
            if isinstance(f, Fatal):
                self.counters["fatal"] += 1
                self._logout_and_close(f.reason, now)
                break
            if isinstance(f, Garbled):
                self.counters["garbled"] += 1
                self._garbled += 1
                if self._garbled > self.cfg.max_garbled or self.state is State.AWAIT_LOGON:
                    self._disconnect(f"garbled input ({f.reason})")
                continue
            self.counters["msgs_in"] += 1
            self._last_in = now
            self._on_frame(f, now)

    def handle_timer(self, now: int) -> None:
        """Heartbeats, TestRequests and the logon/logout/heartbeat timeouts due at ``now``."""
        st = self.state
        if st is State.AWAIT_LOGON:
            if now >= self._connected_at + int(self.cfg.logon_timeout_s * NS):
                self._disconnect(f"no Logon within {self.cfg.logon_timeout_s:g} s")
            return
        if st is State.LOGOUT_SENT:
            if now >= self._logout_at + int(self.cfg.logout_timeout_s * NS):
                self._disconnect(f"no Logout answer within {self.cfg.logout_timeout_s:g} s")
            return
        if st is not State.ACTIVE:
            return
        hb = self.heartbeat_s * NS
        silent = now - self._last_in
        if silent >= hb * 24 // 10:
            self.counters["heartbeat_timeouts"] += 1
            self._disconnect(f"nothing from the peer for {silent / NS:.1f} s (HeartBtInt {self.heartbeat_s} s)")
            return
        if silent >= hb * 12 // 10 and (self._test_req_at is None or self._test_req_at < self._last_in):
            self._test_req_n += 1
            self._test_req_id = f"TEST{self._test_req_n}"
            self._test_req_at = now
            self.counters["test_requests_sent"] += 1
            self._send_admin(T.MT_TEST_REQUEST, [(T.TestReqID, self._test_req_id)], now)
        if now - self._last_out >= hb:
            self._send_admin(T.MT_HEARTBEAT, [], now)

    def get_timer(self) -> int | None:
        """When ``handle_timer`` must next run (ns), or ``None``."""
        st = self.state
        if st is State.AWAIT_LOGON:
            return self._connected_at + int(self.cfg.logon_timeout_s * NS)
        if st is State.LOGOUT_SENT:
            return self._logout_at + int(self.cfg.logout_timeout_s * NS)
        if st is not State.ACTIVE:
            return None
        hb = self.heartbeat_s * NS
        due = [self._last_out + hb, self._last_in + hb * 24 // 10]
        if self._test_req_at is None or self._test_req_at < self._last_in:
            due.append(self._last_in + hb * 12 // 10)
        return min(due)

    def send_app(self, msg_type: str, fields: Sequence[tuple[int, object]], now: int) -> int:
        """Send (or, logged out, only store) an application message; returns its MsgSeqNum. It is
        stored for resend either way, so a message made while the peer is away reaches it through
        the ResendRequest its next Logon leads to."""
        seq = self._take_seq()
        stamp = format_utc(now)
        body = encode_body(fields)
        st = Stored(seq, msg_type, stamp, body)
        self._stored[seq] = st
        self._journal.append(st)
        if len(self._stored) > self.cfg.max_stored:
            oldest = next(iter(self._stored))
            del self._stored[oldest]
            self.counters["store_evicted"] += 1
            self._journal.append(Forget(oldest + 1))
        if self.state is State.ACTIVE:
            self._transmit(encode(msg_type, self.cfg.comp_id, self.cfg.peer_comp_id, seq, stamp, body), now)
        else:
            self.counters["stored_offline"] += 1
            if self.state is State.AWAIT_LOGON:
                self._held.append(seq)  # numbered after our Logon: nothing would reveal it, so send it then
        return seq

    def reject(self, seq: int, msg_type: str, tag: int | None, reason: int, text: str, now: int) -> None:
        """Reject (3) an application message the application layer found malformed (its MsgSeqNum
        was consumed when it was delivered)."""
        self._reject(seq, reason, text, msg_type, tag, now, consume=False)

    def logout(self, text: str, now: int) -> None:
        """Leave cleanly: Logout now, the transport closes when the peer answers (or after
        ``logout_timeout_s``)."""
        if self.state is State.ACTIVE:
            self._send_admin(T.MT_LOGOUT, [(T.Text, clean_text(text))], now)
            self.state = State.LOGOUT_SENT
            self._logout_at = now
        elif self.state is State.AWAIT_LOGON:
            self._disconnect(text)

    # ---- outputs ----------------------------------------------------------------------------------
    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def events(self) -> list[Event]:
        out, self._events = self._events, []
        return out

    def journal(self) -> list[Record]:
        """Records to persist before sending: stored messages, forgets, resets, then the latest
        sequence numbers (last wins)."""
        out, self._journal = self._journal, []
        if self._seq_dirty:
            out.append(SeqNums(self.next_in, self.next_out))
            self._seq_dirty = False
        return out

    def stored(self) -> dict[int, Stored]:
        """The messages kept for resend (read-only view for tests and the store)."""
        return dict(self._stored)

    # ---- frames -----------------------------------------------------------------------------------
    def _on_frame(self, frame: bytes, now: int) -> None:
        msg = parse(frame)
        if isinstance(msg, ParseError):
            self._on_unparseable(msg, now)
            return
        if msg.get(T.BeginString) != T.BEGIN_STRING:
            self._logout_and_close("BeginString must be FIX.4.4", now)
            return
        seq = parse_int(msg.get(T.MsgSeqNum), 1)
        if seq is None or T.MsgSeqNum in msg.repeated:
            self._logout_and_close("MsgSeqNum missing or invalid", now)
            return
        mt = msg.msg_type
        if self.state is State.AWAIT_LOGON and mt != T.MT_LOGON:
            self._disconnect(f"first message must be a Logon, not MsgType {clean_text(mt, 8)}")
            return
        if msg.get(T.SenderCompID) != self.cfg.peer_comp_id.encode() or \
                msg.get(T.TargetCompID) != self.cfg.comp_id.encode():
            self._reject(seq, T.R_COMPID_PROBLEM, "CompID problem", mt, T.SenderCompID, now)
            self._logout_and_close("wrong SenderCompID/TargetCompID", now)
            return
        sent_at = parse_utc(msg.get(T.SendingTime))
        if sent_at is not None and abs(sent_at - now) > self.cfg.max_latency_s * NS:
            self._reject(seq, T.R_SENDING_TIME_ACCURACY, "SendingTime accuracy problem", mt, T.SendingTime, now)
            self._logout_and_close(f"SendingTime more than {self.cfg.max_latency_s} s from ours", now)
            return
        if mt == T.MT_LOGON:
            self._on_logon(msg, seq, now)
            return
        poss_dup = msg.get(T.PossDupFlag) == b"Y"
        if mt == T.MT_SEQUENCE_RESET and msg.get(T.GapFillFlag) != b"Y":
            self._on_reset_mode(msg, seq, now)
            return
        if seq > self.next_in:
            self._on_too_high(msg, seq, now)
        elif seq < self.next_in:
            if poss_dup:
                if msg.get(T.OrigSendingTime) is None and mt != T.MT_SEQUENCE_RESET:
                    self._reject(seq, T.R_REQUIRED_TAG_MISSING, "OrigSendingTime required with PossDupFlag",
                                 mt, T.OrigSendingTime, now, consume=False)
                else:
                    self.counters["dup_ignored"] += 1
            else:
                self.counters["too_low"] += 1
                self._logout_and_close(f"MsgSeqNum too low, expecting {self.next_in} but received {seq}", now)
        else:
            self._process(msg, seq, now)
            self._drain_queue(now)

    def _on_unparseable(self, err: ParseError, now: int) -> None:
        if self.state is State.AWAIT_LOGON:
            self._disconnect(f"unreadable Logon: {err.text}")
            return
        seq = err.seq if err.seq is not None and 1 <= err.seq <= T_MAX else None
        if seq is None:
            self.counters["garbled"] += 1  # nothing to reference: FIX treats it as garbled
            return
        if seq == self.next_in:
            self._reject(seq, err.reason, err.text, err.msg_type, err.tag, now)
            self._drain_queue(now)
        elif seq > self.next_in:
            self._enqueue(seq, err, now)
        # below next_in: an old number, nothing to do

    def _on_logon(self, msg: Message, seq: int, now: int) -> None:
        if self.state is not State.AWAIT_LOGON:
            self._logout_and_close("Logon received while logged on", now)
            return
        hb = parse_int(msg.get(T.HeartBtInt), 0, 10**6)
        reset = msg.get(T.ResetSeqNumFlag) == b"Y"
        if not self.cfg.initiator:
            refusal = None
            if msg.get(T.EncryptMethod) != b"0":
                refusal = "EncryptMethod(98) must be 0"
            elif hb is None or not self.cfg.heartbeat_min_s <= hb <= self.cfg.heartbeat_max_s:
                refusal = (f"HeartBtInt(108) must be between {self.cfg.heartbeat_min_s} and "
                           f"{self.cfg.heartbeat_max_s} seconds")
            elif self.cfg.password is not None and not hmac.compare_digest(
                    msg.get(T.Password) or b"", self.cfg.password.encode()):
                refusal = "Logon refused: wrong or missing Password(554)"
            elif reset and seq != 1:
                refusal = "ResetSeqNumFlag=Y needs MsgSeqNum=1"
            if refusal is not None:
                self.counters["logon_refused"] += 1
                self._refuse(refusal, now)
                return
            assert hb is not None
            self.heartbeat_s = hb
            if reset:
                self._reset_seqnums()
        elif hb is not None and hb > 0:
            self.heartbeat_s = hb
        if seq < self.next_in:
            self.counters["too_low"] += 1
            self._logout_and_close(f"MsgSeqNum too low, expecting {self.next_in} but received {seq}", now)
            return
        self.state = State.ACTIVE
        self.counters["logons"] += 1
        if not self.cfg.initiator:
            fields: list[tuple[int, object]] = [(T.EncryptMethod, 0), (T.HeartBtInt, self.heartbeat_s)]
            if reset:
                fields.append((T.ResetSeqNumFlag, "Y"))
            self._send_admin(T.MT_LOGON, fields, now)
        self._events.append(LoggedOn(self.heartbeat_s, reset))
        for h in self._held:  # made after our Logon was sent, never transmitted: they go now, in order
            st = self._stored.get(h)
            if st is not None:
                self._transmit(encode(st.msg_type, self.cfg.comp_id, self.cfg.peer_comp_id, h, format_utc(now),
                                      st.body), now)
        self._held.clear()
        if seq == self.next_in:
            self._advance(seq + 1)
        else:
            self._enqueue(seq, None, now)

    def _on_reset_mode(self, msg: Message, seq: int, now: int) -> None:
        new = parse_int(msg.get(T.NewSeqNo), 1)
        if new is None:
            self._reject(seq, T.R_REQUIRED_TAG_MISSING if msg.get(T.NewSeqNo) is None else T.R_VALUE_INCORRECT,
                         "NewSeqNo(36) missing or invalid", T.MT_SEQUENCE_RESET, T.NewSeqNo, now, consume=False)
        elif new < self.next_in:
            self._reject(seq, T.R_VALUE_INCORRECT, f"attempt to lower sequence number from {self.next_in} to {new}",
                         T.MT_SEQUENCE_RESET, T.NewSeqNo, now, consume=False)
        elif new > self.next_in:
            self._advance(new)
            self._drain_queue(now)

    def _on_too_high(self, msg: Message, seq: int, now: int) -> None:
        mt = msg.msg_type
        if mt == T.MT_RESEND_REQUEST:
            self._on_resend_request(msg, seq, now)  # answered at once: the peer may be waiting on it
            self._enqueue(seq, None, now)  # its number is used; it is not answered twice
            return
        if mt == T.MT_LOGOUT:
            self._send_admin(T.MT_LOGOUT, [(T.Text, "logout acknowledged")], now)
            self._disconnect("Logout from the peer (with a sequence gap)")
            return
        self._enqueue(seq, msg, now)

    def _enqueue(self, seq: int, item: Message | ParseError | None, now: int) -> None:
        if seq in self._queue or len(self._queue) < self.cfg.max_queued:
            self._queue[seq] = item
            self.counters["queued"] += 1
        else:
            self.counters["queue_dropped"] += 1  # the resend brings it again
        if self._resend_upto < self.next_in:
            self.counters["resend_requests_sent"] += 1
            self._send_admin(T.MT_RESEND_REQUEST, [(T.BeginSeqNo, self.next_in), (T.EndSeqNo, 0)], now)
        self._resend_upto = max(self._resend_upto, seq)

    def _drain_queue(self, now: int) -> None:
        while self.state is State.ACTIVE and self._queue:
            for k in [k for k in self._queue if k < self.next_in]:
                del self._queue[k]
            if self.next_in not in self._queue:
                return
            seq = self.next_in
            item = self._queue.pop(seq)
            if item is None:
                self._advance(seq + 1)
            elif isinstance(item, ParseError):
                self._reject(seq, item.reason, item.text, item.msg_type, item.tag, now)
            else:
                self._process(item, seq, now)

    def _process(self, msg: Message, seq: int, now: int) -> None:
        """A message in sequence: check its fields, act, and consume its number."""
        mt = msg.msg_type
        bad_header = msg.repeated & T.HEADER_TAGS
        if bad_header:
            self._reject(seq, T.R_TAG_REPEATED, "tag appears more than once", mt, min(bad_header), now)
            return
        if len(msg.pairs) < 3 or msg.pairs[2][0] != T.MsgType:
            self._reject(seq, T.R_TAG_OUT_OF_ORDER, "MsgType(35) must be the third field", mt, T.MsgType, now)
            return
        if msg.get(T.SendingTime) is None:
            self._reject(seq, T.R_REQUIRED_TAG_MISSING, "SendingTime(52) missing", mt, T.SendingTime, now)
            return
        if parse_utc(msg.get(T.SendingTime)) is None:
            self._reject(seq, T.R_INCORRECT_DATA_FORMAT, "SendingTime(52) is not a UTCTimestamp", mt,
                         T.SendingTime, now)
            return
        if msg.get(T.PossDupFlag) == b"Y" and msg.get(T.OrigSendingTime) is None and mt != T.MT_SEQUENCE_RESET:
            self._reject(seq, T.R_REQUIRED_TAG_MISSING, "OrigSendingTime required with PossDupFlag", mt,
                         T.OrigSendingTime, now)
            return
        if mt == T.MT_SEQUENCE_RESET:  # GapFill in sequence (reset mode is handled before)
            new = parse_int(msg.get(T.NewSeqNo), 1)
            if new is None or new <= seq:
                self._reject(seq, T.R_VALUE_INCORRECT, "NewSeqNo(36) must be above MsgSeqNum", mt, T.NewSeqNo, now)
            else:
                self._advance(new)
            return
        self._advance(seq + 1)
        if mt == T.MT_HEARTBEAT:
            if self._test_req_id is not None and msg.get(T.TestReqID) == self._test_req_id.encode():
                self._test_req_id = None
        elif mt == T.MT_TEST_REQUEST:
            rid = msg.get(T.TestReqID)
            if rid is None:
                self._reject(seq, T.R_REQUIRED_TAG_MISSING, "TestReqID(112) missing", mt, T.TestReqID, now,
                             consume=False)
            else:
                self._send_admin(T.MT_HEARTBEAT, [(T.TestReqID, rid)], now)
        elif mt == T.MT_RESEND_REQUEST:
            self._on_resend_request(msg, seq, now)
        elif mt == T.MT_REJECT:
            self.counters["rejects_received"] += 1
        elif mt == T.MT_LOGOUT:
            if self.state is State.LOGOUT_SENT:
                self._disconnect("logged out")
            else:
                self._send_admin(T.MT_LOGOUT, [(T.Text, "logout acknowledged")], now)
                self._disconnect("logged out by the peer")
        elif mt in self.cfg.app_types:
            self._events.append(AppMessage(msg, seq))
        else:
            self._reject(seq, T.R_INVALID_MSG_TYPE, f"MsgType {clean_text(mt, 8)} is not supported here", mt,
                         T.MsgType, now, consume=False)

    def _on_resend_request(self, msg: Message, seq: int, now: int) -> None:
        begin = parse_int(msg.get(T.BeginSeqNo), 1)
        end = parse_int(msg.get(T.EndSeqNo), 0)
        if begin is None or end is None or (end and end < begin):
            tag = T.BeginSeqNo if begin is None else T.EndSeqNo
            self._reject(seq, T.R_VALUE_INCORRECT, "BeginSeqNo(7)/EndSeqNo(16) missing or invalid",
                         T.MT_RESEND_REQUEST, tag, now, consume=False)
            return
        last = self.next_out - 1
        if begin > last:
            self._reject(seq, T.R_VALUE_INCORRECT, f"BeginSeqNo {begin} is beyond the last MsgSeqNum sent ({last})",
                         T.MT_RESEND_REQUEST, T.BeginSeqNo, now, consume=False)
            return
        self.counters["resend_requests_answered"] += 1
        hi = last if end == 0 or end > last else end
        gap_from = begin
        sent = 0
        for s, st in self._stored.items():
            if s < begin:
                continue
            if s > hi:
                break
            if sent >= self.cfg.max_resend_batch:
                hi = s - 1  # the rest when asked again
                break
            if s > gap_from:
                self._gap_fill(gap_from, s, now)
            self.counters["resent"] += 1
            self._transmit(encode(st.msg_type, self.cfg.comp_id, self.cfg.peer_comp_id, s, format_utc(now), st.body,
                                  poss_dup=True, orig_sending_time=st.sending_time), now)
            gap_from = s + 1
            sent += 1
        if gap_from <= hi:
            self._gap_fill(gap_from, hi + 1, now)

    def _gap_fill(self, seq: int, new_seq: int, now: int) -> None:
        self.counters["gap_fills_sent"] += 1
        body = encode_body([(T.GapFillFlag, "Y"), (T.NewSeqNo, new_seq)])
        stamp = format_utc(now)
        self._transmit(encode(T.MT_SEQUENCE_RESET, self.cfg.comp_id, self.cfg.peer_comp_id, seq, stamp, body,
                              poss_dup=True, orig_sending_time=stamp), now)

    # ---- helpers ----------------------------------------------------------------------------------
    def _reject(self, seq: int, reason: int, text: str, msg_type: str | None, tag: int | None, now: int,
                consume: bool = True) -> None:
        """Reject (3) the message ``seq``; ``consume``: it also uses up its number (a message in
        sequence that was not otherwise processed)."""
        self.counters["rejects_sent"] += 1
        fields: list[tuple[int, object]] = [(T.RefSeqNum, seq)]
        if tag is not None:
            fields.append((T.RefTagID, tag))
        if msg_type:
            fields.append((T.RefMsgType, clean_text(msg_type, 8)))
        fields += [(T.SessionRejectReason, reason), (T.Text, clean_text(text))]
        if self.state is State.AWAIT_LOGON:
            return  # a Logon that fails is answered by the Logout that follows, and changes nothing
        if consume and seq == self.next_in:
            self._advance(seq + 1)
        if self.state is not State.DISCONNECTED:
            self._send_admin(T.MT_REJECT, fields, now)

    def _refuse(self, text: str, now: int) -> None:
        """Answer a refused Logon with a Logout that consumes no sequence number, then close."""
        stamp = format_utc(now)
        self._transmit(encode(T.MT_LOGOUT, self.cfg.comp_id, self.cfg.peer_comp_id, self.next_out, stamp,
                              encode_body([(T.Text, clean_text(text))])), now)
        self._disconnect(text)

    def _logout_and_close(self, reason: str, now: int) -> None:
        if self.state in (State.ACTIVE, State.AWAIT_LOGON, State.LOGOUT_SENT):
            if self.state is State.AWAIT_LOGON:
                self._refuse(reason, now)
                return
            self._send_admin(T.MT_LOGOUT, [(T.Text, clean_text(reason))], now)
        self._disconnect(reason)

    def _disconnect(self, reason: str) -> None:
        if self.state is State.DISCONNECTED:
            return
        self.state = State.DISCONNECTED
        self._events.append(Disconnect(reason))

    def _take_seq(self) -> int:
        seq = self.next_out
        self.next_out = min(seq + 1, T_MAX)
        self._seq_dirty = True
        return seq

    def _advance(self, next_in: int) -> None:
        self.next_in = min(next_in, T_MAX)
        self._seq_dirty = True

    def _reset_seqnums(self) -> None:
        self.next_in = self.next_out = 1
        self._stored.clear()
        self._queue.clear()
        self._journal.append(ResetStore())
        self._seq_dirty = True

    def _send_admin(self, msg_type: str, fields: Sequence[tuple[int, object]], now: int) -> None:
        seq = self._take_seq()
        self._transmit(encode(msg_type, self.cfg.comp_id, self.cfg.peer_comp_id, seq, format_utc(now),
                              encode_body(fields)), now)

    def _transmit(self, data: bytes, now: int) -> None:
        if self.state is State.DISCONNECTED:
            return
        if len(self._out) + len(data) > self.cfg.max_out_bytes:
            self.counters["slow_consumer"] += 1
            self._out.clear()
            self._disconnect(f"outgoing buffer over {self.cfg.max_out_bytes} bytes: the peer is not reading")
            return
        self._out += data
        self._last_out = now
        self.counters["msgs_out"] += 1

