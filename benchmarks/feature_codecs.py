#!/usr/bin/env python3
"""Feature codecs on EfficientNet-Lite0 against the JPEG bar (issue "A real model end to
end", item 5).

Target: some cut whose head is <= 70 % of the model's compute (head_ms / full_ms of the
bundle profile) sends a feature frame of <= 4500 B (1/3 of a q90 JPEG, 13.7 KB) at
<= 0.5 % top-1 agreement loss against the FP32 model.

Everything calibrated (per-channel clip ranges, sensitivities, step allocations) is fitted
on the natural-image TRAIN split; bytes and agreement are measured on TEST-split images
(disjoint source photographs), one single-sample frame per image as requests travel.
Rows: the shipped codecs as baselines, then ``+alloc`` (calibrated per-channel steps,
collab.codec.alloc) with equal-SNR steps and with sensitivity-weighted steps at several
rates, under zstd19 and brotli11. Agreement comes with its 95 % Wilson interval.

Usage (the bundle and features are cached in --work; ~10 min on the shared 2-core box):
    .venv/bin/python benchmarks/feature_codecs.py [--n-test 400] [--n-train 200] [--work .cache/feature_codecs]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from collab.bundle import Bundle, load_bundle  # noqa: E402
from collab.chain import BundleSessions  # noqa: E402
from collab.codec import decode, encode  # noqa: E402
from collab.codec.alloc import Allocation, channel_sensitivity, fit  # noqa: E402
from collab.codec.spec import Codec  # noqa: E402
from collab.errors import BundleError  # noqa: E402

TARGET_BYTES = 4500
BUDGET = 0.005
MAX_HEAD_SHARE = 0.70
CUTS = ("_blocks.5", "_blocks.7", "_blocks.9", "_blocks.10")
BASELINES = ("int8+zstd1", "int4+zstd1", "int4+zstd1+clip99.9")
RATES = (0.05, 0.1, 0.2, 0.35)
BATCH = 50


@dataclass(frozen=True)
class Row:
    """One measured (cut, codec) cell; ``lever`` says how the allocation was fitted."""

    cut: str
    codec: str
    lever: str
    head_share: float
    bytes: float
    agreement: float
    lo: float
    hi: float

    @property
    def meets(self) -> bool:
        return (
            self.bytes <= TARGET_BYTES
            and 1 - self.agreement <= BUDGET + 1e-12
            and self.head_share <= MAX_HEAD_SHARE
        )


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion k/n."""
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def build_bundle(work: Path) -> Bundle:
    """EfficientNet-Lite0 split at every block, cached in ``work/bundle``."""
    try:
        return load_bundle(work / "bundle")
    except BundleError:
        pass
    from collab.models.efficientnet import MEAN, STD, efficientnet_lite0
    from collab.models.images import natural_images, normalize
    from collab.split.api import split_model

    x = normalize(natural_images("train", 4), MEAN, STD)
    return split_model(efficientnet_lite0(), x, work / "bundle", name="efficientnet_lite0")


