"""Client data: the bundled digits dataset split non-IID with a seeded Dirichlet(alpha) prior."""

from __future__ import annotations

from functools import cache

import numpy as np

from collab.errors import ConfigError
from collab.models.datasets import digits


def dirichlet_split(labels: np.ndarray, num_clients: int, alpha: float, seed: int,
                    min_size: int = 10) -> list[np.ndarray]:
    """Per class, share its examples over clients with proportions ~ Dir(alpha).

    Redraws (seeded) until every client holds ``min_size`` examples, the usual practice
    (Hsu et al. 2019) so no client is empty."""
    if num_clients < 1 or alpha <= 0:
        raise ConfigError("need num_clients >= 1 and alpha > 0")
    if len(labels) < num_clients * min_size:
        raise ConfigError(f"{len(labels)} examples cannot give {num_clients} clients {min_size} each")
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
    raise ConfigError(f"could not draw a Dirichlet({alpha}) split with {min_size} examples per client")


@cache
def _train() -> tuple[np.ndarray, np.ndarray]:
    return digits("train")


def client_data(index: int, num_clients: int, alpha: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Client ``index``'s shard of the digits training set (same split in every process)."""
    if not 0 <= index < num_clients:
        raise ConfigError(f"client index {index} outside [0, {num_clients})")
    x, y = _train()
    idx = dirichlet_split(y, num_clients, alpha, seed, min_size=min(10, len(y) // (5 * num_clients)))[index]
    return x[idx], y[idx]


def test_data() -> tuple[np.ndarray, np.ndarray]:
    return digits("test")
