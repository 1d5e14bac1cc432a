"""Two pure sessions (our acceptor and our initiator) joined by a byte pipe that hypothesis cuts,
splits, delays and replays, in virtual time.

What must hold, whatever the interleaving of application messages from both sides, partial
deliveries, dropped connections (in-flight bytes lost), heartbeat timeouts and PossDup replays of
old messages: nothing raises; sequence numbers only move forward; and once the link is
re-established and quiet, both sides are in sequence (each side's next_in is the other's next_out)
and every application message either side sent has reached the other side's application exactly
once, in order -- the messages lost in flight came back through ResendRequest and PossDup resends.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gossipbook.fix.codec import encode, format_utc
from gossipbook.fix.session import State

from .sessionkit import Link, acceptor, initiator


class TwoSessions(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.link = Link(acceptor(max_latency_s=10**6), initiator(max_latency_s=10**6, heartbeat_s=30))
        self.link.open()
        self.link.pump()
        self.sent_by_i: list[str] = []
        self.sent_by_a: list[str] = []
        self.k = 0
        self.last = (1, 1, 1, 1)

    @rule(n=st.integers(1, 3))
    def initiator_sends(self, n: int) -> None:
        for _ in range(n):
            self.k += 1
            self.sent_by_i.append(f"c{self.k}")
            self.link.i.send_app("D", [(11, f"c{self.k}")], self.link.now)
        self.link.collect()

    @rule(n=st.integers(1, 3))
    def acceptor_sends(self, n: int) -> None:
        for _ in range(n):
            self.k += 1
            self.sent_by_a.append(f"e{self.k}")
            self.link.a.send_app("8", [(17, f"e{self.k}")], self.link.now)
        self.link.collect()

    @precondition(lambda self: self.link.up)
    @rule(to_acceptor=st.booleans(), n=st.integers(1, 400))
    def deliver_some(self, to_acceptor: bool, n: int) -> None:
        self.link.deliver(to_acceptor, n)

    @rule()
    def pump(self) -> None:
        self.link.pump()

    @precondition(lambda self: self.link.up)
    @rule()
    def cut(self) -> None:
        """The connection drops: whatever was in flight is lost."""
        self.link.close()

    @precondition(lambda self: not self.link.up)
    @rule()
    def reconnect(self) -> None:
        self.link.open()

    @rule(seconds=st.integers(0, 80))
    def time_passes(self, seconds: int) -> None:
        self.link.tick(seconds)

    @precondition(lambda self: self.link.up and self.link.a.next_in > 2)
    @rule(data=st.data())
    def replay_old_message(self, data: st.DataObject) -> None:
        """A PossDup copy of a message the acceptor already processed (as a resend would bring)."""
        seq = data.draw(st.integers(1, self.link.a.next_in - 1))
        stamp = format_utc(self.link.now)
        dup = encode("0", "CLI", "GW", seq, stamp, b"", poss_dup=True, orig_sending_time=stamp)
        self.link.to_a += dup

    @invariant()
    def numbers_move_forward(self) -> None:
        a, i = self.link.a, self.link.i
        now = (a.next_in, a.next_out, i.next_in, i.next_out)
        assert all(x >= y for x, y in zip(now, self.last, strict=True)), (now, self.last)
        self.last = now

    def teardown(self) -> None:
        link = self.link
        for _ in range(4):  # settle: no more faults; reconnect if needed and let the resends run
            if not link.up:
                link.open()
            link.pump()
            if link.up and link.a.state is State.ACTIVE and link.i.state is State.ACTIVE:
                break
        a, i = link.a, link.i
        assert a.state is State.ACTIVE and i.state is State.ACTIVE, link.reasons
        assert (a.next_in, i.next_in) == (i.next_out, a.next_out)
        assert link.delivered_a == self.sent_by_i, (link.delivered_a, self.sent_by_i, link.reasons)
        assert link.delivered_i == self.sent_by_a, (link.delivered_i, self.sent_by_a, link.reasons)


TwoSessions.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
test_two_sessions = TwoSessions.TestCase
