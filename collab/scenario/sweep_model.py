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
    spot_requests: int = setting(8, help="measured requests per path and spot point", lo=1)
    budget_s: float = setting(
        900.0, help="refuse a sweep estimated to take longer (s)", lo=0, lo_open=True
    )

    def __post_init__(self) -> None:
        if isinstance(self.tiers, str):
            object.__setattr__(self, "tiers", comma_list(self.tiers))
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


def estimate_s(cfg: SweepConfig, profile: Profile, scales: dict[str, float]) -> float:
    """Time the model grid and the measured spot checks will take, from a timed sample
    of model cells and the predicted latency of the measured requests."""
    name, scale = next(iter(scales.items()))
    t0 = time.perf_counter()
    samples = [
        model_cell(profile, name, scale, mbps, rtt, cfg.accuracy_budget)
        for mbps, rtt in ((cfg.min_mbps, cfg.max_rtt_ms), (cfg.max_mbps, cfg.min_rtt_ms))
    ]
    per_cell = (time.perf_counter() - t0) / len(samples)
    spots = 0.0
    if cfg.spot_checks:
        slowest = max(max(c.cloud_only_ms, c.edge_only_ms) for c in samples) / 1000.0
        per_point = _POINT_S + 4 * (cfg.spot_requests + 2) * (slowest + SPOT_GAP_S)
        spots = _SETUP_S + cfg.spot_checks * per_point
    return cfg.cells * per_cell + spots


def check_budget(cfg: SweepConfig, profile: Profile, scales: dict[str, float]) -> float:
    """The estimated time of the sweep; ConfigError with the estimate if over budget."""
    est = estimate_s(cfg, profile, scales)
    if est > cfg.budget_s:
        raise ConfigError(
            f"sweep refused: estimated {est:.0f} s > budget {cfg.budget_s:.0f} s "
            f"({cfg.cells} model cells, {cfg.spot_checks} measured points); shrink the grid "
            "or raise --budget-s"
        )
    return est


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


def pick_spots(cells: Sequence[Cell], n: int) -> list[Cell]:
    """Grid points worth measuring: the strongest split win, then the clearest edge-only
    and cloud-only wins (each path kind once), then more split wins."""
    if n <= 0:
        return []
    by_gain = sorted(cells, key=lambda c: -c.split_gain)
    picks = [by_gain[0]] if by_gain[0].split_gain > 1.0 else []
    for kind, gain in (("edge_only", "over_cloud"), ("cloud_only", "over_edge")):
        wins = [c for c in cells if c.winner.split("@")[0] == kind]
        if wins:
            picks.append(max(wins, key=lambda c: getattr(c, gain)))
    picks += [c for c in by_gain if c.split_gain > 1.0 and c not in picks]
    return picks[:n]


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
            "| tier | uplink Mbit/s | RTT ms | path | model ms | measured ms | measured/model |",
            "|---|---|---|---|---|---|---|",
        ]
        for s in spots:
            for path, r in s["paths"].items():
                lines.append(
                    f"| {s['tier']} | {s['mbps']:.3g} | {s['rtt_ms']:.3g} | {path} | "
                    f"{r['model_ms']:.1f} | {r['measured_ms']:.1f} | "
                    f"{r['measured_ms'] / r['model_ms']:.2f} |"
                )
    return "\n".join(lines) + "\n"
