"""The two oracles: the best latency any path could have had, request by request.

The **model oracle** never looks at the runs it judges. For a request at trace time ``t``
and every path ``p`` (edge-only, cloud-only, every split point) with every codec within
the accuracy budget:

    latency = base_p                      the profile pass: the path over a perfect link on
                                          this machine (edge compute incl. slowdown or the
                                          tier's mean speed, cloud compute, RPC and proxy
                                          overhead)
            + edge_p x (f(t) - 1)         the device tier's TRUE state at t (its seeded
                                          throttling and burst episodes, jitter at its
                                          mean): f = that factor / the mean factor the
                                          profile pass ran at
            + encode_c + decode_c         codec calibration of the bundle
            + uplink serialisation of the frame and its measured framing
              (:mod:`collab.scenario.framing`) starting at t + edge_ms, or when the
              frames sent before it have left the one shared uplink, from the TRUE
              capacity curve of the trace (not an estimate)
            + one-way delays both ways + downlink serialisation of the measured answer
            + expected TCP loss stalls (one RTT per lost inner packet, an RTO for the last)

The **measured oracle** (:func:`measured_oracle`) is, per request, the lowest latency any
static policy actually had on the same seeded schedule: a noisy lower bound that favours
the oracle (each request gets the luckiest of several independent runs).

The oracle's frames queue on the one uplink every edge shares, behind the frames of its own
earlier choices: per request, in time order, it takes the path that is fastest given what
it has already sent (clairvoyant and greedy). A static path is priced on an idle link (its
run abandons a call at the deadline, which a queue of every frame would not know). It does
not model what else loads the link (probes) or the cloud (batching N edges on this
machine's two cores).

Cloud paths are impossible while the link is out (trace outage or ``cut_link``) or the
cloud node is dead (``kill_cloud`` until the restarted node listens). The oracle's
latency is its choice's over paths and codecs; the *best static path in hindsight* is the
path with the lowest mean of its own per-request latencies (where it is impossible, its
requests cost what the forced policy pays: the local fallback, edge-only).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from collab.codec.policy import allowed, codec_rows
from collab.emulator.link import PACKET, RTO_MIN_MS
from collab.emulator.traces import Capacity
from collab.scenario.measured import Framing
from collab.scenario.prepare import image_workload
from collab.scenario.requests import Arrival, Record
from collab.scenario.schema import Scenario


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
    sc: Scenario,
    t: float,
    nbytes: float,
    framing: Framing,
    caps: tuple[Capacity, Capacity] | None = None,
) -> float:
    """Time from handing a frame of ``nbytes`` to an idle uplink at ``t`` until the
    answer is back at the edge, under the true trace (cloud compute excluded)."""
    return _network(sc, t, nbytes, framing, caps or _caps(sc))[0]


def _caps(sc: Scenario) -> tuple[Capacity, Capacity]:
    return sc.link.uplink.capacity(), sc.link.downlink.capacity()


def _network(
    sc: Scenario,
    t: float,
    nbytes: float,
    framing: Framing,
    caps: tuple[Capacity, Capacity],
    up_free: float = 0.0,
) -> tuple[float, float]:
    """(:func:`network_ms` of a frame that queues behind the uplink's earlier frames
    until ``up_free``, when the uplink is free again after it)."""
    up, down = sc.link.uplink, sc.link.downlink
    cu, cd = caps
    start = max(t, up_free)
    su, sd = up.segment_at(start), down.segment_at(t)
    total = nbytes + framing.request_bytes
    up_end = cu.transmit_end(start, total)
    stall_ms = 0.0
    if su.loss > 0:
        rtt = su.delay_ms + sd.delay_ms
        k = max(1, math.ceil(total / PACKET))
        stall_ms = su.loss * ((k - 1) * max(rtt, 1.0) + max(RTO_MIN_MS, 2 * rtt))
    arrive = up_end + su.delay_ms / 1000.0
    down_end = cd.transmit_end(arrive, framing.answer_bytes)
    ms = (up_end - t + down_end - arrive) * 1000.0 + su.delay_ms + sd.delay_ms + stall_ms
    return ms, up_end + stall_ms / 1000.0


def _best_codec(
    sc: Scenario,
    t: float,
    table: Sequence[tuple[float, float]],
    framing: Framing,
    caps: tuple[Capacity, Capacity],
    up_free: float,
) -> tuple[float, float]:
    """(codec + network ms, uplink free again) of the codec in ``table`` that is fastest
    for a frame sent at ``t`` behind an uplink busy until ``up_free``."""
    return min(
        (codec_ms + x, end)
        for codec_ms, nbytes in table
        for x, end in [_network(sc, t, nbytes, framing, caps, up_free)]
    )


def compute_oracle(
    sc: Scenario,
    plan: Sequence[Arrival],
    prof: Mapping[str, Mapping[str, float]],
    calibration: Mapping[str, Any] | None,
    events_log: Mapping[str, Sequence[Mapping[str, Any]]],
    framing: Framing,
    edge_factor: Callable[[int, float], float] = lambda edge, t: 1.0,
) -> OracleResult:
    """The model oracle from the profile pass ``prof`` (per path: ``base_ms``, ``edge_ms``,
    ``encode_ms``, ``bytes``), the codec calibration, the true trace and the true device
    state: ``edge_factor(edge, t)`` is how many times the profile pass's edge compute
    edge ``edge`` takes at trace time ``t``."""
    dead, cut = outage_intervals(sc, events_log)
    caps = _caps(sc)
    budget = sc.edge.client.accuracy_budget
    cal_points = (calibration or {}).get("points", {}) or {}
    cal_input = (calibration or {}).get("input")
    if image_workload(sc) and (calibration or {}).get("image"):
        cal_input = (calibration or {})["image"]  # camera frames: cloud-only sends an image
    tables = {}
    for p, pr in prof.items():
        if p == "edge_only":
            continue
        stats = cal_input if p == "cloud_only" else cal_points.get(p.split(":", 1)[1])
        tables[p] = _codec_table(pr, stats, budget)
    n = len(plan)
    per_path: dict[str, list[float]] = {p: [math.inf] * n for p in prof}
    lat: list[float] = [math.inf] * n
    best: list[str] = [""] * n
    edge_only: list[float] = [math.inf] * n  # what an impossible path's request costs
    # the uplink is one FIFO for every edge (the emulator's): a frame waits for the
    # frames before it. The oracle's own choices queue on it (each request takes the path
    # that is fastest given what the oracle sent before it: clairvoyant and greedy). A
    # static path's prices do not: its run gives up on a call at the deadline, which a
    # queue of every frame would not know
    free_oracle = 0.0
    for i in sorted(range(n), key=lambda i: plan[i].at_s):
        a = plan[i]
        t = a.at_s
        link_out = sc.link.outage_at(t) or any(s <= t < e for s, e in cut)
        cloud_dead = any(s <= t < e for s, e in dead)
        f = edge_factor(a.edge, t)
        row: dict[str, float] = {}
        ends: dict[str, float] = {}
        for p, pr in prof.items():
            edge_ms = pr.get("edge_ms", 0.0) * f
            base = pr["base_ms"] + edge_ms - pr.get("edge_ms", 0.0)
            if p == "edge_only":
                row[p] = per_path[p][i] = base
                continue
            if link_out or cloud_dead:
                row[p] = math.inf
                continue
            t_send = t + edge_ms / 1000.0
            idle = _best_codec(sc, t_send, tables[p], framing, caps, 0.0)
            per_path[p][i] = base + idle[0]
            ms, ends[p] = (
                idle
                if free_oracle <= t_send
                else _best_codec(sc, t_send, tables[p], framing, caps, free_oracle)
            )
            row[p] = base + ms
        edge_only[i] = row.get("edge_only", math.inf)
        k = min(row, key=lambda p: row[p])
        lat[i], best[i] = row[k], k
        free_oracle = ends.get(k, free_oracle)
    means = {
        p: sum(v if math.isfinite(v) else e for v, e in zip(vs, edge_only, strict=True))
        / max(len(vs), 1)
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


@dataclass(frozen=True, kw_only=True)
class MeasuredOracle:
    """Per request (edge, index): the lowest latency among the static policies that ran,
    and which one had it. Lost requests count for no policy."""

    latency_ms: dict[tuple[int, int], float]
    policy: dict[tuple[int, int], str]
    policies: tuple[str, ...]

    @property
    def mean_ms(self) -> float:
        v = list(self.latency_ms.values())
        return sum(v) / len(v) if v else math.nan

    def mean_over(self, keys: Sequence[tuple[int, int]]) -> float:
        """Mean over the requests in ``keys`` it has a latency for (those another policy
        answered), so a policy's ratio compares the same requests."""
        v = [self.latency_ms[k] for k in keys if k in self.latency_ms]
        return sum(v) / len(v) if v else math.nan


def measured_oracle(records: Sequence[Record], static: Sequence[str]) -> MeasuredOracle:
    """The measured oracle over the runs of the ``static`` policies."""
    lat: dict[tuple[int, int], float] = {}
    who: dict[tuple[int, int], str] = {}
    for r in records:
        if r.policy not in static or r.lost:
            continue
        k = (r.edge, r.index)
        if k not in lat or r.latency_ms < lat[k]:
            lat[k], who[k] = r.latency_ms, r.policy
    return MeasuredOracle(latency_ms=lat, policy=who, policies=tuple(static))
