"""Quantizers: float32 tensor <-> body bytes (before the entropy stage).

All work is vectorised numpy over whole channels; nothing loops over elements.

int8/int4 are affine per channel (channel = dim 1 for >=2-D tensors, the whole tensor
otherwise): ``x_hat = q * scale[c] + offset[c]`` with ``q`` in ``[0, 2**bits - 1]``.
``offset = -zero_point * scale``; when a channel's range contains 0 the zero point is
an integer, so 0.0 (ReLU's most common value) round-trips exactly. Error bound for
values inside the quantization range: ``|x - x_hat| <= scale/2 + 2**-19 * max|x_c|``
(the second term is float32 arithmetic; scale is floored at ``2**-20 * max|x_c|``).
Values outside a clipped range saturate at the range ends.

Sparse mode stores a bitmap of non-zero positions plus the non-zero values only.
For f32/f16 "zero" means all bits zero (so -0.0 survives and f32 stays bit-exact).

Body layout: [scale f32 x C][offset f32 x C] (int only) [bitmap] (sparse only) [values].
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from collab.codec.spec import BITS, Codec
from collab.errors import CodecError

Buffer = bytes | np.ndarray


def as_bytes_view(p: Buffer | memoryview) -> memoryview:
    """A flat byte view without copying."""
    if isinstance(p, np.ndarray):
        return p.reshape(-1).view(np.uint8).data
    return memoryview(p).cast("B")


def num_channels(shape: Sequence[int]) -> int:
    return int(shape[1]) if len(shape) >= 2 else 1


def _shape3(shape: Sequence[int]) -> tuple[int, int, int]:
    """(outer, C, inner): the view used for per-channel broadcasting."""
    if len(shape) >= 2:
        return int(shape[0]), int(shape[1]), math.prod(shape[2:])
    return 1, 1, math.prod(shape)


def _view3(x: np.ndarray) -> np.ndarray:
    return x.reshape(_shape3(x.shape))


def value_bytes(quant: str, n: int) -> int:
    if quant == "f32":
        return 4 * n
    if quant == "f16":
        return 2 * n
    if quant == "int8":
        return n
    return (n + 1) // 2  # int4: two values per byte


def body_len(shape: Sequence[int], codec: Codec, nnz: int) -> int:
    """The exact uncompressed body length a valid frame must have."""
    n = math.prod(shape)
    size = 8 * num_channels(shape) if codec.quant in BITS else 0
    if codec.sparse:
        return size + (n + 7) // 8 + value_bytes(codec.quant, nnz)
    return size + value_bytes(codec.quant, n)


def _pack4(q: np.ndarray) -> np.ndarray:
    if q.size % 2:
        q = np.concatenate([q, np.zeros(1, np.uint8)])
    out = q[0::2] << 4
    out |= q[1::2]
    return out


def _unpack4(p: np.ndarray, n: int) -> np.ndarray:
    out = np.empty(2 * p.size, np.uint8)
    np.right_shift(p, 4, out=out[0::2])
    np.bitwise_and(p, 15, out=out[1::2])
    return out[:n]


def affine_params(
    x3: np.ndarray, bits: int, clip: float | None = None, *, include_zero: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (scale, offset) as float32 arrays of length C."""
    levels = (1 << bits) - 1
    c = x3.shape[1]
    if x3.size == 0:
        lo = hi = np.zeros(c)
    elif clip is None:
        lo = x3.min(axis=(0, 2)).astype(np.float64)
        hi = x3.max(axis=(0, 2)).astype(np.float64)
    else:
        if not np.isfinite(x3).all():
            raise CodecError(f"int{bits}: tensor has NaN/inf values; use f32 or f16")
        flat = np.moveaxis(x3, 1, 0).reshape(c, -1)
        lo, hi = np.percentile(flat, [100.0 - clip, clip], axis=1).astype(np.float64)
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        raise CodecError(f"int{bits}: tensor has NaN/inf values; use f32 or f16")
    if include_zero:
        lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
    mag = np.maximum(np.abs(lo), np.abs(hi))
    scale = np.maximum((hi - lo) / levels, np.maximum(mag * 2.0**-20, 1e-30)).astype(np.float32)
    contains0 = (lo <= 0.0) & (hi >= 0.0)
    zp = np.clip(np.round(-lo / scale.astype(np.float64)), 0, levels).astype(np.float32)
    # float32 product, computed exactly as the decoder will: q == zp decodes to 0.0.
    offset = np.where(contains0, -(zp * scale), lo.astype(np.float32)).astype(np.float32)
    return scale, offset


