"""Scenario files: the dataclasses and a strict YAML loader.

Every problem in a file (unknown key, wrong type, negative bandwidth, missing or malformed
trace file, unknown policy) is reported as ONE :class:`ConfigError` naming the file, the
field path and its line, before anything starts (pydantic, through collab.yamlcfg). A
``null`` value means the default, as if the key were absent. The ``edges:`` and ``cloud:``
keys are the :class:`ClientConfig` / :class:`CloudConfig` settings by name, typed and bounded
by the fields themselves (collab.settings). The schema is documented in ``docs/scenarios.md``.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    PlainValidator,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationInfo,
    field_validator,
)

from cloud_node.config import CloudConfig
from collab.decision import parse_policy
from collab.edge.config import ClientConfig
from collab.edge.tiers import REFERENCE_MODEL, tier
from collab.emulator.traces import DirectionTrace, LinkTrace, MahimahiTrace, Segment, load_mahimahi
from collab.errors import CodecError, ConfigError
from collab.files import read_text
from collab.setting_keys import given, setting_keys
from collab.settings import settings, to_argv
from collab.yamlcfg import FieldError, config_dataclass, load_yaml, validate

Action = Literal["kill_cloud", "start_cloud", "cut_link", "restore_link"]
ACTIONS: tuple[str, ...] = typing.get_args(Action)
DEFAULT_POLICIES = ("edge_only", "cloud_only", "auto")
DEFAULT_CODECS = ("f32+zstd1", "f16+zstd1", "int8+zstd1", "int4+zstd1")

NonNegative = Annotated[StrictFloat, Field(ge=0)]
Positive = Annotated[StrictFloat, Field(gt=0)]


def _base(info: ValidationInfo) -> Path:
    """The directory relative paths in the file are resolved in (the file's own)."""
    return Path((info.context or {}).get("base") or Path.cwd())


def _codec(name: str) -> str:
    from collab.codec import Codec

    try:
        Codec.parse(name)
    except CodecError as e:
        raise ValueError(f"bad codec {name!r}: {e}") from None
    return name


def _policy(text: str) -> str:
    parse_policy(text)  # ConfigError: unknown policy
    return text


def _tier(name: str | None) -> str | None:
    if name is not None:
        tier(name)  # ConfigError listing the known tiers
    return name


def _trace(path: object, info: ValidationInfo) -> MahimahiTrace | None:
    if path is None:
        return None
    if not isinstance(path, str):
        raise ValueError(f"must be a trace file name, got {path!r}")
    p = (_base(info) / path).resolve()
    if not p.is_file():
        raise ValueError(f"trace file not found: {p}")
    return load_mahimahi(p)  # ConfigError naming the trace file's line


@config_dataclass
class ModelSpec:
    example: StrictStr | None = None  # built-in example model (collab.models.registry)
    bundle: Path | None = None  # or a bundle directory (relative to the scenario file)
    calibrate: StrictBool = True  # measure the codec table on the workload's inputs (cached)
    codecs: tuple[Annotated[StrictStr, AfterValidator(_codec)], ...] = (
        DEFAULT_CODECS  # []: the default
    )
    calibration_inputs: Annotated[StrictInt, Field(ge=1)] = 160

    @field_validator("example")
    @classmethod
    def _known_example(cls, example: str | None) -> str | None:
        from collab.models.registry import EXAMPLES

        if example is not None and example not in EXAMPLES:
            raise ValueError(f"unknown example model {example!r} (known: {', '.join(EXAMPLES)})")
        return example

    @field_validator("bundle")
    @classmethod
    def _bundle_dir(cls, bundle: Path | None, info: ValidationInfo) -> Path | None:
        if bundle is None:
            return None
        path = (_base(info) / bundle).resolve()
        if not (path / "manifest.json").is_file():
            raise ValueError(f"no bundle at {path} (manifest.json missing)")
        return path

    @field_validator("codecs")
    @classmethod
    def _default_codecs(cls, codecs: tuple[str, ...]) -> tuple[str, ...]:
        return codecs or DEFAULT_CODECS

    def __post_init__(self) -> None:
        if (self.example is None) == (self.bundle is None):
            raise ValueError(
                "give exactly one of 'example' (built-in model) or 'bundle' (directory)"
            )


@dataclass(frozen=True, kw_only=True)
class EdgeSpec:
    """``edges:``: ``count`` plus any :class:`ClientConfig` field by name, except those the
    runner sets per run (:data:`RUNNER_EDGE`); unset ones keep ClientConfig's defaults."""

    count: int = 1  # edge clients sharing the cloud node (and the emulated link)
    client: ClientConfig = field(default_factory=ClientConfig)


@dataclass(frozen=True, kw_only=True)
class CloudSpec:
    """``cloud:``: any :class:`CloudConfig` field by name, except those the runner sets
    (:data:`RUNNER_CLOUD`); the node process gets them as its flags, so unset ones keep
    CloudConfig's defaults."""

    settings: Mapping[str, Any] = field(default_factory=dict)

    def argv(self) -> list[str]:
        return to_argv(settings(CloudConfig), self.settings)


@config_dataclass
class DeviceSpec:
    """``device:``: what every edge runs on. Only the edge runtime gets it (the client's
    decision engine learns the device's speed from measurement, collab.edge.tiers)."""

    tier: Annotated[StrictStr | None, AfterValidator(_tier)] = None  # None: this machine


#: ClientConfig fields the runner sets for every run (the cloud is the emulator's
#: address, the policy the one being replayed, the deadline the workload's, the
#: sessions are warmed before the run starts, and a static policy calls the cloud on
#: every request, breaker or not, so it measures the path it names)
RUNNER_EDGE = ("cloud", "policy", "deadline_ms", "warm", "pinned_breaker")
#: CloudConfig fields the runner sets: it starts the node on loopback and stops it
RUNNER_CLOUD = ("listen", "metrics_port", "tls_cert", "tls_key", "tls_client_ca", "grace_s")


@config_dataclass
class Workload:
    requests: Annotated[StrictInt, Field(ge=1)] = 40  # per edge and policy
    rate_hz: Positive = 4.0  # per edge
    arrivals: Literal["uniform", "poisson"] = "uniform"
    deadline_ms: Positive | None = None
    input_noise: NonNegative = 0.0  # std of Gaussian sensor noise added to the dataset inputs

    @property
    def duration_s(self) -> float:
        return self.requests / self.rate_hz


@config_dataclass
class Event:
    at_s: NonNegative
    action: Action
    duration_s: Positive | None = None  # cut_link: restore after this long

    def __post_init__(self) -> None:
        if self.duration_s is not None and self.action != "cut_link":
            raise FieldError("duration_s", "only cut_link takes a duration")


@config_dataclass
class Acceptance:
    """``acceptance:``: the factors the report holds ``auto`` to (docs/scenarios.md);
    zero lost requests and auto's agreement within the accuracy budget always apply."""

    vs_measured_oracle: Positive = 1.10  # auto mean <= this x the measured oracle's mean
    vs_model_oracle: Positive = 1.10  # ... <= this x the model oracle's mean
    vs_best_static: Positive = 1.05  # ... <= this x the best static policy's mean


DEFAULT_EDGE_POWER_W = 6.4
"""A Raspberry Pi 4 B under full CPU load (docs/scenarios.md): the edge's power when the
scenario names none."""


@config_dataclass
class CostModel:
    """``cost:``: prices and power of the cost report, per 1,000 requests (defaults and their
    sources in docs/scenarios.md)."""

    uplink_usd_per_gb: NonNegative = 3.33  # cellular data (US average)
    cloud_usd_per_vcpu_s: NonNegative = 0.04048 / 3600  # on-demand vCPU (AWS Fargate)
    edge_power_w: NonNegative | None = None  # under load (None: the tier's, else the default)
    usd_per_kwh: NonNegative = 0.16  # electricity at the edge

    @property
    def power_w(self) -> float:
        """The edge's power under load the report uses."""
        return DEFAULT_EDGE_POWER_W if self.edge_power_w is None else self.edge_power_w


@dataclass(frozen=True, kw_only=True)
class Scenario:
    name: str
    description: str
    path: Path | None
    seed: int
    model: ModelSpec
    edge: EdgeSpec
    cloud: CloudSpec
    workload: Workload
    link: LinkTrace
    events: tuple[Event, ...]
    policies: tuple[str, ...]
    device: DeviceSpec = field(default_factory=DeviceSpec)
    acceptance: Acceptance = field(default_factory=Acceptance)
    cost: CostModel = field(default_factory=CostModel)

    @property
    def duration_s(self) -> float:
        return self.workload.duration_s


# --- the file as written: validated, then turned into the Scenario above --------------------
_EDGE_KEYS = settings(ClientConfig, skip=RUNNER_EDGE)
_CLOUD_KEYS = settings(CloudConfig, skip=RUNNER_CLOUD)


@config_dataclass
@setting_keys(_EDGE_KEYS)
class _EdgesFile:
    count: Annotated[StrictInt, Field(ge=1, le=64)] = 1

    def __post_init__(self) -> None:
        self.spec()  # the config's own checks (e.g. the codec); its ConfigError names the section

    def spec(self) -> EdgeSpec:
        return EdgeSpec(count=self.count, client=ClientConfig(**given(self, _EDGE_KEYS)))


@config_dataclass
@setting_keys(_CLOUD_KEYS)
class _CloudFile:
    def spec(self) -> CloudSpec:
        return CloudSpec(settings=given(self, _CLOUD_KEYS))


@config_dataclass
class _SegmentFile:
    duration_s: Positive
    up_mbps: NonNegative | None = None
    down_mbps: NonNegative | None = None
    rtt_ms: NonNegative = 0.0  # split evenly over the two directions, as is jitter_ms
    jitter_ms: NonNegative = 0.0
    loss: Annotated[StrictFloat, Field(ge=0, le=0.5)] = 0.0
    outage: StrictBool = False


@config_dataclass
class _MahimahiFile:
    """Bandwidth of a direction from a Mahimahi trace file (relative to the scenario file)."""

    up: Annotated[MahimahiTrace | None, PlainValidator(_trace)] = None
    down: Annotated[MahimahiTrace | None, PlainValidator(_trace)] = None


@config_dataclass
class _NetworkFile:
    segments: Annotated[tuple[_SegmentFile, ...], Field(min_length=1)]
    mahimahi: _MahimahiFile = field(default_factory=_MahimahiFile)
    start_s: NonNegative = 0.0  # where in the Mahimahi traces trace time 0 falls
    repeat: StrictBool = True

    def __post_init__(self) -> None:
        if self.start_s and self.mahimahi.up is None and self.mahimahi.down is None:
            raise FieldError("start_s", "is an offset into network.mahimahi's traces; give them")
        for i, s in enumerate(self.segments):
            for d in ("up", "down"):
                given, traced = (
                    getattr(s, f"{d}_mbps") is not None,
                    getattr(self.mahimahi, d) is not None,
                )
                if given and traced:
                    raise FieldError(
                        ("segments", i, f"{d}_mbps"),
                        f"the {d}link bandwidth comes from network.mahimahi.{d}; drop this key",
                    )
                if not given and not traced and not s.outage:
                    raise FieldError(
                        ("segments", i, f"{d}_mbps"), "is required (or give network.mahimahi)"
                    )

    def link(self) -> LinkTrace:
        up: list[Segment] = []
        down: list[Segment] = []
        for s in self.segments:
            for d, out in (("up", up), ("down", down)):
                mbps, traced = getattr(s, f"{d}_mbps"), getattr(self.mahimahi, d)
                rate = (
                    0.0
                    if s.outage and mbps is None and traced is None
                    else None
                    if mbps is None
                    else mbps * 1e6
                )
                out.append(
                    Segment(
                        duration_s=s.duration_s,
                        bandwidth_bps=rate,
                        delay_ms=s.rtt_ms / 2,
                        jitter_ms=s.jitter_ms / 2,
                        loss=s.loss,
                        outage=s.outage,
                    )
                )

        def offset(tr: MahimahiTrace | None) -> MahimahiTrace | None:
            return None if tr is None else replace(tr, start_s=self.start_s)

        return LinkTrace(
            uplink=DirectionTrace(
                segments=tuple(up), repeat=self.repeat, mahimahi=offset(self.mahimahi.up)
            ),
            downlink=DirectionTrace(
                segments=tuple(down), repeat=self.repeat, mahimahi=offset(self.mahimahi.down)
            ),
        )


@config_dataclass
class _ScenarioFile:
    name: StrictStr | None = None  # default: the file's name
    description: StrictStr = ""
    seed: Annotated[StrictInt, Field(ge=0)] = 0
    model: ModelSpec
    edges: _EdgesFile = field(default_factory=_EdgesFile)
    device: DeviceSpec = field(default_factory=DeviceSpec)
    cloud: _CloudFile = field(default_factory=_CloudFile)
    workload: Workload = field(default_factory=Workload)
    network: _NetworkFile
    events: tuple[Event, ...] = ()
    policies: tuple[Annotated[StrictStr, AfterValidator(_policy)], ...] = ()  # (): DEFAULT_POLICIES
    acceptance: Acceptance = field(default_factory=Acceptance)
    cost: CostModel = field(default_factory=CostModel)

    @field_validator("policies")
    @classmethod
    def _once_each(cls, policies: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(policies)) != len(policies):
            raise ValueError("lists a policy twice")
        return policies

    def __post_init__(self) -> None:
        if self.device.tier is not None:
            if self.edges.slowdown is not None:  # type: ignore[attr-defined]
                raise FieldError(
                    ("device", "tier"), "a device tier replaces edges.slowdown; drop one"
                )
            if self.model.example not in (None, REFERENCE_MODEL):
                raise FieldError(
                    ("device", "tier"),
                    f"device tiers are defined on the {REFERENCE_MODEL!r} example model",
                )
        for i, e in enumerate(self.events):
            if e.at_s > self.workload.duration_s:
                raise FieldError(
                    ("events", i, "at_s"),
                    f"is after the end of the workload ({self.workload.duration_s:.1f} s)",
                )


def _without_nulls(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _without_nulls(v) for k, v in data.items() if v is not None}
    if isinstance(data, list):
        return [_without_nulls(v) for v in data]
    return data


def parse_scenario(text: str, *, source: str = "<scenario>", base: Path | None = None) -> Scenario:
    data, lines = load_yaml(text, source)
    f = validate(
        _ScenarioFile,
        _without_nulls(data) if data is not None else {},
        source=source,
        lines=lines,
        context={"base": base},
    )
    return Scenario(
        name=f.name or (Path(source).stem if source != "<scenario>" else "scenario"),
        description=f.description,
        path=None,
        seed=f.seed,
        model=f.model,
        edge=f.edges.spec(),
        cloud=f.cloud.spec(),
        workload=f.workload,
        link=f.network.link(),
        events=tuple(sorted(f.events, key=lambda e: e.at_s)),
        policies=f.policies or DEFAULT_POLICIES,
        device=f.device,
        acceptance=f.acceptance,
        cost=_cost_for(f.cost, f.device),
    )


def _cost_for(cost: CostModel, device: DeviceSpec) -> CostModel:
    """A named device's power under load replaces the default edge power (an explicit
    ``cost.edge_power_w`` still wins)."""
    if cost.edge_power_w is None and device.tier is not None:
        return replace(cost, edge_power_w=tier(device.tier).power_w.active)
    return cost


def load_scenario(path: str | Path) -> Scenario:
    p = Path(path)
    sc = parse_scenario(read_text(p, "scenario file"), source=str(p), base=p.resolve().parent)
    return replace(sc, path=p.resolve())


def check_split_policies(
    sc: Scenario, split_names: list[str], fail: Callable[[str], ConfigError]
) -> None:
    """Forced split policies must name split points of the bundle (checked once it is loaded)."""
    for p in sc.policies:
        if p.startswith("split:") and p[6:] not in split_names:
            raise fail(f"policy {p!r}: unknown split point (known: {', '.join(split_names)})")
