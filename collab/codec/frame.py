"""The self-describing wire frame.

Layout (little-endian)::

    0   4s  magic  b"ECF\\x89"
    4   B   version (1)
    5   B   quantizer id      (f32, f16, int8, int4)
    6   B   entropy id        (none, zstd, brotli)
    7   B   entropy level
    8   B   flags             (bit 0: sparse, bit 1: clipped range)
    9   B   source dtype id   (float32, float16, float64); decode returns float32
    10  B   ndim (<= 8)
    11  B   reserved (0)
    12  f   clip percentile (0 unless clipped)
    16  Q   nnz               (sparse only, else 0)
    24  Q   body length       (uncompressed; must equal what shape/codec/nnz imply)
    32  Q   payload length    (compressed)
    40  ndim x Q shape
    ..  payload
    -4  I   CRC32C of everything before it

Decoding checks every field and every length against the others before it allocates
anything proportional to a declared size, so a lying or truncated frame costs nothing
and raises :class:`CodecError` -- never anything else.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import google_crc32c
import numpy as np

from collab.codec import entropy, quantize
from collab.codec.spec import ENTROPIES, QUANTS, Codec
from collab.errors import CodecError

MAGIC = b"ECF\x89"
VERSION = 1
MAX_NDIM = 8
DEFAULT_MAX_BYTES = 256 << 20  # decoded float32 bytes; features are far smaller
_HDR = struct.Struct("<4sBBBBBBBBfQQQ")
_CRC = struct.Struct("<I")
_DTYPES = ("float32", "float16", "float64")
FLAG_SPARSE, FLAG_CLIP = 1, 2


@dataclass(frozen=True)
class FrameHeader:
    version: int
    codec: Codec
    shape: tuple[int, ...]
    source_dtype: str  # dtype given to encode(); decode always returns float32
    nnz: int  # stored non-zeros (sparse codecs) else 0
    body_bytes: int  # after quantization, before entropy coding
    payload_bytes: int
    frame_bytes: int
    dtype: str = "float32"

    @property
    def codec_name(self) -> str:
        return self.codec.name

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def float32_bytes(self) -> int:
        return 4 * self.numel

    @property
    def ratio(self) -> float:
        """Compression ratio versus raw float32."""
        return self.float32_bytes / self.frame_bytes


def _crc(*chunks: bytes) -> int:
    c = 0
    for ch in chunks:
        c = google_crc32c.extend(c, ch)
    return int(c)


def encode(array: np.ndarray, codec: Codec | str) -> bytes:
    """Encode a float tensor as one self-describing frame."""
    c = Codec.parse(codec)
    a = np.asarray(array)
    if a.dtype.name not in _DTYPES:
        raise CodecError(f"cannot encode dtype {a.dtype}; expected one of {', '.join(_DTYPES)}")
    if a.ndim > MAX_NDIM:
        raise CodecError(f"cannot encode {a.ndim}-D tensor (max {MAX_NDIM})")
    parts, nnz = quantize.quantize(a, c)
    raw_len = sum(int(p.nbytes) if isinstance(p, np.ndarray) else len(p) for p in parts)
    payload = entropy.compress(parts, c.entropy, c.level)
    payload_b = payload if isinstance(payload, bytes) else bytes(payload)
    flags = (FLAG_SPARSE if c.sparse else 0) | (FLAG_CLIP if c.clip is not None else 0)
    head = _HDR.pack(
        MAGIC,
        VERSION,
        QUANTS.index(c.quant),
        ENTROPIES.index(c.entropy),
        c.level,
        flags,
        _DTYPES.index(a.dtype.name),
        a.ndim,
        0,
        c.clip or 0.0,
        nnz,
        raw_len,
        len(payload_b),
    ) + struct.pack(f"<{a.ndim}Q", *a.shape)
    return b"".join((head, payload_b, _CRC.pack(_crc(head, payload_b))))


def _parse(frame: bytes | bytearray | memoryview, max_bytes: int) -> tuple[FrameHeader, int]:
    """Validate the header against itself and the frame length; returns (header, offset)."""
    if not isinstance(frame, bytes | bytearray | memoryview):
        raise CodecError(f"frame must be bytes, got {type(frame).__name__}")
    n = len(frame)
    if n < _HDR.size + _CRC.size:
        raise CodecError(f"truncated frame ({n} bytes)")
    (
        magic,
        version,
        qid,
        eid,
        level,
        flags,
        did,
        ndim,
        reserved,
        clip,
        nnz,
        raw_len,
        payload_len,
    ) = _HDR.unpack_from(frame, 0)
    if magic != MAGIC:
        raise CodecError("not a feature frame (bad magic)")
    if version != VERSION:
        raise CodecError(f"unsupported frame version {version} (this build reads {VERSION})")
    if qid >= len(QUANTS) or eid >= len(ENTROPIES) or did >= len(_DTYPES):
        raise CodecError("corrupt frame: unknown quantizer, entropy coder or dtype id")
    if flags & ~(FLAG_SPARSE | FLAG_CLIP) or reserved:
        raise CodecError("corrupt frame: unknown flags")
    if ndim > MAX_NDIM:
        raise CodecError(f"corrupt frame: ndim {ndim} > {MAX_NDIM}")
    if bool(flags & FLAG_CLIP) != (clip != 0.0):
        raise CodecError("corrupt frame: clip flag and clip percentile disagree")
    try:
        codec = Codec(
            quant=QUANTS[qid],
            entropy=ENTROPIES[eid],
            level=level,
            sparse=bool(flags & FLAG_SPARSE),
            clip=float(f"{clip:.4g}") if flags & FLAG_CLIP else None,
        )
    except CodecError as e:
        raise CodecError(f"corrupt frame: {e}") from e
    off = _HDR.size + 8 * ndim
    if n < off + _CRC.size:
        raise CodecError(f"truncated frame ({n} bytes)")
    shape = struct.unpack_from(f"<{ndim}Q", frame, _HDR.size)
    numel = math.prod(shape)
    if 4 * numel > max_bytes:
        raise CodecError(f"frame declares {4 * numel} decoded bytes > limit {max_bytes}")
    if nnz > numel if codec.sparse else nnz != 0:
        raise CodecError("corrupt frame: non-zero count does not fit the shape")
    expected = quantize.body_len(shape, codec, nnz)
    if raw_len != expected:
        raise CodecError(
            f"corrupt frame: body length {raw_len} != {expected} implied by shape {list(shape)}"
        )
    if payload_len != n - off - _CRC.size:
        raise CodecError(
            f"corrupt frame: payload length {payload_len} != {n - off - _CRC.size} bytes present"
            " (truncated or trailing bytes)"
        )
    hdr = FrameHeader(
        version=version,
        codec=codec,
        shape=tuple(int(s) for s in shape),
        source_dtype=_DTYPES[did],
        nnz=nnz,
        body_bytes=raw_len,
        payload_bytes=payload_len,
        frame_bytes=n,
    )
    return hdr, off


def peek(
    frame: bytes | bytearray | memoryview, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> FrameHeader:
    """Parse and validate the header only (no checksum, no decompression)."""
    return _parse(frame, max_bytes)[0]


def decode(
    frame: bytes | bytearray | memoryview, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> np.ndarray:
    """Decode a frame to a float32 array; any malformed input raises CodecError only."""
    hdr, off = _parse(frame, max_bytes)
    data = bytes(frame) if not isinstance(frame, bytes) else frame
    end = len(data) - _CRC.size
    (crc,) = _CRC.unpack_from(data, end)
    if _crc(data[:end]) != crc:
        raise CodecError("corrupt frame: CRC32C mismatch")
    body = entropy.decompress(memoryview(data)[off:end], hdr.codec.entropy, hdr.body_bytes)
    try:
        return quantize.dequantize(body, hdr.shape, hdr.codec, hdr.nnz)
    except CodecError:
        raise
    except (ValueError, TypeError, MemoryError) as e:  # defensive: never leak numpy errors
        raise CodecError(f"corrupt frame: {e}") from e
