"""DP-FedAvg that is actually useful: public pretraining + DP fine-tuning of the classifier.

The public / private / test data must be disjoint, the noise calibration must keep the
accountant's ε within the target, and a small DP federation must learn the classifier
from PRIVATE data far above chance at ε ≤ 8 (its head starts from a random init, so the
accuracy it gains is not the public model's)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from collab.errors import ConfigError
from collab.fl import data as fldata
from collab.fl.accountant import compute_rdp, get_privacy_spent, noise_for_epsilon
from collab.fl.config import config_from_dict, load_config
from collab.fl.data import _train, member_data, private_indices, public_indices
from collab.models.datasets import _split_indices

DP_YAML = Path(__file__).resolve().parents[1] / "collab" / "fl" / "example_digits_dp.yaml"


def test_public_private_and_test_data_are_disjoint() -> None:
    cfg = load_config(DP_YAML)
    frac, seed = cfg.public.fraction, cfg.seed
    pub, priv = public_indices(frac, seed), private_indices(frac, seed)
    y = _train()[1]
    assert len(np.intersect1d(pub, priv)) == 0 and len(pub) + len(priv) == len(y)
    assert set(np.unique(y[pub])) == set(range(10))  # stratified: every class is public
    assert abs(len(pub) - frac * len(y)) <= 10
    # the clients' shards partition exactly the private part (as images: compare rows)
    xtr = _train()[0].reshape(len(y), -1)
    rows = {r.tobytes(): i for i, r in enumerate(xtr)}
    held = np.concatenate(
        [
            [rows[r.tobytes()] for r in member_data(cfg, k)[0].reshape(-1, 64)]
            for k in range(cfg.clients)
        ]
    )
    assert sorted(held.tolist()) == priv.tolist()
    # and the test split is a different set of dataset rows (collab.models.datasets)
    train_idx, test_idx = _split_indices()
    assert len(np.intersect1d(train_idx, test_idx)) == 0 and len(fldata.test_data()[1]) == len(
        test_idx
    )


def test_zero_public_fraction_keeps_the_original_split() -> None:
    from collab.fl.data import client_data

    a = client_data(3, 10, 0.5, 0)
    b = client_data(3, 10, 0.5, 0, public_fraction=0.0)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    c = client_data(3, 10, 0.5, 0, public_fraction=0.05)
    assert len(c[1]) != len(a[1]) or not np.array_equal(a[0], c[0])


@pytest.mark.parametrize(
    "bad",
    [
        {"fraction": 1.0},
        {"fraction": -0.1},
        {"epochs": 0},
        {"lr": 0},
        {"augment": "yes"},
        {"colour": 1},
    ],
)
def test_malformed_public_section(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="public"):
        config_from_dict({"public": bad})


@pytest.mark.parametrize(
    ("eps", "q", "rounds", "worst"), [(8.0, 1.0, 20, 0.9), (1.0, 1.0, 20, 0.9), (4.0, 0.3, 50, 0.8)]
)
def test_noise_calibration_is_tight_and_within_budget(
    eps: float, q: float, rounds: int, worst: float
) -> None:
    sigma = noise_for_epsilon(eps, q=q, rounds=rounds, delta=1e-5, worst_fraction=worst)

    def spent(s: float) -> float:
        return get_privacy_spent(
            orders=tuple([1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))),
            rdp=compute_rdp(q=q, noise_multiplier=s * math.sqrt(worst), steps=rounds),
            delta=1e-5,
        )[0]

    assert spent(sigma) <= eps < spent(sigma * 0.999)


def test_shipped_dp_config_is_within_its_budget() -> None:
    cfg = load_config(DP_YAML).for_mode("dp")
    assert cfg.dp.epsilon_budget is not None and cfg.dp.epsilon_budget <= 8 and cfg.dp.delta <= 1e-5
    worst = (cfg.round.min_clients - cfg.dp.assumed_colluders) / cfg.expected_clients
    rdp = compute_rdp(
        q=cfg.round.sample_rate,
        noise_multiplier=cfg.dp.noise_multiplier * math.sqrt(worst),
        steps=cfg.rounds,
    )
    from collab.fl.accountant import DEFAULT_ORDERS

    assert (
        get_privacy_spent(orders=DEFAULT_ORDERS, rdp=rdp, delta=cfg.dp.delta)[0]
        <= cfg.dp.epsilon_budget
    )
    assert cfg.public.enabled and cfg.model.federated != "all"


@pytest.fixture(scope="module")
def fresh_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private pretraining cache: pretraining really runs (once) in this module."""
    mp = pytest.MonkeyPatch()
    path = tmp_path_factory.mktemp("fl-cache")
    mp.setenv("COLLAB_CACHE_DIR", str(path))
    yield path
    mp.undo()


PUBLIC = {"fraction": 0.05, "epochs": 12}


def test_dp_fedavg_on_public_features_learns_far_above_chance(fresh_cache: Path) -> None:
    from collab.fl.member import ModelHolder
    from collab.fl.simulate import simulate

    t0 = time.perf_counter()
    rounds, clients, min_clients = 5, 40, 36
    sigma = noise_for_epsilon(
        8.0, q=1.0, rounds=rounds, delta=1e-5, worst_fraction=min_clients / clients
    )
    cfg = config_from_dict(
        {
            "clients": clients,
            "rounds": rounds,
            "seed": 0,
            "insecure_deterministic": True,  # a reproducible accuracy threshold: no privacy guarantee
            "modes": ["dp"],
            "model": {"federated": ["fc2"]},
            "public": {**PUBLIC, "reset_federated": True},
            "train": {"local_epochs": 3, "batch_size": 16, "lr": 0.1},
            "round": {"sample_rate": 1.0, "min_clients": min_clients},
            "dp": {"clip": 0.3, "noise_multiplier": sigma, "delta": 1e-5, "epsilon_budget": 8.0},
        }
    )
    xt, yt = fldata.test_data()
    start = ModelHolder(cfg).evaluate(xt, yt)
    res = simulate(cfg, progress=False)
    accs = [float(r.accuracy or 0.0) for r in res]
    eps = res[-1].epsilon
    print(
        f"sigma={sigma:.3f} start={start:.3f} accuracy per round={[round(a, 3) for a in accs]} "
        f"epsilon={eps} ({time.perf_counter() - t0:.1f}s)"
    )
    # the classifier starts from its seeded random init; what it gains is learnt from
    # the clients' private data under DP
    assert accs[-1] >= start + 0.1
    assert len(res) == rounds and all(r.reporters == clients for r in res)
    assert eps is not None and eps <= 8.0
    assert accs[-1] >= 0.7  # chance is 0.1


def test_fl_run_in_process_writes_results(fresh_cache: Path, tmp_path: Path) -> None:
    from collab.fl.local import run_local

    cfg = config_from_dict(
        {
            "clients": 6,
            "rounds": 2,
            "modes": ["plain", "dp"],
            "out": str(tmp_path / "out"),
            "model": {"federated": ["fc2"]},
            "public": PUBLIC,
            "round": {"min_clients": 5},
            "dp": {"clip": 0.3, "noise_multiplier": 2.0, "epsilon_budget": 8.0},
        }
    )
    res = run_local(cfg, progress=False, in_process=True)
    assert [len(res["plain"]), len(res["dp"])] == [2, 2]
    assert res["plain"][-1].epsilon is None and 0 < (res["dp"][-1].epsilon or 0) <= 8
    assert res["plain"][0].accuracy > 0.5  # starts from the public model, not from chance
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert set(summary) == {"plain", "dp"}
    assert (tmp_path / "out" / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
