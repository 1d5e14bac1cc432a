"""No amplification on a real node process (issue 15): a status query from a raw socket that never
echoed a cookie is answered with at most 3x its bytes; the CLI (which echoes the cookie) still
gets `status` and `book --depth 1000` whole."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import trio

from gossipbook.config import load
from gossipbook.core.node import E_ADDRESS, OK
from gossipbook.core.ops import NEW
from gossipbook.core.wire import ClientQuery, ClientSubmit, Keys, QueryReply, decode, encode
from gossipbook.node.client import Client

from .harness import Cluster, cli


def test_status_to_an_unproven_source_is_capped_and_the_cli_still_reads_everything(tmp_path: Path) -> None:
    c = Cluster(tmp_path, 1)
    try:
        c.start_all()  # wait_ready polls `status --json` through the CLI: the cookie round trip works
        cfg = load(c.config)
        node = cfg.node("n1")

        async def orders() -> None:  # 300 price levels a side, so book --depth 1000 is far over 3x
            async with Client(cfg, account="alice") as cl:
                for i in range(600):
                    side = i % 2
                    price = 9_999 - i // 2 if side == 0 else 10_001 + i // 2
                    req = cl.new_req()
                    rep = await cl.request("n1", ClientSubmit(req, NEW, cfg.instruments[0].symbol, "", side, price,
                                                              1, 0, 0, 3000), req)
                    assert rep.code == OK, rep
        trio.run(orders)

        acct, ring = cfg.client_credential(None)
        keys = Keys(None, {acct: ring}, label=cfg.name, me="raw-client")
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(2.0)
        try:
            def ask(req: str) -> tuple[int, int, QueryReply]:
                ms = time.time_ns() // 1_000_000
                data = encode(ClientQuery(req, "status", "", 0), "raw-client", time.time_ns(), ring[0], acct,
                              dst="n1", label=cfg.name, stamp_ms=ms)
                sock.sendto(data, node.addr)
                back, _ = sock.recvfrom(65_535)
                rep = decode(back, keys, now_ms=time.time_ns() // 1_000_000).msg
                return len(data), len(back), rep

            sent, got, rep = ask("raw1")
            assert rep.code == E_ADDRESS and got <= 3 * sent, (sent, got, rep)
            sent2, got2, full = ask(f"raw1#{rep.message}")
            assert full.code == OK and full.req == "raw1" and got2 > 3 * sent, (sent2, got2)
            print(f"status: request {sent} B -> {got} B unproven (x{got / sent:.2f}), {got2} B with the cookie "
                  f"(x{got2 / sent:.1f})")
            assert full.payload["counters"]["client_challenges"] >= 1
        finally:
            sock.close()

        r = cli("book", "-c", str(c.config), "--node", "n1", "--depth", "1000", "--json", check=True)
        book = json.loads(r.stdout)
        assert len(book["bids"]) == 300 and len(book["asks"]) == 300
    finally:
        c.stop()
