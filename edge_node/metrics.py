"""Prometheus metrics of the edge daemon (own registry, so several nodes fit in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from collab.metrics_http import MetricsEndpoint

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class EdgeMetrics(MetricsEndpoint):
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "collab_edge_requests", "requests answered, by path", ["path"], registry=r
        )
        self.fallbacks = Counter(
            "collab_edge_fallbacks",
            "requests finished locally after a cloud failure",
            ["reason"],
            registry=r,
        )
        self.errors = Counter(
            "collab_edge_errors", "requests answered with an error status", ["code"], registry=r
        )
        self.latency = Histogram(
            "collab_edge_latency_seconds",
            "end-to-end latency on the edge",
            ["path"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.bytes_sent = Counter("collab_edge_bytes_sent", "bytes sent to the cloud", registry=r)
        self.deadline_misses = Counter(
            "collab_edge_deadline_misses", "answers later than their deadline", registry=r
        )
        self.breaker_open = Gauge(
            "collab_edge_breaker_open", "1 while the cloud circuit breaker is open", registry=r
        )
        self.cloud_reachable = Gauge(
            "collab_edge_cloud_reachable", "1 while probes reach the cloud", registry=r
        )

    def observe(
        self,
        *,
        path: str,
        seconds: float,
        bytes_sent: int,
        fell_back: bool,
        reason: str | None,
        deadline_met: bool,
    ) -> None:
        self.requests.labels(path).inc()
        self.latency.labels(path).observe(seconds)
        self.bytes_sent.inc(bytes_sent)
        if fell_back:
            self.fallbacks.labels((reason or "unknown").split(":")[0][:40]).inc()
        if not deadline_met:
            self.deadline_misses.inc()
