"""Measurements that decide whether a variant is worth keeping: latency on this
machine, file size, and top-1 agreement with the FP32 model. No torch."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeAlias

import numpy as np
import onnxruntime as ort

from collab.ort import make_session, run

# a model to measure: an ONNX file, a session, or anything mapping a batch to outputs
# (e.g. a chain of a bundle's segment sessions, collab.chain.Chain)
Model: TypeAlias = (
    str | os.PathLike[str] | ort.InferenceSession | Callable[[np.ndarray], np.ndarray]
)


def runner(model: Model) -> Callable[[np.ndarray], np.ndarray]:
    """``model`` as a function of its input. Files get lean sessions, like the segments."""
    if isinstance(model, str | os.PathLike):
        model = make_session(model, lean=True)
    if isinstance(model, ort.InferenceSession):
        sess = model
        return lambda x: run(sess, x)
    return model


def top1(logits: np.ndarray) -> np.ndarray:
    return np.asarray(logits).reshape(len(logits), -1).argmax(axis=1)


def agreement(pred: np.ndarray, ref: np.ndarray) -> float:
    """Fraction of inputs whose top-1 class matches the reference."""
    if len(pred) != len(ref) or len(ref) == 0:
        raise ValueError("agreement needs two non-empty label arrays of equal length")
    return float(np.mean(np.asarray(pred) == np.asarray(ref)))


def run_batched(model: Model, x: np.ndarray, batch: int = 64) -> np.ndarray:
    f = runner(model)
    return np.concatenate([f(x[i : i + batch]) for i in range(0, len(x), batch)])


def file_size(*paths: str | os.PathLike[str]) -> int:
    """Total size of the files (a chain of segments is the sum of its files)."""
    return sum(Path(p).stat().st_size for p in paths)


def interleaved_latency_ms(
    models: Sequence[Model],
    x1: np.ndarray,
    *,
    warmup: int = 5,
    runs: int = 30,
) -> list[float]:
    """Median batch-1 latency of each model, measured round-robin in one loop.

    Interleaving matters on a shared, noisy 2-core box: every model sees the same
    background load, so the *ratios* between them are trustworthy even when the
    absolute numbers drift."""
    fs = [runner(m) for m in models]
    for f in fs:
        for _ in range(warmup):
            f(x1)
    samples: list[list[float]] = [[] for _ in fs]
    for _ in range(runs):
        for i, f in enumerate(fs):
            t0 = time.perf_counter()
            f(x1)
            samples[i].append((time.perf_counter() - t0) * 1e3)
    return [statistics.median(s) for s in samples]
