"""Rényi-DP accounting of the FL rounds, with an ε budget enforced before a round starts.

The maths is Google's ``dp-accounting``: rounds are ``PoissonSampledDpEvent(q,
GaussianDpEvent(sigma_eff))`` composed into its ``RdpAccountant`` and converted to (ε, δ)
by its ``compute_epsilon`` (the bound of Balle et al. 2020 that Opacus uses too). This
module adds what the round loop needs on top: "what would ε be after one more round at
THIS effective noise", asked before the round starts, the noise calibration for a target
ε, and :class:`PublicSampleAccountant`, what the federation reports.

**The sample is public, so there is no amplification by subsampling.** Every round's
sample is announced on MQTT (retained, to every subscriber) and visible on the wire, so
an observer knows whether a client's data is in a round; the Poisson amplification
(q < 1) assumes it does not. The federation therefore charges each client a full
Gaussian round (q = 1) for every round its update is in, nothing for the others, and
reports the worst-off client's ε. Neighbouring datasets differ in one client's data
("zero-out": its clipped update replaced by 0; it still reports and adds its noise
share), sensitivity S.

**The weight slot** is released without noise, at no privacy cost: under DP every
client's slot is the constant 1 (``weight_cap`` scales the update, not the slot), so the
slot's sum is the number of reporters, the same on neighbouring datasets; it is published
as ``reporters`` anyway. In plaintext DP the aggregator refuses a slot other than 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from collab.extras import missing

try:
    import dp_accounting
    from dp_accounting.rdp import RdpAccountant as _GoogleRdp
    from dp_accounting.rdp import compute_epsilon
except ImportError as _e:
    raise missing(_e, __name__) from _e

from collab.errors import ConfigError, PrivacyBudgetExceeded

#: Opacus' default orders (``RDPAccountant.DEFAULT_ALPHAS``), so ε stays comparable with
#: Opacus. At integer orders, and at every order when q = 1 (the shipped configs),
#: dp-accounting's RDP is exact and equals Opacus'. At fractional orders with q < 1 it
#: sums the absolute values of the binomial series (an upper bound) and drops an order
#: whose series has not converged after 1000 terms (logging a warning), so ε there is
#: slightly larger than Opacus' (Opacus' reference case q=0.04, sigma=1.5, 2250 steps,
#: δ=1e-5: 7.329335 instead of 7.329111) — conservative, never smaller.
DEFAULT_ORDERS: tuple[float, ...] = tuple(
    [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
)


def _round(q: float, sigma: float) -> dp_accounting.DpEvent:
    return dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma))


def compute_rdp(
    *, q: float, noise_multiplier: float, steps: int, orders: Sequence[float] = DEFAULT_ORDERS
) -> np.ndarray:
    """RDP at each order of ``steps`` Poisson-subsampled Gaussian rounds."""
    acc = _GoogleRdp(orders=list(orders))
    acc.compose(_round(q, noise_multiplier), steps)
    return acc.rdp


def get_privacy_spent(
    *, orders: Sequence[float], rdp: np.ndarray, delta: float
) -> tuple[float, float]:
    """(ε, best order) at ``delta``."""
    eps, order = compute_epsilon(list(orders), list(rdp), delta)
    return float(eps), float(order)


@dataclass
class RdpAccountant:
    """Composes rounds of possibly different (q, sigma_eff) and enforces an ε budget."""

    delta: float
    epsilon_budget: float | None = None
    orders: tuple[float, ...] = DEFAULT_ORDERS
    history: list[tuple[float, float]] = field(default_factory=list)
    _acc: _GoogleRdp = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.delta < 1:
            raise ConfigError(f"delta must be in (0, 1), got {self.delta}")
        if self.epsilon_budget is not None and self.epsilon_budget <= 0:
            raise ConfigError(f"epsilon budget must be > 0, got {self.epsilon_budget}")
        self._acc = _GoogleRdp(orders=list(self.orders))
        for q, s in self.history:
            self._acc.compose(_round(q, s))

    @property
    def epsilon(self) -> float:
        return 0.0 if not self.history else float(self._acc.get_epsilon(self.delta))

    def epsilon_after(self, q: float, sigma: float, steps: int = 1) -> float:
        """ε if ``steps`` more rounds at (q, sigma) were added (nothing is recorded)."""
        rdp = self._acc.rdp + compute_rdp(
            q=q, noise_multiplier=sigma, steps=steps, orders=self.orders
        )
        return get_privacy_spent(orders=self.orders, rdp=rdp, delta=self.delta)[0]

    def check(self, q: float, sigma: float) -> float:
        """Refuse (before it starts) a round that could push ε over the budget."""
        eps = self.epsilon_after(q, sigma)
        if self.epsilon_budget is not None and eps > self.epsilon_budget:
            raise PrivacyBudgetExceeded(
                f"one more round at q={q:g}, effective sigma={sigma:.4g} would reach "
                f"epsilon={eps:.3f} > budget {self.epsilon_budget:g} (delta={self.delta:g})"
            )
        return eps

    def step(self, q: float, sigma: float) -> float:
        """Record one aggregated round at its EFFECTIVE noise multiplier; return ε."""
        self._acc.compose(_round(q, sigma))
        self.history.append((q, sigma))
        return self.epsilon


def noise_for_epsilon(
    epsilon: float,
    *,
    q: float,
    rounds: int,
    delta: float,
    worst_fraction: float = 1.0,
    rel_tol: float = 1e-4,
) -> float:
    """Smallest noise multiplier sigma (within ``rel_tol``) whose ``rounds`` rounds at sampling
    rate q stay within ``epsilon`` even when every round is accounted at the reduced
    sigma·sqrt(worst_fraction) — e.g. (min_clients - colluders)/expected, the case the round
    planner's budget check assumes — so a config calibrated with it is never refused.
    The federation accounts without amplification (:class:`PublicSampleAccountant`), so
    calibrate a federation with q = 1 and ``rounds`` = the rounds a client may be in."""
    if epsilon <= 0 or rounds < 1 or not 0 < worst_fraction <= 1:
        raise ConfigError("need epsilon > 0, rounds >= 1 and worst_fraction in (0, 1]")

    def eps(sigma: float) -> float:
        return get_privacy_spent(
            orders=DEFAULT_ORDERS,
            delta=delta,
            rdp=compute_rdp(q=q, noise_multiplier=sigma * math.sqrt(worst_fraction), steps=rounds),
        )[0]

    lo, hi = 1e-2, 1.0
    while eps(hi) > epsilon:
        lo, hi = hi, hi * 2
        if hi > 1e4:
            raise ConfigError(f"no noise multiplier reaches epsilon={epsilon} in {rounds} rounds")
    while hi - lo > rel_tol * hi:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if eps(mid) > epsilon else (lo, mid)
    return hi


@dataclass
class PublicSampleAccountant:
    """Per-client accounting when every round's sample is public (see module doc): each
    reporter composes a full Gaussian round at the round's sigma_eff; ε is the worst
    client's, and the budget refuses a round that would push ANY client over it."""

    delta: float
    epsilon_budget: float | None = None
    clients: dict[str, RdpAccountant] = field(default_factory=dict)

    def _new(self) -> RdpAccountant:
        return RdpAccountant(delta=self.delta, epsilon_budget=self.epsilon_budget)

    def _worst(self) -> RdpAccountant:
        # every client's RDP is (sum of 1/2sigma²)·alpha, so the order is the same at
        # every alpha: the worst client now is the worst after one more round too
        return max(self.clients.values(), key=lambda a: a.epsilon, default=None) or self._new()

    @property
    def epsilon(self) -> float:
        return self._worst().epsilon

    def check(self, sigma: float) -> float:
        """ε of the worst client if it is in one more round at ``sigma``; raises
        PrivacyBudgetExceeded before the round starts if that is over the budget."""
        return self._worst().check(1.0, sigma)

    def step(self, reporters: Sequence[str], sigma: float) -> float:
        """Record one aggregated round: each reporter's update was in it; return ε."""
        for c in reporters:
            self.clients.setdefault(c, self._new()).step(1.0, sigma)
        return self.epsilon
