"""``collab calibrate BUNDLE``: measure split points x codecs and store calibration.json.

Inputs come from ``--inputs X.npy`` (and optional ``--labels Y.npy``), from camera
images ``--images X.npy`` (uint8 (N, H, W, 3), preprocessed as the bundle records) or,
for the bundled example models, from their held-out test split. Camera images (given,
or an image example's) also calibrate the image codecs of the cloud-only path
(``--image-codecs``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np

from collab.bundle import Bundle, load_bundle
from collab.codec.calibrate import DEFAULT_CODECS, calibrate_bundle
from collab.codec.image import DEFAULT_IMAGE_CODECS, preprocess
from collab.errors import ConfigError

DEFAULT_N = 200


def configure(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    parser.add_argument("bundle", type=Path, help="bundle directory (modified in place)")
    parser.add_argument(
        "--n",
        type=int,
        default=None,
        help="number of inputs to use (default 200; all 400 test images of a natural-image example)",
    )
    parser.add_argument(
        "--codecs",
        nargs="+",
        default=list(DEFAULT_CODECS),
        metavar="CODEC",
        help="codec names, e.g. f32+zstd1 int8+zstd1 int4+brotli5+sparse",
    )
    parser.add_argument(
        "--image-codecs",
        nargs="+",
        default=list(DEFAULT_IMAGE_CODECS),
        metavar="CODEC",
        help="image codecs of the cloud-only path, measured on camera images: jpeg:Q png webp:Q",
    )
    parser.add_argument("--inputs", type=Path, help=".npy float array (N, *input_shape[1:])")
    parser.add_argument(
        "--images", type=Path, help=".npy uint8 camera images (N, H, W, 3), instead of --inputs"
    )
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


def _inputs(
    args: argparse.Namespace, bundle: Bundle
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(model inputs, labels, camera images or None)."""
    n = args.n
    if args.inputs is not None and args.images is not None:
        raise ConfigError("--inputs and --images exclude each other")
    if args.images is not None:
        pre = bundle.manifest.preprocessing
        if pre is None:
            raise ConfigError(
                "--images needs a bundle with preprocessing (collab split --mean/--std)"
            )
        from collab.codec.image import check_images

        images, _ = check_images(_load_npy(args.images)[: n or DEFAULT_N])
        y = _load_npy(args.labels)[: n or DEFAULT_N] if args.labels is not None else None
        return preprocess(images, pre), y, images
    if args.inputs is not None:
        x = _load_npy(args.inputs)[: n or DEFAULT_N]
        y = _load_npy(args.labels)[: n or DEFAULT_N] if args.labels is not None else None
        return x, y, None
    if args.labels is not None:
        raise ConfigError("--labels needs --inputs or --images")
    from collab.models.registry import EXAMPLES, NATURAL_N, example_images, example_inputs

    model_name = bundle.manifest.model_name
    name = args.example or model_name
    if name not in EXAMPLES:
        raise ConfigError(
            f"model {model_name!r} is not a built-in example; pass --inputs X.npy [--labels Y.npy]"
            f" or --example NAME (known: {', '.join(EXAMPLES)})"
        )
    ex = EXAMPLES[name]
    if ex.images is not None and bundle.manifest.preprocessing is not None:
        images = example_images(name, n or NATURAL_N, "test")
        return preprocess(images, bundle.manifest.preprocessing), None, images
    x, y = example_inputs(name, n or DEFAULT_N, "test")
    return x, (y if ex.trained else None), None


def _run(args: argparse.Namespace) -> int:
    if args.n is not None and args.n <= 0:
        raise ConfigError("--n must be positive")
    bundle = load_bundle(args.bundle)
    x, y, images = _inputs(args, bundle)
    cal = calibrate_bundle(
        args.bundle,
        x,
        y,
        codecs=args.codecs,
        progress=not args.no_progress,
        images=images,
        image_codecs=args.image_codecs,
    )
    print(format_table(cal))
    return 0


def format_table(cal: dict) -> str:  # type: ignore[type-arg]
    """Human-readable table: one row per section x codec."""
    lines = [
        f"{'where':<14} {'codec':<24} {'bytes':>9} {'ratio':>7} {'enc ms':>7} {'dec ms':>7}"
        f" {'rel_l2':>8} {'agree':>6} {'acc':>6}"
    ]
    sections = [
        ("input", cal["input"]),
        *cal["points"].items(),
        *([("image", cal["image"])] if "image" in cal else []),
    ]
    for where, sec in sections:
        for codec, s in sec.items():
            acc = "-" if s["accuracy"] is None else f"{s['accuracy']:.3f}"
            lines.append(
                f"{where:<14} {codec:<24} {s['bytes']:>9.0f} {s['ratio']:>7.2f} "
                f"{s['encode_ms']:>7.3f} {s['decode_ms']:>7.3f} {s['rel_l2']:>8.4f} "
                f"{s['agreement']:>6.3f} {acc:>6}"
            )
    return "\n".join(lines)
