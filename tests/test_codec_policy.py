"""collab.codec.policy.choose_codec: deterministic, budget-respecting, strict input."""

from __future__ import annotations

import math

import pytest

from collab.codec.policy import choose_codec, predicted_ms
from collab.errors import ConfigError


def row(
    nbytes: float, enc: float = 0.1, dec: float = 0.1, agreement: float = 1.0
) -> dict[str, float]:
    return {
        "bytes": nbytes,
        "encode_ms": enc,
        "decode_ms": dec,
        "agreement": agreement,
        "ratio": 1.0,
    }


TABLE = {
    "f32": row(40_000, 0.01, 0.01),
    "f32+zstd1": row(20_000, 0.3, 0.1),
    "int8+zstd1": row(5_000, 0.2, 0.1, agreement=0.998),
    "int4+zstd1": row(2_500, 0.2, 0.1, agreement=0.97),
}


def test_minimises_predicted_time_under_budget() -> None:
    # slow link: the smallest frame within budget wins
    c = choose_codec(TABLE, bandwidth_bps=1e6, accuracy_budget=0.005)
    assert c.codec == "int8+zstd1"
    assert math.isclose(c.predicted_ms, 0.2 + 5_000 * 8 / 1e6 * 1000 + 0.1)
    assert c.bytes == 5_000
    # a looser budget admits int4
    assert choose_codec(TABLE, bandwidth_bps=1e6, accuracy_budget=0.05).codec == "int4+zstd1"
    # zero budget: only lossless (agreement 1.0) codecs
    assert choose_codec(TABLE, bandwidth_bps=1e6, accuracy_budget=0.0).codec == "f32+zstd1"
    # very fast link: compute dominates, raw f32 wins
    assert choose_codec(TABLE, bandwidth_bps=1e12, accuracy_budget=0.05).codec == "f32"


def test_result_is_the_true_minimum() -> None:
    for bw in (1e4, 1e5, 1e6, 1e7, 1e8, 1e9):
        for budget in (0.0, 0.001, 0.01, 0.1, 1.0):
            c = choose_codec(TABLE, bandwidth_bps=bw, accuracy_budget=budget)
            ok = {
                n: r
                for n, r in TABLE.items()
                if n.startswith("f32") or 1 - r["agreement"] <= budget
            }
            assert c.predicted_ms == min(predicted_ms(r, bw) for r in ok.values())


def test_lossless_always_allowed_even_if_calibration_noise_says_otherwise() -> None:
    t = {"f32+zstd1": row(100, agreement=0.9), "int8": row(10, agreement=0.5)}
    assert choose_codec(t, bandwidth_bps=1e6, accuracy_budget=0.01).codec == "f32+zstd1"


def test_ties_broken_by_name() -> None:
    t = {"int8+zstd3": row(1000), "int8+brotli5": row(1000), "int8+zstd1": row(1000)}
    for _ in range(3):
        assert choose_codec(t, bandwidth_bps=1e6, accuracy_budget=0.1).codec == "int8+brotli5"


def test_budget_with_no_lossless_and_nothing_eligible() -> None:
    with pytest.raises(ConfigError, match="no codec"):
        choose_codec({"int4": row(10, agreement=0.5)}, bandwidth_bps=1e6, accuracy_budget=0.01)


@pytest.mark.parametrize(
    "table",
    [
        {},
        {"bogus": row(1)},
        {"int8": {"bytes": 1.0}},
        {"int8": {**row(1), "bytes": -1}},
        {"int8": {**row(1), "encode_ms": float("nan")}},
        {"int8": {**row(1), "agreement": 1.5}},
        {"int8": {**row(1), "decode_ms": "fast"}},
        {"int8": [1, 2]},
    ],
)
def test_invalid_tables_raise_config_error(table: dict) -> None:
    with pytest.raises(ConfigError):
        choose_codec(table, bandwidth_bps=1e6, accuracy_budget=0.01)


@pytest.mark.parametrize(
    "bw,budget", [(0, 0.01), (-1, 0.01), (float("inf"), 0.01), (1e6, -0.1), (1e6, 1.5)]
)
def test_invalid_arguments(bw: float, budget: float) -> None:
    with pytest.raises(ConfigError):
        choose_codec(TABLE, bandwidth_bps=bw, accuracy_budget=budget)


def test_allowed_admits_lossless_always_and_lossy_within_the_budget() -> None:
    from collab.codec.policy import allowed, codec_rows

    rows = {r.name: r for r in codec_rows({**TABLE, "f32+zstd1": row(20_000, agreement=0.5)})}
    assert allowed(rows["f32+zstd1"], 0.0)
    assert allowed(rows["int8+zstd1"], 0.002) and not allowed(rows["int8+zstd1"], 0.001)
