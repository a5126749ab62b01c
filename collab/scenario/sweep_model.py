"""The sweep's model: which path the decision engine predicts wins, cell by cell.

Over a grid of uplink bandwidth (log scale) x RTT (log scale) x device tier, the decision
engine's own prediction (:func:`collab.decision.decide` on the bundle's profile and codec
calibration, the image profile: the cloud-only path sends a JPEG) names the winning path
and its speedup over cloud-only and over edge-only. The device's edge compute is its
tier's long-run mean speed x the profiled head (or full model) time; the cloud is this
machine. A few grid points are then measured (real client, cloud node and link emulator,
the tier emulated by the runtime) so the table shows model vs measured.

This module is the grid, the prediction and the tables; :mod:`collab.scenario.sweep`
runs it, measures spot checks (:mod:`collab.scenario.sweep_measure`) and plots
(:mod:`collab.scenario.sweep_plots`).
"""

from __future__ import annotations

import csv
import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from collab.decision import (
    NO_HYSTERESIS,
    CloudState,
    Decision,
    EdgeState,
    Policy,
    Profile,
    decide,
)
from collab.edge.tiers import TIERS, Device, tier
from collab.errors import ConfigError
from collab.net.estimator import NetState
from collab.settings import check_bounds, comma_list, setting

#: fixed start-up cost of the measured spot checks (cloud node, emulator) and per point
#: (a client, its sessions warmed); conservative on a loaded 2-core machine
_SETUP_S, _POINT_S = 20.0, 8.0
SPOT_GAP_S = 0.05  # between two measured requests (closed loop)


@dataclass(frozen=True, kw_only=True)
class SweepConfig:
    min_mbps: float = setting(0.1, help="lowest uplink bandwidth (Mbit/s)", lo=0, lo_open=True)
    max_mbps: float = setting(100.0, help="highest uplink bandwidth (Mbit/s)", lo=0, lo_open=True)
    bandwidth_points: int = setting(36, help="bandwidths on the log axis", lo=2)
    min_rtt_ms: float = setting(2.0, help="lowest RTT (ms)", lo=0, lo_open=True)
    max_rtt_ms: float = setting(300.0, help="highest RTT (ms)", lo=0, lo_open=True)
    rtt_points: int = setting(24, help="RTTs on the log axis", lo=2)
    tiers: tuple[str, ...] = setting(
        tuple(TIERS), help="device tiers, one phase diagram each", metavar="TIER[,TIER]"
    )
    accuracy_budget: float = setting(
        0.01, help="max top-1 agreement loss of lossy codecs and edge variants", lo=0, hi=1
    )
    spot_checks: int = setting(3, help="grid points measured for real (0: model only)", lo=0)
    spots: tuple[str, ...] = setting(
        (), help="measure these points instead of choosing", metavar="TIER:MBPS:RTT[,...]"
    )
    spot_requests: int = setting(8, help="measured requests per path and spot point", lo=1)
    budget_s: float = setting(
        900.0, help="refuse a sweep estimated to take longer (s)", lo=0, lo_open=True
    )

    def __post_init__(self) -> None:
        for name in ("tiers", "spots"):
            if isinstance(getattr(self, name), str):
                object.__setattr__(self, name, comma_list(getattr(self, name)))
        check_bounds(self)
        for t in self.tiers:
            tier(t)  # ConfigError listing the known tiers
        if self.min_mbps >= self.max_mbps or self.min_rtt_ms >= self.max_rtt_ms:
            raise ConfigError("sweep: each axis needs min < max")

    def bandwidths_mbps(self) -> np.ndarray:
        return np.geomspace(self.min_mbps, self.max_mbps, self.bandwidth_points)

    def rtts_ms(self) -> np.ndarray:
        return np.geomspace(self.min_rtt_ms, self.max_rtt_ms, self.rtt_points)

    @property
    def cells(self) -> int:
        return self.bandwidth_points * self.rtt_points * len(self.tiers)

    @property
    def measured_points(self) -> int:
        return len(self.spots) if self.spots else self.spot_checks


@dataclass(frozen=True, kw_only=True)
class Cell:
    """The model's verdict at one grid point."""

    tier: str
    mbps: float
    rtt_ms: float
    winner: str  # path key of the fastest feasible path (an edge variant after "@")
    winner_ms: float
    cloud_only_ms: float
    edge_only_ms: float
    best_split: str  # the fastest split path, win or not
    best_split_ms: float

    @property
    def over_cloud(self) -> float:
        return self.cloud_only_ms / self.winner_ms

    @property
    def over_edge(self) -> float:
        return self.edge_only_ms / self.winner_ms

    @property
    def split_gain(self) -> float:
        """The best split's speedup over the better of edge-only and cloud-only (> 1:
        a split point wins here)."""
        return min(self.cloud_only_ms, self.edge_only_ms) / self.best_split_ms


def predict_path(
    profile: Profile, policy: str, net: NetState, scale: float, budget: float
) -> Decision:
    mode, _, split = policy.partition(":")
    return decide(
        profile,
        policy=Policy(mode=mode, split_point=split or None),  # type: ignore[arg-type]
        net=net,
        cloud=CloudState(),
        edge=EdgeState(compute_scale=scale),
        accuracy_budget=budget,
        hysteresis=NO_HYSTERESIS,
    )


