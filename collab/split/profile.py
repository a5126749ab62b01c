"""Latency of a bundle's segments on this machine, as the runtimes will see them (ORT,
CPU, 1 thread, the segment sessions' options).

Segments are timed round-robin (one run of each per round, each on the previous one's
output), so load from other processes on a shared machine spreads over all of them
instead of skewing whichever ran last. A head, tail or full model costs the sum of its
segments: the runtimes run exactly these sessions one after another.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from collab import ort


def profile_chain(
    segments: list[Path],
    x: np.ndarray,
    *,
    runs: int,
    warmup: int = 3,
    desc: str = "profile",
    progress: bool = False,
) -> list[tuple[float, np.ndarray]]:
    """Median ms of every segment of the chain on input ``x``, and its output."""
    sessions = [ort.make_session(p, lean=True) for p in segments]
    inputs = [x]
    for s in sessions:
        inputs.append(ort.run(s, inputs[-1]))
    times: list[list[float]] = [[] for _ in sessions]
    for r in tqdm(range(warmup + runs), desc=desc, unit="round", disable=not progress):
        for i, sess in enumerate(sessions):
            t0 = time.perf_counter()
            ort.run(sess, inputs[i])
            if r >= warmup:
                times[i].append((time.perf_counter() - t0) * 1e3)
    return [(statistics.median(t), y) for t, y in zip(times, inputs[1:], strict=True)]
