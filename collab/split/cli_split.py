"""``collab split SPEC --input-shape 1,3,32,32 --out DIR``."""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(parser: argparse.ArgumentParser):  # type: ignore[no-untyped-def]
    parser.add_argument("spec", help="model factory (package.module:factory or path/to/file.py:factory) "
                                     "or an ONNX model file (model.onnx)")
    parser.add_argument("--input-shape", default=None,
                        help="example input shape with batch, e.g. 1,3,32,32 (optional for a fixed-shape .onnx)")
    parser.add_argument("--out", type=Path, required=True, help="bundle directory to create (must be empty)")
    parser.add_argument("--weights", type=Path, default=None, help="state_dict file loaded into the model")
    parser.add_argument("--name", default=None, help="model name in the manifest (default: the factory name)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset to export (default 17)")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per piece (median; default 20)")
    parser.add_argument("--granularity", choices=["block", "all"], default="block",
                        help="block: cuts between blocks (default); all: every valid cut")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return _run


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
            raise ConfigError("--weights is for PyTorch factories; an ONNX model carries its weights")
        x = (np.random.default_rng(0).standard_normal(parse_shape(args.input_shape)).astype(np.float32)
             if args.input_shape else None)
        b = split_onnx(args.spec, args.out, name=args.name, example_input=x, runs=args.runs,
                       progress=not args.no_progress, granularity=args.granularity)
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
    ex = next((e for e in EXAMPLES.values() if e.factory == args.spec and e.input_shape[1:] == shape[1:]), None)
    if ex is not None:
        x = example_input(ex.name, shape[0])
    else:
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    name = args.name or args.spec.rpartition(":")[2]
    b = split_model(model, x, args.out, name=name, opset=args.opset, runs=args.runs,
                    progress=not args.no_progress, granularity=args.granularity)
    print(split_table(b))
    return 0
