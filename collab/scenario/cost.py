"""What a path costs to run, per 1,000 requests, from what the runs measured.

Uplink bytes are the emulator's count of everything the policy's run put on the uplink
(frames, RPC framing, probes); cloud compute-seconds are what the cloud node reports per
request in its reply (its share of the batch's compute plus decoding the frame); edge
compute-seconds are what the edge measured of its own model runs (the emulated device's
time), and the edge energy is those seconds at the device's power under load. Prices and
power are the scenario's ``cost:`` (defaults and their sources in docs/scenarios.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from collab.scenario.requests import Record
from collab.scenario.schema import CostModel

PER = 1000  # requests the figures are given for
GB = 1e9
J_PER_KWH = 3.6e6


def cloud_seconds(r: Record) -> float:
    """The cloud compute one request used: its share of the batch, plus its decode."""
    t = r.timings
    batch = max(t.get("cloud_batch_size", 1.0), 1.0)
    return (t.get("cloud_compute_ms", 0.0) / batch + t.get("cloud_decode_ms", 0.0)) / 1000.0


def edge_seconds(r: Record) -> float:
    """The edge compute one request used (its head or full model, and a local finish)."""
    t = r.timings
    return (t.get("edge_ms", 0.0) + t.get("local_finish_ms", 0.0)) / 1000.0


def policy_cost(
    recs: Sequence[Record], link: Mapping[str, Any] | None, model: CostModel
) -> dict[str, float]:
    """Per 1,000 requests of one policy's run: bytes, compute, energy and dollars."""
    n = max(len(recs), 1)
    up = float(link["bytes_up"]) if link and "bytes_up" in link else sum(r.bytes_sent for r in recs)
    cloud_s = sum(cloud_seconds(r) for r in recs)
    edge_s = sum(edge_seconds(r) for r in recs)
    edge_j = edge_s * model.power_w
    usd = {
        "uplink": up / GB * model.uplink_usd_per_gb,
        "cloud": cloud_s * model.cloud_usd_per_vcpu_s,
        "edge": edge_j / J_PER_KWH * model.usd_per_kwh,
    }
    k = PER / n
    return {
        "uplink_mb": up * k / 1e6,
        "frames_mb": sum(r.bytes_sent for r in recs) * k / 1e6,  # of which the requests' frames
        "cloud_s": cloud_s * k,
        "edge_s": edge_s * k,
        "edge_wh": edge_j * k / 3600.0,
        "usd_uplink": usd["uplink"] * k,
        "usd_cloud": usd["cloud"] * k,
        "usd_edge": usd["edge"] * k,
        "usd": sum(usd.values()) * k,
    }


def cost_line(policies: Mapping[str, Mapping[str, Any]]) -> str | None:
    """ "auto saves X % cost vs cloud-only at Y % of its latency", when both ran."""
    a, c = policies.get("auto"), policies.get("cloud_only")
    if not a or not c or not c["cost"]["usd"] or not c["mean_ms"]:
        return None
    save = 1.0 - a["cost"]["usd"] / c["cost"]["usd"]
    lat = a["mean_ms"] / c["mean_ms"]
    what = f"saves {save:.0%} cost" if save >= 0 else f"costs {-save:.0%} more"
    return (
        f"auto {what} vs cloud_only at {lat:.0%} of its latency "
        f"(${a['cost']['usd']:.4f} vs ${c['cost']['usd']:.4f} per {PER} requests; "
        f"{a['mean_ms']:.1f} vs {c['mean_ms']:.1f} ms mean)"
    )
