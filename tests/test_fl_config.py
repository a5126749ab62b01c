"""Malformed FL configs fail with ConfigError before anything starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from collab.errors import ConfigError
from collab.fl.config import config_from_dict, load_config


@pytest.mark.parametrize(("data", "match"), [
    ({"rounds": 0}, "rounds"),
    ({"rounds": "ten"}, "rounds"),
    ({"clients": 3, "round": {"min_clients": 5}}, "min_clients"),
    ({"modes": ["plain", "magic"]}, "modes"),
    ({"modes": []}, "modes"),
    ({"bogus": 1}, "unknown key"),
    ({"train": {"lr": -1}}, "train.lr"),
    ({"train": {"epochs": 3}}, "unknown key"),
    ({"round": {"sample_rate": 1.5}}, "sample_rate"),
    ({"dp": {"delta": 2}}, "delta"),
    ({"dp": {"noise_multiplier": 0}}, "noise_multiplier"),
    ({"he": {"poly_modulus_degree": 1000}}, "poly_modulus_degree"),
    ({"he": {"coeff_mod_bit_sizes": [60]}}, "coeff_mod_bit_sizes"),
    ({"he": {"encryption": "rot13"}}, "encryption"),
    ({"model": {"name": "resnet9000"}}, "model.name"),
    ({"model": {"federated": []}}, "federated"),
    ({"server": {"optimizer": "sgd"}}, "optimizer"),
    ({"federation": "a/b"}, "federation"),
    ({"broker": "tcp://x"}, "broker"),
    ({"simulate": {"upload_delay_s": True}}, "upload_delay_s"),
    (["not", "a", "mapping"], "mapping"),
])
def test_malformed_configs(data: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        config_from_dict(data)


def test_valid_config_and_modes(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("federation: x\nmodes: [plain, dp+he]\ndp: {noise_multiplier: 1.1, epsilon_budget: 8}\n"
                 "model: {federated: [fc2]}\n")
    cfg = load_config(p)
    plain, dphe = cfg.for_mode("plain"), cfg.for_mode("dp+he")
    assert not plain.dp_enabled and not plain.he_enabled
    assert dphe.dp_enabled and dphe.he_enabled and dphe.federation == "x-dp-he"


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("rounds: [1,\n")
    with pytest.raises(ConfigError, match="YAML"):
        load_config(p)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_unknown_module_is_a_config_error() -> None:
    from collab.fl.member import ModelHolder

    cfg = config_from_dict({"model": {"federated": ["decoder"]}})
    with pytest.raises(ConfigError, match="no module 'decoder'"):
        ModelHolder(cfg)


def test_cli_rejects_bad_config_before_starting(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("rounds: 3\nclients: 2\nround: {min_clients: 9}\n")
    r = subprocess.run([sys.executable, "-m", "collab.cli", "fl", "run", "--config", str(p),
                        "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "min_clients" in r.stderr
    assert not (tmp_path / "out").exists()  # nothing started, nothing written


def test_model_names_match_the_registry() -> None:
    from collab.fl.config import MODEL_NAMES
    from collab.fl.model import MODELS

    assert set(MODELS) == set(MODEL_NAMES)
