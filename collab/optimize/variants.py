"""Variants of a bundle's heads and full model, profiled, checked and recorded.

Every candidate is profiled side by side with the FP32 model it replaces
(interleaved, so a noisy machine biases neither) and checked for top-1 agreement with
the bundle's FP32 model on held-out inputs: a head variant is composed with the FP32
tail and compared with the FP32 full model. The FP32 heads and full model are chains of
the bundle's segments (measured as the runtimes run them); a variant is one file with
its own weights, quantized from the composed FP32 head or full model. A candidate below its ``min_agreement``, or
neither faster nor smaller than FP32, is deleted, never listed in the manifest.

The FP32 ``head_ms``/``full_ms`` of the optimized bundle are refreshed from the same
interleaved run, so the decision engine compares latencies measured under one load.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import onnx
from tqdm import tqdm

from collab.bundle import Manifest, SplitPoint, Variant, load_bundle, update_bundle
from collab.chain import BundleSessions
from collab.errors import BundleError, ConfigError
from collab.log import logger
from collab.optimize.measure import agreement, file_size, interleaved_latency_ms, run_batched, top1
from collab.optimize.quantize import check_methods, quantize
from collab.optimize.samples import Samples
from collab.split.compose import compose

FULL = "full"  # target name of the edge-only model
VARIANT_DIR = "variants"


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """A variant file already written inside the bundle, not yet checked."""

    target: str  # split point name, or FULL
    name: str
    path: str  # relative to the bundle root; not yet listed in the manifest
    min_agreement: float

    @property
    def final_path(self) -> str:
        return f"{VARIANT_DIR}/{self.target}.{self.name}.onnx"


@dataclass(frozen=True, kw_only=True)
class VariantReport:
    """One row of the summary table (kept or not)."""

    target: str  # split point name, or "full"
    name: str
    fp32_ms: float
    ms: float
    fp32_size: int
    size_bytes: int
    agreement: float
    accuracy: float | None  # with labels only
    kept: bool
    reason: str = ""  # why it was dropped: "agreement" or "no gain" (neither faster nor smaller)

    @property
    def speedup(self) -> float:
        return self.fp32_ms / self.ms if self.ms > 0 else float("nan")


def select_splits(m: Manifest, which: str | Sequence[str]) -> list[SplitPoint]:
    """``"all"``, ``"none"``, ``"middle"`` (median index) or explicit names."""
    sps = sorted(m.split_points, key=lambda sp: sp.index)
    if which == "all":
        return sps
    if which == "none":
        return []
    if which == "middle":
        return [sps[len(sps) // 2]] if sps else []
    names = [n for n in which.split(",") if n] if isinstance(which, str) else list(which)
    out = []
    for n in names:
        try:
            out.append(m.split(n))
        except BundleError as e:
            raise ConfigError(str(e)) from e
    return out


def _with_variant(vs: tuple[Variant, ...], v: Variant) -> tuple[Variant, ...]:
    return (*(old for old in vs if old.name != v.name), v)


def _source(m: Manifest, target: str) -> tuple[str, ...]:
    """The segment files of the FP32 model a variant of ``target`` replaces."""
    return m.full_paths() if target == FULL else m.head_paths(target)


def record_candidates(
    root: str | os.PathLike[str],
    candidates: Sequence[Candidate],
    held_out: Samples,
    *,
    runs: int = 30,
    progress: bool = True,
) -> list[VariantReport]:
    """Measure every candidate, list those that pass in the manifest, delete the rest."""
    reports: list[VariantReport] = []
    by_target: dict[str, list[Candidate]] = {}
    for c in candidates:
        by_target.setdefault(c.target, []).append(c)

    def mutate(rootp: Path, m: Manifest) -> Manifest:
        sessions = BundleSessions(load_bundle(rootp))
        ref = top1(run_batched(sessions.full(), held_out.x))
        sps = {sp.name: sp for sp in m.split_points}
        full_variants, full_ms = m.full_variants, m.full_ms
        bar = tqdm(
            total=len(candidates), desc="measure", unit="variant", disable=not progress, leave=False
        )
        for target, cands in by_target.items():
            src = sessions.chain(_source(m, target))
            src_size = file_size(*(rootp / p for p in _source(m, target)))
            tail = None if target == FULL else sessions.tail(target)
            scores: list[tuple[float, float | None]] = []
            for c in cands:
                bar.set_postfix_str(f"{target}/{c.name}")
                out = run_batched(rootp / c.path, held_out.x)
                pred = top1(out if tail is None else run_batched(tail, out))
                acc = None if held_out.y is None else agreement(pred, held_out.y)
                scores.append((agreement(pred, ref), acc))
                bar.update()
            ms = interleaved_latency_ms(
                [src, *(rootp / c.path for c in cands)], held_out.x[:1], runs=runs
            )
            for c, (agr, acc), v_ms in zip(cands, scores, ms[1:], strict=True):
                dst = rootp / c.path
                size = file_size(dst)
                why = "" if agr >= c.min_agreement else "agreement"
                if not why and v_ms >= ms[0] and size >= src_size:
                    why = "no gain"  # neither faster nor smaller: nothing would ever pick it
                reports.append(
                    VariantReport(
                        target=target,
                        name=c.name,
                        fp32_ms=ms[0],
                        ms=v_ms,
                        fp32_size=src_size,
                        size_bytes=size,
                        agreement=agr,
                        accuracy=acc,
                        kept=not why,
                        reason=why,
                    )
                )
                if why:
                    logger.info(
                        "dropping %s/%s (%s): agreement %.4f (min %.4f), %.3f ms vs %.3f ms FP32",
                        target,
                        c.name,
                        why,
                        agr,
                        c.min_agreement,
                        v_ms,
                        ms[0],
                    )
                    dst.unlink()
                    continue
                if c.path != c.final_path:  # replaces an older variant of the same name
                    os.replace(dst, rootp / c.final_path)
                v = Variant(
                    name=c.name,
                    path=c.final_path,
                    ms=v_ms,
                    size_bytes=file_size(rootp / c.final_path),
                    agreement=agr,
                )
                if target == FULL:
                    full_variants = _with_variant(full_variants, v)
                else:
                    sps[target] = replace(
                        sps[target], head_variants=_with_variant(sps[target].head_variants, v)
                    )
            if target == FULL:
                full_ms = ms[0]
            else:
                sps[target] = replace(sps[target], head_ms=ms[0])
        bar.close()
        extra: dict[str, Any] = dict(m.extra)
        extra["optimize"] = {**extra.get("optimize", {}), "held_out_inputs": len(held_out)}
        return replace(
            m,
            split_points=tuple(sps[sp.name] for sp in m.split_points),
            full_variants=full_variants,
            full_ms=full_ms,
            extra=extra,
        )

    update_bundle(root, mutate)
    return reports


def quantize_candidates(
    root: str | os.PathLike[str],
    methods: Sequence[str],
    calibration: Samples,
    *,
    splits: str | Sequence[str] = "all",
    include_full: bool = True,
    sources: Sequence[tuple[str, str]] = (),
    min_agreement: float = 0.99,
    calibrate: str = "percentile",
    progress: bool = True,
) -> list[Candidate]:
    """Write the ``methods`` variants of the selected heads, the full model and any extra
    ``sources`` ((variant name, relative path) of other full-model variants, e.g. a
    distilled student, quantized as ``<name>+<method>``)."""
    methods = check_methods(list(methods))
    if not 0.0 <= min_agreement <= 1.0:
        raise ConfigError(f"min_agreement must be in [0, 1], got {min_agreement}")
    rootp = Path(root)
    b = load_bundle(rootp)
    m = b.manifest
    # (target, name prefix, FP32 segment files to compose, or a single model file as is)
    jobs: list[tuple[str, str, tuple[str, ...] | str]] = [
        (sp.name, "", _source(m, sp.name)) for sp in select_splits(m, splits)
    ]
    if include_full:
        jobs.append((FULL, "", _source(m, FULL)))
    jobs += [(FULL, f"{name}+", rel) for name, rel in sources]
    out = []
    bar = tqdm(
        total=len(jobs) * len(methods),
        desc="quantize",
        unit="variant",
        disable=not progress,
        leave=False,
    )
    with tempfile.TemporaryDirectory() as scratch:
        for target, prefix, src in jobs:
            if isinstance(src, str):
                src_path = rootp / src
            else:  # the composed FP32 model: the variant gets its own copy of these weights
                src_path = Path(scratch) / f"{target}.fp32.onnx"
                onnx.save(compose(b, src), str(src_path))
            for method in methods:
                bar.set_postfix_str(f"{target}/{prefix}{method}")
                name = f"{prefix}{method}"
                rel = f"{VARIANT_DIR}/{target}.{name}.candidate.onnx"
                quantize(method, src_path, rootp / rel, calibration.x, calibrate=calibrate)
                out.append(
                    Candidate(target=target, name=name, path=rel, min_agreement=min_agreement)
                )
                bar.update()
    bar.close()
    return out


def quantize_bundle(
    root: str | os.PathLike[str],
    methods: Sequence[str],
    calibration: Samples,
    held_out: Samples,
    *,
    splits: str | Sequence[str] = "all",
    include_full: bool = True,
    min_agreement: float = 0.99,
    calibrate: str = "percentile",
    runs: int = 30,
    progress: bool = True,
) -> list[VariantReport]:
    """Add the quantized variants that pass to the bundle at ``root`` (in place)."""
    cands = quantize_candidates(
        root,
        methods,
        calibration,
        splits=splits,
        include_full=include_full,
        min_agreement=min_agreement,
        calibrate=calibrate,
        progress=progress,
    )
    return record_candidates(root, cands, held_out, runs=runs, progress=progress)


def format_table(reports: Sequence[VariantReport]) -> str:
    """The summary table printed by ``collab optimize`` and the benchmark."""
    hdr = (
        f"{'target':<16}{'variant':<24}{'fp32 ms':>9}{'ms':>9}{'speedup':>9}{'fp32 KB':>10}"
        f"{'KB':>9}{'agree':>8}{'acc':>8}  kept"
    )
    lines = [hdr, "-" * len(hdr)]
    for r in reports:
        acc = "-" if r.accuracy is None else f"{r.accuracy:.4f}"
        lines.append(
            f"{r.target:<16}{r.name:<24}{r.fp32_ms:>9.3f}{r.ms:>9.3f}{r.speedup:>8.2f}x"
            f"{r.fp32_size / 1024:>10.1f}{r.size_bytes / 1024:>9.1f}{r.agreement:>8.4f}{acc:>8}"
            f"  {'yes' if r.kept else 'NO (' + r.reason + ')'}"
        )
    return "\n".join(lines)


def held_out_split(s: Samples, fraction: float = 0.5) -> tuple[Samples, Samples]:
    """First part calibrates, the rest is held out for agreement (never both)."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"calibration fraction must be in (0, 1), got {fraction}")
    n = min(max(1, round(len(s) * fraction)), len(s) - 1)
    return s.split(n)
