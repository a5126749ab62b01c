"""Measurements that decide whether a variant is worth keeping: latency on this
machine, file size, and top-1 agreement with the FP32 model. No torch."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from collab.ort import make_session, run


def top1(logits: np.ndarray) -> np.ndarray:
    return np.asarray(logits).reshape(len(logits), -1).argmax(axis=1)


def agreement(pred: np.ndarray, ref: np.ndarray) -> float:
    """Fraction of inputs whose top-1 class matches the reference."""
    if len(pred) != len(ref) or len(ref) == 0:
        raise ValueError("agreement needs two non-empty label arrays of equal length")
    return float(np.mean(np.asarray(pred) == np.asarray(ref)))


def run_batched(session: ort.InferenceSession, x: np.ndarray, batch: int = 64) -> np.ndarray:
    return np.concatenate([run(session, x[i : i + batch]) for i in range(0, len(x), batch)])


def file_size(path: str | os.PathLike[str]) -> int:
    return Path(path).stat().st_size


def interleaved_latency_ms(
    paths: Sequence[str | os.PathLike[str]],
    x1: np.ndarray,
    *,
    warmup: int = 5,
    runs: int = 30,
) -> list[float]:
    """Median batch-1 latency of each model, measured round-robin in one loop.

    Interleaving matters on a shared, noisy 2-core box: every model sees the same
    background load, so the *ratios* between them are trustworthy even when the
    absolute numbers drift."""
    sessions = [make_session(p) for p in paths]
    for s in sessions:
        for _ in range(warmup):
            run(s, x1)
    samples: list[list[float]] = [[] for _ in sessions]
    for _ in range(runs):
        for i, s in enumerate(sessions):
            t0 = time.perf_counter()
            run(s, x1)
            samples[i].append((time.perf_counter() - t0) * 1e3)
    return [statistics.median(s) for s in samples]
