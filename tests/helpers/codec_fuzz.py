"""Frame mutator for fuzzing the decoder (tests/test_codec_fuzz.py, benchmarks/fuzz_codec.py).

Mutations that keep the checksum valid (header field lies re-encoded with the CRC
recomputed, payload corruption with the CRC recomputed) matter most: they get past the
CRC and exercise every later check.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import numpy as np

from collab.codec.frame import (
    CRC_BYTES,
    FIXED,
    FLAG_CLIP,
    FLAG_SPARSE,
    MAGIC,
    _crc,
    _read_varint,
    _varint,
    encode,
)
from collab.errors import CodecError

_INTERESTING = [
    0,
    1,
    2,
    3,
    7,
    8,
    9,
    15,
    16,
    127,
    128,
    255,
    256,
    2**16,
    2**31 - 1,
    2**32,
    2**62,
    2**63 - 1,
]


@dataclass(frozen=True)
class Fields:
    """The header of a valid frame, field by field (the input of header lies)."""

    fixed: bytes  # magic .. ndim/dtype byte
    raw_len: int
    payload_len: int
    nnz: int | None
    shape: tuple[int, ...]
    clip: bytes  # 4 raw bytes or b""
    payload: bytes

    @classmethod
    def parse(cls, f: bytes) -> Fields:
        end = len(f) - CRC_BYTES
        flags, ndim = f[5], f[6] >> 4
        raw, pos = _read_varint(f, FIXED, end)
        pl, pos = _read_varint(f, pos, end)
        nnz = None
        if flags & FLAG_SPARSE:
            nnz, pos = _read_varint(f, pos, end)
        shape = []
        for _ in range(ndim):
            d, pos = _read_varint(f, pos, end)
            shape.append(d)
        clip = b""
        if flags & FLAG_CLIP:
            clip, pos = f[pos : pos + 4], pos + 4
        return cls(f[:FIXED], raw, pl, nnz, tuple(shape), clip, f[pos:end])

    def build(self) -> bytes:
        head = b"".join(
            [
                self.fixed,
                _varint(self.raw_len),
                _varint(self.payload_len),
                _varint(self.nnz) if self.nnz is not None else b"",
                *(_varint(d) for d in self.shape),
                self.clip,
            ]
        )
        return fix_crc(bytearray(head + self.payload + b"\0" * CRC_BYTES))


def fix_crc(frame: bytearray) -> bytes:
    end = len(frame) - CRC_BYTES
    if end >= 0:
        struct.pack_into("<I", frame, end, _crc(bytes(frame[:end])))
    return bytes(frame)


def _lie(v: int, rng: random.Random) -> int:
    cands = [
        v + 1,
        v - 1,
        v * 2,
        v // 2,
        rng.randrange(2**63),
        rng.randrange(1 << 16),
        *_INTERESTING,
    ]
    return min(max(rng.choice(cands), 0), 2**63 - 1)


def _fixed_lie(f: bytes, rng: random.Random) -> bytes:
    b = bytearray(f)
    i = rng.randrange(2, FIXED)
    b[i] = rng.choice([rng.randrange(256), b[i] ^ (1 << rng.randrange(8)), 0, 255, b[i] + 1 & 255])
    return fix_crc(b)


def _varint_lie(f: bytes, rng: random.Random) -> bytes:
    h = Fields.parse(f)
    which = rng.choice(["raw_len", "payload_len", "nnz", "clip"])
    if which == "nnz" and h.nnz is not None:
        h = replace(h, nnz=_lie(h.nnz, rng))
    elif which == "clip" and h.clip:
        h = replace(
            h, clip=struct.pack("<f", rng.choice([0.0, 50.0, 100.0, -1.0, float("nan"), 1e30]))
        )
    elif which == "payload_len":
        h = replace(h, payload_len=_lie(h.payload_len, rng))
    else:
        h = replace(h, raw_len=_lie(h.raw_len, rng))
    return h.build()


def _shape_lie(f: bytes, rng: random.Random) -> bytes:
    h = Fields.parse(f)
    if not h.shape:
        return _varint_lie(f, rng)
    shape = list(h.shape)
    i = rng.randrange(len(shape))
    r = rng.random()
    if r < 0.3 and len(shape) > 1:  # same numel, different layout (may legitimately decode)
        j = rng.randrange(len(shape))
        shape[i], shape[j] = shape[j], shape[i]
    else:
        shape[i] = _lie(shape[i], rng)
    h = replace(h, shape=tuple(shape))
    if r > 0.7:  # keep the body length consistent with the lie so later checks are reached
        h = replace(h, raw_len=_lie(h.raw_len, rng))
    return h.build()


def _overlong(f: bytes, rng: random.Random) -> bytes:
    """Re-encode the body-length varint with a redundant continuation byte."""
    h = Fields.parse(f)
    v = _varint(h.raw_len)
    over = bytes([*v[:-1], v[-1] | 0x80, 0x00])
    b = bytearray(f[:FIXED] + over + f[FIXED + len(v) :])
    return fix_crc(b)


def _bitflip(f: bytes, rng: random.Random) -> bytes:
    b = bytearray(f)
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)
    return bytes(b)


def _payload_corrupt(f: bytes, rng: random.Random) -> bytes:
    h = Fields.parse(f)
    if not h.payload:
        return _varint_lie(f, rng)
    p = bytearray(h.payload)
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(p))
        p[i] = rng.randrange(256) if rng.random() < 0.5 else p[i] ^ (1 << rng.randrange(8))
    return replace(h, payload=bytes(p)).build()


def _truncate(f: bytes, rng: random.Random) -> bytes:
    cut = f[: rng.randrange(len(f))]
    return fix_crc(bytearray(cut)) if rng.random() < 0.5 else cut


def _extend(f: bytes, rng: random.Random) -> bytes:
    tail = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    return fix_crc(bytearray(f + tail)) if rng.random() < 0.5 else f + tail


MUTATORS: dict[str, Callable[[bytes, random.Random], bytes]] = {
    "bitflip": _bitflip,
    "fixed_lie": _fixed_lie,
    "varint_lie": _varint_lie,
    "shape_lie": _shape_lie,
    "overlong_varint": _overlong,
    "payload_corrupt": _payload_corrupt,
    "truncate": _truncate,
    "extend": _extend,
}


def _splice(f: bytes, rng: random.Random, others: list[bytes]) -> bytes:
    g = rng.choice(others)
    cut = rng.randrange(min(len(f), len(g)))
    return fix_crc(bytearray(f[:cut] + g[cut:]))


def seed_frames(codecs: list[str], seed: int = 0) -> list[bytes]:
    """Small valid frames of every codec over a few shapes (ReLU-like, with outliers)."""
    rng = np.random.default_rng(seed)
    out = []
    for shape in [(1, 4, 3, 3), (2, 3, 5), (7,), (1, 1, 1, 1), (1, 32)]:
        x = np.maximum(rng.normal(size=shape), 0).astype(np.float32)
        x.reshape(-1)[0] = 9.0
        out += [encode(x, c) for c in codecs]
    return out


def mutations(frames: list[bytes], n: int, seed: int = 0) -> Iterator[tuple[str, bytes]]:
    rng = random.Random(seed)
    names = [*MUTATORS, "splice"]
    for _ in range(n):
        f = rng.choice(frames)
        kind = rng.choice(names)
        if kind == "splice":
            yield kind, _splice(f, rng, frames)
        else:
            yield kind, MUTATORS[kind](f, rng)


def check(frame: bytes, decode: Callable[..., np.ndarray], max_bytes: int) -> str:
    """'ok' or 'rejected'; anything other than CodecError propagates (a bug)."""
    try:
        decode(frame, max_bytes=max_bytes)
    except CodecError:
        return "rejected"
    return "ok"


__all__ = ["MAGIC", "MUTATORS", "Fields", "check", "fix_crc", "mutations", "seed_frames"]
