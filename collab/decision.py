"""The decision engine: which path serves the next request.

Pure functions over dataclasses (no I/O, no clock), so every choice can be
reproduced and unit-tested from a synthetic profile. For every candidate path the
engine predicts

    total = edge compute (profiled x current edge scale) + encode
            + bytes / bandwidth + RTT + cloud queue + cloud compute + decode

and picks the fastest candidate that meets the deadline and the accuracy budget,
keeping the previous choice unless the new one is clearly better (hysteresis).

A path that passes a calibrated early exit (``PathSpec.exit``) is predicted as the mix
of its two outcomes: with the exit's calibrated rate the edge answers after the exit
head, otherwise the path runs on (its transfer, cloud and loss weighted by the rest);
its deadline check takes the slower outcome.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from collab.bundle import Manifest
from collab.codec.policy import CodecRow, best_codec, codec_rows
from collab.codec.spec import DEFAULT_CODEC
from collab.errors import CodecError, ConfigError
from collab.net.estimator import NetState

PathKind = Literal["edge_only", "cloud_only", "split"]

# Throughput assumptions for the uncalibrated default codec (bytes per ms); zstd-1 on
# float features runs at several hundred MB/s, so this is a conservative guess.
_DEFAULT_ENCODE_BYTES_PER_MS = 400_000.0
_DEFAULT_DECODE_BYTES_PER_MS = 800_000.0


def path_key(path: str, split_point: str | None) -> str:
    """A path's policy name: ``edge_only``, ``cloud_only`` or ``split:<name>``."""
    return f"split:{split_point}" if path == "split" else path


@dataclass(frozen=True, kw_only=True)
class ExitSpec:
    """An early exit a path passes on the edge (collab.bundle.EarlyExit, calibrated)."""

    name: str
    prefix_ms: float  # edge compute up to the exit's cut
    ms: float  # the exit head
    rate: float  # fraction of requests that exit
    agreement: float  # top-1 agreement of the exited ones with the full model


@dataclass(frozen=True, kw_only=True)
class PathSpec:
    """What a path costs independent of the network: the profile of one candidate."""

    path: PathKind
    split_point: str | None = None
    variant: str | None = None  # edge-side variant name (e.g. "int8_static"), None = FP32
    edge_ms: float = 0.0  # profiled edge compute before the transfer (head or full model)
    cloud_ms: float = 0.0  # profiled cloud compute (tail or full model)
    local_finish_ms: float = 0.0  # edge compute to finish locally if the cloud fails
    raw_bytes: int = 0  # float32 bytes of what crosses the network
    output_bytes: int = 0  # bytes of the answer coming back
    codec_stats: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    edge_agreement: float = 1.0  # top-1 agreement of the edge variant with FP32
    exit: ExitSpec | None = None  # an early exit on the way (FP32 paths only)

    @property
    def key(self) -> str:
        base = path_key(self.path, self.split_point)
        if self.exit is not None:
            return f"{base}@exit:{self.exit.name}"
        return base if self.variant is None else f"{base}@{self.variant}"

    @property
    def plain(self) -> bool:
        """Neither an edge variant nor an exit: one of the fixed policies."""
        return self.variant is None and self.exit is None

    @property
    def uses_cloud(self) -> bool:
        return self.path != "edge_only"

    @functools.cached_property
    def codec_rows(self) -> tuple[CodecRow, ...]:
        """``codec_stats`` validated once, not per request (ConfigError if invalid)."""
        return codec_rows(self.codec_stats)


@dataclass(frozen=True, kw_only=True)
class Profile:
    model_name: str
    paths: tuple[PathSpec, ...]

    def split_names(self) -> list[str]:
        return [p.split_point for p in self.paths if p.split_point is not None and p.plain]

    def path_keys(self) -> list[str]:
        """The fixed policies, one per path without an edge variant: ``edge_only``,
        ``cloud_only``, ``split:<name>``..."""
        return [p.key for p in self.paths if p.plain]


