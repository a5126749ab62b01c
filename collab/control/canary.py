"""Canary rollout domain types and their protobuf codecs.

:class:`VersionTelemetry` is what an edge reports per bundle version and interval (it
rides in the node's ``Telemetry``, on the node's own authenticated topic);
:class:`CanaryPlan` is how the operator asks a canary to be run and judged (its fields
are the ``collab rollout --canary`` flags); :class:`CanaryRecord` is what the
coordinator records: seed, order, every decision with its tests. Decoding raises only
:class:`MalformedMessage` (this module sits below ``collab.control.messages``, which
embeds these types).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from collab.errors import ConfigError, MalformedMessage
from collab.proto import control_pb2 as pb
from collab.settings import check_bounds, setting

MAX_LATENCY_SAMPLES = 256  # per version and interval: 1 KiB of floats, far below MAX_PAYLOAD
MAX_VERSIONS = 4  # versions one telemetry interval may report
#: metric -> the test that judges it (one-sided: "the candidate is worse")
METRICS = {
    "latency": "mann-whitney-u",
    "latency_p95": "two-proportion-z",
    "error_rate": "two-proportion-z",
    "agreement": "binomial",
}
STATES = ("running", "promoted", "rolled_back", "superseded")


@dataclass(frozen=True, kw_only=True)
class VersionTelemetry:
    version: str
    requests: int = 0
    errors: int = 0
    latency_ms: tuple[float, ...] = ()
    shadow_version: str = ""
    shadow_compared: int = 0
    shadow_agreed: int = 0
    shadow_dropped: int = 0


@dataclass(frozen=True, kw_only=True)
class CanaryPlan:
    """How a canary is run and judged. Each step waits for its sample (``min_requests``
    candidate requests, as many baseline requests from the control nodes, ``min_shadow``
    shadow comparisons) and then tests once (no peeking): promote when no test rejects
    after Holm's correction at ``alpha``, roll back otherwise; a step that has not its
    sample after ``max_duration_s`` rolls back (not shown to be good)."""

    share: float = setting(
        5.0, help="first step: percent of the live edges (0, 100]", lo=0, lo_open=True, hi=100
    )
    steps: tuple[str, ...] = setting(
        ("25", "100"), help="later steps, percent of the live edges (comma list, ends at 100)"
    )
    metrics: tuple[str, ...] = setting(
        ("latency_p95", "agreement"),
        flag="--metric",
        help="what to judge: latency (Mann-Whitney U), latency_p95 (share above the "
        "baseline's p95 x (1 + tolerance), two-proportion z), error_rate (two-proportion z), "
        "agreement (top-1 vs the shadow baseline, exact binomial against the budget)",
    )
    min_requests: int = setting(
        200, help="candidate (and control) requests a step needs before it is judged", lo=1
    )
    min_shadow: int = setting(
        50, help="shadow comparisons a step needs before agreement is judged", lo=1
    )
    max_duration_s: float = setting(
        600.0,
        help="seconds a step may wait for its sample; then it rolls back",
        lo=0,
        lo_open=True,
        flag="--max-duration",
    )
    alpha: float = setting(
        0.05, help="family-wise significance across the metrics (Holm)", lo=0, lo_open=True, hi=0.5
    )
    shadow_share: float = setting(
        0.05,
        help="share of a canary node's requests the baseline also answers (0, 1]",
        lo=0,
        lo_open=True,
        hi=1,
    )
    latency_tolerance: float = setting(
        0.2, help="latency slowdown tolerated: candidate vs baseline x (1 + this)", lo=0
    )
    agreement_budget: float = setting(
        0.01, help="top-1 disagreement with the baseline tolerated", lo=0, hi=1
    )
    seed: int = setting(0, help="seed of the canary order (0: drawn from the OS, recorded)", lo=0)

    def __post_init__(self) -> None:
        if not (0 < self.share <= 100) or not math.isfinite(self.share):
            raise ConfigError(f"canary share must be in (0, 100] %, got {self.share:g}%")
        check_bounds(self)
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown or not self.metrics:
            raise ConfigError(
                f"unknown canary metric(s) {unknown or '(none given)'}: nodes report "
                f"{', '.join(METRICS)}"
            )
        try:
            later = [float(s) for s in self.steps]
        except ValueError as e:
            raise ConfigError(f"canary steps must be percentages: {e}") from e
        if any(not (0 < p <= 100) or not math.isfinite(p) for p in later) or later != sorted(
            set(later)
        ):
            raise ConfigError(f"canary steps must rise within (0, 100]: {later}")

    def percents(self) -> tuple[float, ...]:
        """Every step: the share, the later steps above it, then 100 (the promotion to
        the whole fleet; a 100 % canary is judged before its nodes drop the shadow)."""
        p = [self.share, *(x for x in (float(s) for s in self.steps) if x > self.share)]
        return tuple(p if p[-1] == 100 and len(p) > 1 else [*p, 100.0])


def parse_share(text: str) -> float:
    """``"5%"`` / ``"5"`` -> 5.0 (percent); ConfigError for anything else."""
    try:
        return float(text.strip().rstrip("%"))
    except ValueError:
        raise ConfigError(f"canary share must be a percentage like 5%, got {text!r}") from None


@dataclass(frozen=True, kw_only=True)
class CanaryTest:
    metric: str
    test: str
    statistic: float
    p_value: float
    rejected: bool
    n_candidate: int
    n_baseline: int
    detail: str = ""


@dataclass(frozen=True, kw_only=True)
class CanaryDecision:
    step: int
    action: str  # promote | rollback
    reason: str
    windows: int
    tests: tuple[CanaryTest, ...] = ()
    timeout: bool = False
    refused: bool = False  # decided from the acks, not the telemetry: no node took it
    decided_at: float = 0.0


@dataclass(frozen=True, kw_only=True)
class CanaryRecord:
    canary_id: str
    version: str
    baseline_version: str
    model_name: str
    seed: int
    order: tuple[str, ...]
    steps: tuple[float, ...]
    plan: CanaryPlan
    step: int = 0
    state: str = "running"
    started_at: float = 0.0
    step_started_at: float = 0.0
    decisions: tuple[CanaryDecision, ...] = ()
    ignored_windows: int = 0
    canary_nodes: tuple[str, ...] = ()


def canary_count(percent: float, fleet: int) -> int:
    """Nodes a step of ``percent`` takes from an order of ``fleet`` nodes (at least one)."""
    return min(fleet, max(1, math.ceil(percent * fleet / 100.0 - 1e-9)))


# ---------------------------------------------------------------- codecs


def version_telemetry_to_proto(v: VersionTelemetry) -> pb.VersionTelemetry:
    return pb.VersionTelemetry(
        version=v.version,
        requests=v.requests,
        errors=v.errors,
        latency_ms=list(v.latency_ms),
        shadow_version=v.shadow_version,
        shadow_compared=v.shadow_compared,
        shadow_agreed=v.shadow_agreed,
        shadow_dropped=v.shadow_dropped,
    )


def version_telemetry_from_proto(m: pb.VersionTelemetry) -> VersionTelemetry:
    if len(m.latency_ms) > MAX_LATENCY_SAMPLES:
        raise MalformedMessage(f"too many latency samples ({len(m.latency_ms)})")
    lat = tuple(float(x) for x in m.latency_ms)
    if not all(math.isfinite(x) and x >= 0 for x in lat):
        raise MalformedMessage("latency samples must be finite and >= 0")
    if m.shadow_agreed > m.shadow_compared or m.errors > m.requests:
        raise MalformedMessage("more agreements than comparisons, or errors than requests")
    if len(lat) > m.requests:
        raise MalformedMessage("more latency samples than requests")
    return VersionTelemetry(
        version=m.version,
        requests=m.requests,
        errors=m.errors,
        latency_ms=lat,
        shadow_version=m.shadow_version,
        shadow_compared=m.shadow_compared,
        shadow_agreed=m.shadow_agreed,
        shadow_dropped=m.shadow_dropped,
    )


def versions_from_proto(items: list[pb.VersionTelemetry]) -> tuple[VersionTelemetry, ...]:
    if len(items) > MAX_VERSIONS:
        raise MalformedMessage(f"too many versions in one telemetry ({len(items)})")
    return tuple(version_telemetry_from_proto(v) for v in items)


def plan_to_proto(p: CanaryPlan) -> pb.CanaryPlan:
    return pb.CanaryPlan(
        share=p.share,
        steps=[float(s) for s in p.steps],
        metrics=list(p.metrics),
        min_requests=p.min_requests,
        min_shadow=p.min_shadow,
        max_duration_s=p.max_duration_s,
        alpha=p.alpha,
        shadow_share=p.shadow_share,
        latency_tolerance=p.latency_tolerance,
        agreement_budget=p.agreement_budget,
        seed=p.seed,
    )


def plan_from_proto(m: pb.CanaryPlan) -> CanaryPlan:
    """ConfigError (a refusal for the operator) when the plan breaks its bounds."""
    return CanaryPlan(
        share=m.share,
        steps=tuple(f"{s:g}" for s in m.steps),
        metrics=tuple(m.metrics),
        min_requests=m.min_requests,
        min_shadow=m.min_shadow,
        max_duration_s=m.max_duration_s,
        alpha=m.alpha,
        shadow_share=m.shadow_share,
        latency_tolerance=m.latency_tolerance,
        agreement_budget=m.agreement_budget,
        seed=m.seed,
    )


def _test_to_proto(t: CanaryTest) -> pb.CanaryTest:
    return pb.CanaryTest(
        metric=t.metric,
        test=t.test,
        statistic=t.statistic,
        p_value=t.p_value,
        rejected=t.rejected,
        n_candidate=t.n_candidate,
        n_baseline=t.n_baseline,
        detail=t.detail,
    )


def _test_from_proto(m: pb.CanaryTest) -> CanaryTest:
    return CanaryTest(
        metric=m.metric,
        test=m.test,
        statistic=m.statistic,
        p_value=m.p_value,
        rejected=m.rejected,
        n_candidate=m.n_candidate,
        n_baseline=m.n_baseline,
        detail=m.detail,
    )


def decision_to_proto(d: CanaryDecision) -> pb.CanaryDecision:
    return pb.CanaryDecision(
        step=d.step,
        action=d.action,
        reason=d.reason,
        decided_at=d.decided_at,
        windows=d.windows,
        tests=[_test_to_proto(t) for t in d.tests],
        timeout=d.timeout,
        refused=d.refused,
    )


def decision_from_proto(m: pb.CanaryDecision) -> CanaryDecision:
    return CanaryDecision(
        step=m.step,
        action=m.action,
        reason=m.reason,
        decided_at=m.decided_at,
        windows=m.windows,
        tests=tuple(_test_from_proto(t) for t in m.tests),
        timeout=m.timeout,
        refused=m.refused,
    )


def record_to_proto(r: CanaryRecord) -> pb.CanaryRecord:
    return pb.CanaryRecord(
        canary_id=r.canary_id,
        version=r.version,
        baseline_version=r.baseline_version,
        model_name=r.model_name,
        seed=r.seed,
        order=list(r.order),
        steps=list(r.steps),
        step=r.step,
        state=r.state,
        step_started_at=r.step_started_at,
        started_at=r.started_at,
        plan=plan_to_proto(r.plan),
        decisions=[decision_to_proto(d) for d in r.decisions],
        ignored_windows=r.ignored_windows,
        canary_nodes=list(r.canary_nodes),
    )


def record_from_proto(m: pb.CanaryRecord) -> CanaryRecord:
    try:
        plan = plan_from_proto(m.plan)
    except ConfigError as e:
        raise MalformedMessage(f"canary plan: {e}") from e
    return CanaryRecord(
        canary_id=m.canary_id,
        version=m.version,
        baseline_version=m.baseline_version,
        model_name=m.model_name,
        seed=m.seed,
        order=tuple(m.order),
        steps=tuple(m.steps),
        plan=plan,
        step=m.step,
        state=m.state,
        started_at=m.started_at,
        step_started_at=m.step_started_at,
        decisions=tuple(decision_from_proto(d) for d in m.decisions),
        ignored_windows=m.ignored_windows,
        canary_nodes=tuple(m.canary_nodes),
    )
