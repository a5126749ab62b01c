"""Bundle format v2: every weight in one segment file, heads/tails/full as chains of
shared segment sessions, v1 bundles refused with the command that rebuilds them."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from collab.bundle import MANIFEST, SELF_HASH, load_bundle, manifest_from_dict, manifest_to_dict
from collab.chain import BundleSessions
from collab.errors import BundleError
from collab.models.registry import example_inputs
from tests.helpers.manifests import write_self_checksummed


@pytest.fixture
def bundle_copy(digits_bundle: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "b"
    shutil.copytree(digits_bundle, dst)
    return dst


def test_heads_and_tails_partition_the_segments(digits_bundle: Path) -> None:
    m = load_bundle(digits_bundle).manifest
    assert m.schema_version == 2 and len(m.segments) == len(m.split_points) + 1
    for sp in m.split_points:
        assert m.head_paths(sp.name) + m.tail_paths(sp.name) == m.full_paths()
        assert len(m.head_paths(sp.name)) == sp.boundary == sp.index + 1
        assert m.segments[sp.boundary].input_shape == sp.feature_shape
        assert sp.head_ms + sp.tail_ms == pytest.approx(m.full_ms, abs=1e-3)
    onnx_files = {p for p in m.files if p.endswith(".onnx")}
    assert onnx_files == set(m.full_paths())  # no other copy of any weight


def test_chains_share_one_session_per_segment(digits_bundle: Path) -> None:
    b = load_bundle(digits_bundle)
    sessions = BundleSessions(b)
    x, _ = example_inputs("digits", 4, "test")
    ref = sessions.full()(x)
    for sp in b.manifest.split_points:
        y = sessions.tail(sp.name)(sessions.head(sp.name)(x))
        np.testing.assert_array_equal(y, ref)  # the same sessions, so the same numbers
    assert sessions.loaded() == set(b.manifest.full_paths())


def test_v1_manifest_is_refused_with_the_rebuild_command(bundle_copy: Path) -> None:
    d = json.loads((bundle_copy / MANIFEST).read_text())
    d.pop(SELF_HASH)
    first = d["segments"][0]["path"]
    d = {k: v for k, v in d.items() if k != "segments"}
    d["schema_version"], d["full"] = 1, first
    for sp in d["split_points"]:
        sp.pop("boundary")
        sp["head"], sp["tail"] = first, first
    write_self_checksummed(bundle_copy, d)
    with pytest.raises(BundleError, match="schema 1") as e:
        load_bundle(bundle_copy)
    msg = str(e.value)
    assert "collab split collab.models.examples:digits_cnn --input-shape 1,1,8,8 --out" in msg, msg


def test_a_split_point_outside_the_segments_is_malformed(digits_bundle: Path) -> None:
    m = load_bundle(digits_bundle).manifest
    bad = dataclasses.replace(m.split_points[0], boundary=len(m.segments))
    d = manifest_to_dict(dataclasses.replace(m, split_points=(bad,)))
    with pytest.raises(BundleError, match="boundary"):
        manifest_from_dict(d)


def test_tampered_segment_is_refused_naming_the_file(bundle_copy: Path) -> None:
    seg = load_bundle(bundle_copy).manifest.segments[2].path
    data = bytearray((bundle_copy / seg).read_bytes())
    data[len(data) // 2] ^= 0x01
    (bundle_copy / seg).write_bytes(bytes(data))
    with pytest.raises(BundleError, match=f"file {seg} was modified"):
        load_bundle(bundle_copy)


def test_segment_changed_after_loading_never_runs(bundle_copy: Path) -> None:
    """Sessions are built from the bytes checked against the manifest at that moment."""
    b = load_bundle(bundle_copy)
    seg = b.manifest.segments[-1].path
    (bundle_copy / seg).write_bytes((bundle_copy / seg).read_bytes() + b"\0")
    sessions = BundleSessions(b)
    sessions.head(b.manifest.split_points[0].name)  # untouched segments still load
    with pytest.raises(BundleError, match=f"file {seg} was modified"):
        sessions.full()


@pytest.mark.slow
def test_efficientnet_bundle_holds_its_weights_once_and_every_cut_composes(tmp_path: Path) -> None:
    """The real model: 20 block cuts. v1 stored 19.7x the model; v2 about 1.0x."""
    import torch

    from collab.models.efficientnet import MEAN, STD, efficientnet_lite0
    from collab.models.images import natural_images, normalize
    from collab.split import split_model
    from collab.split.export import export_onnx

    model = efficientnet_lite0().eval()
    x = normalize(natural_images("train", 3), MEAN, STD)
    export_onnx(
        model,
        torch.from_numpy(x[:1]),
        tmp_path / "model.onnx",
        input_name="input",
        output_name="output",
        opset=17,
    )
    b = split_model(model, x, tmp_path / "b", name="efficientnet_lite0", runs=2, progress=False)
    m = b.manifest
    assert len(m.split_points) == 20 and not m.extra["refused"]
    on_disk = sum(p.stat().st_size for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert on_disk <= 1.3 * (tmp_path / "model.onnx").stat().st_size
    sessions = BundleSessions(b)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    ref = sessions.full()(x)
    scale = max(1.0, float(np.abs(ref).max()))
    assert float(np.abs(ref - want).max()) <= 1e-4 * scale
    for sp in m.split_points:
        y = sessions.tail(sp.name)(sessions.head(sp.name)(x))
        assert float(np.abs(y - ref).max()) <= 1e-4 * scale, sp.name


def test_a_composed_chain_is_one_model_computing_the_same(digits_bundle: Path) -> None:
    """What variants are quantized from: the head (or full model) as one ONNX graph."""
    import onnx

    from collab.ort import make_session, run
    from collab.split.compose import compose

    b = load_bundle(digits_bundle)
    m, sessions = b.manifest, BundleSessions(b)
    sp = m.split_points[len(m.split_points) // 2]
    x, _ = example_inputs("digits", 5, "test")
    for paths, chain in (
        (m.full_paths(), sessions.full()),
        (m.head_paths(sp.name), sessions.head(sp.name)),
    ):
        model = compose(b, paths)
        onnx.checker.check_model(model)
        assert len({o.domain for o in model.opset_import}) == len(model.opset_import) == 1
        assert len(model.graph.input) == len(model.graph.output) == 1
        np.testing.assert_allclose(
            run(make_session(model.SerializeToString()), x), chain(x), rtol=1e-5, atol=1e-5
        )


def test_kept_segment_bytes_are_the_verified_ones_handed_over_once(bundle_copy: Path) -> None:
    b = load_bundle(bundle_copy, keep_segments=True)
    seg = b.manifest.segments[0].path
    original = (bundle_copy / seg).read_bytes()
    (bundle_copy / seg).write_bytes(original + b"\0")  # changed after loading
    assert b.read_verified(seg) == original  # what was verified, not what is on disk now
    with pytest.raises(BundleError, match=f"file {seg} was modified"):
        b.read_verified(seg)  # handed over once: a second read checks the disk again
