"""Network estimator, active-probe monitor and circuit breaker, against a simulated link."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from collab.errors import DeadlineError, TransportError
from collab.net import Ewma, LinkEstimator, NetworkMonitor, ProbeResult
from collab.net.breaker import CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class SimLink:
    """probe(nbytes) takes rtt + bytes/bandwidth (+ jitter); can be cut."""

    def __init__(self, rtt_ms: float, bw_bps: float, jitter_ms: float = 0.0, seed: int = 0) -> None:
        self.rtt_ms, self.bw_bps, self.jitter_ms = rtt_ms, bw_bps, jitter_ms
        self.up = True
        self.timeout = False
        self.calls: list[int] = []
        self.rng = np.random.default_rng(seed)

    def __call__(self, nbytes: int, timeout_s: float) -> ProbeResult:
        self.calls.append(nbytes)
        if not self.up:
            if self.timeout:
                raise DeadlineError("probe timed out")
            raise TransportError("connection refused")
        j = abs(self.rng.normal(0, self.jitter_ms)) if self.jitter_ms else 0.0
        return ProbeResult(wall_ms=self.rtt_ms + j + nbytes * 8 / self.bw_bps * 1000)


def test_ewma_mean_and_variance() -> None:
    e = Ewma(alpha=0.1)
    rng = np.random.default_rng(1)
    for i, x in enumerate(rng.normal(50, 5, 3000)):
        e.update(float(x), i)
    assert e.mean == pytest.approx(50, abs=3.5)  # std of an alpha=0.1 EWMA: 5*sqrt(.1/1.9)
    assert e.std == pytest.approx(5, rel=0.3)
    assert e.age(3100) == pytest.approx(101)
    assert math.isnan(Ewma().mean)


@pytest.mark.parametrize(("rtt", "bw"), [(1.0, 1e9), (20.0, 8e6), (80.0, 1e6), (5.0, 50e6)])
def test_monitor_estimates_follow_the_link(rtt: float, bw: float) -> None:
    link, clock = SimLink(rtt, bw, jitter_ms=rtt * 0.05), FakeClock()
    est = LinkEstimator()
    mon = NetworkMonitor(link, est, interval_s=1.0, clock=clock, max_probe_bytes=1 << 20)
    for _ in range(20):
        mon.refresh(force=True)
        clock.t += 1
    st = est.state()
    assert st.reachable
    assert st.rtt_ms == pytest.approx(rtt, rel=0.15)
    assert st.bandwidth_bps == pytest.approx(bw, rel=0.15)
    # the sized probe adapts to the link: ~bandwidth_probe_ms of transfer, within limits;
    # an RTT probe closes every bandwidth probe
    assert min(link.calls[-2], 1 << 20) == link.calls[-2] >= 4_096 and link.calls[-1] == 0


def test_slow_uplink_sized_probe_timeout_is_a_bandwidth_bound_not_an_outage() -> None:
    clock = FakeClock()
    est = LinkEstimator()

    def probe(nbytes: int, timeout_s: float) -> ProbeResult:
        ms = 30 + nbytes * 8 / 20e3 * 1000  # 20 kbit/s IoT uplink
        if ms > timeout_s * 1000:
            raise DeadlineError("probe timed out")
        return ProbeResult(wall_ms=ms)

    mon = NetworkMonitor(probe, est, clock=clock, timeout_s=1.0)
    for _ in range(3):
        mon.refresh(force=True)
        clock.t += 1
    st = est.state()
    assert st.reachable and st.loss_rate == 0.0
    assert st.bandwidth_bps < 40e3  # bounded by what fits in the timeout


def test_estimates_track_a_bandwidth_drop() -> None:
    link, clock = SimLink(10.0, 50e6), FakeClock()
    est = LinkEstimator()
    mon = NetworkMonitor(link, est, clock=clock)
    for _ in range(5):
        mon.refresh(force=True)
        clock.t += 1
    link.bw_bps = 2e6
    for _ in range(15):
        mon.refresh(force=True)
        clock.t += 1
    assert est.state().bandwidth_bps == pytest.approx(2e6, rel=0.15)


def test_stale_estimates_are_reprobed_and_fresh_ones_are_not() -> None:
    link, clock = SimLink(5.0, 10e6), FakeClock()
    est = LinkEstimator()
    mon = NetworkMonitor(link, est, interval_s=1.0, bandwidth_interval_s=5.0, clock=clock)
    mon.refresh()  # nothing known: rtt + sized probe(s)
    n = len(link.calls)
    assert n >= 2 and link.calls[0] == 0 and link.calls[1] > 0
    clock.t += 0.5
    mon.refresh()
    assert len(link.calls) == n  # everything fresh
    clock.t += 0.6
    mon.refresh()
    assert link.calls[n:] == [0]  # only the RTT is stale: small probe
    # passive samples from real traffic keep the RTT fresh: no probe
    clock.t += 0.9
    est.add_transfer(500, 5.2, clock())
    clock.t += 0.5
    mon.refresh()
    assert len(link.calls) == n + 1
    clock.t += 5
    mon.refresh()  # bandwidth stale: rtt + sized + rtt
    assert len(link.calls) >= n + 4 and link.calls[n + 1] == 0 and link.calls[-2] > 0
    assert link.calls[-1] == 0


def test_a_path_change_between_the_probes_is_not_a_free_link() -> None:
    """The RTT probe meets the old, slow path (40 ms RTT), the sized probe the new one (10
    ms RTT, 8 Mbit/s): its whole round trip (26 ms) is below the old RTT. Read against the
    RTT before, that was a transfer of 0 ms, i.e. the estimator's maximum bandwidth (seen in
    fleet-8-edges: 50 Gbit/s confirmed twice, then 300 KB frames sent into 8 Mbit/s); the RTT
    after the sized probe prices it right."""
    clock = FakeClock()
    est = LinkEstimator()
    calls: list[int] = []

    def probe(nbytes: int, timeout_s: float) -> ProbeResult:
        calls.append(nbytes)
        old_path = len(calls) % 3 == 1  # every round's first probe: the RTT probe
        rtt = 40.0 if old_path else 10.0
        return ProbeResult(wall_ms=rtt + nbytes * 8 / 8e6 * 1000)

    mon = NetworkMonitor(probe, est, interval_s=1.0, clock=clock, max_probe_bytes=16_384)
    for _ in range(6):
        calls.clear()
        mon.probe_bandwidth()
        clock.t += 1
    assert est.state().bandwidth_bps == pytest.approx(8e6, rel=0.05)


def test_a_transfer_below_the_timer_floor_is_a_lower_bound() -> None:
    """A sized probe that crossed the link faster than timer noise can tell (a 4 KB probe
    on a 10 Gbit/s LAN) prices the link at the floor, not at the estimator's maximum."""
    clock = FakeClock()
    est = LinkEstimator()
    mon = NetworkMonitor(
        lambda n, t: ProbeResult(wall_ms=0.3 + n * 8 / 10e9 * 1000),
        est,
        interval_s=1.0,
        clock=clock,
        max_probe_bytes=4096,
    )
    mon.probe_bandwidth()
    assert est.state().bandwidth_bps == pytest.approx(4096 * 8 / 2.0e-3, rel=0.01)  # 2 ms


