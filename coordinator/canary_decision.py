"""The canary decision: a pure function of the plan and the telemetry windows a step
recorded, so replaying a rollout record reproduces every decision.

The candidate sample is what the step's canary nodes reported for the candidate version;
the baseline sample is what the control nodes (live edges outside the step's set)
reported for the baseline version; agreement comes from the canary nodes' shadow runs of
the baseline. A step is judged once, on the first prefix of its windows that holds the
full sample (a fixed-sample test: no peeking, so each step's false-rollback rate is at
most ``alpha``); every test is one-sided ("the candidate is worse") and the family is
corrected with Holm's step-down method.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from collab.control.canary import (
    METRICS,
    CanaryDecision,
    CanaryPlan,
    CanaryRecord,
    CanaryTest,
    VersionTelemetry,
)
from coordinator.canary_stats import binomial_sf, holm, mann_whitney_greater, two_proportion_greater

CANDIDATE, BASELINE = "candidate", "baseline"


@dataclass(frozen=True, kw_only=True)
class Window:
    """One recorded telemetry interval of one node and version."""

    step: int
    node_id: str
    group: str  # candidate | baseline
    telemetry: VersionTelemetry
    received_at: float = 0.0


@dataclass(frozen=True, kw_only=True)
class Sample:
    requests: int
    errors: int
    latency_ms: np.ndarray  # every latency sample of the group, float64
    compared: int
    agreed: int


def pooled(windows: Sequence[Window], group: str, shadow_of: str = "") -> Sample:
    ws = [w.telemetry for w in windows if w.group == group]
    shadow = [t for t in ws if t.shadow_version == shadow_of] if shadow_of else []
    return Sample(
        requests=sum(t.requests for t in ws),
        errors=sum(t.errors for t in ws),
        latency_ms=np.concatenate([np.asarray(t.latency_ms, np.float64) for t in ws])
        if ws
        else np.empty(0),
        compared=sum(t.shadow_compared for t in shadow),
        agreed=sum(t.shadow_agreed for t in shadow),
    )


def _needs_baseline(plan: CanaryPlan) -> bool:
    return any(m != "agreement" for m in plan.metrics)


@dataclass
class Progress:
    """Running sample sizes of a step: whether it is complete is decided from these
    counts alone, so checking after every window costs O(1)."""

    candidate: int = 0
    baseline: int = 0
    compared: int = 0

    def add(self, w: Window, baseline_version: str) -> None:
        t = w.telemetry
        if w.group == CANDIDATE:
            self.candidate += t.requests
            if t.shadow_version == baseline_version:
                self.compared += t.shadow_compared
        elif w.group == BASELINE:
            self.baseline += t.requests

    def missing(self, plan: CanaryPlan) -> list[str]:
        """What the step still lacks before it can be judged (empty: complete)."""
        out = []
        if self.candidate < plan.min_requests:
            out.append(f"candidate requests {self.candidate}/{plan.min_requests}")
        if _needs_baseline(plan) and self.baseline < plan.min_requests:
            out.append(f"baseline requests {self.baseline}/{plan.min_requests}")
        if "agreement" in plan.metrics and self.compared < plan.min_shadow:
            out.append(f"shadow comparisons {self.compared}/{plan.min_shadow}")
        return out


def progress(windows: Sequence[Window], baseline: str) -> Progress:
    p = Progress()
    for w in windows:
        p.add(w, baseline)
    return p


def _test(
    plan: CanaryPlan, metric: str, cand: Sample, base: Sample
) -> tuple[float, float, int, int, str]:
    """(statistic, p-value, n candidate, n baseline, detail) of one metric."""
    scale = 1.0 + plan.latency_tolerance
    if metric == "latency":
        c = cand.latency_ms / scale
        u, p = mann_whitney_greater(c, base.latency_ms)
        med = (
            f"median {np.median(cand.latency_ms):.2f} vs {np.median(base.latency_ms):.2f} ms"
            if len(cand.latency_ms) and len(base.latency_ms)
            else "no latency samples"
        )
        return u, p, len(c), len(base.latency_ms), f"{med}, candidate / {scale:g}"
    if metric == "latency_p95":
        if not len(cand.latency_ms) or not len(base.latency_ms):
            return 0.0, 1.0, len(cand.latency_ms), len(base.latency_ms), "no latency samples"
        thr = float(np.quantile(base.latency_ms, 0.95))
        k1 = int((cand.latency_ms / scale > thr).sum())
        k2 = int((base.latency_ms > thr).sum())
        n1, n2 = len(cand.latency_ms), len(base.latency_ms)
        z, p = two_proportion_greater(k1, n1, k2, n2)
        cp95 = float(np.quantile(cand.latency_ms, 0.95))
        return (
            z,
            p,
            n1,
            n2,
            (
                f"p95 {cp95:.2f} vs {thr:.2f} ms; above the baseline p95 (candidate / "
                f"{scale:g}): {k1}/{n1} vs baseline {k2}/{n2}"
            ),
        )
    if metric == "error_rate":
        z, p = two_proportion_greater(cand.errors, cand.requests, base.errors, base.requests)
        return (
            z,
            p,
            cand.requests,
            base.requests,
            (f"errors {cand.errors}/{cand.requests} vs {base.errors}/{base.requests}"),
        )
    assert metric == "agreement"
    dis = cand.compared - cand.agreed
    p = binomial_sf(dis, cand.compared, plan.agreement_budget)
    return (
        float(dis),
        p,
        cand.compared,
        0,
        (f"agreement {cand.agreed}/{cand.compared}, disagreement budget {plan.agreement_budget:g}"),
    )


def tests(plan: CanaryPlan, windows: Sequence[Window], baseline: str) -> tuple[CanaryTest, ...]:
    cand, base = pooled(windows, CANDIDATE, baseline), pooled(windows, BASELINE)
    raw = {m: _test(plan, m, cand, base) for m in plan.metrics}
    rejected = holm({m: r[1] for m, r in raw.items()}, plan.alpha)
    return tuple(
        CanaryTest(
            metric=m,
            test=METRICS[m],
            statistic=float(s),
            p_value=float(p),
            rejected=rejected[m],
            n_candidate=n1,
            n_baseline=n2,
            detail=detail,
        )
        for m, (s, p, n1, n2, detail) in raw.items()
    )


def _verdict(step: int, n: int, ts: tuple[CanaryTest, ...], last_step: bool) -> CanaryDecision:
    bad = [t for t in ts if t.rejected]
    if bad:
        reason = "; ".join(f"{t.metric} worse (p={t.p_value:.3g}, {t.detail})" for t in bad)
        return CanaryDecision(step=step, action="rollback", reason=reason, windows=n, tests=ts)
    worst = min(ts, key=lambda t: t.p_value)
    reason = f"no metric worse after Holm (smallest p={worst.p_value:.3g}, {worst.metric})" + (
        "; promoting to the whole fleet" if last_step else ""
    )
    return CanaryDecision(step=step, action="promote", reason=reason, windows=n, tests=ts)


def decide(
    plan: CanaryPlan, baseline: str, step: int, windows: Sequence[Window], *, last_step: bool
) -> CanaryDecision | None:
    """The decision of ``step`` on ``windows`` (the step's, in recorded order): on the
    shortest prefix that holds the full sample; None while it lacks one."""
    p = Progress()
    for n, w in enumerate(windows, 1):
        p.add(w, baseline)
        if not p.missing(plan):
            return _verdict(step, n, tests(plan, windows[:n], baseline), last_step)
    return None


def timed_out(
    plan: CanaryPlan, baseline: str, step: int, windows: Sequence[Window]
) -> CanaryDecision:
    """The step ran out of time before its sample was complete: roll back (a candidate
    that was not shown to be good is not promoted)."""
    lacks = progress(windows, baseline).missing(plan)
    return CanaryDecision(
        step=step,
        action="rollback",
        reason=f"timeout: no full sample within {plan.max_duration_s:g}s ({', '.join(lacks)})",
        windows=len(windows),
        tests=tests(plan, windows, baseline),
        timeout=True,
    )


def replay(record: CanaryRecord, windows: Sequence[Window]) -> list[CanaryDecision]:
    """Recompute every decision of ``record`` from its recorded windows (all but
    ``decided_at``, a clock reading; a timeout is replayed on the windows it saw)."""
    out = []
    last = len(record.steps) - 2  # the step whose promotion goes to 100 %
    for d in record.decisions:
        ws = [w for w in windows if w.step == d.step]
        if d.refused:  # decided from the acks: the telemetry must not have decided first
            if decide(
                record.plan, record.baseline_version, d.step, ws[: d.windows], last_step=False
            ):
                raise ValueError(f"step {d.step}: the windows decided before the refusal")
            got = d
        elif d.timeout:
            got = timed_out(record.plan, record.baseline_version, d.step, ws[: d.windows])
        else:
            got_or_none = decide(
                record.plan, record.baseline_version, d.step, ws, last_step=d.step == last
            )
            if got_or_none is None:
                raise ValueError(f"step {d.step}: the recorded windows never complete a sample")
            got = got_or_none
        out.append(got)
    return out
