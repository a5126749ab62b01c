"""Round planning shared by the networked aggregator and the in-process simulation:
Poisson client sampling (randomness from the OS), the DP budget check BEFORE a round
starts, and accounting of the round actually aggregated at its effective noise (per
client, without amplification: the sample is public, see collab.fl.accountant)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from collab.fl import pack
from collab.fl.accountant import PublicSampleAccountant
from collab.fl.config import FLConfig
from collab.fl.member import dp_params
from collab.fl.randomness import os_rng
from collab.fl.round_sum import Aggregate, RoundSpec
from collab.fl.train import upload_norm_bound
from collab.log import logger


def effective_noise(sigma: float, reporters: int, expected: float, colluders: int = 0) -> float:
    """sigma of the SUM's noise in units of S: r honest shares of variance sigma²S²/m each.

    Dropout (r < m) shrinks it by sqrt(r/m); colluding reporters know (and can subtract)
    their own shares, so they are not counted."""
    honest = max(reporters - colluders, 0)
    return sigma * math.sqrt(honest / expected)


@dataclass
class RoundPlanner:
    cfg: FLConfig
    base_num_values: int
    context_id: str = ""
    accountant: PublicSampleAccountant | None = None
    _round: int = 0

    def __post_init__(self) -> None:
        self._insecure_rng = None
        if self.cfg.insecure_deterministic:
            self._insecure_rng = np.random.default_rng(self.cfg.seed + 7919)
            logger.warning("%s: %s", self.cfg.federation, self.cfg.privacy_note)
        self.packing = pack.for_config(self.cfg)
        if self.cfg.dp_enabled and self.accountant is None:
            self.accountant = PublicSampleAccountant(
                delta=self.cfg.dp.delta, epsilon_budget=self.cfg.dp.epsilon_budget
            )

    @property
    def round(self) -> int:
        """The latest round planned (0 before the first)."""
        return self._round

    @property
    def encoding(self) -> str:
        return "ckks" if self.cfg.he_enabled else "f32"

    def sample(self, roster: Sequence[str]) -> tuple[str, ...]:
        """Poisson sampling: each client independently with probability q, from a
        generator seeded by the OS for this round (the config's seed only in insecure
        deterministic mode)."""
        q = self.cfg.round.sample_rate
        if q >= 1.0:
            return tuple(sorted(roster))
        keep = (self._insecure_rng or os_rng()).random(len(roster)) < q
        return tuple(c for c, k in zip(sorted(roster), keep, strict=True) if k)

    def check_budget(self) -> float | None:
        """ε after one more round in the WORST accepted case (min_clients reporters);
        raises PrivacyBudgetExceeded before anything is announced."""
        if self.accountant is None:
            return None
        dp = self.cfg.dp
        worst = effective_noise(
            dp.noise_multiplier,
            self.cfg.round.min_clients,
            self.cfg.expected_clients,
            dp.assumed_colluders,
        )
        return self.accountant.check(worst)

    def next_spec(
        self, base_version: str, sampled: Sequence[str], *, max_examples: int = 1
    ) -> RoundSpec:
        """The next round's spec; ``max_examples``: the largest example count among the
        sampled clients (plain FedAvg pre-weights updates by it; scales a packed round's
        clip). A packed federation refuses a round sampling more clients than it sums."""
        packing = None
        if self.packing is not None:
            weight = 1 if self.cfg.dp_enabled else max_examples
            packing = pack.for_round(self.packing, len(sampled), weight)
        self._round += 1
        return RoundSpec(
            federation=self.cfg.federation,
            round=self._round,
            base_version=base_version,
            sampled=tuple(sampled),
            encoding=self.encoding,
            context_id=self.context_id,
            num_values=self.base_num_values + 1,
            min_clients=self.cfg.round.min_clients,
            fixed_denominator=self.cfg.expected_clients if self.cfg.dp_enabled else 0.0,
            update_norm_bound=self._update_norm_bound(),
            packing=packing,
        )

    def _update_norm_bound(self) -> float:
        """Plaintext DP only: under HE the aggregator sees ciphertexts and cannot check."""
        dp = dp_params(self.cfg)
        if dp is None or self.cfg.he_enabled:
            return 0.0
        return upload_norm_bound(dp, self.base_num_values)

    def account(self, agg: Aggregate) -> tuple[float | None, float | None]:
        """Record the aggregated round at its effective sigma; return (ε, sigma_eff)."""
        if self.accountant is None:
            return None, None
        dp = self.cfg.dp
        s_eff = effective_noise(
            dp.noise_multiplier, len(agg.reporters), self.cfg.expected_clients, dp.assumed_colluders
        )
        if s_eff <= 0:
            return math.inf, 0.0
        return self.accountant.step(agg.reporters, s_eff), s_eff