def test_passive_transfers_update_bandwidth() -> None:
    est = LinkEstimator()
    est.add_rtt(10.0, 0.0)
    for i in range(20):  # 100 kB in 10 ms rtt + 40 ms = 20 Mbit/s
        est.add_transfer(100_000, 50.0, float(i))
    assert est.bw.n == 20 and est.state().bandwidth_bps == pytest.approx(20e6, rel=0.01)
    est.add_transfer(200, 12.08, 30.0)  # small: an RTT sample (minus 0.08 ms of transfer)
    assert est.rtt.mean == pytest.approx(10.0 + 0.3 * 2.0)


def test_small_frames_on_a_slow_uplink_are_bandwidth_samples() -> None:
    est = LinkEstimator()
    for i in range(5):
        est.add_rtt(80.0 + (i % 2), float(i))
    for i in range(10):  # a 3 kB frame over 100 kbit/s: 240 ms beyond the 80 ms RTT
        est.add_transfer(3_000, 320.0, 10.0 + i)
    assert est.bw.n == 10 and est.state().bandwidth_bps == pytest.approx(100e3, rel=0.05)
    est.add_transfer(3_000, 83.0, 30.0)  # the same frame on a fast link: RTT jitter, not a sample
    assert est.bw.n == 10


def test_level_shift_needs_two_samples_and_then_restarts_the_average() -> None:
    e = Ewma(alpha=0.3, jump=2.0)
    for i in range(10):
        e.update(8e6, i)
    e.update(0.8e6, 10)  # one outlier: held back
    assert e.mean == 8e6 and e.pending == 0.8e6
    e.update(8.1e6, 11)  # back in band: outlier dropped
    assert e.pending is None and e.mean == pytest.approx(8e6 + 0.3 * 0.1e6)
    e.update(0.8e6, 12)
    e.update(0.9e6, 13)  # confirmed: the estimate follows at once
    assert e.mean == pytest.approx(0.85e6) and e.shifts == 1
    e.update(8e6, 14, confirm=False)  # passive samples only raise the suspicion
    e.update(8e6, 15, confirm=False)
    assert e.mean == pytest.approx(0.85e6) and e.pending == 8e6
    e.update(7e6, 16)  # an active probe confirms
    assert e.mean == pytest.approx(7.5e6) and e.shifts == 2


