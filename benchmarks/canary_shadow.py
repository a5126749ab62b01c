"""What the canary's shadow baseline costs the candidate's measured latency on one edge.

    .venv/bin/python benchmarks/canary_shadow.py [--bundle digits] [--blocks 20] [--block 200]

One process, one ``collab.Client`` serving the candidate (a copy of the example bundle
with another version: the same model) edge-only, requests one after another through
``edge_node.canary.VersionMonitor`` as the daemon does; blocks of requests alternate
between no shadow and a shadow of the baseline at each share, so every setting sees the
same machine state. Reported: median and p95 of the served latency per setting and their
ratio to the no-shadow blocks. This is the bias a canary node's latency carries against
the control nodes (which run no shadow); choose ``--latency-tolerance`` above it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collab.bundle import load_bundle, update_bundle
from collab.edge.client import Client
from collab.edge.config import ClientConfig
from collab.split.examples import example_bundle
from edge_node.canary import VersionMonitor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", default="digits", help="example model (collab.split.examples)")
    ap.add_argument("--blocks", type=int, default=20, help="blocks per setting")
    ap.add_argument("--block", type=int, default=200, help="requests per block")
    ap.add_argument("--shares", default="0.05,0.5,1.0")
    args = ap.parse_args()
    shares = [0.0, *(float(s) for s in args.shares.split(","))]
    work = Path(tempfile.mkdtemp(prefix="canary-shadow-"))
    try:
        base = work / "base"
        shutil.copytree(example_bundle(args.bundle), base)
        cand = work / "cand"
        shutil.copytree(base, cand)
        update_bundle(cand, lambda root, m: replace(m, extra={**m.extra, "rev": "candidate"}))
        shape = load_bundle(base).manifest.input_shape
        cfg = ClientConfig(policy="edge_only")
        mon = VersionMonitor(cfg)
        lat: dict[float, list[float]] = {s: [] for s in shares}
        rng = np.random.default_rng(0)
        with Client(cand, config=cfg) as client:
            client.warm()
            mon.served(load_bundle(base).version, base)
            for _ in tqdm(range(args.blocks), desc="blocks", unit="block"):
                for s in shares:
                    mon.set_shadow(load_bundle(base).version if s else "", s)
                    for _ in range(args.block):
                        x = rng.normal(size=shape).astype(np.float32)
                        r = client.infer(x)
                        mon.observe(x, r)
                        lat[s].append(r.latency_ms)
            mon.set_shadow("", 0.0)
            shadows = mon.take()
        off = lat[0.0]
        out = {
            "bundle": args.bundle,
            "requests_per_setting": len(off),
            "shadow_compared": sum(t.shadow_compared for t in shadows),
            "shadow_dropped": sum(t.shadow_dropped for t in shadows),
            "settings": {
                f"{s:g}": {
                    "p50_ms": round(float(np.percentile(lat[s], 50)), 4),
                    "p95_ms": round(float(np.percentile(lat[s], 95)), 4),
                    "p50_ratio": round(
                        float(np.percentile(lat[s], 50) / np.percentile(off, 50)), 3
                    ),
                    "p95_ratio": round(
                        float(np.percentile(lat[s], 95) / np.percentile(off, 95)), 3
                    ),
                }
                for s in shares
            },
        }
        print(json.dumps(out, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
