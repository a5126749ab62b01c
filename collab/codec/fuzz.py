"""Frame mutator for fuzzing the decoder (used by tests and benchmarks/fuzz_codec.py).

Mutations that keep the checksum valid (header field lies, payload corruption with the
CRC recomputed) matter most: they get past the CRC and exercise every later check.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Iterator

import numpy as np

from collab.codec.frame import _CRC, _HDR, MAGIC, _crc, encode
from collab.errors import CodecError

# Byte offsets / struct formats of header fields (see collab.codec.frame docstring).
FIELDS: list[tuple[int, str]] = [
    (4, "B"), (5, "B"), (6, "B"), (7, "B"), (8, "B"), (9, "B"), (10, "B"), (11, "B"),
    (12, "f"), (16, "Q"), (24, "Q"), (32, "Q"),
]  # fmt: skip
_INTERESTING = [0, 1, 2, 3, 7, 8, 9, 15, 16, 255, 256, 2**16, 2**31 - 1, 2**32, 2**62, 2**64 - 1]


def header_end(frame: bytes | bytearray) -> int:
    """Offset of the payload in a (valid-header) frame."""
    return _HDR.size + 8 * frame[10]


def fix_crc(frame: bytearray) -> bytes:
    end = len(frame) - _CRC.size
    if end >= 0:
        _CRC.pack_into(frame, end, _crc(bytes(frame[:end])))
    return bytes(frame)


def _lie(v: int, fmt: str, rng: random.Random) -> int | float:
    if fmt == "f":
        return rng.choice([0.0, 50.0, 99.9, 100.0, -1.0, float("nan"), float("inf"), 1e30])
    limit = 2 ** (8 * struct.calcsize(fmt)) - 1
    cands = [v + 1, v - 1, v * 2, v // 2, rng.randrange(limit + 1), *(_INTERESTING)]
    return min(max(rng.choice(cands), 0), limit)


def _field_lie(f: bytes, rng: random.Random) -> bytes:
    b = bytearray(f)
    off, fmt = rng.choice(FIELDS)
    (v,) = struct.unpack_from("<" + fmt, b, off)
    struct.pack_into("<" + fmt, b, off, _lie(int(v) if fmt != "f" else 0, fmt, rng))
    return fix_crc(b)


def _shape_lie(f: bytes, rng: random.Random) -> bytes:
    b = bytearray(f)
    ndim = b[10]
    if ndim == 0 or len(b) < _HDR.size + 8 * ndim:
        return _field_lie(f, rng)
    off = _HDR.size + 8 * rng.randrange(ndim)
    (v,) = struct.unpack_from("<Q", b, off)
    struct.pack_into("<Q", b, off, _lie(v, "Q", rng))
    if rng.random() < 0.5:  # keep the body length consistent with a bigger/smaller shape lie
        struct.pack_into("<Q", b, 24, _lie(struct.unpack_from("<Q", b, 24)[0], "Q", rng))
    return fix_crc(b)


def _bitflip(f: bytes, rng: random.Random) -> bytes:
    b = bytearray(f)
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)
    return bytes(b)


def _payload_corrupt(f: bytes, rng: random.Random) -> bytes:
    b = bytearray(f)
    start = header_end(b)
    end = len(b) - _CRC.size
    if end <= start:
        return _field_lie(f, rng)
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(start, end)
        b[i] = rng.randrange(256) if rng.random() < 0.5 else b[i] ^ (1 << rng.randrange(8))
    return fix_crc(b)


def _truncate(f: bytes, rng: random.Random) -> bytes:
    cut = f[: rng.randrange(len(f))]
    return fix_crc(bytearray(cut)) if rng.random() < 0.5 else cut


def _extend(f: bytes, rng: random.Random) -> bytes:
    tail = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    return fix_crc(bytearray(f + tail)) if rng.random() < 0.5 else f + tail


def _splice(f: bytes, rng: random.Random, others: list[bytes]) -> bytes:
    g = rng.choice(others)
    cut = rng.randrange(min(len(f), len(g)))
    return fix_crc(bytearray(f[:cut] + g[cut:]))


MUTATORS: dict[str, Callable[[bytes, random.Random], bytes]] = {
    "bitflip": _bitflip,
    "field_lie": _field_lie,
    "shape_lie": _shape_lie,
    "payload_corrupt": _payload_corrupt,
    "truncate": _truncate,
    "extend": _extend,
}


def seed_frames(codecs: list[str], seed: int = 0) -> list[bytes]:
    """Small valid frames of every codec over a few shapes (ReLU-like, with outliers)."""
    rng = np.random.default_rng(seed)
    out = []
    for shape in [(1, 4, 3, 3), (2, 3, 5), (7,), (1, 1, 1, 1)]:
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


__all__ = [
    "FIELDS",
    "MAGIC",
    "MUTATORS",
    "check",
    "fix_crc",
    "header_end",
    "mutations",
    "seed_frames",
]
