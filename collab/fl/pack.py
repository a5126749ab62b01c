"""Packed quantized CKKS updates (BatchCrypt-style): k b-bit integers per CKKS slot.

A client clips every coordinate of its update part to ``[-range, range]``, quantizes it to
an integer in ``[-L, L]`` (``L = 2^(b-1) - 1``) by **stochastic rounding** (unbiased:
``E[q·step] = x``), offsets it to ``[0, 2L]`` and packs ``k`` of them into one slot value
``V = sum_j u_j · 2^(w·j)`` with field width ``w = b + ceil(log2 n)``: the sum of ``n``
clients' fields never carries into the next field. The weight slot travels unpacked. The
aggregator adds ciphertexts as before; a member decrypts the SUM, rounds each slot to the
nearest integer (exact while the CKKS error stays < 1/2, see :func:`precision_bits`),
splits the fields, subtracts ``r·L`` (r reporters) and multiplies by the step.

Error bound (documented and tested): with ``step = range / L``, every client's quantized
coordinate differs from its clipped value by less than one step, so the decoded SUM of r
reporters differs from the sum of the clipped values by less than ``r·step`` per
coordinate (zero in expectation; standard deviation at most ``step·sqrt(r)/2``).
Coordinates beyond ``range`` are clipped (a bias, reported by :func:`clipped_fraction`).

DP noise is added before quantization, so nothing about the noise, sigma or the accountant
changes: quantization only post-processes each client's noised upload.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from collab.errors import FLError
from collab.fl.config import FLConfig, HEParams

#: the smallest number of bits per value the automatic choice accepts
MIN_BITS = 8
#: bits of margin between the CKKS error of a sum and the 1/2 that rounding tolerates
MARGIN_BITS = 4


@dataclass(frozen=True, kw_only=True)
class Packing:
    """How a round's updates are packed (announced; an upload must carry the same)."""

    bits: int  # b: bits of one quantized value
    per_slot: int  # k: values packed into one CKKS slot
    headroom: int  # ceil(log2 n_max): carry room for the sum of up to n_max uploads
    range: float  # per-coordinate clip of the update part (in its pre-weighted units)

    @property
    def width(self) -> int:
        return self.bits + self.headroom

    @property
    def levels(self) -> int:
        """L: quantized values lie in [-L, L]."""
        return (1 << (self.bits - 1)) - 1

    @property
    def step(self) -> float:
        return self.range / self.levels

    @property
    def max_clients(self) -> int:
        return 1 << self.headroom

    def encoded_len(self, num_values: int) -> int:
        """CKKS values carrying a ``num_values`` (= d + 1) update: packed slots + weight."""
        return -(-(num_values - 1) // self.per_slot) + 1

    def check_clients(self, n: int) -> None:
        if n > self.max_clients:
            raise FLError(
                f"{n} clients sampled, but the packing ({self.per_slot} x {self.bits}-bit "
                f"values per slot, {self.headroom} bits of headroom) sums at most "
                f"{self.max_clients} uploads; lower he.pack_per_slot/he.pack_bits or sample fewer"
            )


def headroom_bits(n: int) -> int:
    return max(0, math.ceil(math.log2(max(n, 1))))


def data_bits(params: HEParams) -> int:
    """Bits of the modulus a fresh ciphertext's data lives under (SEAL keeps the last prime
    as the key-switching "special" prime)."""
    return sum(params.coeff_mod_bit_sizes[:-1])


def precision_bits(params: HEParams, n: int) -> int:
    """Integer bits a slot carries EXACTLY through a sum of ``n`` fresh ciphertexts.

    A value must stay below 2^(data_bits - 2) once scaled; the slot error of a fresh
    symmetric/public-key encryption is ≈ 2^(log2(N)/2 + 4) in those units and grows with
    sqrt(n) (measured: N = 8192, [60, 40], n = 4: error 2^(P - 47.3) for P bits; n = 64:
    2^(P - 45.1)); MARGIN_BITS below the 1/2 that rounding tolerates."""
    noise = math.log2(params.poly_modulus_degree) / 2 + 4 + math.log2(max(n, 1)) / 2
    return math.floor(data_bits(params) - 2 - noise - 1 - MARGIN_BITS)


def choose(params: HEParams, n: int, clip: float, *, bits: int = 0, per_slot: int = 0) -> Packing:
    """The packing for federations of up to ``n`` clients: the most values per slot such
    that each keeps at least MIN_BITS bits, then the leftover precision goes to the bits.
    Explicit ``bits``/``per_slot`` (0 = automatic) are checked against the precision."""
    p = precision_bits(params, n)
    h = headroom_bits(n)
    if per_slot == 0:
        b = bits or MIN_BITS
        per_slot = max(1, p // (b + h))
    if bits == 0:
        bits = p // per_slot - h
    if bits < 2:
        raise FLError(
            f"packing {per_slot} values per slot for {n} clients leaves {bits} bits a value "
            f"(the scheme carries {p} exact bits a slot)"
        )
    if per_slot * (bits + h) > p:
        raise FLError(
            f"packing {per_slot} x ({bits} + {h} headroom) bits exceeds the {p} exact bits "
            f"a slot carries for {n} clients"
        )
    return Packing(bits=bits, per_slot=per_slot, headroom=h, range=clip)


def for_config(cfg: FLConfig) -> Packing | None:
    """The federation's packing (None unless HE with ``he.pack``), sized for
    ``cfg.clients``; its ``range`` is ``he.pack_clip`` (each round scales it, see
    :func:`for_round`)."""
    if not (cfg.he_enabled and cfg.he.pack):
        return None
    h = cfg.he
    return choose(h.params(), cfg.clients, h.pack_clip, bits=h.pack_bits, per_slot=h.pack_per_slot)


def for_round(pk: Packing, sampled: int, max_weight: float) -> Packing:
    """A round's packing: refuses more sampled clients than the headroom sums; the clip
    scales with the largest weight a sampled client pre-multiplies its update by."""
    pk.check_clients(sampled)
    return dataclasses.replace(pk, range=pk.range * max(max_weight, 1.0))


def _shift(params: HEParams, pk: Packing) -> int:
    """Slot values are V·2^-shift, so V < 2^(k·w) stays below 2^(data_bits - 2) scaled."""
    return pk.per_slot * pk.width - (data_bits(params) - 2 - params.scale_bits)


def quantize(x: np.ndarray, pk: Packing, rng: np.random.Generator) -> np.ndarray:
    """Clip to ±range and stochastically round to integers in [-L, L] (int64)."""
    y = np.clip(np.asarray(x, dtype=np.float64), -pk.range, pk.range) / pk.step
    q = np.floor(y + rng.random(y.shape))
    return np.clip(q, -pk.levels, pk.levels).astype(np.int64)


def clipped_fraction(x: np.ndarray, pk: Packing) -> float:
    return float(np.mean(np.abs(x) > pk.range)) if len(x) else 0.0


def pack_ints(q: np.ndarray, pk: Packing) -> np.ndarray:
    """Offset integers [-L, L] → [0, 2L] and pack k per int64 slot value (exact)."""
    u = q.astype(np.int64) + pk.levels
    pad = -len(u) % pk.per_slot
    u = np.concatenate([u, np.full(pad, pk.levels, dtype=np.int64)])
    fields = u.reshape(-1, pk.per_slot)
    weights = np.left_shift(np.int64(1), pk.width * np.arange(pk.per_slot, dtype=np.int64))
    return (fields * weights).sum(axis=1)


def unpack_ints(v: np.ndarray, pk: Packing, reporters: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_ints` for a SUM of ``reporters`` packed vectors."""
    v = np.asarray(v, dtype=np.int64)
    mask = np.int64((1 << pk.width) - 1)
    shifts = pk.width * np.arange(pk.per_slot, dtype=np.int64)
    fields = (v[:, None] >> shifts[None, :]) & mask
    return fields.reshape(-1)[:count] - reporters * pk.levels


def encode(vec: np.ndarray, pk: Packing, params: HEParams, rng: np.random.Generator) -> np.ndarray:
    """Client side: a ``d + 1`` update → the CKKS values to encrypt (packed + weight)."""
    packed = pack_ints(quantize(vec[:-1], pk, rng), pk).astype(np.float64)
    return np.concatenate([np.ldexp(packed, -_shift(params, pk)), vec[-1:]])


def decode(
    values: np.ndarray, pk: Packing, params: HEParams, reporters: int, num_values: int
) -> np.ndarray:
    """Decryptor side: decrypted SUM values → the ``d + 1`` plaintext sum (dequantized)."""
    if reporters > pk.max_clients:
        raise FLError(f"{reporters} reporters exceed the packing's limit of {pk.max_clients}")
    ints = np.rint(np.ldexp(np.asarray(values[:-1], dtype=np.float64), _shift(params, pk)))
    q = unpack_ints(ints.astype(np.int64), pk, reporters, num_values - 1)
    return np.concatenate([q.astype(np.float64) * pk.step, values[-1:]])
