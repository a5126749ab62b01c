"""Quantized variants of a bundle's heads and full model, stored in the manifest.

Each candidate is profiled side by side with its FP32 original (interleaved, so a
noisy machine biases neither), and checked for top-1 agreement with the FP32 model
on held-out inputs: a head variant is composed with the FP32 tail and compared with
the FP32 full model. A candidate below ``min_agreement`` is deleted, never listed.

The FP32 ``head_ms``/``full_ms`` of the optimized bundle are refreshed from the same
interleaved run, so the decision engine compares latencies measured under one load.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from collab.bundle import Manifest, SplitPoint, Variant, load_bundle, update_bundle
from collab.errors import ConfigError
from collab.log import logger
from collab.optimize.measure import agreement, file_size, interleaved_latency_ms, run_batched, top1
from collab.optimize.quantize import check_methods, quantize
from collab.optimize.samples import Samples
from collab.ort import make_session

FULL = "full"  # target name of the edge-only model
VARIANT_DIR = "variants"


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
    names = [which] if isinstance(which, str) else list(which)
    out = []
    for n in names:
        try:
            out.append(m.split(n))
        except Exception as e:
            raise ConfigError(str(e)) from e
    return out


def _with_variant(vs: tuple[Variant, ...], v: Variant) -> tuple[Variant, ...]:
    return (*(old for old in vs if old.name != v.name), v)


def quantize_bundle(
    root: str | os.PathLike[str],
    methods: Sequence[str],
    calibration: Samples,
    held_out: Samples,
    *,
    splits: str | Sequence[str] = "all",
    include_full: bool = True,
    min_agreement: float = 0.99,
    runs: int = 30,
    progress: bool = True,
) -> list[VariantReport]:
    """Add the ``methods`` variants to the bundle at ``root`` (modified in place)."""
    methods = check_methods(list(methods))
    if not 0.0 <= min_agreement <= 1.0:
        raise ConfigError(f"min_agreement must be in [0, 1], got {min_agreement}")
    b = load_bundle(root)
    targets: list[SplitPoint | None] = list(select_splits(b.manifest, splits))
    if include_full:
        targets.append(None)
    reports: list[VariantReport] = []

    def mutate(rootp: Path, m: Manifest) -> Manifest:
        full = make_session(rootp / m.full)
        ref = top1(run_batched(full, held_out.x))
        x1 = held_out.x[:1]
        bar = tqdm(total=len(targets) * len(methods), desc="quantize", unit="variant", disable=not progress)
        new_sps = {sp.name: sp for sp in m.split_points}
        full_variants = m.full_variants
        full_ms = m.full_ms
        for sp in targets:
            tname = FULL if sp is None else sp.name
            src = rootp / (m.full if sp is None else sp.head)
            tail = None if sp is None else make_session(rootp / sp.tail)
            made: list[tuple[str, Path, float, float | None]] = []
            for method in methods:
                bar.set_postfix_str(f"{tname}/{method}")
                rel = f"{VARIANT_DIR}/{tname}.{method}.onnx"
                dst = quantize(method, src, rootp / rel, calibration.x)
                out = run_batched(make_session(dst), held_out.x)
                if tail is not None:
                    out = run_batched(tail, out)
                pred = top1(out)
                acc = None if held_out.y is None else agreement(pred, held_out.y)
                made.append((rel, dst, agreement(pred, ref), acc))
                bar.update()
            ms = interleaved_latency_ms([src, *(d for _, d, _, _ in made)], x1, runs=runs)
            fp32_size = file_size(src)
            for method, (rel, dst, agr, acc), v_ms in zip(methods, made, ms[1:], strict=True):
                kept = agr >= min_agreement
                reports.append(
                    VariantReport(target=tname, name=method, fp32_ms=ms[0], ms=v_ms, fp32_size=fp32_size,
                                  size_bytes=file_size(dst), agreement=agr, accuracy=acc, kept=kept)
                )
                if not kept:
                    logger.info("dropping %s/%s: agreement %.4f < %.4f", tname, method, agr, min_agreement)
                    dst.unlink()
                    continue
                v = Variant(name=method, path=rel, ms=v_ms, size_bytes=file_size(dst), agreement=agr)
                if sp is None:
                    full_variants = _with_variant(full_variants, v)
                else:
                    cur = new_sps[sp.name]
                    new_sps[sp.name] = replace(cur, head_variants=_with_variant(cur.head_variants, v))
            if sp is None:
                full_ms = ms[0]
            else:
                new_sps[sp.name] = replace(new_sps[sp.name], head_ms=ms[0])
        bar.close()
        extra: dict[str, Any] = dict(m.extra)
        extra["optimize"] = {
            **extra.get("optimize", {}),
            "calibration_inputs": len(calibration),
            "held_out_inputs": len(held_out),
            "min_agreement": min_agreement,
        }
        return replace(
            m,
            split_points=tuple(new_sps[sp.name] for sp in m.split_points),
            full_variants=full_variants,
            full_ms=full_ms,
            extra=extra,
        )

    update_bundle(root, mutate)
    return reports


def format_table(reports: Sequence[VariantReport]) -> str:
    """The summary table printed by ``collab optimize`` and the benchmark."""
    hdr = f"{'target':<14}{'variant':<14}{'fp32 ms':>9}{'ms':>9}{'speedup':>9}{'fp32 KB':>10}{'KB':>9}{'agree':>8}{'acc':>8}  kept"
    lines = [hdr, "-" * len(hdr)]
    for r in reports:
        acc = "-" if r.accuracy is None else f"{r.accuracy:.4f}"
        lines.append(
            f"{r.target:<14}{r.name:<14}{r.fp32_ms:>9.3f}{r.ms:>9.3f}{r.speedup:>8.2f}x"
            f"{r.fp32_size / 1024:>10.1f}{r.size_bytes / 1024:>9.1f}{r.agreement:>8.4f}{acc:>8}  {'yes' if r.kept else 'NO'}"
        )
    return "\n".join(lines)


def held_out_split(s: Samples, fraction: float = 0.5) -> tuple[Samples, Samples]:
    """First part calibrates, the rest is held out for agreement (never both)."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"calibration fraction must be in (0, 1), got {fraction}")
    n = min(max(1, round(len(s) * fraction)), len(s) - 1)
    return s.split(n)


__all__ = ["FULL", "VariantReport", "format_table", "held_out_split", "quantize_bundle", "select_splits"]
