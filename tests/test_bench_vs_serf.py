"""The pure helpers of bench/vs_serf.py: Serf's log lines, RPC framing and
metrics dump, and the comparison table. (The bench itself is not a test.)"""

from __future__ import annotations

import random

import msgpack
import pytest

from bench.vs_serf import (
    Row,
    SerfFrames,
    format_table,
    join_seeds,
    parse_serf_log,
    ratio,
    serf_members,
    serf_sent_bytes,
    summary_rows,
    verdict,
    without_samples,
)


def test_serf_log_lines_that_change_a_member() -> None:
    prefix = "    2026/11/26 21:48:29 [INFO] serf: "
    assert parse_serf_log(prefix + "EventMemberJoin: s2 127.0.0.1") == ("s2", "alive")
    assert parse_serf_log(prefix + "EventMemberFailed: s9 127.0.0.1") == ("s9", "failed")
    assert parse_serf_log(prefix + "EventMemberLeave: s8 127.0.0.1") == ("s8", "left")
    assert parse_serf_log(prefix + "EventMemberLeave (forced): s7 127.0.0.1") == ("s7", "left")
    assert parse_serf_log(prefix + "EventMemberReap: s6") == ("s6", "reaped")
    # The agent's coalesced events and everything else are not state changes.
    assert (
        parse_serf_log("    2026/11/26 21:48:29 [INFO] agent: Received event: member-join") is None
    )
    assert parse_serf_log(prefix + "EventMemberUpdate: s2") is None


def test_serf_members_body() -> None:
    body = {
        "Members": [
            {"Name": "s0", "Addr": b"\x7f\x00\x00\x01", "Port": 7946, "Status": "alive"},
            {"Name": "s1", "Addr": b"\x7f\x00\x00\x01", "Port": 7947, "Status": "left"},
        ]
    }
    assert serf_members(body) == {"s0": "alive", "s1": "left"}
    assert serf_members({"Members": None}) == {}


def _dump(start: str, name: str, total: float) -> str:
    return (
        f"[{start} +0000 UTC][C] 'serf-agent.{name}': Count: 3 Min: 1.000 Mean: 2.000 "
        f"Max: 3.000 Stddev: 1.000 Sum: {total:.3f} LastUpdated: {start}.5 +0000 UTC m=+1.0"
    )


def test_serf_sent_bytes_counts_whole_intervals_inside_the_window() -> None:
    # 2026-11-26 21:48:20 UTC
    t = 1795729700.0
    lines = [
        _dump("2026-11-26 21:48:10", "memberlist.udp.sent", 999),  # before the window
        _dump("2026-11-26 21:48:20", "memberlist.udp.sent", 100),
        _dump("2026-11-26 21:48:20", "memberlist.tcp.sent", 50),
        _dump("2026-11-26 21:48:20", "memberlist.udp.received", 777),  # received: not sent
        _dump("2026-11-26 21:48:30", "memberlist.udp.sent", 30),
        _dump("2026-11-26 21:48:40", "memberlist.udp.sent", 555),  # ends after t1
        "[2026-11-26 21:48:20 +0000 UTC][G] 'serf-agent.runtime.alloc_bytes': 1.000",
    ]
    # The window [t - 3, t + 25]: the intervals starting at t and t + 10.
    assert serf_sent_bytes(lines, t - 3, t + 25) == (180.0, 20.0)
    # An interval with no counter line sent nothing, and still counts.
    assert serf_sent_bytes(lines[:2], t, t + 30) == (100.0, 30.0)
    # Intervals the sink may no longer keep (it keeps a minute, the current
    # interval included) are left out.
    assert serf_sent_bytes(lines, t, t + 30, now=t + 55) == (585.0, 20.0)
    assert serf_sent_bytes(lines, t + 1, t + 15) == (0.0, 0.0)


def test_serf_sent_bytes_ignores_labels() -> None:
    t = 1795729700.0
    line = _dump("2026-11-26 21:48:20", "memberlist.udp.sent;dc=x", 42)
    assert serf_sent_bytes([line], t, t + 10) == (42.0, 10.0)


def _pack(*objs: object) -> bytes:
    return b"".join(msgpack.packb(o, use_bin_type=True) for o in objs)


def test_serf_frames_route_answers_and_stream_records() -> None:
    answers: list[tuple[int, dict[str, object], object]] = []
    records: list[dict[str, object]] = []
    frames = SerfFrames(lambda seq, header, body: answers.append((seq, header, body)))

    seq, data = frames.request("handshake", {"Version": 1})
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(data)
    assert list(unpacker) == [{"Command": "handshake", "Seq": 1}, {"Version": 1}]
    members, _ = frames.request("members", has_body=True)
    stream, _ = frames.request("stream", {"Type": "user"})
    frames.streams[stream] = records.append
    leave, data = frames.request("leave")
    assert msgpack.unpackb(data, raw=False) == {"Command": "leave", "Seq": leave}

    event = {"Event": "user", "LTime": 3, "Name": "lat", "Payload": b"\x00\x01", "Coalesce": False}
    wire = _pack(
        {"Seq": seq, "Error": ""},
        {"Seq": members, "Error": ""},
        {"Members": [{"Name": "s0", "Status": "alive"}]},
        {"Seq": stream, "Error": ""},  # the stream's answer: a bare header
        {"Seq": stream, "Error": ""},
        event,
        {"Seq": leave, "Error": "boom"},
        {"Seq": 99, "Error": ""},  # nobody's: ignored
    )
    # Split anywhere: objects arrive in pieces.
    for i in range(0, len(wire), 7):
        frames.feed(wire[i : i + 7])
    assert answers == [
        (seq, {"Seq": seq, "Error": ""}, None),
        (members, {"Seq": members, "Error": ""}, {"Members": [{"Name": "s0", "Status": "alive"}]}),
        (stream, {"Seq": stream, "Error": ""}, None),
        (leave, {"Seq": leave, "Error": "boom"}, None),
    ]
    assert records == [event]


