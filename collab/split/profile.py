"""Latency of ONNX pieces on this machine, as the runtimes will see them (ORT, CPU, 1 thread).

Pieces are timed round-robin (one run of each per round), so load from other processes
on a shared machine spreads over all of them instead of skewing whichever ran last.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from collab import ort


def profile_chain(
    pieces: list[tuple[Path, Path]], full: Path, x: np.ndarray, *, runs: int, warmup: int = 3,
    desc: str = "profile", progress: bool = False,
) -> tuple[float, list[tuple[float, float, np.ndarray]]]:
    """Median ms of ``full`` and of every (head, tail) pair on input ``x``.

    Returns ``(full_ms, [(head_ms, tail_ms, feature), ...])``."""
    full_s = ort.make_session(full)
    sessions = [(ort.make_session(h), ort.make_session(t)) for h, t in pieces]
    feats = [ort.run(hs, x) for hs, _ in sessions]
    jobs = [(full_s, x)] + [job for (hs, ts), f in zip(sessions, feats, strict=True) for job in ((hs, x), (ts, f))]
    times: list[list[float]] = [[] for _ in jobs]
    for r in tqdm(range(warmup + runs), desc=desc, unit="round", disable=not progress):
        for i, (sess, inp) in enumerate(jobs):
            t0 = time.perf_counter()
            ort.run(sess, inp)
            if r >= warmup:
                times[i].append((time.perf_counter() - t0) * 1e3)
    med = [statistics.median(t) for t in times]
    return med[0], [(med[1 + 2 * k], med[2 + 2 * k], feats[k]) for k in range(len(pieces))]
