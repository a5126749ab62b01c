"""``collab calibrate BUNDLE``: measure split points x codecs and store calibration.json.

Inputs come from ``--inputs X.npy`` (and optional ``--labels Y.npy``) or, for the
bundled example models, from their held-out test split.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np

from collab.bundle import load_bundle
from collab.codec.calibrate import DEFAULT_CODECS, calibrate_bundle
from collab.errors import ConfigError


def configure(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    parser.add_argument("bundle", type=Path, help="bundle directory (modified in place)")
    parser.add_argument("--n", type=int, default=200, help="number of inputs to use (default 200)")
    parser.add_argument(
        "--codecs",
        nargs="+",
        default=list(DEFAULT_CODECS),
        metavar="CODEC",
        help="codec names, e.g. f32+zstd1 int8+zstd1 int4+brotli5+sparse",
    )
    parser.add_argument("--inputs", type=Path, help=".npy float array (N, *input_shape[1:])")
    parser.add_argument("--labels", type=Path, help=".npy integer labels (N,) for accuracy")
    parser.add_argument(
        "--example", help="example model whose test inputs to use (default: model name)"
    )
    parser.add_argument("--no-progress", action="store_true")
    return _run


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read {path}: {e}") from e


def _inputs(args: argparse.Namespace, model_name: str) -> tuple[np.ndarray, np.ndarray | None]:
    if args.inputs is not None:
        x = _load_npy(args.inputs)[: args.n]
        y = _load_npy(args.labels)[: args.n] if args.labels is not None else None
        return x, y
    if args.labels is not None:
        raise ConfigError("--labels needs --inputs")
    from collab.models.registry import EXAMPLES, example_inputs

    name = args.example or model_name
    if name not in EXAMPLES:
        raise ConfigError(
            f"model {model_name!r} is not a built-in example; pass --inputs X.npy [--labels Y.npy]"
            f" or --example NAME (known: {', '.join(EXAMPLES)})"
        )
    x, y = example_inputs(name, args.n, "test")
    return x, (y if EXAMPLES[name].trained else None)


def _run(args: argparse.Namespace) -> int:
    if args.n <= 0:
        raise ConfigError("--n must be positive")
    bundle = load_bundle(args.bundle)
    x, y = _inputs(args, bundle.manifest.model_name)
    cal = calibrate_bundle(args.bundle, x, y, codecs=args.codecs, progress=not args.no_progress)
    print(format_table(cal))
    return 0


def format_table(cal: dict) -> str:  # type: ignore[type-arg]
    """Human-readable table: one row per section x codec."""
    lines = [
        f"{'where':<14} {'codec':<24} {'bytes':>9} {'ratio':>7} {'enc ms':>7} {'dec ms':>7}"
        f" {'rel_l2':>8} {'agree':>6} {'acc':>6}"
    ]
    sections = [("input", cal["input"]), *cal["points"].items()]
    for where, sec in sections:
        for codec, s in sec.items():
            acc = "-" if s["accuracy"] is None else f"{s['accuracy']:.3f}"
            lines.append(
                f"{where:<14} {codec:<24} {s['bytes']:>9.0f} {s['ratio']:>7.2f} "
                f"{s['encode_ms']:>7.3f} {s['decode_ms']:>7.3f} {s['rel_l2']:>8.4f} "
                f"{s['agreement']:>6.3f} {acc:>6}"
            )
    return "\n".join(lines)
