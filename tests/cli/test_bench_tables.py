"""``gossipbook bench`` without ``--json``: a few readable columns per section, floors as rows."""

from __future__ import annotations

from rich.console import Console

from gossipbook.cli.bench import _fmt, _tables

SYNC = {
    "eventual": {"p50_us": 150.7, "p99_us": 364.3, "p999_us": 569.9, "ratio": 4.09, "ratio_paced": 2.4,
                 "ack_p50_us": 479.2, "a_encode_us": 20.3, "wire_wakeup_us": 73.4, "b_decode_us": 25.6,
                 "b_fold_us": 29.2, "floor_p50_us": 36.8, "count": 500},
    "strong": {"p50_us": 958.0, "p99_us": 2779.1, "p999_us": 3620.9, "ratio": 26.0, "ack_p50_us": 719.9},
    "floor_rtt_trio": {"p50_us": 73.6, "p99_us": 172.0, "p999_us": 220.0},
    "floor_rtt_trio_paced": {"p50_us": 123.0, "p99_us": 233.7},
    "floor_rtt_plain": {"p50_us": 17.9, "p99_us": 26.0},
}


def render(sec: str, res: object) -> str:
    con = Console(width=100, record=True)
    for t in _tables(sec, res):
        con.print(t)
    return con.export_text()


def test_sync_shows_both_modes_three_floors_and_the_stages() -> None:
    text = render("sync", SYNC)
    for needle in ("eventual", "strong", "floor: trio RTT/2", "floor: trio RTT/2, paced", "floor: plain RTT/2",
                   "ratio paced", "wire wakeup µs", "73.4", "4.09", "2,779"):
        assert needle in text, needle
    assert "36.8" in text  # 73.6 / 2: the floors are shown one-way


def test_other_sections_show_their_chosen_columns_only() -> None:
    text = render("throughput", [{"nodes": 4, "ops_per_s": 25424, "floor_ops_per_s": 120791, "ratio": 0.21,
                                  "cores_busy": 1.99, "cpu_us_per_op": 19.58, "floor_cpu_us_per_op": 8.28,
                                  "efficiency": 0.423, "ops_per_datagram": 14.86, "bytes_per_op": 35.3,
                                  "runs": [25424], "datagrams_per_s": 5131}])
    assert "25,424" in text and "0.42" in text and "5131" not in text and "5,131" not in text


def test_numbers_keep_their_precision() -> None:
    assert [_fmt(v) for v in (0.004, 0.21, 19.58, 151.2, 25424, None, True)] == \
        ["0.004", "0.21", "19.6", "151", "25,424", "", "True"]
