"""The oracle: the best latency any path could have had, request by request.

For a request at trace time ``t`` and every path ``p`` (edge-only, cloud-only, every split
point) with every codec within the accuracy budget:

    latency = base_p                      measured on this machine over a perfect link
                                          (edge compute incl. slowdown, cloud compute,
                                          RPC and proxy overhead; profile pass)
            + encode_c + decode_c         codec calibration of the bundle
            + uplink serialisation of the frame starting at t + edge_ms, from the TRUE
              capacity curve of the trace (not an estimate)
            + one-way delays both ways + downlink serialisation of the answer
            + expected TCP loss stalls (one RTT per lost inner packet, an RTO for the last)

Cloud paths are impossible while the link is out (trace outage or ``cut_link``) or the
cloud node is dead (``kill_cloud`` until the restarted node listens). The oracle's
latency is the minimum over paths and codecs; the *best static path in hindsight* is the
path with the lowest mean of its own per-request latencies (where it is impossible, its
requests cost what the forced policy pays: the local fallback, edge-only).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from collab.codec.policy import allowed, codec_rows
from collab.emulator.link import PACKET, RTO_MIN_MS
from collab.emulator.traces import Capacity
from collab.scenario.requests import Arrival
from collab.scenario.schema import Scenario

LOCAL_WINDOW_S = 2.0  # half-width of the window of a path's local base cost
RPC_BYTES = 120  # HTTP/2 + gRPC framing and protobuf fields around a frame
ANSWER_BYTES = 200  # the answer frame (f32 logits) and its framing


@dataclass(frozen=True, kw_only=True)
class OracleResult:
    latency_ms: list[float]  # per arrival, in schedule order
    path: list[str]  # the best path per arrival
    per_path_ms: dict[str, list[float]]  # every path's latency per arrival (inf = impossible)
    best_static_path: str
    best_static_mean_ms: float

    @property
    def mean_ms(self) -> float:
        return sum(self.latency_ms) / len(self.latency_ms)


def outage_intervals(
    sc: Scenario, events_log: Mapping[str, Sequence[Mapping[str, Any]]]
) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """(cloud dead intervals, link cut intervals) in trace time."""
    startup: list[float] = []
    for log in events_log.values():
        for e in log:
            if e["action"] == "start_cloud":
                startup.append(max(0.0, float(e["done_s"]) - float(e["at_s"])))
    start_delay = sorted(startup)[len(startup) // 2] if startup else 0.0
    dead: list[tuple[float, float]] = []
    cut: list[tuple[float, float]] = []
    killed_at: float | None = None
    cut_at: float | None = None
    for ev in sc.events:
        if ev.action == "kill_cloud" and killed_at is None:
            killed_at = ev.at_s
        elif ev.action == "start_cloud" and killed_at is not None:
            dead.append((killed_at, ev.at_s + start_delay))
            killed_at = None
        elif ev.action == "cut_link":
            if ev.duration_s:
                cut.append((ev.at_s, ev.at_s + ev.duration_s))
            elif cut_at is None:
                cut_at = ev.at_s
        elif ev.action == "restore_link" and cut_at is not None:
            cut.append((cut_at, ev.at_s))
            cut_at = None
    if killed_at is not None:
        dead.append((killed_at, math.inf))
    if cut_at is not None:
        cut.append((cut_at, math.inf))
    return dead, cut


def _codec_table(
    prof: Mapping[str, float], stats: Mapping[str, Mapping[str, float]] | None, budget: float
) -> list[tuple[float, float]]:
    """(encode+decode ms, frame bytes) of every codec the engine may pick for this path
    (:func:`collab.codec.policy.allowed`); the oracle takes the best under the true link."""
    fallback = [(prof.get("encode_ms", 0.0), prof.get("bytes", 0.0))]
    if not stats:
        return fallback
    return [
        (r.encode_ms + r.decode_ms, r.bytes) for r in codec_rows(stats) if allowed(r, budget)
    ] or fallback


def network_ms(
    sc: Scenario, t: float, nbytes: float, caps: tuple[Capacity, Capacity] | None = None
) -> float:
    """Time from handing ``nbytes`` to the uplink at ``t`` until the answer is back at the
    edge, under the true trace (cloud compute excluded)."""
    up, down = sc.link.uplink, sc.link.downlink
    cu, cd = caps or (up.capacity(), down.capacity())
    su, sd = up.segment_at(t), down.segment_at(t)
    total = nbytes + RPC_BYTES
    up_end = cu.transmit_end(t, total)
    arrive = up_end + su.delay_ms / 1000.0
    down_end = cd.transmit_end(arrive, ANSWER_BYTES)
    ms = (up_end - t + down_end - arrive) * 1000.0 + su.delay_ms + sd.delay_ms
    if su.loss > 0:
        rtt = su.delay_ms + sd.delay_ms
        k = max(1, math.ceil(total / PACKET))
        ms += su.loss * ((k - 1) * max(rtt, 1.0) + max(RTO_MIN_MS, 2 * rtt))
    return ms


def compute_oracle(
    sc: Scenario,
    plan: Sequence[Arrival],
    prof: Mapping[str, Mapping[str, float]],
    calibration: Mapping[str, Any] | None,
    events_log: Mapping[str, Sequence[Mapping[str, Any]]],
    local_base: Mapping[str, Sequence[float]] | None = None,
) -> OracleResult:
    """``local_base``: per path, a base cost per arrival (:func:`local_base_costs`) in place
    of the path's single ``base_ms``."""
    local = local_base or {}
    dead, cut = outage_intervals(sc, events_log)
    caps = (sc.link.uplink.capacity(), sc.link.downlink.capacity())
    budget = sc.edge.client.accuracy_budget
    cal_points = (calibration or {}).get("points", {}) or {}
    cal_input = (calibration or {}).get("input")
    tables = {}
    for p, pr in prof.items():
        if p == "edge_only":
            continue
        stats = cal_input if p == "cloud_only" else cal_points.get(p.split(":", 1)[1])
        tables[p] = _codec_table(pr, stats, budget)
    per_path: dict[str, list[float]] = {p: [] for p in prof}
    lat: list[float] = []
    best: list[str] = []
    edge_only = prof["edge_only"]["base_ms"] if "edge_only" in prof else math.inf
    for i, a in enumerate(plan):
        t = a.at_s
        link_out = sc.link.outage_at(t) or any(s <= t < e for s, e in cut)
        cloud_dead = any(s <= t < e for s, e in dead)
        row: dict[str, float] = {}
        for p, pr in prof.items():
            base = local[p][i] if p in local else pr["base_ms"]
            if p == "edge_only":
                row[p] = base
                continue
            if link_out or cloud_dead:
                row[p] = math.inf
                continue
            t_send = t + pr.get("edge_ms", 0.0) / 1000.0
            row[p] = base + min(
                codec_ms + network_ms(sc, t_send, nbytes, caps) for codec_ms, nbytes in tables[p]
            )
        for p, v in row.items():
            per_path[p].append(v)
        k = min(row, key=lambda p: row[p])
        lat.append(row[k])
        best.append(k)
    means = {
        p: sum(v if math.isfinite(v) else edge_only for v in vs) / max(len(vs), 1)
        for p, vs in per_path.items()
    }
    bs = min(means, key=lambda p: means[p])
    return OracleResult(
        latency_ms=lat,
        path=best,
        per_path_ms=per_path,
        best_static_path=bs,
        best_static_mean_ms=means[bs],
    )


