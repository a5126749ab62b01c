"""Malformed FL configs fail with ConfigError before anything starts."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from collab.errors import ConfigError
from collab.fl.config import config_from_dict, load_config


@pytest.mark.parametrize(
    ("data", "match"),
    [
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
    ],
)
def test_malformed_configs(data: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        config_from_dict(data)


def test_valid_config_and_modes(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(
        "federation: x\nmodes: [plain, dp+he]\ndp: {noise_multiplier: 1.1, epsilon_budget: 8}\n"
        "model: {federated: [fc2]}\n"
    )
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


def test_errors_name_file_line_and_field(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("rounds: 3\ntrain:\n  lr: 0\n  epochs: 3\nhe:\n  coeff_mod_bit_sizes: [60, 10]\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    lines = str(e.value).splitlines()
    assert lines[0] == f"{p}:3: train.lr: must be > 0, got 0"
    assert lines[1].startswith(
        f"{p}:4: train.epochs: unknown key 'epochs' (allowed: local_epochs, "
    ), lines
    assert lines[2] == f"{p}:6: he.coeff_mod_bit_sizes[1]: must be >= 20, got 10"
    assert len(lines) == 3


def test_cross_field_error_names_the_field_and_its_line(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("clients: 3\nround:\n  deadline_s: 5\n  min_clients: 4\n")
    with pytest.raises(
        ConfigError, match=r"c\.yaml:4: round\.min_clients: must be <= clients \(3\), got 4"
    ):
        load_config(p)


@pytest.mark.parametrize(
    "data",
    [
        {"rounds": 3.0},
        {"rounds": True},
        {"seed": "1"},
        {"he": {"poly_modulus_degree": 8192.0}},
        {"train": {"lr": "0.1"}},
        {"train": {"lr": float("nan")}},
        {"public": {"augment": 1}},
        {"federation": 5},
        {"model": {"federated": "fc2"}},
        {"model": None},
    ],
)
def test_values_are_not_coerced(data: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        config_from_dict(data)


def test_an_integer_is_a_number() -> None:
    cfg = config_from_dict({"train": {"lr": 1}, "dp": {"epsilon_budget": 8}})
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float) and cfg.dp.epsilon_budget == 8.0


def test_configs_built_in_code_are_validated_too() -> None:
    cfg = config_from_dict({"clients": 4})
    with pytest.raises(ConfigError, match="broker"):
        dataclasses.replace(cfg, broker="tcp://x")
    with pytest.raises(ConfigError, match="min_clients"):
        dataclasses.replace(cfg, clients=1)
    assert dataclasses.replace(cfg, broker="mqtt://h:1883").broker == "mqtt://h:1883"


def test_unknown_module_is_a_config_error() -> None:
    from collab.fl.member import ModelHolder

    cfg = config_from_dict({"model": {"federated": ["decoder"]}})
    with pytest.raises(ConfigError, match="no module 'decoder'"):
        ModelHolder(cfg)


def test_cli_rejects_bad_config_before_starting(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("rounds: 3\nclients: 2\nround: {min_clients: 9}\n")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "collab.cli",
            "fl",
            "run",
            "--config",
            str(p),
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1
    assert "min_clients" in r.stderr
    assert not (tmp_path / "out").exists()  # nothing started, nothing written


def test_model_names_match_the_registry() -> None:
    from collab.fl.config import MODEL_NAMES
    from collab.fl.model import MODELS

    assert set(MODELS) == set(MODEL_NAMES)
