"""Where the randomness that protects privacy comes from: the OS, never a seed.

DP noise and client sampling are drawn from generators seeded with 128 fresh bits from
:mod:`secrets` each time (no generator state outlives one noise vector or one round's
sample), so nothing in the config, a client id or a round number reproduces them. The
training RNG (batch order) stays seeded: it is not part of the guarantee.

``insecure_deterministic`` (config field / ``--insecure-deterministic``) seeds them from
the config instead, for reproducible research runs; anyone holding the config can then
regenerate every noise vector, so such runs carry NO privacy guarantee and say so.
"""

from __future__ import annotations

import secrets

import numpy as np


def os_rng() -> np.random.Generator:
    """A generator seeded from the OS, for one draw."""
    return np.random.default_rng(secrets.randbits(128))


def privacy_rng(insecure_seed: list[int] | None) -> np.random.Generator:
    """The generator for one noise vector or sample: from the OS, or (insecure
    deterministic mode only) from ``insecure_seed``."""
    return os_rng() if insecure_seed is None else np.random.default_rng(insecure_seed)
