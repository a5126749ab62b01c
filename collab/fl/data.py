"""Client data: the bundled digits dataset split non-IID with a seeded Dirichlet(alpha) prior."""

from __future__ import annotations

from functools import cache

import numpy as np

from collab.errors import ConfigError
from collab.fl.config import FLConfig
from collab.models.datasets import digits


def dirichlet_split(
    labels: np.ndarray, num_clients: int, alpha: float, seed: int, min_size: int = 10
) -> list[np.ndarray]:
    """Per class, share its examples over clients with proportions ~ Dir(alpha).

    Redraws (seeded) until every client holds ``min_size`` examples, the usual practice
    (Hsu et al. 2019) so no client is empty."""
    if num_clients < 1 or alpha <= 0:
        raise ConfigError("need num_clients >= 1 and alpha > 0")
    if len(labels) < num_clients * min_size:
        raise ConfigError(
            f"{len(labels)} examples cannot give {num_clients} clients {min_size} each"
        )
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    for _ in range(1000):
        shards: list[list[int]] = [[] for _ in range(num_clients)]
        for c in classes:
            idx = np.flatnonzero(labels == c)
            rng.shuffle(idx)
            p = rng.dirichlet(np.full(num_clients, alpha))
            cuts = (np.cumsum(p)[:-1] * len(idx)).astype(int)
            for k, part in enumerate(np.split(idx, cuts)):
                shards[k].extend(part.tolist())
        if min(len(s) for s in shards) >= min_size:
            return [np.sort(np.array(s, dtype=np.int64)) for s in shards]
    raise ConfigError(
        f"could not draw a Dirichlet({alpha}) split with {min_size} examples per client"
    )


@cache
def _train() -> tuple[np.ndarray, np.ndarray]:
    return digits("train")


@cache
def public_indices(fraction: float, seed: int) -> np.ndarray:
    """Indices (into the digits TRAINING split) declared PUBLIC: ``round(fraction·n_c)``
    examples of every class c, drawn with a seeded RNG. Never part of any client's shard;
    the test split is separate by construction (collab.models.datasets)."""
    if not 0 <= fraction < 1:
        raise ConfigError(f"public fraction must be in [0, 1), got {fraction}")
    y = _train()[1]
    rng = np.random.default_rng([seed, 0x9B1C])
    out = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        out.append(idx[: round(len(idx) * fraction)])
    return np.sort(np.concatenate(out))


def private_indices(public_fraction: float, seed: int) -> np.ndarray:
    """The training-split indices the clients share among themselves (all but the public ones)."""
    return np.setdiff1d(np.arange(len(_train()[1])), public_indices(public_fraction, seed))


def public_data(fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = _train()
    idx = public_indices(fraction, seed)
    return x[idx], y[idx]


def client_data(
    index: int, num_clients: int, alpha: float, seed: int, public_fraction: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Client ``index``'s shard of the digits training set (same split in every process),
    drawn from the PRIVATE part only (the ``public_fraction`` share is held out)."""
    if not 0 <= index < num_clients:
        raise ConfigError(f"client index {index} outside [0, {num_clients})")
    x, y = _train()
    priv = private_indices(public_fraction, seed) if public_fraction > 0 else np.arange(len(y))
    yp = y[priv]
    idx = priv[
        dirichlet_split(
            yp, num_clients, alpha, seed, min_size=min(10, len(yp) // (5 * num_clients))
        )[index]
    ]
    return x[idx], y[idx]


def member_data(cfg: FLConfig, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Client ``index``'s data under ``cfg`` (honours the public hold-out)."""
    return client_data(index, cfg.clients, cfg.dirichlet_alpha, cfg.seed, cfg.public.fraction)


def test_data() -> tuple[np.ndarray, np.ndarray]:
    return digits("test")
