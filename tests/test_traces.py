"""Trace maths and Mahimahi parsing/validation (no sockets)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from collab.emulator.traces import (
    DirectionTrace,
    MahimahiCapacity,
    MahimahiTrace,
    Segment,
    SegmentCapacity,
    load_mahimahi,
    parse_mahimahi,
)
from collab.errors import ConfigError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "traces"


def test_segment_capacity_cum_and_inverse_repeat() -> None:
    cap = SegmentCapacity([1.0, 2.0], [8e6, 0.0], repeat=True)  # 1 MB in 1 s, then 2 s of nothing
    assert cap.cum(0.5) == pytest.approx(500_000)
    assert cap.cum(2.0) == pytest.approx(1_000_000)
    assert cap.cum(3.5) == pytest.approx(1_500_000)  # second period
    assert cap.inv(1_000_000) == pytest.approx(1.0)
    assert cap.inv(1_250_000) == pytest.approx(3.25)  # waits out the zero-rate stretch
    # serialisation starting inside the dead stretch resumes when the rate comes back
    assert cap.transmit_end(1.5, 100_000) == pytest.approx(3.1)


def test_segment_capacity_hold_last() -> None:
    cap = SegmentCapacity([1.0], [8e6], repeat=False)
    assert cap.inv(3_000_000) == pytest.approx(3.0)
    dead = SegmentCapacity([1.0, 1.0], [8e6, 0.0], repeat=False)
    assert math.isinf(dead.inv(2_000_000))


def test_mahimahi_capacity_matches_definition() -> None:
    tr = parse_mahimahi("0\n0\n5\n10\n")  # 4 opportunities per 10 ms period
    cap = MahimahiCapacity(tr)
    assert cap.cum(0.0) == 2 * 1500
    assert cap.cum(0.0099) == 3 * 1500
    assert cap.cum(0.010) == (4 + 2) * 1500  # period 2 starts at 10 ms with its two 0-ms lines
    assert cap.inv(1) == 0.0
    assert cap.inv(3 * 1500 + 1) == pytest.approx(0.010)
    assert cap.inv(7 * 1500) == pytest.approx(0.015)
    assert cap.inv(9 * 1500) == pytest.approx(0.020)
    assert tr.mean_bps == pytest.approx(4 * 1500 * 8 / 0.010)
    assert cap.rate_bps(0.5, 1.0) == pytest.approx(tr.mean_bps, rel=0.01)


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("0\n5\nabc\n10\n", 3, "malformed"),
        ("0\n5\n-3\n", 3, "malformed"),
        ("0\n10\n5\n", 3, "backwards"),
        ("1.5\n", 1, "malformed"),
    ],
)
def test_mahimahi_errors_name_the_line(text: str, line: int, what: str) -> None:
    with pytest.raises(ConfigError, match=rf"trace.up:{line}: .*{what}"):
        parse_mahimahi(text, "trace.up")


def test_mahimahi_empty_and_zero_period() -> None:
    with pytest.raises(ConfigError, match="empty"):
        parse_mahimahi("\n\n", "t")
    with pytest.raises(ConfigError, match="end after 0 ms"):
        parse_mahimahi("0\n0\n", "t")
    with pytest.raises(ConfigError, match="not found"):
        load_mahimahi("/nonexistent/x.up")


def test_segment_validation() -> None:
    with pytest.raises(ConfigError):
        Segment(duration_s=0)
    with pytest.raises(ConfigError):
        Segment(duration_s=1, bandwidth_bps=-1)
    with pytest.raises(ConfigError):
        Segment(duration_s=1, loss=1.0)


def test_direction_trace_timeline_and_roundtrip() -> None:
    d = DirectionTrace(
        segments=(
            Segment(duration_s=1, bandwidth_bps=1e6, delay_ms=10),
            Segment(duration_s=1, outage=True),
        ),
        repeat=True,
    )
    assert not d.outage_at(0.5) and d.outage_at(1.5) and not d.outage_at(2.5)
    assert d.segment_at(2.2).delay_ms == 10
    assert DirectionTrace.from_dict(d.to_dict()) == d


@pytest.mark.skipif(
    not SHARED.is_dir(), reason="real Mahimahi traces not present (../shared/traces)"
)
def test_real_traces_parse_with_documented_means() -> None:
    want = {
        "ATT-LTE-driving-2016.up": 1.91,
        "TMobile-UMTS-driving.up": 0.94,
        "Verizon-EVDO-driving.up": 0.84,
    }
    for name, mbps in want.items():
        p = SHARED / name
        if p.exists():
            assert load_mahimahi(p).mean_bps / 1e6 == pytest.approx(mbps, rel=0.02)


def _big_trace(path: Path, lines: int, mbps: list[tuple[float, int]]) -> None:
    """A synthetic Mahimahi file: ``(rate Mbit/s, lines)`` stretches, one 1500-byte
    opportunity per line (numpy, so half a million lines take a moment, not minutes)."""
    parts, t0 = [], 0.0
    for rate, n in mbps:
        per_s = rate * 1e6 / 8 / 1500
        ts = t0 + np.arange(1, n + 1) * 1000.0 / per_s
        parts.append(np.floor(ts).astype(np.int64))
        t0 = float(ts[-1])
    ts = np.concatenate(parts)
    assert ts.size == lines
    path.write_text("\n".join(map(str, ts.tolist())) + "\n")


def test_a_500k_line_trace_parses_and_its_offset_moves_trace_time_0(tmp_path: Path) -> None:
    """2 Mbit/s for 250k lines (1500 s), then 8 Mbit/s for 250k lines (375 s)."""
    f = tmp_path / "big.up"
    _big_trace(f, 500_000, [(2.0, 250_000), (8.0, 250_000)])
    tr = load_mahimahi(f)
    assert len(tr.timestamps_ms) == 500_000 and tr.period_ms == pytest.approx(1_875_000, abs=2)
    cap = MahimahiCapacity(tr)
    assert cap.rate_bps(100.0, 10.0) == pytest.approx(2e6, rel=0.01)
    assert cap.rate_bps(1700.0, 10.0) == pytest.approx(8e6, rel=0.01)
    late = MahimahiCapacity(dataclasses.replace(tr, start_s=1600.0))
    assert late.cum(0.0) <= 1500  # at most the opportunity at exactly 1600 s
    assert late.rate_bps(5.0, 10.0) == pytest.approx(8e6, rel=0.01)  # trace time 0 = 1600 s in
    assert late.cum(50.0) == pytest.approx(cap.cum(1650.0) - cap.cum(1600.0), abs=1500)
    assert late.transmit_end(10.0, 1_000_000) == pytest.approx(
        cap.transmit_end(1610.0, 1_000_000) - 1600.0, abs=0.002
    )
    # past the end of the trace it repeats from its start: 2 Mbit/s again
    assert late.rate_bps(400.0, 10.0) == pytest.approx(2e6, rel=0.01)
    with pytest.raises(ConfigError, match="non-decreasing"):
        MahimahiTrace(np.array([5, 3, 9]), source="x.up")
    # the compact form the emulator's control channel carries round-trips exactly
    assert MahimahiTrace.from_dict(tr.to_dict()) == tr
    assert len(json.dumps(tr.to_dict())) < 2_000_000


def test_a_bad_line_deep_in_a_long_trace_is_named(tmp_path: Path) -> None:
    ts = np.arange(1, 400_001, dtype=np.int64)
    lines = list(map(str, ts.tolist()))
    lines[300_000] = "10"  # line 300001 goes backwards
    f = tmp_path / "bad.up"
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=rf"{f}:300001: timestamp 10 goes backwards"):
        load_mahimahi(f)
    lines[300_000] = "300001.5"
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=rf"{f}:300001: malformed Mahimahi line '300001.5'"):
        load_mahimahi(f)
    lines[300_000] = "300001 300002"  # two numbers on one line
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=rf"{f}:300001: malformed"):
        load_mahimahi(f)


def test_an_outage_over_a_mahimahi_trace_is_skipped_in_one_jump() -> None:
    """Bytes handed to the link in an outage leave with the first opportunity after it."""
    tr = parse_mahimahi("\n".join(str(ms) for ms in range(1, 1001)))  # one per ms, 1 s period
    d = DirectionTrace(
        segments=(
            Segment(duration_s=1.0),
            Segment(duration_s=30.0, outage=True),
            Segment(duration_s=1.0),
        ),
        mahimahi=tr,
    )
    cap = d.capacity()
    assert cap.transmit_end(0.5, 3000) == pytest.approx(0.502)
    assert cap.transmit_end(1.5, 1500) == pytest.approx(31.0)  # at the outage's end, not in it
    assert d.segment_end(1.5) == 31.0 and d.segment_end(32.5) == 33.0


def test_start_s_needs_a_mahimahi_trace(tmp_path: Path) -> None:
    from collab.scenario.schema import parse_scenario

    text = (
        "model: {example: digits}\n"
        "network:\n"
        "  start_s: 10\n"
        "  segments: [{duration_s: 1, up_mbps: 1, down_mbps: 1}]\n"
    )
    with pytest.raises(ConfigError, match=r"s.yaml:3: network.start_s: .*mahimahi"):
        parse_scenario(text, source="s.yaml", base=tmp_path)
    (tmp_path / "t.up").write_text("5\n10\n")
    sc = parse_scenario(
        text.replace("up_mbps: 1, ", "").replace(
            "start_s: 10", "start_s: 10\n  mahimahi: {up: t.up}"
        ),
        source="s.yaml",
        base=tmp_path,
    )
    assert sc.link.uplink.mahimahi is not None and sc.link.uplink.mahimahi.start_s == 10.0
