"""``collab split model.onnx``: cuts found in the ONNX graph itself, checked in ORT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from collab.bundle import load_bundle
from collab.chain import BundleSessions
from collab.cli import main
from collab.errors import ConfigError, SplitError
from collab.ort import make_session, run
from collab.split.onnx_cuts import single_tensor_cuts
from collab.split.onnx_split import split_onnx


def _residual_concat_model(path: Path, batch: int | str = "N") -> Path:
    """input -> conv -> relu -> [conv, identity] -> add -> [conv, conv] -> concat -> pool -> gemm,
    written with onnx.helper (not exported from PyTorch)."""
    rng = np.random.default_rng(0)

    def w(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="stem/conv"),
        helper.make_node("Relu", ["c1"], ["r1"], name="stem/relu"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], name="res/conv"),
        helper.make_node("Add", ["c2", "r1"], ["a1"], name="res/add"),
        helper.make_node("Conv", ["a1", "w3"], ["b1"], pads=[1, 1, 1, 1], name="cat/left"),
        helper.make_node("Conv", ["a1", "w4"], ["b2"], strides=[1, 1], name="cat/right"),
        helper.make_node("Concat", ["b1", "b2"], ["cat"], axis=1, name="cat/concat"),
        helper.make_node("Relu", ["cat"], ["r2"], name="cat/relu"),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(
        nodes,
        "residual_concat",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 5])],
        [
            w("w1", 8, 3, 3, 3),
            w("w2", 8, 8, 3, 3),
            w("w3", 4, 8, 3, 3),
            w("w4", 4, 8, 1, 1),
            w("wf", 5, 8),
            w("bf", 5),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_cuts_are_exactly_the_single_tensor_positions(tmp_path: Path) -> None:
    g = onnx.load(str(_residual_concat_model(tmp_path / "m.onnx"))).graph
    # inside the residual block (c2 and r1 alive) and between the two concat branches
    # (b1 and a1, or b1 and b2) two tensors cross: no cut there
    assert [c.tensor for c in single_tensor_cuts(g)] == ["c1", "r1", "a1", "cat", "r2", "p", "f"]


@pytest.mark.parametrize("granularity", ["all", "block"])
def test_every_cut_of_a_hand_built_graph_composes_in_ort(tmp_path: Path, granularity: str) -> None:
    src = _residual_concat_model(tmp_path / "m.onnx")
    b = split_onnx(src, tmp_path / "b", runs=2, progress=False, granularity=granularity)
    names = [sp.name for sp in b.manifest.split_points]
    if granularity == "all":
        assert len(names) == 7
    else:  # every feature but the pooled one is larger than the 3x16x16 input itself
        assert names == ["p"]
    x = np.random.default_rng(5).standard_normal((4, 3, 16, 16)).astype(np.float32)
    ref = run(make_session(src), x)
    sessions = BundleSessions(b)
    for sp in b.manifest.split_points:
        y = sessions.tail(sp.name)(sessions.head(sp.name)(x))
        assert np.abs(y - ref).max() <= 1e-4 * max(1.0, float(np.abs(ref).max())), sp.name
        assert b.manifest.extra["checks"][sp.name]["ort_max_abs"] <= 1e-4 * max(
            1.0, float(np.abs(ref).max())
        )


def test_exported_efficientnet_splits_and_every_cut_composes(tmp_path: Path) -> None:
    import torch

    from collab.models.efficientnet import MEAN, STD, efficientnet_lite0
    from collab.models.images import natural_images, normalize

    x = normalize(natural_images("train", 3), MEAN, STD)
    src = tmp_path / "effnet.onnx"
    with torch.no_grad():
        torch.onnx.export(
            efficientnet_lite0(),
            (torch.from_numpy(x[:1]),),
            str(src),
            input_names=["image"],
            output_names=["logits"],
            opset_version=17,
            dynamo=False,
        )
    assert (
        main(["split", str(src), "--out", str(tmp_path / "b"), "--runs", "2", "--no-progress"]) == 0
    )
    b = load_bundle(tmp_path / "b")
    assert len(b.manifest.split_points) >= 4  # stages of decreasing feature size
    on_disk = sum(p.stat().st_size for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert on_disk <= 1.3 * src.stat().st_size  # every weight in one segment file
    sessions = BundleSessions(b)
    ref = sessions.full()(x)
    for sp in b.manifest.split_points:
        y = sessions.tail(sp.name)(sessions.head(sp.name)(x))
        assert np.abs(y - ref).max() <= 1e-4 * max(1.0, float(np.abs(ref).max())), sp.name
        assert sp.feature_bytes < b.manifest.input_bytes


def test_bad_onnx_input_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="not a readable ONNX model"):
        split_onnx(junk, tmp_path / "b1", progress=False)
    # a graph that hard-codes batch 1 in a Reshape cannot run at another batch size
    m = onnx.load(str(_residual_concat_model(tmp_path / "m.onnx", batch=1)))
    shape = numpy_helper.from_array(np.array([1, 8], np.int64), "fixed_shape")
    m.graph.initializer.append(shape)
    flat = next(n for n in m.graph.node if n.op_type == "Flatten")
    flat.op_type, flat.input[:] = "Reshape", ["p", "fixed_shape"]
    onnx.save(m, str(tmp_path / "fixed.onnx"))
    with pytest.raises(SplitError, match="batch"):
        split_onnx(tmp_path / "fixed.onnx", tmp_path / "b2", progress=False)
    assert not (tmp_path / "b2").exists()
