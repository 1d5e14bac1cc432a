"""Helpers for driving pure ``Session`` objects in tests: message bytes, a two-sided link, readers."""

from __future__ import annotations

from collections.abc import Iterable

from gossipbook.fix import tags as T
from gossipbook.fix.codec import Framer, Message, encode, encode_body, format_utc, parse
from gossipbook.fix.session import AppMessage, Disconnect, LoggedOn, Session, SessionConfig

NS = 1_000_000_000
T0 = 1_700_000_000 * NS
PW = "secret-pw"


def acceptor(**kw: object) -> Session:
    cfg = dict(comp_id="GW", peer_comp_id="CLI", password=PW)
    cfg.update(kw)  # type: ignore[arg-type]
    return Session(SessionConfig(**cfg))  # type: ignore[arg-type]


def initiator(**kw: object) -> Session:
    cfg = dict(comp_id="CLI", peer_comp_id="GW", password=PW, initiator=True, heartbeat_s=30,
               app_types=frozenset({"8"}))
    cfg.update(kw)  # type: ignore[arg-type]
    return Session(SessionConfig(**cfg))  # type: ignore[arg-type]


def raw(msg_type: str, seq: int, fields: Iterable[tuple[int, object]] = (), now: int = T0, sender: str = "CLI",
        target: str = "GW", poss_dup: bool = False) -> bytes:
    """A well-formed message from the client side, built with the codec."""
    stamp = format_utc(now)
    return encode(msg_type, sender, target, seq, stamp, encode_body(list(fields)), poss_dup=poss_dup,
                  orig_sending_time=stamp if poss_dup else None)


def logon(seq: int = 1, hb: int = 30, password: str = PW, reset: bool = False, now: int = T0) -> bytes:
    f: list[tuple[int, object]] = [(T.EncryptMethod, 0), (T.HeartBtInt, hb), (T.Password, password)]
    if reset:
        f.append((T.ResetSeqNumFlag, "Y"))
    return raw("A", seq, f, now)


def read(data: bytes) -> list[Message]:
    fr = Framer(1 << 20)
    fr.feed(data)
    out = []
    while (f := fr.next()) is not None:
        assert isinstance(f, bytes), f
        m = parse(f)
        assert isinstance(m, Message), m
        out.append(m)
    return out


def logged_on(s: Session | None = None, now: int = T0) -> Session:
    """An acceptor after a good Logon (next_in 2, next_out 2), outputs drained."""
    s = s or acceptor()
    s.connect(now)
    s.receive_data(logon(now=now), now)
    s.data_to_send()
    s.events()
    s.journal()
    return s


class Link:
    """An acceptor and an initiator joined by two byte pipes the test delivers from explicitly."""

    def __init__(self, a: Session, i: Session, now: int = T0) -> None:
        self.a, self.i, self.now = a, i, now
        self.to_a = bytearray()  # initiator -> acceptor
        self.to_i = bytearray()
        self.up = False
        self.delivered_a: list[str] = []  # ClOrdIDs the acceptor's application got
        self.delivered_i: list[str] = []  # ExecIDs the initiator's application got
        self.reasons: list[str] = []
        self.logons = 0
        self._closing = False

    def open(self) -> None:
        self.to_a.clear()
        self.to_i.clear()
        self.up = True
        self.a.connect(self.now)
        self.i.connect(self.now)
        self.collect()

    def close(self) -> None:
        self.up = False
        self._closing = False
        self.to_a.clear()
        self.to_i.clear()
        self.a.connection_lost(self.now)
        self.i.connection_lost(self.now)
        self.collect()

    def collect(self) -> None:
        for s, pipe, got in ((self.a, self.to_i, self.delivered_a), (self.i, self.to_a, self.delivered_i)):
            data = s.data_to_send()
            if self.up:
                pipe += data
            for ev in s.events():
                if isinstance(ev, AppMessage):
                    got.append((ev.msg.get(11) or ev.msg.get(17) or b"?").decode())
                elif isinstance(ev, Disconnect):
                    self.reasons.append(ev.reason)
                    self._closing = True
                elif isinstance(ev, LoggedOn):
                    self.logons += 1

    def deliver(self, to_acceptor: bool, n: int | None = None) -> None:
        pipe, dst = (self.to_a, self.a) if to_acceptor else (self.to_i, self.i)
        n = len(pipe) if n is None else min(n, len(pipe))
        chunk = bytes(pipe[:n])
        del pipe[:n]
        if chunk:
            dst.receive_data(chunk, self.now)
        self.collect()

    def pump(self, rounds: int = 200) -> None:
        """Deliver everything both ways until quiet; a Disconnect closes the link after its last
        bytes are delivered (TCP delivers what was sent before the close)."""
        for _ in range(rounds):
            if not (self.to_a or self.to_i):
                break
            self.deliver(True)
            self.deliver(False)
        if self._closing:
            self.deliver(True)
            self.deliver(False)
            self.close()

    def tick(self, seconds: float) -> None:
        self.now += int(seconds * NS)
        self.a.handle_timer(self.now)
        self.i.handle_timer(self.now)
        self.collect()
