"""The self-describing wire frame.

Features of small models are a few hundred bytes per request, so the header is
compact (typically 15-20 bytes). Layout::

    0  2s  magic b"\\xecF"
    2  B   version (1)
    3  B   quantizer id << 4 | entropy id      (f32 f16 int8 int4 int3 int2 | none zstd brotli)
    4  B   entropy level
    5  B   flags: 1 sparse, 2 clipped range, 4 per-tensor params, 8 compact params,
               16 calibrated steps (+alloc: compact, per channel, not sparse or clipped)
    6  B   ndim << 4 | source dtype id         (float32 float16 float64; decode -> float32)
    7  varint body length    (uncompressed; must equal what shape/codec/nnz/flags imply)
       varint payload length (compressed)
       varint nnz            (sparse only)
       varint x ndim shape
       f32 clip percentile   (clipped only)
    .. payload
    -4 u32 CRC32C (little-endian) of everything before it

Varints are LEB128, canonical (no overlong encodings), at most 9 bytes (< 2**63).
Decoding checks every field and every length against the others before it allocates
anything proportional to a declared size, so a lying or truncated frame costs nothing
and raises :class:`CodecError` -- never anything else.
"""

from __future__ import annotations

import functools
import math
import struct
from dataclasses import dataclass

import google_crc32c
import numpy as np

from collab.codec import entropy, quantize
from collab.codec.alloc import Allocation
from collab.codec.quantize import Layout
from collab.codec.spec import BITS, ENTROPIES, QUANTS, Codec
from collab.errors import CodecError

MAGIC = b"\xecF"
VERSION = 1
MAX_NDIM = 8
DEFAULT_MAX_BYTES = 256 << 20  # decoded float32 bytes; features are far smaller
FIXED = 7  # bytes before the first varint
CRC_BYTES = 4
_DTYPES = ("float32", "float16", "float64")
_DTYPE_ID = {np.dtype(d): i for i, d in enumerate(_DTYPES)}
FLAG_SPARSE, FLAG_CLIP, FLAG_PER_TENSOR, FLAG_COMPACT, FLAG_ALLOC = 1, 2, 4, 8, 16
_KNOWN_FLAGS = FLAG_SPARSE | FLAG_CLIP | FLAG_PER_TENSOR | FLAG_COMPACT | FLAG_ALLOC
_F32 = struct.Struct("<f")
_U32 = struct.Struct("<I")


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
    header_bytes: int
    per_tensor: bool = False  # quantization parameters for the whole tensor
    compact_params: bool = False  # float16 scale + uint8 zero point
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


def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _read_varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    v = shift = 0
    for i in range(9):
        if pos + i >= end:
            raise CodecError("truncated frame header")
        b = buf[pos + i]
        v |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            if b == 0 and i > 0:
                raise CodecError("corrupt frame header: overlong varint")
            return v, pos + i + 1
    raise CodecError("corrupt frame header: varint too long")


def encode(array: np.ndarray, codec: Codec | str, *, alloc: Allocation | None = None) -> bytes:
    """Encode a float tensor as one self-describing frame (``alloc``: the cut's
    calibrated steps, required by ``+alloc`` codecs and ignored by others)."""
    c = Codec.parse(codec)
    a = np.asarray(array)
    did = _DTYPE_ID.get(a.dtype)
    if did is None:
        raise CodecError(f"cannot encode dtype {a.dtype}; expected one of {', '.join(_DTYPES)}")
    if a.ndim > MAX_NDIM:
        raise CodecError(f"cannot encode {a.ndim}-D tensor (max {MAX_NDIM})")
    parts, nnz, layout = quantize.quantize(a, c, alloc if c.alloc else None)
    raw_len = sum(int(p.nbytes) if isinstance(p, np.ndarray) else len(p) for p in parts)
    payload = entropy.compress(parts, c.entropy, c.level)
    payload_b = payload if isinstance(payload, bytes) else bytes(payload)
    flags = (
        (FLAG_SPARSE if c.sparse else 0)
        | (FLAG_CLIP if c.clip is not None else 0)
        | (FLAG_PER_TENSOR if layout.per_tensor else 0)
        | (FLAG_COMPACT if layout.compact else 0)
        | (FLAG_ALLOC if c.alloc else 0)
    )
    fields = [
        MAGIC,
        bytes(
            (
                VERSION,
                QUANTS.index(c.quant) << 4 | ENTROPIES.index(c.entropy),
                c.level,
                flags,
                a.ndim << 4 | did,
            )
        ),
        _varint(raw_len),
        _varint(len(payload_b)),
        _varint(nnz) if c.sparse else b"",
        *(_varint(d) for d in a.shape),
        _F32.pack(c.clip) if c.clip is not None else b"",
    ]
    head = b"".join(fields)
    return b"".join((head, payload_b, _U32.pack(_crc(head, payload_b))))


@functools.lru_cache(maxsize=256)
def _codec_cached(
    qid: int, eid: int, level: int, sparse: bool, clip: float | None, alloc: bool
) -> Codec:
    return Codec(
        quant=QUANTS[qid],
        entropy=ENTROPIES[eid],
        level=level,
        sparse=sparse,
        clip=clip,
        alloc=alloc,
    )


def _codec(qid: int, eid: int, level: int, sparse: bool, clip: float | None, alloc: bool) -> Codec:
    try:
        return _codec_cached(qid, eid, level, sparse, clip, alloc)
    except CodecError as e:
        raise CodecError(f"corrupt frame: {e}") from e


