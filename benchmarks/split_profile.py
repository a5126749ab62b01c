"""Split and profile the example models on this machine; print their split tables.

    .venv/bin/python benchmarks/split_profile.py [--models resnet,mobilenet,...] [--runs 50]

For every model: wall time of the whole split (trace, export, verify, profile), and per
cut the head/tail latency (ONNX Runtime, CPU, 1 thread, median), the feature size
relative to the input, and head / full — the share of the compute left on the edge.
Heads and tails are chains of the same segments as the full model, so head + tail is
the full model's time; what chaining costs against one monolithic graph is measured by
benchmarks/bundle_v2.py. Writes a PNG per run next to the tables.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from collab.bundle import Bundle
from collab.models.examples import load_example
from collab.models.registry import EXAMPLES, example_input
from collab.split import split_model
from collab.split.table import split_table


def _overheads(b: Bundle) -> str:
    m = b.manifest
    rows = [f"{'cut':<14} {'head/full':>10} {'feature/input':>14}"]
    for sp in m.split_points:
        rows.append(
            f"{sp.name:<14} {sp.head_ms / m.full_ms:>10.2f} {sp.feature_bytes / m.input_bytes:>14.2f}"
        )
    return "\n".join(rows)


def _plot(bundles: list[Bundle], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(bundles), 1, figsize=(10, 3.2 * len(bundles)), squeeze=False)
    for ax, b in zip(axes[:, 0], bundles, strict=True):
        m = b.manifest
        names = [sp.name for sp in m.split_points]
        xs = range(len(names))
        ax.bar(xs, [sp.head_ms for sp in m.split_points], label="head ms (edge)")
        ax.bar(
            xs,
            [sp.tail_ms for sp in m.split_points],
            bottom=[sp.head_ms for sp in m.split_points],
            label="tail ms (cloud)",
        )
        ax.axhline(m.full_ms, color="k", ls="--", lw=1, label="full model ms")
        ax.set_xticks(list(xs), names, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("ms")
        ax.set_title(f"{m.model_name}: latency per cut, feature size vs input")
        ax2 = ax.twinx()
        ax2.plot(
            list(xs),
            [sp.feature_bytes / 1024 for sp in m.split_points],
            "o-",
            color="tab:red",
            label="feature KB",
        )
        ax2.axhline(m.input_bytes / 1024, color="tab:red", ls=":", lw=1, label="input KB")
        ax2.set_ylabel("KB")
        ax.set_ylim(0, 1.4 * max(m.full_ms, *(sp.head_ms + sp.tail_ms for sp in m.split_points)))
        ax2.set_ylim(
            0, 1.4 * max(m.input_bytes, *(sp.feature_bytes for sp in m.split_points)) / 1024
        )
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper center", ncol=5)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--models", default="resnet,mobilenet,digits,transformer")
    ap.add_argument("--runs", type=int, default=50, help="timed runs per piece (median)")
    ap.add_argument("--png", type=Path, default=Path("artifacts/split_profile.png"))
    args = ap.parse_args(argv)
    names = [n for n in args.models.split(",") if n]
    unknown = [n for n in names if n not in EXAMPLES]
    if unknown:
        print(f"unknown models {unknown}; known: {', '.join(EXAMPLES)}", file=sys.stderr)
        return 2
    bundles = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            model = load_example(name)
            t0 = time.perf_counter()
            b = split_model(
                model,
                example_input(name, 3),
                Path(tmp) / name,
                name=name,
                runs=args.runs,
                progress=False,
            )
            wall = time.perf_counter() - t0
            print(
                f"=== {name}: split + export + verify + profile in {wall:.1f} s "
                f"({len(b.manifest.split_points)} cuts, {b.manifest.extra['valid_cuts']} valid cut positions)"
            )
            print(split_table(b))
            print(_overheads(b))
            print()
            bundles.append(b)
        _plot(bundles, args.png)
    print(f"plot: {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