def test_monitor_confirms_a_suspected_shift_at_once() -> None:
    link, clock = SimLink(30.0, 8e6), FakeClock()
    est = LinkEstimator()
    mon = NetworkMonitor(link, est, clock=clock, interval_s=1.0, bandwidth_interval_s=1.0)
    for _ in range(5):
        mon.refresh()
        clock.t += 1.1
    link.bw_bps, link.rtt_ms = 0.8e6, 110.0
    mon.refresh()  # one round: suspects, re-probes, adopts
    st = est.state()
    assert st.bandwidth_bps == pytest.approx(0.8e6, rel=0.15)
    assert st.rtt_ms == pytest.approx(110, rel=0.15)


def test_loss_and_reachability() -> None:
    link, clock = SimLink(5.0, 10e6), FakeClock()
    est = LinkEstimator(fail_threshold=2)
    assert not est.reachable  # never heard from the cloud
    mon = NetworkMonitor(link, est, clock=clock)
    mon.refresh(force=True)
    assert est.reachable
    link.up = False
    link.timeout = True
    mon.refresh(force=True)
    assert est.reachable  # one failure is not an outage
    mon.refresh(force=True)
    assert not est.reachable
    assert est.timeouts == 2 and est.state().loss_rate > 0.1
    link.up = True
    mon.refresh(force=True)
    assert est.reachable
    assert est.state().loss_rate == 0.0  # the outage is over: its failures do not linger


def test_failures_without_an_outage_stay_in_the_loss_rate() -> None:
    est = LinkEstimator(fail_threshold=3)
    est.add_rtt(10.0, 0.0)
    for i in range(6):  # every other call fails: a lossy link, never unreachable
        est.record_failure(1.0 + i, timeout=True)
        est.add_rtt(10.0, 1.5 + i)
    assert est.reachable and 0.2 < est.state().loss_rate < 0.6


