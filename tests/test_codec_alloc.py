"""The +alloc codec: calibrated per-channel steps (collab.codec.alloc) -- fitting, the
error bound inside the calibrated range, saturation outside it, the frame flag and its
fuzzing (only CodecError comes out of a lying +alloc frame)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from collab.codec import Codec, decode, encode, peek
from collab.codec.alloc import Allocation, channel_sensitivity, fit
from collab.codec.frame import FLAG_ALLOC, FLAG_COMPACT
from collab.errors import CodecError
from tests.helpers import codec_fuzz as fuzz

ALLOC_CODECS = [
    "int8+alloc",
    "int8+zstd1+alloc",
    "int8+brotli5+alloc",
    "int4+zstd1+alloc",
    "int2+alloc",
]


def _train(seed: int = 0, shape: tuple[int, ...] = (40, 6, 4, 4)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal(shape) * np.geomspace(0.1, 10, shape[1])[None, :, None, None]
    ).astype(np.float32)


def test_names_are_canonical_and_constrained() -> None:
    c = Codec.parse("int8+zstd19+alloc")
    assert c.alloc and c.name == "int8+zstd19+alloc"
    for bad in (
        "f16+alloc",
        "int8+zstd1+sparse+alloc",
        "int8+zstd1+clip99+alloc",
        "int8+alloc+zstd1",
    ):
        with pytest.raises(CodecError):
            Codec.parse(bad)


def test_round_trip_within_half_step_inside_the_range() -> None:
    train = _train()
    alloc = fit(train, 8, 0.05)
    x = np.clip(_train(1, (1, 6, 4, 4)), -3 * 0.1, None)  # well inside every channel's range
    hi = (255 - alloc.zero_point.astype(np.float64)) * alloc.scale
    lo = -alloc.zero_point.astype(np.float64) * alloc.scale
    x = np.clip(x, lo[None, :, None, None], hi[None, :, None, None]).astype(np.float32)
    frame = encode(x, "int8+zstd1+alloc", alloc=alloc)
    y = decode(frame)
    bound = alloc.scale[None, :, None, None] / 2 * (1 + 1e-6) + np.abs(x) * 2.0**-19
    assert (np.abs(y.astype(np.float64) - x) <= bound).all()
    h = peek(frame)
    assert h.codec.alloc and h.compact_params and not h.per_tensor


def test_out_of_range_values_saturate_and_steps_follow_sensitivity() -> None:
    train = _train()
    alloc = fit(train, 8, 0.05)
    x = np.full((1, 6, 2, 2), 1e6, np.float32)
    top = (255 - alloc.zero_point.astype(np.float32)) * alloc.scale
    assert np.allclose(decode(encode(x, "int8+alloc", alloc=alloc))[0, :, 0, 0], top)
    # equal SNR: step proportional to the channel std; sensitivity: the sensitive channel
    # gets the finer step, and a larger rate never gives a finer step
    assert np.all(np.diff(alloc.scale) > 0)
    g = np.ones(6)
    g[0] = 100.0
    weighted = fit(
        np.ones((4, 6, 2, 2), np.float32) * np.arange(6)[None, :, None, None]
        + _train(2, (4, 6, 2, 2)) * 0.01,
        8,
        0.5,
        g,
    )
    assert weighted.scale[0] < weighted.scale[1:].min()
    assert (fit(train, 8, 0.2).scale >= fit(train, 8, 0.05).scale).all()


def test_clip_range_widens_too_fine_steps() -> None:
    train = _train()
    alloc = fit(train, 4, 1e-6)  # 15 levels cannot cover the range at this step
    x = train[:1]
    lo, hi = np.percentile(np.moveaxis(train, 1, 0).reshape(6, -1), [0.01, 99.99], axis=1)
    assert ((alloc.scale * 15) >= (np.maximum(hi, 0) - np.minimum(lo, 0)) * (1 - 2**-10)).all()
    assert decode(encode(x, "int4+zstd1+alloc", alloc=alloc)).shape == x.shape


def test_encoder_refuses_missing_or_mismatched_allocations() -> None:
    alloc = fit(_train(), 8, 0.1)
    with pytest.raises(CodecError, match="Allocation"):
        encode(np.zeros((1, 6, 2, 2), np.float32), "int8+alloc")
    with pytest.raises(CodecError, match="channels"):
        encode(np.zeros((1, 5, 2, 2), np.float32), "int8+alloc", alloc=alloc)
    with pytest.raises(CodecError, match="NaN"):
        encode(np.full((1, 6, 2, 2), np.nan, np.float32), "int8+alloc", alloc=alloc)
    with pytest.raises(CodecError, match="zero points"):
        encode(
            np.zeros((1, 6, 2, 2), np.float32),
            "int2+alloc",
            alloc=Allocation(scale=alloc.scale, zero_point=np.full(6, 200, np.uint8)),
        )
    with pytest.raises(CodecError, match="float16"):
        Allocation(scale=np.full(6, 0.1, np.float32), zero_point=np.zeros(6, np.uint8))
    with pytest.raises(CodecError, match="rate"):
        fit(_train(), 8, 0.0)


def test_channel_sensitivity_finds_the_channel_the_tail_reads() -> None:
    w = np.zeros((6, 3))
    w[4] = [5.0, -5.0, 1.0]
    w[1] = [0.1, 0.0, 0.0]

    def tail(x: np.ndarray) -> np.ndarray:
        return x.mean(axis=(2, 3)) @ w

    g = channel_sensitivity(_train(), tail)
    assert int(np.argmax(g)) == 4 and g[1] > g[0] and g[0] == 0.0


def test_frame_flag_lies_are_refused() -> None:
    alloc = fit(_train(), 8, 0.1)
    frame = encode(_train(3, (1, 6, 4, 4)), "int8+zstd1+alloc", alloc=alloc)
    assert frame[5] & FLAG_ALLOC and frame[5] & FLAG_COMPACT
    h = fuzz.Fields.parse(frame)
    fixed = bytearray(h.fixed)
    fixed[5] &= ~FLAG_COMPACT  # +alloc frames always carry compact parameters
    with pytest.raises(CodecError, match="alloc"):
        decode(replace(h, fixed=bytes(fixed)).build())
    plain = fuzz.Fields.parse(encode(np.ones((1, 6, 4, 4), np.float32), "f16+zstd1"))
    fixed = bytearray(plain.fixed)
    fixed[5] |= FLAG_ALLOC
    with pytest.raises(CodecError, match="alloc"):
        decode(replace(plain, fixed=bytes(fixed)).build())
    # without the flag the same body decodes as a plain int8 frame: the flag only names it
    fixed = bytearray(h.fixed)
    fixed[5] &= ~FLAG_ALLOC
    assert np.array_equal(decode(replace(h, fixed=bytes(fixed)).build()), decode(frame))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    x=hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 3), st.just(4), st.integers(1, 5)),
        elements=st.floats(-1e3, 1e3, width=32),
    ),
    name=st.sampled_from(ALLOC_CODECS),
    rate=st.floats(1e-3, 2.0),
)
def test_round_trip_property(x: np.ndarray, name: str, rate: float) -> None:
    codec = Codec.parse(name)
    alloc = fit(x, codec.bits, rate)
    y = decode(encode(x, name, alloc=alloc))
    s = alloc.scale[None, :, None].astype(np.float64)
    lo = -alloc.zero_point[None, :, None].astype(np.float64) * s
    hi = lo + ((1 << codec.bits) - 1) * s
    inside = np.clip(x, lo, hi)  # saturated values decode to the range's edge
    assert (np.abs(y - inside) <= s / 2 * (1 + 1e-6) + np.abs(inside) * 2.0**-19).all()


@settings(max_examples=150, deadline=None)
@given(i=st.integers(0, 10**9), name=st.sampled_from(ALLOC_CODECS))
def test_mutations_of_alloc_frames_only_codec_error(i: int, name: str) -> None:
    x = _train(5, (1, 6, 3, 3))
    frame = encode(x, name, alloc=fit(_train(), Codec.parse(name).bits, 0.1))
    for _, m in fuzz.mutations([frame], 5, seed=i):
        fuzz.check(m, decode, 1 << 20)
