"""Codec names: ``<quant>[+<entropy><level>][+sparse][+clip<pct>][+alloc]``.

The name is the unit the calibration table, the policy and the wire frame agree on,
so parsing is strict and :attr:`Codec.name` is canonical (``Codec.parse(n).name == n``).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from collab.errors import CodecError

QUANTS = ("f32", "f16", "int8", "int4", "int3", "int2")  # index = wire id
ENTROPIES = ("none", "zstd", "brotli")
LEVEL_RANGE = {"zstd": (1, 22), "brotli": (0, 11), "none": (0, 0)}
BITS = {"int8": 8, "int4": 4, "int3": 3, "int2": 2}

_ENTROPY_RE = re.compile(r"^(zstd|brotli)(\d{1,2})$")
_CLIP_RE = re.compile(r"^clip(\d{2}(?:\.\d{1,4})?)$")


@dataclass(frozen=True)
class Codec:
    """One way of turning a float tensor into bytes.

    int3/int2 extend the shared grammar (f32|f16|int8|int4) for very small features.
    ``clip`` (integer quantizers only) is a percentile, e.g. 99.9: per channel, the range is
    the [100-clip, clip] percentile range instead of [min, max], trading rare outliers
    for resolution. The range actually used travels in the frame.
    ``alloc`` (integer quantizers, not with sparse or clip): per-channel steps come from a
    calibrated :class:`collab.codec.alloc.Allocation` given to the encoder, not from the
    tensor's own range; the steps still travel in the frame, so decoding needs nothing.
    """

    quant: str = "f32"
    entropy: str = "none"
    level: int = 0
    sparse: bool = False
    clip: float | None = None
    alloc: bool = False

    def __post_init__(self) -> None:
        if self.quant not in QUANTS:
            raise CodecError(f"unknown quantizer {self.quant!r} (known: {', '.join(QUANTS)})")
        if self.entropy not in ENTROPIES:
            raise CodecError(f"unknown entropy coder {self.entropy!r} (known: zstd, brotli)")
        lo, hi = LEVEL_RANGE[self.entropy]
        if not (isinstance(self.level, int) and lo <= self.level <= hi):
            raise CodecError(f"{self.entropy} level {self.level!r} outside [{lo}, {hi}]")
        if self.clip is not None:
            if self.quant not in BITS:
                raise CodecError("clip applies to integer quantizers only")
            if not (50.0 < self.clip < 100.0):
                raise CodecError(f"clip percentile {self.clip!r} must be in (50, 100)")
        if self.alloc and (self.quant not in BITS or self.sparse or self.clip is not None):
            raise CodecError("alloc applies to integer quantizers without sparse or clip")

    @property
    def name(self) -> str:
        parts = [self.quant]
        if self.entropy != "none":
            parts.append(f"{self.entropy}{self.level}")
        if self.sparse:
            parts.append("sparse")
        if self.clip is not None:
            parts.append(f"clip{self.clip:g}")
        if self.alloc:
            parts.append("alloc")
        return "+".join(parts)

    @property
    def lossless(self) -> bool:
        """Bit-exact round trip for float32 input."""
        return self.quant == "f32"

    @property
    def bits(self) -> int:
        return {"f32": 32, "f16": 16, **BITS}[self.quant]

    @classmethod
    def parse(cls, name: str | Codec) -> Codec:
        if isinstance(name, Codec):
            return name
        if not isinstance(name, str):
            raise CodecError(f"codec name must be a string, got {type(name).__name__}")
        return _parse_name(name)

    @classmethod
    def _parse_uncached(cls, name: str) -> Codec:
        parts = name.split("+")
        quant, rest = parts[0], parts[1:]
        entropy, level, sparse, clip, alloc = "none", 0, False, None, False
        if rest and (m := _ENTROPY_RE.match(rest[0])):
            entropy, level = m.group(1), int(m.group(2))
            rest = rest[1:]
        if rest and rest[0] == "sparse":
            sparse, rest = True, rest[1:]
        if rest and (m := _CLIP_RE.match(rest[0])):
            clip, rest = float(m.group(1)), rest[1:]
        if rest and rest[0] == "alloc":
            alloc, rest = True, rest[1:]
        if rest:
            raise CodecError(
                f"bad codec name {name!r}: expected <f32|f16|int8|int4>[+zstdN|+brotliN][+sparse][+clipP][+alloc]"
            )
        codec = cls(
            quant=quant, entropy=entropy, level=level, sparse=sparse, clip=clip, alloc=alloc
        )
        if codec.name != name:
            raise CodecError(f"bad codec name {name!r} (canonical form: {codec.name!r})")
        return codec

    def __str__(self) -> str:
        return self.name


@functools.lru_cache(maxsize=256)
def _parse_name(name: str) -> Codec:
    """Parsing is on every encode; names repeat, so cache them (errors are not cached)."""
    return Codec._parse_uncached(name)


#: The codec used when no calibration says better: lossless, so it costs no accuracy.
DEFAULT_CODEC = "f32+zstd1"
