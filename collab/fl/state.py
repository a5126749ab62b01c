"""The global model as every key holder replays it: aggregates in, parameters out.

The aggregator never holds this state under HE; clients and the key holder apply each
decrypted aggregate with the same deterministic server optimizer, and the version chain
(sha256 of the previous version and the aggregate's bytes) proves they agree.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from collab.errors import FLError


def initial_version(flat: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(flat, dtype=np.float32).tobytes()).hexdigest()[:16]


def next_version(base: str, payload: Iterable[bytes]) -> str:
    h = hashlib.sha256(base.encode())
    for c in payload:
        h.update(hashlib.sha256(c).digest())
    return h.hexdigest()[:16]


def average(total: np.ndarray, *, fixed_denominator: float | None) -> np.ndarray:
    """Mean update from a decrypted sum: by the weight slot, or by m_expected under DP."""
    weight = float(total[-1])
    denom = fixed_denominator if fixed_denominator is not None else weight
    if not denom > 0:
        raise FLError(f"aggregate has non-positive total weight {denom}")
    return total[:-1] / denom


@dataclass
class GlobalModel:
    """Flat federated parameters + server optimizer (FedAvg or FedAdam, Reddi et al. 2021)."""

    flat: np.ndarray
    optimizer: str = "fedavg"
    lr: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    round: int = 0
    version: str = ""
    _m: np.ndarray | None = field(default=None, repr=False)
    _v: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.flat = np.asarray(self.flat, dtype=np.float32)
        if not self.version:
            self.version = initial_version(self.flat)

    def apply(self, *, round_: int, base_version: str, version: str, avg_delta: np.ndarray) -> None:
        if base_version != self.version:
            raise FLError(
                f"aggregate of round {round_} applies to version {base_version}, "
                f"model is at {self.version}"
            )
        if avg_delta.shape != self.flat.shape:
            raise FLError(f"aggregate has {avg_delta.size} values, model has {self.flat.size}")
        if self.optimizer == "fedadam":
            if self._m is None or self._v is None:
                self._m = np.zeros_like(avg_delta)
                self._v = np.full_like(avg_delta, self.tau**2)
            self._m = self.beta1 * self._m + (1 - self.beta1) * avg_delta
            self._v = self.beta2 * self._v + (1 - self.beta2) * avg_delta**2
            step = self.lr * self._m / (np.sqrt(self._v) + self.tau)
        else:
            step = self.lr * avg_delta
        self.flat = (self.flat + step).astype(np.float32)
        self.round, self.version = round_, version
