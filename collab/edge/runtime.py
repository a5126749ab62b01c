"""The edge runtime: ONNX Runtime sessions for the full model, heads and tails.

Shared by the SDK (collab.Client) and the edge daemon. Sessions load lazily and are
cached: the full model is loaded first (so edge-only answers are possible as soon as
possible), the rest by :meth:`EdgeRuntime.warm` (the client runs it in the
background, :class:`Warmer`). Tails are kept on the edge too: when a collaborative call fails, the
tail finishes the request from the head output already computed, so no edge work
is wasted (design decision of the fallback; costs the tails' memory).

``slowdown`` emulates a weaker device by sleeping (slowdown - 1) x the model's profiled
compute time (the bundle manifest's median, measured when the bundle was built) after
every run, so a run takes what it took here plus that padding. Padding by a fixed
profile, not by this run's time or by a statistic of recent runs, keeps host noise out of
the factor (an OS stall, a GIL wait or load from another process is added once, as it
would be on the device, not multiplied) and makes the device equally fast for every
policy, whatever mix of paths it ran before.
No torch import anywhere here.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from collab.bundle import Bundle, load_bundle
from collab.errors import BundleError, CollabError, ConfigError
from collab.log import logger
from collab.ort import InferenceError, dummy_inputs, make_session, run

_WARM_RUNS = 3


def _cancelled(stop: threading.Event | None) -> bool:
    """Stop requested, or the interpreter is shutting down: ``threading`` marks the main
    thread finished before it joins the remaining non-daemon threads, so a warm-up on
    such a thread ends after its current step instead of delaying exit by a whole bundle."""
    return (stop is not None and stop.is_set()) or not threading.main_thread().is_alive()


class EdgeRuntime:
    def __init__(self, bundle: Bundle | str | Path, *, intra_threads: int = 1, slowdown: float = 1.0) -> None:
        if slowdown < 1.0:
            raise ConfigError(f"slowdown must be >= 1.0 (got {slowdown})")
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        self.manifest = self.bundle.manifest
        self.intra_threads = intra_threads
        self.slowdown = slowdown
        self._sessions: dict[str, ort.InferenceSession] = {}
        # model file -> profiled compute ms, the unit of the slowdown's padding
        self._profiled: dict[str, float] = {self.manifest.full: self.manifest.full_ms}
        for sp in self.manifest.split_points:
            self._profiled.update({sp.head: sp.head_ms, sp.tail: sp.tail_ms})
            self._profiled.update({v.path: v.ms for v in sp.head_variants})
        self._profiled.update({v.path: v.ms for v in self.manifest.full_variants})
        self._lock = threading.Lock()
        self._heads = {sp.name: sp.head for sp in self.manifest.split_points}
        self._tails = {sp.name: sp.tail for sp in self.manifest.split_points}
        self._head_variants = {(sp.name, v.name): v.path for sp in self.manifest.split_points
                               for v in sp.head_variants}
        self._full_variants = {v.name: v.path for v in self.manifest.full_variants}
        # model file -> shape of its (first) input recorded at build time, batch 1
        self._known_shapes: dict[str, tuple[int, ...]] = {
            rel: tuple(self.manifest.input_shape) for rel in
            (self.manifest.full, *self._heads.values(), *self._head_variants.values(), *self._full_variants.values())}
        self._known_shapes.update({sp.tail: tuple(sp.feature_shape) for sp in self.manifest.split_points})

    # -- sessions ---------------------------------------------------------------------
    def session(self, rel: str) -> ort.InferenceSession:
        s = self._sessions.get(rel)
        if s is not None:
            return s
        with self._lock:
            s = self._sessions.get(rel)
            if s is None:
                s = make_session(self.bundle.path(rel), intra_threads=self.intra_threads)
                self._sessions[rel] = s
            return s

    def all_paths(self) -> list[str]:
        return [self.manifest.full, *self._heads.values(), *self._tails.values(),
                *self._head_variants.values(), *self._full_variants.values()]

    def warm(self, paths: list[str] | None = None, stop: threading.Event | None = None) -> bool:
        """Load sessions and run each new one a few times on zeros: a session's first
        runs are slower (arena growth), which the first requests should not pay.

        Cancellable: ``stop`` (and interpreter shutdown, see :func:`_cancelled`) is checked
        before every session load and every run, so a caller waits for at most one of
        those. Returns False if it stopped early."""
        for rel in paths if paths is not None else self.all_paths():
            if _cancelled(stop):
                return False
            fresh = rel not in self._sessions
            sess = self.session(rel)
            if fresh and not self._warm_runs(rel, sess, stop):
                return False
        return True

    def _warm_runs(self, rel: str, sess: ort.InferenceSession, stop: threading.Event | None) -> bool:
        """Run ``sess`` on zeros of its own declared inputs (every input, its dtype). A
        symbolic dim takes the bundle's recorded shape when known (the manifest's input or
        cut tensor shape: a tail after a dynamic reshape declares e.g. ``[batch, 'dim_1']``,
        and 1 there makes a Conv fail), else 1."""
        try:
            feeds = dummy_inputs(sess, {0: self._known_shapes.get(rel, ())})
        except InferenceError as e:  # e.g. a string input: warmed by its first request
            logger.debug("warm-up of %s skipped: %s", rel, e)
            return True
        for _ in range(_WARM_RUNS):
            if _cancelled(stop):
                return False
            try:
                run(sess, feeds)
            except InferenceError as e:
                logger.warning("warm-up run of %s failed: %s", rel, e)
                return True
        return True

    def loaded(self) -> int:
        return len(self._sessions)

    # -- running ------------------------------------------------------------------------
    def _timed(self, rel: str, x: np.ndarray) -> tuple[np.ndarray, float]:
        sess = self.session(rel)
        t0 = time.perf_counter()
        y = run(sess, x)
        ms = (time.perf_counter() - t0) * 1000.0
        if self.slowdown > 1.0:
            profiled = self._profiled.get(rel, 0.0)
            pad = (profiled if profiled > 0 else ms) * (self.slowdown - 1.0)
            time.sleep(pad / 1000.0)
            ms += pad
        return y, ms

    def full(self, x: np.ndarray, variant: str | None = None) -> tuple[np.ndarray, float]:
        """Edge-only: (output, compute ms including slowdown padding)."""
        if variant is None:
            return self._timed(self.manifest.full, x)
        try:
            return self._timed(self._full_variants[variant], x)
        except KeyError:
            raise BundleError(f"unknown edge-only variant {variant!r}") from None

    def head(self, split: str, x: np.ndarray, variant: str | None = None) -> tuple[np.ndarray, float]:
        try:
            rel = self._heads[split] if variant is None else self._head_variants[(split, variant)]
        except KeyError:
            raise BundleError(f"unknown split point/variant {split!r}/{variant!r}") from None
        return self._timed(rel, x)

    def tail(self, split: str, feature: np.ndarray) -> tuple[np.ndarray, float]:
        try:
            rel = self._tails[split]
        except KeyError:
            raise BundleError(f"unknown split point {split!r}") from None
        return self._timed(rel, feature)


@dataclass
class Warmer:
    """The background warm-up of one runtime: created idle, started by its owner (the
    client registers it first, so ``close()`` can always join it).

    The thread is NOT a daemon. The interpreter never joins daemon threads, and one still
    inside ONNX Runtime when the process exits aborts it (SIGABRT, exit code 134,
    "terminate called without an active exception"). A non-daemon thread is joined by
    interpreter shutdown, and it notices that shutdown between two sessions or runs
    (:meth:`EdgeRuntime.warm`), so a script that never calls close() exits cleanly too,
    after at most one session load. ``close()`` and ``swap_bundle`` stop it through
    :attr:`stop`."""

    runtime: EdgeRuntime
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread = field(init=False)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, name="collab-warm", daemon=False)

    def _run(self) -> None:
        try:
            self.runtime.warm(stop=self.stop)
        except CollabError as e:  # a broken file surfaces again, with its name, when used
            logger.warning("warming sessions failed: %s", e)
