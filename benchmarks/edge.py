"""Edge runtime benchmark: framework overhead, RSS and cold start, side by side in one run.

1. Per-request latency of a collaborative request through ``collab.Client`` (forced
   split, fixed codec) versus a hand-written pipeline doing the same work: ORT head,
   ``collab.codec.encode``, a bare gRPC ``Decode`` stub call to the same cloud node
   process, ``collab.codec.decode``. Requests alternate A/B in rounds so that noise from
   the shared machine hits both equally; the table reports medians and the ratio.
2. Cold start (construct + first answer) and RSS of the edge runtime, each in a fresh
   process, versus bare ONNX Runtime loading the full model.

Run: ``.venv/bin/python benchmarks/edge.py [--requests N] [--bundle DIR ...]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
from tqdm import tqdm

from collab import codec as codecs
from collab.bundle import load_bundle
from collab.chain import BundleSessions
from collab.edge.client import Client
from collab.procs import collab_process, free_port
from collab.proto import collab_pb2, collab_pb2_grpc

CODEC = "f32+zstd1"


def _inputs(bundle: Path, n: int) -> np.ndarray:
    shape = tuple(load_bundle(bundle).manifest.input_shape[1:])
    return np.random.default_rng(0).standard_normal((n, *shape)).astype(np.float32)


def overhead(bundle: Path, cloud: str, requests: int, split: str | None) -> dict[str, float | str]:
    b = load_bundle(bundle)
    sps = b.manifest.split_points
    sp = b.manifest.split(split) if split else sps[len(sps) // 2]
    xs = _inputs(bundle, 16)
    head = BundleSessions(b).head(sp.name)
    mid = collab_pb2.ModelId(name=b.manifest.model_name, version=b.version)
    ch = grpc.insecure_channel(cloud)
    stub = collab_pb2_grpc.CloudServiceStub(ch)

    def by_hand(x: np.ndarray) -> np.ndarray:
        f = head(x)
        resp = stub.Decode(
            collab_pb2.DecodeRequest(
                model=mid, split_point=sp.name, frame=codecs.encode(f, CODEC), request_id="bench"
            ),
            timeout=10,
        )
        return codecs.decode(resp.output)

    a_ms: list[float] = []
    b_ms: list[float] = []
    with Client(
        bundle,
        cloud=[cloud],
        policy=f"split:{sp.name}",
        codec=CODEC,
        accuracy_budget=0.0,
        probe_interval_s=1.0,
    ) as c:
        for i in range(20):  # warm both paths
            x = xs[i % len(xs)][None]
            np.testing.assert_allclose(c.infer(x).output, by_hand(x), atol=1e-6)
        for i in tqdm(range(requests), desc=f"overhead {b.manifest.model_name}", leave=False):
            x = xs[i % len(xs)][None]
            first_client = i % 2 == 0
            for which in (0, 1) if first_client else (1, 0):
                t0 = time.perf_counter()
                if which == 0:
                    r = c.infer(x)
                    assert not r.fell_back, r.fallback_reason
                else:
                    by_hand(x)
                (a_ms if which == 0 else b_ms).append((time.perf_counter() - t0) * 1000)
    ch.close()
    ma, mb = float(np.median(a_ms)), float(np.median(b_ms))
    return {
        "model": b.manifest.model_name,
        "split": sp.name,
        "feature_bytes": sp.feature_bytes,
        "client_p50_ms": ma,
        "hand_p50_ms": mb,
        "client_mean_ms": float(np.mean(a_ms)),
        "hand_mean_ms": float(np.mean(b_ms)),
        "ratio_p50": ma / mb,
        "ratio_mean": float(np.mean(a_ms) / np.mean(b_ms)),
        "overhead_p50_us": (ma - mb) * 1000,
    }


_COLD = r"""
import json, sys, time
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS'):
            return int(line.split()[1]) / 1024
t0 = time.perf_counter()
import numpy as np
mode, bundle = sys.argv[1], sys.argv[2]
if mode == 'client':
    from collab.edge.client import Client
    t_imp = time.perf_counter()
    c = Client(bundle, warm=False)
    x = np.zeros(c.bundle.manifest.input_shape, np.float32)
    c.infer(x)
    t_first = time.perf_counter()
    sessions = c.warm()
    all_rss = rss()
    extra = {'sessions': sessions, 'torch_loaded': 'torch' in sys.modules}
