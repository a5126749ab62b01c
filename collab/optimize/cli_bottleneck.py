"""``collab bottleneck BUNDLE --cut NAME`` (a learned bottleneck, a new split point) and
``--exit-cut NAME`` (an early exit with a calibrated tau), trained by distillation on
unlabeled training inputs, measured on held-out ones, added to the bundle in place."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from collab.optimize.learned import LearnConfig

_DEFAULT = LearnConfig()


def configure(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    parser.add_argument("bundle", type=Path, help="bundle directory (changed in place, atomically)")
    parser.add_argument("--cut", default=None, help="split point to put a bottleneck at")
    parser.add_argument("--exit-cut", default=None, help="split point to put an early exit at")
    parser.add_argument(
        "--model",
        default=None,
        metavar="SPEC",
        help="the PyTorch model behind the bundle (module:factory, file.py:factory or "
        "example:NAME; default: what the bundle records); the bottleneck's tail comes from it",
    )
    parser.add_argument(
        "--train",
        default=None,
        metavar="DATA",
        help="training inputs, no labels needed (default example:NAME:train: training "
        "source images only)",
    )
    parser.add_argument(
        "--held-out",
        default=None,
        metavar="DATA",
        help="held-out inputs for bytes, agreement and tau (default example:NAME:test)",
    )
    parser.add_argument("--n-train", type=int, default=512)
    parser.add_argument("--n-held-out", type=int, default=200)
    parser.add_argument("--channels", type=int, default=8, help="code channels of the bottleneck")
    parser.add_argument("--bits", type=int, default=4, help="quantizer bits it trains through")
    parser.add_argument(
        "--exit-target", type=float, default=0.995, help="agreement of exited inputs (tau)"
    )
    parser.add_argument("--steps", type=int, default=_DEFAULT.steps)
    parser.add_argument("--minutes", type=float, default=_DEFAULT.budget_s / 60.0)
    parser.add_argument("--threads", type=int, default=_DEFAULT.threads)
    parser.add_argument("--no-progress", action="store_true")
    return _run


def _run(args: argparse.Namespace) -> int:
    from collab.bundle import load_bundle
    from collab.errors import ConfigError
    from collab.optimize.bottleneck import add_bottleneck, add_exit
    from collab.optimize.pipeline import _default_model_spec
    from collab.optimize.samples import load_samples
    from collab.optimize.torchmodel import load_model

    if args.cut is None and args.exit_cut is None:
        raise ConfigError("give --cut (a bottleneck) and/or --exit-cut (an early exit)")
    m = load_bundle(args.bundle).manifest
    example = _default_model_spec(m)
    name = example.split(":", 1)[1] if example and example.startswith("example:") else None
    train_spec = args.train or (f"example:{name}:train" if name else None)
    held_spec = args.held_out or (f"example:{name}:test" if name else None)
    if train_spec is None or held_spec is None:
        raise ConfigError("not an example bundle: give --train and --held-out")
    train = load_samples(train_spec, m.input_shape, n=args.n_train)
    held = load_samples(held_spec, m.input_shape, n=args.n_held_out)
    progress = not args.no_progress
    cfg = LearnConfig(
        steps=args.steps,
        warmup_steps=min(_DEFAULT.warmup_steps, args.steps // 4),
        budget_s=args.minutes * 60.0,
        threads=args.threads,
    )
    if args.cut is not None:
        spec = args.model or example
        if spec is None:
            raise ConfigError("a bottleneck needs the PyTorch model: give --model")
        added = add_bottleneck(
            args.bundle,
            load_model(spec),
            args.cut,
            train,
            held,
            code_channels=args.channels,
            bits=args.bits,
            cfg=cfg,
            progress=progress,
        )
        print(f"bottleneck {added.name}: {added.log.steps} steps in {added.log.seconds:.0f} s")
        for codec, row in sorted(added.stats.items(), key=lambda kv: kv[1]["bytes"]):
            print(f"  {codec:<22}{row['bytes']:>9.0f} B  agreement {row['agreement']:.4f}")
    if args.exit_cut is not None:
        e = add_exit(
            args.bundle,
            args.exit_cut,
            train,
            held,
            target=args.exit_target,
            cfg=cfg,
            progress=progress,
        )
        s = e.stats
        print(
            f"early exit at {e.name}: tau {s['tau']:.4f}, exit rate {s['rate']:.3f}, "
            f"agreement of exited {s['agreement']:.4f} on {s['n']} held-out inputs"
        )
    return 0