def _quantize_values(
    x3: np.ndarray, scale: np.ndarray, offset: np.ndarray, bits: int
) -> np.ndarray:
    levels = (1 << bits) - 1
    # Fold the +0.5 of round-half-up into the offset: floor((x - off)/s + 0.5).
    enc_off = (offset - np.float32(0.5) * scale)[None, :, None]
    inv = (1.0 / scale.astype(np.float64)).astype(np.float32)[None, :, None]
    y = np.subtract(x3, enc_off)
    np.multiply(y, inv, out=y)
    np.clip(y, 0.0, levels + 0.5, out=y)
    return y.astype(np.uint8).reshape(-1)


def quantize(x: np.ndarray, codec: Codec) -> tuple[list[Buffer], int]:
    """Body parts (to be concatenated) and the non-zero count (sparse mode, else 0)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    parts: list[Buffer] = []
    if codec.quant in BITS:
        bits = BITS[codec.quant]
        x3 = _view3(x)
        scale, offset = affine_params(x3, bits, codec.clip, include_zero=codec.sparse)
        parts += [scale, offset]
        q = _quantize_values(x3, scale, offset, bits)
        if codec.sparse:
            mask = (x != 0).reshape(-1)
            q = q[mask]
            parts.append(np.packbits(mask))
        parts.append(_pack4(q) if bits == 4 else q)
        return parts, int(q.size) if codec.sparse else 0
    if codec.quant == "f16":
        with np.errstate(over="ignore"):
            v = x.astype(np.float16)
        if not np.isfinite(v).all() and np.isfinite(x[~np.isfinite(v)]).any():
            raise CodecError("f16: values beyond the float16 range (65504); use f32 or int8")
        bits_view = v.view(np.uint16)
    else:
        v = x
        bits_view = v.view(np.uint32)
    if codec.sparse:
        mask = (bits_view != 0).reshape(-1)
        v = v.reshape(-1)[mask]
        parts += [np.packbits(mask), v]
        return parts, int(v.size)
    parts.append(v)
    return parts, 0


def dequantize(
    body: bytes | memoryview, shape: tuple[int, ...], codec: Codec, nnz: int
) -> np.ndarray:
    """Inverse of :func:`quantize`; ``body`` has already been length-checked."""
    n = math.prod(shape)
    buf = as_bytes_view(body)
    pos = 0
    scale = offset = None
    if codec.quant in BITS:
        c = num_channels(shape)
        scale = np.frombuffer(buf, np.float32, c, pos)
        offset = np.frombuffer(buf, np.float32, c, pos + 4 * c)
        pos += 8 * c
        if not (np.isfinite(offset).all() and np.isfinite(scale).all() and (scale > 0).all()):
            raise CodecError("corrupt frame: invalid quantization parameters")
        top = np.abs(offset.astype(np.float64)) + ((1 << BITS[codec.quant]) - 1) * scale.astype(
            np.float64
        )
        if not (top < 3.4e38).all():  # decoded values must stay finite float32
            raise CodecError("corrupt frame: quantization range overflows float32")
    mask = None
    count = n
    if codec.sparse:
        nb = (n + 7) // 8
        mask = np.unpackbits(np.frombuffer(buf, np.uint8, nb, pos), count=n).view(bool)
        pos += nb
        count = nnz
        if int(np.count_nonzero(mask)) != nnz:
            raise CodecError("corrupt frame: sparse bitmap does not match the non-zero count")
    if codec.quant in BITS:
        assert scale is not None and offset is not None
        bits = BITS[codec.quant]
        raw = np.frombuffer(buf, np.uint8, value_bytes(codec.quant, count), pos)
        q = _unpack4(raw, count) if bits == 4 else raw
        if bits == 4 and count % 2 and raw.size and raw[-1] & 15:
            raise CodecError("corrupt frame: int4 padding nibble is not zero")
        x3shape = _shape3(shape)
        if mask is not None:
            with np.errstate(all="ignore"):  # tiny scales of hostile frames saturate
                zc = np.clip(np.rint(-offset / scale), 0, (1 << bits) - 1).astype(np.uint8)
            dense = np.empty(x3shape, np.uint8)
            dense[...] = zc[None, :, None]
            dense.reshape(-1)[mask] = q
            q = dense
        deq = q.reshape(x3shape).astype(np.float32)
        np.multiply(deq, scale[None, :, None], out=deq)
        np.add(deq, offset[None, :, None], out=deq)
        return deq.reshape(shape)
    dt = np.float16 if codec.quant == "f16" else np.float32
    vals = np.frombuffer(buf, dt, count, pos)
    if mask is None:
        return vals.astype(np.float32).reshape(shape)  # astype copies: caller owns it
    out = np.zeros(n, np.float32)
    out[mask] = vals
    return out.reshape(shape)
