"""Example models, their data, and the committed trained weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from collab.cli import main
from collab.errors import ConfigError
from collab.models import datasets
from collab.models.examples import (
    digits_cnn,
    load_example,
    mobilenetv2_style,
    resnet18_style,
    tiny_transformer,
)
from collab.models.registry import EXAMPLES, example_input, example_inputs, spec, weights_path
from collab.models.train import RECIPES, ExampleTrainingConfig, accuracy, recipe

DIGITS = [n for n, s in EXAMPLES.items() if s.dataset == "digits"]  # trained here, labelled
# Test accuracy the committed weights must reach (the trained runs report more; see docs).
THRESHOLDS = {"digits": 0.95, "resnet": 0.95, "mobilenet": 0.95, "transformer": 0.95}


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


@pytest.mark.parametrize("name", DIGITS)
def test_committed_weights_reach_their_accuracy(name: str) -> None:
    assert spec(name).trained and name in RECIPES
    path = weights_path(name)
    assert path.is_file() and path.stat().st_size < 4_000_000  # keep the repo small
    x, y = example_inputs(name, None, "test")
    acc = accuracy(load_example(name), x, y)
    assert acc >= THRESHOLDS[name], acc


@pytest.mark.parametrize("name", DIGITS)
def test_training_transform_matches_the_dataset(name: str) -> None:
    """Training augments 8x8 digits and then applies ``from_digits``: it must be exactly
    the transform behind the model's evaluation inputs."""
    digits_x, _ = datasets.digits("test")
    x, _ = spec(name).inputs("test", None)
    to_input = spec(name).from_digits
    assert to_input is not None and np.array_equal(to_input(digits_x), x)


@pytest.mark.parametrize("name", DIGITS)
def test_example_inputs_match_the_registry(name: str) -> None:
    x = example_input(name, 3)
    assert x.dtype == np.float32 and x.shape == (3, *EXAMPLES[name].input_shape[1:])
    xs, ys = example_inputs(name, 7, "train")
    assert xs.shape[0] == ys.shape[0] == 7
    assert np.array_equal(ys, datasets.digits("train")[1][:7])


def test_seeded_models_are_deterministic_and_in_eval_mode() -> None:
    x = torch.from_numpy(example_input("resnet", 4))
    a, b = resnet18_style(pretrained=False), resnet18_style(pretrained=False)
    assert not a.training
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
        assert not torch.equal(a(x), resnet18_style()(x))  # the default is the trained model
    xt = torch.from_numpy(example_input("transformer", 2))
    t = tiny_transformer(pretrained=False)
    assert len(t.layers) >= 3
    with torch.no_grad():
        assert torch.equal(t(xt), tiny_transformer(pretrained=False)(xt))
    m = mobilenetv2_style(pretrained=False)
    assert all(bn.momentum == 0.1 for bn in m.modules() if isinstance(bn, torch.nn.BatchNorm2d))
    # seeding must not disturb the caller's RNG
    torch.manual_seed(7)
    r1 = torch.rand(1)
    torch.manual_seed(7)
    load_example("transformer")
    load_example("resnet", pretrained=False)
    assert torch.equal(torch.rand(1), r1)


def test_recipes_reject_bad_values() -> None:
    assert recipe("resnet", epochs=1).epochs == 1
    with pytest.raises(ConfigError):
        recipe("resnet", epochs=0)
    with pytest.raises(ConfigError):
        recipe("nope")
    with pytest.raises(ConfigError):
        ExampleTrainingConfig(threads=0)


def test_train_example_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "w.pt"
    assert main(["train-example", "digits", "--out", str(out), "--epochs", "2"]) == 0
    assert "test accuracy" in capsys.readouterr().out
    m = digits_cnn(pretrained=False)
    m.load_state_dict(torch.load(out, weights_only=True))
    x, y = datasets.digits("test")
    assert accuracy(m, x, y) > 0.5  # two epochs already learn something real


def test_train_example_cli_transformer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.pt"
    assert main(["train-example", "transformer", "--out", str(out), "--epochs", "10"]) == 0
    assert "transformer: test accuracy" in capsys.readouterr().out
    m = tiny_transformer(pretrained=False)
    m.load_state_dict(torch.load(out, weights_only=True))
    x, y = example_inputs("transformer", None, "test")
    assert accuracy(m, x, y) > 0.3  # chance is 0.1
    assert main(["train-example", "transformer", "--out", str(out), "--epochs", "0"]) == 1


def test_the_natural_image_example_has_camera_images_and_no_labels() -> None:
    from collab.codec.image import preprocess
    from collab.models.efficientnet import MEAN, STD
    from collab.models.registry import (
        LITE0_PREPROCESSING,
        NATURAL_N,
        example_images,
        labelled_inputs,
    )

    s = spec("efficientnet")
    assert s.dataset == "natural_images" and not s.trained and s.from_digits is None
    assert s.preprocessing == LITE0_PREPROCESSING and (
        s.preprocessing.mean,
        s.preprocessing.std,
    ) == (MEAN, STD)
    x, y = example_inputs("efficientnet", 3, "test")
    assert y is None and x.dtype == np.float32 and x.shape == (3, 3, 224, 224)
    imgs = example_images("efficientnet", 3, "test")
    assert imgs.dtype == np.uint8 and imgs.shape == (3, 224, 224, 3)
    assert np.array_equal(preprocess(imgs, LITE0_PREPROCESSING), x)
    assert not np.array_equal(example_images("efficientnet", 3, "train"), imgs)
    assert NATURAL_N >= 400
    with pytest.raises(ConfigError, match="no labels"):
        labelled_inputs("efficientnet", 2)
    with pytest.raises(ConfigError, match="no camera images"):
        example_images("digits", 2)
