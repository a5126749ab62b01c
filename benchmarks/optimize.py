#!/usr/bin/env python3
"""Edge model optimization, measured side by side in one run (issue 9).

1. ResNet-18-style example, middle split: FP32 head vs INT8 static (per-channel QDQ,
   percentile calibration on training inputs) vs INT8 dynamic vs FP16, plus the full
   model, interleaved batch-1 latency on one thread, size, top-1 agreement with the FP32
   model on the held-out test split. Then INT8 static at every split point.
2. Trained digits CNN: teacher vs 50 % of the widest layer pruned (+ fine-tune) vs 50 %
   of every prunable conv pruned vs a distilled student (width 0.4) and their INT8
   versions: MACs, size, latency, test accuracy, agreement with the teacher.
3. Device tiers: ``collab optimize --tier T`` on the digits bundle; the edge-only
   variants each tier yields.

Targets: INT8 head >= 2x faster with <= 1 % agreement loss; pruned within 2 points and
faster; student >= 4x fewer MACs at >= 97 % of the teacher's accuracy. Ratios only: the
2-core machine is shared, absolute times drift.

Usage: .venv/bin/python benchmarks/optimize.py [--runs 200] [--out artifacts/optimize] [--skip-tiers]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np


def _quantized(
    name: str,
    runs: int,
    work: Path,
    every_split: bool,
    bundle: Path | None = None,
    label: str | None = None,
) -> list[dict[str, object]]:
    import onnx

    from collab.bundle import load_bundle
    from collab.chain import BundleSessions, Chain
    from collab.models.registry import example_inputs
    from collab.optimize.measure import (
        agreement,
        file_size,
        interleaved_latency_ms,
        run_batched,
        top1,
    )
    from collab.optimize.quantize import quantize
    from collab.optimize.variants import select_splits
    from collab.split.compose import compose
    from collab.split.examples import example_bundle

    b = load_bundle(bundle or example_bundle(name))
    m = b.manifest
    sessions = BundleSessions(b)
    calib, _ = example_inputs(name, 256, "train")
    held, _ = example_inputs(name, None, "test")
    ref = top1(run_batched(sessions.full(), held))
    rows: list[dict[str, object]] = []

    def table(
        target: str, segments: tuple[str, ...], tail: Chain | None, methods: list[str], n_runs: int
    ) -> None:
        src = work / f"{name}.{target}.fp32.onnx"  # what the variants are quantized from
        onnx.save(compose(b, segments), str(src))
        models: list[Chain | Path] = [sessions.chain(segments)]
        sizes = [file_size(*(b.root / p for p in segments))]
        agrees = [1.0]
        for meth in methods:
            dst = quantize(meth, src, work / f"{name}.{target}.{meth}.onnx", calib)
            out = run_batched(dst, held)
            agrees.append(agreement(top1(out if tail is None else run_batched(tail, out)), ref))
            models.append(dst)
            sizes.append(file_size(dst))
        ms = interleaved_latency_ms(models, held[:1], runs=n_runs, warmup=20)
        for vname, size, t, a in zip(["fp32", *methods], sizes, ms, agrees, strict=True):
            rows.append(
                {
                    "model": label or name,
                    "target": target,
                    "variant": vname,
                    "ms": t,
                    "speedup": ms[0] / t,
                    "kb": size / 1024,
                    "agreement": a,
                    "loss_pts": 100 * (1 - a),
                }
            )

    mid = select_splits(m, "middle")[0]
    print(
        f"\n== {label or name}: middle split {mid.name!r} (of {len(m.split_points)}), "
        f"{len(calib)} calibration (train) / {len(held)} held-out (test) inputs, {runs} interleaved runs"
    )
    table(
        mid.name,
        m.head_paths(mid.name),
        sessions.tail(mid.name),
        ["int8_static", "int8_dynamic", "fp16"],
        runs,
    )
    table("full", m.full_paths(), None, ["int8_static", "int8_dynamic", "fp16"], runs)
    _print(rows, ["target", "variant", "ms", "speedup", "kb", "agreement", "loss_pts"])
    if not every_split:
        return rows
    print(
        "\n   INT8 static at every split point (head latency vs FP32 head, agreement of head_int8 -> tail)"
    )
    start = len(rows)
    for sp in sorted(m.split_points, key=lambda s: s.index):
        table(
            sp.name,
            m.head_paths(sp.name),
            sessions.tail(sp.name),
            ["int8_static"],
            max(30, runs // 4),
        )
    every = rows[start:]
    _print(
        [r for r in every if r["variant"] != "fp32"],
        ["target", "ms", "speedup", "kb", "agreement", "loss_pts"],
    )
    return rows


def _trained_resnet(runs: int, work: Path) -> list[dict[str, object]]:
    """The example ResNet has seeded (untrained) weights: its top-1 margins are tiny, so
    INT8 noise flips near-ties. The same network trained briefly shows the difference."""
    import torch

    from collab.models import datasets
    from collab.models.examples import resnet18_style
    from collab.models.registry import example_inputs, spec
    from collab.optimize.train import FinetuneConfig, accuracy, train
    from collab.split import split_model

    if spec("resnet").trained:
        print(
            "\n   (the example ResNet ships trained weights: section 1 already is the trained control)"
        )
        return []
    torch.set_num_threads(1)
    x, y = datasets.digits_rgb32("train")
    xs, ys = datasets.digits_rgb32("test")
    model = resnet18_style()
    with torch.no_grad():
        s = np.sort(model(torch.from_numpy(xs)).numpy(), axis=1)
    seeded_margin = float(np.median(s[:, -1] - s[:, -2]))
    train(
        model,
        x,
        y,
        FinetuneConfig(epochs=3, lr=3e-3, batch_size=64),
        desc="train resnet (3 epochs)",
    )
    with torch.no_grad():
        s = np.sort(model(torch.from_numpy(xs)).numpy(), axis=1)
    print(
        f"\n   seeded ResNet: median top-1 logit margin {seeded_margin:.3f}; after 3 epochs on digits: "
        f"{float(np.median(s[:, -1] - s[:, -2])):.3f}, test accuracy {accuracy(model, xs, ys):.4f}"
    )
    root = work / "resnet-trained"
    split_model(model, example_inputs("resnet", 3)[0], root, name="resnet", progress=False)
    return _quantized(
        "resnet", runs, work, every_split=False, bundle=root, label="resnet (trained 3 epochs)"
    )


def _digits(runs: int, work: Path) -> list[dict[str, object]]:
    import torch

    from collab.models import datasets
    from collab.models.examples import digits_cnn
    from collab.optimize.measure import (
        agreement,
        file_size,
        interleaved_latency_ms,
        run_batched,
        top1,
    )
    from collab.optimize.prune import count_macs, prune_channels
    from collab.optimize.quantize import quantize
    from collab.optimize.torchmodel import export_onnx
    from collab.optimize.train import FinetuneConfig, accuracy, train
    from collab.ort import make_session

    torch.set_num_threads(1)
    x, y = datasets.digits("train")
    xs, ys = datasets.digits("test")
    ex = torch.from_numpy(xs[:1])
    teacher = digits_cnn(pretrained=True)
    models: dict[str, torch.nn.Module] = {"teacher (fp32)": teacher}
    p_w, _ = prune_channels(teacher, ex, 0.5, layers="widest")
    models["pruned 50% widest"] = train(p_w, x, y, FinetuneConfig(epochs=10), progress=False)
    p_a, _ = prune_channels(teacher, ex, 0.5, layers="all")
    models["pruned 50% all"] = train(p_a, x, y, FinetuneConfig(epochs=10), progress=False)
    st, _ = prune_channels(teacher, ex, 0.6, layers="all")
    models["distilled w=0.4"] = train(
        st, x, y, FinetuneConfig(epochs=20, lr=3e-3), teacher=teacher, progress=False
    )
    paths: dict[str, Path] = {}
    macs: dict[str, int] = {}
    accs: dict[str, float] = {}
    for name, mod in models.items():
        paths[name] = export_onnx(mod, ex, work / f"digits_{len(paths)}.onnx")
        macs[name] = count_macs(mod, ex)
        accs[name] = accuracy(mod, xs, ys)
    for base in ("teacher (fp32)", "distilled w=0.4"):
        q = f"{base.split(' ')[0]} int8_static"
        paths[q] = quantize("int8_static", paths[base], work / f"digits_{len(paths)}.onnx", x[:256])
        macs[q] = macs[base]
        accs[q] = float((top1(run_batched(make_session(paths[q]), xs)) == ys).mean())
    names = list(paths)
    ms = interleaved_latency_ms([paths[n] for n in names], xs[:1], runs=runs * 5, warmup=50)
    ref = top1(run_batched(make_session(paths["teacher (fp32)"]), xs))
    rows = []
    for n, t in zip(names, ms, strict=True):
        agr = agreement(top1(run_batched(make_session(paths[n]), xs)), ref)
        rows.append(
            {
                "model": "digits",
                "variant": n,
                "macs_k": macs[n] / 1e3,
                "mac_ratio": macs[names[0]] / macs[n],
                "us": t * 1e3,
                "speedup": ms[0] / t,
                "kb": file_size(paths[n]) / 1024,
                "accuracy": accs[n],
                "acc_vs_teacher": accs[n] / accs[names[0]],
                "agreement": agr,
            }
        )
    print(
        f"\n== 2. Trained digits CNN, {len(ys)} test images, {runs * 5} interleaved runs (latency in microseconds)"
    )
    _print(
        rows,
        [
            "variant",
            "macs_k",
            "mac_ratio",
            "us",
            "speedup",
            "kb",
            "accuracy",
            "acc_vs_teacher",
            "agreement",
        ],
    )
    return rows


def _tiers(runs: int, work: Path) -> list[dict[str, object]]:
    from collab.optimize.pipeline import OptimizeConfig, optimize
    from collab.optimize.tiers import TIERS
    from collab.split.examples import example_bundle

    src = example_bundle("digits")
    rows = []
    for tier in TIERS:
        res = optimize(
            OptimizeConfig(
                bundle=src,
                out=work / f"tier-{tier}",
                calibration="example:digits",
                tier=tier,
                splits="middle",
                runs=max(50, runs),
                progress=False,
            )
        )
        for r in res.reports:
            rows.append(
                {
                    "tier": tier,
                    "target": r.target,
                    "variant": r.name,
                    "us": r.ms * 1e3,
                    "fp32_us": r.fp32_ms * 1e3,
                    "speedup": r.speedup,
                    "kb": r.size_bytes / 1024,
                    "agreement": r.agreement,
                    "accuracy": r.accuracy if r.accuracy is not None else float("nan"),
                    "kept": "yes" if r.kept else f"NO ({r.reason})",
                }
            )
    print(
        "\n== 3. Device tiers on the digits bundle (collab optimize --tier T; middle split + edge-only model;"
        " agreement vs that bundle's FP32, calibrated on 256 train, checked on 450 test images)"
    )
    _print(
        rows,
        [
            "tier",
            "target",
            "variant",
            "fp32_us",
            "us",
            "speedup",
            "kb",
            "agreement",
            "accuracy",
            "kept",
        ],
    )
    return rows


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def _print(rows: list[dict[str, object]], cols: list[str]) -> None:
    cells = [[_fmt(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print("   " + "  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True)))
    for row in cells:
        print("   " + "  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)))


def _plot(resnet: list[dict[str, object]], digits: list[dict[str, object]], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for r in (r for r in resnet[:8] if r["variant"] != "fp32"):  # FP32 is (1, 0) by definition
        axes[0].scatter(float(r["speedup"]), float(r["loss_pts"]), s=40)  # type: ignore[arg-type]
        axes[0].annotate(
            f"{r['target']}/{r['variant']}",
            (float(r["speedup"]), float(r["loss_pts"])),  # type: ignore[arg-type]
            fontsize=8,
            xytext=(4, 4),
            textcoords="offset points",
        )
    axes[0].axvline(2.0, ls="--", c="grey")
    axes[0].axhline(1.0, ls="--", c="grey")
    axes[0].set(
        xlabel="speed-up vs FP32 (batch 1, 1 thread)",
        ylabel="top-1 agreement loss (points)",
        title="ResNet-18-style: middle-split head and full model",
    )
    for r in digits:
        axes[1].scatter(float(r["speedup"]), 100 * float(r["accuracy"]), s=40)  # type: ignore[arg-type]
        axes[1].annotate(
            str(r["variant"]),
            (float(r["speedup"]), 100 * float(r["accuracy"])),  # type: ignore[arg-type]
            fontsize=8,
            xytext=(4, 4),
            textcoords="offset points",
        )
    axes[1].set(
        xlabel="speed-up vs FP32 teacher", ylabel="test accuracy (%)", title="Trained digits CNN"
    )
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "optimize.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=200, help="interleaved timed runs per model")
    ap.add_argument("--out", type=Path, default=Path("artifacts/optimize"))
    ap.add_argument("--skip-tiers", action="store_true")
    ap.add_argument(
        "--skip-trained", action="store_true", help="skip training the ResNet (about a minute)"
    )
    args = ap.parse_args()
    from collab.log import setup_logging

    setup_logging("WARNING")
    np.set_printoptions(precision=4)
    work = Path(tempfile.mkdtemp(prefix="bench-optimize-"))
    try:
        print("\n== 1. INT8/FP16 quantization (ONNX Runtime, batch 1, one thread)")
        resnet = _quantized("resnet", args.runs, work, every_split=True)
        _quantized("transformer", args.runs, work, every_split=False)
        if not args.skip_trained:
            _trained_resnet(args.runs, work)
        digits = _digits(args.runs, work)
        if not args.skip_tiers:
            _tiers(args.runs, work)
        print(f"\nplot: {_plot(resnet, digits, args.out)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
