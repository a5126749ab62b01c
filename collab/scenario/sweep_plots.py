"""The sweep's phase diagram of one tier (PNG, matplotlib Agg): which path wins where,
and by how much a split beats the better of edge-only and cloud-only."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap, LogNorm

from collab.scenario.sweep_model import Cell, SweepConfig, path_kind


def phase_diagram(
    cells: Sequence[Cell],
    cfg: SweepConfig,
    tier_name: str,
    scale: float,
    spots: Sequence[dict[str, Any]],
    out: Path,
) -> Path:
    bws, rtts = cfg.bandwidths_mbps(), cfg.rtts_ms()
    winners = [path_kind(c.winner) for c in cells]
    # edge-only and cloud-only first, then the split points in the order of the grid
    won = sorted(set(winners), key=winners.index)
    splits_won = [w for w in won if w.startswith("split:") and "@exit:" not in w]
    exits_won = [w for w in won if "@exit:" in w]  # paths that answer some requests early
    labels = ["edge_only", "cloud_only", *splits_won, *exits_won]
    index = {w: i for i, w in enumerate(labels)}
    grid = np.array([index[w] for w in winners], dtype=float).reshape(len(rtts), len(bws))
    gain = np.array([c.split_gain for c in cells]).reshape(len(rtts), len(bws))
    base = ["#4c72b0", "#dd8452"]
    splits = plt.get_cmap("Greens")(np.linspace(0.45, 0.95, max(len(splits_won), 1)))
    exits = plt.get_cmap("Purples")(np.linspace(0.45, 0.95, max(len(exits_won), 1)))
    colours = [*base, *[tuple(c) for c in splits][: len(splits_won)], *[tuple(c) for c in exits]]
    cmap = ListedColormap(colours[: len(labels)])

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 5.2))
    ax.pcolormesh(bws, rtts, grid, cmap=cmap, vmin=-0.5, vmax=len(labels) - 0.5, shading="nearest")
    handles = [
        plt.Rectangle((0, 0), 1, 1, color=cmap(i), label=lab) for i, lab in enumerate(labels)
    ]
    ax.legend(handles=handles, loc="upper left", fontsize=8, framealpha=0.9)
    ax.set_title(f"{tier_name} (edge x{scale:.1f} this machine): winning path (model)")

    im = bx.pcolormesh(
        bws,
        rtts,
        gain,
        cmap="RdYlGn",
        norm=LogNorm(vmin=0.5, vmax=2.0),
        shading="nearest",
    )
    bx.contour(bws, rtts, gain, levels=[1.0], colors="k", linewidths=1.2)
    fig.colorbar(im, ax=bx, label="best split's speedup over min(edge-only, cloud-only)")
    bx.set_title("split gain (black line: split = best of edge/cloud)")
    for s in spots:
        for a in (ax, bx):
            a.plot(s["mbps"], s["rtt_ms"], marker="*", ms=14, mec="k", mfc="yellow")
        auto = s["paths"].get("auto", {})
        taken = auto.get("taken", {})
        top = max(taken, key=taken.get) if taken else "?"
        ax.annotate(
            f"measured auto took {top} ({taken.get(top, 0)}/{sum(taken.values())}): "
            f"{auto.get('measured_ms', float('nan')):.0f} ms\nmodel: {auto.get('model_path', '?')} "
            f"{auto.get('model_ms', float('nan')):.0f} ms",
            (s["mbps"], s["rtt_ms"]),
            textcoords="offset points",
            xytext=(8, 6) if s["mbps"] < np.sqrt(bws[0] * bws[-1]) else (-8, 6),
            ha="left" if s["mbps"] < np.sqrt(bws[0] * bws[-1]) else "right",
            fontsize=7,
            bbox={"boxstyle": "round", "fc": "white", "alpha": 0.8},
        )
    for a in (ax, bx):
        a.set_xscale("log")
        a.set_yscale("log")
        a.set_xlabel("uplink bandwidth (Mbit/s)")
        a.set_ylabel("RTT (ms)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
