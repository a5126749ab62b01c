"""Bundle format v2 on EfficientNet-Lite0 (20 block cuts): weights once, side by side in one run.

    .venv/bin/python benchmarks/bundle_v2.py [--repeats 3] [--runs 200] [--work DIR]

1. ``collab split`` of the model (a fresh process): wall time and peak RSS.
2. Disk: the bundle vs the model's own ONNX file (the same export, one graph).
3. Memory and start-up, each in a fresh process with the same imports (numpy,
   onnxruntime, collab.edge.client): a bare ONNX Runtime session of the model's ONNX file, the
   bundle's segment sessions (lean options and ORT defaults), and a ``collab.Client``
   with every path (full, every head, every tail) loaded and warmed. RSS after that;
   "first answer" = from the end of the imports (reported apart, the same for all) to
   the first output; median and best of the fresh processes (the machine is shared: the
   best is the least disturbed start).
4. Latency, interleaved in one process (batch 1, 1 thread): the monolithic model vs the
   segment chain the edge runs for edge-only, with lean and default session options.

Targets (issue "A real model end to end", item 3): disk <= 1.3x the model's ONNX, client
RSS with every path ready <= 1.5x and first answer <= 1.5x the bare session's, split
peak RSS <= 2 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

SPEC = "collab.models.efficientnet:efficientnet_lite0"
SHAPE = "1,3,224,224"

# One fresh process per measurement. Imports first (the same for every mode), then the
# clock starts; RSS is read once every path of the mode is ready.
_PROC = r"""
import json, sys, time
t_exec = time.perf_counter()
import numpy as np, onnxruntime
import collab.edge.client  # what the edge process imports, in every mode: the same setup
from collab.bundle import load_bundle
from collab.chain import BundleSessions
from collab.ort import make_session, run

def rss_mb():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS'):
            return int(line.split()[1]) / 1024

mode, bundle, model = sys.argv[1:4]
x = np.zeros((1, 3, 224, 224), np.float32)
base = rss_mb()
t0 = time.perf_counter()
import_ms = (t0 - t_exec) * 1000
if mode == 'bare':
    s = make_session(model)
    run(s, x)
    first = time.perf_counter()
    for _ in range(2):
        run(s, x)
    sessions = 1
elif mode in ('segments_lean', 'segments_default'):
    bs = BundleSessions(load_bundle(bundle, keep_segments=True), lean=mode == 'segments_lean')
    full = bs.full()
    full(x)
    first = time.perf_counter()
    for _ in range(2):
        full(x)
    sessions = len(bs.loaded())
else:
    c = collab.Client(bundle, policy='edge_only', warm=False)
    c.infer(x)
    first = time.perf_counter()
    sessions = c.warm()  # every path: the segments (every head, tail and the full model), variants
    rt = c._model.runtime  # edge-only client: run every head and tail once, as requests would
    for sp in c.bundle.manifest.split_points:
        rt.tail(sp.name, rt.head(sp.name, x)[0])
    c.close()
print(json.dumps({'first_ms': (first - t0) * 1000, 'rss_mb': rss_mb(), 'base_mb': base, 'sessions': sessions,
                  'import_ms': import_ms}))
"""

MODES = {
    "bare": "bare ORT session of the model's ONNX",
    "segments_lean": "segment sessions (lean: no arena, no mem pattern)",
    "segments_default": "segment sessions (ORT default options)",
    "client": "collab.Client, every path ready",
}


_SPLIT = r"""
import resource, sys
from collab.cli import main
rc = main(sys.argv[1:])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
sys.exit(rc)
"""


def split_bundle(out: Path) -> tuple[float, float]:
    """``collab split`` in a fresh process: (wall s, peak RSS MB of that process)."""
    t0 = time.perf_counter()
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            _SPLIT,
            "split",
            SPEC,
            "--input-shape",
            SHAPE,
            "--out",
            str(out),
            "--no-progress",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return time.perf_counter() - t0, float(r.stdout.strip().splitlines()[-1])


def export_model(path: Path) -> None:
    """The model's own ONNX file: one graph, the same exporter settings as the split."""
    import torch

    from collab.models.efficientnet import efficientnet_lite0
    from collab.split.export import export_onnx

    export_onnx(
        efficientnet_lite0().eval(),
        torch.zeros(1, 3, 224, 224),
        path,
        input_name="input",
        output_name="output",
        opset=17,
    )