def model_cell(
    profile: Profile, tier_name: str, scale: float, mbps: float, rtt_ms: float, budget: float
) -> Cell:
    """The engine's prediction at one point: edge compute at ``scale`` x the profile."""
    net = NetState(bandwidth_bps=mbps * 1e6, rtt_ms=rtt_ms)
    auto = predict_path(profile, "auto", net, scale, budget)
    ok = [c for c in auto.candidates if c.feasible]
    splits = [c for c in ok if c.path == "split"]
    best_split = min(splits, key=lambda c: c.total_ms) if splits else None
    return Cell(
        tier=tier_name,
        mbps=float(mbps),
        rtt_ms=float(rtt_ms),
        winner=auto.chosen.key,
        winner_ms=auto.chosen.total_ms,
        cloud_only_ms=predict_path(profile, "cloud_only", net, scale, budget).chosen.total_ms,
        edge_only_ms=predict_path(profile, "edge_only", net, scale, budget).chosen.total_ms,
        best_split=best_split.key if best_split else "",
        best_split_ms=best_split.total_ms if best_split else math.inf,
    )


def tier_scales(cfg: SweepConfig, host_ms: float) -> dict[str, float]:
    """Each tier's long-run mean compute factor on this machine (what the engine learns)."""
    return {t: Device.for_host(t, host_ms).mean_factor() for t in cfg.tiers}


def estimate_grid_s(cfg: SweepConfig, profile: Profile, scales: dict[str, float]) -> float:
    """Time the model grid will take, from two timed cells."""
    name, scale = next(iter(scales.items()))
    t0 = time.perf_counter()
    for mbps, rtt in ((cfg.min_mbps, cfg.max_rtt_ms), (cfg.max_mbps, cfg.min_rtt_ms)):
        model_cell(profile, name, scale, mbps, rtt, cfg.accuracy_budget)
    return cfg.cells * (time.perf_counter() - t0) / 2


def estimate_spots_s(cfg: SweepConfig, spots: Sequence[Cell]) -> float:
    """Time the measured spot checks will take: start-up, and per point a client plus
    every measured request at its predicted latency (the slowest path's, for all four)."""
    if not spots:
        return 0.0
    per_request = [
        max(c.cloud_only_ms, c.edge_only_ms, c.best_split_ms if c.best_split else 0.0) / 1000.0
        for c in spots
    ]
    n = 4 * (cfg.spot_requests + 1)
    return _SETUP_S + sum(_POINT_S + n * (r + SPOT_GAP_S) for r in per_request)


def check_budget(cfg: SweepConfig, estimate_s: float, what: str) -> float:
    """ConfigError with the estimate if ``estimate_s`` is over the budget."""
    if estimate_s > cfg.budget_s:
        raise ConfigError(
            f"sweep refused: {what} estimated at {estimate_s:.0f} s > budget "
            f"{cfg.budget_s:.0f} s ({cfg.cells} model cells, {cfg.measured_points} measured "
            "points); shrink the grid or raise --budget-s"
        )
    return estimate_s


def model_grid(
    cfg: SweepConfig, profile: Profile, scales: dict[str, float], *, progress: bool = True
) -> list[Cell]:
    from tqdm import tqdm

    out: list[Cell] = []
    with tqdm(total=cfg.cells, desc="sweep (model)", unit="cell", disable=not progress) as bar:
        for t in cfg.tiers:
            for rtt in cfg.rtts_ms():
                for mbps in cfg.bandwidths_mbps():
                    out.append(model_cell(profile, t, scales[t], mbps, rtt, cfg.accuracy_budget))
                    bar.update(1)
    return out


def path_kind(key: str) -> str:
    """A candidate's path without its edge variant (``split:x@int8`` -> ``split:x``); an
    early exit stays (``edge_only@exit:y``): where an exit wins is part of the picture."""
    base, _, rest = key.partition("@")
    return f"{base}@{rest}" if rest.startswith("exit:") else base


def pick_spots(cells: Sequence[Cell], n: int) -> list[Cell]:
    """Grid points worth measuring: one per region where a path wins (a tier's cells with
    the same winner), split regions first and larger regions first; in each, the cell
    nearest the region's centre on the log axes (a typical point, not a corner)."""
    regions: dict[tuple[str, str], list[Cell]] = {}
    for c in cells:
        regions.setdefault((c.tier, path_kind(c.winner)), []).append(c)

    def centre(group: list[Cell]) -> Cell:
        lb = np.log([c.mbps for c in group])
        lr = np.log([c.rtt_ms for c in group])
        d = (lb - lb.mean()) ** 2 + (lr - lr.mean()) ** 2
        return group[int(np.argmin(d))]

    order = sorted(regions.items(), key=lambda kv: (not kv[0][1].startswith("split:"), -len(kv[1])))
    picks: list[Cell] = []
    kinds: set[str] = set()
    for (_, kind), group in order:  # each winning path once before any twice
        if kind not in kinds:
            picks.append(centre(group))
            kinds.add(kind)
    picks += [centre(g) for _, g in order if centre(g) not in picks]
    return picks[: max(n, 0)]


