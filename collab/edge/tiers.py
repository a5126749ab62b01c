"""Device tiers: named edge devices a scenario emulates, instead of a bare slowdown.

A tier is a speed relative to THIS machine plus seeded, realistic variation. The speed
comes from a published (or, where stated, extrapolated) EfficientNet-Lite0 latency on the
device divided by this machine's EfficientNet-Lite0 latency (the bundle's profiled
full-model time, measured when the bundle was built); docs/tiers.md cites each number.

Only the runtime knows the tier (:class:`Device` is handed to the
:class:`~collab.edge.runtime.EdgeRuntime`): the client's decision engine is never told
and learns the device's speed from the compute times it measures, as on a real device.

Variation, applied by the runtime on top of the tier's speed for every run:

- per-run lognormal jitter (median 1, ``jitter_sigma``): cache, DVFS and scheduler noise;
- thermal-throttling episodes: a two-state Markov process in time (exponential on/off
  durations), compute ``throttle_factor`` x slower while on;
- background-load bursts: another on/off process (Poisson starts), ``burst_factor`` x
  slower while a burst lasts.

Episodes are functions of time since the device started and jitter of the run index,
from separate seeded streams, so a seed gives the same device whatever work it is given.
A scenario starts every run's device at the trace's time zero (:meth:`Device.start_at`),
so each policy meets the same episodes at the same trace times, and the model oracle
prices each request at the device's true state then (:meth:`Device.expected_factor`), as
it prices the link from the true trace.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from collab.bundle import Manifest
from collab.errors import ConfigError

#: the model every tier's speed is measured on (collab.models.registry's example name)
REFERENCE_MODEL = "efficientnet"


@dataclass(frozen=True, kw_only=True)
class Power:
    """Board power in W while computing and while idle (for the cost report)."""

    active: float
    idle: float


@dataclass(frozen=True, kw_only=True)
class Variation:
    jitter_sigma: float  # sigma of the per-run lognormal factor (median 1)
    throttle_factor: float  # compute slowdown while thermally throttled
    throttle_on_s: float  # mean length of a throttling episode
    throttle_off_s: float  # mean time between episodes
    burst_factor: float  # compute slowdown during a background-load burst
    burst_s: float  # mean burst length
    burst_every_s: float  # mean time between bursts


@dataclass(frozen=True, kw_only=True)
class DeviceTier:
    name: str
    description: str
    lite0_ms: float  # EfficientNet-Lite0 FP32, one 224x224 image, on the device's CPU
    latency_source: str  # "published: <url>" or "extrapolated: <how, from which url>"
    power_w: Power
    power_source: str
    variation: Variation

    def speed(self, host_lite0_ms: float) -> float:
        """How many times slower than this machine (whose Lite0 takes ``host_lite0_ms``).
        ConfigError if the device is faster: padding cannot make this machine faster."""
        if not host_lite0_ms > 0:
            raise ConfigError(f"host reference latency must be > 0 ms (got {host_lite0_ms})")
        s = self.lite0_ms / host_lite0_ms
        if s < 1.0:
            raise ConfigError(
                f"tier {self.name!r} ({self.lite0_ms} ms per EfficientNet-Lite0 image) is "
                f"faster than this machine ({host_lite0_ms:.1f} ms): it cannot be emulated here"
            )
        return s


_RPI4_LITE0 = (
    "https://dev.to/tildalice/mobilenet-vs-efficientnet-lite-pi-4-first-model-38ms-gap-3l84"
)
TIERS: dict[str, DeviceTier] = {
    t.name: t
    for t in (
        DeviceTier(
            name="rpi4",
            description="Raspberry Pi 4 Model B, 4x Cortex-A72 @ 1.5 GHz, TFLite CPU",
            lite0_ms=49.0,
            latency_source=f"published: {_RPI4_LITE0}",
            power_w=Power(active=6.4, idle=2.7),
            power_source="published: https://www.pidramble.com/wiki/benchmarks/power-consumption",
            variation=Variation(
                jitter_sigma=0.08,
                throttle_factor=1.5,  # 1.5 GHz -> ~1.0 GHz under the firmware's soft limit
                throttle_on_s=8.0,
                throttle_off_s=30.0,
                burst_factor=1.8,
                burst_s=1.5,
                burst_every_s=10.0,
            ),
        ),
        DeviceTier(
            name="jetson-nano-cpu",
            description="NVIDIA Jetson Nano, CPU only: 4x Cortex-A57 @ 1.43 GHz",
            lite0_ms=65.0,
            latency_source="extrapolated: rpi4's 49 ms x 1.33 (Cortex-A57 vs A72 per clock, "
            f"1.43 vs 1.5 GHz; {_RPI4_LITE0}); no published CPU-only Lite0 figure found",
            power_w=Power(active=10.0, idle=1.25),
            power_source="published 10 W mode: https://developer.nvidia.com/embedded/"
            "jetson-nano-developer-kit; idle: extrapolated",
            variation=Variation(
                jitter_sigma=0.06,
                throttle_factor=1.4,
                throttle_on_s=10.0,
                throttle_off_s=60.0,
                burst_factor=1.6,
                burst_s=2.0,
                burst_every_s=20.0,
            ),
        ),
        DeviceTier(
            name="phone-midrange",
            description="mid-range Android phone CPU (2x Cortex-A76 class big cores)",
            lite0_ms=30.0,
            latency_source="extrapolated: Pixel 4 CPU 12 ms (published, "
            "https://github.com/tensorflow/tpu/tree/master/models/official/efficientnet/lite)"
            " x 2.5 for a mid-range SoC",
            power_w=Power(active=3.0, idle=0.5),
            power_source="extrapolated: typical big-core cluster power of a mid-range SoC",
            variation=Variation(
                jitter_sigma=0.12,  # big.LITTLE migration and DVFS
                throttle_factor=1.8,
                throttle_on_s=15.0,
                throttle_off_s=45.0,
                burst_factor=2.0,
                burst_s=1.0,
                burst_every_s=5.0,
            ),
        ),
        DeviceTier(
            name="iot-gateway",
            description="IoT gateway, Raspberry Pi 3 B class: 4x Cortex-A53 @ 1.2 GHz",
            lite0_ms=100.0,
            latency_source="extrapolated: rpi4's 49 ms x 2 (Pi 4 ~2x Pi 3 at inference, "
            "https://www.hackster.io/news/benchmarking-machine-learning-on-the-new-"
            "raspberry-pi-4-model-b-88db9304ce4)",
            power_w=Power(active=3.7, idle=1.4),
            power_source="published (Pi 3 B): "
            "https://www.pidramble.com/wiki/benchmarks/power-consumption",
            variation=Variation(
                jitter_sigma=0.10,
                throttle_factor=1.3,
                throttle_on_s=10.0,
                throttle_off_s=40.0,
                burst_factor=2.5,  # the gateway's other services
                burst_s=2.0,
                burst_every_s=7.0,
            ),
        ),
    )
}


def tier(name: str) -> DeviceTier:
    try:
        return TIERS[name]
    except KeyError:
        raise ConfigError(
            f"unknown device tier {name!r} (known: {', '.join(sorted(TIERS))})"
        ) from None


@dataclass
class _OnOff:
    """A seeded alternating renewal process: exponential on and off durations, started in
    its stationary state; ``active(t)`` for non-decreasing or arbitrary ``t >= 0``."""

    rng: np.random.Generator
    mean_on: float
    mean_off: float
    _ends: list[float] = field(default_factory=list)  # end of each state, from t=0
    _first_on: bool = False

    def __post_init__(self) -> None:
        self._first_on = bool(self.rng.random() < self.mean_on / (self.mean_on + self.mean_off))

    def active(self, t: float) -> bool:
        while not self._ends or self._ends[-1] <= t:
            on = self._first_on == (len(self._ends) % 2 == 0)
            d = float(self.rng.exponential(self.mean_on if on else self.mean_off))
            self._ends.append((self._ends[-1] if self._ends else 0.0) + d)
        i = int(np.searchsorted(self._ends, t, side="right"))
        return self._first_on == (i % 2 == 0)


class Device:
    """One emulated device: ``factor()`` is how many times this machine's compute time a
    run takes on it now (speed x jitter x throttling x burst). Thread-safe."""

    def __init__(
        self,
        device_tier: DeviceTier,
        *,
        speed: float,
        seed: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if speed < 1.0:
            raise ConfigError(f"device speed factor must be >= 1.0 (got {speed})")
        self.tier = device_tier
        self.speed = speed
        self._clock = clock
        self._t0 = clock()
        v = device_tier.variation
        jitter, throttle, burst = np.random.SeedSequence([seed, 0x71E5]).spawn(3)
        self._jitter = np.random.default_rng(jitter)
        self._throttle = _OnOff(np.random.default_rng(throttle), v.throttle_on_s, v.throttle_off_s)
        self._burst = _OnOff(np.random.default_rng(burst), v.burst_s, v.burst_every_s)
        self._lock = threading.Lock()

    @classmethod
    def for_host(cls, name: str, host_lite0_ms: float, *, seed: int = 0) -> Device:
        """Tier ``name`` on this machine, whose EfficientNet-Lite0 takes ``host_lite0_ms``."""
        t = tier(name)
        return cls(t, speed=t.speed(host_lite0_ms), seed=seed)

    def start_at(self, t0: float) -> None:
        """Make ``t0`` (on the device's clock) the device's time zero: a scenario aligns
        every run's episodes with the trace (before ``t0`` the device is in its state at 0)."""
        self._t0 = t0

    def state(self, t: float) -> tuple[bool, bool]:
        """(throttled, bursting) at ``t`` seconds since the device started."""
        with self._lock:
            return self._throttle.active(t), self._burst.active(t)

    def _episodes(self, t: float) -> float:
        """speed x the throttling and burst episodes in force at ``t`` (no jitter)."""
        v = self.tier.variation
        throttled, bursting = self.state(max(t, 0.0))
        return (
            self.speed
            * (v.throttle_factor if throttled else 1.0)
            * (v.burst_factor if bursting else 1.0)
        )

    def factor(self) -> float:
        v = self.tier.variation
        episodes = self._episodes(self._clock() - self._t0)
        with self._lock:
            j = math.exp(v.jitter_sigma * float(self._jitter.standard_normal()))
        return episodes * j

    def expected_factor(self, t: float) -> float:
        """The mean of :meth:`factor` over the jitter at ``t`` seconds since the device
        started: speed x the throttling and burst episodes in force then."""
        return self._episodes(t) * math.exp(self.tier.variation.jitter_sigma**2 / 2)

    def steady(self) -> Device:
        """This device without its variation, at its long-run mean factor: what the
        scenario's profile pass runs on, so the model oracle prices the device's expected
        speed, not the one throttling or burst episode a few profiling runs happened to
        hit (a property of the tier, not of any judged run)."""
        still = Variation(
            jitter_sigma=0.0,
            throttle_factor=1.0,
            throttle_on_s=1.0,
            throttle_off_s=1.0,
            burst_factor=1.0,
            burst_s=1.0,
            burst_every_s=1.0,
        )
        return Device(replace(self.tier, variation=still), speed=self.mean_factor())

    def mean_factor(self) -> float:
        """The long-run mean of :meth:`factor`: what a measuring engine converges to."""
        v = self.tier.variation
        p_t = v.throttle_on_s / (v.throttle_on_s + v.throttle_off_s)
        p_b = v.burst_s / (v.burst_s + v.burst_every_s)
        return (
            self.speed
            * math.exp(v.jitter_sigma**2 / 2)
            * (1 + p_t * (v.throttle_factor - 1))
            * (1 + p_b * (v.burst_factor - 1))
        )


def host_lite0_ms(manifest: Manifest) -> float:
    """This machine's EfficientNet-Lite0 latency: the profiled full-model time of a bundle
    of the reference model (measured here when it was built). Other models have no
    published per-tier figure, so their bundles cannot take a tier."""
    if manifest.model_name != REFERENCE_MODEL:
        raise ConfigError(
            f"device tiers are defined by EfficientNet-Lite0 latencies; bundle "
            f"{manifest.model_name!r} is not the {REFERENCE_MODEL!r} example (use slowdown)"
        )
    return manifest.full_ms
