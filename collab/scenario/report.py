"""report.json and report.md: per-policy statistics against both oracles, the cost of
every policy, and the acceptance checks whose verdict is the run's exit code."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from collab.scenario.cost import cost_line, policy_cost
from collab.scenario.measured import Measured
from collab.scenario.oracle import MeasuredOracle, OracleResult
from collab.scenario.requests import Record
from collab.scenario.schema import Scenario


def _pct(xs: np.ndarray, q: float) -> float:
    return float(np.percentile(xs, q)) if xs.size else math.nan


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 and not math.isnan(a) else math.nan


def policy_stats(
    sc: Scenario,
    recs: Sequence[Record],
    oracle: OracleResult,
    best: MeasuredOracle,
    link: Mapping[str, Any] | None,
) -> dict[str, Any]:
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
        "answered": len(ok),
        "path_mix": dict(sorted(paths.items())),
        "fallbacks": sum(1 for r in recs if r.fell_back),
        "explored": sum(1 for r in recs if r.explored),
        "ratio_to_model_oracle": _ratio(mean, oracle.mean_ms),
        # over the same requests: those this policy answered
        "ratio_to_measured_oracle": _ratio(mean, best.mean_over([(r.edge, r.index) for r in ok])),
        "cost": policy_cost(recs, link, sc.cost),
        "errors": sorted({r.error for r in recs if r.lost})[:5],
    }


SIGNIFICANCE = 0.05


def agreement_floor(n: int, budget: float, significance: float = SIGNIFICANCE) -> float:
    """The lowest agreement over ``n`` requests that is still consistent with a true
    disagreement rate of ``budget``: k disagreements fail the check only when
    P(X >= k | n, budget) < ``significance``. One disagreement in 64 (0.984) is what a
    budget of 0.01 gives about half of the time, so it must not fail a run; a fixed
    1 - budget would (a budget below 1/n cannot be resolved by n requests)."""
    if n == 0:
        return 1.0
    tail = 1.0  # P(X >= k), from k = 0 up
    for k in range(n + 1):
        if tail < significance:
            return 1.0 - (k - 1) / n
        tail -= math.comb(n, k) * budget**k * (1 - budget) ** (n - k)
    return 0.0


def _check(
    name: str, value: float, limit: float, detail: str, *, at_least: bool = False
) -> dict[str, Any]:
    ok = (value >= limit if at_least else value <= limit) if not math.isnan(value) else False
    return {"name": name, "value": value, "limit": limit, "ok": bool(ok), "detail": detail}


def acceptance(
    sc: Scenario, per: Mapping[str, Mapping[str, Any]], report: Mapping[str, Any]
) -> dict[str, Any]:
    """Every check ``auto`` is held to, with its numbers; ``pass`` only if all hold."""
    acc, a = sc.acceptance, per["auto"]
    mo, bs = report["measured_oracle"], report["best_static"]
    checks = []
    if mo["policies"]:
        checks.append(
            _check(
                "auto / measured oracle",
                a["ratio_to_measured_oracle"],
                acc.vs_measured_oracle,
                f"auto {a['mean_ms']:.1f} ms vs the per-request best of {', '.join(mo['policies'])}",
            )
        )
    checks.append(
        _check(
            "auto / model oracle",
            a["ratio_to_model_oracle"],
            acc.vs_model_oracle,
            f"auto {a['mean_ms']:.1f} ms vs {report['oracle']['mean_ms']:.1f} ms",
        )
    )
    if bs["policy"]:
        checks.append(
            _check(
                "auto / best static",
                a["ratio_to_best_static"],
                acc.vs_best_static,
                f"auto {a['mean_ms']:.1f} ms vs {bs['policy']} {bs['mean_ms']:.1f} ms",
            )
        )
    lost = sum(s["lost"] for s in per.values())
    checks.append(_check("lost requests", float(lost), 0.0, "over every policy's run"))
    budget = sc.edge.client.accuracy_budget
    n = int(a["answered"])
    floor = agreement_floor(n, budget)
    checks.append(
        _check(
            "auto agreement",
            a["agreement"],
            floor,
            f"top-1 agreement with the FP32 model; accuracy budget {budget}: more than "
            f"{round((1 - floor) * n)} of {n} disagreeing would exceed it (one-sided exact "
            f"binomial test at {SIGNIFICANCE:.0%})",
            at_least=True,
        )
    )
    return {"checks": checks, "pass": all(c["ok"] for c in checks)}


def build_report(
    sc: Scenario,
    records: Sequence[Record],
    oracle: OracleResult,
    best: MeasuredOracle,
    measured: Measured,
    policies: Sequence[str],
    *,
    wall_s: float,
    bundle: Path,
) -> dict[str, Any]:
    per = {
        p: policy_stats(
            sc, [r for r in records if r.policy == p], oracle, best, measured.link.get(p)
        )
        for p in policies
    }
    static = {p: s for p, s in per.items() if p != "auto" and s["lost"] == 0}
    best_static = min(static, key=lambda p: static[p]["mean_ms"]) if static else None
    best_lat = np.array(list(best.latency_ms.values()), dtype=np.float64)
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
            "kind": "model: profile pass + codec calibration + true trace + measured framing",
            "mean_ms": oracle.mean_ms,
            "p50_ms": _pct(np.array(oracle.latency_ms), 50),
            "p95_ms": _pct(np.array(oracle.latency_ms), 95),
            "path_mix": dict(sorted(Counter(oracle.path).items())),
            "best_static_path_model": oracle.best_static_path,
            "best_static_mean_ms_model": oracle.best_static_mean_ms,
        },
        "measured_oracle": {
            "kind": "per request, the fastest static policy that ran (a noisy lower bound)",
            "policies": list(best.policies),
            "requests": len(best.latency_ms),
            "mean_ms": best.mean_ms,
            "p50_ms": _pct(best_lat, 50),
            "p95_ms": _pct(best_lat, 95),
            "policy_mix": dict(sorted(Counter(best.policy.values()).items())),
        },
        "best_static": {
            "policy": best_static,
            "mean_ms": per[best_static]["mean_ms"] if best_static else None,
        },
        "framing": measured.framing.to_dict(),
        "cost_model": {
            "uplink_usd_per_gb": sc.cost.uplink_usd_per_gb,
            "cloud_usd_per_vcpu_s": sc.cost.cloud_usd_per_vcpu_s,
            "edge_power_w": sc.cost.power_w,
            "usd_per_kwh": sc.cost.usd_per_kwh,
        },
        "profile": {p: dict(v) for p, v in measured.profile.items()},
        "events": dict(measured.events),
        "link": {p: dict(v) for p, v in measured.link.items()},
        "policies": per,
    }
    for s in per.values():
        s["ratio_to_best_static"] = (
            _ratio(s["mean_ms"], per[best_static]["mean_ms"]) if best_static else math.nan
        )
    report["cost_line"] = cost_line(per)
    if "auto" in per:
        report["acceptance"] = acceptance(sc, per, report)
    return report


def _f(v: Any, nd: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def markdown_table(report: Mapping[str, Any]) -> str:
    head = (
        "| policy | n | mean ms | p50 | p95 | p99 | x model oracle | x measured oracle | misses | "
        "lost | fallbacks | KB/req | agree | $/1k req | path mix |"
    )
    lines = [head, "|" + "---|" * 15]
    for p, s in report["policies"].items():
        mix = ", ".join(f"{k}:{v}" for k, v in s["path_mix"].items())
        if s.get("explored"):
            mix += f" ({s['explored']} exploring)"
        lines.append(
            f"| {p} | {s['count']} | {_f(s['mean_ms'])} | {_f(s['p50_ms'])} | {_f(s['p95_ms'])} | "
            f"{_f(s['p99_ms'])} | {_f(s['ratio_to_model_oracle'], 3)} | "
            f"{_f(s['ratio_to_measured_oracle'], 3)} | {s['deadline_misses']} | {s['lost']} | "
            f"{s['fallbacks']} | {_f(s['bytes_mean'] / 1024, 2)} | {_f(s['agreement'], 3)} | "
            f"{_f(s['cost']['usd'], 4)} | {mix} |"
        )
    o = report["oracle"]
    omix = ", ".join(f"{k}:{v}" for k, v in o["path_mix"].items())
    lines.append(
        f"| *model oracle* | {report['requests_per_policy']} | {_f(o['mean_ms'])} | {_f(o['p50_ms'])} | "
        f"{_f(o['p95_ms'])} | - | 1.000 | - | - | - | - | - | - | - | {omix} |"
    )
    m = report["measured_oracle"]
    mmix = ", ".join(f"{k}:{v}" for k, v in m["policy_mix"].items())
    lines.append(
        f"| *measured oracle* | {m['requests']} | {_f(m['mean_ms'])} | {_f(m['p50_ms'])} | "
        f"{_f(m['p95_ms'])} | - | - | 1.000 | - | - | - | - | - | - | {mmix} |"
    )
    return "\n".join(lines)


def cost_table(report: Mapping[str, Any]) -> str:
    lines = [
        "| policy (per 1,000 requests) | uplink MB | of which frames | cloud s | edge s | "
        "edge Wh | $ uplink | $ cloud | $ edge | $ total |",
        "|" + "---|" * 10,
    ]
    for p, s in report["policies"].items():
        c = s["cost"]
        lines.append(
            f"| {p} | {_f(c['uplink_mb'], 2)} | {_f(c['frames_mb'], 2)} | {_f(c['cloud_s'], 2)} | "
            f"{_f(c['edge_s'], 2)} | "
            f"{_f(c['edge_wh'], 3)} | {c['usd_uplink']:.3g} | {c['usd_cloud']:.3g} | "
            f"{c['usd_edge']:.3g} | {c['usd']:.3g} |"
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
    if report.get("cost_line"):
        out.append(report["cost_line"])
    acc = report.get("acceptance")
    if acc:
        for c in acc["checks"]:
            op = ">=" if c["name"] == "auto agreement" else "<="
            out.append(
                f"{'ok  ' if c['ok'] else 'FAIL'} {c['name']} = {_f(c['value'], 3)} "
                f"(limit {op} {_f(c['limit'], 3)}): {c['detail']}"
            )
        out.append(f"acceptance: {'PASS' if acc['pass'] else 'FAIL'}")
    return out


def write_report(report: Mapping[str, Any], out: Path) -> None:
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    f = report["framing"]
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
        "## Cost",
        "",
        cost_table(report),
        "",
        f"RPC framing measured at startup over {f['calls']} calls: {_f(f['request_bytes'], 0)} B "
        f"per request beyond the frame, {_f(f['answer_bytes'], 0)} B per answer.",
        "",
        "Plots: `latency_cdf.png`, `timeline.png`, `bytes.png`; every request: `requests.jsonl`.",
        "",
    ]
    (out / "report.md").write_text("\n".join(md))


def summary_table(reports: Sequence[Mapping[str, Any]]) -> str:
    """One row per finished run: every acceptance check's value (bold where it failed),
    auto's mean, its speedups over cloud-only and edge-only, the verdict; then each run's
    cost line. What a closing note or a paper table quotes, read from the reports only."""
    names: list[str] = []
    for r in reports:
        for c in (r.get("acceptance") or {}).get("checks", []):
            if c["name"] not in names:
                names.append(c["name"])
    head = ["scenario", *names, "auto ms", "speedup vs cloud-only / edge-only", "verdict"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in reports:
        per, acc = r["policies"], r.get("acceptance") or {}
        checks = {c["name"]: c for c in acc.get("checks", [])}
        cells = [str(r["scenario"])]
        for n in names:
            c = checks.get(n)
            v = (
                "-"
                if c is None
                else (f"{c['value']:.0f}" if n == "lost requests" else _f(c["value"], 3))
            )
            cells.append(v if c is None or c["ok"] else f"**{v}**")
        a = per.get("auto")
        if a is None:
            cells += ["-", "-", "no auto"]
        else:
            speed = [
                f"{_ratio(per[p]['mean_ms'], a['mean_ms']):.2f}x" if p in per else "-"
                for p in ("cloud_only", "edge_only")
            ]
            verdict = "PASS" if acc.get("pass") else "FAIL"
            cells += [f"{a['mean_ms']:.1f}", " / ".join(speed), verdict]
        rows.append("| " + " | ".join(cells) + " |")
    costs = [f"- {r['scenario']}: {r['cost_line']}" for r in reports if r.get("cost_line")]
    return "\n".join(rows + (["", *costs] if costs else []))
