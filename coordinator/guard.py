"""Bad input accounting: every ignored message is counted by cause (a Prometheus
counter and a plain dict for ``collab status``) and logged once per cause, so a
misbehaving or hostile node cannot flood the log."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter

from collab.log import logger

CAUSES = (
    "oversized",
    "malformed",
    "bad_topic",
    "unknown_node",
    "id_mismatch",
    "role_conflict",
    "stale_ack",
    "canary_ignored",  # a canary telemetry window of a node outside the canary and its control
)


class Rejections:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.metrics = registry or CollectorRegistry()
        self._counter = Counter(
            "collab_coordinator_rejected_messages",
            "Control-plane messages ignored",
            ["cause"],
            registry=self.metrics,
        )
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def reject(self, cause: str, detail: str) -> None:
        with self._lock:
            n = self.counts.get(cause, 0) + 1
            self.counts[cause] = n
        self._counter.labels(cause).inc()
        if n == 1:
            logger.warning(
                "ignoring control message (%s): %s [logged once per cause; see metric]",
                cause,
                detail[:300],
            )
