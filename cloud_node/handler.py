"""What the cloud node does for a request, independent of gRPC.

Decode and check the frame (or, cloud-only, the camera images: decoded and
preprocessed per the bundle), queue it on the (model, split) batcher, encode the
output losslessly, and report where the time went plus the node's current load.
Raises only domain errors (collab.errors); the servicer maps them to status codes.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import numpy as np

from cloud_node.batcher import Batcher, BatchObserver
from cloud_node.metrics import Metrics
from cloud_node.models import FULL, ModelRegistry, Runnable
from collab import codec
from collab.codec import image as images
from collab.errors import BadRequestError, TooLargeError
from collab.transport import LoadReport, ServerTiming

OUTPUT_CODEC = "f32"  # lossless: the edge gets exactly what the full model computes
_OUTPUT = codec.Codec.parse(OUTPUT_CODEC)
_EWMA = 0.2
_DEPTH = attrgetter("depth")
_F32 = np.dtype(np.float32)
# An image may be larger than the model input (the node resizes it), by this factor in
# pixels at most: the cap decode_image checks in the header before decoding anything.
IMAGE_PIXEL_FACTOR = 16


@dataclass(frozen=True, kw_only=True)
class TensorCall:
    """Infer (``split`` None: the whole model on an input frame) or Decode (a tail)."""

    model: str
    version: str = ""
    split: str | None = None
    frame: bytes
    images: tuple[bytes, ...] = ()  # Infer only: encoded camera images instead of a frame
    request_id: str = ""
    deadline: float | None = None  # time.monotonic() by which the caller needs the answer
    alive: Callable[[], bool] | None = None  # False once the caller went away


@dataclass(frozen=True, kw_only=True)
class TensorReply:
    request_id: str
    model: str
    version: str
    output: bytes
    timing: ServerTiming
    load: LoadReport


@dataclass(frozen=True, kw_only=True)
class ProbeCall:
    payload: bytes
    response_bytes: int = 0  # 0 = echo the payload, > 0 = that many bytes back
    client_send_time: float = 0.0


@dataclass(frozen=True, kw_only=True)
class ProbeReply:
    payload: bytes
    client_send_time: float
    received_bytes: int
    load: LoadReport
    models: tuple[tuple[str, str], ...]  # (name, version)


@dataclass(frozen=True)
class _Route:
    runnable: Runnable
    batcher: Batcher
    requests: Any  # the labelled prometheus Counter child of this (method, model, split)
    max_bytes: int  # decode limit: a full batch of this route's samples


class _LoadObserver:
    """Feeds batch statistics to Prometheus and to the node's load EWMAs."""

    def __init__(self, handler: CloudHandler, inner: BatchObserver) -> None:
        self._h = handler
        self._inner = inner

    def batch(self, size: int, queue_s: Sequence[float], compute_s: float) -> None:
        self._inner.batch(size, queue_s, compute_s)
        n = len(queue_s)
        q_ms = 1000.0 * (queue_s[0] if n == 1 else sum(queue_s) / n) if n else 0.0
        self._h.record_batch(q_ms, 1000.0 * compute_s)

    def dropped(self, reason: str, n: int) -> None:
        self._inner.dropped(reason, n)