@dataclass(frozen=True, kw_only=True)
class CloudState:
    queue_ms: float = 0.0  # expected queueing delay (LoadReport / ServerTiming)
    compute_scale: float = 1.0  # cloud speed relative to the profile, for paths not observed yet
    # observed cloud compute per path key (ServerTiming); small tails are dominated by fixed
    # per-batch costs, so a measured value beats any scaling of the profile
    compute_ms: Mapping[str, float] = field(default_factory=dict)
    # how much a stale observation still counts (missing: 1); the rest is the profile's
    compute_weight: Mapping[str, float] = field(default_factory=dict)
    serves_model: bool = True  # the cloud serves this bundle version
    breaker_open: bool = False


@dataclass(frozen=True, kw_only=True)
class EdgeState:
    compute_scale: float = 1.0  # measured edge compute / profiled (load, slowdown)


@dataclass(frozen=True, kw_only=True)
class Policy:
    mode: Literal["auto", "edge_only", "cloud_only", "split"]
    split_point: str | None = None

    @property
    def key(self) -> str:
        return path_key(self.mode, self.split_point)


def parse_policy(text: str, profile: Profile | None = None) -> Policy:
    """Parse ``auto | edge_only | cloud_only | split:<name>``; ConfigError on anything else."""
    t = text.strip()
    if t in ("auto", "edge_only", "cloud_only"):
        return Policy(mode=t)  # type: ignore[arg-type]
    if t.startswith("split:") and len(t) > 6:
        name = t[6:]
        if profile is not None and name not in profile.split_names():
            known = ", ".join(profile.split_names()) or "none"
            raise ConfigError(f"policy {text!r}: unknown split point {name!r} (known: {known})")
        return Policy(mode="split", split_point=name)
    raise ConfigError(f"unknown policy {text!r} (use auto, edge_only, cloud_only or split:<name>)")


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """One path's predicted latency breakdown (all times in ms)."""

    key: str
    path: PathKind
    split_point: str | None
    variant: str | None
    codec: str | None
    bytes: float
    edge_ms: float
    encode_ms: float
    transfer_ms: float
    rtt_ms: float
    queue_ms: float
    cloud_ms: float
    decode_ms: float
    total_ms: float
    accuracy_loss: float
    local_finish_ms: float
    feasible: bool  # reachable and within the accuracy budget
    meets_deadline: bool
    note: str = ""
    exit: str | None = None  # the early exit this path passes
    exit_rate: float = 0.0  # predicted fraction of requests answered by it
    exit_saved_ms: float = 0.0  # per exited request, against running the path on
    exit_saved_bytes: float = 0.0  # per exited request

    @property
    def call_ms(self) -> float:
        """The predicted cloud call once the frame is encoded: transfer, RTT, queue and
        cloud compute (what a call still out is measured against)."""
        return self.transfer_ms + self.rtt_ms + self.queue_ms + self.cloud_ms

    def breakdown(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "path": self.path,
            "split_point": self.split_point,
            "variant": self.variant,
            "codec": self.codec,
            "bytes": round(self.bytes),
            "edge_ms": self.edge_ms,
            "encode_ms": self.encode_ms,
            "transfer_ms": self.transfer_ms,
            "rtt_ms": self.rtt_ms,
            "queue_ms": self.queue_ms,
            "cloud_ms": self.cloud_ms,
            "decode_ms": self.decode_ms,
            "total_ms": self.total_ms,
            "accuracy_loss": self.accuracy_loss,
            "feasible": self.feasible,
            "meets_deadline": self.meets_deadline,
            "note": self.note,
            "exit": self.exit,
            "exit_rate": self.exit_rate,
            "exit_saved_ms": self.exit_saved_ms,
            "exit_saved_bytes": round(self.exit_saved_bytes),
        }


