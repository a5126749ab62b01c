"""Edge and cloud load as the decision engine sees it, learnt from the requests.

The edge estimate is measured compute / profiled compute (load, slowdown, device tier); the cloud's
is its reported queueing delay and the compute it took per path. A call still out long
after its predicted answer is evidence about the link before it answers
(:func:`suspect_overdue`).

What a cloud reports about its own time is a claim, not a measurement: a value that is
not finite, negative or beyond what the call itself took (:func:`plausible_timing`) is
ignored, so one lying reply cannot poison an average that every later decision reads.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping

from collab.decision import CloudState, EdgeState, PathSpec
from collab.net.estimator import Ewma, LinkEstimator
from collab.transport import ServerTiming

_EDGE_STALE_S = 5.0
# a reported queueing delay above this is not believed (no call waits a minute: the
# edge's cloud timeout is seconds); probe replies have no wall time to bound them by
MAX_REPORTED_MS = 60_000.0
# a call this much (and twice) past its predicted answer raises a link-change suspicion
_OVERDUE_MS = 20.0

#: calls out now: token -> (perf_counter at send, predicted RTT ms, predicted rest ms)
InFlight = Mapping[int, tuple[float, float, float]]


class LoadEstimates:
    """Thread-safe; one per client (a new bundle forgets only the cloud's per-path compute)."""

    def __init__(self, slowdown: float) -> None:
        self.slowdown = slowdown
        self.edge_scale = Ewma(0.2, jump=2.0)  # one noisy run must not move the edge estimate
        self.edge_scale.update(slowdown, time.monotonic())
        # the device's usual speed, learnt slowly from every sample (a device tier is not
        # told to the client): where a stale spike relaxes to; the jump lets the first
        # runs on a device far from the prior move it, a load burst does not
        self.edge_baseline = Ewma(0.05, jump=3.0)
        self.edge_baseline.update(slowdown, time.monotonic())
        self.cloud_queue = Ewma(0.3)
        self.cloud_compute: dict[str, Ewma] = {}  # path key -> observed cloud compute ms
        self._lock = threading.Lock()

    def edge_state(self) -> EdgeState:
        """Edge load relative to the profile. A load spike is assumed to pass: an estimate
        not refreshed for ``_EDGE_STALE_S`` (the engine routed work elsewhere because the
        edge looked slow) relaxes towards the device's usual speed (the configured
        slowdown until runs have measured it)."""
        e = self.edge_scale
        age = e.age(time.monotonic())
        scale = e.mean
        if age > _EDGE_STALE_S:
            w = math.exp(-(age - _EDGE_STALE_S) / _EDGE_STALE_S)
            with self._lock:
                base = self.edge_baseline.mean
            scale = base + (scale - base) * w
        return EdgeState(compute_scale=scale)

    def edge_sample(self, ms: float, spec: PathSpec | None, *, local_finish: bool = False) -> None:
        if spec is None:
            return
        profiled = spec.local_finish_ms if local_finish else spec.edge_ms
        if profiled > 0.05:  # tiny models: timer noise, not load
            now = time.monotonic()
            with self._lock:
                self.edge_scale.update(ms / profiled, now)
                self.edge_baseline.update(ms / profiled, now)

    def cloud_queue_sample(self, queue_ms: float, now: float) -> None:
        """The queueing delay a probe reply reported; an implausible one is ignored."""
        if not plausible_ms(queue_ms, MAX_REPORTED_MS):
            return
        with self._lock:
            self.cloud_queue.update(queue_ms, now)

    def cloud_sample(self, key: str, queue_ms: float, compute_ms: float, now: float) -> None:
        """What a cloud call reported for path ``key`` (its edge variant does not matter);
        the caller has checked it with :func:`plausible_timing`."""
        with self._lock:
            self.cloud_queue.update(queue_ms, now)
            if compute_ms > 0:
                self.cloud_compute.setdefault(key.split("@")[0], Ewma(0.2)).update(compute_ms, now)

    def cloud_state(self, *, serves_model: bool, breaker_open: bool) -> CloudState:
        """What the cloud's compute per path has been observed to be. An observation not
        refreshed for ``_EDGE_STALE_S`` loses weight (``compute_weight``) and the engine
        moves towards the profile: a tail priced during a burst of cloud load, and then
        avoided for it, would otherwise keep that price forever (congested-evening on a
        loaded host: split tails priced at 24-38 ms of cloud compute in the first 3 s, no
        split taken in the 10 s after; the same tails take about 6 ms on a quiet one)."""
        now = time.monotonic()
        with self._lock:
            weight = {}
            for k, e in self.cloud_compute.items():
                age = e.age(now)
                if age > _EDGE_STALE_S:
                    weight[k] = math.exp(-(age - _EDGE_STALE_S) / _EDGE_STALE_S)
            return CloudState(
                queue_ms=self.cloud_queue.mean if self.cloud_queue.n else 0.0,
                compute_ms={k: e.mean for k, e in self.cloud_compute.items()},
                compute_weight=weight,
                serves_model=serves_model,
                breaker_open=breaker_open,
            )

    def forget_cloud_compute(self) -> None:
        """Another model: other tails."""
        with self._lock:
            self.cloud_compute.clear()


def plausible_ms(ms: float, bound_ms: float) -> bool:
    return math.isfinite(ms) and 0.0 <= ms <= bound_ms


def plausible_timing(t: ServerTiming, wall_ms: float) -> bool:
    """Whether a call's reported server times can be true: finite, not negative, and
    none longer than the call took as the edge timed it (the server's part of a call
    happens inside it; 1 ms of slack for timer granularity)."""
    bound = wall_ms + 1.0
    return all(
        plausible_ms(ms, bound) for ms in (t.queue_ms, t.compute_ms, t.decode_ms, t.total_ms)
    )


def suspect_overdue(link: LinkEstimator, inflight: InFlight, now: float) -> bool:
    """A call still out long after its predicted answer is news of the link before it
    answers: the RTT is at least what it waited beyond the rest of its prediction. On a
    link that just collapsed the previous request is often still out when the next one is
    decided; without this the next one would be sent on the old estimate too. True if a
    suspicion was raised (the caller confirms it with a probe)."""
    raised = False
    for start, rtt_ms, rest_ms in list(inflight.values()):
        waited = (now - start) * 1000.0
        if waited > 2.0 * (rtt_ms + rest_ms) and waited - rtt_ms - rest_ms > _OVERDUE_MS:
            link.suspect_rtt(waited - rest_ms, time.monotonic())
            raised = True
    return raised
