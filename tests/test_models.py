"""Example models, their data, and the committed digits weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from collab.cli import main
from collab.errors import ConfigError
from collab.models import datasets
from collab.models.examples import digits_cnn, load_example, resnet18_style, tiny_transformer
from collab.models.registry import EXAMPLES, example_input, example_inputs
from collab.models.train import accuracy


def test_digits_split_is_fixed_disjoint_and_stratified() -> None:
    xtr, ytr = datasets.digits("train")
    xte, yte = datasets.digits("test")
    assert xtr.shape == (1347, 1, 8, 8) and xte.shape == (450, 1, 8, 8)
    assert xtr.dtype == np.float32 and ytr.dtype == np.int64
    assert xtr.min() >= 0.0 and xtr.max() <= 1.0
    tr, te = datasets._split_indices()
    assert not set(tr) & set(te) and len(tr) + len(te) == 1797
    assert np.bincount(yte).min() >= 40  # every class in the test set
    assert int(te[:5].sum()) == int(datasets._split_indices()[1][:5].sum())
    with pytest.raises(ConfigError):
        datasets.digits("validation")  # type: ignore[arg-type]


def test_committed_weights_reach_95_percent() -> None:
    x, y = datasets.digits("test")
    acc = accuracy(digits_cnn(pretrained=True), x, y)
    assert acc >= 0.95, acc


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_example_inputs_match_the_registry(name: str) -> None:
    x = example_input(name, 3)
    assert x.dtype == np.float32 and x.shape == (3, *EXAMPLES[name].input_shape[1:])
    xs, ys = example_inputs(name, 7, "train")
    assert xs.shape[0] == ys.shape[0] == 7
    assert np.array_equal(ys, datasets.digits("train")[1][:7])


def test_seeded_models_are_deterministic_and_in_eval_mode() -> None:
    x = torch.from_numpy(example_input("resnet", 4))
    a, b = resnet18_style(), resnet18_style()
    assert not a.training
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
    t = tiny_transformer()
    assert len(t.layers) >= 3
    with torch.no_grad():
        assert torch.equal(t(torch.from_numpy(example_input("transformer", 2))), tiny_transformer()(torch.from_numpy(example_input("transformer", 2))))
    # seeding must not disturb the caller's RNG
    torch.manual_seed(7)
    r1 = torch.rand(1)
    torch.manual_seed(7)
    load_example("transformer")
    assert torch.equal(torch.rand(1), r1)


def test_train_example_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "w.pt"
    assert main(["train-example", "digits", "--out", str(out), "--epochs", "2"]) == 0
    assert "test accuracy" in capsys.readouterr().out
    m = digits_cnn(pretrained=False)
    m.load_state_dict(torch.load(out, weights_only=True))
    x, y = datasets.digits("test")
    assert accuracy(m, x, y) > 0.5  # two epochs already learn something real
