"""Quantizers: float32 tensor <-> body bytes (before the entropy stage).

All work is vectorised numpy over whole channels; nothing loops over elements.

int8/int4/int3/int2 are affine per channel (channel = dim 1 for >=2-D tensors, the whole tensor
otherwise): ``x_hat = q * scale[g] + offset[g]`` with ``q`` in ``[0, 2**bits - 1]`` and
``offset = -zero_point * scale``. When a group's range contains 0 the zero point is an
integer, so 0.0 (ReLU's most common value) round-trips exactly.

Error bound for values inside the quantization range:
``|x - x_hat| <= scale/2 + 2**-19 * max|x_g|`` (the second term is float32 arithmetic;
scale is floored at ``2**-20 * max|x_g|``). Values outside a clipped range saturate.

Parameter layout (per frame, chosen by :func:`plan`, recorded in the frame flags):

* groups: per channel, or one group for the whole tensor when per-channel parameters
  would cost more than 1/8 of the quantized values (single-sample features of small
  models: a (1, 64) vector would otherwise carry 8 bytes of parameters per value);
* compact: scale as float16 (rounded up, so the range is still covered) + uint8 zero
  point, 3 bytes per group, when every group's range contains 0 (or extending it to 0
  costs at most 10 % resolution) and the scales fit float16; else float32 scale +
  float32 offset, 8 bytes per group.

With ``+alloc`` the per-channel scale and zero point come from a calibrated
:class:`~collab.codec.alloc.Allocation` (compact layout, values saturate to its range);
the bound above holds inside that range.

Sparse mode stores a bitmap of non-zero positions plus the non-zero values only.
For f32/f16 "zero" means all bits zero (so -0.0 survives and f32 stays bit-exact).

Body layout: [params] (int only) [bitmap] (sparse only) [values].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from collab.codec.alloc import Allocation
from collab.codec.spec import BITS, Codec
from collab.errors import CodecError

Buffer = bytes | np.ndarray
_F16_MIN, _F16_MAX = 2.0**-14, 65504.0  # normal float16 range


@dataclass(frozen=True)
class Layout:
    per_tensor: bool = False
    compact: bool = False


def as_bytes_view(p: Buffer | memoryview) -> memoryview:
    """A flat byte view without copying."""
    if isinstance(p, np.ndarray):
        return p.reshape(-1).view(np.uint8).data
    return memoryview(p).cast("B")


def num_channels(shape: Sequence[int]) -> int:
    return int(shape[1]) if len(shape) >= 2 else 1


def _shape3(shape: Sequence[int], per_tensor: bool = False) -> tuple[int, int, int]:
    """(outer, groups, inner): the view used for per-group broadcasting."""
    if len(shape) >= 2 and not per_tensor:
        return int(shape[0]), int(shape[1]), math.prod(shape[2:])
    return 1, 1, math.prod(shape)


def value_bytes(quant: str, n: int) -> int:
    if quant == "f32":
        return 4 * n
    if quant == "f16":
        return 2 * n
    return (n * BITS[quant] + 7) // 8  # int4: two values per byte, int3/int2 bit-packed


def param_groups(shape: Sequence[int], layout: Layout) -> int:
    return _shape3(shape, layout.per_tensor)[1]


def param_bytes(shape: Sequence[int], quant: str, layout: Layout) -> int:
    if quant not in BITS:
        return 0
    return param_groups(shape, layout) * (3 if layout.compact else 8)


def body_len(shape: Sequence[int], codec: Codec, nnz: int, layout: Layout) -> int:
    """The exact uncompressed body length a valid frame must have."""
    n = math.prod(shape)
    size = param_bytes(shape, codec.quant, layout)
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


def _packbits(q: np.ndarray, bits: int) -> np.ndarray:
    """Pack values < 2**bits into a big-endian bit stream (int3/int2)."""
    planes = np.unpackbits(q[:, None], axis=1)[:, 8 - bits :]
    return np.packbits(planes.reshape(-1))


def _unpackbits(p: np.ndarray, n: int, bits: int) -> np.ndarray:
    if (n * bits) % 8 and p.size and p[-1] & ((1 << (8 - (n * bits) % 8)) - 1):
        raise CodecError(f"corrupt frame: int{bits} padding bits are not zero")
    planes = np.zeros((n, 8), np.uint8)
    planes[:, 8 - bits :] = np.unpackbits(p, count=n * bits).reshape(n, bits)
    return np.packbits(planes, axis=1).reshape(n)


def pack(q: np.ndarray, bits: int) -> np.ndarray:
    return q if bits == 8 else _pack4(q) if bits == 4 else _packbits(q, bits)


def unpack(p: np.ndarray, n: int, bits: int) -> np.ndarray:
    if bits == 8:
        return p
    if bits == 4:
        if n % 2 and p.size and p[-1] & 15:
            raise CodecError("corrupt frame: int4 padding nibble is not zero")
        return _unpack4(p, n)
    return _unpackbits(p, n, bits)


def _ranges(x3: np.ndarray, bits: int, clip: float | None) -> tuple[np.ndarray, np.ndarray]:
    c = x3.shape[1]
    if x3.size == 0:
        return np.zeros(c), np.zeros(c)
    if clip is None:
        xr = x3[0] if x3.shape[0] == 1 else np.moveaxis(x3, 1, 0).reshape(c, -1)
        lo = xr.min(axis=1).astype(np.float64)
        hi = xr.max(axis=1).astype(np.float64)
    else:
        if not np.isfinite(x3).all():
            raise CodecError(f"int{bits}: tensor has NaN/inf values; use f32 or f16")
        flat = np.moveaxis(x3, 1, 0).reshape(c, -1)
        lo, hi = np.percentile(flat, [100.0 - clip, clip], axis=1).astype(np.float64)
    return lo, hi


def _check_finite(lo: np.ndarray, hi: np.ndarray, bits: int) -> None:
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        raise CodecError(f"int{bits}: tensor has NaN/inf values; use f32 or f16")


def plan(
    x: np.ndarray, bits: int, clip: float | None = None, *, include_zero: bool = False
) -> tuple[Layout, np.ndarray, np.ndarray, np.ndarray | None]:
    """Choose the parameter layout; returns (layout, scale, offset, zero_point or None)."""
    levels = (1 << bits) - 1
    c = num_channels(x.shape)
    per_tensor = c > 1 and 3 * c * 8 > x.size * bits / 8
    x3 = x.reshape(_shape3(x.shape, per_tensor))
    lo, hi = _ranges(x3, bits, clip)
    lo0, hi0 = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/inf fail the test below
        span0 = hi0 - lo0
        raw = span0 / levels
        compact = (
            (span0 <= 1.1 * (hi - lo)) & ((raw >= _F16_MIN) | (span0 == 0)) & (raw <= 6e4)
        ).all()
    if compact:
        # float16 scale rounded up by at most one ulp, so the range stays covered
        scale = (np.maximum(raw, _F16_MIN) * (1 + 2.0**-10)).astype(np.float16).astype(np.float32)
        zp = np.minimum(np.rint(-lo0 / scale), levels).astype(np.uint8)
        offset = -(zp.astype(np.float32) * scale)  # float32, exactly as the decoder computes
        return Layout(per_tensor=per_tensor, compact=True), scale, offset, zp
    _check_finite(lo, hi, bits)  # (the compact test above is False for NaN/inf)
    if include_zero:
        lo, hi = lo0, hi0
    mag = np.maximum(np.abs(lo), np.abs(hi))
    scale = np.maximum((hi - lo) / levels, np.maximum(mag * 2.0**-20, 1e-30)).astype(np.float32)
    contains0 = (lo <= 0.0) & (hi >= 0.0)
    zpf = np.clip(np.round(-lo / scale.astype(np.float64)), 0, levels).astype(np.float32)
    offset = np.where(contains0, -(zpf * scale), lo.astype(np.float32)).astype(np.float32)
    return Layout(per_tensor=per_tensor, compact=False), scale, offset, None


def _quantize_values(
    x3: np.ndarray, scale: np.ndarray, offset: np.ndarray, bits: int, *, saturate: bool = True
) -> np.ndarray:
    """floor((x - offset)/scale + 0.5), clipped to [0, levels] when ``saturate``.

    Without clipping (compact layout, no percentile clip) y stays in [-1e-6, levels + 1):
    the zero point is rint(-lo/s) and s >= (hi - lo)/levels * (1 + 2**-11), so
    hi/s + zp + 0.5 <= levels + 1 - levels * 2**-11; the float->uint8 cast truncates
    toward zero, so a tiny negative y becomes 0. This saves one pass over the tensor.
    """
    levels = (1 << bits) - 1
    # Fold the +0.5 of round-half-up into the offset: floor((x - off)/s + 0.5).
    enc_off = (offset - np.float32(0.5) * scale)[None, :, None]
    inv = (1.0 / scale.astype(np.float64)).astype(np.float32)[None, :, None]
    y = np.subtract(x3, enc_off)
    np.multiply(y, inv, out=y)
    if saturate:
        np.clip(y, 0.0, levels + 0.5, out=y)
    return y.astype(np.uint8).reshape(-1)


def _allocated(
    x: np.ndarray, bits: int, alloc: Allocation | None
) -> tuple[Layout, np.ndarray, np.ndarray, np.ndarray | None]:
    """The plan of an ``+alloc`` codec: the calibrated per-channel parameters."""
    if alloc is None:
        raise CodecError("an +alloc codec needs the cut's Allocation (encode(..., alloc=...))")
    if x.ndim < 2 or x.shape[1] != alloc.channels:
        raise CodecError(
            f"allocation has {alloc.channels} channels, tensor shape is {list(x.shape)}"
        )
    if int(alloc.zero_point.max(initial=0)) > (1 << bits) - 1:
        raise CodecError(f"allocation zero points exceed int{bits}")
    if not np.isfinite(x).all():
        raise CodecError(f"int{bits}: tensor has NaN/inf values; use f32 or f16")
    scale = alloc.scale.astype(np.float32)
    offset = -(alloc.zero_point.astype(np.float32) * scale)
    return Layout(per_tensor=False, compact=True), scale, offset, alloc.zero_point


def quantize(
    x: np.ndarray, codec: Codec, alloc: Allocation | None = None
) -> tuple[list[Buffer], int, Layout]:
    """Body parts (to be concatenated), the non-zero count (sparse, else 0), the layout."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    parts: list[Buffer] = []
    if codec.quant in BITS:
        bits = BITS[codec.quant]
        if codec.alloc:
            layout, scale, offset, zp = _allocated(x, bits, alloc)
        else:
            layout, scale, offset, zp = plan(x, bits, codec.clip, include_zero=codec.sparse)
        parts += [scale.astype(np.float16), zp] if zp is not None else [scale, offset]
        q = _quantize_values(
            x.reshape(_shape3(x.shape, layout.per_tensor)),
            scale,
            offset,
            bits,
            saturate=codec.clip is not None or codec.alloc or not layout.compact,
        )
        if codec.sparse:
            mask = (x != 0).reshape(-1)
            q = q[mask]
            parts.append(np.packbits(mask))
        parts.append(pack(q, bits))
        return parts, int(q.size) if codec.sparse else 0, layout
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
        return parts, int(v.size), Layout()
    parts.append(v)
    return parts, 0, Layout()


