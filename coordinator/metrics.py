"""Prometheus metrics of the coordinator (``collab coordinator --metrics-port``): fleet
size by state, messages handled, registry commits, commit lag, rollout progress and drift,
the latest canary, read from live state at scrape time so the message path pays nothing."""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Protocol

from prometheus_client import CollectorRegistry, Gauge

from collab.control import canary as cn
from collab.control import messages as msg
from coordinator.db import Database
from coordinator.registry import Registry


class Observed(Protocol):
    """What the gauges read: :class:`coordinator.daemon.Coordinator`, which registers them
    (a protocol, so this module does not import the daemon back)."""

    @property
    def registry(self) -> Registry: ...

    @property
    def db(self) -> Database: ...

    @property
    def processed(self) -> int: ...

    @property
    def lags(self) -> collections.deque[float]: ...

    def rollout_status(self) -> msg.RolloutStatus | None: ...

    def drift(self) -> dict[str, str]: ...

    def canary_status(self) -> cn.CanaryRecord | None: ...


def register(c: Observed, registry: CollectorRegistry) -> None:
    def count_nodes(role: str, online: bool) -> Callable[[], float]:
        return lambda: sum(
            1 for n in list(c.registry.nodes.values()) if n.role == role and n.online == online
        )

    def count_targets(state: str) -> Callable[[], float]:
        return lambda: st.count(state) if (st := c.rollout_status()) else 0

    nodes = Gauge(
        "collab_coordinator_nodes", "Registered nodes", ["role", "state"], registry=registry
    )
    for role in ("edge", "cloud"):
        for state, online in (("online", True), ("offline", False)):
            nodes.labels(role, state).set_function(count_nodes(role, online))
    Gauge(
        "collab_coordinator_messages", "MQTT messages handled since start", registry=registry
    ).set_function(lambda: c.processed)
    Gauge(
        "collab_coordinator_registry_commits",
        "SQLite transactions committed since start",
        registry=registry,
    ).set_function(lambda: c.db.commits)
    Gauge(
        "collab_coordinator_commit_lag_seconds",
        "Latest publish -> registry commit lag",
        registry=registry,
    ).set_function(lambda: c.lags[-1] if c.lags else 0.0)
    ro = Gauge(
        "collab_coordinator_rollout_nodes",
        "Targets of the current rollout by state",
        ["state"],
        registry=registry,
    )
    for state in ("pending", "acked", "refused"):
        ro.labels(state).set_function(count_targets(state))
    Gauge(
        "collab_coordinator_drifted_nodes",
        "Nodes that acked the current rollout but report another version",
        registry=registry,
    ).set_function(lambda: len(c.drift()))
    canary = Gauge(
        "collab_coordinator_canary_state",
        "1 for the latest canary's state (running, promoted, rolled_back, superseded)",
        ["state"],
        registry=registry,
    )

    def canary_in(state: str) -> Callable[[], float]:
        return lambda: float((r := c.canary_status()) is not None and r.state == state)

    for state in cn.STATES:
        canary.labels(state).set_function(canary_in(state))
    Gauge(
        "collab_coordinator_canary_step",
        "Step of the latest canary (-1: none)",
        registry=registry,
    ).set_function(lambda: r.step if (r := c.canary_status()) else -1)
    Gauge(
        "collab_coordinator_canary_ignored_windows",
        "Telemetry windows the latest canary ignored (nodes outside it and its control)",
        registry=registry,
    ).set_function(lambda: r.ignored_windows if (r := c.canary_status()) else 0)
