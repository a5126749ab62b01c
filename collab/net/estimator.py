"""Smoothed link estimates with variance, from active and passive samples."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class NetState:
    """The link as the decision engine weighs it: what :meth:`LinkEstimator.state` estimates."""

    reachable: bool = True
    rtt_ms: float = 1.0
    bandwidth_bps: float = 1e9
    rtt_std_ms: float = 0.0
    bandwidth_std_bps: float = 0.0
    loss_rate: float = 0.0  # fraction of recent remote calls that failed or timed out


@dataclass
class Ewma:
    """Exponentially weighted mean and variance (West's incremental form).

    With ``jump`` > 1, a sample more than ``jump`` times above or below the mean is held
    back as *pending* instead of being averaged in; a second one on the same side
    confirms a level shift and restarts the average there. Samples with ``confirm=False``
    (passive ones, from real requests that may have met a CPU hiccup) can raise the
    suspicion but only a confirming sample (an active probe) completes the shift. Cellular links change
    bandwidth by 10x from one second to the next: an EWMA alone would need many samples
    to follow, a single outlier alone should not move the estimate."""

    alpha: float = 0.3
    mean: float = math.nan
    var: float = 0.0
    n: int = 0
    updated_at: float = -math.inf
    jump: float = 0.0
    jump_floor: float = 0.0  # ... and differs from it by more than this (absolute)
    pending: float | None = None
    shifts: int = 0

    def update(self, x: float, now: float, *, confirm: bool = True) -> None:
        if self.jump > 1.0 and self.n and self.mean > 0 and x > 0:
            r = x / self.mean
            if (r > self.jump or r * self.jump < 1.0) and abs(x - self.mean) > self.jump_floor:
                p = self.pending
                if confirm and p is not None and (p > self.mean) == (x > self.mean):
                    self.mean, self.var = (x + p) / 2, ((x - p) / 2) ** 2
                    self.pending = None
                    self.shifts += 1
                    self.n += 1
                    self.updated_at = now
                else:
                    self.pending = x
                return
        self.pending = None
        if self.n == 0:
            self.mean, self.var = x, 0.0
        else:
            d = x - self.mean
            incr = self.alpha * d
            self.mean += incr
            self.var = (1 - self.alpha) * (self.var + d * incr)
        self.n += 1
        self.updated_at = now

    @property
    def std(self) -> float:
        return math.sqrt(max(self.var, 0.0))

    def age(self, now: float) -> float:
        return now - self.updated_at


TIMER_FLOOR_MS = 2.0
"""A transfer shorter than this is timer noise: it says only that the link is at least
that fast (a sized probe's transfer is priced at this floor, never as a free link)."""


def transfer_floor_ms(rtt_std_ms: float) -> float:
    """The shortest transfer that stands out of timer noise and RTT jitter (3 sigma): a
    passive sample from a real call below it is not a bandwidth sample."""
    return max(TIMER_FLOOR_MS, 3.0 * rtt_std_ms)


class LinkEstimator:
    """RTT, bandwidth and failure rate of the link to the cloud. Thread-safe.

    The link counts as reachable once a call succeeded and until ``fail_threshold``
    consecutive calls fail; an estimator that never heard from the cloud is unreachable
    (start edge-only, upgrade when a probe succeeds)."""

    def __init__(
        self,
        *,
        alpha: float = 0.3,
        fail_threshold: int = 2,
        min_bw_sample_bytes: int = 1_024,
        max_bandwidth_bps: float = 1e11,
    ) -> None:
        self._lock = threading.Lock()
        # RTT changes below 5 ms are scheduling noise on a busy edge, not a new path
        self.rtt = Ewma(alpha, jump=2.0, jump_floor=5.0)  # ms
        self.bw = Ewma(alpha, jump=2.0)  # bits/s
        self.loss = Ewma(0.1)  # 1 = failed call, 0 = success
        self.fail_threshold = fail_threshold
        self.min_bw_sample_bytes = min_bw_sample_bytes
        self.max_bandwidth_bps = max_bandwidth_bps
        self.consecutive_failures = 0
        self.successes = 0
        self.failures = 0
        self.timeouts = 0

    # -- samples -------------------------------------------------------------------------
    def add_rtt(self, ms: float, now: float, *, active: bool = True) -> None:
        with self._lock:
            self.rtt.update(max(ms, 0.0), now, confirm=active)
            self._success_locked(now)

    def add_bandwidth(
        self, nbytes: int, transfer_ms: float, now: float, *, active: bool = True
    ) -> None:
        """A sample of ``nbytes`` taking ``transfer_ms`` beyond the RTT."""
        bps = min(nbytes * 8.0 / max(transfer_ms, 1e-3) * 1000.0, self.max_bandwidth_bps)
        with self._lock:
            self.bw.update(bps, now, confirm=active)
            self._success_locked(now)

    def add_transfer(self, nbytes: int, network_ms: float, now: float) -> None:
        """Passive sample from a real call: ``network_ms`` = wall time minus server time
        = RTT + bytes / bandwidth. Where the transfer dominates it is a bandwidth sample,
        where the RTT dominates an RTT sample (the other term taken from the estimate)."""
        with self._lock:
            rtt, bw, rtt_std = self.rtt.mean, self.bw.mean, self.rtt.std
        if math.isnan(rtt):
            self.record_success(now)
            return
        transfer_est = 0.0 if math.isnan(bw) else nbytes * 8.0 / max(bw, 1.0) * 1000.0
        # a bandwidth sample needs a transfer long enough to stand out of timer noise and
        # RTT jitter; on a slow uplink even a small frame qualifies, and those frames are
        # the only fresh news of the link between sized probes
        noise = transfer_floor_ms(rtt_std)
        if nbytes >= self.min_bw_sample_bytes and network_ms - rtt > max(0.3 * network_ms, noise):
            self.add_bandwidth(nbytes, network_ms - rtt, now, active=False)
        elif transfer_est < 0.3 * network_ms:
            self.add_rtt(network_ms - transfer_est, now, active=False)
        else:
            self.record_success(now)

    def pending(self) -> bool:
        """A level shift is suspected and waits for a confirming sample."""
        return self.rtt.pending is not None or self.bw.pending is not None

    def suspect_rtt(self, ms: float, now: float) -> None:
        """A call that timed out after ``ms``: the RTT is at least that. Raises the
        suspicion of a level shift (a probe confirms it) without counting a success."""
        with self._lock:
            if self.rtt.n and ms > self.rtt.mean:
                self.rtt.update(ms, now, confirm=False)

    def record_success(self, now: float) -> None:
        with self._lock:
            self._success_locked(now)

    def _success_locked(self, now: float) -> None:
        if self.consecutive_failures >= self.fail_threshold:
            # back from an outage: its failures were the outage (the link was unreachable,
            # cloud paths were off), not the failure rate of the link that is back; kept in
            # the average they would keep penalising cloud paths for dozens of calls
            self.loss = Ewma(self.loss.alpha)
        self.loss.update(0.0, now)
        self.consecutive_failures = 0
        self.successes += 1

    def record_failure(self, now: float, *, timeout: bool = False) -> None:
        with self._lock:
            self.loss.update(1.0, now)
            self.consecutive_failures += 1
            self.failures += 1
            self.timeouts += int(timeout)

    # -- reading ---------------------------------------------------------------------------
    @property
    def reachable(self) -> bool:
        return self.successes > 0 and self.consecutive_failures < self.fail_threshold

    def rtt_age(self, now: float) -> float:
        return self.rtt.age(now)

    def bandwidth_age(self, now: float) -> float:
        return self.bw.age(now)

    def state(
        self, *, default_rtt_ms: float = 50.0, default_bandwidth_bps: float = 10e6
    ) -> NetState:
        """The current estimate as the decision engine's NetState (defaults until sampled).

        Suspicion is asymmetric: a pending level shift to a *worse* link (higher RTT, lower
        bandwidth) counts at once, until a probe confirms or dismisses it, while a shift
        to a better one waits for confirmation. On a collapsing cellular link the next
        request would otherwise be sent on the old estimate while the confirming probe
        (one slow RTT) is still out; a false alarm costs at most that long on a slower path."""
        with self._lock:
            rtt = self.rtt.mean if self.rtt.n else default_rtt_ms
            bw = self.bw.mean if self.bw.n else default_bandwidth_bps
            if self.rtt.pending is not None and self.rtt.pending > rtt:
                rtt = self.rtt.pending
            if self.bw.pending is not None and self.bw.pending < bw:
                bw = self.bw.pending
            return NetState(
                reachable=self.reachable,
                rtt_ms=rtt,
                bandwidth_bps=bw,
                rtt_std_ms=self.rtt.std,
                bandwidth_std_bps=self.bw.std,
                loss_rate=self.loss.mean if self.loss.n else 0.0,
            )