else:
    import json as _j, pathlib
    from collab.ort import make_session, run
    t_imp = time.perf_counter()
    m = _j.loads((pathlib.Path(bundle) / 'manifest.json').read_text())
    y = np.zeros(m['input_shape'], np.float32)
    for seg in m['segments']:  # the full model: its segments in order, by hand
        y = run(make_session(pathlib.Path(bundle) / seg['path']), y)
    t_first = time.perf_counter()
    all_rss = rss()
    extra = {'sessions': len(m['segments']), 'torch_loaded': 'torch' in sys.modules}
print(json.dumps({'import_ms': (t_imp - t0) * 1000, 'cold_start_ms': (t_first - t0) * 1000,
                  'first_answer_after_import_ms': (t_first - t_imp) * 1000, 'rss_mb': all_rss, **extra}))
"""


def cold_start(bundle: Path, repeats: int) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for mode in ("client", "bare_ort"):
        runs = []
        for _ in range(repeats):
            r = subprocess.run(
                [sys.executable, "-c", _COLD, mode, str(bundle)],
                capture_output=True,
                text=True,
                check=True,
            )
            runs.append(json.loads(r.stdout))
        out[mode] = {k: float(np.median([rr[k] for rr in runs])) for k in runs[0]}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--bundle",
        action="append",
        type=Path,
        default=None,
        help="bundle dir (repeatable; default: the digits and resnet examples)",
    )
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--cold-repeats", type=int, default=3)
    args = ap.parse_args()
    bundles = args.bundle
    if not bundles:
        from collab.split.examples import example_bundle

        bundles = [example_bundle("digits"), example_bundle("resnet")]
    port = free_port()
    cloud_args = ["cloud", "--listen", f"127.0.0.1:{port}", "--max-wait-ms", "0"]
    for b in bundles:
        cloud_args += ["--bundle", str(b)]
    rows = []
    with collab_process(cloud_args, port=port, timeout=120):
        for b in bundles:
            rows.append(overhead(b, f"127.0.0.1:{port}", args.requests, None))
    print(
        "\n## Per-request framework overhead: collab.Client vs hand-written gRPC + ORT "
        f"(same cloud node process, codec {CODEC}, {args.requests} requests each, A/B interleaved)\n"
    )
    print(
        "| model | split | feature B | client p50 ms | hand p50 ms | ratio p50 | client mean ms "
        "| hand mean ms | ratio mean | overhead p50 us |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['model']} | {r['split']} | {r['feature_bytes']} | {r['client_p50_ms']:.3f} | "
            f"{r['hand_p50_ms']:.3f} | **{r['ratio_p50']:.3f}x** | {r['client_mean_ms']:.3f} | "
            f"{r['hand_mean_ms']:.3f} | {r['ratio_mean']:.3f}x | {r['overhead_p50_us']:.0f} |"
        )
    print("\ntarget: ratio <= 1.10x\n")
    print(
        f"## Edge runtime cold start and RSS (fresh process each, median of {args.cold_repeats})\n"
    )
    print(
        "| model | runtime | import ms | first answer after import ms | cold start total ms | RSS MB "
        "| sessions | torch loaded |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for b in bundles:
        cs = cold_start(b, args.cold_repeats)
        name = load_bundle(b).manifest.model_name
        for mode, v in cs.items():
            label = (
                "collab.Client (all sessions warmed)"
                if mode == "client"
                else "bare ORT, the full model's segments by hand"
            )
            print(
                f"| {name} | {label} | {v['import_ms']:.0f} | {v['first_answer_after_import_ms']:.0f} | "
                f"{v['cold_start_ms']:.0f} | {v['rss_mb']:.0f} | {v['sessions']:.0f} | "
                f"{bool(v['torch_loaded'])} |"
            )
        ratio = cs["client"]["cold_start_ms"] / cs["bare_ort"]["cold_start_ms"]
        print(
            f"| {name} | cold start ratio client/bare | | | {ratio:.2f}x | "
            f"{cs['client']['rss_mb'] / cs['bare_ort']['rss_mb']:.2f}x | | |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
