"""Active probing in a background thread.

Every ``interval_s`` the monitor refreshes what is stale: a small probe when the RTT
estimate is older than one interval (passive samples from real calls keep it fresh
under traffic, so a busy client rarely probes), a sized probe when the bandwidth
estimate is older than ``bandwidth_interval_s``. The sized probe is scaled to take
about ``bandwidth_probe_ms`` at the current estimate, so slow links are not flooded
and fast links are still measured beyond the RTT noise.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from collab.errors import CollabError, DeadlineError
from collab.log import logger
from collab.net.estimator import TIMER_FLOOR_MS, LinkEstimator


@dataclass(frozen=True, kw_only=True)
class ProbeResult:
    """One probe as the client saw it: its round trip and what the node reported."""

    wall_ms: float  # client-side round trip of the probe call
    server_ms: float = 0.0  # time the server spent (subtracted when known)
    load: Any = None  # collab.transport.LoadReport or None
    models: tuple[tuple[str, str], ...] = ()  # (name, version) the cloud serves
    extra: dict[str, Any] = field(default_factory=dict)


#: probe(upload_bytes, timeout_s) -> ProbeResult; raises CollabError on failure.
ProbeFn = Callable[[int, float], ProbeResult]


class NetworkMonitor:
    def __init__(
        self,
        probe: ProbeFn,
        estimator: LinkEstimator,
        *,
        interval_s: float = 1.0,
        bandwidth_interval_s: float | None = None,
        timeout_s: float = 1.0,
        min_probe_bytes: int = 4_096,
        max_probe_bytes: int = 262_144,
        bandwidth_probe_ms: float = 20.0,
        on_reply: Callable[[ProbeResult], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.probe_fn = probe
        self.est = estimator
        self.interval_s = interval_s
        # standby: the cloud is reachable but not used (the link made it lose); the news
        # that flips the decision is the link coming back, so RTT probes (tiny) go at
        # twice the rate; bandwidth probes keep theirs
        self.standby = False
        self.bandwidth_interval_s = bandwidth_interval_s or 5 * interval_s
        self.timeout_s = timeout_s
        self.min_probe_bytes = min_probe_bytes
        self.max_probe_bytes = max_probe_bytes
        self.bandwidth_probe_ms = bandwidth_probe_ms
        self.on_reply = on_reply
        self.clock = clock
        self.probes_sent = 0
        self._rtt_shifts = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._confirm_thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one probe round at a time
        self._lock_confirm = threading.Lock()
        self._confirming = False
        self._confirmed_at = -1e9

    @property
    def rtt_interval_s(self) -> float:
        return self.interval_s / 2 if self.standby else self.interval_s

    # -- one round -------------------------------------------------------------------
    def _probe(self, nbytes: int, *, sized: bool = False) -> ProbeResult | None:
        self.probes_sent += 1
        try:
            reply = self.probe_fn(nbytes, self.timeout_s)
        except DeadlineError:
            if sized:  # the RTT probe just succeeded: the link is slow, not down
                self.est.add_bandwidth(nbytes, self.timeout_s * 1000.0, self.clock())
            else:
                self.est.record_failure(self.clock(), timeout=True)
            return None
        except CollabError as e:
            logger.debug("probe failed: %s", e)
            self.est.record_failure(self.clock())
            return None
        if self.on_reply is not None:
            self.on_reply(reply)
        return reply

    def connect(self) -> bool:
        """A first probe that only opens the connection: its round trip includes TCP and
        HTTP/2 set-up, so it is not an RTT sample. True if the cloud answered."""
        if self._probe(0) is None:
            return False
        self.est.record_success(self.clock())
        return True

    def probe_rtt(self) -> float | None:
        r = self._probe(0)
        if r is None:
            return None
        ms = max(r.wall_ms - r.server_ms, 0.0)
        self.est.add_rtt(ms, self.clock())
        return ms

    def probe_bandwidth(self) -> float | None:
        """A small and a sized probe back to back; the difference is the transfer time."""
        rtt = self.probe_rtt()
        if rtt is None:
            return None
        # start small (a slow uplink must not time out), then size to the estimate; a
        # probe that took far less than planned means the estimate is stale (the link got
        # faster): grow the probe at once until the transfer is long enough to measure
        bw = self.est.state().bandwidth_bps if self.est.bw.n else None
        nbytes = self.min_probe_bytes if bw is None else int(bw * self.bandwidth_probe_ms / 8000.0)
        nbytes = min(max(nbytes, self.min_probe_bytes), self.max_probe_bytes)
        for _ in range(4):
            r = self._probe(nbytes, sized=True)
            if r is None:
                return None
            sized_ms = r.wall_ms - r.server_ms
            transfer = max(sized_ms - rtt, 0.0)
            if transfer >= self.bandwidth_probe_ms / 4 or nbytes >= self.max_probe_bytes:
                break
            nbytes = min(nbytes * 8, self.max_probe_bytes)
        # the RTT again, after: when the path changed between the two probes (a cellular
        # handover, congestion clearing), the RTT before is the old path's and may exceed
        # the sized probe's whole round trip, which read as an infinitely fast link and
        # sent hundred-KB frames into a link of a few Mbit/s. The lower of the two RTTs
        # errs the safe way (a slower estimate) ...
        after = self.probe_rtt()
        if after is not None and after < rtt:
            transfer = max(sized_ms - after, 0.0)
        # ... and a transfer under the timer floor is only a lower bound on the bandwidth:
        # priced at the floor, never as a free link. (Not a jitter floor: on a jittery
        # cellular link 3 RTT sigmas cap a 16 KB probe at a few Mbit/s, and the RTT after
        # already errs the safe way.)
        self.est.add_bandwidth(nbytes, max(transfer, TIMER_FLOOR_MS), self.clock())
        return self.est.state().bandwidth_bps

    def refresh(self, *, force: bool = False) -> None:
        """Probe whatever is stale (everything when ``force``); a suspected level shift
        is confirmed (or dismissed) by an immediate second probe."""
        with self._lock:
            now = self.clock()
            if (
                force
                or not self.est.reachable
                or self.est.bw.pending is not None
                or self.est.bandwidth_age(now) > self.bandwidth_interval_s
            ):
                self.probe_bandwidth()
            elif self.est.rtt.pending is not None or self.est.rtt_age(now) > self.rtt_interval_s:
                self.probe_rtt()
            if self.est.pending():
                self.probe_bandwidth() if self.est.bw.pending is not None else self.probe_rtt()
            if self.est.rtt.shifts != self._rtt_shifts:  # the path changed: bandwidth too?
                self._rtt_shifts = self.est.rtt.shifts
                if self.est.bandwidth_age(self.clock()) > self.interval_s:
                    self.probe_bandwidth()

    # -- thread -------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="collab-net-monitor", daemon=True)
        self._thread.start()

    def confirm(self) -> None:
        """A real request suggested the link changed: probe at once on a thread of its
        own (the periodic round may be busy with a slow sized probe), so the suspicion
        is confirmed or dismissed before the next request, not one interval later."""
        with self._lock_confirm:
            if self._confirming or self._stop.is_set() or self.clock() - self._confirmed_at < 0.1:
                return
            self._confirming = True
            self._confirm_thread = threading.Thread(
                target=self._confirm, name="collab-net-confirm", daemon=True
            )
            self._confirm_thread.start()

    def _confirm(self) -> None:
        try:
            if self.est.rtt.pending is not None:
                self.probe_rtt()
            if self.est.bw.pending is not None:
                self.probe_bandwidth()
        except Exception:
            logger.exception("confirming probe failed")
        finally:
            with self._lock_confirm:
                self._confirming = False
                self._confirmed_at = self.clock()

    def poke(self) -> None:
        """Probe at once (e.g. after a failure) instead of waiting for the next tick."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception:  # never let the monitor thread die
                logger.exception("network monitor round failed")
            self._wake.wait(self.rtt_interval_s)
            self._wake.clear()

    def stop(self) -> None:
        """Stop the probing thread and a confirming probe still out, and join both (each
        wait bounded by a few probe timeouts): no thread may be inside gRPC once the
        owner is closed and the process exits."""
        with self._lock_confirm:
            self._stop.set()
            confirm, self._confirm_thread = self._confirm_thread, None
        self._wake.set()
        for t in (self._thread, confirm):
            if t is not None:
                t.join(timeout=self.timeout_s * 3 + 1)
        self._thread = None
