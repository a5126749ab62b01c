"""Calibration of split points x codecs on real ONNX files (a tiny hand-built bundle,
and the trained digits CNN example when available), stored through update_bundle."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from collab.bundle import Manifest, Segment, SplitPoint, load_bundle, write_manifest
from collab.codec.calibrate import calibrate_bundle, load_calibration, validate_calibration
from collab.codec.policy import choose_codec
from collab.errors import BundleError, ConfigError


def _model(nodes: list, inits: list, inp: tuple, out: tuple, path: Path) -> None:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *inp])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", *out])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def tiny_bundle(root: Path) -> Path:
    """x(N,1,8,8) -> Conv 3x3 (8 ch) + ReLU -> [cut] -> Flatten -> Gemm(512->10)."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(8, 1, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.normal(size=8).astype(np.float32) * 0.1, "b")
    fc = numpy_helper.from_array(rng.normal(size=(512, 10)).astype(np.float32) * 0.1, "fc")
    head = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    tail = [
        helper.make_node("Flatten", ["x"], ["f"]),
        helper.make_node("MatMul", ["f", "fc"], ["y"]),
    ]
    root.mkdir(parents=True)
    _model(head, [w, b], (1, 8, 8), (8, 8, 8), root / "head0.onnx")
    _model(tail, [fc], (8, 8, 8), (10,), root / "tail0.onnx")
    segments = (
        Segment(path="head0.onnx", input="x", output="y", input_shape=(1, 1, 8, 8), ms=0.01),
        Segment(path="tail0.onnx", input="x", output="y", input_shape=(1, 8, 8, 8), ms=0.01),
    )
    sp = SplitPoint(
        name="relu",
        index=0,
        boundary=1,
        feature_shape=(1, 8, 8, 8),
        feature_dtype="float32",
        feature_bytes=2048,
        head_ms=0.01,
        tail_ms=0.01,
    )
    m = Manifest(
        model_name="tiny",
        input_name="x",
        input_shape=(1, 1, 8, 8),
        input_dtype="float32",
        output_shape=(1, 10),
        full_ms=0.02,
        input_bytes=256,
        segments=segments,
        split_points=(sp,),
    )
    write_manifest(root, m)
    return root


CODECS = ("f32", "f32+zstd1", "f16+zstd1", "int8+zstd1", "int4+brotli5+sparse")


def test_calibrate_tiny_bundle(tmp_path: Path) -> None:
    root = tiny_bundle(tmp_path / "b")
    before = load_bundle(root).version
    x = np.random.default_rng(1).uniform(0, 1, size=(40, 1, 8, 8)).astype(np.float32)
    labels = np.arange(40) % 10
    cal = calibrate_bundle(root, x, labels, codecs=CODECS, progress=False)
    b = load_bundle(root)  # hashes verified, calibration registered
    assert b.version != before and b.manifest.calibration == "calibration.json"
    assert "calibration.json" in b.manifest.files
    assert load_calibration(b) == json.loads((root / "calibration.json").read_text()) == cal
    assert cal["num_inputs"] == 40 and cal["codecs"] == list(CODECS)
    for section in (cal["input"], cal["points"]["relu"]):
        for name in ("f32", "f32+zstd1"):  # lossless: exact
            assert section[name]["agreement"] == 1.0 and section[name]["rel_l2"] == 0.0
        assert (
            section["f32"]["bytes"]
            > section["int8+zstd1"]["bytes"]
            > section["int4+brotli5+sparse"]["bytes"]
        )
        assert 0 < section["f16+zstd1"]["rel_l2"] < 1e-3
        assert 0 < section["int8+zstd1"]["rel_l2"] < section["int4+brotli5+sparse"]["rel_l2"] < 0.2
        for row in section.values():
            assert 0 <= row["agreement"] <= 1 and 0 <= row["accuracy"] <= 1
            assert row["ratio"] == pytest.approx(
                2048 / row["bytes"] if section is cal["points"]["relu"] else 256 / row["bytes"]
            )
    choice = choose_codec(cal["points"]["relu"], bandwidth_bps=1e5, accuracy_budget=0.0)
    assert choice.codec in CODECS
    # tampering with the table is caught by the bundle hash
    (root / "calibration.json").write_text("{}")
    with pytest.raises(BundleError, match=r"calibration\.json"):
        load_bundle(root)


