"""Rényi-DP accountant for the Poisson-subsampled Gaussian mechanism.

The RDP bound follows Mironov et al. 2019 ("Rényi Differential Privacy of the Sampled
Gaussian Mechanism"), computed exactly as Opacus' ``analysis/rdp.py`` does (integer
orders by a log-binomial sum, fractional orders by the two-sided erfc series), and
converted to (ε, δ) with the tighter bound of Balle et al. 2020 that current Opacus
uses. It lives in the project (≈100 lines) so the FL round loop can ask "what would ε
be after one more round at THIS effective noise" before the round starts.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from collab.extras import missing

try:
    from scipy import special
except ImportError as _e:
    raise missing(_e, __name__) from _e

from collab.errors import ConfigError, PrivacyBudgetExceeded

#: Opacus' default orders (``RDPAccountant.DEFAULT_ALPHAS``).
DEFAULT_ORDERS: tuple[float, ...] = tuple([1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)))


def _log_add(logx: float, logy: float) -> float:
    a, b = min(logx, logy), max(logx, logy)
    if a == -np.inf:
        return b
    return math.log1p(math.exp(a - b)) + b


def _log_sub(logx: float, logy: float) -> float:
    if logx < logy:
        raise ValueError("the result of subtraction must be non-negative")
    if logy == -np.inf:
        return logx
    if logx == logy:
        return -np.inf
    try:
        return math.log(math.expm1(logx - logy)) + logy
    except OverflowError:
        return logx


def _log_erfc(x: float) -> float:
    return math.log(2) + float(special.log_ndtr(-x * 2**0.5))


def _log_a_int(q: float, sigma: float, alpha: int) -> float:
    log_a = -np.inf
    for i in range(alpha + 1):
        log_coef_i = (math.log(special.binom(alpha, i)) + i * math.log(q)
                      + (alpha - i) * math.log(1 - q))
        log_a = _log_add(log_a, log_coef_i + (i * i - i) / (2 * sigma**2))
    return float(log_a)


def _log_a_frac(q: float, sigma: float, alpha: float) -> float:
    log_a0, log_a1 = -np.inf, -np.inf
    i = 0
    z0 = sigma**2 * math.log(1 / q - 1) + 0.5
    while True:
        coef = special.binom(alpha, i)
        log_coef = math.log(abs(coef))
        j = alpha - i
        log_t0 = log_coef + i * math.log(q) + j * math.log(1 - q)
        log_t1 = log_coef + j * math.log(q) + i * math.log(1 - q)
        log_e0 = math.log(0.5) + _log_erfc((i - z0) / (math.sqrt(2) * sigma))
        log_e1 = math.log(0.5) + _log_erfc((z0 - j) / (math.sqrt(2) * sigma))
        log_s0 = log_t0 + (i * i - i) / (2 * sigma**2) + log_e0
        log_s1 = log_t1 + (j * j - j) / (2 * sigma**2) + log_e1
        if coef > 0:
            log_a0 = _log_add(log_a0, log_s0)
            log_a1 = _log_add(log_a1, log_s1)
        else:
            log_a0 = _log_sub(log_a0, log_s0)
            log_a1 = _log_sub(log_a1, log_s1)
        i += 1
        if max(log_s0, log_s1) < -30:
            break
    return _log_add(log_a0, log_a1)


@functools.lru_cache(maxsize=65536)
def rdp_step(q: float, sigma: float, alpha: float) -> float:
    """RDP at order ``alpha`` of one Poisson-subsampled Gaussian step."""
    if q == 0:
        return 0.0
    if sigma == 0:
        return math.inf
    if q == 1.0:
        return alpha / (2 * sigma**2)
    if math.isinf(alpha):
        return math.inf
    log_a = _log_a_int(q, sigma, int(alpha)) if float(alpha).is_integer() else _log_a_frac(q, sigma, alpha)
    return log_a / (alpha - 1)


def compute_rdp(*, q: float, noise_multiplier: float, steps: int,
                orders: Sequence[float] = DEFAULT_ORDERS) -> np.ndarray:
    return np.array([rdp_step(q, noise_multiplier, a) for a in orders]) * steps


def get_privacy_spent(*, orders: Sequence[float], rdp: np.ndarray, delta: float) -> tuple[float, float]:
    """(ε, best order): eps = rdp - (log δ + log alpha)/(alpha-1) + log((alpha-1)/alpha), minimised over alpha."""
    orders_vec = np.atleast_1d(np.asarray(orders, dtype=float))
    rdp_vec = np.atleast_1d(rdp)
    with np.errstate(invalid="ignore", divide="ignore"):
        eps = (rdp_vec - (np.log(delta) + np.log(orders_vec)) / (orders_vec - 1)
               + np.log((orders_vec - 1) / orders_vec))
    if np.isnan(eps).all():
        return math.inf, math.nan
    idx = int(np.nanargmin(eps))
    return float(eps[idx]), float(orders_vec[idx])


@dataclass
class RdpAccountant:
    """Composes rounds of possibly different (q, sigma_eff) and enforces an ε budget."""

    delta: float
    epsilon_budget: float | None = None
    orders: tuple[float, ...] = DEFAULT_ORDERS
    history: list[tuple[float, float]] = field(default_factory=list)
    _rdp: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.delta < 1:
            raise ConfigError(f"delta must be in (0, 1), got {self.delta}")
        if self.epsilon_budget is not None and self.epsilon_budget <= 0:
            raise ConfigError(f"epsilon budget must be > 0, got {self.epsilon_budget}")
        self._rdp = np.zeros(len(self.orders))
        for q, s in list(self.history):
            self._rdp += compute_rdp(q=q, noise_multiplier=s, steps=1, orders=self.orders)

    def _eps(self, rdp: np.ndarray) -> float:
        return get_privacy_spent(orders=self.orders, rdp=rdp, delta=self.delta)[0]

    @property
    def epsilon(self) -> float:
        return 0.0 if not self.history else self._eps(self._rdp)

    def epsilon_after(self, q: float, sigma: float, steps: int = 1) -> float:
        """ε if ``steps`` more rounds at (q, sigma) were added (nothing is recorded)."""
        return self._eps(self._rdp + compute_rdp(q=q, noise_multiplier=sigma, steps=steps,
                                                 orders=self.orders))

    def check(self, q: float, sigma: float) -> float:
        """Refuse (before it starts) a round that could push ε over the budget."""
        eps = self.epsilon_after(q, sigma)
        if self.epsilon_budget is not None and eps > self.epsilon_budget:
            raise PrivacyBudgetExceeded(
                f"one more round at q={q:g}, effective sigma={sigma:.4g} would reach "
                f"epsilon={eps:.3f} > budget {self.epsilon_budget:g} (delta={self.delta:g})")
        return eps

    def step(self, q: float, sigma: float) -> float:
        """Record one aggregated round at its EFFECTIVE noise multiplier; return ε."""
        self._rdp = self._rdp + compute_rdp(q=q, noise_multiplier=sigma, steps=1, orders=self.orders)
        self.history.append((q, sigma))
        return self.epsilon


def noise_for_epsilon(epsilon: float, *, q: float, rounds: int, delta: float,
                      worst_fraction: float = 1.0, rel_tol: float = 1e-4) -> float:
    """Smallest noise multiplier sigma (within ``rel_tol``) whose ``rounds`` rounds at sampling
    rate q stay within ``epsilon`` even when every round is accounted at the reduced
    sigma·sqrt(worst_fraction) — e.g. (min_clients - colluders)/expected, the case the round
    planner's budget check assumes — so a config calibrated with it is never refused."""
    if epsilon <= 0 or rounds < 1 or not 0 < worst_fraction <= 1:
        raise ConfigError("need epsilon > 0, rounds >= 1 and worst_fraction in (0, 1]")

    def eps(sigma: float) -> float:
        return get_privacy_spent(orders=DEFAULT_ORDERS, delta=delta,
                                 rdp=compute_rdp(q=q, noise_multiplier=sigma * math.sqrt(worst_fraction),
                                                 steps=rounds))[0]

    lo, hi = 1e-2, 1.0
    while eps(hi) > epsilon:
        lo, hi = hi, hi * 2
        if hi > 1e4:
            raise ConfigError(f"no noise multiplier reaches epsilon={epsilon} in {rounds} rounds")
    while hi - lo > rel_tol * hi:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if eps(mid) > epsilon else (lo, mid)
    return hi
