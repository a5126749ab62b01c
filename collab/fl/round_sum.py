"""One round at the aggregator: validate each upload fully, then add it into the sum.

The aggregator only ADDS: float32 vectors in plaintext mode, CKKS ciphertexts under the
federation's PUBLIC context in HE mode. An upload is parsed and checked completely
(every chunk: context, parameter id, scale, size; in plaintext DP its norm bound) before
it touches the sum, and is added into a new sum committed only when the whole upload was
added; so a rejected one leaves the sum bit-identical and gets a reason.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import zstandard

from collab.errors import (
    DuplicateUpdate,
    FLError,
    NotFoundError,
    NotSampled,
    RoundMismatch,
    UpdateRejected,
)
from collab.fl import he, pack
from collab.fl.config import HEParams
from collab.fl.pack import Packing
from collab.fl.state import next_version

F32_CHUNK = 1 << 18  # float32 values per plaintext chunk (1 MiB)
MAX_CHUNK_BYTES = 16 << 20


@dataclass(frozen=True, kw_only=True)
class UpdateHeader:
    federation: str
    round: int
    client_id: str
    base_version: str
    encoding: str
    context_id: str = ""
    num_values: int
    num_chunks: int
    compression: str = ""
    packing: Packing | None = None


@dataclass(frozen=True, kw_only=True)
class RoundSpec:
    federation: str
    round: int
    base_version: str
    sampled: tuple[str, ...]
    encoding: str
    context_id: str
    num_values: int
    min_clients: int
    fixed_denominator: float = 0.0
    #: plaintext DP: the largest L2 norm an honest upload's update part can have (its
    #: clipped update plus its noise share, collab.fl.train.upload_norm_bound), and its
    #: weight slot must be 1; 0 = not checked (no DP, or HE: the aggregator sees ciphertexts).
    update_norm_bound: float = 0.0
    #: ckks: how updates are packed (collab.fl.pack); None = one float per slot
    packing: Packing | None = None


@dataclass(frozen=True, kw_only=True)
class Aggregate:
    federation: str
    round: int
    base_version: str
    version: str
    encoding: str
    context_id: str
    num_values: int
    reporters: tuple[str, ...]
    fixed_denominator: float
    chunks: tuple[bytes, ...]
    packing: Packing | None = None


def upload_header(
    spec: RoundSpec, client_id: str, num_chunks: int, compression: str = ""
) -> UpdateHeader:
    """The header of ``client_id``'s upload to the round ``spec`` (in-process callers)."""
    return UpdateHeader(
        federation=spec.federation,
        round=spec.round,
        client_id=client_id,
        base_version=spec.base_version,
        encoding=spec.encoding,
        context_id=spec.context_id,
        num_values=spec.num_values,
        num_chunks=num_chunks,
        compression=compression,
        packing=spec.packing,
    )


def chunk_values(encoding: str, slots: int) -> int:
    return slots if encoding == "ckks" else F32_CHUNK


def chunk_sizes(num_values: int, per_chunk: int) -> list[int]:
    return [min(per_chunk, num_values - i) for i in range(0, num_values, per_chunk)]


def encoded_len(num_values: int, packing: Packing | None) -> int:
    """Values actually encrypted for a ``num_values`` update (fewer when packed)."""
    return packing.encoded_len(num_values) if packing else num_values


def upload_chunk_sizes(
    encoding: str, num_values: int, slots: int, packing: Packing | None
) -> list[int]:
    """The values each chunk of an upload carries (its count is the chunk count)."""
    return chunk_sizes(encoded_len(num_values, packing), chunk_values(encoding, slots))


class Summer(Protocol):
    def parse(self, chunks: list[bytes], sizes: list[int]) -> Any: ...
    def add(self, parsed: Any) -> None: ...
    def payload(self) -> list[bytes]: ...


class F32Summer:
    def __init__(self) -> None:
        self._acc: list[np.ndarray] | None = None

    def parse(self, chunks: list[bytes], sizes: list[int]) -> list[np.ndarray]:
        out = []
        for i, (c, n) in enumerate(zip(chunks, sizes, strict=True)):
            if len(c) != 4 * n:
                raise UpdateRejected(f"chunk {i} has {len(c)} bytes, expected {4 * n} (float32)")
            a = np.frombuffer(c, dtype="<f4").astype(np.float64)
            if not np.isfinite(a).all():
                raise UpdateRejected(f"chunk {i} holds NaN/inf")
            out.append(a)
        return out

    def add(self, parsed: list[np.ndarray]) -> None:
        if self._acc is None:
            self._acc = [p.copy() for p in parsed]
        else:
            self._acc = [a + p for a, p in zip(self._acc, parsed, strict=True)]

    def payload(self) -> list[bytes]:
        # the sum stays float64: the decryptor's division should not see float32 rounding twice
        return [a.astype("<f8").tobytes() for a in self._acc or []]


