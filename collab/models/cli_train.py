"""``collab train-example digits --out PATH``."""

from __future__ import annotations

import argparse
from pathlib import Path

from collab.errors import ConfigError
from collab.models.train import TrainConfig


def configure(parser: argparse.ArgumentParser):  # type: ignore[no-untyped-def]
    parser.add_argument("model", choices=["digits"], help="example model to train")
    parser.add_argument("--out", type=Path, required=True, help="where to write the state_dict (.pt)")
    parser.add_argument("--epochs", type=int, default=TrainConfig().epochs)
    parser.add_argument("--seed", type=int, default=0)
    return _run


def _run(args: argparse.Namespace) -> int:
    from collab.models.train import save_weights, train_digits

    if args.epochs < 1:
        raise ConfigError("--epochs must be >= 1")
    model, acc = train_digits(TrainConfig(epochs=args.epochs, seed=args.seed))
    save_weights(model, args.out)
    print(f"digits CNN: test accuracy {acc * 100:.2f}% -> {args.out}")
    return 0
