"""Heads, tails and the full model of a bundle as chains of shared segment sessions.

Each segment file gets ONE ONNX Runtime session, built on first use from the bytes
verified against the manifest, and every chain that contains the segment (the full
model, every tail before it, every head after it) runs that session: a bundle's weights
are in memory once, however many paths are ready. Variants are single files, so one
session each. No torch import.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from collab.bundle import Bundle
from collab.ort import make_session, run


@dataclass(frozen=True)
class Chain:
    """Sessions run in order, each one's output the next one's input."""

    sessions: tuple[ort.InferenceSession, ...]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        for s in self.sessions:
            x = run(s, x)
        return x


class BundleSessions:
    """One session per model file of ``bundle``, built once and shared (thread-safe)."""

    def __init__(self, bundle: Bundle, *, intra_threads: int = 1, lean: bool = True) -> None:
        self.bundle = bundle
        self.manifest = bundle.manifest
        self._intra_threads = intra_threads
        self._lean = lean
        self._sessions: dict[str, ort.InferenceSession] = {}
        self._lock = threading.Lock()

    def session(self, rel: str) -> ort.InferenceSession:
        s = self._sessions.get(rel)
        if s is not None:
            return s
        with self._lock:
            s = self._sessions.get(rel)
            if s is None:
                s = make_session(
                    self.bundle.read_verified(rel),
                    intra_threads=self._intra_threads,
                    lean=self._lean,
                )
                self._sessions[rel] = s
            return s

    def chain(self, paths: Sequence[str]) -> Chain:
        return Chain(tuple(self.session(rel) for rel in paths))

    def full(self) -> Chain:
        return self.chain(self.manifest.full_paths())

    def head(self, split: str) -> Chain:
        return self.chain(self.manifest.head_paths(split))

    def tail(self, split: str) -> Chain:
        return self.chain(self.manifest.tail_paths(split))

    def loaded(self) -> set[str]:
        return set(self._sessions)
