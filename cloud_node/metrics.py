"""Prometheus metrics of one cloud node, in its own registry (tests run several nodes
in one process) and exported over HTTP on ``--metrics-port``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("collab_cloud_requests", "RPCs received",
                                ["method", "model", "split"], registry=r)
        self.errors = Counter("collab_cloud_errors", "RPCs answered with an error status",
                              ["method", "code"], registry=r)
        self.batch_size = Histogram("collab_cloud_batch_size", "samples per executed batch",
                                    ["model", "split"], buckets=_BATCH_BUCKETS, registry=r)
        self.queue_seconds = Histogram("collab_cloud_queue_seconds", "enqueue to batch start",
                                       ["model", "split"], buckets=_LATENCY_BUCKETS, registry=r)
        self.compute_seconds = Histogram("collab_cloud_compute_seconds", "compute time per batch",
                                         ["model", "split"], buckets=_LATENCY_BUCKETS, registry=r)
        self.dropped = Counter("collab_cloud_dropped", "requests dropped before compute",
                               ["model", "split", "reason"], registry=r)
        self.inflight = Gauge("collab_cloud_inflight", "RPCs being handled", registry=r)
        self.queue_depth = Gauge("collab_cloud_queue_depth", "samples waiting for a batch",
                                 registry=r)
        self._http: Any = None

    def observer(self, model: str, split: str) -> BatchMetrics:
        return BatchMetrics(self, model, split)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """A sample's current value (0 if absent) — for tests and Probe-free introspection."""
        v = self.registry.get_sample_value(name, labels or {})
        return float(v) if v is not None else 0.0

    def serve_http(self, port: int, host: str = "127.0.0.1") -> int:
        """Start the /metrics endpoint; returns the bound port (``port`` 0 = any free)."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._http = server
        return int(server.server_port)

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


class BatchMetrics:
    """Label-bound children for one (model, split): the batcher's observer."""

    def __init__(self, m: Metrics, model: str, split: str) -> None:
        self._batch = m.batch_size.labels(model, split)
        self._queue = m.queue_seconds.labels(model, split)
        self._compute = m.compute_seconds.labels(model, split)
        self._dropped: Callable[[str], Any] = lambda reason: m.dropped.labels(model, split, reason)

    def batch(self, size: int, queue_s: Sequence[float], compute_s: float) -> None:
        self._batch.observe(size)
        self._compute.observe(compute_s)
        for q in queue_s:
            self._queue.observe(q)

    def dropped(self, reason: str, n: int) -> None:
        self._dropped(reason).inc(n)