def _read_params(
    buf: memoryview, groups: int, bits: int, layout: Layout
) -> tuple[np.ndarray, np.ndarray]:
    levels = (1 << bits) - 1
    if layout.compact:
        scale = np.frombuffer(buf, np.float16, groups, 0).astype(np.float32)
        zp = np.frombuffer(buf, np.uint8, groups, 2 * groups)
        # (scale > 0) & (scale < inf) is False for NaN too: one reduction instead of three
        if not ((scale > 0) & (scale < np.inf) & (zp <= levels)).all():
            raise CodecError("corrupt frame: invalid quantization parameters")
        return scale, -(zp.astype(np.float32) * scale)
    scale = np.frombuffer(buf, np.float32, groups, 0)
    offset = np.frombuffer(buf, np.float32, groups, 4 * groups)
    if not (np.isfinite(offset).all() and np.isfinite(scale).all() and (scale > 0).all()):
        raise CodecError("corrupt frame: invalid quantization parameters")
    top = np.abs(offset.astype(np.float64)) + levels * scale.astype(np.float64)
    if not (top < 3.4e38).all():  # decoded values must stay finite float32
        raise CodecError("corrupt frame: quantization range overflows float32")
    return scale, offset


def dequantize(
    body: bytes | memoryview, shape: tuple[int, ...], codec: Codec, nnz: int, layout: Layout
) -> np.ndarray:
    """Inverse of :func:`quantize`; ``body`` has already been length-checked."""
    n = math.prod(shape)
    buf = as_bytes_view(body)
    pos = param_bytes(shape, codec.quant, layout)
    x3shape = _shape3(shape, layout.per_tensor)
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
        bits = BITS[codec.quant]
        scale, offset = _read_params(buf, x3shape[1], bits, layout)
        raw = np.frombuffer(buf, np.uint8, value_bytes(codec.quant, count), pos)
        q = unpack(raw, count, bits)
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


def error_bound(x: np.ndarray, codec: Codec) -> np.ndarray:
    """The documented per-element bound on |x - decode(encode(x))| for integer codecs
    (values inside the quantization range), shaped like ``x``."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    bits = BITS[codec.quant]
    layout, scale, _, _ = plan(x, bits, codec.clip, include_zero=codec.sparse)
    x3 = x.reshape(_shape3(x.shape, layout.per_tensor))
    groups = _shape3(x.shape, layout.per_tensor)[1]
    mag = np.abs(x3).max(axis=(0, 2)) if x3.size else np.zeros(groups, np.float32)
    per_group = scale.astype(np.float64) / 2 * (1 + 1e-6) + mag.astype(np.float64) * 2.0**-19
    return np.broadcast_to(per_group[None, :, None], x3.shape).reshape(x.shape)
