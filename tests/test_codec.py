"""Round trips, error bounds and frame validation of collab.codec."""

from __future__ import annotations

import numpy as np
import pytest

from collab.codec import Codec, decode, encode, peek
from collab.codec.quantize import error_bound
from collab.errors import CodecError

ALL = [
    f"{q}{e}{s}"
    for q in ("f32", "f16", "int8", "int4", "int3", "int2")
    for e in ("", "+zstd1", "+zstd3", "+brotli1", "+brotli5")
    for s in ("", "+sparse")
]


def relu_features(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = (
        rng.normal(size=shape).astype(np.float32)
        * rng.uniform(0.1, 5, size=shape[1])[None, :, None, None]
    )
    return np.maximum(x.astype(np.float32), 0)


def assert_within_bound(x: np.ndarray, y: np.ndarray, codec: Codec) -> None:
    err = np.abs(y.astype(np.float64) - x)
    assert (err <= error_bound(x, codec)).all(), float((err - error_bound(x, codec)).max())


@pytest.mark.parametrize("name", ALL)
def test_round_trip_every_codec(name: str) -> None:
    codec = Codec.parse(name)
    x = relu_features((2, 8, 5, 7))
    frame = encode(x, name)
    y = decode(frame)
    assert y.dtype == np.float32 and y.shape == x.shape and y.flags.writeable
    h = peek(frame)
    assert h.codec_name == name and h.shape == x.shape and h.frame_bytes == len(frame)
    if codec.lossless:
        assert np.array_equal(x.view(np.uint32), y.view(np.uint32))
    elif codec.quant == "f16":
        assert np.allclose(y, x, rtol=2**-11, atol=2**-24)
    else:
        assert_within_bound(x, y, codec)
        assert (y[x == 0] == 0).all()  # zeros of ReLU features stay exact


def test_lossless_keeps_special_values() -> None:
    x = np.array([[0.0, -0.0, np.nan, np.inf, -np.inf, 1e-45, 3.4e38]], np.float32)
    for name in ("f32", "f32+zstd1", "f32+brotli1+sparse", "f32+sparse"):
        y = decode(encode(x, name))
        assert np.array_equal(x.view(np.uint32), y.view(np.uint32)), name


def test_codec_names_parse_canonically() -> None:
    for name in [*ALL, "int8+zstd1+clip99.9", "int4+brotli11+sparse+clip99", "f32+zstd22"]:
        assert Codec.parse(name).name == name
    for bad in [
        "",
        "f64",
        "int8+zstd",
        "int8+zstd0",
        "int8+zstd23",
        "int8+lz4",
        "int8+sparse+zstd1",
        "f32+clip99",
        "int8+clip100",
        "int8+zstd01",
        "int8++zstd1",
        7,
    ]:
        with pytest.raises(CodecError):
            Codec.parse(bad)  # type: ignore[arg-type]
    assert Codec.parse("f32").lossless and Codec.parse("f32+zstd1+sparse").lossless
    assert not Codec.parse("f16").lossless


def test_shapes_edge_cases() -> None:
    for shape in [(), (0,), (5,), (1, 0, 3), (3, 1), (1, 2, 1, 1, 1, 1, 1, 3), (1, 3, 1)]:
        x = np.random.default_rng(1).normal(size=shape).astype(np.float32)
        for name in ("f32+zstd1", "f16", "int8+zstd1+sparse", "int4+brotli1", "int4"):
            y = decode(encode(x, name))
            assert y.shape == x.shape, (shape, name)


def test_constant_and_offset_channels() -> None:
    x = np.stack(
        [
            np.full((8, 8), 3.25),
            np.full((8, 8), 0.0),
            1000 + np.linspace(0, 1, 64).reshape(8, 8),
            np.full((8, 8), -7.0),
        ]
    )[None].astype(np.float32)
    for name in ("int8", "int4+zstd1", "int8+sparse", "int2"):
        y = decode(encode(x, name))
        assert_within_bound(x, y, Codec.parse(name))
    assert not peek(encode(x, "int8")).per_tensor
    assert np.array_equal(decode(encode(x, "int8"))[0, :2], x[0, :2])


def test_input_dtypes() -> None:
    x = np.linspace(-3, 3, 24).reshape(2, 3, 4)
    for dt in (np.float16, np.float32, np.float64):
        y = decode(encode(x.astype(dt), "f32"))
        assert y.dtype == np.float32 and np.array_equal(y, x.astype(dt).astype(np.float32))
        assert peek(encode(x.astype(dt), "f32")).source_dtype == np.dtype(dt).name
    with pytest.raises(CodecError):
        encode(np.arange(4), "f32")
    with pytest.raises(CodecError):
        encode(np.zeros((1,) * 9, np.float32), "f32")


def test_lossy_codecs_reject_non_finite() -> None:
    x = np.array([[1.0, np.nan]], np.float32)
    for name in ("int8", "int4+zstd1+clip99"):
        with pytest.raises(CodecError):
            encode(x, name)
    with pytest.raises(CodecError):
        encode(np.array([1e6], np.float32), "f16")


def test_clip_improves_resolution_with_outliers() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1, 4, 64, 64)).astype(np.float32)
    x[0, :, 0, 0] = 200.0  # one outlier per channel
    plain = decode(encode(x, "int8"))
    clipped = decode(encode(x, "int8+clip99.9"))
    body = (slice(None), slice(None), slice(1, None))
    assert np.abs(clipped - x)[body].mean() < np.abs(plain - x)[body].mean() / 10
    assert peek(encode(x, "int8+clip99.9")).codec.clip == 99.9


