"""The edge daemon's self-healing loop: it watches the device and recovers without losing
a request (the fault-tolerance loop of the design).

- memory: RSS over ``memory_threshold`` of the budget (a leaking runtime) -> fresh runtime
  sessions of the same bundle (:meth:`Client.restart_runtime`).
- latency: the median FP32 edge compute over ``latency_budget`` x the deadline for a window
  (a slowed device) -> every request edge-only on the bundle's lightest full-model variant;
  FP32 again once it is predicted under ``latency_recover`` of the budget for a window.
- integrity: the bundle's files re-hashed every ``integrity_interval_s`` (a file changed on
  disk) -> re-fetched as the signed directive describes it, verified, swapped in.
- cloud probes fail (link down) -> offline mode: every request edge-only until one answers.
- broker connection lost -> telemetry queued (bounded, oldest dropped) until it is back.

No recovery drops a request: a restart or swap replaces the client's model snapshot, and a
request that took the old one finishes on it (:mod:`collab.edge.model`); serving goes on
from the in-memory sessions while a damaged bundle is re-fetched. Every action is logged
(rate-limited), counted in ``collab_edge_watchdog_actions_total{kind}`` and sent to the
coordinator in the node's telemetry (``recoveries``, ``health``; ``collab status``).
"""

from __future__ import annotations

import gc
import logging
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge

from collab.bundle import Variant, load_bundle
from collab.edge.client import Client
from collab.edge.config import InferenceResult
from collab.errors import CollabError
from collab.log import RateLimited, logger
from edge_node.faults import FaultInjector
from edge_node.resources import device_memory_bytes, rss_bytes
from edge_node.watchdog_config import WatchdogConfig

ACTIONS = (
    "runtime_restart",  # RSS over the threshold: fresh sessions
    "restart_failed",  # ... and they could not be built (a file no longer verifies)
    "process_restart",  # ... and restarts did not help: the process exits for its supervisor
    "variant_switch",  # latency over budget: the lightest variant serves
    "variant_restore",  # ... and FP32 is back
    "integrity_fail",  # a bundle file on disk no longer matches its hash
    "refetch",  # ... re-fetched, verified and swapped in
    "refetch_failed",  # ... and the re-fetch failed (retried)
    "offline_enter",  # cloud unreachable: edge-only
    "offline_exit",
    "broker_lost",  # broker unreachable: telemetry queued
    "broker_back",
)
_MIB = 1 << 20
EXIT_RESTART = 75  # EX_TEMPFAIL: collab edge's exit code when it asks to be restarted


@dataclass(frozen=True)
class Action:
    kind: str
    at: float  # time.time()
    detail: str


@dataclass(frozen=True)
class _Sample:
    at: float  # time.monotonic()
    ratio: float  # the FP32 full model's edge compute / the request's deadline (predicted
    # from the variant's compute while a variant serves)


