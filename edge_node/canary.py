"""Per-version telemetry and the shadow baseline of an edge node in a canary rollout.

:class:`VersionMonitor` counts requests, errors and a uniform sample of latencies per
bundle version served in a telemetry interval. While a signed directive names a
``shadow_version`` (the canary's baseline), it keeps that bundle loaded and runs it on a
sampled share of the requests in one background worker, after the answer went out (the
candidate's latency is not charged with it); a request sampled while the worker is busy
is dropped and counted, never queued without bound. The shadow's top-1 is compared with
the served answer: the candidate's agreement with the baseline.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import random
import threading
from pathlib import Path

import numpy as np

from collab.control.canary import MAX_LATENCY_SAMPLES, VersionTelemetry
from collab.edge.config import ClientConfig, InferenceResult
from collab.edge.model import LoadedModel, load_model
from collab.log import logger

_QUEUE = 4  # shadow requests waiting at most; beyond, sampled requests are dropped


@dataclasses.dataclass
class _Counts:
    requests: int = 0
    errors: int = 0
    seen: int = 0  # latencies offered to the reservoir
    latency_ms: list[float] = dataclasses.field(default_factory=list)
    shadow_version: str = ""
    compared: int = 0
    agreed: int = 0
    dropped: int = 0


class VersionMonitor:
    def __init__(self, config: ClientConfig) -> None:
        self._config = dataclasses.replace(config, warm=False)
        self._lock = threading.Lock()
        self._counts: dict[str, _Counts] = {}
        self._rng = random.Random()  # sampling only, nothing secret
        self._dirs: dict[str, Path] = {}  # version -> bundle dir this node has served
        self._shadow: LoadedModel | None = None
        self._share = 0.0
        self._queue: queue.Queue[tuple[np.ndarray, np.ndarray, str] | None] = queue.Queue(_QUEUE)
        self._worker: threading.Thread | None = None  # runs only while there is a shadow
        self.shadow_failures = 0  # shadow runs that raised (logged once per shadow)

    # ---------------------------------------------------------- what was served
    def served(self, version: str, bundle_dir: Path) -> None:
        """Remember where ``version`` lives, to load it as a shadow later."""
        self._dirs[version] = Path(bundle_dir)

    def _c(self, version: str) -> _Counts:
        c = self._counts.get(version)
        if c is None:
            c = self._counts[version] = _Counts()
        return c

    def observe(self, x: np.ndarray, r: InferenceResult) -> None:
        with self._lock:
            c = self._c(r.model_version)
            c.requests += 1
            c.seen += 1
            if len(c.latency_ms) < MAX_LATENCY_SAMPLES:
                c.latency_ms.append(r.latency_ms)
            else:  # reservoir sampling: every latency equally likely to be kept
                j = self._rng.randrange(c.seen)
                if j < MAX_LATENCY_SAMPLES:
                    c.latency_ms[j] = r.latency_ms
            shadow = self._shadow
            if shadow is None or shadow.bundle.version == r.model_version:
                return
            if self._rng.random() >= self._share:
                return
        try:
            self._queue.put_nowait((x, np.asarray(r.output), r.model_version))
        except queue.Full:
            with self._lock:
                self._c(r.model_version).dropped += 1

    def error(self, version: str) -> None:
        with self._lock:
            c = self._c(version)
            c.requests += 1
            c.errors += 1

    def take(self) -> tuple[VersionTelemetry, ...]:
        """The interval's statistics per version, then reset."""
        with self._lock:
            counts, self._counts = self._counts, {}
        return tuple(
            VersionTelemetry(
                version=v,
                requests=c.requests,
                errors=c.errors,
                latency_ms=tuple(c.latency_ms),
                shadow_version=c.shadow_version,
                shadow_compared=c.compared,
                shadow_agreed=c.agreed,
                shadow_dropped=c.dropped,
            )
            for v, c in sorted(counts.items())
        )

    # ---------------------------------------------------------- the shadow
    def set_shadow(self, version: str, share: float) -> None:
        """Run ``version`` on ``share`` of the requests (``""``: no shadow)."""
        current = self._shadow
        if not version or share <= 0:
            if current is not None:
                logger.info("shadow of %s stopped", current.bundle.version[:12])
            with self._lock:
                self._shadow, self._share = None, 0.0
            self.close()
            return
        if current is None or current.bundle.version != version:
            self.shadow_failures = 0
            where = self._dirs.get(version)
            if where is None:
                logger.warning(
                    "canary shadow %s: this node never served it; no shadow", version[:12]
                )
                return
            try:
                current = load_model(where, self._config)
            except Exception as e:  # the canary then lacks agreement data and times out
                logger.warning("canary shadow %s could not be loaded: %s", version[:12], e)
                return
        with self._lock:
            self._shadow, self._share = current, share
        if self._worker is None:
            self._worker = threading.Thread(target=self._run, name="edge-shadow", daemon=True)
            self._worker.start()
        logger.info("shadow of %s on %.0f%% of requests", version[:12], share * 100)

    def _run(self) -> None:
        with contextlib.suppress(AttributeError, OSError):  # Linux: a thread's own niceness
            # the shadow yields the cores to the requests it shadows (less bias on the
            # candidate's measured latency)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        while True:
            item = self._queue.get()
            if item is None:
                return
            x, served, version = item
            shadow = self._shadow
            if shadow is None:
                continue
            try:
                arr, _ = shadow.check_input(x)
                y, _ = shadow.runtime.full(arr)
                a = np.asarray(served).reshape(y.shape).reshape(len(y), -1).argmax(axis=1)
                b = y.reshape(len(y), -1).argmax(axis=1)
                agreed = int((a == b).sum())
            except Exception as e:  # e.g. a candidate whose input or output shape differs
                self.shadow_failures += 1
                if self.shadow_failures == 1:
                    logger.warning("shadow run failed (logged once): %s", e)
                continue
            with self._lock:
                c = self._c(version)
                c.shadow_version = shadow.bundle.version
                c.compared += len(y)
                c.agreed += agreed

    def close(self) -> None:
        """Stop the shadow worker (if any) once it finished what it holds."""
        w, self._worker = self._worker, None
        if w is None:
            return
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=2.0)
        w.join(2.0)
