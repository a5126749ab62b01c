"""Property and mutation fuzzing of the decoder: only CodecError may come out, and
memory stays bounded by the declared-size limit (benchmarks/fuzz_codec.py runs more)."""

from __future__ import annotations

import collections
import tracemalloc
import warnings
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from collab.codec import Codec, decode, encode, peek
from collab.codec.quantize import error_bound
from collab.errors import CodecError
from tests.helpers import codec_fuzz as fuzz

CODECS = [
    f"{q}{e}{s}"
    for q in ("f32", "f16", "int8", "int4", "int3", "int2")
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
        err = np.abs(y.astype(np.float64) - x)
        assert (err <= error_bound(x, codec)).all()
        # and the bound itself is tight: at most ~1.1x the ideal half step of the tensor
        levels = (1 << codec.bits) - 1
        half_step = (max(float(x.max()), 0.0) - min(float(x.min()), 0.0)) / levels / 2
        mag = float(np.abs(x).max())
        assert error_bound(x, codec).max() <= max(half_step * 1.11, 2.0**-14, mag * 2.0**-18)


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
            for kind, m in fuzz.mutations(frames, 10_000, seed=1):
                counts[kind + ":" + fuzz.check(m, decode, max_bytes)] += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sum(counts.values()) == 10_000
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
    frame = encode(x, "int8+zstd1")
    lie = bytearray(frame)
    lie[2] = 2  # version
    with pytest.raises(CodecError, match="version"):
        decode(fuzz.fix_crc(lie))
    h = fuzz.Fields.parse(frame)
    with pytest.raises(CodecError, match="body length"):  # shape[0] = 16
        decode(replace(h, shape=(16, 4, 8, 8)).build())
    with pytest.raises(CodecError, match="payload length"):
        decode(replace(h, payload_len=h.payload_len + 1).build())
    lie = bytearray(frame)
    lie[3] = 9 << 4 | 1  # unknown quantizer
    with pytest.raises(CodecError, match="unknown"):
        peek(fuzz.fix_crc(lie))
    with pytest.raises(CodecError, match="overlong"):
        decode(fuzz.MUTATORS["overlong_varint"](frame, None))  # type: ignore[arg-type]


def test_decompression_bomb_is_refused_before_allocation() -> None:
    """A zstd stream that expands far beyond the declared body is refused without
    inflating it, and a frame declaring a huge shape is refused by the header alone."""
    import zstandard

    small = encode(np.zeros((1, 1, 4, 4), np.float32), "int8+zstd1")
    h = fuzz.Fields.parse(small)
    bomb = zstandard.ZstdCompressor(level=19).compress(b"\0" * (64 << 20))
    frame = replace(h, payload=bomb, payload_len=len(bomb)).build()
    tracemalloc.start()
    try:
        with pytest.raises(CodecError, match="content size"):
            decode(frame)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20
    huge = replace(h, shape=(1, 1 << 20, 1 << 20, 1 << 20)).build()
    with pytest.raises(CodecError, match="limit"):
        decode(huge)


def test_empty_tensor_with_huge_channel_count_is_refused() -> None:
    """shape (0, 2**40): zero elements, but per-channel params would be 8 TB; a zstd
    header declaring that content size must not make the decoder allocate it."""
    import zstandard

    valid = encode(np.zeros((0, 3), np.float32), "int8+zstd1")
    assert decode(valid).shape == (0, 3)
    h = fuzz.Fields.parse(valid)
    fixed = bytearray(h.fixed)
    fixed[5] &= ~4  # per-channel
    raw = 3 * 2**40
    cctx = zstandard.ZstdCompressor(level=1)
    obj = cctx.compressobj(size=raw)  # header declares 3 TB, data is a few bytes
    payload = obj.compress(b"\0" * 16) + obj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
    lie = replace(
        h,
        fixed=bytes(fixed),
        shape=(0, 2**40),
        raw_len=raw,
        payload=payload,
        payload_len=len(payload),
    )
    with pytest.raises(CodecError):
        decode(lie.build())
