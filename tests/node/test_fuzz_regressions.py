"""What ``gossipbook fuzz`` found, each as the smallest reproduction (issue 15: "every crash it ever
finds becomes a regression test").

Found by ``gossipbook fuzz --impersonate`` (2026-12-04, on 500c9d3) and fixed by time-based
counters with a bounded window (``wire.TimeWindowGuard``): these fail on the code before that fix.
"""

from __future__ import annotations

import socket
import time

import pytest

from gossipbook.core.membership import Gossip as MemberGossip
from gossipbook.core.wire import U64, encode
from gossipbook.fuzz.run import FuzzCluster, gather, place_orders


# Fuzz finding 1 (fixed): one frame signed with the peer key that names an honest node as
# its sender and carries a counter above that node's own (2^64-1, or merely the current time in ns,
# which is above a node's counter base ``time_ns() at start + frames sent``) moves the receiver's
# ``ReplayGuard`` window for that sender past every counter the real node will ever use: from then
# on the receiver drops all of that peer's frames as ``replay``, until the receiver restarts. Two
# such frames (senders n2 and n3, to n1) cut n1 off for good: it never sees another op, and the
# cluster never converges again.
@pytest.mark.parametrize("counter", ["max", "now"])
def test_a_forged_sender_counter_does_not_silence_an_honest_peer(counter: str) -> None:
    import trio

    with FuzzCluster(3, "eventual", None) as cl:
        cfg = cl.cfg
        assert cfg.key is not None
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for sender in ("n2", "n3"):
                c = U64 if counter == "max" else time.time_ns()
                frame = encode(MemberGossip(0, ()), sender, c, cfg.key, dst="n1", label=cfg.name,
                               stamp_ms=time.time_ns() // 1_000_000)
                sock.sendto(frame, cfg.node("n1").addr)
        finally:
            sock.close()
        time.sleep(0.3)
        _ids, failures = place_orders(cfg, ["n2"], 2.0)  # two orders (alice, bob) at n2
        assert not failures, failures
        deadline = time.monotonic() + 10
        while True:
            st = trio.run(gather, cfg, cl.honest, 1.0)
            digests = {n: s.get("digest") for n, s in st.items()}
            if len(set(digests.values())) == 1:
                break
            assert time.monotonic() < deadline, (
                f"n1 never caught up after one forged frame per peer: digests {digests}, "
                f"n1 dropped {st['n1'].get('counters', {}).get('dropped')}")
            time.sleep(0.2)
