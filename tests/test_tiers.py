"""Device tiers: named devices with seeded variation, emulated by the edge runtime only."""

from __future__ import annotations

import dataclasses
import threading
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from collab.bundle import load_bundle
from collab.edge.client import Client
from collab.edge.config import ClientConfig
from collab.edge.runtime import EdgeRuntime
from collab.edge.tiers import TIERS, Device, host_lite0_ms, tier
from collab.errors import ConfigError
from collab.scenario.schema import DEFAULT_EDGE_POWER_W, parse_scenario

MINIMAL = """\
model:
  example: efficientnet
network:
  segments:
    - {duration_s: 5, up_mbps: 1, down_mbps: 10}
"""


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_unknown_tier_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown device tier 'rpi5' \(known: .*rpi4"):
        tier("rpi5")
    with pytest.raises(ConfigError, match=r"s\.yaml:7: device\.tier: .*known: iot-gateway"):
        parse_scenario(MINIMAL + "device:\n  tier: rpi5\n", source="s.yaml")


def test_scenario_tier_is_for_the_edge_runtime_not_the_client_config() -> None:
    sc = parse_scenario(MINIMAL + "device:\n  tier: rpi4\n", source="s.yaml")
    assert sc.device.tier == "rpi4"
    assert parse_scenario(MINIMAL, source="s.yaml").device.tier is None
    assert "tier" not in {f.name for f in dataclasses.fields(ClientConfig)}
    both = MINIMAL + "device:\n  tier: rpi4\nedges:\n  slowdown: 5\n"
    with pytest.raises(ConfigError, match=r"device\.tier: a device tier replaces edges\.slowdown"):
        parse_scenario(both, source="s.yaml")
    other = MINIMAL.replace("efficientnet", "digits") + "device:\n  tier: rpi4\n"
    with pytest.raises(ConfigError, match=r"device\.tier: device tiers are defined on"):
        parse_scenario(other, source="s.yaml")


def test_every_tier_cites_its_latency_and_power() -> None:
    for t in TIERS.values():
        assert t.latency_source.startswith(("published: http", "extrapolated: "))
        assert "http" in t.latency_source and t.power_source
        assert t.power_w.active > t.power_w.idle > 0
        assert t.lite0_ms > 0


def test_speed_is_relative_to_this_machine() -> None:
    rpi4 = tier("rpi4")
    assert rpi4.speed(12.25) == pytest.approx(49.0 / 12.25)
    with pytest.raises(ConfigError, match="faster than this machine"):
        rpi4.speed(60.0)


def test_host_reference_is_the_lite0_bundle(digits_bundle: Path) -> None:
    m = load_bundle(digits_bundle).manifest
    with pytest.raises(ConfigError, match="EfficientNet-Lite0"):
        host_lite0_ms(m)
    lite0 = dataclasses.replace(m, model_name="efficientnet")
    assert host_lite0_ms(lite0) == m.full_ms


def test_variation_is_seeded_and_has_episodes() -> None:
    clock = FakeClock()

    def run(seed: int) -> list[float]:
        clock.t = 0.0
        d = Device(tier("rpi4"), speed=4.0, seed=seed, clock=clock)
        out = []
        for _ in range(4000):
            out.append(d.factor())
            clock.t += 0.25
        return out

    a, b, c = run(1), run(1), run(2)
    assert a == b and a != c
    d = Device(tier("rpi4"), speed=4.0, seed=1, clock=clock)
    v = tier("rpi4").variation
    states = [d.state(t) for t in np.arange(0, 3000, 0.5)]
    throttled = np.mean([s[0] for s in states])
    bursting = np.mean([s[1] for s in states])
    # stationary shares on/(on+off), within a wide margin (3000 s hold ~75 episodes)
    assert throttled == pytest.approx(
        v.throttle_on_s / (v.throttle_on_s + v.throttle_off_s), rel=0.4
    )
    assert bursting == pytest.approx(v.burst_s / (v.burst_s + v.burst_every_s), rel=0.4)
    assert min(a) < 4.0 * 1.2 and max(a) > 4.0 * v.throttle_factor  # jitter and episodes
    assert np.mean(a) == pytest.approx(d.mean_factor(), rel=0.15)


def test_the_steady_device_runs_at_the_mean_factor() -> None:
    """The profile pass' device (the model oracle's price): the tier's long-run mean,
    every run, whatever episode the varying device is in."""
    d = Device(tier("iot-gateway"), speed=7.5, seed=3)
    s = d.steady()
    assert s.tier.name == "iot-gateway"
    assert [s.factor() for _ in range(50)] == pytest.approx([d.mean_factor()] * 50)
    assert d.mean_factor() > 7.5 * 1.3  # bursts x2.5 2 s in 9, throttling x1.3 1 in 5


def test_start_at_aligns_episodes_and_expected_factor_is_their_price() -> None:
    """Two runs of one seeded device started at different moments meet the same episodes
    at the same trace time once both are started at the trace's zero; the model oracle's
    price of a moment (expected_factor) is the mean of what the runtime draws then."""
    clock = FakeClock()
    a = Device(tier("iot-gateway"), speed=6.0, seed=5, clock=clock)
    clock.t = 3.7
    b = Device(tier("iot-gateway"), speed=6.0, seed=5, clock=clock)
    a.start_at(10.0)
    b.start_at(10.0)
    grid = np.arange(0.0, 600.0, 0.5)
    assert [a.state(t) for t in grid] == [b.state(t) for t in grid]
    v = tier("iot-gateway").variation
    prices = {round(a.expected_factor(t), 9) for t in grid}
    assert len(prices) > 1  # the episodes change the price
    for t in grid[grid % 37 == 0][:8]:
        clock.t = 10.0 + float(t)
        draws = [a.factor() for _ in range(400)]
        assert np.mean(draws) == pytest.approx(a.expected_factor(float(t)), rel=0.03)
        throttled, bursting = a.state(float(t))
        assert a.expected_factor(float(t)) == pytest.approx(
            6.0
            * np.exp(v.jitter_sigma**2 / 2)
            * (v.throttle_factor if throttled else 1.0)
            * (v.burst_factor if bursting else 1.0)
        )


def _fake_run_clock(monkeypatch: pytest.MonkeyPatch, run_ms: float) -> list[float]:
    """Every segment run of this thread takes ``run_ms``, every sleep its length (fake)."""
    import collab.chain as chain_mod
    import collab.edge.runtime as runtime_mod

    clock = {"t": 0.0}
    slept: list[float] = []
    real_run, me = runtime_mod.run, threading.get_ident()

    def fake_run(sess: Any, x: Any) -> Any:
        if threading.get_ident() == me:
            clock["t"] += run_ms / 1000.0
        return real_run(sess, x)

    def fake_sleep(s: float) -> None:
        slept.append(s)
        clock["t"] += s

    monkeypatch.setattr(chain_mod, "run", fake_run)
    monkeypatch.setattr(
        runtime_mod,
        "time",
        types.SimpleNamespace(perf_counter=lambda: clock["t"], sleep=fake_sleep),
    )
    return slept


def test_runtime_pads_to_the_device_factor(
    digits_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run takes the factor x the profiled time from its start, the factor drawn by the
    device for this run (the same draws for the same seed)."""
    rt = EdgeRuntime(digits_bundle)
    run_ms = rt.manifest.full_ms / len(rt.manifest.segments) / 4  # a quarter of the profile
    _fake_run_clock(monkeypatch, run_ms)
    clock = FakeClock()
    twin = Device(tier("iot-gateway"), speed=6.0, seed=3, clock=clock)
    rt = EdgeRuntime(
        digits_bundle, device=Device(tier("iot-gateway"), speed=6.0, seed=3, clock=clock)
    )
    x = np.zeros(rt.manifest.input_shape, np.float32)
    for _ in range(5):
        want = rt.manifest.full_ms * twin.factor()
        assert want > run_ms * len(rt.manifest.segments)
        assert rt.full(x)[1] == pytest.approx(want)
        clock.t += 3.0
    with pytest.raises(ConfigError, match="not both"):
        EdgeRuntime(digits_bundle, slowdown=2.0, device=twin)


def test_host_load_is_hidden_inside_the_devices_time(
    digits_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The host's run, however slow (another emulated device on the same core), is not the
    device's: it is inside the device's time, and counts in full only when it is longer."""
    profiled = EdgeRuntime(digits_bundle).manifest
    segs = len(profiled.segments)
    device = Device(tier("iot-gateway"), speed=6.0, seed=3, clock=FakeClock())
    f = device.steady().factor()
    for run_ms, want in [
        (profiled.full_ms * f / segs / 2, profiled.full_ms * f),  # half the device's time
        (profiled.full_ms * f / segs * 3, profiled.full_ms * f * 3),  # 3x: the host's
    ]:
        slept = _fake_run_clock(monkeypatch, run_ms)
        rt = EdgeRuntime(digits_bundle, device=device.steady())
        x = np.zeros(profiled.input_shape, np.float32)
        assert rt.full(x)[1] == pytest.approx(want)
        assert sum(slept) == pytest.approx(max(0.0, want - run_ms * segs) / 1000.0)


def test_engine_learns_the_tier_from_measurement_only(digits_bundle: Path) -> None:
    """Only the runtime knows the device: the client's estimate starts at the profile
    (x1) and converges to the device's real speed from the compute times it measures."""
    device = Device(tier("iot-gateway"), speed=40.0, seed=5)
    with Client(digits_bundle, device=device, warm=False) as c:
        assert c._loads.edge_state().compute_scale == pytest.approx(1.0)  # not told
        x = np.zeros(load_bundle(digits_bundle).manifest.input_shape, np.float32)
        for _ in range(30):
            c.infer(x)
        learnt = c._loads.edge_state().compute_scale
        usual = c._loads.edge_baseline.mean
    truth = device.mean_factor()
    # host noise on a loaded machine adds to the measured time, never removes: wide upper margin
    assert 0.6 * truth < learnt < 1.8 * truth
    assert 0.6 * truth < usual < 1.8 * truth


def test_warm_up_times_the_device_before_the_first_request(digits_bundle: Path) -> None:
    """warm() ends with a few padded full-model runs: the engine starts at the device's
    speed (here 40x the profile) instead of routing the first requests as the profiler;
    with warm_speed_runs 0 it is still at the profile's x1."""
    device = Device(tier("iot-gateway"), speed=40.0, seed=5)
    v = tier("iot-gateway").variation
    with Client(digits_bundle, device=device, warm=False) as c:
        c.warm()
        learnt = c._loads.edge_state().compute_scale
    # the state at warm-up: 40x, times whatever episode is on, plus host noise
    assert 0.6 * 40.0 < learnt < 1.8 * 40.0 * v.throttle_factor * v.burst_factor
    cfg = dataclasses.replace(ClientConfig(), warm=False, warm_speed_runs=0)
    with Client(digits_bundle, device=device, config=cfg) as c:
        c.warm()
        assert c._loads.edge_state().compute_scale == pytest.approx(1.0)


def test_a_named_device_prices_edge_energy_at_its_own_power() -> None:
    sc = parse_scenario(MINIMAL + "device:\n  tier: jetson-nano-cpu\n", source="s.yaml")
    assert sc.cost.power_w == tier("jetson-nano-cpu").power_w.active != DEFAULT_EDGE_POWER_W
    explicit = MINIMAL + "device:\n  tier: jetson-nano-cpu\ncost:\n  edge_power_w: 2.5\n"
    assert parse_scenario(explicit, source="s.yaml").cost.power_w == 2.5
    assert parse_scenario(MINIMAL, source="s.yaml").cost.power_w == DEFAULT_EDGE_POWER_W