class Watchdog:
    def __init__(
        self,
        config: WatchdogConfig,
        client: Client,
        registry: CollectorRegistry,
        *,
        default_deadline_ms: float | None = None,
        escalate: Callable[[str], None] | None = None,
    ) -> None:
        """``escalate``: how to have the whole process restarted (collab edge: stop and exit
        with :data:`EXIT_RESTART`); without it a leak that restarts do not cure is only logged."""
        self.config = config
        self._escalate = escalate
        self._futile = 0  # restarts in a row after which RSS stayed over the threshold
        self._restarted = False  # RSS has not been under the threshold since the last restart
        self.client = client
        self._deadline = default_deadline_ms
        self._log = RateLimited(logger, interval_s=config.log_interval_s)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._integrity_wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._samples: deque[_Sample] = deque(maxlen=4096)
        self._since = time.monotonic()  # start of the current latency regime
        self._version = client.bundle.version
        self._variant: str | None = None  # the lightest variant while it serves
        self._offline = False
        self._broker_down = False
        self._damaged = ""  # why the bundle on disk fails its check, until re-fetched
        self._last_restart = -float("inf")
        self.counts: dict[str, int] = {}
        self.actions: deque[Action] = deque(maxlen=256)  # newest last
        budget = config.memory_budget_mb
        self.memory_budget = int(budget * _MIB) if budget is not None else device_memory_bytes()
        self._refetch: Callable[[], Path] | None = None
        self._broker_up: Callable[[], bool] | None = None
        self._dropped: Callable[[], int] = lambda: 0
        self.faults = (
            FaultInjector(config.fault_injection, client, self._log)
            if config.fault_injection is not None
            else None
        )
        r = registry
        self.m_actions = Counter(
            "collab_edge_watchdog_actions", "self-healing actions, by kind", ["kind"], registry=r
        )
        self.m_rss = Gauge("collab_edge_rss_bytes", "resident memory of the daemon", registry=r)
        self.m_budget = Gauge(
            "collab_edge_memory_budget_bytes", "the memory budget RSS is held to", registry=r
        )
        self.m_offline = Gauge(
            "collab_edge_offline", "1 while offline mode serves edge-only", registry=r
        )
        self.m_degraded = Gauge(
            "collab_edge_degraded", "1 while the lightest variant serves", registry=r
        )
        self.m_budget.set(self.memory_budget)

    # -- wiring --------------------------------------------------------------------------
    def attach_fleet(
        self,
        refetch: Callable[[], Path],
        *,
        broker_up: Callable[[], bool],
        dropped: Callable[[], int],
    ) -> None:
        """Fleet membership: how to re-fetch the served bundle, whether the broker is up,
        how many queued telemetry intervals an outage pushed out."""
        self._refetch, self._broker_up, self._dropped = refetch, broker_up, dropped

    def start(self) -> Watchdog:
        if not self.config.enabled:
            return self
        for name, target in (("watchdog", self._loop), ("integrity", self._integrity_loop)):
            # not daemons: a restart builds ONNX Runtime sessions, which must not be cut by exit
            t = threading.Thread(target=target, name=f"collab-{name}", daemon=False)
            t.start()
            self._threads.append(t)
        logger.info(
            "watchdog on: memory budget %.0f MiB (restart above %.0f%%), latency budget %.0f%% "
            "of the deadline, integrity every %.0f s",
            self.memory_budget / _MIB,
            self.config.memory_threshold * 100,
            self.config.latency_budget * 100,
            self.config.integrity_interval_s,
        )
        return self

    def stop(self) -> None:
        self._stop.set()
        self._integrity_wake.set()
        for t in self._threads:
            t.join(10.0)

    # -- what the coordinator and metrics see ---------------------------------------------
    def health(self) -> str:
        modes = [
            m
            for m, on in (
                ("offline", self._offline),
                ("broker-down", self._broker_down),
                (f"degraded:{self._variant}", self._variant is not None),
                ("damaged", bool(self._damaged)),
            )
            if on
        ]
        return ",".join(modes) or "ok"

    def recoveries(self) -> dict[str, int]:
        with self._lock:
            out = dict(self.counts)
        dropped = self._dropped()
        if dropped:
            out["telemetry_dropped"] = dropped
        return out

    def _act(self, kind: str, detail: str, *, level: int = logging.WARNING) -> None:
        with self._lock:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            self.actions.append(Action(kind, time.time(), detail))
        self.m_actions.labels(kind).inc()
        self._log.log(level, kind, "watchdog: %s: %s", kind.replace("_", " "), detail)

    # -- the request path (cheap: called for every answer) -----------------------------
    def observe(self, r: InferenceResult, deadline_ms: float | None) -> None:
        """Count an edge-only answer's compute against its deadline."""
        deadline = deadline_ms if deadline_ms is not None else self._deadline
        edge_ms = r.timings.get("edge_ms")
        if r.path != "edge_only" or edge_ms is None or not deadline:
            return
        variant = self._variant
        if r.variant != variant or r.model_version != self._version:
            return  # a request that took another path than the current regime judges
        ratio = edge_ms / deadline
        if variant is not None:
            ratio *= self._fp32_per_variant(variant)
        with self._lock:
            self._samples.append(_Sample(time.monotonic(), ratio))

    def _fp32_per_variant(self, variant: str) -> float:
        m = self.client.bundle.manifest
        v = next((v for v in m.full_variants if v.name == variant), None)
        return m.full_ms / v.ms if v is not None and v.ms > 0 else 1.0

    # -- the loops ----------------------------------------------------------------------
    def _loop(self) -> None:
        cfg = self.config
        next_links = time.monotonic()
        while not self._stop.wait(cfg.check_interval_s):
            try:
                if self.faults is not None:
                    self.faults.poll()
                self._follow_bundle()
                self.check_memory()
                self.check_latency()
                now = time.monotonic()
                if now >= next_links:
                    next_links = now + cfg.reachability_interval_s
                    self.check_links()
            except Exception:  # the watchdog must outlive a bug in one check
                logger.exception("watchdog check failed")

    def _integrity_loop(self) -> None:
        cfg = self.config
        while not self._stop.is_set():
            try:
                self.check_integrity()
            except Exception:
                logger.exception("watchdog integrity check failed")
            # a damaged bundle is retried sooner than the regular schedule
            wait = min(cfg.integrity_interval_s, 2.0) if self._damaged else cfg.integrity_interval_s
            self._integrity_wake.wait(wait)
            self._integrity_wake.clear()

    def _set_mode(self) -> None:
        self.client.set_mode(edge_only=self._offline, variant=self._variant)
        self.m_offline.set(float(self._offline))
        self.m_degraded.set(float(self._variant is not None))

    def _follow_bundle(self) -> None:
        """A rollout swapped the bundle: its variants may differ, judge latency afresh."""
        version = self.client.bundle.version
        if version == self._version:
            return
        self._version = version
        if self._variant is not None and not self.client.runtime.has_full_variant(self._variant):
            self._variant = None
            self._set_mode()
        self._new_regime()

    def _new_regime(self) -> None:
        with self._lock:
            self._samples.clear()
            self._since = time.monotonic()

    # -- the checks (public: tests and drills run them one at a time) ----------------------
    def check_memory(self) -> None:
        rss = rss_bytes()
        self.m_rss.set(rss)
        cfg = self.config
        limit = cfg.memory_threshold * self.memory_budget
        now = time.monotonic()
        if rss <= limit:
            self._futile, self._restarted = 0, False
            return
        if now - self._last_restart < cfg.restart_cooldown_s:
            return
        self._last_restart = now
        detail = (
            f"RSS {rss / _MIB:.0f} MiB > {cfg.memory_threshold:.0%} of "
            f"{self.memory_budget / _MIB:.0f} MiB"
        )
        if self._restarted:  # the last restart did not bring it under
            self._futile += 1
        if cfg.escalate_after and self._futile >= cfg.escalate_after:
            if self._escalate is not None:
                self._act("process_restart", f"{detail} after {self._futile} runtime restarts")
                self._escalate(detail)
                self._escalate = None  # once
            else:
                self._log.warning(
                    "memory:futile", "watchdog: %s after %d runtime restarts", detail, self._futile
                )
            return
        self._restarted = True
        try:
            self.client.restart_runtime()
        except CollabError as e:
            self._act("restart_failed", f"{detail}; {e}")
            self._integrity_wake.set()  # likely a damaged file: check it now
            return
        gc.collect()  # the old sessions go once the last request on them returned
        self._act("runtime_restart", detail)

    def lightest_variant(self) -> Variant | None:
        variants = self.client.bundle.manifest.full_variants
        return min(variants, key=lambda v: v.ms) if variants else None

    def check_latency(self) -> None:
        cfg = self.config
        now = time.monotonic()
        if now - self._since < cfg.latency_window_s:
            return  # the regime has not lasted a window yet
        with self._lock:
            ratios = [s.ratio for s in self._samples if now - s.at <= cfg.latency_window_s]
        if len(ratios) < cfg.latency_min_samples:
            return
        median = statistics.median(ratios)
        if self._variant is None and median > cfg.latency_budget:
            light = self.lightest_variant()
            if light is None:
                self._log.warning(
                    "latency:novariant",
                    "watchdog: FP32 edge compute at %.0f%% of the deadline and the bundle has "
                    "no lighter variant",
                    median * 100,
                )
                return
            self._variant = light.name
            self._set_mode()
            self._new_regime()
            self._act(
                "variant_switch",
                f"FP32 edge compute at {median:.0%} of the deadline (budget "
                f"{cfg.latency_budget:.0%}) for {cfg.latency_window_s:g} s: {light.name} serves",
            )
        elif self._variant is not None and median < cfg.latency_recover * cfg.latency_budget:
            was, self._variant = self._variant, None
            self._set_mode()
            self._new_regime()
            self._act(
                "variant_restore",
                f"FP32 predicted at {median:.0%} of the deadline from {was}: FP32 serves again",
                level=logging.INFO,
            )

    def check_links(self) -> None:
        c = self.client
        offline = bool(c.cloud) and not c.link.reachable
        if offline != self._offline:
            self._offline = offline
            self._set_mode()
            if offline:
                self._act("offline_enter", f"cloud {','.join(c.cloud)} unreachable: edge-only")
            else:
                self._act("offline_exit", "cloud reachable again", level=logging.INFO)
        down = self._broker_up is not None and not self._broker_up()
        if down != self._broker_down:
            self._broker_down = down
            if down:
                self._act("broker_lost", "broker unreachable: telemetry queued")
            else:
                self._act("broker_back", "broker reachable again", level=logging.INFO)

    def check_integrity(self) -> None:
        """Re-hash the served bundle's files; a mismatch is re-fetched (fleet members)."""
        bundle = self.client.bundle
        try:
            again = load_bundle(bundle.root)
            why = "" if again.version == bundle.version else "manifest replaced"
        except CollabError as e:
            why = str(e)
        if not why:
            self._damaged = ""
            return
        if why != self._damaged:  # once per damage, not once per retry
            self._damaged = why
            self._act("integrity_fail", f"{why}; serving from memory")
        if self._refetch is None:
            self._log.warning(
                "integrity:nofleet",
                "watchdog: bundle %s is damaged and this node has no coordinator to re-fetch "
                "it from; serving from memory",
                bundle.root,
            )
            return
        try:
            fresh = self._refetch()
            if self._stop.is_set():
                return  # shutting down: no new sessions now
            self.client.swap_bundle(fresh)
        except CollabError as e:
            self._act("refetch_failed", str(e))
            return
        self._damaged = ""
        self._act("refetch", f"{bundle.version[:12]} re-fetched into {fresh}", level=logging.INFO)