@dataclass(frozen=True, kw_only=True)
class Decision:
    chosen: Candidate
    candidates: tuple[Candidate, ...]
    reason: str
    policy: str
    explored: bool = False  # an exploring request's choice (collab.edge.explore), not greedy

    def explain(self) -> dict[str, Any]:
        """Every candidate's predicted breakdown (fastest first) and why the winner won."""
        return {
            "policy": self.policy,
            "chosen": self.chosen.key,
            "reason": self.reason,
            "candidates": [
                c.breakdown() for c in sorted(self.candidates, key=lambda c: c.total_ms)
            ],
        }


def default_codec_stats(raw_bytes: int) -> dict[str, dict[str, float]]:
    """The uncalibrated fallback: lossless f32+zstd1, bytes estimated as the raw size."""
    return {
        DEFAULT_CODEC: {
            "bytes": float(raw_bytes),
            "ratio": 1.0,
            "encode_ms": raw_bytes / _DEFAULT_ENCODE_BYTES_PER_MS,
            "decode_ms": raw_bytes / _DEFAULT_DECODE_BYTES_PER_MS,
            "rel_l2": 0.0,
            "agreement": 1.0,
        }
    }


def profile_from_manifest(
    manifest: Manifest, calibration: Mapping[str, Any] | None = None, *, images: bool = False
) -> Profile:
    """Candidate paths of a bundle: edge-only (and its variants), cloud-only, every split
    point (and every head variant), with the codec table of what crosses the network.

    ``images``: the profile of a request that comes as a camera image
    (``Client.infer_image``). Its cloud-only path sends the uint8 image with an image
    codec (JPEG quality, PNG: the table's ``image`` section) when the bundle has a
    preprocessing and that calibration; otherwise it is the tensor path."""
    out_bytes = 4 * math.prod(manifest.output_shape)
    cal_points: Mapping[str, Any] = (calibration or {}).get("points", {}) or {}
    cal_input: Mapping[str, Any] | None = (calibration or {}).get("input") or None
    cal_image: Mapping[str, Any] | None = (calibration or {}).get("image") or None
    paths: list[PathSpec] = [PathSpec(path="edge_only", edge_ms=manifest.full_ms)]
    paths += [
        PathSpec(path="edge_only", variant=v.name, edge_ms=v.ms, edge_agreement=v.agreement)
        for v in manifest.full_variants
    ]
    pre = manifest.preprocessing
    if images and pre is not None and cal_image:
        cloud_bytes, cloud_stats = 3 * pre.size[0] * pre.size[1], cal_image
    else:
        cloud_bytes, cloud_stats = (
            manifest.input_bytes,
            cal_input or default_codec_stats(manifest.input_bytes),
        )
    paths.append(
        PathSpec(
            path="cloud_only",
            cloud_ms=manifest.full_ms,
            local_finish_ms=manifest.full_ms,
            raw_bytes=cloud_bytes,
            output_bytes=out_bytes,
            codec_stats=cloud_stats,
        )
    )
    for sp in manifest.split_points:
        if sp.bottleneck is not None and sp.name not in cal_points:
            continue  # a learned code is lossy: without its measured rows it is no candidate
        stats = cal_points.get(sp.name) or default_codec_stats(sp.feature_bytes)
        common = dict(
            path="split",
            split_point=sp.name,
            cloud_ms=sp.tail_ms,
            local_finish_ms=sp.tail_ms,
            raw_bytes=sp.feature_bytes,
            output_bytes=out_bytes,
            codec_stats=stats,
        )
        paths.append(PathSpec(edge_ms=sp.head_ms, **common))  # type: ignore[arg-type]
        paths += [
            PathSpec(edge_ms=v.ms, variant=v.name, edge_agreement=v.agreement, **common)  # type: ignore[arg-type]
            for v in sp.head_variants
        ]
    paths += _exit_paths(manifest, paths)
    return Profile(model_name=manifest.model_name, paths=tuple(paths))


