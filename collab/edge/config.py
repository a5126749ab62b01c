"""The edge client's settings and its answer type.

:class:`ClientConfig` is THE edge configuration: the SDK takes it (or its fields as
keyword arguments), ``collab edge`` has one flag per field (edge_node.cli) and a
scenario's ``edges:`` section one key per field (collab.scenario.schema). Each default,
help text and bound is written here once (collab.settings).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from collab import codec as codecs
from collab.decision import parse_policy
from collab.settings import check_bounds, comma_list, setting
from collab.transport import DEFAULT_MAX_MESSAGE_BYTES, TlsConfig


@dataclass(frozen=True, kw_only=True)
class ClientConfig:
    cloud: tuple[str, ...] = setting(
        (),
        help="cloud node addresses (round-robin); empty = edge-only",
        metavar="HOST:PORT[,HOST:PORT]",
    )
    policy: str = setting("auto", help="auto | edge_only | cloud_only | split:<name>")
    deadline_ms: float | None = setting(
        None,
        help="default per-request deadline in ms (None: no deadline)",
        lo=0,
        lo_open=True,
        metavar="MS",
    )
    # 0.005, not the 0.01 scenarios used to default to: without a word from the user a
    # lossy codec or edge variant may cost at most half a percent of top-1 agreement;
    # every shipped scenario states its 0.01
    accuracy_budget: float = setting(
        0.005,
        help="max top-1 agreement loss allowed for lossy codecs and edge variants",
        lo=0,
        hi=1,
    )
    # 0.5 s, not the 1.0 s the edge daemon used to default to: an RTT probe is a few bytes
    # and goes out only when no request refreshed the estimate, so halving the interval
    # costs nothing under traffic and halves how long an idle client misses a link change
    probe_interval_s: float = setting(
        0.5,
        help="seconds between RTT probes when no traffic refreshed the estimate",
        lo=0,
        lo_open=True,
        flag="--probe-interval",
        metavar="S",
    )
    bandwidth_probe_interval_s: float | None = setting(
        None,
        help="seconds between bandwidth probes (None: 5 x the probe interval)",
        lo=0,
        lo_open=True,
        metavar="S",
    )
    probe_timeout_s: float = setting(
        1.0, help="timeout of one probe in seconds", lo=0, lo_open=True, metavar="S"
    )
    # 256 KiB, not the 64 KiB scenarios used to default to: a sized probe aims at ~20 ms
    # on the current estimate, and this cap keeps that true up to ~100 Mbit/s (64 KiB
    # stops at ~26 Mbit/s, below Wi-Fi); scenarios on slow links state a smaller cap
    max_probe_bytes: int = setting(262_144, help="largest bandwidth probe in bytes", lo=1024)
    cloud_timeout_ms: float = setting(
        5_000.0,
        help="cap of a cloud call when there is no deadline",
        lo=0,
        lo_open=True,
        metavar="MS",
    )
    # collab.edge.hedge: on fleet-8-edges a fallback after the call's budget took 330-540 ms
    hedge_factor: float = setting(
        2.0,
        help="start the local finish beside a cloud call that has run this many times its "
        "predicted time ... (first answer wins; 0: only after the call gives up)",
        lo=0,
    )
    hedge_slack_ms: float = setting(20.0, help="... plus this many ms", lo=0, metavar="MS")
    breaker_failures: int = setting(
        3, help="consecutive failed cloud calls that open the circuit breaker", lo=1
    )
    # a scenario's static baselines run with this off: a "cloud_only" run whose breaker
    # sent 35 of 40 requests to the device measured edge-only, not the cloud path
    pinned_breaker: bool = setting(
        True,
        help="a pinned policy (cloud_only, split:<name>) also stops calling the cloud while "
        "the breaker is open (off: every request tries the path it names)",
    )
    breaker_cooldown_s: float = setting(
        1.0, help="seconds before a probe may half-open an open breaker", lo=0, metavar="S"
    )
    hysteresis: float = setting(
        0.10, help="switch paths only if the new one is predicted this fraction faster ...", lo=0
    )
    hysteresis_ms: float = setting(0.5, help="... and this many ms faster", lo=0, metavar="MS")
    decision_ttl_ms: float = setting(
        50.0, help="reuse a decision this long unless reachability changes", lo=0, metavar="MS"
    )
    # one request per 3 s at most, only on a path predicted within 1.3x of the greedy
    # choice: at 4 requests/s that bounds the cost under 2.5 % of the mean (collab.edge.explore)
    explore_interval_s: float = setting(
        3.0,
        help="at most one request per this many s explores a path not tried lately (0: never)",
        lo=0,
        metavar="S",
    )
    explore_max_ratio: float = setting(
        1.3, help="explore only paths predicted within this factor of the greedy choice", lo=1.0
    )
    explore_stale_s: float = setting(
        10.0,
        help="a path not taken for this many s may be explored again",
        lo=0,
        lo_open=True,
        metavar="S",
    )
    slowdown: float = setting(
        1.0,
        help="emulate a weaker device: pad edge compute to slowdown x its profiled time",
        lo=1.0,
    )
    intra_threads: int = setting(1, help="ONNX Runtime threads per edge session", lo=1)
    strict_deadline: bool = setting(
        False, help="raise DeadlineError for a late answer instead of returning it"
    )
    initial_probe: bool = setting(True, help="probe the cloud once before the constructor returns")
    warm: bool = setting(True, help="load every session in a background thread at start")
    # a device's speed differs from the profile's machine by 2-10x (a named tier): learnt
    # from requests only, the first few would be routed as if the device were the profiler
    warm_speed_runs: int = setting(
        3,
        help="after the warm-up, time this many full-model runs to learn the device's speed "
        "before the first request (0: from requests only)",
        lo=0,
    )
    codec: str | None = setting(
        None, help="force this codec on every cloud path (None: the codec policy)"
    )
    tls: TlsConfig | None = (
        None  # towards the cloud; collab edge builds it from its --cloud-ca/... flags
    )
    max_message_bytes: int = setting(
        DEFAULT_MAX_MESSAGE_BYTES, help="gRPC message limit in bytes", lo=1
    )

    def __post_init__(self) -> None:
        cloud = comma_list(self.cloud) if isinstance(self.cloud, str) else tuple(self.cloud)
        object.__setattr__(self, "cloud", cloud)
        check_bounds(self)
        parse_policy(self.policy)
        if self.codec is not None:
            codecs.Codec.parse(self.codec)  # CodecError names the bad part


@dataclass(frozen=True, kw_only=True)
class InferenceResult:
    output: np.ndarray
    path: str  # edge_only | cloud_only | split
    split_point: str | None
    bytes_sent: int
    timings: dict[str, float]  # stage -> ms (edge, encode, cloud_call, local_finish, total, ...)
    fell_back: bool
    codec: str | None = None
    variant: str | None = None
    exit: str | None = None  # the early exit that answered it (path is then edge_only)
    deadline_met: bool = True
    fallback_reason: str | None = None
    model_version: str = ""
    predicted_ms: float = math.nan  # the decision engine's prediction for the chosen path
    explored: bool = False  # the path was taken to explore it (collab.edge.explore)

    @property
    def latency_ms(self) -> float:
        return self.timings.get("total_ms", math.nan)