def test_calibrate_rejects_bad_inputs(tmp_path: Path) -> None:
    root = tiny_bundle(tmp_path / "b")
    with pytest.raises(ConfigError, match="shape"):
        calibrate_bundle(root, np.zeros((4, 1, 9, 9), np.float32), progress=False)
    with pytest.raises(ConfigError, match="labels"):
        calibrate_bundle(root, np.zeros((4, 1, 8, 8), np.float32), np.zeros(3), progress=False)
    with pytest.raises(ConfigError):
        calibrate_bundle(
            root, np.zeros((4, 1, 8, 8), np.float32), codecs=("f32", "f32"), progress=False
        )
    assert load_bundle(root).manifest.calibration is None  # nothing written


def test_validate_calibration_rejects_malformed() -> None:
    good: dict[str, Any] = {
        "schema": 1,
        "num_inputs": 2,
        "codecs": ["f32"],
        "input": {
            "f32": {
                "bytes": 4.0,
                "ratio": 1.0,
                "encode_ms": 0.1,
                "decode_ms": 0.1,
                "rel_l2": 0.0,
                "agreement": 1.0,
                "accuracy": None,
            }
        },
        "points": {},
    }
    validate_calibration(good)
    for bad in (
        {**good, "schema": 2},
        {**good, "codecs": ["nope"]},
        {**good, "points": {"a": {}}},
        {**good, "input": {"f32": {**good["input"]["f32"], "agreement": 2.0}}},
        {**good, "input": {"f32": {"bytes": 1}}},
        {**good, "num_inputs": 0},
    ):
        with pytest.raises(BundleError):
            validate_calibration(bad)


def _example_bundle(name: str) -> Path:
    try:
        from collab.split.examples import example_bundle
    except ImportError:
        pytest.skip("collab.split.examples not available yet")
    return example_bundle(name)


@pytest.mark.slow
def test_calibrate_digits_example_on_a_copy(tmp_path: Path) -> None:
    from collab.models.registry import example_inputs

    src = _example_bundle("digits")
    src_version = load_bundle(src).version
    root = tmp_path / "digits"
    shutil.copytree(src, root)
    x, y = example_inputs("digits", 120, "test")
    cal = calibrate_bundle(
        root, x, y, codecs=("f32+zstd1", "int8+zstd1", "int4+zstd1+sparse"), progress=False
    )
    assert load_bundle(src).version == src_version  # the shared cache is untouched
    m = load_bundle(root).manifest
    assert set(cal["points"]) == {sp.name for sp in m.split_points}
    acc = cal["input"]["f32+zstd1"]["accuracy"]
    assert acc is not None and acc > 0.9  # trained model, lossless input
    for sp in m.split_points:
        assert cal["points"][sp.name]["f32+zstd1"]["agreement"] == 1.0
        assert cal["points"][sp.name]["int8+zstd1"]["agreement"] >= 0.97


def test_cli_calibrate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from collab.cli import main

    root = tiny_bundle(tmp_path / "b")
    x = np.random.default_rng(2).uniform(size=(12, 1, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.arange(12) % 10)
    rc = main(
        [
            "calibrate",
            str(root),
            "--inputs",
            str(tmp_path / "x.npy"),
            "--labels",
            str(tmp_path / "y.npy"),
            "--codecs",
            "f32+zstd1",
            "int8+zstd1",
            "--no-progress",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "int8+zstd1" in out and "relu" in out
    cal = load_calibration(load_bundle(root))
    assert (
        cal is not None and cal["codecs"] == ["f32+zstd1", "int8+zstd1"] and cal["num_inputs"] == 12
    )
    # user errors: exit code 1 with a message, bundle unchanged
    version = load_bundle(root).version
    assert main(["calibrate", str(root), "--codecs", "int9"]) == 1  # not an example, no --inputs
    assert (
        main(["calibrate", str(root), "--inputs", str(tmp_path / "x.npy"), "--codecs", "int9"]) == 1
    )
    assert main(["calibrate", str(root), "--inputs", str(tmp_path / "missing.npy")]) == 1
    assert main(["calibrate", str(root), "--n", "0"]) == 1
    assert load_bundle(root).version == version
    err = capsys.readouterr().err
    assert "int9" in err and "missing.npy" in err