def _exit_paths(manifest: Manifest, paths: list[PathSpec]) -> list[PathSpec]:
    """Every FP32 path whose edge compute passes an exit's cut, once per exit."""
    out = []
    for e in manifest.exits:
        at = manifest.split(e.split)
        spec = ExitSpec(
            name=e.name, prefix_ms=at.head_ms, ms=e.ms, rate=e.rate, agreement=e.agreement
        )
        for p in paths:
            if not p.plain or p.path == "cloud_only":
                continue
            if p.path == "split" and manifest.split(p.split_point or "").boundary < at.boundary:
                continue
            out.append(dataclasses.replace(p, exit=spec))
    return out


def _with_exit(
    c: Candidate, e: ExitSpec, edge: EdgeState, budget: float, deadline: float | None
) -> Candidate:
    """``c`` (the path run on) mixed with the exited outcome at the exit's rate."""
    p = min(max(e.rate, 0.0), 1.0)
    pre, ex = e.prefix_ms * edge.compute_scale, e.ms * edge.compute_scale
    go_on = 1.0 - p
    loss = p * (1.0 - e.agreement) + go_on * c.accuracy_loss
    reachable = c.feasible or c.note in ("", "exceeds the accuracy budget")
    feasible = reachable and loss <= budget + 1e-12
    return dataclasses.replace(
        c,
        key=f"{path_key(c.path, c.split_point)}@exit:{e.name}",
        exit=e.name,
        exit_rate=p,
        exit_saved_ms=c.total_ms - pre,
        exit_saved_bytes=c.bytes,
        bytes=go_on * c.bytes,
        edge_ms=pre + ex + go_on * (c.edge_ms - pre),
        encode_ms=go_on * c.encode_ms,
        transfer_ms=go_on * c.transfer_ms,
        rtt_ms=go_on * c.rtt_ms,
        queue_ms=go_on * c.queue_ms,
        cloud_ms=go_on * c.cloud_ms,
        decode_ms=go_on * c.decode_ms,
        total_ms=ex + p * pre + go_on * c.total_ms,
        accuracy_loss=loss,
        feasible=feasible,
        meets_deadline=deadline is None or c.total_ms + ex <= deadline,
        note=c.note if not reachable or feasible else "exceeds the accuracy budget",
    )


