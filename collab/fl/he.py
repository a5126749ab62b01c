"""CKKS (TenSEAL) packing for FedAvg: encrypt a flat update in slot-sized chunks, add
ciphertexts under a PUBLIC context (the aggregator), decrypt the sum (key holder only).

Aggregation needs no multiplication: clients pre-weight in plaintext and the aggregator
only adds. So no Galois/relinearisation keys are ever generated and one data prime is
enough ("coeff_mod_bit_sizes [60, 40]" halves the ciphertext against [60, 40, 40]; the
benchmark measures both).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from collab.extras import missing

try:
    import tenseal as ts
except ImportError as _e:
    raise missing(_e, __name__) from _e

from collab.errors import FLError
from collab.files import write_private
from collab.fl.config import HEParams


@dataclass(frozen=True)
class KeyPair:
    """Serialized contexts: ``secret`` (key holder / clients) and ``public`` (aggregator:
    parameters, plus the public key only in "public_key" mode; never the secret key)."""

    secret: bytes
    public: bytes

    @property
    def context_id(self) -> str:
        return context_id(self.public)


def context_id(public_context: bytes) -> str:
    """Stable id of a federation's context: clients tag uploads with it."""
    return hashlib.sha256(public_context).hexdigest()[:32]


def generate_keys(params: HEParams) -> KeyPair:
    """Fresh per-federation keys (done once at set-up by the key holder, never shipped)."""
    symmetric = params.encryption == "symmetric"
    kw = {"encryption_type": ts.ENCRYPTION_TYPE.SYMMETRIC} if symmetric else {}
    ctx = ts.context(
        ts.SCHEME_TYPE.CKKS,
        poly_modulus_degree=params.poly_modulus_degree,
        coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes),
        **kw,
    )
    ctx.global_scale = 2.0**params.scale_bits
    # Aggregator context: no secret key, no Galois, no relinearisation keys.
    public = ctx.serialize(
        save_public_key=not symmetric,
        save_secret_key=False,
        save_galois_keys=False,
        save_relin_keys=False,
    )
    secret = ctx.serialize(
        save_public_key=not symmetric,
        save_secret_key=True,
        save_galois_keys=False,
        save_relin_keys=False,
    )
    return KeyPair(secret=secret, public=public)


