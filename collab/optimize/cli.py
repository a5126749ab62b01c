"""``collab optimize BUNDLE --tier T --calibration DATA --out BUNDLE2`` (plus manual
``--quantize/--prune/--distill``); prints the variant table at the end."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from collab.optimize.tiers import TIERS


def configure(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    parser.add_argument("bundle", type=Path, help="input bundle directory (left untouched)")
    parser.add_argument(
        "--out", type=Path, required=True, help="output bundle directory (must not exist)"
    )
    parser.add_argument(
        "--calibration",
        required=True,
        metavar="DATA",
        help="sample inputs: .npy, .npz with x (and y labels), or example:NAME[:SPLIT]; "
        "the first part calibrates INT8, the rest checks agreement (example:NAME: "
        "calibrate on its train split, check on its test split)",
    )
    parser.add_argument(
        "--holdout",
        default=None,
        metavar="DATA",
        help="separate held-out inputs for the agreement check (then all of --calibration calibrates)",
    )
    parser.add_argument("--tier", default=None, help=f"device tier: {', '.join(TIERS)}")
    parser.add_argument(
        "--quantize",
        default=None,
        metavar="METHODS",
        help="comma-separated: int8_static, int8_dynamic, fp16 (overrides the tier; '' for none)",
    )
    parser.add_argument(
        "--prune",
        type=float,
        default=None,
        metavar="FRACTION",
        help="remove this fraction of output channels, in (0, 1)",
    )
    parser.add_argument(
        "--prune-layers",
        choices=["widest", "all"],
        default=None,
        help="prune the widest prunable convs (default) or all of them",
    )
    parser.add_argument(
        "--distill",
        type=float,
        default=None,
        metavar="WIDTH",
        help="distill a student with this fraction of the channels, in (0, 1)",
    )
    parser.add_argument(
        "--model",
        default=None,
        metavar="SPEC",
        help="PyTorch model for pruning/distillation (example:NAME, module:factory, file.py:factory)",
    )
    parser.add_argument(
        "--train-data", default=None, metavar="DATA", help="labelled training data (.npz x, y)"
    )
    parser.add_argument(
        "--splits", default="all", help="heads to quantize: all, middle, none or NAME[,NAME]"
    )
    parser.add_argument(
        "--min-agreement",
        type=float,
        default=None,
        help="drop variants below this top-1 agreement with FP32 (default from the tier, else 0.99)",
    )
    parser.add_argument("--calibration-fraction", type=float, default=0.5)
    parser.add_argument(
        "--calibrate", default="percentile", help="static INT8 ranges: minmax, percentile, entropy"
    )
    parser.add_argument("--max-samples", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs after pruning")
    parser.add_argument("--distill-epochs", type=int, default=20)
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--alpha", type=float, default=0.7)
    parser.add_argument("--runs", type=int, default=30, help="timed runs per model (median)")
    parser.add_argument("--no-progress", action="store_true")
    return _run


def _run(args: argparse.Namespace) -> int:
    from collab.optimize.pipeline import OptimizeConfig, optimize
    from collab.optimize.variants import format_table

    quant = (
        None
        if args.quantize is None
        else tuple(m.strip() for m in args.quantize.split(",") if m.strip())
    )
    cfg = OptimizeConfig(
        bundle=args.bundle,
        out=args.out,
        calibration=args.calibration,
        holdout=args.holdout,
        tier=args.tier,
        quantize=quant,
        prune=args.prune,
        prune_layers=args.prune_layers,
        distill=args.distill,
        model=args.model,
        train_data=args.train_data,
        splits=args.splits,
        min_agreement=args.min_agreement,
        calibration_fraction=args.calibration_fraction,
        max_samples=args.max_samples,
        finetune_epochs=args.epochs,
        distill_epochs=args.distill_epochs,
        temperature=args.temperature,
        alpha=args.alpha,
        calibrate=args.calibrate,
        runs=args.runs,
        progress=not args.no_progress,
    )
    res = optimize(cfg)
    print(format_table(res.reports))
    for key in ("prune", "distill"):
        if key in res.notes:
            print(f"{key}: " + ", ".join(f"{k}={v}" for k, v in res.notes[key].items()))
    kept = sum(r.kept for r in res.reports)
    print(
        f"{res.bundle.root}: {kept} of {len(res.reports)} variants kept, version {res.bundle.version[:12]}"
    )
    return 0