def calibrate_from_static_runs(
    sc: Scenario,
    prof: Mapping[str, Mapping[str, float]],
    records: Sequence[Any],
    calibration: Mapping[str, Any] | None,
) -> dict[str, dict[str, float]]:
    """Refine each path's base cost from its own static-policy run when there is one.

    The profile pass runs minutes before some of the policies on a shared, noisy machine;
    a static run measured the same path under the same trace, so its mean residual
    (latency minus the true network time of what it sent) is the better estimate. The
    mean, not the median: the oracle's mean is compared with measured means, so its
    per-request values are expectations (compute noise included) — the median would make
    even the best path "lose" to the oracle by its own noise.
    """
    out = {p: dict(v) for p, v in prof.items()}
    for p, v in out.items():
        res = list(_residuals(sc, p, v, records, calibration).values())
        if len(res) < 5:
            continue
        v["base_ms_profile"] = v["base_ms"]
        v["base_ms"] = max(0.0, sum(res) / len(res))

    # Paths without a static run (most split points) were only measured in the profile pass,
    # by one client alone. Scale their edge part and their cloud part by how much slower the
    # edge-only and cloud-only paths were under the scenario's own conditions (load of N
    # edges, batching), so that the oracle does not credit them with an idle machine.
    def ratio(p: str) -> float:
        v = out.get(p, {})
        return v["base_ms"] / v["base_ms_profile"] if v.get("base_ms_profile") else 1.0

    r_edge, r_cloud = max(ratio("edge_only"), 1.0), max(ratio("cloud_only"), 1.0)
    for v in out.values():
        if "base_ms_profile" not in v and v.get("edge_ms", 0.0) > 0:
            edge = v["edge_ms"]
            v["base_ms_profile"] = v["base_ms"]
            v["base_ms"] = edge * r_edge + max(v["base_ms"] - edge, 0.0) * r_cloud
    return out


