"""An encode error drops one frame and is counted; the node goes on (issue 15: "encode failures
drop one frame and count it"; before, an OverflowError in NodeRunner._flush ended the process)."""

from __future__ import annotations

import tomllib

import trio

from gossipbook.config import from_dict, render
from gossipbook.core.wire import Heartbeat, Summary
from gossipbook.node.runner import NodeRunner


class _Sink:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, object]] = []
        self.counters: dict[str, int] = {}

    async def send_all(self, frames: list[tuple[bytes, object]]) -> None:
        self.sent += frames


def test_an_unencodable_message_drops_one_frame_and_the_rest_go_out() -> None:
    cfg = from_dict(tomllib.loads(render(2, 7000)), "c.toml")
    runner = NodeRunner(cfg, "n1", seed=1)
    sink = _Sink()
    runner.endpoint = sink  # type: ignore[assignment]
    runner.core._out += [("n2", Heartbeat(1 << 70, 0, 0, {})), ("n2", Summary({}, False, {}))]
    trio.run(runner._flush)
    assert runner.dropped.get("encode_error") == 1
    assert len(sink.sent) >= 1  # the summary (and whatever the core added) still went out
