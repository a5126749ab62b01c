"""Prometheus metrics of one cloud node, in its own registry (tests run several nodes
in one process) and exported over HTTP on ``--metrics-port``.

The per-batch histograms are plain counts behind one lock per (model, split), turned
into Prometheus samples only when scraped: prometheus_client's Histogram.observe takes
a lock per bucket walk and cost ~1.8 us per call, three-plus calls per batch on the
request path."""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from collab.metrics_http import MetricsEndpoint

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics(MetricsEndpoint):
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "collab_cloud_requests", "RPCs received", ["method", "model", "split"], registry=r
        )
        self.errors = Counter(
            "collab_cloud_errors",
            "RPCs answered with an error status",
            ["method", "code"],
            registry=r,
        )
        self._batches = _BatchHistograms()
        r.register(self._batches)
        self.dropped = Counter(
            "collab_cloud_dropped",
            "requests dropped before compute",
            ["model", "split", "reason"],
            registry=r,
        )
        self.inflight = Gauge("collab_cloud_inflight", "RPCs being handled", registry=r)
        self.queue_depth = Gauge(
            "collab_cloud_queue_depth", "samples waiting for a batch", registry=r
        )
        self.execution = Gauge(
            "collab_cloud_execution_mode",
            "1 for the execution mode each model runs in (threads or sessions)",
            ["model", "version", "mode"],
            registry=r,
        )

    def observer(self, model: str, split: str) -> BatchMetrics:
        """The batch observer of one (model, split); call once per queue."""
        obs = BatchMetrics(self, model, split)
        self._batches.add(model, split, obs)
        return obs

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """A sample's current value (0 if absent) — for tests and Probe-free introspection."""
        v = self.registry.get_sample_value(name, labels or {})
        return float(v) if v is not None else 0.0


class _Hist:
    """Bucket counts of one histogram series (cumulated only when scraped)."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(float(b) for b in bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # last: above every bound (+Inf)
        self.total = 0.0

    def observe(self, v: float) -> None:  # caller holds the series' lock
        self.counts[bisect_left(self.bounds, v)] += 1  # first bucket with v <= bound
        self.total += v

    def buckets(self) -> list[tuple[str, float]]:
        out, acc = [], 0
        for b, c in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            acc += c
            out.append((b, float(acc)))
        return out


class BatchMetrics:
    """Batch size, queue delay and compute time of one (model, split): the batcher's
    observer. Also counts drops (rare: a labelled prometheus Counter)."""

    def __init__(self, m: Metrics, model: str, split: str) -> None:
        self.lock = threading.Lock()
        self.size = _Hist(_BATCH_BUCKETS)
        self.queue = _Hist(_LATENCY_BUCKETS)
        self.compute = _Hist(_LATENCY_BUCKETS)
        self._dropped: Callable[[str], Any] = lambda reason: m.dropped.labels(model, split, reason)

    def batch(self, size: int, queue_s: Sequence[float], compute_s: float) -> None:
        with self.lock:
            self.size.observe(size)
            self.compute.observe(compute_s)
            for q in queue_s:
                self.queue.observe(q)

    def dropped(self, reason: str, n: int) -> None:
        self._dropped(reason).inc(n)


class _BatchHistograms(Collector):
    """Exposes every BatchMetrics as the three labelled histograms."""

    _FAMILIES = (
        ("collab_cloud_batch_size", "samples per executed batch", "size"),
        ("collab_cloud_queue_seconds", "enqueue to batch start", "queue"),
        ("collab_cloud_compute_seconds", "compute time per batch", "compute"),
    )

    def __init__(self) -> None:
        self._series: list[tuple[str, str, BatchMetrics]] = []

    def add(self, model: str, split: str, obs: BatchMetrics) -> None:
        self._series.append((model, split, obs))

    def collect(self) -> Iterator[HistogramMetricFamily]:
        fams = [
            HistogramMetricFamily(name, doc, labels=["model", "split"])
            for name, doc, _ in self._FAMILIES
        ]
        for model, split, obs in list(self._series):
            with obs.lock:
                snap = [
                    (getattr(obs, attr).buckets(), getattr(obs, attr).total)
                    for _, _, attr in self._FAMILIES
                ]
            for fam, (buckets, total) in zip(fams, snap, strict=True):
                fam.add_metric([model, split], buckets, total)
        yield from fams
