"""``collab split model.onnx``: split an ONNX model users already have, no PyTorch needed
for the graph itself (onnx + ONNX Runtime do the work).

Cuts come from the graph (:mod:`collab.split.onnx_cuts`); the segments between them are
extracted from the original graph, checked in ONNX Runtime as a chain against the
original model's own cut tensors and output at batch 1 and 3 (to 1e-4 relative, see
:mod:`collab.split.segments`), profiled, and written as the same bundle a PyTorch split
gives. A model with a fixed batch size gets a symbolic
batch dimension; if its graph hard-codes the batch elsewhere, the batch-3 check refuses it
with a message saying so.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.utils

from collab import ort
from collab.bundle import Bundle, Preprocessing, load_bundle, staging_dir
from collab.errors import ConfigError, SplitError
from collab.log import logger
from collab.split.api import INPUT_NAME, OUTPUT_NAME, write_bundle
from collab.split.onnx_cuts import GraphCut, block_cuts, single_tensor_cuts
from collab.split.segments import Boundary, build_segments

CHECK_BATCH = 3


def _load(path: Path) -> onnx.ModelProto:
    try:
        model = onnx.load(str(path))
    except Exception as e:  # protobuf / file errors from onnx, wrapped where they enter
        raise ConfigError(f"{path}: not a readable ONNX model: {type(e).__name__}: {e}") from e
    g = model.graph
    inputs = [i for i in g.input if i.name not in {t.name for t in g.initializer}]
    if len(inputs) != 1 or len(g.output) != 1:
        raise SplitError(
            f"{path}: expected one input and one output, got {len(inputs)} and {len(g.output)}"
        )
    for v in (inputs[0], g.output[0]):
        if v.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise SplitError(f"{path}: {v.name} is not float32")
    return model


def _normalised(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with its input named ``input``, output ``output``, a symbolic batch
    dimension, and shapes inferred for every intermediate tensor."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    inp = next(i for i in g.input if i.name not in {t.name for t in g.initializer})
    for v, new in ((inp, INPUT_NAME), (g.output[0], OUTPUT_NAME)):
        old = v.name
        if old != new:
            for n in g.node:
                n.input[:] = [new if t == old else t for t in n.input]
                n.output[:] = [new if t == old else t for t in n.output]
            v.name = new
        dims = v.type.tensor_type.shape.dim
        if dims and not dims[0].dim_param:
            dims[0].Clear()
            dims[0].dim_param = "batch"
    del g.value_info[:]
    try:
        return onnx.shape_inference.infer_shapes(m)
    except Exception as e:
        raise SplitError(f"shape inference failed: {type(e).__name__}: {e}") from e


def _float_tensors(m: onnx.ModelProto) -> set[str]:
    return {
        v.name for v in m.graph.value_info if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    }


def probe(m: onnx.ModelProto, tensors: list[str], x: np.ndarray) -> dict[str, np.ndarray]:
    """The values of ``tensors`` (and of the output) when the model runs on ``x``: their
    real shapes (exporters compute pads and reshapes at run time, so static shape inference
    often leaves them unknown) and the reference every segment is checked against."""
    pm = onnx.ModelProto()
    pm.CopyFrom(m)
    known = {o.name for o in pm.graph.output}
    for t in tensors:
        if t not in known:
            pm.graph.output.append(
                onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None)
            )
    sess = ort.make_session(pm.SerializeToString())
    names = [o.name for o in sess.get_outputs()]
    try:
        values = sess.run(names, {INPUT_NAME: x})
    except Exception as e:  # onnxruntime's own exception types
        raise ort.InferenceError(f"the model cannot run at batch {len(x)}: {e}") from e
    return {
        n: np.asarray(v) for n, v in zip(names, values, strict=True) if n in {*tensors, OUTPUT_NAME}
    }


def cut_name(tensor: str) -> str:
    """A readable split-point name from an exporter's tensor name
    (``/_blocks/_blocks.3/Add_output_0`` -> ``_blocks.3.Add``)."""
    parts = [p for p in re.sub(r"_output_\d+$", "", tensor).split("/") if p]
    dedup = [
        p for i, p in enumerate(parts) if not (i + 1 < len(parts) and parts[i + 1].startswith(p))
    ]
    return re.sub(r"[^A-Za-z0-9_.-]", "_", ".".join(dedup) or tensor)


def candidate_cuts(m: onnx.ModelProto, granularity: str) -> list[GraphCut]:
    """Single-tensor float cuts; at ``block`` granularity without the elementwise-redundant
    ones."""
    floats = _float_tensors(m)
    cuts = [c for c in single_tensor_cuts(m.graph) if c.tensor in floats]
    return block_cuts(m.graph, cuts) if granularity == "block" else cuts


def choose_cuts(
    m: onnx.ModelProto, granularity: str, cuts: list[GraphCut], values: dict[str, np.ndarray]
) -> list[tuple[GraphCut, tuple[int, ...]]]:
    """The candidates whose probed ``values`` have the batch dimension first, with their
    batch-1 shapes. At ``block`` granularity a cut whose tensor is no smaller than the input
    or an earlier kept cut goes too (more edge work for no fewer raw bytes; ``all`` keeps
    them for codecs that compress some tensors much better than others)."""
    batch = len(values[OUTPUT_NAME])
    smallest = int(np.prod([d.dim_value or 1 for d in m.graph.input[0].type.tensor_type.shape.dim]))
    out: list[tuple[GraphCut, tuple[int, ...]]] = []
    for c in cuts:
        v = values.get(c.tensor)
        if (
            v is None or v.ndim < 1 or v.shape[0] != batch
        ):  # no batch dimension first: not a feature
            continue
        shape = (1, *v.shape[1:])
        size = int(np.prod(shape))
        if granularity == "block" and size >= smallest:
            continue
        smallest = min(smallest, size)
        out.append((c, shape))
    return out


def split_onnx(
    path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    name: str | None = None,
    example_input: np.ndarray | None = None,
    runs: int = 20,
    progress: bool = True,
    granularity: str = "block",
    preprocessing: Preprocessing | None = None,
) -> Bundle:
    """Split ``path`` at every valid single-tensor cut into a verified, profiled bundle
    (``preprocessing``: how camera images become its input, if it takes images)."""
    if granularity not in ("block", "all"):
        raise ConfigError(f"granularity must be 'block' or 'all', not {granularity!r}")
    if runs < 1:
        raise ConfigError("runs must be >= 1")
    src = Path(path)
    m = _normalised(_load(src))
    opset = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), 17)
    in_dims = m.graph.input[0].type.tensor_type.shape.dim
    if example_input is None:
        shape = [CHECK_BATCH, *(d.dim_value for d in in_dims[1:])]
        if any(d < 1 for d in shape[1:]):
            raise ConfigError(f"{src}: input has symbolic dims {shape[1:]}; pass --input-shape")
        example_input = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    x = np.ascontiguousarray(example_input, np.float32)
    if x.shape[0] < CHECK_BATCH:
        reps = np.repeat(x[:1], CHECK_BATCH - x.shape[0], axis=0)
        x = np.concatenate(
            [
                x,
                reps
                + np.random.default_rng(1).standard_normal(reps.shape).astype(np.float32) * 0.1,
            ]
        )
    candidates = candidate_cuts(m, granularity)
    try:  # one run gives the cuts' shapes and every segment's reference
        ref = probe(m, [c.tensor for c in candidates], x)
    except ort.InferenceError as e:
        raise SplitError(
            f"{src}: ONNX Runtime cannot run it at batch {len(x)} "
            f"(is the batch size fixed inside the graph?): {e}"
        ) from e
    cuts = choose_cuts(m, granularity, candidates, ref)
    name = name or src.stem
    logger.info("%s: %d single-tensor cuts kept at %s granularity", name, len(cuts), granularity)
    bounds: list[Boundary] = []
    for cut, cshape in cuts:
        cname = cut_name(cut.tensor)
        while cname in {b.name for b in bounds}:
            cname += "_"
        bounds.append(Boundary(name=cname, tensor=cut.tensor, shape=(1, *cshape[1:])))
    refused: dict[str, str] = {}
    with staging_dir(Path(out_dir)) as tmp:
        seg = build_segments(
            onnx.utils.Extractor(m),
            bounds,
            tmp,
            x,
            ref,
            input_name=INPUT_NAME,
            output_name=OUTPUT_NAME,
            opset=opset,
            refused=refused,
            desc=f"check {name}",
            progress=progress,
        )
        if not seg.cuts:
            raise SplitError(f"{src}: no usable cut (refused: {refused or 'none found'})")
        extra: dict[str, Any] = {
            "source": "onnx",
            "source_file": src.name,
            "granularity": granularity,
            "refused": refused,
            "profile_runs": runs,
            "checks": {k: {"ort_max_abs": d} for k, d in seg.ort_max_abs.items()},
        }
        write_bundle(
            tmp,
            seg,
            x[:1],
            name=name,
            output_shape=(1, *ref[OUTPUT_NAME].shape[1:]),
            opset=opset,
            runs=runs,
            progress=progress,
            extra=extra,
            preprocessing=preprocessing,
        )
    return load_bundle(out_dir)
