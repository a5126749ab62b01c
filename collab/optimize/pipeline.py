"""``collab optimize``: a tier's pipeline (or manual flags) applied to a bundle.

Order matters: pruning changes the architecture, so it produces a new base model that
is re-split into a fresh bundle; distillation adds a student as an edge-only variant;
quantization then makes INT8 variants of the heads, the full model and the student.
Everything is validated before any work starts, and the output bundle is built in a
staging directory, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from collab.bundle import Bundle, Manifest, load_bundle, staging_dir, update_bundle
from collab.chain import BundleSessions
from collab.errors import ConfigError
from collab.log import logger
from collab.optimize.measure import agreement, file_size, interleaved_latency_ms, run_batched, top1
from collab.optimize.quantize import CALIBRATION_METHODS, check_methods
from collab.optimize.samples import Samples, load_samples
from collab.optimize.tiers import get_tier
from collab.optimize.variants import (
    FULL,
    VARIANT_DIR,
    Candidate,
    VariantReport,
    held_out_split,
    quantize_candidates,
    record_candidates,
)


@dataclass(frozen=True, kw_only=True)
class OptimizeConfig:
    """What to do; unset fields come from the tier (or mean "skip" without one)."""

    bundle: Path
    out: Path
    calibration: str
    tier: str | None = None
    quantize: tuple[str, ...] | None = None
    prune: float | None = None
    prune_layers: str | None = None
    distill: float | None = None  # student width multiplier in (0, 1)
    model: str | None = None  # torch model SPEC (needed to prune/distill)
    train_data: str | None = None  # labelled training inputs (needed to prune/distill)
    splits: str = "all"
    min_agreement: float | None = None
    calibration_fraction: float = 0.5
    max_samples: int = 512
    holdout: str | None = None  # held-out inputs for the agreement check (default: see below)
    finetune_epochs: int = 10
    distill_epochs: int = 20
    temperature: float = 4.0
    alpha: float = 0.7
    calibrate: str = "percentile"  # static INT8 activation ranges: minmax, percentile, entropy
    runs: int = 30
    progress: bool = True


@dataclass(frozen=True, kw_only=True)
class Plan:
    quantize: tuple[str, ...]
    prune: float | None
    prune_layers: str
    distill: float | None
    min_agreement: float
    min_agreement_distilled: float


@dataclass(kw_only=True)
class OptimizeResult:
    bundle: Bundle
    reports: list[VariantReport]
    notes: dict[str, Any] = field(default_factory=dict)


def _fraction(name: str, v: float | None) -> float | None:
    if v is not None and not 0.0 < v < 1.0:
        raise ConfigError(f"{name} must be strictly between 0 and 1, got {v}")
    return v


def make_plan(cfg: OptimizeConfig) -> Plan:
    """Merge the tier with the manual flags; ConfigError for anything out of range."""
    tier = get_tier(cfg.tier) if cfg.tier is not None else None
    quant = cfg.quantize if cfg.quantize is not None else (tier.quantize if tier else ())
    plan = Plan(
        quantize=check_methods(list(quant)),
        prune=_fraction(
            "pruning fraction",
            cfg.prune if cfg.prune is not None else (tier.prune if tier else None),
        ),
        prune_layers=cfg.prune_layers or (tier.prune_layers if tier else "widest"),
        distill=_fraction(
            "student width",
            cfg.distill if cfg.distill is not None else (tier.distill if tier else None),
        ),
        min_agreement=cfg.min_agreement
        if cfg.min_agreement is not None
        else (tier.min_agreement if tier else 0.99),
        min_agreement_distilled=(
            cfg.min_agreement
            if cfg.min_agreement is not None
            else (tier.min_agreement_distilled if tier else 0.95)
        ),
    )
    if plan.prune_layers not in ("widest", "all"):
        raise ConfigError(f"prune layers must be 'widest' or 'all', got {plan.prune_layers!r}")
    if not 0.0 <= plan.min_agreement <= 1.0:
        raise ConfigError(f"min agreement must be in [0, 1], got {plan.min_agreement}")
    if not (plan.quantize or plan.prune or plan.distill):
        raise ConfigError(
            "nothing to do: give --tier or at least one of --quantize/--prune/--distill"
        )
    _fraction("calibration fraction", cfg.calibration_fraction)
    if cfg.calibrate not in CALIBRATION_METHODS:
        raise ConfigError(
            f"unknown calibration method {cfg.calibrate!r} (choose from {', '.join(CALIBRATION_METHODS)})"
        )
    if cfg.runs < 3 or cfg.finetune_epochs < 1 or cfg.distill_epochs < 1:
        raise ConfigError("runs must be >= 3 and epochs >= 1")
    return plan


def _default_model_spec(m: Manifest) -> str | None:
    """Bundles of the built-in examples know their factory; others need --model."""
    if isinstance(m.extra.get("example"), str):
        return f"example:{m.extra['example']}"
    for key in ("factory", "spec", "model_spec"):
        if isinstance(m.extra.get(key), str):
            return str(m.extra[key])
    try:
        from collab.models.registry import EXAMPLES
    except ImportError:
        return None
    return f"example:{m.model_name}" if m.model_name in EXAMPLES else None


def _limit(s: Samples, n: int) -> Samples:
    return Samples(x=s.x[:n], y=None if s.y is None else s.y[:n])


def _calibration_and_held_out(cfg: OptimizeConfig, m: Manifest) -> tuple[Samples, Samples]:
    """``--holdout`` given: calibrate on all of ``--calibration``, check on the hold-out.
    ``example:NAME`` without a split: calibrate on its training split, check on its test
    split. Otherwise the first ``calibration_fraction`` calibrates and the rest checks."""
    n = cfg.max_samples
    if cfg.holdout is not None:
        return (
            _limit(load_samples(cfg.calibration, m.input_shape, n=n), n),
            _limit(load_samples(cfg.holdout, m.input_shape, n=n), n),
        )
    if cfg.calibration.startswith("example:") and cfg.calibration.count(":") == 1:
        n_cal = max(1, round(n * cfg.calibration_fraction))
        return (
            _limit(load_samples(f"{cfg.calibration}:train", m.input_shape, n=n_cal), n_cal),
            _limit(load_samples(f"{cfg.calibration}:test", m.input_shape, n=n), n),
        )
    return held_out_split(
        _limit(load_samples(cfg.calibration, m.input_shape, n=n), n), cfg.calibration_fraction
    )


def optimize(cfg: OptimizeConfig) -> OptimizeResult:
    plan = make_plan(cfg)
    src = load_bundle(cfg.bundle)
    m = src.manifest
    out = Path(cfg.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out} exists and is not empty")
    calib, held = _calibration_and_held_out(cfg, m)
    needs_torch = bool(plan.prune or plan.distill)
    torch_ctx = _TorchContext.prepare(cfg, m, held) if needs_torch else None
    logger.info(
        "optimize %s: quantize=%s prune=%s distill=%s (%d calibration, %d held-out inputs)",
        m.model_name,
        list(plan.quantize),
        plan.prune,
        plan.distill,
        len(calib),
        len(held),
    )

    reports: list[VariantReport] = []
    notes: dict[str, Any] = {"tier": cfg.tier, "plan": {k: v for k, v in plan.__dict__.items()}}
    with staging_dir(out) as tmp:
        if plan.prune and torch_ctx is not None:
            row, notes["prune"] = torch_ctx.prune_and_resplit(plan, src, tmp, held)
            reports.append(row)
        else:
            shutil.copytree(src.root, tmp, dirs_exist_ok=True)
        cands: list[Candidate] = []
        sources: list[tuple[str, str]] = []
        if plan.distill and torch_ctx is not None:
            rel, notes["distill"] = torch_ctx.distill(plan, tmp, held)
            cands.append(
                Candidate(
                    target=FULL,
                    name="distilled",
                    path=rel,
                    min_agreement=plan.min_agreement_distilled,
                )
            )
            sources.append(("distilled", rel))
        if plan.quantize:
            q = quantize_candidates(
                tmp,
                plan.quantize,
                calib,
                splits=cfg.splits,
                min_agreement=plan.min_agreement,
                calibrate=cfg.calibrate,
                progress=cfg.progress,
            )
            qs = quantize_candidates(
                tmp,
                plan.quantize,
                calib,
                splits="none",
                include_full=False,
                sources=sources,
                min_agreement=plan.min_agreement_distilled,
                calibrate=cfg.calibrate,
                progress=cfg.progress,
            )
            cands += q + qs
        reports += record_candidates(tmp, cands, held, runs=cfg.runs, progress=cfg.progress)

        def note(_root: Path, mm: Manifest) -> Manifest:
            from dataclasses import replace

            extra = dict(mm.extra)
            extra["optimize"] = {
                **extra.get("optimize", {}),
                **notes,
                "calibration_inputs": len(calib),
            }
            return replace(mm, extra=extra)

        update_bundle(tmp, note)
    return OptimizeResult(bundle=load_bundle(out), reports=reports, notes=notes)


class _TorchContext:
    """The torch side (pruning, distillation): imported only when asked for."""

    def __init__(
        self, cfg: OptimizeConfig, m: Manifest, model: Any, train: Samples, example: Any
    ) -> None:
        self.cfg, self.m, self.model, self.train_data, self.example = cfg, m, model, train, example

    @classmethod
    def prepare(cls, cfg: OptimizeConfig, m: Manifest, held: Samples) -> _TorchContext:
        import torch

        from collab.optimize.torchmodel import load_model

        spec = cfg.model or _default_model_spec(m)
        if spec is None:
            raise ConfigError("pruning/distillation needs the PyTorch model: pass --model SPEC")
        data_of = _default_model_spec(m) if isinstance(m.extra.get("example"), str) else spec
        tspec = cfg.train_data or (
            f"{data_of}:train" if data_of and data_of.startswith("example:") else None
        )
        if tspec is None:
            raise ConfigError(
                "pruning/distillation needs labelled training data: pass --train-data DATA"
            )
        train = load_samples(tspec, m.input_shape, n=100_000)
        if train.y is None:
            raise ConfigError(f"--train-data {tspec}: needs labels (an .npz with 'x' and 'y')")
        model = load_model(spec)
        example = torch.from_numpy(held.x[:1])
        try:
            with torch.no_grad():
                ref = model(torch.from_numpy(held.x)).numpy()
        except Exception as e:  # wrong input shape, wrong model
            raise ConfigError(f"model {spec} cannot run on this bundle's inputs: {e}") from e
        onnx_ref = run_batched(BundleSessions(load_bundle(cfg.bundle)).full(), held.x)
        if ref.shape != onnx_ref.shape or float(np.max(np.abs(ref - onnx_ref))) > 1e-3:
            raise ConfigError(
                f"model {spec} does not match the bundle's full model (different outputs)"
            )
        from collab.errors import SplitError
        from collab.optimize.prune import find_groups

        try:
            prunable = find_groups(model, example)
        except SplitError as e:
            raise ConfigError(f"cannot prune or distill {spec}: {e}") from e
        if not prunable:
            raise ConfigError(
                f"cannot prune or distill {spec}: no convolution whose channels can be removed "
                "(use --quantize only, e.g. --tier edge-server)"
            )
        return cls(cfg, m, model, train, example)

    def _accuracy(self, model: Any, held: Samples) -> float | None:
        from collab.optimize.train import accuracy

        return None if held.y is None else accuracy(model, held.x, held.y)

    def prune_and_resplit(
        self, plan: Plan, src: Bundle, tmp: Path, held: Samples
    ) -> tuple[VariantReport, dict[str, Any]]:
        from collab.optimize.prune import count_macs, prune_channels
        from collab.optimize.torchmodel import resplit
        from collab.optimize.train import FinetuneConfig, train

        assert plan.prune is not None
        pruned, groups = prune_channels(
            self.model, self.example, plan.prune, layers=plan.prune_layers
        )
        before = self._accuracy(pruned, held)
        train(
            pruned,
            self.train_data.x,
            self.train_data.y,  # type: ignore[arg-type]
            FinetuneConfig(epochs=self.cfg.finetune_epochs),
            desc="fine-tune pruned",
            progress=self.cfg.progress,
        )
        import torch

        resplit(
            pruned,
            self.m,
            torch.from_numpy(held.x[:4]),
            tmp,
            runs=self.cfg.runs,
            progress=self.cfg.progress,
            extra={
                "pruned_from": src.version,
                "granularity": self.m.extra.get("granularity", "block"),
            },
        )
        new_b = load_bundle(tmp)
        new = new_b.manifest
        src_full, new_full = BundleSessions(src).full(), BundleSessions(new_b).full()
        ms = interleaved_latency_ms([src_full, new_full], held.x[:1], runs=self.cfg.runs)
        ref = top1(run_batched(src_full, held.x))
        pred = top1(run_batched(new_full, held.x))
        name = f"pruned{round(plan.prune * 100)}"
        row = VariantReport(
            target=FULL,
            name=f"{name} (new base)",
            fp32_ms=ms[0],
            ms=ms[1],
            fp32_size=file_size(*(src.root / p for p in self.m.full_paths())),
            size_bytes=file_size(*(tmp / p for p in new.full_paths())),
            agreement=agreement(pred, ref),
            accuracy=self._accuracy(pruned, held),
            kept=True,
        )
        info = {
            "fraction": plan.prune,
            "layers": [g.conv for g in groups],
            "macs_original": count_macs(self.model, self.example),
            "macs_pruned": count_macs(pruned, self.example),
            "accuracy_original": self._accuracy(self.model, held),
            "accuracy_before_finetune": before,
            "accuracy_after_finetune": row.accuracy,
            "agreement_with_original": row.agreement,
            "full_ms_original": ms[0],
            "full_ms_pruned": ms[1],
        }
        return row, info

    def distill(self, plan: Plan, tmp: Path, held: Samples) -> tuple[str, dict[str, Any]]:
        from collab.optimize.prune import count_macs, prune_channels
        from collab.optimize.torchmodel import export_onnx
        from collab.optimize.train import FinetuneConfig, train

        assert plan.distill is not None
        student, _ = prune_channels(self.model, self.example, 1.0 - plan.distill, layers="all")
        cfg = FinetuneConfig(
            epochs=self.cfg.distill_epochs,
            lr=3e-3,
            temperature=self.cfg.temperature,
            alpha=self.cfg.alpha,
        )
        train(
            student,
            self.train_data.x,
            self.train_data.y,  # type: ignore[arg-type]
            cfg,
            teacher=self.model,
            desc="distill student",
            progress=self.cfg.progress,
        )
        rel = f"{VARIANT_DIR}/{FULL}.distilled.candidate.onnx"
        export_onnx(
            student, self.example, tmp / rel, input_name=self.m.input_name, opset=self.m.opset
        )
        info = {
            "width": plan.distill,
            "temperature": cfg.temperature,
            "alpha": cfg.alpha,
            "epochs": cfg.epochs,
            "macs_teacher": count_macs(self.model, self.example),
            "macs_student": count_macs(student, self.example),
            "accuracy_teacher": self._accuracy(self.model, held),
            "accuracy_student": self._accuracy(student, held),
        }
        return rel, info