def test_decode_rejects_trailing_and_truncated_frames() -> None:
    frame = encode(relu_features((1, 4, 3, 3)), "int8+zstd1")
    for bad in (frame + b"\0", frame[:-1], frame[:10], b"", b"x" * 100):
        with pytest.raises(CodecError):
            decode(bad)
    with pytest.raises(CodecError):
        decode("not bytes")  # type: ignore[arg-type]
    assert np.array_equal(decode(bytearray(frame)), decode(memoryview(frame)))
    as_floats = np.frombuffer(frame[: len(frame) // 4 * 4], np.float32)
    with pytest.raises(CodecError):
        decode(memoryview(as_floats))  # non-byte item format: flattened, then rejected


def test_max_bytes_guards_allocation() -> None:
    frame = encode(np.zeros((1, 16, 32, 32), np.float32), "int8+zstd1")
    with pytest.raises(CodecError, match="limit"):
        decode(frame, max_bytes=1000)
    assert decode(frame, max_bytes=16 * 32 * 32 * 4).shape == (1, 16, 32, 32)


def test_sparse_is_smaller_on_relu_features_without_entropy() -> None:
    x = relu_features((1, 16, 16, 16))
    assert len(encode(x, "f32+sparse")) < 0.7 * len(encode(x, "f32"))
    assert len(encode(x, "int8+sparse")) < 0.7 * len(encode(x, "int8"))


def test_cached_contexts_are_thread_safe() -> None:
    from concurrent.futures import ThreadPoolExecutor

    xs = [relu_features((1, 8, 16, 16), seed=i) for i in range(16)]

    def work(i: int) -> bool:
        ok = True
        for _ in range(20):
            for name in ("int8+zstd1", "f32+zstd3", "int4+brotli1"):
                y = decode(encode(xs[i], name))
                ok &= bool(np.array_equal(y, decode(encode(xs[i], name))))
            ok &= bool(np.array_equal(decode(encode(xs[i], "f32+zstd1")), xs[i]))
        return ok

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(work, range(16)))


def test_codec_package_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, collab.codec, collab.codec.calibrate, collab.codec.policy, "
        "collab.codec.cli_calibrate; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("quant", ["int8", "int4", "int3", "int2"])
def test_range_ends_never_wrap(quant: str) -> None:
    """Adversarial channel ranges (values exactly at both ends, zero inside or near an
    end): the unsaturated fast path must never wrap levels+1 to 0."""
    rng = np.random.default_rng(7)
    c = 512
    lo = -rng.uniform(0, 10, c) * (rng.random(c) < 0.7)
    hi = rng.uniform(0, 10, c) ** rng.choice([1, 3, -1], c)
    x = rng.uniform(lo[:, None], hi[:, None], size=(c, 126))
    x = np.concatenate([lo[:, None], hi[:, None], x], axis=1)[None].astype(np.float32)
    codec = Codec.parse(quant)
    y = decode(encode(x, codec))
    assert not peek(encode(x, codec)).per_tensor
    assert_within_bound(x, y, codec)