class CkksSummer:
    def __init__(self, public_context: bytes) -> None:
        self.ctx = he.load_context(public_context)
        if self.ctx.is_private():
            raise FLError(
                "the aggregator was given a context WITH a secret key; refusing to use it"
            )
        self._acc: list[Any] | None = None

    def parse(self, chunks: list[bytes], sizes: list[int]) -> list[Any]:
        out = []
        for i, (c, n) in enumerate(zip(chunks, sizes, strict=True)):
            try:
                out.append(he.load_chunk(self.ctx, c, n))
            except FLError as e:
                raise UpdateRejected(f"chunk {i}: {e}") from e
        return out

    def add(self, parsed: list[Any]) -> None:
        try:
            self._acc = he.summed(self._acc, parsed)
        except FLError as e:
            raise UpdateRejected(str(e)) from e

    def payload(self) -> list[bytes]:
        return [bytes(a.serialize()) for a in self._acc or []]


def decompress(
    chunks: list[bytes], compression: str, max_bytes: int = MAX_CHUNK_BYTES
) -> list[bytes]:
    """Each chunk at most ``max_bytes`` once decompressed (the round's chunk bound), so a
    small zstd bomb costs no more memory than an honest chunk."""
    if compression == "":
        return chunks
    if compression != "zstd":
        raise UpdateRejected(f"unknown compression {compression!r}")
    limit = min(max_bytes, MAX_CHUNK_BYTES)
    d = zstandard.ZstdDecompressor()
    out = []
    try:
        for i, c in enumerate(chunks):
            # zstd allocates the size a frame declares (max_output_size bounds only frames
            # that declare none): check the declaration first; clients always write it
            declared = zstandard.frame_content_size(c)
            if not 0 <= declared <= limit:
                raise UpdateRejected(
                    f"zstd chunk {i} declares {declared} bytes, a chunk holds at most {limit}"
                )
            out.append(d.decompress(c, max_output_size=limit))
    except zstandard.ZstdError as e:
        raise UpdateRejected(f"bad zstd chunk: {e}") from e
    return out


@dataclass
class RoundState:
    """Accepts updates for one round; thread-safe (gRPC handlers run concurrently)."""

    spec: RoundSpec
    summer: Summer
    slots: int
    reporters: list[str] = field(default_factory=list)
    closed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _changed: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self._changed = threading.Condition(self._lock)

    def _precheck(self, h: UpdateHeader) -> None:
        s = self.spec
        if h.federation != s.federation:
            raise NotFoundError(f"unknown federation {h.federation!r}")
        if h.round < s.round or (h.round == s.round and self.closed):
            raise RoundMismatch(f"round {h.round} is closed (late update discarded)")
        if h.round > s.round:
            raise RoundMismatch(f"round {h.round} is not open (current: {s.round})")
        if h.client_id not in s.sampled:
            raise NotSampled(f"client {h.client_id!r} was not sampled in round {s.round}")
        if h.client_id in self.reporters:
            raise DuplicateUpdate(f"duplicate update from {h.client_id!r} in round {s.round}")
        if h.base_version != s.base_version:
            raise RoundMismatch(
                f"update trained from version {h.base_version!r}, round uses {s.base_version!r}"
            )
        if h.encoding != s.encoding:
            raise UpdateRejected(f"encoding {h.encoding!r}, round expects {s.encoding!r}")
        if s.encoding == "ckks" and h.context_id != s.context_id:
            raise RoundMismatch(
                f"ciphertext for context {h.context_id!r}, federation uses {s.context_id!r}"
            )
        if h.num_values != s.num_values:
            raise UpdateRejected(f"update has {h.num_values} values, expected {s.num_values}")
        if h.packing != s.packing:
            raise UpdateRejected(f"update packed as {h.packing}, the round packs as {s.packing}")

    def check_header(self, h: UpdateHeader) -> None:
        """Cheap checks before the payload streams in."""
        with self._lock:
            self._precheck(h)

    def submit(
        self, h: UpdateHeader, chunks: list[bytes], *, max_chunk_bytes: int = MAX_CHUNK_BYTES
    ) -> int:
        """Validate and add one upload; return the number of reporters so far.
        ``max_chunk_bytes``: the most a chunk may hold once decompressed."""
        self.check_header(h)
        s = self.spec
        sizes = upload_chunk_sizes(s.encoding, s.num_values, self.slots, s.packing)
        if h.num_chunks != len(sizes) or len(chunks) != len(sizes):
            raise UpdateRejected(
                f"update has {len(chunks)} chunks (header says {h.num_chunks}), "
                f"expected {len(sizes)}"
            )
        parsed = self.summer.parse(decompress(chunks, h.compression, max_chunk_bytes), sizes)
        if self.spec.update_norm_bound > 0:
            check_dp_bound(parsed, self.spec.update_norm_bound)
        with self._lock:
            self._precheck(h)  # the round may have closed, or a twin upload won, meanwhile
            self.summer.add(parsed)
            self.reporters.append(h.client_id)
            self._changed.notify_all()
            return len(self.reporters)

    def wait(self, deadline_monotonic: float) -> int:
        """Block until every sampled client reported or the deadline passed."""
        import time

        with self._lock:
            while len(self.reporters) < len(self.spec.sampled):
                left = deadline_monotonic - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(min(left, 0.5))
            return len(self.reporters)

    def close(self) -> Aggregate | None:
        """Close the round; the aggregate if ``min_clients`` reported, else None."""
        with self._lock:
            self.closed = True
            if len(self.reporters) < self.spec.min_clients:
                return None
            chunks = tuple(self.summer.payload())
            s = self.spec
            return Aggregate(
                federation=s.federation,
                round=s.round,
                base_version=s.base_version,
                version=next_version(s.base_version, chunks),
                encoding=s.encoding,
                context_id=s.context_id,
                num_values=s.num_values,
                reporters=tuple(self.reporters),
                fixed_denominator=s.fixed_denominator,
                chunks=chunks,
                packing=s.packing,
            )


