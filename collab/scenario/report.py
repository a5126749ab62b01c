"""report.json and report.md: per-policy statistics against the oracle."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from collab.scenario.oracle import OracleResult
from collab.scenario.requests import Record
from collab.scenario.schema import Scenario

AUTO_VS_ORACLE = 1.10
AUTO_VS_BEST_STATIC = 1.05


def _pct(xs: np.ndarray, q: float) -> float:
    return float(np.percentile(xs, q)) if xs.size else math.nan


def policy_stats(recs: Sequence[Record], oracle_mean: float) -> dict[str, Any]:
    ok = [r for r in recs if not r.lost]
    lat = np.array([r.latency_ms for r in ok], dtype=np.float64)
    paths = Counter(r.path_key for r in ok)
    mean = float(lat.mean()) if lat.size else math.nan
    return {
        "count": len(recs),
        "mean_ms": mean,
        "p50_ms": _pct(lat, 50),
        "p95_ms": _pct(lat, 95),
        "p99_ms": _pct(lat, 99),
        "deadline_misses": sum(1 for r in recs if not r.deadline_met),
        "lost": sum(1 for r in recs if r.lost),
        "bytes_total": int(sum(r.bytes_sent for r in recs)),
        "bytes_mean": float(np.mean([r.bytes_sent for r in recs])) if recs else 0.0,
        "agreement": float(np.mean([r.agree for r in ok])) if ok else math.nan,
        "path_mix": dict(sorted(paths.items())),
        "fallbacks": sum(1 for r in recs if r.fell_back),
        "ratio_to_oracle": mean / oracle_mean if oracle_mean > 0 else math.nan,
        "errors": sorted({r.error for r in recs if r.lost})[:5],
    }


def build_report(
    sc: Scenario,
    records: Sequence[Record],
    oracle: OracleResult,
    prof: Mapping[str, Mapping[str, float]],
    events_log: Mapping[str, Any],
    policies: Sequence[str],
    *,
    wall_s: float,
    bundle: Path,
) -> dict[str, Any]:
    per = {p: policy_stats([r for r in records if r.policy == p], oracle.mean_ms) for p in policies}
    static = {p: s for p, s in per.items() if p != "auto" and s["lost"] == 0}
    best_static = min(static, key=lambda p: static[p]["mean_ms"]) if static else None
    report: dict[str, Any] = {
        "scenario": sc.name,
        "description": sc.description,
        "seed": sc.seed,
        "model": sc.model.example or str(sc.model.bundle),
        "bundle": str(bundle),
        "edges": sc.edge.count,
        "slowdown": sc.edge.client.slowdown,
        "requests_per_policy": sc.edge.count * sc.workload.requests,
        "duration_s": sc.duration_s,
        "deadline_ms": sc.workload.deadline_ms,
        "wall_s": round(wall_s, 1),
        "oracle": {
            "mean_ms": oracle.mean_ms,
            "p50_ms": _pct(np.array(oracle.latency_ms), 50),
            "p95_ms": _pct(np.array(oracle.latency_ms), 95),
            "path_mix": dict(sorted(Counter(oracle.path).items())),
            "best_static_path_model": oracle.best_static_path,
            "best_static_mean_ms_model": oracle.best_static_mean_ms,
        },
        "best_static": {
            "policy": best_static,
            "mean_ms": per[best_static]["mean_ms"] if best_static else None,
        },
        "profile": {p: dict(v) for p, v in prof.items()},
        "events": events_log,
        "policies": per,
    }
    if "auto" in per:
        for s in per.values():
            s["ratio_to_best_static"] = (
                s["mean_ms"] / per[best_static]["mean_ms"] if best_static else math.nan
            )
        a = per["auto"]
        checks = {
            "auto_vs_oracle": a["ratio_to_oracle"],
            "auto_vs_oracle_ok": a["ratio_to_oracle"] <= AUTO_VS_ORACLE,
            "auto_vs_best_static": a.get("ratio_to_best_static", math.nan),
            "auto_vs_best_static_ok": (
                best_static is None or a["ratio_to_best_static"] <= AUTO_VS_BEST_STATIC
            ),
            "lost_requests": sum(s["lost"] for s in per.values()),
        }
        checks["pass"] = bool(
            checks["auto_vs_oracle_ok"]
            and checks["auto_vs_best_static_ok"]
            and checks["lost_requests"] == 0
        )
        report["acceptance"] = checks
    return report


def _f(v: Any, nd: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def markdown_table(report: Mapping[str, Any]) -> str:
    head = (
        "| policy | n | mean ms | p50 | p95 | p99 | x oracle | misses | lost | fallbacks | "
        "KB/req | agree | path mix |"
    )
    lines = [head, "|" + "---|" * 13]
    for p, s in report["policies"].items():
        mix = ", ".join(f"{k}:{v}" for k, v in s["path_mix"].items())
        lines.append(
            f"| {p} | {s['count']} | {_f(s['mean_ms'])} | {_f(s['p50_ms'])} | {_f(s['p95_ms'])} | "
            f"{_f(s['p99_ms'])} | {_f(s['ratio_to_oracle'], 2)} | {s['deadline_misses']} | {s['lost']} | "
            f"{s['fallbacks']} | {_f(s['bytes_mean'] / 1024, 2)} | {_f(s['agreement'], 3)} | {mix} |"
        )
    o = report["oracle"]
    omix = ", ".join(f"{k}:{v}" for k, v in o["path_mix"].items())
    lines.append(
        f"| *oracle* | {report['requests_per_policy']} | {_f(o['mean_ms'])} | {_f(o['p50_ms'])} | "
        f"{_f(o['p95_ms'])} | - | 1.00 | - | - | - | - | - | {omix} |"
    )
    return "\n".join(lines)


def summary_lines(report: Mapping[str, Any]) -> list[str]:
    out = []
    bs = report["best_static"]
    if bs["policy"]:
        out.append(
            f"best static policy in hindsight (measured): {bs['policy']} ({_f(bs['mean_ms'])} ms); "
            f"best static path (oracle model, all paths): {report['oracle']['best_static_path_model']} "
            f"({_f(report['oracle']['best_static_mean_ms_model'])} ms)"
        )
    acc = report.get("acceptance")
    if acc:
        out.append(
            f"auto / oracle = {_f(acc['auto_vs_oracle'], 3)} (target <= {AUTO_VS_ORACLE}), "
            f"auto / best static = {_f(acc['auto_vs_best_static'], 3)} (target <= {AUTO_VS_BEST_STATIC}), "
            f"lost = {acc['lost_requests']} -> {'PASS' if acc['pass'] else 'FAIL'}"
        )
    return out


def write_report(report: Mapping[str, Any], out: Path) -> None:
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    md = [
        f"# Scenario `{report['scenario']}`",
        "",
        report.get("description", ""),
        "",
        f"model {report['model']}, {report['edges']} edge(s), slowdown x{report['slowdown']}, "
        f"{report['requests_per_policy']} requests per policy over {report['duration_s']:.0f} s, "
        f"deadline {report['deadline_ms']} ms, seed {report['seed']}",
        "",
        markdown_table(report),
        "",
        *[f"- {line}" for line in summary_lines(report)],
        "",
        "Plots: `latency_cdf.png`, `timeline.png`, `bytes.png`; every request: `requests.jsonl`.",
        "",
    ]
    (out / "report.md").write_text("\n".join(md))
