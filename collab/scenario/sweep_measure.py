"""The sweep's spot checks: a few grid points measured for real, to show model vs measured.

One cloud node behind the link emulator (collab.scenario.env) for all points; per point a
constant link at the cell's uplink/RTT, a fresh client on a device of the cell's tier
(emulated by the runtime, not told to the engine), and closed-loop camera-image requests
per path: edge-only, cloud-only (JPEG within the accuracy budget), the model's best split
and auto. The first request of each path is a warm-up and is not counted.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from collab.bundle import load_bundle
from collab.decision import Profile
from collab.edge.client import Client
from collab.edge.tiers import Device, host_lite0_ms
from collab.emulator import LinkTrace
from collab.emulator.traces import DirectionTrace
from collab.net.estimator import NetState
from collab.scenario.env import scenario_env
from collab.scenario.schema import parse_scenario
from collab.scenario.sweep_model import SPOT_GAP_S, Cell, SweepConfig, predict_path

_PROBE_S = 0.02  # a bandwidth probe sized to ~20 ms at the cell's uplink


def _link(mbps: float, rtt_ms: float) -> LinkTrace:
    d = DirectionTrace.constant(bandwidth_bps=mbps * 1e6, delay_ms=rtt_ms / 2)
    return LinkTrace(uplink=d, downlink=d)


def _measure(client: Client, images: np.ndarray, policy: str | None, n: int) -> dict[str, Any]:
    lat: list[float] = []
    taken: Counter[str] = Counter()
    for i in range(n + 1):
        r = client.infer_image(images[i % len(images)], policy=policy)
        if i:
            lat.append(float(r.timings["total_ms"]))
            taken[r.path if r.split_point is None else f"split:{r.split_point}"] += 1
        time.sleep(SPOT_GAP_S)
    return {
        "measured_ms": float(np.mean(lat)),
        "measured_p50_ms": float(np.median(lat)),
        "taken": dict(taken),
    }


def _engine_view(explained: dict[str, Any]) -> dict[str, Any]:
    """What auto believed after its requests: link estimate and its top candidates."""
    net = explained["network"]
    return {
        "bandwidth_mbps": net["bandwidth_bps"] / 1e6,
        "rtt_ms": net["rtt_ms"],
        "chosen": explained["chosen"],
        "candidates": {
            c["key"]: round(c["total_ms"], 1) for c in explained["candidates"][:4] if c["feasible"]
        },
    }


def measure_spots(
    bundle_dir: Path,
    profile: Profile,
    cells: Sequence[Cell],
    cfg: SweepConfig,
    scales: dict[str, float],
    logs: Path,
    *,
    progress: bool = True,
) -> list[dict[str, Any]]:
    from tqdm import tqdm

    from collab.models.registry import example_images

    logs.mkdir(parents=True, exist_ok=True)
    host_ms = host_lite0_ms(load_bundle(bundle_dir).manifest)
    images = example_images("efficientnet", cfg.spot_requests + 1)
    sc = parse_scenario(
        f"model: {{bundle: '{bundle_dir.resolve()}', calibrate: false}}\n"
        "network: {segments: [{duration_s: 3600, up_mbps: 1, down_mbps: 1}]}\n",
        source="<sweep>",
    )
    out: list[dict[str, Any]] = []
    with (
        scenario_env(sc, bundle_dir, logs) as (_, emu),
        tqdm(total=len(cells), desc="sweep (measured)", unit="point", disable=not progress) as bar,
    ):
        for k, cell in enumerate(cells):
            emu.set_link(_link(cell.mbps, cell.rtt_ms))
            policies = ["edge_only", "cloud_only", *([cell.best_split] if cell.best_split else [])]
            device = Device.for_host(cell.tier, host_ms, seed=1000 + k)
            net = NetState(bandwidth_bps=cell.mbps * 1e6, rtt_ms=cell.rtt_ms)
            probe = max(1024, int(cell.mbps * 1e6 / 8 * _PROBE_S))
            with Client(
                bundle_dir,
                cloud=(emu.address,),
                device=device,
                warm=False,
                accuracy_budget=cfg.accuracy_budget,
                max_probe_bytes=probe,
            ) as client:
                client.warm()
                if client.monitor is not None:
                    for _ in range(3):
                        client.monitor.refresh(force=True)
                paths: dict[str, dict[str, Any]] = {}
                for p in policies:
                    model = predict_path(
                        profile, p.split("@")[0], net, scales[cell.tier], cfg.accuracy_budget
                    )
                    paths[p] = {
                        "model_ms": model.chosen.total_ms,
                        **_measure(client, images, p.split("@")[0], cfg.spot_requests),
                    }
                paths["auto"] = {
                    "model_ms": cell.winner_ms,
                    "model_path": cell.winner,
                    **_measure(client, images, None, cfg.spot_requests),
                    "engine": _engine_view(client.explain(image=True)),
                }
            out.append(
                {"tier": cell.tier, "mbps": cell.mbps, "rtt_ms": cell.rtt_ms, "paths": paths}
            )
            bar.update(1)
    return out
