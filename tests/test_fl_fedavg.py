"""FedAvg on non-IID digits, and the client-side pieces (split, clipping, noise shares)."""

from __future__ import annotations

import numpy as np
import pytest

from collab.fl.config import config_from_dict
from collab.fl.data import dirichlet_split
from collab.fl.simulate import simulate
from collab.fl.state import GlobalModel, average
from collab.fl.train import DPParams, clip_l2, prepare_update


def test_dirichlet_split_is_seeded_disjoint_and_non_iid() -> None:
    y = np.repeat(np.arange(10), 130)
    a = dirichlet_split(y, 10, 0.5, seed=3)
    b = dirichlet_split(y, 10, 0.5, seed=3)
    assert all(np.array_equal(x, z) for x, z in zip(a, b, strict=True))
    allidx = np.concatenate(a)
    assert len(allidx) == len(y) == len(np.unique(allidx))
    assert min(len(s) for s in a) >= 10
    # non-IID: some client's label histogram is far from uniform
    top = [np.bincount(y[s], minlength=10).max() / len(s) for s in a]
    assert max(top) > 0.3
    c = dirichlet_split(y, 10, 0.5, seed=4)
    assert not all(np.array_equal(x, z) for x, z in zip(a, c, strict=True))


def test_plain_update_is_count_weighted() -> None:
    rng = np.random.default_rng(0)
    d1, d2 = rng.normal(size=5), rng.normal(size=5)
    total = prepare_update(d1, 30, None, rng) + prepare_update(d2, 10, None, rng)
    assert np.allclose(average(total, fixed_denominator=None), (30 * d1 + 10 * d2) / 40)


def test_dp_update_is_clipped_and_carries_its_noise_share() -> None:
    rng = np.random.default_rng(0)
    big = np.full(10_000, 1.0)  # norm 100
    assert np.linalg.norm(clip_l2(big, 2.0)) == pytest.approx(2.0)
    dp = DPParams(clip=2.0, noise_multiplier=1.5, expected_clients=9.0)
    vec = prepare_update(big, 500, dp, rng)
    assert vec[-1] == 1.0  # uniform weight under DP (bounded sensitivity)
    noise = vec[:-1] - clip_l2(big, 2.0)
    assert noise.std() == pytest.approx(1.5 * 2.0 / 3.0, rel=0.03)  # sigma*S/sqrt(m)
    capped = DPParams(clip=2.0, noise_multiplier=1e-9, expected_clients=9.0, weight_cap=1000)
    assert np.linalg.norm(prepare_update(big, 500, capped, rng)[:-1]) == pytest.approx(
        1.0, rel=1e-6
    )


def test_sum_of_shares_carries_target_noise() -> None:
    rng = np.random.default_rng(1)
    dp = DPParams(clip=1.0, noise_multiplier=2.0, expected_clients=10.0)
    total = np.sum([prepare_update(np.zeros(50_000), 1, dp, rng) for _ in range(10)], axis=0)
    assert total[:-1].std() == pytest.approx(2.0, rel=0.02)  # sigma*S on the sum


def test_fedadam_moves_towards_the_average() -> None:
    g = GlobalModel(np.zeros(3, dtype=np.float32), optimizer="fedadam", lr=0.1)
    v0 = g.version
    g.apply(round_=1, base_version=v0, version="v1", avg_delta=np.array([1.0, -1.0, 0.0]))
    assert g.flat[0] > 0 > g.flat[1] and g.flat[2] == 0
    with pytest.raises(Exception, match="applies to version"):
        g.apply(round_=2, base_version=v0, version="v2", avg_delta=np.zeros(3))


@pytest.mark.slow
def test_plain_fedavg_reaches_95_percent_on_non_iid_digits() -> None:
    cfg = config_from_dict(
        {
            "rounds": 12,
            "clients": 10,
            "dirichlet_alpha": 0.5,
            "seed": 0,
            "train": {"local_epochs": 3, "lr": 0.1, "momentum": 0.9, "batch_size": 32},
        }
    )
    res = simulate(cfg, progress=False)
    accs = [float(r.accuracy or 0.0) for r in res]
    hit = next(r.round for r, a in zip(res, accs, strict=True) if a >= 0.95)
    print(f"plain FedAvg accuracy per round: {[round(a, 3) for a in accs]}; >= 95% at round {hit}")
    assert max(accs[-3:]) >= 0.95
    assert all(r.reporters == 10 for r in res)


def test_dp_plus_he_round_reports_epsilon_and_accounts_dropout() -> None:
    cfg = config_from_dict(
        {
            "rounds": 2,
            "clients": 4,
            "modes": ["dp+he"],
            "model": {"federated": ["fc2"]},
            "round": {"min_clients": 3},
            "dp": {"clip": 0.5, "noise_multiplier": 3.0, "epsilon_budget": 8.0},
        }
    )
    full = simulate(cfg, progress=False)
    dropped = simulate(cfg, progress=False, drop=1)  # one sampled client never reports
    assert [r.reporters for r in full] == [4, 4] and [r.reporters for r in dropped] == [3, 3]
    assert full[-1].sigma_eff == pytest.approx(3.0)
    assert dropped[-1].sigma_eff == pytest.approx(3.0 * (3 / 4) ** 0.5)
    eps_full, eps_dropped = full[-1].epsilon, dropped[-1].epsilon
    assert eps_full is not None and eps_dropped is not None
    assert 0 < eps_full < eps_dropped <= 8.0
    assert full[0].upload_bytes > 4 * 651 * 8  # ciphertexts, not floats
