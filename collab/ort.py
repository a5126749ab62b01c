"""ONNX Runtime sessions, the only inference engine on edge and cloud.

onnxruntime errors are wrapped here, where they enter the library. No torch import.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnxruntime as ort

from collab.errors import BundleError, InferenceError

# ORT's NodeArg.type strings -> numpy dtypes (bfloat16, strings, ... have no zeros here)
_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
}


def dummy_inputs(
    session: ort.InferenceSession, known: dict[int, tuple[int, ...]] | None = None
) -> dict[str, np.ndarray]:
    """Zeros for every input of ``session``, each of its declared dtype and shape. A
    symbolic (or unknown) dim takes the same axis of ``known[input index]`` when that
    shape has the input's rank, else 1. InferenceError for an input type with no numpy
    zeros (e.g. strings)."""
    feeds: dict[str, np.ndarray] = {}
    for i, inp in enumerate(session.get_inputs()):
        dtype = _DTYPES.get(inp.type)
        if dtype is None:
            raise InferenceError(f"input {inp.name!r} has type {inp.type}: no dummy value")
        shape = list(inp.shape or ())
        hint = (known or {}).get(i, ())
        if len(hint) != len(shape):
            hint = (1,) * len(shape)
        dims = [
            d if isinstance(d, int) and d > 0 else max(int(h), 1)
            for d, h in zip(shape, hint, strict=True)
        ]
        feeds[inp.name] = np.zeros(dims, dtype)
    return feeds


NO_EXTERNAL_DATA = os.path.join(os.devnull, "external-data-is-refused")


def make_session(
    path: str | os.PathLike[str] | bytes, *, intra_threads: int = 1, lean: bool = False
) -> ort.InferenceSession:
    """A CPU session from a file or from serialized model bytes. One intra-op thread by
    default: on a 2-core box, parallelism comes from serving several requests, not from
    splitting one. ``lean`` drops the per-session memory arena and memory pattern: many
    small sessions (a bundle's segments) then hold no more memory than one session of the
    whole model, at no measurable latency cost (benchmarks/bundle_v2.py)."""
    so = ort.SessionOptions()
    if lean:
        so.enable_cpu_mem_arena = False
        so.enable_mem_pattern = False
    so.intra_op_num_threads = intra_threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if isinstance(path, bytes):
        # ONNX Runtime resolves a model's external-data references against the working
        # directory when it loads bytes: weights outside the hashed file would load
        # unverified. Pointing the lookup at a directory that cannot exist refuses them.
        so.add_session_config_entry(
            "session.model_external_initializers_file_folder_path", NO_EXTERNAL_DATA
        )
    try:
        model = path if isinstance(path, bytes) else str(path)
        return ort.InferenceSession(model, sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types
        what = "from bytes" if isinstance(path, bytes) else Path(path).name
        if isinstance(path, bytes) and NO_EXTERNAL_DATA in str(e):
            raise BundleError(
                "ONNX model references external data (weights outside its hashed file), "
                "which a bundle may not"
            ) from e
        raise BundleError(f"cannot load ONNX model {what}: {e}") from e


def run(session: ort.InferenceSession, x: np.ndarray | Mapping[str, np.ndarray]) -> np.ndarray:
    """Run a model on its single input ``x``, or on named inputs (every one, e.g. from
    :func:`dummy_inputs`); its first output."""
    feeds = {session.get_inputs()[0].name: x} if isinstance(x, np.ndarray) else x
    try:
        out = session.run(None, feeds)[0]
    except Exception as e:
        what = " ".join(f"{v.dtype}{list(v.shape)}" for v in feeds.values())
        raise InferenceError(f"inference failed for input {what}: {e}") from e
    return np.asarray(out)