def _as_bytes(frame: bytes | bytearray | memoryview) -> bytes:
    if isinstance(frame, bytes):
        return frame
    if not isinstance(frame, bytearray | memoryview):
        raise CodecError(f"frame must be bytes, got {type(frame).__name__}")
    return bytes(frame)  # also flattens memoryviews of any item format


def _parse(frame: bytes, max_bytes: int) -> FrameHeader:
    """Validate the header against itself and the frame length."""
    n = len(frame)
    if n < FIXED + 2 + CRC_BYTES:
        raise CodecError(f"truncated frame ({n} bytes)")
    if frame[:2] != MAGIC:
        raise CodecError("not a feature frame (bad magic)")
    version, qe, level, flags, nd = frame[2], frame[3], frame[4], frame[5], frame[6]
    if version != VERSION:
        raise CodecError(f"unsupported frame version {version} (this build reads {VERSION})")
    qid, eid, ndim, did = qe >> 4, qe & 15, nd >> 4, nd & 15
    if qid >= len(QUANTS) or eid >= len(ENTROPIES) or did >= len(_DTYPES):
        raise CodecError("corrupt frame: unknown quantizer, entropy coder or dtype id")
    if flags & ~_KNOWN_FLAGS:
        raise CodecError("corrupt frame: unknown flags")
    if ndim > MAX_NDIM:
        raise CodecError(f"corrupt frame: ndim {ndim} > {MAX_NDIM}")
    end = n - CRC_BYTES
    raw_len, pos = _read_varint(frame, FIXED, end)
    payload_len, pos = _read_varint(frame, pos, end)
    nnz = 0
    if flags & FLAG_SPARSE:
        nnz, pos = _read_varint(frame, pos, end)
    shape = []
    for _ in range(ndim):
        d, pos = _read_varint(frame, pos, end)
        shape.append(d)
    clip = None
    if flags & FLAG_CLIP:
        if pos + 4 > end:
            raise CodecError("truncated frame header")
        (c32,) = _F32.unpack_from(frame, pos)
        pos += 4
        clip = float(f"{c32:.6g}")
    codec = _codec(qid, eid, level, bool(flags & FLAG_SPARSE), clip, bool(flags & FLAG_ALLOC))
    quantized = codec.quant in BITS
    if not quantized and flags & (FLAG_PER_TENSOR | FLAG_COMPACT):
        raise CodecError("corrupt frame: parameter flags on an unquantized codec")
    layout = Layout(per_tensor=bool(flags & FLAG_PER_TENSOR), compact=bool(flags & FLAG_COMPACT))
    if codec.alloc and (layout.per_tensor or not layout.compact or ndim < 2):
        raise CodecError("corrupt frame: +alloc frames carry compact per-channel parameters")
    numel = math.prod(shape)
    if 4 * numel > max_bytes:
        raise CodecError(f"frame declares {4 * numel} decoded bytes > limit {max_bytes}")
    if nnz > numel:
        raise CodecError("corrupt frame: non-zero count exceeds the number of elements")
    if quantized and quantize.param_groups(shape, layout) > max(numel, 1):
        raise CodecError("corrupt frame: more quantization groups than elements")
    expected = quantize.body_len(shape, codec, nnz, layout)
    if raw_len != expected:
        raise CodecError(
            f"corrupt frame: body length {raw_len} != {expected} implied by shape {shape}"
        )
    if raw_len > 2 * max_bytes + 64:  # unreachable for valid frames; caps any allocation
        raise CodecError(f"corrupt frame: body length {raw_len} exceeds the limit")
    if payload_len != end - pos:
        raise CodecError(
            f"corrupt frame: payload length {payload_len} != {end - pos} bytes present"
            " (truncated or trailing bytes)"
        )
    return FrameHeader(
        version=version,
        codec=codec,
        shape=tuple(shape),
        source_dtype=_DTYPES[did],
        nnz=nnz,
        body_bytes=raw_len,
        payload_bytes=payload_len,
        frame_bytes=n,
        header_bytes=pos,
        per_tensor=layout.per_tensor,
        compact_params=layout.compact,
    )


def peek(
    frame: bytes | bytearray | memoryview, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> FrameHeader:
    """Parse and validate the header only (no checksum, no decompression)."""
    return _parse(_as_bytes(frame), max_bytes)


def decode(
    frame: bytes | bytearray | memoryview, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> np.ndarray:
    """Decode a frame to a float32 array; any malformed input raises CodecError only."""
    data = _as_bytes(frame)
    hdr = _parse(data, max_bytes)
    end = len(data) - CRC_BYTES
    (crc,) = _U32.unpack_from(data, end)
    if _crc(data[:end]) != crc:
        raise CodecError("corrupt frame: CRC32C mismatch")
    body = entropy.decompress(
        memoryview(data)[hdr.header_bytes : end], hdr.codec.entropy, hdr.body_bytes
    )
    layout = Layout(per_tensor=hdr.per_tensor, compact=hdr.compact_params)
    try:
        return quantize.dequantize(body, hdr.shape, hdr.codec, hdr.nnz, layout)
    except CodecError:
        raise
    except (ValueError, TypeError, MemoryError) as e:  # defensive: never leak numpy errors
        raise CodecError(f"corrupt frame: {e}") from e
