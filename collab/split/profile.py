"""Latency of ONNX pieces on this machine, as the runtimes will see them (ORT, CPU, 1 thread)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from collab import ort


def median_ms(path: Path, x: np.ndarray, *, runs: int, warmup: int = 3) -> tuple[float, np.ndarray]:
    """Median wall time of ``runs`` calls after ``warmup`` calls, and the output."""
    sess = ort.make_session(path)
    out = ort.run(sess, x)
    for _ in range(warmup - 1):
        ort.run(sess, x)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        ort.run(sess, x)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), out
