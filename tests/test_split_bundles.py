"""Every example model yields a bundle whose pieces compose back to the full model,
re-checked here with ONNX Runtime from the written files alone (batch 1 and 3)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from collab.bundle import Bundle, load_bundle
from collab.chain import BundleSessions
from collab.models.registry import EXAMPLES, example_inputs
from collab.split.examples import example_bundle

# only these are not also built by other areas' fixtures (efficientnet: 224x224, 20 cuts)
_SLOW = {"mobilenet", "transformer", "efficientnet"}


def _bundle(name: str) -> Bundle:
    return load_bundle(example_bundle(name))


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in _SLOW else n for n in EXAMPLES]
)
def test_every_cut_composes_from_files_alone(name: str) -> None:
    b = _bundle(name)
    m = b.manifest
    assert m.model_name == name
    assert m.split_points, f"{name}: no split points"
    assert m.input_shape == EXAMPLES[name].input_shape
    assert m.input_bytes == math.prod(m.input_shape) * 4
    assert m.full_ms > 0
    assert [sp.index for sp in m.split_points] == list(range(len(m.split_points)))
    sessions = BundleSessions(b)
    for n in (1, 3):
        x, _ = example_inputs(name, n, "test")
        ref = sessions.full()(x)
        assert ref.shape == (n, *m.output_shape[1:])
        for sp in m.split_points:
            feat = sessions.head(sp.name)(x)
            assert feat.dtype == np.float32 and feat.shape == (n, *sp.feature_shape[1:]), sp.name
            assert sp.feature_bytes == math.prod(sp.feature_shape) * 4
            assert sp.head_ms > 0 and sp.tail_ms > 0
            out = sessions.tail(sp.name)(feat)
            diff = float(np.max(np.abs(out - ref)))
            assert diff <= 1e-4 * max(1.0, float(np.abs(ref).max())), f"{name}/{sp.name}: {diff}"


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in _SLOW else n for n in EXAMPLES]
)
def test_full_onnx_matches_the_pytorch_model(name: str) -> None:
    import torch

    from collab.models.examples import load_example

    b = _bundle(name)
    x, _ = example_inputs(name, 8, "train")  # inputs the export never saw
    with torch.no_grad():
        ref = load_example(name)(torch.from_numpy(x)).numpy()
    got = BundleSessions(b).full()(x)
    assert float(np.max(np.abs(got - ref))) <= 1e-4 * max(1.0, float(np.abs(ref).max()))


def test_resnet_has_a_cut_in_every_residual_stage(resnet_bundle: Path) -> None:
    names = [sp.name for sp in load_bundle(resnet_bundle).manifest.split_points]
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        assert any(n == stage or n.startswith(stage + ".") for n in names), (stage, names)
    # nothing inside a residual block: there the skip tensor crosses too
    assert not [n for n in names if n.count(".") > 1]


@pytest.mark.slow
def test_transformer_cut_between_every_pair_of_encoder_layers() -> None:
    b = _bundle("transformer")
    names = [sp.name for sp in b.manifest.split_points]
    from collab.models.examples import TinyTransformer

    layers = len(TinyTransformer().layers)
    assert layers >= 3
    for i in range(layers - 1):  # the residual stream between layer i and i + 1
        assert f"layers.{i}" in names, names


@pytest.mark.slow
def test_mobilenet_cuts_between_inverted_residual_blocks() -> None:
    names = [sp.name for sp in _bundle("mobilenet").manifest.split_points]
    assert {"features.1", "features.3", "features.5", "features.6", "features.8"} <= set(names)
    assert not [n for n in names if ".conv" in n]  # never inside a block


def test_digits_bundle_accuracy_from_onnx(digits_bundle: Path) -> None:
    b = load_bundle(digits_bundle)
    x, y = example_inputs("digits", None, "test")
    pred = BundleSessions(b).full()(x).argmax(axis=1)
    acc = float((pred == y).mean())
    assert acc >= 0.95
    assert b.manifest.extra["accuracy"]["top1"] == pytest.approx(
        acc, abs=2 / len(y)
    )  # torch vs ORT ties


def test_example_bundle_is_cached_and_repaired(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    monkeypatch.setenv("COLLAB_CACHE_DIR", str(tmp_path))
    src = example_bundle("digits")  # builds under tmp_path (fresh cache)
    assert src.parent == tmp_path / "bundles"
    assert example_bundle("digits") == src  # cached
    (src / load_bundle(src).manifest.segments[0].path).write_bytes(b"junk")
    again = example_bundle("digits")  # damaged cache is rebuilt, not served
    assert again == src
    load_bundle(again)
    shutil.rmtree(tmp_path / "bundles")
