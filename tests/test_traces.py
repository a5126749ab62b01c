"""Trace maths and Mahimahi parsing/validation (no sockets)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from collab.emulator.traces import (
    DirectionTrace,
    MahimahiCapacity,
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