def nearest_cells(cells: Sequence[Cell], spots: Sequence[str]) -> list[Cell]:
    """The grid cells nearest (log axes) to ``TIER:MBPS:RTT_MS`` points."""
    out = []
    for text in spots:
        try:
            name, mbps, rtt = text.split(":")
            b, r = math.log(float(mbps)), math.log(float(rtt))
        except ValueError:
            raise ConfigError(f"spot {text!r}: expected TIER:MBPS:RTT_MS, e.g. rpi4:5:40") from None
        group = [c for c in cells if c.tier == name]
        if not group:
            raise ConfigError(f"spot {text!r}: tier {name!r} is not in the sweep's tiers")
        out.append(
            min(group, key=lambda c: (math.log(c.mbps) - b) ** 2 + (math.log(c.rtt_ms) - r) ** 2)
        )
    return out


def write_table(cells: Sequence[Cell], out: Path) -> Path:
    path = out / "sweep.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "tier",
                "uplink_mbps",
                "rtt_ms",
                "winner",
                "winner_ms",
                "cloud_only_ms",
                "edge_only_ms",
                "speedup_over_cloud_only",
                "speedup_over_edge_only",
                "best_split",
                "best_split_ms",
            ]
        )
        for c in cells:
            w.writerow(
                [
                    c.tier,
                    f"{c.mbps:.4g}",
                    f"{c.rtt_ms:.4g}",
                    c.winner,
                    f"{c.winner_ms:.2f}",
                    f"{c.cloud_only_ms:.2f}",
                    f"{c.edge_only_ms:.2f}",
                    f"{c.over_cloud:.3f}",
                    f"{c.over_edge:.3f}",
                    c.best_split,
                    f"{c.best_split_ms:.2f}",
                ]
            )
    return path


def split_region(cells: Sequence[Cell]) -> dict[str, Any] | None:
    """Where a split point wins for one tier: the axes' ranges and the best gain."""
    wins = [c for c in cells if c.winner.split("@")[0].startswith("split:")]
    if not wins:
        return None
    best = max(wins, key=lambda c: c.split_gain)
    return {
        "cells": len(wins),
        "of": len(cells),
        "mbps": [min(c.mbps for c in wins), max(c.mbps for c in wins)],
        "rtt_ms": [min(c.rtt_ms for c in wins), max(c.rtt_ms for c in wins)],
        "splits": sorted({c.winner for c in wins}),
        "best": dataclasses.asdict(best) | {"gain": best.split_gain},
    }


def summary_md(
    cfg: SweepConfig,
    cells: Sequence[Cell],
    scales: dict[str, float],
    host_ms: float,
    spots: Sequence[dict[str, Any]],
) -> str:
    lines = [
        "# Sweep: which path wins",
        "",
        f"Uplink {cfg.min_mbps:g}-{cfg.max_mbps:g} Mbit/s x RTT {cfg.min_rtt_ms:g}-"
        f"{cfg.max_rtt_ms:g} ms (log grids, {cfg.bandwidth_points} x {cfg.rtt_points}), "
        f"accuracy budget {cfg.accuracy_budget:g}; this machine's EfficientNet-Lite0: "
        f"{host_ms:.1f} ms. Model: the decision engine's prediction. Every cell: sweep.csv.",
        "",
        "| tier | mean edge factor | split wins (cells) | uplink Mbit/s | RTT ms | best split "
        "| its gain over best of edge/cloud |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in cfg.tiers:
        r = split_region([c for c in cells if c.tier == t])
        if r is None:
            lines.append(f"| {t} | {scales[t]:.2f} | 0 | - | - | - | - |")
            continue
        b = r["best"]
        lines.append(
            f"| {t} | {scales[t]:.2f} | {r['cells']}/{r['of']} | {r['mbps'][0]:.2g}-"
            f"{r['mbps'][1]:.2g} | {r['rtt_ms'][0]:.3g}-{r['rtt_ms'][1]:.3g} | {b['winner']} "
            f"at {b['mbps']:.2g} Mbit/s, {b['rtt_ms']:.3g} ms | {b['gain']:.2f}x |"
        )
    if spots:
        lines += [
            "",
            "## Spot checks: model vs measured (mean ms)",
            "",
            "| tier | uplink Mbit/s | RTT ms | path | model ms | measured ms | measured/model "
            "| paths taken |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for s in spots:
            for path, r in s["paths"].items():
                taken = ", ".join(f"{k} {v}" for k, v in r["taken"].items())
                if path == "auto":
                    path = f"auto (model: {r['model_path']})"
                lines.append(
                    f"| {s['tier']} | {s['mbps']:.3g} | {s['rtt_ms']:.3g} | {path} | "
                    f"{r['model_ms']:.1f} | {r['measured_ms']:.1f} | "
                    f"{r['measured_ms'] / r['model_ms']:.2f} | {taken} |"
                )
    return "\n".join(lines) + "\n"
