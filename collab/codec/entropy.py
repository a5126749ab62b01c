"""Entropy stage: none | zstd(level) | brotli(quality), with bounded decompression.

zstd contexts are cached per thread (they are not thread-safe, and creating one per
frame costs measurable time on small features; see benchmarks/codec.py). Decompression
never produces more than the body length the header promised, which itself is bounded
by the declared shape and the caller's ``max_bytes``: a decompression bomb fails early.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import brotli
import zstandard

from collab.codec.quantize import Buffer, as_bytes_view
from collab.errors import CodecError

_local = threading.local()


def zstd_compressor(level: int) -> zstandard.ZstdCompressor:
    cache: dict[int, zstandard.ZstdCompressor] | None = getattr(_local, "zc", None)
    if cache is None:
        cache = _local.zc = {}
    cctx = cache.get(level)
    if cctx is None:
        cctx = cache[level] = zstandard.ZstdCompressor(level=level, write_content_size=True)
    return cctx


def zstd_decompressor() -> zstandard.ZstdDecompressor:
    dctx: zstandard.ZstdDecompressor | None = getattr(_local, "zd", None)
    if dctx is None:
        dctx = _local.zd = zstandard.ZstdDecompressor()
    return dctx


def _join(parts: Sequence[Buffer]) -> bytes | memoryview:
    if len(parts) == 1:
        return as_bytes_view(parts[0])
    return b"".join(as_bytes_view(p) for p in parts)


def compress(
    parts: Sequence[Buffer], entropy: str, level: int, *, reuse: bool = True
) -> bytes | memoryview:
    """Compress the concatenation of ``parts``."""
    if entropy == "none":
        return _join(parts)
    data = _join(parts)
    if entropy == "zstd":
        cctx = zstd_compressor(level) if reuse else zstandard.ZstdCompressor(level=level)
        return cctx.compress(data)
    if entropy == "brotli":
        return brotli.compress(bytes(data), quality=level)
    raise CodecError(f"unknown entropy coder {entropy!r}")


def decompress(
    payload: memoryview, entropy: str, raw_len: int, *, reuse: bool = True
) -> bytes | memoryview:
    """Decompress to exactly ``raw_len`` bytes or raise CodecError."""
    if entropy == "none":
        if len(payload) != raw_len:
            raise CodecError("corrupt frame: payload length does not match the declared body")
        return payload
    if entropy == "zstd":
        try:
            declared = zstandard.frame_content_size(payload)
        except zstandard.ZstdError as e:
            raise CodecError(f"corrupt frame: bad zstd header ({e})") from e
        if declared != raw_len:  # also rejects "unknown size" (-1): we always write it
            raise CodecError(
                f"corrupt frame: zstd content size {declared} != declared body {raw_len}"
            )
        dctx = zstd_decompressor() if reuse else zstandard.ZstdDecompressor()
        try:
            out = dctx.decompress(payload, max_output_size=raw_len, allow_extra_data=False)
        except zstandard.ZstdError as e:
            raise CodecError(f"corrupt frame: zstd: {e}") from e
    elif entropy == "brotli":
        d = brotli.Decompressor()
        try:
            out = d.process(bytes(payload), output_buffer_limit=raw_len + 1)
        except brotli.error as e:
            raise CodecError(f"corrupt frame: brotli: {e}") from e
        if not d.is_finished():
            raise CodecError("corrupt frame: brotli stream is truncated or longer than declared")
    else:
        raise CodecError(f"unknown entropy coder {entropy!r}")
    if len(out) != raw_len:
        raise CodecError(f"corrupt frame: body is {len(out)} bytes, header declares {raw_len}")
    return out