def test_ratio_and_verdict() -> None:
    assert ratio(2.0, 4.0) == 0.5
    assert ratio(None, 1.0) is None
    assert ratio(1.0, 0.0) is None
    assert verdict(0.5, ("<=", 1.0)) == "<= 1 ok"
    assert verdict(2.1, ("<=", 2.0)) == "<= 2 MISS"
    assert verdict(3.0, (">=", 1.0)) == ">= 1 ok"
    assert verdict(None, ("<=", 1.0)) == "<= 1 ?"
    assert verdict(0.5, None) == ""


def _run(join: float, lat: list[float], rss: float, lost: int = 0) -> dict[str, object]:
    return {
        "join": {"converge_s": join},
        "latency_2": lat,
        "latency_10": lat,
        "latency_stamped_2": [x / 2 for x in lat],
        "lost_2": lost,
        "lost_10": 0,
        "kill": {"failed_first_s": 1.0, "failed_everywhere_s": 2.0},
        "leave": {"left_everywhere_s": None},
        "idle": {"rss_mb_mean": rss, "cpu_pct_mean": 0.5, "bytes_per_s_mean": 200.0},
    }


def test_summary_rows_take_medians_and_pool_latencies() -> None:
    runs = {
        "overlay": [_run(3.0, [0.010] * 99 + [0.5], 30.0, lost=2), _run(1.0, [0.020], 34.0)],
        "serf": [_run(1.0, [0.100] * 10, 15.0), _run(1.0, [0.200] * 10, 15.0)],
    }
    rows = {r.label: r for r in summary_rows(10, runs)}
    assert rows["join convergence (first seed), s"].overlay == 2.0
    assert rows["join convergence (first seed), s"].ratio == 2.0
    p50 = rows["broadcast 2/s p50, ms"]
    assert (p50.overlay, p50.serf) == (10.0, 200.0)
    assert rows["broadcast 2/s max, ms"].overlay == 500.0
    # The overlay's own delivery stamps: a row of its own, no ratio.
    own = rows["  overlay's own stamps, p50"]
    assert (own.overlay, own.serf, own.target) == (5.0, None, None)
    assert rows["broadcast 2/s lost deliveries"].overlay == 2
    assert rows["broadcast 2/s lost deliveries"].target is None
    assert rows["leave -> left everywhere, s"].ratio is None
    assert rows["RSS per agent, MB"].ratio == pytest.approx(32.0 / 15.0)
    assert rows["RSS per agent, MB"].target == ("<=", 2.0)


def test_format_table_aligns_and_marks_misses() -> None:
    table = format_table(
        "N = 10",
        [Row("join convergence, s", 2.5, 1.0), Row("RSS, MB", 30.0, None, ("<=", 2.0), 1)],
    )
    lines = table.splitlines()
    assert lines[0] == "N = 10"
    assert lines[2].split() == [
        "join",
        "convergence,",
        "s",
        "2.50",
        "1.00",
        "2.50",
        "<=",
        "1",
        "MISS",
    ]
    assert lines[3].split() == ["RSS,", "MB", "30.0", "-", "-", "<=", "2", "?"]
    # Numbers right-aligned under their headers.
    assert lines[1].index("Serf") + len("Serf") == lines[2].index("1.00") + len("1.00")


def test_without_samples_drops_only_the_raw_latencies() -> None:
    report = {"runs": {"10": {"serf": [{"latency_2": [0.1], "broadcast_2": {"ms": {}}}]}}}
    assert without_samples(report) == {"runs": {"10": {"serf": [{"broadcast_2": {"ms": {}}}]}}}


def test_join_seeds() -> None:
    assert join_seeds("first", 4, random.Random(1)) == [0, 0, 0, 0]
    seeds = join_seeds("random", 50, random.Random(1))
    assert seeds[:2] == [0, 0]
    assert all(0 <= s < i for i, s in enumerate(seeds) if i)
    assert seeds == join_seeds("random", 50, random.Random(1))  # same draws for both systems


def test_lost_deliveries_skip_runs_that_never_got_that_far() -> None:
    """A cluster that never converged measured no broadcast: its table row
    sums what the other repetitions measured, or shows nothing."""
    from bench.vs_serf import _lost

    assert _lost([{"lost_2": 1}, {}, {"lost_2": 2}], "lost_2") == 3.0
    assert _lost([{}], "lost_2") is None
    assert _lost([], "lost_2") is None