class CloudHandler:
    """One per server; thread-safe (every gRPC handler thread calls it)."""

    def __init__(
        self,
        registry: ModelRegistry,
        *,
        metrics: Metrics,
        max_batch_size: int,
        max_wait_ms: float,
        max_message_bytes: int,
        max_probe_response_bytes: int,
        wait_when_idle: bool,
        edf: bool,
        max_queue_ms: float,
    ) -> None:
        """The batching settings come from :class:`cloud_node.config.CloudConfig` (no
        defaults here: it has the one default of each); a batcher has one slot per set
        of sessions of its model (cloud_node.execution)."""
        self.registry = registry
        self.metrics = metrics
        self.max_message_bytes = max_message_bytes
        # a Probe reply is never larger than this: no amplification from tiny requests
        self.max_probe_reply = min(max_probe_response_bytes, max_message_bytes - 1024)
        self.max_batch_size = max(1, max_batch_size)
        self._inflight = 0
        self._lock = threading.Lock()
        self._queue_ewma = 0.0
        self._compute_ewma = 0.0
        self._batchers: dict[tuple[str, str, str], Batcher] = {}
        for r in registry.runnables():
            obs = _LoadObserver(self, metrics.observer(r.model, r.split))
            self._batchers[r.key] = Batcher(
                r.chains,
                max_batch_size=max_batch_size,
                max_wait_ms=max_wait_ms,
                observer=obs,
                name=f"{r.model}/{r.split}",
                wait_when_idle=wait_when_idle,
                edf=edf,
                max_queue_ms=max_queue_ms,
                cores=r.cores,
            )
        for m in registry.models:
            metrics.execution.labels(m.name, m.version[:12], m.execution).set(1)
        self._all_batchers = tuple(self._batchers.values())
        self._counters = {
            r.key: metrics.requests.labels(
                "Infer" if r.split == FULL else "Decode", r.model, r.split
            )
            for r in registry.runnables()
        }  # every series exported from 0
        # (name, version as asked, split) -> what a request needs; filled on first use
        # with keys that resolved, so it stays as small as the set of valid keys
        self._routes: dict[tuple[str, str, str | None], _Route] = {}
        metrics.inflight.set_function(lambda: self._inflight)
        metrics.queue_depth.set_function(self.depth)
        self._probe_buf = os.urandom(64 * 1024)  # incompressible filler for probe replies

    # ----------------------------------------------------------------- load

    def depth(self) -> int:
        return sum(map(_DEPTH, self._all_batchers))

    def record_batch(self, queue_ms: float, compute_ms: float) -> None:
        """Fold one batch's mean queueing delay and its compute time into the load EWMAs."""
        self._queue_ewma += _EWMA * (queue_ms - self._queue_ewma)
        self._compute_ewma += _EWMA * (compute_ms - self._compute_ewma)

    def load(self) -> LoadReport:
        return LoadReport(
            queue_depth=self.depth(),
            inflight=self._inflight,
            queue_ms_ewma=self._queue_ewma,
            compute_ms_ewma=self._compute_ewma,
        )

    # ----------------------------------------------------------------- tensors

    def _route(self, call: TensorCall) -> _Route:
        key = (call.model, call.version, call.split)
        route = self._routes.get(key)
        if route is None:
            r = self.registry.resolve(call.model, call.version, call.split)  # NotFoundError
            route = self._routes[key] = _Route(
                r,
                self._batchers[r.key],
                self._counters[r.key],
                self.max_batch_size * r.sample_bytes,
            )
        return route

    def run(self, call: TensorCall) -> TensorReply:
        t0 = time.perf_counter()
        with self._lock:
            self._inflight += 1
        try:
            route = self._route(call)
            r = route.runnable
            route.requests.inc()
            x = (
                self._images(call, r)
                if call.images
                else self._decode(call.frame, r, route.max_bytes)
            )
            t1 = time.perf_counter()
            res = route.batcher.run(x, call.deadline, call.alive)
            out = codec.encode(res.output, _OUTPUT)
            timing = ServerTiming(
                queue_ms=res.queue_ms,
                compute_ms=res.compute_ms,
                decode_ms=(t1 - t0) * 1000.0,
                batch_size=res.batch_size,
                total_ms=(time.perf_counter() - t0) * 1000.0,
            )
            return TensorReply(
                request_id=call.request_id,
                model=r.model,
                version=r.version,
                output=out,
                timing=timing,
                load=self.load(),
            )
        finally:
            with self._lock:
                self._inflight -= 1

    def _decode(self, frame: bytes, r: Runnable, max_bytes: int) -> np.ndarray:
        """CodecError for a malformed frame, BadRequestError for one that does not fit the
        model, TooLargeError for more samples than a batch holds: told from the header
        alone, whatever size it declares, so the caller learns that its request (not the
        model) is at fault."""
        shape = codec.peek(frame, max_bytes=sys.maxsize).shape  # nothing decoded yet
        if shape and shape[0] > self.max_batch_size:
            raise TooLargeError(
                f"{shape[0]} samples in one request; at most {self.max_batch_size} allowed"
            )
        x = codec.decode(frame, max_bytes=max_bytes)
        want = r.sample_shape
        if x.shape[1:] != want or x.ndim == 0 or x.shape[0] < 1:
            split = r.split if r.split != FULL else "input"
            raise BadRequestError(
                f"{r.model}/{split}: expected shape [N, {', '.join(map(str, want))}], "
                f"got {list(x.shape)}"
            )
        return x if x.dtype == _F32 else x.astype(_F32)

    def _images(self, call: TensorCall, r: Runnable) -> np.ndarray:
        """The model input of the camera images of a cloud-only call: counted before any
        is decoded, each checked in its header (format, RGB, pixel cap) before its
        pixels are, then resized and normalised exactly as the edge does."""
        if call.frame or r.split != FULL:
            raise BadRequestError("images go in an Infer request, instead of a frame")
        pre = r.preprocessing
        if pre is None:
            raise BadRequestError(
                f"{r.model}: the bundle records no image preprocessing; send a tensor frame"
            )
        if len(call.images) > self.max_batch_size:
            raise TooLargeError(
                f"{len(call.images)} images in one request; at most {self.max_batch_size} allowed"
            )
        cap = IMAGE_PIXEL_FACTOR * pre.size[0] * pre.size[1]
        pixels = np.stack(
            [
                images.resize(images.decode_image(b, max_pixels=cap)[None], pre.size)[0]
                for b in call.images
            ]
        )
        return images.normalize(pixels, pre.mean, pre.std)

    # ----------------------------------------------------------------- probes

    def probe(self, call: ProbeCall) -> ProbeReply:
        n = call.response_bytes
        if n < 0:
            raise BadRequestError(f"response_bytes must be >= 0, got {n}")
        if n > self.max_probe_reply:
            raise TooLargeError(f"response_bytes {n} exceeds the limit {self.max_probe_reply}")
        if n == 0:
            payload = call.payload
        else:
            reps = -(-n // len(self._probe_buf))
            payload = (self._probe_buf * reps)[:n] if reps > 1 else self._probe_buf[:n]
        return ProbeReply(
            payload=payload,
            client_send_time=call.client_send_time,
            received_bytes=len(call.payload),
            load=self.load(),
            models=self.served(),
        )

    def served(self) -> tuple[tuple[str, str], ...]:
        """(model name, bundle version) of every model this node serves."""
        return tuple((m.name, m.version) for m in self.registry.models)

    def close(self) -> None:
        """Refuse new work; queued requests run at once instead of after their window."""
        for b in self._batchers.values():
            b.close()
