"""The one-sided tests a canary is judged by, and the Holm correction across them.

Written out here (numpy only) because scipy is not a dependency of the coordinator; the
tests check them against scipy. Every test's alternative is "the candidate is worse",
so a small p-value is evidence of a regression and nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def mann_whitney_greater(
    x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray
) -> tuple[float, float]:
    """Mann-Whitney U of ``x`` against ``y``, alternative "x is stochastically greater":
    (U of x, p-value) by the normal approximation with tie correction and continuity
    correction (what ``scipy.stats.mannwhitneyu(x, y, alternative="greater",
    method="asymptotic")`` computes)."""
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        return 0.0, 1.0
    both = np.concatenate([np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)])
    order = np.argsort(both, kind="mergesort")
    ranks = np.empty(len(both), dtype=np.float64)
    sorted_vals = both[order]
    # average ranks of tied groups
    _, first, counts = np.unique(sorted_vals, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0  # 1-based average rank of each group
    ranks[order] = np.repeat(avg, counts)
    u1 = float(ranks[:n1].sum() - n1 * (n1 + 1) / 2.0)
    n = n1 + n2
    tie = float((counts**3 - counts).sum())
    var = n1 * n2 / 12.0 * ((n + 1) - tie / (n * (n - 1))) if n > 1 else 0.0
    if var <= 0:
        return u1, 1.0  # every value equal: no evidence either way
    z = (u1 - n1 * n2 / 2.0 - 0.5) / math.sqrt(var)
    return u1, normal_sf(z)


def binomial_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p) (exact, summed in log space)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    lp, lq = math.log(p), math.log1p(-p)
    terms = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq
        for i in range(k, n + 1)
    ]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def two_proportion_greater(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float]:
    """Pooled two-proportion z-test, alternative "rate 1 > rate 2": (z, p-value)."""
    if n1 == 0 or n2 == 0:
        return 0.0, 1.0
    pooled = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 0.0, 1.0  # no event in either group (or only events): no evidence
    z = (k1 / n1 - k2 / n2) / se
    return z, normal_sf(z)


def holm(pvalues: Mapping[str, float], alpha: float) -> dict[str, bool]:
    """Holm's step-down correction: which hypotheses are rejected at family-wise ``alpha``."""
    order = sorted(pvalues, key=lambda k: (pvalues[k], k))
    m = len(order)
    out = dict.fromkeys(order, False)
    for i, name in enumerate(order):
        if pvalues[name] > alpha / (m - i):
            break
        out[name] = True
    return out
