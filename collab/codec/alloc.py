"""Calibrated per-channel step allocation (the ``+alloc`` codec option).

Uniform quantization spends the same relative precision on every channel, but the
tail does not care about channels equally: on EfficientNet-Lite0's mid cuts, a unit of
noise in the most sensitive channel moves the logits ~50x more than in the median one.
An :class:`Allocation` is fitted on TRAIN-split features once per cut: each channel gets
the step that equalises its contribution to the tail's output error (reverse water
filling, ``step_c**2 * g_c`` constant, with ``g_c`` the measured sensitivity), and a
clip range from per-channel percentiles. ``rate`` scales every step: the one knob
trading bytes for agreement.

The frame stays self-describing: the steps travel as the compact per-channel parameters
(float16 scale + uint8 zero point) that :mod:`collab.codec.quantize` already decodes, so
a decoder needs no sidecar; only the encoder (the edge, which has the bundle) needs the
allocation. No torch here: sensitivity is measured through any ``tail`` callable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from collab.errors import CodecError

_F16_MIN, _F16_MAX = 2.0**-14, 6.0e4


@dataclass(frozen=True)
class Allocation:
    """Per-channel quantizer of one cut: ``x_hat = (q - zero_point) * scale``."""

    scale: np.ndarray  # (C,) float32, exactly representable in float16
    zero_point: np.ndarray  # (C,) uint8

    def __post_init__(self) -> None:
        s, z = np.asarray(self.scale), np.asarray(self.zero_point)
        if s.ndim != 1 or s.shape != z.shape or z.dtype != np.uint8:
            raise CodecError("allocation: scale and uint8 zero_point must be (C,) arrays")
        if not (np.isfinite(s).all() and (s >= _F16_MIN).all() and (s <= _F16_MAX).all()):
            raise CodecError("allocation: scales must be finite and within the float16 range")
        if not np.array_equal(s.astype(np.float16).astype(np.float32), s):
            raise CodecError("allocation: scales must be float16 values")

    @property
    def channels(self) -> int:
        return int(self.scale.shape[0])


def channel_sensitivity(
    feats: np.ndarray,
    tail: Callable[[np.ndarray], np.ndarray],
    *,
    rel_noise: float = 0.3,
    seed: int = 0,
) -> np.ndarray:
    """``g_c``: mean squared logit change per unit noise variance in channel ``c``.

    Gaussian noise of ``rel_noise`` x the channel's std is added to one channel at a
    time (a finite-difference estimate of the tail's Jacobian energy; no gradients, so
    any runtime works). ``feats``: (N, C, ...) TRAIN-split features."""
    x = np.ascontiguousarray(feats, dtype=np.float32)
    if x.ndim < 2 or len(x) == 0:
        raise CodecError("channel_sensitivity needs (N, C, ...) features")
    rng = np.random.default_rng(seed)
    base = tail(x)
    sd = x.std(axis=tuple(i for i in range(x.ndim) if i != 1)).astype(np.float64)
    g = np.empty(x.shape[1])
    for c in range(x.shape[1]):
        sigma = max(float(sd[c]) * rel_noise, 1e-12)
        y = x.copy()
        y[:, c] += (rng.standard_normal(y[:, c].shape) * sigma).astype(np.float32)
        g[c] = float(((tail(y) - base) ** 2).sum(axis=1).mean()) / sigma**2
    return g


def fit(
    feats: np.ndarray,
    bits: int,
    rate: float,
    sensitivity: np.ndarray | None = None,
    *,
    clip: float = 99.99,
) -> Allocation:
    """The allocation for TRAIN features (N, C, ...) at ``rate`` (step of a median
    channel, in units of its std; smaller = more bytes, less loss).

    Without ``sensitivity`` every channel gets ``rate`` x its own std (equal SNR). A
    channel's step is widened where its clipped [100-clip, clip] percentile range would
    not fit in ``2**bits - 1`` levels."""
    x = np.asarray(feats, dtype=np.float64)
    if x.ndim < 2 or len(x) == 0:
        raise CodecError("fit needs (N, C, ...) features")
    if not (rate > 0 and np.isfinite(rate)):
        raise CodecError(f"allocation rate must be a positive number, got {rate!r}")
    flat = np.moveaxis(x, 1, 0).reshape(x.shape[1], -1)
    sd = np.maximum(flat.std(axis=1), 1e-12)
    if sensitivity is None:
        step = rate * sd
    else:
        g = np.maximum(np.asarray(sensitivity, np.float64), 1e-12)
        if g.shape != sd.shape:
            raise CodecError(f"sensitivity has {g.shape} entries for {sd.shape[0]} channels")
        step = rate * np.sqrt(np.median(g * sd**2) / g)
    lo, hi = np.percentile(flat, [100.0 - clip, clip], axis=1)
    lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
    levels = (1 << bits) - 1
    step = np.clip(np.maximum(step, (hi - lo) / levels * (1 + 2.0**-9)), _F16_MIN, _F16_MAX)
    scale = step.astype(np.float16).astype(np.float32)
    zp = np.clip(np.rint(-lo / scale), 0, levels).astype(np.uint8)
    return Allocation(scale=scale, zero_point=zp)
