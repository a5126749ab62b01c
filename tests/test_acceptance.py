"""The scenario's agreement check is a one-sided exact binomial test: k disagreements of n
fail only when so many are unlikely (< 5 %) at the budget's rate."""

from __future__ import annotations

import pytest
from scipy.stats import binom

from collab.scenario.report import SIGNIFICANCE, agreement_floor


@pytest.mark.parametrize("n", [1, 40, 64, 204, 1000])
@pytest.mark.parametrize("budget", [0.0, 0.005, 0.01, 0.05])
def test_the_floor_is_the_largest_count_the_budget_explains(n: int, budget: float) -> None:
    allowed = round((1 - agreement_floor(n, budget)) * n)  # disagreements that still pass
    assert binom.sf(allowed - 1, n, budget) >= SIGNIFICANCE or allowed == 0  # P(X >= allowed)
    assert binom.sf(allowed, n, budget) < SIGNIFICANCE or allowed == n  # P(X >= allowed + 1)


def test_one_disagreement_in_64_is_within_a_budget_of_one_percent() -> None:
    assert agreement_floor(64, 0.01) == pytest.approx(1 - 2 / 64)  # 0, 1 or 2 pass; 3 fail
    assert agreement_floor(64, 0.0) == 1.0  # a zero budget allows no disagreement at all
    assert agreement_floor(0, 0.01) == 1.0
