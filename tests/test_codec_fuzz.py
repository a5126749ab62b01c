"""Property and mutation fuzzing of the decoder: only CodecError may come out, and
memory stays bounded by the declared-size limit (benchmarks/fuzz_codec.py runs more)."""

from __future__ import annotations

import collections
import tracemalloc
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from collab.codec import Codec, decode, encode, fuzz, peek
from collab.errors import CodecError

CODECS = [
    f"{q}{e}{s}"
    for q in ("f32", "f16", "int8", "int4")
    for e in ("", "+zstd1", "+brotli1")
    for s in ("", "+sparse")
] + ["int8+zstd1+clip99.9", "int4+brotli3+sparse+clip99"]

finite_f32 = st.floats(-1e4, 1e4, width=32, allow_nan=False, allow_infinity=False)
arrays = hnp.arrays(
    np.float32, hnp.array_shapes(min_dims=0, max_dims=4, max_side=6), elements=finite_f32
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(x=arrays, name=st.sampled_from(CODECS))
def test_round_trip_property(x: np.ndarray, name: str) -> None:
    codec = Codec.parse(name)
    y = decode(encode(x, name))
    assert y.shape == x.shape and y.dtype == np.float32
    if codec.lossless:
        assert np.array_equal(y.view(np.uint32), x.view(np.uint32))
    elif codec.quant == "f16":
        assert np.allclose(y, x, rtol=2**-11, atol=2**-24)
    elif codec.clip is None and x.size:
        x3 = x.reshape(x.shape[0], x.shape[1], -1) if x.ndim >= 2 else x.reshape(1, 1, -1)
        lo, hi = x3.min(axis=(0, 2)), x3.max(axis=(0, 2))
        if codec.sparse:
            lo, hi = np.minimum(lo, 0), np.maximum(hi, 0)
        levels = (1 << codec.bits) - 1
        mag = np.maximum(np.abs(lo), np.abs(hi)).astype(np.float64)
        step = np.maximum((hi.astype(np.float64) - lo) / levels, mag * 2.0**-20)
        bound = (step / 2 * (1 + 1e-5) + mag * 2.0**-19 + 1e-30)[None, :, None]
        err = np.abs(y.reshape(x3.shape).astype(np.float64) - x3)
        assert (err <= bound).all()


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_only_codec_error(data: bytes) -> None:
    for blob in (data, fuzz.MAGIC + data, fuzz.fix_crc(bytearray(fuzz.MAGIC + b"\x01" + data))):
        fuzz.check(blob, decode, 1 << 20)


@settings(max_examples=200, deadline=None)
@given(i=st.integers(0, 10**9), name=st.sampled_from(CODECS))
def test_single_mutation_property(i: int, name: str) -> None:
    frame = encode(np.maximum(np.linspace(-1, 3, 60, dtype=np.float32), 0).reshape(1, 3, 20), name)
    for _, m in fuzz.mutations([frame], 5, seed=i):
        fuzz.check(m, decode, 1 << 20)


def test_mutation_loop_only_codec_error_and_bounded_memory() -> None:
    frames = fuzz.seed_frames(CODECS)
    counts: collections.Counter[str] = collections.Counter()
    max_bytes = 1 << 20
    tracemalloc.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy overflow warnings would hide sloppy checks
            for kind, m in fuzz.mutations(frames, 20_000, seed=1):
                counts[kind + ":" + fuzz.check(m, decode, max_bytes)] += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sum(counts.values()) == 20_000
    assert peak < 4 * max_bytes, peak
    # every kind of mutation was exercised and CRC-fixed lies got past the checksum
    assert all(counts[k + ":rejected"] > 0 for k in [*fuzz.MUTATORS, "splice"])
    assert counts["payload_corrupt:ok"] + counts["field_lie:ok"] > 0


def test_crc_catches_every_single_bit_flip() -> None:
    frame = encode(np.arange(12, dtype=np.float32).reshape(1, 3, 4), "int8+zstd1")
    for i in range(len(frame)):
        for bit in range(8):
            b = bytearray(frame)
            b[i] ^= 1 << bit
            with pytest.raises(CodecError):
                decode(bytes(b))


def test_header_lies_are_named() -> None:
    x = np.ones((1, 4, 8, 8), np.float32)
    frame = bytearray(encode(x, "int8+zstd1"))
    lie = bytearray(frame)
    lie[4] = 2  # version
    with pytest.raises(CodecError, match="version"):
        decode(fuzz.fix_crc(lie))
    lie = bytearray(frame)
    lie[40] = 16  # shape[0] = 16 -> body length no longer matches
    with pytest.raises(CodecError, match="body length"):
        decode(fuzz.fix_crc(lie))
    lie = bytearray(frame)
    lie[5] = 9  # unknown quantizer
    with pytest.raises(CodecError, match="unknown"):
        peek(fuzz.fix_crc(lie))


def test_decompression_bomb_is_refused_before_allocation() -> None:
    """A frame whose zstd stream expands far beyond the declared body is refused, and a
    frame declaring a huge shape is refused by the header check alone."""
    import struct

    import zstandard

    small = bytearray(encode(np.zeros((1, 1, 4, 4), np.float32), "int8+zstd1"))
    bomb = zstandard.ZstdCompressor(level=19).compress(b"\0" * (64 << 20))
    frame = bytearray(small[: fuzz.header_end(small)]) + bomb + b"\0\0\0\0"
    struct.pack_into("<Q", frame, 32, len(bomb))
    tracemalloc.start()
    try:
        with pytest.raises(CodecError, match="content size"):
            decode(fuzz.fix_crc(frame))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20
    huge = bytearray(small)
    struct.pack_into("<QQQQ", huge, 40, 1, 1 << 20, 1 << 20, 1 << 20)
    with pytest.raises(CodecError, match="limit"):
        decode(fuzz.fix_crc(huge))