def predict(
    spec: PathSpec,
    *,
    net: NetState,
    cloud: CloudState,
    edge: EdgeState,
    accuracy_budget: float,
    deadline_ms: float | None,
) -> Candidate:
    """Predicted latency breakdown of one path under the current state."""
    if spec.exit is not None:
        on = predict(
            dataclasses.replace(spec, exit=None),
            net=net,
            cloud=cloud,
            edge=edge,
            accuracy_budget=accuracy_budget,
            deadline_ms=deadline_ms,
        )
        return _with_exit(on, spec.exit, edge, accuracy_budget, deadline_ms)
    edge_ms = spec.edge_ms * edge.compute_scale
    edge_loss = 1.0 - spec.edge_agreement
    local_finish = spec.local_finish_ms * edge.compute_scale
    if not spec.uses_cloud:
        feasible = edge_loss <= accuracy_budget + 1e-12
        return Candidate(
            key=spec.key,
            path=spec.path,
            split_point=None,
            variant=spec.variant,
            codec=None,
            bytes=0.0,
            edge_ms=edge_ms,
            encode_ms=0.0,
            transfer_ms=0.0,
            rtt_ms=0.0,
            queue_ms=0.0,
            cloud_ms=0.0,
            decode_ms=0.0,
            total_ms=edge_ms,
            accuracy_loss=edge_loss,
            local_finish_ms=0.0,
            feasible=feasible,
            meets_deadline=deadline_ms is None or edge_ms <= deadline_ms,
            note="" if feasible else "edge variant exceeds the accuracy budget",
        )
    bw = max(net.bandwidth_bps, 1.0)
    remaining_budget = max(accuracy_budget - edge_loss, 0.0)
    note = ""
    try:
        row, _ = best_codec(spec.codec_rows, bandwidth_bps=bw, accuracy_budget=remaining_budget)
        codec, nbytes, encode_ms, decode_ms = row.name, row.bytes, row.encode_ms, row.decode_ms
        codec_loss = 1.0 - row.agreement
    except (CodecError, ValueError) as e:
        codec, nbytes, encode_ms, decode_ms, codec_loss = None, float(spec.raw_bytes), 0.0, 0.0, 1.0
        note = f"no codec within the accuracy budget ({e})"
    transfer_ms = (nbytes + spec.output_bytes) * 8.0 / bw * 1000.0
    base_key = spec.key.split("@")[0]
    cloud_ms = spec.cloud_ms * cloud.compute_scale
    if base_key in cloud.compute_ms:
        w = cloud.compute_weight.get(base_key, 1.0)
        cloud_ms += (cloud.compute_ms[base_key] - cloud_ms) * w
    call_ms = transfer_ms + net.rtt_ms + cloud.queue_ms + cloud_ms + decode_ms
    total = edge_ms + encode_ms + call_ms
    # A failed call costs the local finish on top; weigh it by the observed loss rate.
    total += min(max(net.loss_rate, 0.0), 1.0) * local_finish
    loss = edge_loss + codec_loss
    feasible = codec is not None and loss <= accuracy_budget + 1e-12
    # what the client will do (collab.edge.cloud): the call gets what the deadline leaves
    # after room for the local finish, and one that needs longer is cut there and finished
    # locally, which only adds the wait to the edge's own time. On a device in a burst the
    # room grows: a cloud call of 82 ms was cut at 70 and the request took 330 ms, where
    # edge-only took 250 (outage-recovery).
    cut = (
        None
        if deadline_ms is None
        else call_budget_ms(deadline_ms, edge_ms + encode_ms, local_finish, math.inf)
    )
    if feasible and deadline_ms is not None and (cut is None or call_ms > cut):
        feasible = False
        note = (
            "the call would be cut to leave time for the local finish "
            f"({call_ms:.1f} ms predicted, {cut or 0.0:.1f} ms left)"
        )
    if not (net.reachable and cloud.serves_model and not cloud.breaker_open):
        feasible = False
        note = (
            "circuit breaker open"
            if cloud.breaker_open
            else "cloud unreachable"
            if not net.reachable
            else "cloud does not serve this model version"
        )
    elif not feasible and not note:
        note = "exceeds the accuracy budget"
    return Candidate(
        key=spec.key,
        path=spec.path,
        split_point=spec.split_point,
        variant=spec.variant,
        codec=codec,
        bytes=nbytes,
        edge_ms=edge_ms,
        encode_ms=encode_ms,
        transfer_ms=transfer_ms,
        rtt_ms=net.rtt_ms,
        queue_ms=cloud.queue_ms,
        cloud_ms=cloud_ms,
        decode_ms=decode_ms,
        total_ms=total,
        accuracy_loss=loss,
        local_finish_ms=local_finish,
        feasible=feasible,
        meets_deadline=deadline_ms is None or total <= deadline_ms,
        note=note,
    )


def call_budget_ms(
    deadline_ms: float | None, elapsed_ms: float, local_finish_ms: float, cap_ms: float
) -> float | None:
    """Timeout of a cloud call; None when it would miss the deadline anyway. Keeps room
    for the local finish (when that can still make the deadline at all) and for timer
    slack (gRPC deadlines fire late by a few ms on a busy machine)."""
    if deadline_ms is None:
        return cap_ms
    slack = max(2.0, 0.05 * deadline_ms)
    remaining = deadline_ms - elapsed_ms - slack
    reserve = local_finish_ms * 1.5
    budget = remaining - reserve if reserve < remaining else remaining
    return budget if budget > 0.5 else None