def batched(fn, x: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.concatenate([fn(x[i : i + BATCH]) for i in range(0, len(x), BATCH)])


def features(
    bundle: Bundle,
    sessions: BundleSessions,
    work: Path,
    cuts: tuple[str, ...],
    n_train: int,
    n_test: int,
) -> dict[str, np.ndarray]:
    """Head outputs per split and cut plus the FP32 top-1 of the test images (cached)."""
    path = work / f"features-{bundle.version[:12]}-{n_train}-{n_test}-{'_'.join(cuts)}.npz"
    if path.is_file():
        return dict(np.load(path))
    from collab.models.efficientnet import MEAN, STD
    from collab.models.images import natural_images, normalize

    out: dict[str, np.ndarray] = {}
    jobs = [("train", n_train), ("test", n_test)]
    with tqdm(total=len(jobs) * (len(cuts) + 1), desc="features", unit="pass") as bar:
        for split, n in jobs:
            x = normalize(natural_images(split, n), MEAN, STD)  # type: ignore[arg-type]
            out[f"{split}:top1"] = batched(sessions.full(), x).argmax(axis=1)
            bar.update()
            for cut in cuts:
                out[f"{split}:{cut}"] = batched(sessions.head(cut), x)
                bar.update()
    np.savez(path, **out)
    return out


def measure(
    cut: str, codec: str, alloc: Allocation | None, test: np.ndarray, tail, ref: np.ndarray
) -> tuple[float, float, int]:  # type: ignore[no-untyped-def]
    """Mean frame bytes, agreement and number of agreeing images of one codec."""
    sizes = np.empty(len(test))
    decoded = np.empty_like(test)
    for i in range(len(test)):
        frame = encode(test[i : i + 1], codec, alloc=alloc)
        sizes[i] = len(frame)
        decoded[i] = decode(frame)[0]
    k = int((batched(tail, decoded).argmax(axis=1) == ref).sum())
    return float(sizes.mean()), k / len(test), k


def run(args: argparse.Namespace) -> list[Row]:
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    bundle = build_bundle(work)
    m = bundle.manifest
    sessions = BundleSessions(bundle, intra_threads=2)
    cuts = tuple(args.cuts.split(","))
    feats = features(bundle, sessions, work, cuts, args.n_train, args.n_test)
    ref = feats["test:top1"]
    shares = {sp.name: sp.head_ms / m.full_ms for sp in m.split_points}
    plans: list[tuple[str, str, float | None, bool]] = [
        (c, "baseline", None, False) for c in BASELINES
    ]
    plans.append(("int8+zstd19+alloc", "equal SNR", 0.1, False))
    plans += [("int8+brotli11+alloc", "sensitivity", r, True) for r in RATES]
    plans.append(("int8+zstd19+alloc", "sensitivity", 0.1, True))
    rows: list[Row] = []
    with tqdm(total=len(cuts) * len(plans), desc="codecs", unit="cell") as bar:
        for cut in cuts:
            train, test, tail = feats[f"train:{cut}"], feats[f"test:{cut}"], sessions.tail(cut)
            g = channel_sensitivity(train[: args.n_sens], tail)
            for codec, lever, rate, weighted in plans:
                bar.set_postfix_str(f"{cut} {codec}")
                Codec.parse(codec)
                alloc = None if rate is None else fit(train, 8, rate, g if weighted else None)
                label = lever if rate is None else f"{lever} rate={rate:g}"
                size, agree, k = measure(cut, codec, alloc, test, tail, ref)
                lo, hi = wilson(k, len(test))
                rows.append(Row(cut, codec, label, shares[cut], size, agree, lo, hi))
                bar.update()
    return rows


def report(rows: list[Row], n_test: int) -> list[str]:
    lines = [
        f"EfficientNet-Lite0, {n_test} TEST images; target <= {TARGET_BYTES} B at <= "
        f"{100 * BUDGET:.1f} % loss, head <= {100 * MAX_HEAD_SHARE:.0f} % of compute",
        "",
        "| cut | head share | codec | lever | bytes | agreement | 95 % interval | |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ok = [r for r in rows if 1 - r.agreement <= BUDGET + 1e-12 and r.head_share <= MAX_HEAD_SHARE]
    best = min(ok, key=lambda r: r.bytes) if ok else None
    for r in rows:
        mark = ("**target met**" if r.meets else "best in budget") if r is best else ""
        lines.append(
            f"| {r.cut} | {100 * r.head_share:.1f} % | {r.codec} | {r.lever} | {r.bytes:.0f} |"
            f" {100 * r.agreement:.2f} % | [{100 * r.lo:.1f}, {100 * r.hi:.1f}] | {mark} |"
        )
    lines.append("")
    if best is None:
        lines.append("no codec is within the loss budget at a cut with head <= 70 %")
    elif best.meets:
        lines.append(f"target met: {best.cut} {best.codec} ({best.lever}) at {best.bytes:.0f} B")
    else:
        lines.append(
            f"target missed: the smallest frame within the loss budget is {best.bytes:.0f} B "
            f"({best.cut} {best.codec}, {best.lever}), {best.bytes / TARGET_BYTES:.2f}x the "
            f"{TARGET_BYTES} B target"
        )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--work", type=Path, default=ROOT / ".cache" / "feature_codecs")
    ap.add_argument("--n-test", type=int, default=400)
    ap.add_argument("--n-train", type=int, default=200)
    ap.add_argument("--n-sens", type=int, default=32, help="train images for the sensitivities")
    ap.add_argument("--cuts", default=",".join(CUTS))
    args = ap.parse_args()
    rows = run(args)
    lines = report(rows, args.n_test)
    print("\n".join(lines))
    (args.work / "feature_codecs.md").write_text("\n".join(lines) + "\n")
    (args.work / "feature_codecs.json").write_text(
        json.dumps([r.__dict__ for r in rows], indent=1) + "\n"
    )


if __name__ == "__main__":
    main()
