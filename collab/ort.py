"""ONNX Runtime sessions, the only inference engine on edge and cloud.

onnxruntime errors are wrapped here, where they enter the library. No torch import.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from collab.errors import BundleError, InferenceError


def make_session(path: str | os.PathLike[str], *, intra_threads: int = 1) -> ort.InferenceSession:
    """A CPU session. One intra-op thread by default: on a 2-core box, parallelism comes
    from serving several requests, not from splitting one."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = intra_threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types
        raise BundleError(f"cannot load ONNX model {Path(path).name}: {e}") from e


def run(session: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    """Run a single-input single-output model."""
    inp = session.get_inputs()[0]
    try:
        out = session.run(None, {inp.name: x})[0]
    except Exception as e:
        raise InferenceError(f"inference failed for input {x.dtype}{list(x.shape)}: {e}") from e
    return np.asarray(out)
