#!/usr/bin/env python3
"""Mutation fuzzing of the frame decoder: >= 100,000 cases over valid frames of every
codec (bit flips, truncation, extension, header field lies re-encoded with a valid CRC,
shape/length lies, overlong varints, payload corruption with a valid CRC, splices),
plus frames of real features from the digits CNN. Only CodecError may come out; peak
traced memory and RSS growth are reported and checked against bounds.

Usage: .venv/bin/python benchmarks/fuzz_codec.py [--cases 200000] [--seed 0]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import resource
import sys
import time
import traceback
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tqdm import tqdm  # noqa: E402

from collab.codec import decode, encode, peek  # noqa: E402
from collab.errors import CodecError  # noqa: E402
from tests.helpers import codec_fuzz as fuzz  # noqa: E402

CODECS = [
    f"{q}{e}{s}"
    for q in ("f32", "f16", "int8", "int4", "int3", "int2")
    for e in ("", "+zstd1", "+zstd19", "+brotli1", "+brotli11")
    for s in ("", "+sparse")
] + ["int8+zstd1+clip99.9", "int4+brotli5+sparse+clip99"]
MAX_BYTES = 4 << 20


def real_frames() -> list[bytes]:
    """Frames of the digits CNN's real split-point features (when the bundle exists)."""
    try:
        from collab.bundle import load_bundle
        from collab.chain import BundleSessions
        from collab.models.registry import example_inputs
        from collab.split.examples import example_bundle

        b = load_bundle(example_bundle("digits"))
        sessions = BundleSessions(b)
        x, _ = example_inputs("digits", 2, "test")
        feats = [sessions.head(sp.name)(x)[:1] for sp in b.manifest.split_points]
    except Exception as e:  # the synthetic seeds still cover every codec
        print(f"(no real features: {e})")
        return []
    return [
        encode(f, c)
        for f in feats
        for c in ("int8+zstd1", "int4+brotli5+sparse", "f32+zstd1", "int3+zstd1")
    ]


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--cases", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    frames = fuzz.seed_frames(CODECS, args.seed) + real_frames()
    print(f"{len(frames)} seed frames over {len(CODECS)} codecs; max_bytes={MAX_BYTES}")
    counts: collections.Counter[str] = collections.Counter()
    failures = 0
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    t0 = time.perf_counter()
    for kind, m in tqdm(
        fuzz.mutations(frames, args.cases, args.seed), total=args.cases, unit="case"
    ):
        try:
            outcome = fuzz.check(m, decode, MAX_BYTES)
            with contextlib.suppress(CodecError):
                peek(m, max_bytes=MAX_BYTES)
        except Exception:
            failures += 1
            outcome = "CRASH"
            if failures <= 5:
                print(f"\nnon-CodecError on {kind}: {m.hex()}")
                traceback.print_exc()
        counts[f"{kind}:{outcome}"] += 1
    elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    print(f"\n{'mutation':<18} {'decoded ok':>10} {'CodecError':>10} {'other':>6}")
    for kind in [*fuzz.MUTATORS, "splice"]:
        print(
            f"{kind:<18} {counts[kind + ':ok']:>10} {counts[kind + ':rejected']:>10}"
            f" {counts[kind + ':CRASH']:>6}"
        )
    total = sum(counts.values())
    print(
        f"\ncases: {total} in {elapsed:.1f} s ({total / elapsed:.0f}/s); non-CodecError exceptions: {failures}"
    )
    print(
        f"peak traced allocation: {peak / 2**20:.2f} MiB (bound 4 x max_bytes = {4 * MAX_BYTES / 2**20:.0f} MiB)"
    )
    print(f"max RSS growth during the run: {rss_growth:.1f} MiB")
    ok = failures == 0 and peak < 4 * MAX_BYTES and total >= 100_000
    print("RESULT:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
