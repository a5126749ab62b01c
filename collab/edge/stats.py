"""What the client counts: totals since start (:class:`ClientStats`) and the telemetry
interval since the previous :meth:`StatsRecorder.take_interval` (:class:`Interval`)."""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np

from collab.net.estimator import NetState

_LATENCIES = 10_000  # the totals' percentiles cover the last this many requests
_INTERVAL_LATENCIES = 100_000  # an interval keeps at most this many


@dataclass(frozen=True, kw_only=True)
class Latency:
    """Milliseconds; NaN before the first request."""

    mean: float
    p50: float
    p95: float
    p99: float


@dataclass(frozen=True, kw_only=True)
class LinkStats:
    net: NetState  # the estimate the next decision uses
    failures: int
    timeouts: int
    level_shifts: int  # RTT and bandwidth level shifts detected


@dataclass(frozen=True, kw_only=True)
class ClientStats:
    requests: int
    fallbacks: int
    deadline_misses: int
    bytes_sent: int
    paths: dict[str, int]  # edge_only | cloud_only | split -> requests
    fallback_reasons: dict[str, int]  # reason up to its first ":" -> requests
    latency_ms: Latency
    breaker: str  # closed | open | half_open
    breaker_opened: int
    cloud_reachable: bool
    probes: int
    cloud: tuple[str, ...]
    model_version: str
    link: LinkStats


@dataclass(frozen=True, kw_only=True)
class Interval:
    """One telemetry interval (collab.control's Telemetry message)."""

    interval_s: float
    requests: int
    path_mix: dict[str, int]
    fallbacks: int
    bytes_sent: int
    p50_ms: float  # 0.0 in an interval without requests
    p95_ms: float
    p99_ms: float


@dataclass
class _Window:
    start: float = field(default_factory=time.monotonic)
    latencies: list[float] = field(default_factory=list)
    paths: Counter[str] = field(default_factory=Counter)
    fallbacks: int = 0
    bytes_sent: int = 0


class StatsRecorder:
    """Thread-safe counters of one client."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = self.fallbacks = self.deadline_misses = self.bytes_sent = 0
        self.paths: Counter[str] = Counter()
        self.fallback_reasons: Counter[str] = Counter()
        self._latencies: deque[float] = deque(maxlen=_LATENCIES)
        self._window = _Window()

    def record(
        self,
        *,
        path: str,
        total_ms: float,
        sent: int,
        fell_back: bool,
        reason: str | None,
        met: bool,
    ) -> None:
        with self._lock:
            self.requests += 1
            self.paths[path] += 1
            self.bytes_sent += sent
            self._latencies.append(total_ms)
            self.deadline_misses += int(not met)
            w = self._window
            w.paths[path] += 1
            w.bytes_sent += sent
            if len(w.latencies) < _INTERVAL_LATENCIES:
                w.latencies.append(total_ms)
            if fell_back:
                w.fallbacks += 1
                self.fallbacks += 1
                self.fallback_reasons[(reason or "?").split(":")[0]] += 1

    def snapshot(
        self,
        *,
        breaker: str,
        breaker_opened: int,
        cloud_reachable: bool,
        probes: int,
        cloud: tuple[str, ...],
        model_version: str,
        link: LinkStats,
    ) -> ClientStats:
        """The totals plus the live state the caller passes in."""
        with self._lock:
            lat = np.array(self._latencies, dtype=np.float64)
            pct = [float(np.percentile(lat, q)) if lat.size else math.nan for q in (50, 95, 99)]
            return ClientStats(
                requests=self.requests,
                fallbacks=self.fallbacks,
                deadline_misses=self.deadline_misses,
                bytes_sent=self.bytes_sent,
                paths=dict(self.paths),
                fallback_reasons=dict(self.fallback_reasons),
                latency_ms=Latency(
                    mean=float(lat.mean()) if lat.size else math.nan,
                    p50=pct[0],
                    p95=pct[1],
                    p99=pct[2],
                ),
                breaker=breaker,
                breaker_opened=breaker_opened,
                cloud_reachable=cloud_reachable,
                probes=probes,
                cloud=cloud,
                model_version=model_version,
                link=link,
            )

    def take_interval(self) -> Interval:
        """The interval since the previous call, then a new one starts."""
        new = _Window()
        with self._lock:
            w, self._window = self._window, new
        lat = np.array(w.latencies, dtype=np.float64)
        p50, p95, p99 = (float(np.percentile(lat, q)) if lat.size else 0.0 for q in (50, 95, 99))
        return Interval(
            interval_s=new.start - w.start,
            requests=int(lat.size),
            path_mix=dict(w.paths),
            fallbacks=w.fallbacks,
            bytes_sent=w.bytes_sent,
            p50_ms=p50,
            p95_ms=p95,
            p99_ms=p99,
        )
