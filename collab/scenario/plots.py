"""PNG plots of a scenario run (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from collab.scenario.oracle import MeasuredOracle, OracleResult, outage_intervals
from collab.scenario.requests import Record
from collab.scenario.schema import Scenario

COLORS = plt.get_cmap("tab10").colors  # type: ignore[attr-defined]


def latency_cdf(
    records: Sequence[Record],
    oracle: OracleResult,
    best: MeasuredOracle,
    policies: Sequence[str],
    out: Path,
) -> None:
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for i, p in enumerate(policies):
        lat = np.sort([r.latency_ms for r in records if r.policy == p and not r.lost])
        if lat.size:
            ax.step(
                lat,
                np.arange(1, lat.size + 1) / lat.size,
                where="post",
                color=COLORS[i % 10],
                lw=2.2 if p == "auto" else 1.4,
                label=f"{p} (mean {lat.mean():.0f} ms)",
            )
    for name, values, ls in (
        ("model oracle", oracle.latency_ms, "--"),
        ("measured oracle", list(best.latency_ms.values()), ":"),
    ):
        o = np.sort(values)
        if o.size:
            ax.step(
                o,
                np.arange(1, o.size + 1) / o.size,
                where="post",
                color="black",
                ls=ls,
                lw=1.4,
                label=f"{name} (mean {o.mean():.0f} ms)",
            )
    ax.set_xscale("log")
    ax.set_xlabel("request latency (ms, log scale)")
    ax.set_ylabel("fraction of requests")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Latency CDF per policy")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def timeline(
    sc: Scenario,
    records: Sequence[Record],
    oracle: OracleResult,
    report: Mapping[str, Any],
    out: Path,
) -> None:
    dur = sc.duration_s + 1.0
    ts = np.arange(0.0, dur, 0.1)
    cu, cd = sc.link.uplink.capacity(), sc.link.downlink.capacity()
    up = (
        np.array([0.0 if sc.link.outage_at(t) else min(cu.rate_bps(t, 0.2), 1e9) for t in ts]) / 1e6
    )
    down = (
        np.array([0.0 if sc.link.outage_at(t) else min(cd.rate_bps(t, 0.2), 1e9) for t in ts]) / 1e6
    )
    rtt = np.array([sc.link.rtt_ms(t) for t in ts])
    auto = [r for r in records if r.policy == "auto"]
    fig, (ax1, ax2, ax3) = plt.subplots(
        3, 1, figsize=(9, 7.5), sharex=True, gridspec_kw={"height_ratios": [1.2, 1, 1.2]}
    )
    ax1.plot(ts, up, color=COLORS[0], label="uplink capacity")
    if np.isfinite(down).all() and down.max() < 1e3:
        ax1.plot(ts, down, color=COLORS[0], ls=":", label="downlink capacity")
    ax1.set_ylabel("Mbit/s")
    ax1.set_yscale("symlog", linthresh=0.1)
    ax1b = ax1.twinx()
    ax1b.plot(ts, rtt, color=COLORS[3], lw=1, label="RTT")
    ax1b.set_ylabel("RTT (ms)", color=COLORS[3])
    dead, cut = outage_intervals(sc, report.get("events", {}))
    for s, e in dead:
        for ax in (ax1, ax2, ax3):
            ax.axvspan(s, min(e, dur), color="red", alpha=0.12, lw=0)
    for s, e in cut:
        for ax in (ax1, ax2, ax3):
            ax.axvspan(s, min(e, dur), color="gray", alpha=0.25, lw=0)
    outs = [t for t in ts if sc.link.outage_at(t)]
    if outs:
        for ax in (ax1, ax2, ax3):
            ax.fill_between(
                ts,
                0,
                1,
                where=[sc.link.outage_at(t) for t in ts],
                color="gray",
                alpha=0.25,
                transform=ax.get_xaxis_transform(),
                lw=0,
            )
    h1, l1 = ax1.get_legend_handles_labels()
    h2, l2 = ax1b.get_legend_handles_labels()
    ax1.legend(h1 + h2, l1 + l2, fontsize=8, loc="upper right")
    ax1.set_title(
        f"{sc.name}: link over time and the path auto chose"
        + (" (red: cloud node dead, gray: link cut)" if dead or cut or outs else "")
    )
    names = sorted(
        {r.path_key for r in auto if not r.lost} | set(oracle.path),
        key=lambda k: (k != "edge_only", k != "cloud_only", k),
    )
    ypos = {k: i for i, k in enumerate(names)}
    plan_t = [r.at_s for r in auto]
    ax2.scatter(
        [r.at_s for r in auto if not r.lost],
        [ypos[r.path_key] for r in auto if not r.lost],
        c=[("tab:orange" if r.fell_back else "tab:blue") for r in auto if not r.lost],
        s=22,
        label="auto's path (orange: fell back)",
        zorder=3,
    )
    o_t = sorted({r.at_s for r in records})
    if len(o_t) == len(oracle.path):
        ax2.scatter(
            o_t,
            [ypos[p] + 0.18 for p in oracle.path],
            marker="v",
            s=14,
            color="black",
            alpha=0.6,
            label="model oracle's best path",
        )
    ax2.set_yticks(range(len(names)), names, fontsize=8)
    ax2.set_ylim(-0.6, len(names) - 0.4)
    ax2.legend(fontsize=8, loc="upper right")
    ax2.grid(alpha=0.3)
    ax3.plot(
        plan_t,
        [r.latency_ms for r in auto],
        "o-",
        ms=3,
        lw=0.8,
        color=COLORS[1],
        label="auto latency",
    )
    if len(o_t) == len(oracle.latency_ms):
        ax3.plot(o_t, oracle.latency_ms, "k--", lw=0.9, label="model oracle latency")
    if sc.workload.deadline_ms:
        ax3.axhline(sc.workload.deadline_ms, color="red", lw=0.8, ls=":", label="deadline")
    ax3.set_yscale("log")
    ax3.set_ylabel("latency (ms)")
    ax3.set_xlabel("scenario time (s)")
    ax3.legend(fontsize=8, loc="upper right")
    ax3.grid(alpha=0.3, which="both")
    ax3.set_xlim(0, dur)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def bytes_per_request(records: Sequence[Record], policies: Sequence[str], out: Path) -> None:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [2.2, 1]})
    means = []
    for i, p in enumerate(policies):
        rs = [r for r in records if r.policy == p]
        ax1.scatter(
            [r.at_s for r in rs],
            [r.bytes_sent for r in rs],
            s=10,
            color=COLORS[i % 10],
            label=p,
            alpha=0.8,
        )
        means.append(float(np.mean([r.bytes_sent for r in rs])) if rs else math.nan)
    ax1.set_yscale("symlog", linthresh=100)
    ax1.set_xlabel("scenario time (s)")
    ax1.set_ylabel("bytes sent to the cloud per request")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    ax1.set_title("Bytes per request over time")
    bars = ax2.bar(
        range(len(policies)),
        [m / 1024 for m in means],
        color=[COLORS[i % 10] for i in range(len(policies))],
    )
    ax2.bar_label(bars, fmt="%.1f", fontsize=8)
    ax2.set_xticks(range(len(policies)), policies, rotation=30, ha="right", fontsize=8)
    ax2.set_ylabel("mean KB per request")
    ax2.set_title("Mean upload per request")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def write_plots(
    sc: Scenario,
    records: Sequence[Record],
    oracle: OracleResult,
    best: MeasuredOracle,
    report: Mapping[str, Any],
    out: Path,
) -> list[Path]:
    pols = list(report["policies"])
    files = [out / "latency_cdf.png", out / "timeline.png", out / "bytes.png"]
    latency_cdf(records, oracle, best, pols, files[0])
    timeline(sc, records, oracle, report, files[1])
    bytes_per_request(records, pols, files[2])
    return files