@dataclass(frozen=True, kw_only=True)
class Hysteresis:
    """Switch away from the previous choice only if the new one is faster by more than
    ``fraction`` of the previous prediction AND by more than ``min_ms``."""

    fraction: float = 0.10
    min_ms: float = 0.5


NO_HYSTERESIS = Hysteresis(fraction=0.0, min_ms=0.0)


def decide(
    profile: Profile,
    *,
    policy: Policy,
    net: NetState,
    cloud: CloudState,
    edge: EdgeState,
    accuracy_budget: float = 0.0,
    deadline_ms: float | None = None,
    previous: str | None = None,
    hysteresis: Hysteresis = Hysteresis(),
) -> Decision:
    """Choose a path. Forced policies return their path (possibly infeasible: the caller
    then finishes locally); ``auto`` returns the fastest feasible candidate."""
    specs = profile.paths
    if policy.mode != "auto":  # only the forced path (and its edge variants): cheap per request
        specs = tuple(p for p in specs if p.key.split("@")[0] == policy.key)
    cands = tuple(
        predict(
            p,
            net=net,
            cloud=cloud,
            edge=edge,
            accuracy_budget=accuracy_budget,
            deadline_ms=deadline_ms,
        )
        for p in specs
    )
    if policy.mode != "auto":
        fp32 = next((c for c in cands if c.variant is None and c.exit is None), None)
        if fp32 is None:
            raise ConfigError(
                f"policy {policy.key!r} does not match any path of {profile.model_name}"
            )
        within = [c for c in cands if c.accuracy_loss <= accuracy_budget + 1e-12]
        pick = min(within, key=lambda c: (c.total_ms, c.key)) if within else fp32
        why = f"forced by policy {policy.key}"
        if pick.variant is not None:
            why += f" (edge variant {pick.variant} is within the accuracy budget and faster)"
        if pick.exit is not None:
            why += f" (early exit {pick.exit} is within the accuracy budget and faster)"
        if not pick.feasible:
            why += f" ({pick.note}; will finish locally)"
        return Decision(chosen=pick, candidates=cands, policy=policy.key, reason=why)
    feasible = [c for c in cands if c.feasible]
    if not feasible:  # edge-only FP32 always has zero loss; only a negative budget gets here
        best = next(
            c for c in cands if c.path == "edge_only" and c.variant is None and c.exit is None
        )
        return Decision(
            chosen=best,
            candidates=cands,
            policy="auto",
            reason="no candidate within the accuracy budget; FP32 edge-only",
        )
    on_time = [c for c in feasible if c.meets_deadline]
    pool = on_time or feasible
    best = min(pool, key=lambda c: (c.total_ms, c.key))
    why = (
        f"fastest of {len(on_time)} candidates meeting the {deadline_ms} ms deadline"
        if on_time and deadline_ms is not None
        else f"fastest of {len(pool)} feasible candidates"
        if on_time
        else f"no candidate meets the {deadline_ms} ms deadline; fastest feasible"
    )
    if previous is not None and previous != best.key:
        prev = next((c for c in pool if c.key == previous), None)
        if prev is not None:
            gain = prev.total_ms - best.total_ms
            if gain <= max(hysteresis.fraction * prev.total_ms, hysteresis.min_ms):
                return Decision(
                    chosen=prev,
                    candidates=cands,
                    policy="auto",
                    reason=(
                        f"kept {prev.key} (hysteresis: {best.key} would save only "
                        f"{gain:.2f} ms of {prev.total_ms:.2f} ms)"
                    ),
                )
    others = sorted((c for c in pool if c.key != best.key), key=lambda c: c.total_ms)
    if others:
        why += f"; {others[0].key} is {others[0].total_ms - best.total_ms:.2f} ms slower"
    return Decision(chosen=best, candidates=cands, policy="auto", reason=f"{best.key}: {why}")