def in_process(mode: str, bundle: Path, model: Path) -> dict[str, float]:
    r = subprocess.run(
        [sys.executable, "-c", _PROC, mode, str(bundle), str(model)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(r.stdout.strip().splitlines()[-1])


def latency(bundle: Path, model: Path, runs: int) -> dict[str, tuple[float, float]]:
    """(median, min) ms of each, round-robin so machine noise hits all alike."""
    from collab.bundle import load_bundle
    from collab.chain import BundleSessions
    from collab.ort import make_session, run

    b = load_bundle(bundle)
    mono = make_session(model)
    mono_lean = make_session(model, lean=True)
    lean, default = BundleSessions(b).full(), BundleSessions(b, lean=False).full()
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    jobs = {
        "monolithic model (ORT defaults)": lambda: run(mono, x),
        "monolithic model (lean)": lambda: run(mono_lean, x),
        "segment chain, lean (what the edge runs)": lambda: lean(x),
        "segment chain, ORT defaults": lambda: default(x),
    }
    ref = run(mono, x)
    assert float(np.abs(lean(x) - ref).max()) <= 1e-4 * max(1.0, float(np.abs(ref).max()))
    times: dict[str, list[float]] = {k: [] for k in jobs}
    for r in tqdm(range(runs + 10), desc="latency", unit="round", leave=False):
        for k, f in jobs.items():
            t0 = time.perf_counter()
            f()
            if r >= 10:
                times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: (statistics.median(v), min(v)) for k, v in times.items()}


def _verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--repeats", type=int, default=7, help="fresh processes per mode (median and best)"
    )
    ap.add_argument("--runs", type=int, default=200, help="interleaved latency rounds")
    ap.add_argument("--work", type=Path, default=None, help="work directory (default: a temp dir)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        bundle, model = work / "bundle", work / "model.onnx"
        steps = [
            "split",
            "export",
            *(f"{m} #{i + 1}" for i in range(args.repeats) for m in MODES),
            "latency",
        ]
        results: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
        with tqdm(steps, desc="bundle_v2", unit="step") as bar:
            for step in bar:
                bar.set_postfix_str(step)
                if step == "split":
                    split_s, split_mb = split_bundle(bundle)
                elif step == "export":
                    export_model(model)
                elif step == "latency":
                    lat = latency(bundle, model, args.runs)
                else:
                    mode = step.split(" ")[0]
                    results[mode].append(in_process(mode, bundle, model))
        med = {
            m: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for m, rs in results.items()
        }
        best = {m: min(r["first_ms"] for r in rs) for m, rs in results.items()}
        disk = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
        model_bytes = model.stat().st_size
        from collab.bundle import load_bundle

        m = load_bundle(bundle).manifest
    bare = med["bare"]
    print(
        f"\n## Bundle v2: EfficientNet-Lite0, {len(m.split_points)} split points, {len(m.segments)} segments "
        f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)\n"
    )
    print("| measure | value | vs baseline | target |")
    print("|---|---:|---:|---|")
    print(f"| `collab split` wall time | {split_s:.1f} s | | reported |")
    print(
        f"| `collab split` peak RSS | {split_mb:.0f} MB | | <= 2048 MB: {_verdict(split_mb <= 2048)} |"
    )
    print(
        f"| bundle on disk (model ONNX {model_bytes / 1e6:.1f} MB) | {disk / 1e6:.1f} MB | "
        f"{disk / model_bytes:.2f}x | <= 1.3x: {_verdict(disk <= 1.3 * model_bytes)} |"
    )
    c = med["client"]
    print(
        f"| edge process RSS, every path ready (bare session {bare['rss_mb']:.0f} MB) | {c['rss_mb']:.0f} MB | "
        f"{c['rss_mb'] / bare['rss_mb']:.2f}x | <= 1.5x: {_verdict(c['rss_mb'] <= 1.5 * bare['rss_mb'])} |"
    )
    print(
        f"| first answer after start, median (bare session {bare['first_ms']:.0f} ms) | {c['first_ms']:.0f} ms | "
        f"{c['first_ms'] / bare['first_ms']:.2f}x | <= 1.5x: {_verdict(c['first_ms'] <= 1.5 * bare['first_ms'])} |"
    )
    print(
        f"| first answer after start, best (bare session {best['bare']:.0f} ms) | {best['client']:.0f} ms | "
        f"{best['client'] / best['bare']:.2f}x | <= 1.5x: {_verdict(best['client'] <= 1.5 * best['bare'])} |"
    )
    print(
        f"\n### Fresh processes (median of {args.repeats}; same imports, {bare['import_ms']:.0f} ms; "
        "RSS after them = baseline)\n"
    )
    print(
        "| process | sessions | RSS MB | above baseline MB | RSS vs bare | first answer ms (median, best) "
        "| vs bare (median, best) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for mode, label in MODES.items():
        r = med[mode]
        print(
            f"| {label} | {r['sessions']:.0f} | {r['rss_mb']:.0f} | {r['rss_mb'] - r['base_mb']:.0f} | "
            f"{r['rss_mb'] / bare['rss_mb']:.2f}x | {r['first_ms']:.0f}, {best[mode]:.0f} | "
            f"{r['first_ms'] / bare['first_ms']:.2f}x, {best[mode] / best['bare']:.2f}x |"
        )
    mono = lat["monolithic model (ORT defaults)"]
    print(f"\n### Edge-only latency, batch 1, 1 thread ({args.runs} interleaved rounds)\n")
    print("| model | median ms | min ms | median vs monolithic | min vs monolithic |")
    print("|---|---:|---:|---:|---:|")
    for k, (md, mn) in lat.items():
        print(f"| {k} | {md:.2f} | {mn:.2f} | {md / mono[0]:.2f}x | {mn / mono[1]:.2f}x |")
    print(
        "\nThe chain's overhead is the price of storing and loading every weight once: a layout "
        "reorder at each of the segment boundaries plus one ORT run call per segment."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
