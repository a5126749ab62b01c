"""``collab split SPEC --input-shape 1,3,32,32 --out DIR``."""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(parser: argparse.ArgumentParser):  # type: ignore[no-untyped-def]
    parser.add_argument(
        "spec",
        help="model factory (package.module:factory or path/to/file.py:factory) "
        "or an ONNX model file (model.onnx)",
    )
    parser.add_argument(
        "--input-shape",
        default=None,
        help="example input shape with batch, e.g. 1,3,32,32 (optional for a fixed-shape .onnx)",
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="bundle directory to create (must be empty)"
    )
    parser.add_argument(
        "--weights", type=Path, default=None, help="state_dict file loaded into the model"
    )
    parser.add_argument(
        "--name", default=None, help="model name in the manifest (default: the factory name)"
    )
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset to export (default 17)")
    parser.add_argument(
        "--runs", type=int, default=20, help="timed runs per piece (median; default 20)"
    )
    parser.add_argument(
        "--granularity",
        choices=["block", "all"],
        default="block",
        help="block: cuts between blocks (default); all: every valid cut",
    )
    parser.add_argument(
        "--mean",
        default=None,
        metavar="R,G,B",
        help="image models: per-channel mean on pixels scaled to [0, 1], recorded as the "
        "bundle's preprocessing (with --std; built-in examples know theirs)",
    )
    parser.add_argument(
        "--std", default=None, metavar="R,G,B", help="image models: per-channel std (with --mean)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return _run


def _triple(flag: str, text: str) -> tuple[float, float, float]:
    from collab.errors import ConfigError

    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: expected three numbers R,G,B") from None
    if len(values) != 3:
        raise ConfigError(f"{flag} {text!r}: expected three numbers R,G,B")
    return values  # type: ignore[return-value]


def _preprocessing(args: argparse.Namespace, shape: tuple[int, ...] | None):  # type: ignore[no-untyped-def]
    """The preprocessing ``--mean/--std`` describe, for an RGB NCHW input ``shape``."""
    from collab.bundle import Preprocessing
    from collab.errors import BundleError, ConfigError

    if args.mean is None and args.std is None:
        return None
    if args.mean is None or args.std is None:
        raise ConfigError("--mean and --std go together")
    if shape is None or len(shape) != 4 or shape[1] != 3:
        raise ConfigError(
            f"--mean/--std describe RGB images: the input shape must be N,3,H,W (got {shape})"
        )
    try:
        return Preprocessing(
            size=(shape[2], shape[3]),
            mean=_triple("--mean", args.mean),
            std=_triple("--std", args.std),
        )
    except BundleError as e:
        raise ConfigError(str(e)) from e


def _run(args: argparse.Namespace) -> int:
    from collab.errors import ConfigError

    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        raise ConfigError(f"--out {args.out} exists and is not empty")
    if not 7 <= args.opset <= 20:
        raise ConfigError(f"--opset {args.opset}: supported opsets are 7..20")

    import numpy as np

    from collab.split.loader import parse_shape
    from collab.split.table import split_table

    if args.spec.endswith(".onnx"):
        from collab.split.onnx_split import split_onnx

        if args.weights is not None:
            raise ConfigError(
                "--weights is for PyTorch factories; an ONNX model carries its weights"
            )
        x = (
            np.random.default_rng(0)
            .standard_normal(parse_shape(args.input_shape))
            .astype(np.float32)
            if args.input_shape
            else None
        )
        if (args.mean or args.std) and x is None:
            raise ConfigError("--mean/--std need --input-shape N,3,H,W")
        b = split_onnx(
            args.spec,
            args.out,
            name=args.name,
            example_input=x,
            runs=args.runs,
            progress=not args.no_progress,
            granularity=args.granularity,
            preprocessing=_preprocessing(args, None if x is None else tuple(x.shape)),
        )
        print(split_table(b))
        return 0
    if args.input_shape is None:
        raise ConfigError("--input-shape is required for a PyTorch factory")

    from collab.models.registry import EXAMPLES, example_input
    from collab.split.api import split_model
    from collab.split.loader import load_factory_model

    shape = parse_shape(args.input_shape)
    model = load_factory_model(args.spec, args.weights)
    # Known example factories get realistic inputs; anything else a seeded normal sample.
    ex = next(
        (e for e in EXAMPLES.values() if e.factory == args.spec and e.input_shape[1:] == shape[1:]),
        None,
    )
    pre = _preprocessing(args, shape)
    if ex is not None:
        x = example_input(ex.name, shape[0])
        pre = pre or ex.preprocessing
    else:
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    name = args.name or args.spec.rpartition(":")[2]
    b = split_model(
        model,
        x,
        args.out,
        name=name,
        opset=args.opset,
        runs=args.runs,
        progress=not args.no_progress,
        granularity=args.granularity,
        preprocessing=pre,
    )
    print(split_table(b))
    return 0
