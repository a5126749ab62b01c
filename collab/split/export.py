"""ONNX export with a dynamic batch dimension, piece extraction, and checks.

We use the TorchScript exporter (``dynamo=False``): it writes exactly the requested
opset and needs no onnxscript rewrite passes. Exporting every piece separately costs
about a second each, so the model is exported ONCE with every cut tensor as an extra
output, and the segments between cuts are extracted from that graph
(``onnx.utils.Extractor``, see :mod:`collab.split.segments`).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from collab.errors import SplitError


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter warns a lot and dumps its whole IR graph on failure; our SplitError
    carries the cause instead."""
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        yield


def export_onnx(
    module: nn.Module,
    example: torch.Tensor,
    path: Path,
    *,
    input_name: str,
    output_name: str,
    opset: int,
) -> None:
    try:
        with _quiet(), torch.no_grad():
            torch.onnx.export(
                module,
                (example,),
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=[input_name],
                output_names=[output_name],
                dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
                do_constant_folding=True,
            )
    except Exception as e:  # torch.onnx raises many types; all mean "cannot export"
        raise SplitError(f"ONNX export of {path.name} failed: {type(e).__name__}: {e}") from e
    check_onnx(path, opset=opset)


def export_with_cuts(
    module: nn.Module,
    example: torch.Tensor,
    path: Path,
    *,
    input_name: str,
    output_name: str,
    cut_names: list[str],
    opset: int,
) -> onnx.ModelProto:
    """Export a module returning ``(output, *cut tensors)``; outputs named accordingly."""
    names = [output_name, *cut_names]
    try:
        with _quiet(), torch.no_grad():
            torch.onnx.export(
                module,
                (example,),
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=[input_name],
                output_names=names,
                dynamic_axes={n: {0: "batch"} for n in [input_name, *names]},
                do_constant_folding=True,
            )
    except Exception as e:
        raise SplitError(
            f"ONNX export of the model with its cut tensors failed: {type(e).__name__}: {e}"
        ) from e
    return onnx.load(str(path))


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    for n in graph.node:
        n.input[:] = [new if i == old else i for i in n.input]
        n.output[:] = [new if o == old else o for o in n.output]
    for v in (*graph.input, *graph.output):
        if v.name == old:
            v.name = new


def extract_piece(
    ex: onnx.utils.Extractor,
    path: Path,
    *,
    inputs: tuple[str, str],
    output: tuple[str, str],
    opset: int,
) -> None:
    """Write the sub-graph from tensor ``inputs[0]`` to ``output[0]``, renaming both
    boundary tensors to ``inputs[1]`` / ``output[1]``."""
    try:
        m = ex.extract_model([inputs[0]], [output[0]])
    except Exception as e:
        raise SplitError(f"cannot extract {path.name}: {type(e).__name__}: {e}") from e
    used = {t for n in m.graph.node for t in (*n.input, *n.output)}
    for old, new in (inputs, output):
        if old != new and new in used:
            raise SplitError(f"{path.name}: tensor name {new!r} is already used in the graph")
    _rename(m.graph, inputs[0], inputs[1])
    _rename(m.graph, output[0], output[1])
    if m.graph.input[0].name == m.graph.output[0].name:
        raise SplitError(f"{path.name}: empty piece")
    onnx.save(m, str(path))
    check_onnx(path, opset=opset)


def check_onnx(path: Path, *, opset: int) -> None:
    """One float32 input and output, batch dim 0 symbolic, the requested opset."""
    m = onnx.load(str(path))
    try:
        onnx.checker.check_model(m)
    except onnx.checker.ValidationError as e:
        raise SplitError(f"{path.name}: invalid ONNX: {e}") from e
    got = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), None)
    if got != opset:
        raise SplitError(f"{path.name}: exported opset {got}, asked for {opset}")
    for kind, values in (("input", m.graph.input), ("output", m.graph.output)):
        if len(values) != 1:
            raise SplitError(f"{path.name}: expected one {kind}, got {len(values)}")
        t = values[0].type.tensor_type
        if t.elem_type != onnx.TensorProto.FLOAT:
            raise SplitError(f"{path.name}: {kind} is not float32")
        if not t.shape.dim or not t.shape.dim[0].dim_param:
            raise SplitError(f"{path.name}: {kind} has no dynamic batch dimension")


def max_abs_diff(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    a_ = a.detach().numpy() if isinstance(a, torch.Tensor) else a
    b_ = b.detach().numpy() if isinstance(b, torch.Tensor) else b
    if a_.shape != b_.shape:
        return float("inf")
    return float(np.max(np.abs(a_.astype(np.float64) - b_.astype(np.float64)))) if a_.size else 0.0