def write_keys(keys: KeyPair, directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    sec, pub = directory / "secret.ctx", directory / "public.ctx"
    # a fresh 0600 file renamed over each name: a symlink planted there is replaced,
    # never written through
    write_private(sec, keys.secret, replace=True)
    write_private(pub, keys.public, replace=True)
    return sec, pub


def load_context(data: bytes, *, require_secret: bool = False) -> ts.Context:
    try:
        ctx = ts.context_from(data)
    except Exception as e:  # TenSEAL raises bare ValueError/RuntimeError
        raise FLError(f"not a TenSEAL context: {e}") from e
    if require_secret and not ctx.is_private():
        raise FLError("this context holds no secret key; only the key holder can decrypt")
    return ctx


def num_chunks(length: int, slots: int) -> int:
    return max(1, -(-length // slots))


def _pool_size() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _slots(ctx: ts.Context) -> int:
    return int(ctx.data.seal_context().first_context_data().parms().poly_modulus_degree() // 2)


def _encrypt_one(ctx: ts.Context, p: np.ndarray) -> bytes:
    return bytes(ts.ckks_vector(ctx, p.tolist()).serialize())


def encrypt_stream(
    ctx: ts.Context, vec: np.ndarray, *, threads: int | None = None
) -> Iterator[bytes]:
    """Encrypt a float vector into serialized ciphertexts of ``slots`` values each,
    yielded in order as soon as each is ready: the caller streams chunk i while worker
    threads encrypt the next ones (TenSEAL releases the GIL inside SEAL)."""
    slots = _slots(ctx)
    v = np.asarray(vec, dtype=np.float64).ravel()
    parts = [v[i : i + slots] for i in range(0, max(len(v), 1), slots)]
    n = threads or _pool_size()
    if n <= 1 or len(parts) == 1:
        for p in parts:
            yield _encrypt_one(ctx, p)
        return
    with ThreadPoolExecutor(n, thread_name_prefix="collab-he") as ex:
        # at most 2n chunks in flight: memory stays bounded for any model size
        pending = deque(ex.submit(_encrypt_one, ctx, p) for p in parts[: 2 * n])
        rest = iter(parts[2 * n :])
        while pending:
            out = pending.popleft().result()
            nxt = next(rest, None)
            if nxt is not None:
                pending.append(ex.submit(_encrypt_one, ctx, nxt))
            yield out


def encrypt(ctx: ts.Context, vec: np.ndarray, *, threads: int | None = None) -> list[bytes]:
    """:func:`encrypt_stream`, all chunks at once."""
    return list(encrypt_stream(ctx, vec, threads=threads))


def load_chunk(ctx: ts.Context, data: bytes, expected_size: int) -> ts.CKKSVector:
    """Deserialize one chunk under ``ctx`` and check everything the sum needs of it: one
    fresh ciphertext (2 polynomials, not transparent) at the context's top level (its
    parameter id), at the federation's scale, carrying ``expected_size`` values; so
    adding it to the sum cannot fail half-way."""
    try:
        vec = ts.ckks_vector_from(ctx, data)
        size = vec.size()
        cts = vec.ciphertext()
    except Exception as e:
        raise FLError(
            f"ciphertext does not deserialize under this federation's context: {e}"
        ) from e
    if size != expected_size:
        raise FLError(f"ciphertext carries {size} values, expected {expected_size}")
    if len(cts) != 1:
        raise FLError(f"chunk holds {len(cts)} ciphertexts, expected 1")
    ct = cts[0]
    top = ctx.seal_context().data.first_parms_id()
    if ct.parms_id() != top:
        raise FLError("ciphertext is not at the context's top level (parameter id differs)")
    if ct.scale != ctx.global_scale:
        raise FLError(
            f"ciphertext scale 2^{math.log2(ct.scale):.2f}, federation uses "
            f"2^{math.log2(ctx.global_scale):.2f}"
        )
    if ct.size() != 2 or ct.is_transparent():
        raise FLError("not a fresh ciphertext (size != 2 or transparent)")
    return vec


def summed(
    acc: Sequence[ts.CKKSVector] | None, update: Sequence[ts.CKKSVector]
) -> list[ts.CKKSVector]:
    """Homomorphic sum into NEW ciphertexts (``acc`` is left untouched, so a failure
    commits nothing); additions only: no key the aggregator lacks is needed."""
    if acc is None:
        return list(update)
    try:
        return [a + u for a, u in zip(acc, update, strict=True)]
    except Exception as e:  # TenSEAL raises bare ValueError (e.g. "scale mismatch")
        raise FLError(f"ciphertexts cannot be added: {e}") from e


def decrypt(
    secret_ctx: ts.Context, chunks: Sequence[bytes], length: int, *, threads: int | None = None
) -> np.ndarray:
    """Decrypt an aggregate (only ever called on sums, by a holder of the secret key);
    chunks are decrypted on worker threads, as they are encrypted."""
    if not secret_ctx.is_private():
        raise FLError("cannot decrypt: context has no secret key")

    def one(c: bytes) -> list[float]:
        return list(ts.ckks_vector_from(secret_ctx, c).decrypt())

    n = threads or _pool_size()
    if n <= 1 or len(chunks) <= 1:
        parts = [one(c) for c in chunks]
    else:
        with ThreadPoolExecutor(n, thread_name_prefix="collab-he") as ex:
            parts = list(ex.map(one, chunks))
    pos = sum(len(p) for p in parts)
    if pos != length:
        raise FLError(f"aggregate carries {pos} values, expected {length}")
    return (
        np.concatenate([np.asarray(p, dtype=np.float64) for p in parts]) if parts else np.zeros(0)
    )