def check_dp_bound(parsed: list[np.ndarray], bound: float) -> None:
    """Plaintext DP: refuse an update part longer than ``bound`` or a weight slot other
    than 1 (the accountant's justification for releasing the slot's sum relies on it)."""
    vec = np.concatenate(parsed)
    norm = float(np.linalg.norm(vec[:-1]))
    if norm > bound:
        raise UpdateRejected(
            f"update norm {norm:.4g} exceeds the DP bound {bound:.4g} (clip + noise share)"
        )
    if vec[-1] != 1.0:
        raise UpdateRejected(f"DP weight slot is {vec[-1]:g}, must be 1")


def make_summer(encoding: str, public_context: bytes | None) -> Summer:
    if encoding == "ckks":
        if public_context is None:
            raise FLError("ckks encoding needs the federation's public context")
        return CkksSummer(public_context)
    return F32Summer()


def stream_update(
    vec: np.ndarray,
    *,
    ctx: Any | None,
    compression: str = "",
    packing: Packing | None = None,
    params: HEParams | None = None,
    rng: np.random.Generator | None = None,
) -> Iterator[bytes]:
    """Client side: the upload chunks for a ``d + 1`` vector (CKKS if ``ctx`` is given;
    quantized and packed first with ``packing``, which needs the federation's ``params``
    and the ``rng`` of stochastic rounding). Chunks are yielded as soon as each is
    encrypted (worker threads encrypt the next ones meanwhile), so the upload streams
    while the rest is still being encrypted."""
    if packing is not None:
        if ctx is None or params is None or rng is None:
            raise FLError("packing needs the CKKS context, its parameters and an rng")
        vec = pack.encode(vec, packing, params, rng)
    if ctx is not None:
        chunks: Iterable[bytes] = he.encrypt_stream(ctx, vec)
    else:
        a = np.asarray(vec, dtype="<f4")
        chunks = (a[i : i + F32_CHUNK].tobytes() for i in range(0, len(a), F32_CHUNK))
    if compression == "zstd":
        c = zstandard.ZstdCompressor(level=1)
        chunks = (c.compress(x) for x in chunks)
    yield from chunks


def encode_update(vec: np.ndarray, **kw: Any) -> list[bytes]:
    """:func:`stream_update`, all chunks at once."""
    return list(stream_update(vec, **kw))


def decode_aggregate(
    agg_chunks: list[bytes],
    encoding: str,
    num_values: int,
    secret_ctx: Any | None,
    *,
    packing: Packing | None = None,
    params: HEParams | None = None,
    reporters: int = 0,
) -> np.ndarray:
    """Key-holder side: the plaintext SUM (only aggregates are ever decrypted); a packed
    sum of ``reporters`` uploads is unpacked and dequantized."""
    if encoding == "ckks":
        if secret_ctx is None:
            raise FLError("a ckks aggregate needs the secret context to decrypt")
        values = he.decrypt(secret_ctx, agg_chunks, encoded_len(num_values, packing))
        if packing is None:
            return values
        if params is None:
            raise FLError("a packed aggregate needs the federation's CKKS parameters")
        return pack.decode(values, packing, params, reporters, num_values)
    out = (
        np.concatenate([np.frombuffer(c, dtype="<f8") for c in agg_chunks])
        if agg_chunks
        else np.zeros(0)
    )
    if out.size != num_values:
        raise FLError(f"aggregate has {out.size} values, expected {num_values}")
    return out
