"""``collab scenario sweep``: where each path wins (the Neurosurgeon picture).

Over a grid of uplink bandwidth (log) x RTT (log) x device tier, the decision engine's own
prediction names the winning path and its speedup over cloud-only and edge-only
(:mod:`collab.scenario.sweep_model`); a few grid points are measured for real
(:mod:`collab.scenario.sweep_measure`), and each tier gets a phase diagram
(:mod:`collab.scenario.sweep_plots`). A grid whose estimated time exceeds the budget is
refused with the estimate, before anything runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from collab.bundle import load_bundle
from collab.edge.profile import profile_from_bundle
from collab.edge.tiers import host_lite0_ms
from collab.errors import ConfigError
from collab.scenario.sweep_measure import measure_spots
from collab.scenario.sweep_model import (
    SweepConfig,
    check_budget,
    estimate_grid_s,
    estimate_spots_s,
    model_grid,
    nearest_cells,
    pick_spots,
    split_region,
    summary_md,
    tier_scales,
    write_table,
)
from collab.scenario.sweep_plots import phase_diagram


def calibrated_example(n: int = 48) -> Path:
    """The EfficientNet-Lite0 example bundle with a codec table measured on ``n`` of its
    natural test images (feature codecs and the JPEG cloud-only path), built once and
    cached beside the scenario bundles."""
    import shutil
    import time

    from collab.codec.calibrate import calibrate_bundle
    from collab.codec.image import preprocess
    from collab.models.registry import example_images
    from collab.split.examples import cache_root, example_bundle

    src = example_bundle("efficientnet")
    final = (
        cache_root().parent
        / "scenario-bundles"
        / f"efficientnet-sweep-{load_bundle(src).version[:16]}-{n}"
    )
    if (final / "manifest.json").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.{time.time_ns()}"
    shutil.copytree(src, tmp)
    images = example_images("efficientnet", n)
    pre = load_bundle(tmp).manifest.preprocessing
    assert pre is not None  # the example records its preprocessing
    calibrate_bundle(tmp, preprocess(images, pre), None, images=images, progress=True)
    try:
        tmp.rename(final)
    except OSError:  # a concurrent sweep won the race
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def run_sweep(
    bundle_dir: Path, out: Path, cfg: SweepConfig, *, progress: bool = True
) -> dict[str, Any]:
    """The whole sweep: refused if estimated over budget; writes sweep.csv, sweep.md,
    sweep.json and one phase_<tier>.png per tier into ``out``."""
    bundle = load_bundle(bundle_dir)
    if bundle.calibration() is None:
        raise ConfigError(
            f"bundle {bundle_dir} has no codec calibration: run `collab calibrate {bundle_dir}`"
            " (natural images also calibrate the JPEG cloud-only path)"
        )
    host_ms = host_lite0_ms(bundle.manifest)
    profile = profile_from_bundle(bundle, images=True)
    scales = tier_scales(cfg, host_ms)
    grid_s = check_budget(cfg, estimate_grid_s(cfg, profile, scales), "the model grid")
    out.mkdir(parents=True, exist_ok=True)
    cells = model_grid(cfg, profile, scales, progress=progress)
    chosen = nearest_cells(cells, cfg.spots) if cfg.spots else pick_spots(cells, cfg.spot_checks)
    spots_s = check_budget(cfg, grid_s + estimate_spots_s(cfg, chosen), "the sweep")
    spots: list[dict[str, Any]] = []
    if chosen:
        spots = measure_spots(
            bundle_dir, profile, chosen, cfg, scales, out / "logs", progress=progress
        )
    write_table(cells, out)
    pngs = [
        phase_diagram(
            [c for c in cells if c.tier == t],
            cfg,
            t,
            scales[t],
            [s for s in spots if s["tier"] == t],
            out / f"phase_{t}.png",
        )
        for t in cfg.tiers
    ]
    (out / "sweep.md").write_text(summary_md(cfg, cells, scales, host_ms, spots))
    result = {
        "bundle": str(bundle_dir),
        "host_lite0_ms": host_ms,
        "estimated_s": spots_s,
        "scales": scales,
        "split_regions": {t: split_region([c for c in cells if c.tier == t]) for t in cfg.tiers},
        "spots": spots,
        "pngs": [str(p) for p in pngs],
    }
    (out / "sweep.json").write_text(json.dumps(result, indent=1) + "\n")
    return result
