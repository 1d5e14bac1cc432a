"""Clock samples from times taken at the socket (issue 18): the shell hands membership the arrival
time of a probe or ack (``rx_ns``), the probe's send time (``probe_sent``) and restamps the ack's
``t3`` as it encodes it; the loop's own latency then stays out of the sample, which stays sound."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipbook.core.errors import RemoteError
from gossipbook.core.membership import Ack, ClockSample, Membership, Probe

US, MS = 1_000, 1_000_000
T0 = 1_800_000_000 * 1_000_000_000


def _probe_out(a: Membership, t: int) -> tuple[int, Probe]:
    """Tick ``a`` until it probes (its first period starts at a random point)."""
    a.tick(t)
    for _ in range(50):
        for dst, msg in a.outbox():
            if type(msg) is Probe:
                assert dst == "b"
                return t, msg
        t = max(t + MS, a.next_deadline())
        a.tick(t)
    raise AssertionError("no probe")


def _exchange(theta: int, delays: tuple[int, ...], stamped: bool) -> tuple[ClockSample, int, int]:
    """One probe from a to b, whose clock reads ``theta`` more than a's. ``delays`` (true ns):
    a's encode before the send, the wire out, b's wakeup after the arrival, b's work before
    its send, the wire back, a's wakeup. ``stamped``: the shell gives the socket times."""
    enc1, d1, wake2, work2, d2, wake4 = delays
    a = Membership("a", ["a", "b"], random.Random(1))
    b = Membership("b", ["a", "b"], random.Random(2))
    tick, probe = _probe_out(a, T0)  # true time = a's clock
    sent = tick + enc1
    if stamped:
        a.probe_sent(probe.seq, sent)
    arrive_b = sent + d1
    if stamped:
        b.rx_ns = arrive_b + theta
    b.receive(probe, "a", arrive_b + wake2 + theta)
    ack = next(m for _, m in b.outbox() if type(m) is Ack)
    sent_b = arrive_b + wake2 + work2
    if stamped:
        ack = Ack(ack.seq, ack.incarnation, ack.t1, ack.t2, max(ack.t3, sent_b + theta), ack.updates, ack.venue)
    arrive_a = sent_b + d2
    if stamped:
        a.rx_ns = arrive_a
    a.receive(ack, "b", arrive_a + wake4)
    samples = [e for e in a.events() if type(e) is ClockSample]
    assert len(samples) == 1, samples
    return samples[0], d1 + d2, (sent - tick) + wake2 + work2 + wake4 + d1 + d2


delays = st.tuples(*(st.integers(0, 5 * MS) for _ in range(6)))


@settings(max_examples=80)
@given(st.integers(-100 * MS, 100 * MS), delays)
def test_socket_times_hold_the_offset_and_leave_the_loop_out(theta: int, ds: tuple[int, ...]) -> None:
    s, wire, _ = _exchange(theta, ds, stamped=True)
    assert s.t3 - s.t4 <= theta <= s.t2 - s.t1  # sound, whatever the asymmetry
    # the sample's round trip is the wire alone: encode, wakeups and work are out of it
    assert (s.t4 - s.t1) - (s.t3 - s.t2) == wire


@settings(max_examples=30)
@given(st.integers(-100 * MS, 100 * MS), delays)
def test_without_them_the_loop_is_inside_the_sample(theta: int, ds: tuple[int, ...]) -> None:
    s, _, loop = _exchange(theta, ds, stamped=False)
    assert s.t3 - s.t4 <= theta <= s.t2 - s.t1
    assert (s.t4 - s.t1) - (s.t3 - s.t2) == loop  # what the shell's stamps take out


def test_an_arrival_time_is_used_once_and_never_after_now() -> None:
    b = Membership("b", ["a", "b"], random.Random(2))
    probe = Probe(7, 1, T0, ())
    b.rx_ns = T0 + 5 * MS  # later than the receive itself: not believed
    b.receive(probe, "a", T0 + MS)
    ack = next(m for _, m in b.outbox() if type(m) is Ack)
    assert ack.t2 == ack.t3 == T0 + MS and b.rx_ns is None
    b.rx_ns = T0 + 2 * MS
    with pytest.raises(RemoteError):
        b.receive(probe, "zz", T0 + 3 * MS)  # refused: the arrival time is gone with it
    assert b.rx_ns is None
    b.receive(probe, "a", T0 + 4 * MS)
    ack = next(m for _, m in b.outbox() if type(m) is Ack)
    assert ack.t2 == T0 + 4 * MS


def test_probe_sent_only_moves_t1_later_within_the_probe_s_life() -> None:
    a = Membership("a", ["a", "b"], random.Random(1))
    tick, probe = _probe_out(a, T0)
    a.probe_sent(probe.seq, tick - 1)  # before the probe was made: ignored
    a.probe_sent(probe.seq + 1, tick + 10)  # no such probe: ignored
    a.probe_sent(probe.seq, tick + 10 * 1_000_000_000)  # past its expiry: ignored
    a.receive(Ack(probe.seq, 1, probe.t1, tick + MS, tick + MS, ()), "b", tick + 2 * MS)
    s = next(e for e in a.events() if type(e) is ClockSample)
    assert s.t1 == tick