def _residuals(
    sc: Scenario,
    path: str,
    prof: Mapping[str, float],
    records: Sequence[Any],
    calibration: Mapping[str, Any] | None,
) -> dict[tuple[int, int], float]:
    """(edge, request index) -> what ``path``'s static run paid beyond the true network
    time and the codec: its base cost, request by request (lost and fallen-back requests
    left out)."""
    cal_points = (calibration or {}).get("points", {}) or {}
    stats = (
        (calibration or {}).get("input") or {}
        if path == "cloud_only"
        else cal_points.get(path.split(":", 1)[-1], {})
    )
    caps = (sc.link.uplink.capacity(), sc.link.downlink.capacity())
    out = {}
    for r in records:
        if r.policy != path or r.lost or r.fell_back:
            continue
        if path == "edge_only":
            out[(r.edge, r.index)] = r.latency_ms
            continue
        st = stats.get(r.codec or "", {})
        codec_ms = float(st.get("encode_ms", 0.0)) + float(st.get("decode_ms", 0.0))
        t_send = r.start_s + prof.get("edge_ms", 0.0) / 1000.0
        out[(r.edge, r.index)] = (
            r.latency_ms - network_ms(sc, t_send, r.bytes_sent, caps) - codec_ms
        )
    return out


def local_base_costs(
    sc: Scenario,
    plan: Sequence[Arrival],
    prof: Mapping[str, Mapping[str, float]],
    records: Sequence[Any],
    calibration: Mapping[str, Any] | None,
    window_s: float = LOCAL_WINDOW_S,
) -> dict[str, list[float]]:
    """Per path that ran statically, its base cost at each arrival: the mean residual of
    its own requests within ``window_s`` of that arrival.

    A whole-run mean smears what happened in one stretch over all of it: on a slow uplink
    the static cloud run queues behind its own frames (and probes) in the slow half, and
    a single mean then overprices cloud in the fast half, where it really was the better
    path. The window (a few requests either side, within one trace segment) still
    averages compute noise, so the oracle stays an expectation, not a minimum of noise."""
    out: dict[str, list[float]] = {}
    for p, v in prof.items():
        res = _residuals(sc, p, v, records, calibration)
        if len(res) < 5:
            continue
        times = [(a.at_s, res[(a.edge, a.index)]) for a in plan if (a.edge, a.index) in res]
        series = []
        for a in plan:
            near = [x for t, x in times if abs(t - a.at_s) <= window_s]
            series.append(max(0.0, sum(near) / len(near)) if near else v["base_ms"])
        out[p] = series
    return out
