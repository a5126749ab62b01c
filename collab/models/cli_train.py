"""``collab train-example {digits,resnet,mobilenet,transformer} --out PATH``."""

from __future__ import annotations

import argparse
from pathlib import Path

from collab.models.registry import EXAMPLES


def configure(parser: argparse.ArgumentParser):  # type: ignore[no-untyped-def]
    parser.add_argument(
        "model",
        choices=[n for n, s in EXAMPLES.items() if s.trained],
        help="example model to train",
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="where to write the state_dict (.pt)"
    )
    parser.add_argument("--epochs", type=int, default=None, help="default: the model's recipe")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: the recipe's, <= 2)"
    )
    return _run


def _run(args: argparse.Namespace) -> int:
    from collab.models.train import recipe, save_weights, train_example

    overrides: dict[str, int] = {"seed": args.seed}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.threads is not None:
        overrides["threads"] = args.threads
    cfg = recipe(args.model, **overrides)  # ConfigError for bad values
    r = train_example(args.model, cfg)
    save_weights(r.model, args.out)
    print(
        f"{args.model}: test accuracy {r.accuracy * 100:.2f}% ({cfg.epochs} epochs, {r.seconds:.1f} s) -> {args.out}"
    )
    return 0