def test_monitor_thread_probes_and_stops() -> None:
    link = SimLink(0.1, 1e9)
    est = LinkEstimator()
    seen = threading.Event()
    mon = NetworkMonitor(
        link, est, interval_s=0.02, bandwidth_interval_s=0.05, on_reply=lambda r: seen.set()
    )
    mon.start()
    try:
        assert seen.wait(2.0)
        deadline = threading.Event()
        deadline.wait(0.3)
    finally:
        mon.stop()
    n = len(link.calls)
    assert n >= 5 and est.reachable
    threading.Event().wait(0.1)
    assert len(link.calls) == n  # stopped


def test_circuit_breaker_opens_and_recovers_after_cooldown() -> None:
    clock = FakeClock()
    br = CircuitBreaker(failure_threshold=3, cooldown_s=2.0, clock=clock)
    assert not br.record_failure() and not br.record_failure()
    br.record_success()  # resets the count
    assert not br.record_failure() and not br.record_failure()
    assert br.record_failure() and br.is_open
    br.probe_succeeded()  # too early
    assert br.is_open
    clock.t += 2.5
    br.probe_succeeded()
    assert br.state == "half_open"
    assert br.record_failure() and br.is_open  # one failure in half-open re-opens
    clock.t += 2.5
    br.probe_succeeded()
    br.record_success()
    assert br.state == "closed" and br.opened_count == 2


def test_sized_probe_grows_when_the_link_got_much_faster() -> None:
    link, clock = SimLink(20.0, 0.5e6), FakeClock()
    est = LinkEstimator()
    mon = NetworkMonitor(link, est, clock=clock, max_probe_bytes=1 << 20)
    for _ in range(4):
        mon.refresh(force=True)
        clock.t += 1
    assert est.state().bandwidth_bps == pytest.approx(0.5e6, rel=0.15)
    link.bw_bps = 50e6  # 100x faster: a probe sized for 0.5 Mbit/s would be lost in RTT noise
    link.calls.clear()
    mon.refresh(force=True)
    assert max(link.calls) >= 8 * min(c for c in link.calls if c)  # grew within the round
    assert est.state().bandwidth_bps == pytest.approx(
        50e6, rel=0.15
    )  # suspected, confirmed, adopted


def test_a_suspected_worse_link_counts_at_once_a_better_one_waits() -> None:
    est = LinkEstimator()
    for i in range(5):
        est.add_rtt(40.0, float(i))
        est.add_bandwidth(100_000, 100.0, float(i))  # 8 Mbit/s
    est.add_transfer(100_000, 40.0 + 1000.0, 10.0)  # one slow frame: 0.8 Mbit/s, passive
    assert est.bw.pending is not None and est.bw.mean == pytest.approx(8e6)
    assert est.state().bandwidth_bps == pytest.approx(0.8e6, rel=0.01)
    est.add_bandwidth(100_000, 100.0, 10.5)  # the confirming probe says it was a blip
    assert est.bw.pending is None and est.state().bandwidth_bps == pytest.approx(8e6, rel=0.01)
    est.add_rtt(200.0, 11.0, active=False)  # worse RTT: counts at once
    assert est.state().rtt_ms == 200.0
    est.add_rtt(40.0, 11.5)
    est.add_transfer(100_000, 40.0 + 20.0, 12.0)  # better bandwidth (40 Mbit/s): waits
    assert est.bw.pending is not None and est.state().bandwidth_bps == pytest.approx(8e6, rel=0.01)


def test_standby_probes_the_rtt_twice_as_often() -> None:
    link, clock = SimLink(5.0, 10e6), FakeClock()
    est = LinkEstimator()
    mon = NetworkMonitor(link, est, interval_s=1.0, bandwidth_interval_s=5.0, clock=clock)
    mon.refresh()
    n = len(link.calls)
    clock.t += 0.6
    mon.refresh()
    assert len(link.calls) == n  # 0.6 s old: fresh at the normal rate
    mon.standby = True
    mon.refresh()
    assert link.calls[n:] == [0]  # stale on standby: one small probe
    assert mon.rtt_interval_s == 0.5
