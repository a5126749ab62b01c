"""Scenario files: validation errors name field and line; schedule determinism; a tiny run end to end."""

from __future__ import annotations

import json
import math
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from collab.errors import ConfigError
from collab.scenario.cli import scenarios_dir
from collab.scenario.requests import Record, schedule
from collab.scenario.schema import Acceptance, Scenario, load_scenario, parse_scenario

GOOD = textwrap.dedent("""\
    name: t
    seed: 3
    model:
      example: digits
      calibrate: false
    edges:
      count: 2
      slowdown: 5
    workload:
      requests: 10
      rate_hz: 5
      arrivals: poisson
    network:
      segments:
        - {duration_s: 2, up_mbps: 5, down_mbps: 10, rtt_ms: 20}
        - {duration_s: 1, outage: true}
    events:
      - {at_s: 1, action: kill_cloud}
      - {at_s: 1.5, action: start_cloud}
    policies: [edge_only, auto]
    """)


def _err(text: str, tmp_path: Path | None = None) -> str:
    with pytest.raises(ConfigError) as e:
        parse_scenario(text, source="s.yaml", base=tmp_path)
    return str(e.value)


def test_good_scenario_parses() -> None:
    sc = parse_scenario(GOOD, source="s.yaml")
    assert sc.edge.count == 2 and sc.workload.arrivals == "poisson"
    assert (
        sc.link.uplink.segments[0].bandwidth_bps == 5e6
        and sc.link.uplink.segments[0].delay_ms == 10
    )
    assert sc.link.outage_at(2.5) and not sc.link.outage_at(0.5)
    assert [e.action for e in sc.events] == ["kill_cloud", "start_cloud"]


@pytest.mark.parametrize(
    ("old", "new", "field", "line"),
    [
        ("  slowdown: 5", "  slowdown: 5\n  speed: 3", "edges.speed: unknown key", 9),
        ("up_mbps: 5,", "up_mbps: -5,", r"network.segments\[0\].up_mbps: must be >= 0", 15),
        ("rate_hz: 5", "rate_hz: fast", "workload.rate_hz: must be a number", 11),
        ("[edge_only, auto]", "[edge_only, sideways]", r"policies\[1\]: unknown policy", 20),
        ("action: kill_cloud", "action: explode", r"events\[0\].action: must be one of", 18),
        ("at_s: 1,", "at_s: 99,", r"events\[0\].at_s: is after the end", 18),
        ("example: digits", "example: alexnet", "model.example: unknown example model", 4),
        (
            "{duration_s: 1, outage: true}",
            "{duration_s: 0, outage: true}",
            r"segments\[1\].duration_s: must be > 0",
            16,
        ),
    ],
)
def test_invalid_fields_are_named_with_line(old: str, new: str, field: str, line: int) -> None:
    msg = _err(GOOD.replace(old, new))
    assert msg.startswith(f"s.yaml:{line}: "), msg
    assert __import__("re").search(field, msg), msg


def test_every_bad_field_is_named_with_the_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(
        GOOD.replace("rate_hz: 5", "rate_hz: -5").replace(
            "{duration_s: 1, outage: true}", "{duration_s: 1, outage: true, lossy: 1}"
        )
    )
    with pytest.raises(ConfigError) as e:
        load_scenario(p)
    lines = str(e.value).splitlines()
    assert lines[0] == f"{p}:11: workload.rate_hz: must be > 0, got -5", lines
    assert lines[1].startswith(
        f"{p}:16: network.segments[1].lossy: unknown key 'lossy' (allowed: duration_s, "
    ), lines
    assert len(lines) == 2


def test_null_means_the_default_and_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "manifest.json").write_text("{}")
    p = tmp_path / "s.yaml"
    p.write_text(
        GOOD.replace("example: digits", "bundle: b")
        .replace("count: 2", "count: null")
        .replace("[edge_only, auto]", "null")
    )
    sc = load_scenario(p)
    assert sc.model.bundle == (tmp_path / "b").resolve() and sc.model.example is None
    assert sc.edge.count == 1 and sc.policies == ("edge_only", "cloud_only", "auto")


@pytest.mark.parametrize(
    ("old", "new", "msg"),
    [
        ("count: 2", "count: 2.0", "s.yaml:7: edges.count: must be an integer, got 2.0"),
        (
            "calibrate: false",
            "calibrate: 0",
            "s.yaml:5: model.calibrate: must be true or false, got 0",
        ),
        (
            "arrivals: poisson",
            "arrivals: 1",
            "s.yaml:12: workload.arrivals: must be one of 'uniform' or 'poisson', got 1",
        ),
    ],
)
def test_values_are_not_coerced(old: str, new: str, msg: str) -> None:
    assert _err(GOOD.replace(old, new)) == msg


def test_missing_and_malformed_trace_files(tmp_path: Path) -> None:
    text = GOOD.replace("  segments:\n", "  mahimahi: {up: missing.up}\n  segments:\n").replace(
        "up_mbps: 5, ", ""
    )
    msg = _err(text, tmp_path)
    assert "s.yaml:14: network.mahimahi.up: trace file not found" in msg, msg
    (tmp_path / "bad.up").write_text("0\n12\n7\n")
    msg = _err(text.replace("missing.up", "bad.up"), tmp_path)
    assert "network.mahimahi.up" in msg and "bad.up:3" in msg and "backwards" in msg, msg
    (tmp_path / "good.up").write_text("0\n5\n10\n")
    assert (
        parse_scenario(
            text.replace("missing.up", "good.up"), source="s.yaml", base=tmp_path
        ).link.uplink.mahimahi
        is not None
    )


def test_yaml_syntax_error_has_line() -> None:
    msg = _err(GOOD.replace("count: 2", "count: [2"))
    assert msg.startswith("s.yaml:") and "invalid YAML" in msg


def test_schedule_is_a_function_of_the_seed() -> None:
    sc = parse_scenario(GOOD, source="s.yaml")
    a, b = schedule(sc), schedule(sc)
    assert a == b and len(a) == 20
    assert [x.at_s for x in a] == sorted(x.at_s for x in a)
    from dataclasses import replace

    c = schedule(replace(sc, seed=4))
    assert [x.at_s for x in c] != [x.at_s for x in a]


def test_shipped_scenarios_are_valid() -> None:
    files = sorted(scenarios_dir().glob("*.yaml"))
    names = {f.stem for f in files}
    assert {
        "stable-wifi",
        "commute-4g",
        "congested-evening",
        "outage-recovery",
        "iot-uplink",
        "fleet-8-edges",
        "demo",
        "split-gateway",
    } <= names
    for f in files:
        sc = load_scenario(f)
        assert "auto" in sc.policies
        # issue 16: every shipped scenario runs EfficientNet-Lite0 on camera frames
        assert sc.model.example == "efficientnet", f
        assert sc.duration_s * len(sc.policies) <= 100, f  # each runs in about 1-2 minutes


def test_tiny_scenario_end_to_end(tmp_path: Path) -> None:
    """Real cloud process, emulator process, two edge processes; a link cut loses nothing."""
    from collab.scenario.runner import run_scenario

    text = textwrap.dedent("""\
        name: tiny
        seed: 2
        model: {example: digits, calibrate: false}
        edges: {count: 2, slowdown: 20, probe_interval_s: 0.2}
        workload: {requests: 6, rate_hz: 8, deadline_ms: 300}
        network:
          segments:
            - {duration_s: 10, up_mbps: 20, down_mbps: 20, rtt_ms: 10}
        events:
          - {at_s: 0.5, action: cut_link, duration_s: 0.4}
        policies: [edge_only, cloud_only, auto]
        """)
    sc = parse_scenario(text, source="tiny.yaml")
    out = tmp_path / "out"
    report = run_scenario(sc, out, progress=False)
    saved = json.loads((out / "report.json").read_text())
    assert saved["scenario"] == "tiny" and set(saved["policies"]) == {
        "edge_only",
        "cloud_only",
        "auto",
    }
    for p, s in report["policies"].items():
        assert s["count"] == 12 and s["lost"] == 0, (p, s)
        assert s["mean_ms"] > 0 and s["agreement"] == 1.0  # lossless codec: exact answers
    assert report["policies"]["edge_only"]["path_mix"] == {"edge_only": 12}
    assert report["policies"]["cloud_only"]["bytes_total"] > 0
    assert report["policies"]["cloud_only"]["fallbacks"] >= 1  # the cut hit cloud-only requests
    assert report["oracle"]["mean_ms"] > 0 and "acceptance" in report
    # the two devices profiled together, every path priced (runner.profile_worker)
    assert {"edge_only", "cloud_only"} <= set(saved["profile"])
    assert all(p["base_ms"] > 0 for p in saved["profile"].values())
    lines = (out / "requests.jsonl").read_text().splitlines()
    assert len(lines) == 36
    for name in ("latency_cdf.png", "timeline.png", "bytes.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    import matplotlib.image

    img = matplotlib.image.imread(out / "timeline.png")
    assert img.shape[0] > 400 and img.std() > 0.01  # a real picture, not a blank canvas
    assert "| auto |" in (out / "report.md").read_text()


def test_compare_runs_reports_path_agreement(tmp_path: Path) -> None:
    from collab.scenario.cli import compare_runs

    def write(d: Path, paths: list[str]) -> None:
        d.mkdir()
        rows = [
            {
                "policy": "auto",
                "edge": 0,
                "index": i,
                "path": p,
                "split_point": None,
                "latency_ms": 10.0 + i,
                "lost": False,
            }
            for i, p in enumerate(paths)
        ]
        (d / "requests.jsonl").write_text("\n".join(json.dumps(r) for r in rows))

    write(tmp_path / "a", ["edge_only", "cloud_only", "cloud_only", "edge_only"])
    write(tmp_path / "b", ["edge_only", "cloud_only", "edge_only", "edge_only"])
    res = compare_runs(tmp_path / "a", tmp_path / "b")
    assert res["auto"]["same_path"] == 0.75 and res["auto"]["requests"] == 4
    with pytest.raises(ConfigError):
        compare_runs(tmp_path / "a", tmp_path / "missing")


def _one_edge() -> Scenario:
    """One edge, 20 requests over a steady 5/10 Mbit/s link with 20 ms RTT."""
    return parse_scenario(
        textwrap.dedent("""\
            model: {example: digits, calibrate: false}
            workload: {requests: 20, rate_hz: 5}
            network:
              segments: [{duration_s: 2, up_mbps: 5, down_mbps: 10, rtt_ms: 20}]
            policies: [edge_only, cloud_only, auto]
            """),
        source="s.yaml",
    )


def _rec(
    policy: str, index: int, latency_ms: float, *, lost: bool = False, **timings: float
) -> Record:
    return Record(
        policy=policy,
        edge=0,
        index=index,
        at_s=index * 0.2,
        start_s=index * 0.2,
        latency_ms=math.nan if lost else latency_ms,
        path="lost" if lost else ("edge_only" if policy == "edge_only" else "cloud_only"),
        split_point=None,
        codec=None,
        bytes_sent=0 if policy == "edge_only" else 3000,
        deadline_met=not lost,
        agree=not lost,
        fell_back=False,
        lost=lost,
        timings=dict(timings),
    )


PROF = {
    "edge_only": {"base_ms": 60.0, "edge_ms": 60.0},
    "cloud_only": {"base_ms": 5.0, "edge_ms": 0.0, "bytes": 3000.0},
}


def test_the_model_oracle_prices_the_measured_framing() -> None:
    """The model oracle's inputs are the profile, the calibration, the trace and the
    framing measured at startup (no judged record): bigger framing, slower cloud."""
    from collab.scenario.measured import Framing
    from collab.scenario.oracle import compute_oracle, network_ms

    sc = _one_edge()  # 5 Mbit/s up, 10 down, 20 ms RTT
    small, big = (
        Framing(request_bytes=0, answer_bytes=0),
        Framing(request_bytes=5000, answer_bytes=50_000),
    )
    extra = network_ms(sc, 0.0, 3000, big) - network_ms(sc, 0.0, 3000, small)
    assert extra == pytest.approx(5000 * 8 / 5e6 * 1e3 + 50_000 * 8 / 10e6 * 1e3, rel=1e-6)
    plan = schedule(sc)
    fast = compute_oracle(sc, plan, PROF, None, {}, small)
    assert set(fast.path) == {"cloud_only"} and fast.best_static_path == "cloud_only"
    assert fast.mean_ms == pytest.approx(5.0 + network_ms(sc, 0.0, 3000, small), rel=1e-6)
    heavy = Framing(request_bytes=40_000, answer_bytes=0)  # 64 ms more uplink: edge wins
    assert set(compute_oracle(sc, plan, PROF, None, {}, heavy).path) == {"edge_only"}


def test_the_model_oracle_prices_the_device_state_at_each_request() -> None:
    """A device episode (edge compute x2.5 in the first half) raises edge-only's price
    there and only there, and moves the sends of split/cloud paths as late."""
    from collab.scenario.measured import Framing
    from collab.scenario.oracle import compute_oracle

    sc = _one_edge()
    plan = schedule(sc)
    mid = plan[len(plan) // 2].at_s
    slow = {"edge_only": {"base_ms": 100.0, "edge_ms": 95.0}}
    none = Framing(request_bytes=0, answer_bytes=0)
    flat = compute_oracle(sc, plan, slow, None, {}, none)
    ep = compute_oracle(sc, plan, slow, None, {}, none, lambda e, t: 2.5 if t < mid else 1.0)
    for a, f, g in zip(plan, flat.latency_ms, ep.latency_ms, strict=True):
        assert f == pytest.approx(100.0)
        assert g == pytest.approx(100.0 + 95.0 * 1.5 if a.at_s < mid else 100.0)


def test_the_model_oracle_queues_frames_on_the_one_uplink() -> None:
    """Two edges send at once over the shared 5 Mbit/s uplink: the oracle, which has
    already sent one frame, would wait 24 ms for the link with the second and finishes it
    on the edge instead (static paths are priced on an idle link)."""
    from collab.scenario.measured import Framing
    from collab.scenario.oracle import compute_oracle, network_ms
    from collab.scenario.requests import Arrival

    sc = _one_edge()
    none = Framing(request_bytes=0, answer_bytes=0)
    prof = {
        "edge_only": {"base_ms": 60.0, "edge_ms": 60.0},
        "cloud_only": {"base_ms": 5.0, "edge_ms": 0.0, "bytes": 15_000.0},
    }
    plan = [Arrival(edge=e, index=0, at_s=0.5, input_index=e) for e in (0, 1)]
    o = compute_oracle(sc, plan, prof, None, {}, none)
    alone = 5.0 + network_ms(sc, 0.5, 15_000, none)
    assert alone < 60.0
    assert alone + 15_000 * 8 / 5e3 > 60.0  # queued, cloud-only would lose
    assert o.per_path_ms["cloud_only"] == pytest.approx([alone, alone])
    assert sorted(o.path) == ["cloud_only", "edge_only"]
    assert sorted(o.latency_ms) == pytest.approx([alone, 60.0])


def _frames_scenario(noise: float, seed: int = 3) -> Scenario:
    return parse_scenario(
        textwrap.dedent(f"""\
            seed: {seed}
            model: {{example: efficientnet}}
            workload: {{requests: 8, rate_hz: 4, input_noise: {noise}}}
            network:
              segments: [{{duration_s: 2, up_mbps: 5, down_mbps: 10, rtt_ms: 20}}]
            policies: [edge_only, cloud_only, auto]
            """),
        source="f.yaml",
    )


def test_an_image_workload_sends_noisy_camera_frames() -> None:
    """EfficientNet scenarios replay uint8 camera frames (infer_image: the cloud-only path
    sends an image codec); input_noise is the std the model input sees."""
    from collab.codec.image import preprocess
    from collab.models.registry import LITE0_PREPROCESSING
    from collab.scenario.prepare import image_workload, scenario_inputs, scenario_requests

    sc, clean = _frames_scenario(0.05), _frames_scenario(0.0)
    assert image_workload(sc) and not image_workload(_one_edge())
    frames = scenario_requests(sc, 6)
    assert frames.dtype == np.uint8 and frames.shape == (6, 224, 224, 3)
    ref = scenario_requests(clean, 6)
    noise = preprocess(frames, LITE0_PREPROCESSING) - preprocess(ref, LITE0_PREPROCESSING)
    assert 0.04 < float(noise.std()) < 0.055  # rounding to levels, clipping at 0/255
    assert np.array_equal(scenario_inputs(sc, 6), preprocess(frames, LITE0_PREPROCESSING))
    again = scenario_requests(sc, 6)
    other = scenario_requests(_frames_scenario(0.05, seed=4), 6)
    assert np.array_equal(frames, again) and not np.array_equal(frames, other)


def test_the_oracle_prices_an_image_workloads_cloud_path_with_the_image_codecs() -> None:
    from collab.scenario.measured import Framing
    from collab.scenario.oracle import compute_oracle, network_ms

    sc = _frames_scenario(0.0)
    row = {"ratio": 1.0, "encode_ms": 1.0, "decode_ms": 1.0, "rel_l2": 0.0, "agreement": 1.0}
    cal = {
        "input": {"f32+zstd1": {**row, "bytes": 600_000.0}},
        "image": {"png": {**row, "bytes": 60_000.0}},
    }
    prof = {"cloud_only": {"base_ms": 5.0, "edge_ms": 0.0, "bytes": 60_000.0}}
    f = Framing(request_bytes=0, answer_bytes=0)
    got = compute_oracle(sc, schedule(sc), prof, cal, {}, f)
    assert got.mean_ms == pytest.approx(5.0 + 2.0 + network_ms(sc, 0.0, 60_000, f), rel=1e-6)


def test_the_measured_oracle_is_the_per_request_best_static_run() -> None:
    from collab.scenario.oracle import measured_oracle

    recs = [_rec("edge_only", i, 60.0) for i in range(4)]
    recs += [_rec("cloud_only", i, v) for i, v in enumerate([20.0, 90.0, 30.0])]
    recs += [_rec("cloud_only", 3, 0.0, lost=True)]  # lost: counts for no policy
    recs += [_rec("auto", i, 1.0) for i in range(4)]  # the policy judged is no yardstick
    m = measured_oracle(recs, ["edge_only", "cloud_only"])
    assert m.latency_ms == {(0, 0): 20.0, (0, 1): 60.0, (0, 2): 30.0, (0, 3): 60.0}
    assert m.policy[(0, 1)] == "edge_only" and m.policy[(0, 0)] == "cloud_only"
    assert m.mean_ms == pytest.approx(42.5) and m.mean_over([(0, 0), (0, 9)]) == 20.0


def _report(auto_ms: float, sc: Scenario | None = None) -> dict[str, Any]:
    from collab.scenario.measured import Framing, Measured
    from collab.scenario.oracle import compute_oracle, measured_oracle
    from collab.scenario.report import build_report

    sc = sc or _one_edge()
    plan = schedule(sc)
    framing = Framing(request_bytes=100, answer_bytes=100)
    oracle = compute_oracle(sc, plan, PROF, None, {}, framing)
    recs = []
    for a in plan:
        recs.append(_rec("edge_only", a.index, 60.0, edge_ms=60.0))
        recs.append(
            _rec(
                "cloud_only",
                a.index,
                oracle.latency_ms[a.index],
                cloud_compute_ms=8.0,
                cloud_batch_size=2.0,
                cloud_decode_ms=1.0,
            )
        )
        recs.append(_rec("auto", a.index, auto_ms, cloud_compute_ms=4.0, cloud_batch_size=1.0))
    static = ["edge_only", "cloud_only"]
    measured = Measured(profile=PROF, framing=framing, link={"cloud_only": {"bytes_up": 2_000_000}})
    return build_report(
        sc,
        recs,
        oracle,
        measured_oracle(recs, static),
        measured,
        sc.policies,
        wall_s=1.0,
        bundle=Path("b"),
    )


def test_acceptance_lists_every_check_with_its_numbers_and_drives_the_exit_code() -> None:
    from collab.scenario.cli import exit_code

    good = _report(auto_ms=10.0)
    o = good["oracle"]["mean_ms"]
    assert good["measured_oracle"]["mean_ms"] == pytest.approx(o)  # cloud_only ran at the model
    assert good["acceptance"]["pass"] and exit_code(good, no_fail=False) == 0
    bad = _report(auto_ms=2 * o)
    checks = {c["name"]: c for c in bad["acceptance"]["checks"]}
    assert set(checks) == {
        "auto / measured oracle",
        "auto / model oracle",
        "auto / best static",
        "lost requests",
        "auto agreement",
    }
    assert checks["auto / measured oracle"]["value"] == pytest.approx(2.0)
    assert checks["auto / model oracle"]["value"] == pytest.approx(2.0)
    assert (
        checks["auto / model oracle"]["limit"] == 1.10 and not checks["auto / model oracle"]["ok"]
    )
    assert checks["lost requests"]["ok"] and checks["auto agreement"]["ok"]
    assert not bad["acceptance"]["pass"]
    assert exit_code(bad, no_fail=False) == 1 and exit_code(bad, no_fail=True) == 0
    # the scenario's own factors: a generous one lets the same numbers pass
    lax = _report(
        auto_ms=2 * o,
        sc=replace(
            _one_edge(),
            acceptance=Acceptance(vs_measured_oracle=3.0, vs_model_oracle=3.0, vs_best_static=3.0),
        ),
    )
    assert lax["acceptance"]["pass"]


def test_cost_report_per_1000_requests_from_measured_compute_and_bytes() -> None:
    rep = _report(auto_ms=10.0)
    n = rep["requests_per_policy"]
    c = rep["policies"]["cloud_only"]["cost"]
    assert c["uplink_mb"] == pytest.approx(2.0 * 1000 / n)  # the emulator's count of the run
    assert c["frames_mb"] == pytest.approx(3000 * 1000 / 1e6)  # of which its frames
    assert c["cloud_s"] == pytest.approx((8.0 / 2 + 1.0) / 1000 * 1000)  # batch share + decode
    assert c["edge_s"] == 0.0 and c["usd_edge"] == 0.0
    cm = rep["cost_model"]
    assert c["usd"] == pytest.approx(
        c["uplink_mb"] / 1000 * cm["uplink_usd_per_gb"] + c["cloud_s"] * cm["cloud_usd_per_vcpu_s"]
    )
    e = rep["policies"]["edge_only"]["cost"]
    assert e["edge_s"] == pytest.approx(60.0) and e["edge_wh"] == pytest.approx(
        60.0 * cm["edge_power_w"] / 3600
    )
    a = rep["policies"]["auto"]["cost"]
    assert a["uplink_mb"] == pytest.approx(3000 * 1000 / 1e6)  # no counter: the frames it sent
    save = 1 - a["usd"] / c["usd"]
    lat = rep["policies"]["auto"]["mean_ms"] / rep["policies"]["cloud_only"]["mean_ms"]
    assert rep["cost_line"].startswith(
        f"auto saves {save:.0%} cost vs cloud_only at {lat:.0%} of its latency"
    )


def _children(pid: int) -> set[int]:
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.add(int(stat.parent.name))
    return out


def test_sigterm_stops_the_scenario_and_its_processes(tmp_path: Path) -> None:
    """SIGTERM to `collab scenario run` (an operator's kill, a CI timeout) stops the cloud
    node and the link emulator it started: Python's default SIGTERM left both running."""
    import contextlib
    import os
    import signal
    import subprocess
    import sys
    import time

    f = tmp_path / "long.yaml"
    f.write_text(
        textwrap.dedent("""\
            name: long
            model: {example: digits, calibrate: false}
            workload: {requests: 400, rate_hz: 4}
            network:
              segments: [{duration_s: 100, up_mbps: 20, down_mbps: 20, rtt_ms: 10}]
            policies: [edge_only, auto]
            """)
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "collab.cli", "scenario", "run", str(f), "--out",
         str(tmp_path / "out"), "--no-progress"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    kids: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while len(kids) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            kids = _children(proc.pid)
        assert len(kids) >= 2, "the cloud node and the emulator did not start"
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) != 0
        end = time.monotonic() + 20
        while time.monotonic() < end and any(Path(f"/proc/{k}").exists() for k in kids):
            time.sleep(0.2)
        alive = [
            k
            for k in kids
            if Path(f"/proc/{k}/stat").exists()
            and Path(f"/proc/{k}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        ]
        assert not alive, f"left running: {alive}"
    finally:
        if proc.poll() is None:
            proc.kill()
        for k in kids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(k, signal.SIGKILL)


def test_a_failing_scenario_exits_non_zero_unless_no_fail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`collab scenario run` on a scenario whose acceptance cannot hold (a model-oracle factor
    of 0.01): exit 1, and with --no-fail exit 0; the report says FAIL either way."""
    from collab.cli import main

    f = tmp_path / "fail.yaml"
    f.write_text(
        textwrap.dedent("""\
            name: fail
            seed: 1
            model: {example: digits, calibrate: false}
            edges: {slowdown: 20}
            workload: {requests: 5, rate_hz: 8}
            network:
              segments: [{duration_s: 10, up_mbps: 20, down_mbps: 20, rtt_ms: 10}]
            acceptance: {vs_model_oracle: 0.01}
            policies: [edge_only, cloud_only, auto]
            """)
    )
    out = tmp_path / "out"
    assert main(["scenario", "run", str(f), "--out", str(out), "--no-progress"]) == 1
    rep = json.loads((out / "report.json").read_text())
    assert not rep["acceptance"]["pass"]
    checks = {c["name"]: c for c in rep["acceptance"]["checks"]}
    assert (
        not checks["auto / model oracle"]["ok"] and checks["auto / model oracle"]["limit"] == 0.01
    )
    a = rep["policies"]["auto"]
    assert a["ratio_to_model_oracle"] > 0 and a["ratio_to_measured_oracle"] > 0
    assert rep["framing"]["calls"] > 0 and rep["framing"]["answer_bytes"] > 40  # 10 f32 logits
    assert rep["policies"]["cloud_only"]["cost"]["cloud_s"] > 0
    assert rep["policies"]["edge_only"]["cost"]["edge_s"] > 0
    assert rep["policies"]["cloud_only"]["cost"]["uplink_mb"] > 0
    assert "acceptance: FAIL" in (out / "report.md").read_text()
    again = tmp_path / "again"
    assert main(["scenario", "run", str(f), "--out", str(again), "--no-progress", "--no-fail"]) == 0
    assert "acceptance: FAIL" in (again / "report.md").read_text()
    # the recomputed report keeps the verdict and the framing measured at startup
    framing = json.loads((again / "report.json").read_text())["framing"]
    assert main(["scenario", "report", str(f), "--out", str(again)]) == 1
    assert json.loads((again / "report.json").read_text())["framing"] == framing
    # the summary of both runs: the failed check in bold, the verdict, the exit code
    capsys.readouterr()
    assert main(["scenario", "summary", str(out), str(again)]) == 1
    table = capsys.readouterr().out
    rows = [line for line in table.splitlines() if line.startswith("| fail |")]
    model = f"**{checks['auto / model oracle']['value']:.3f}**"
    assert len(rows) == 2 and model in rows[0] and rows[0].endswith("| FAIL |"), table
    speedup = rep["policies"]["cloud_only"]["mean_ms"] / a["mean_ms"]
    assert f"{speedup:.2f}x / " in rows[0] and rep["cost_line"] in table
    assert main(["scenario", "summary", str(out), "--no-fail"]) == 0
    assert main(["scenario", "summary", str(tmp_path)]) != 0  # no report.json there
    assert "not a finished scenario run" in capsys.readouterr().err
    (tmp_path / "report.json").write_text('{"a": 1}')  # JSON, but not a report
    assert main(["scenario", "summary", str(tmp_path)]) != 0
    assert "not a scenario report" in capsys.readouterr().err


def test_oracle_prices_the_codecs_the_engine_may_choose() -> None:
    """The oracle's codec set is the engine's (collab.codec.policy.allowed): lossy codecs
    within the budget and every lossless one."""
    from collab.scenario.oracle import _codec_table

    def stat(nbytes: float, agreement: float) -> dict[str, float]:
        return {"bytes": nbytes, "encode_ms": 1.0, "decode_ms": 0.5, "agreement": agreement}

    stats = {
        "f32+zstd1": stat(4000, 0.99),
        "int8+zstd1": stat(1000, 0.998),
        "int4+zstd1": stat(500, 0.9),
    }
    assert sorted(_codec_table({}, stats, 0.005)) == [(1.5, 1000.0), (1.5, 4000.0)]
    assert sorted(_codec_table({}, stats, 0.2)) == [(1.5, 500.0), (1.5, 1000.0), (1.5, 4000.0)]
    assert _codec_table({"encode_ms": 2.0, "bytes": 64.0}, None, 0.0) == [(2.0, 64.0)]


def test_acceptance_and_cost_keys_are_checked_with_their_line() -> None:
    base = GOOD + "acceptance:\n  vs_model_oracle: 0\ncost:\n  edge_power_w: 5\n"
    assert "s.yaml:22: acceptance.vs_model_oracle: must be > 0" in _err(base)
    assert "s.yaml:24: cost.edge_power_w: must be >= 0" in _err(
        base.replace("vs_model_oracle: 0", "vs_model_oracle: 1.2").replace(
            "edge_power_w: 5", "edge_power_w: -5"
        )
    )
    assert "unknown key" in _err(GOOD + "cost:\n  dollars: 1\n")
    sc = parse_scenario(base.replace("vs_model_oracle: 0", "vs_model_oracle: 1.2"), source="s.yaml")
    assert sc.acceptance.vs_model_oracle == 1.2 and sc.acceptance.vs_best_static == 1.05
    assert sc.cost.edge_power_w == 5.0


def test_the_demo_exits_non_zero_on_fail_unless_no_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`collab demo` takes its exit code from the verdict too (the run itself replaced by a
    failing report: the scenario run's exit code is tested end to end above)."""
    import collab.scenario.runner as runner
    from collab.cli import main

    rep = _report(auto_ms=1000.0)
    assert not rep["acceptance"]["pass"]
    monkeypatch.setattr(runner, "run_scenario", lambda sc, out, **kw: rep)
    assert main(["demo", "--out", str(tmp_path)]) == 1
    assert main(["demo", "--out", str(tmp_path), "--no-fail"]) == 0
    monkeypatch.setattr(runner, "run_scenario", lambda sc, out, **kw: _report(auto_ms=10.0))
    assert main(["demo", "--out", str(tmp_path)]) == 0


def test_the_scenario_cloud_node_runs_on_a_core_of_its_own(
    digits_bundle: Path, tmp_path: Path
) -> None:
    """The cloud is another machine: with two cores or more it gets the last one alone,
    and its batch workers follow its affinity, not the machine's core count."""
    import os

    from collab.scenario.env import CloudNode, cloud_cores

    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        assert cloud_cores() is None
        return
    assert cloud_cores() == {cores[-1]}
    node = CloudNode(digits_bundle, _one_edge(), tmp_path / "cloud.log")
    node.start()
    try:
        assert node.proc is not None
        assert os.sched_getaffinity(node.proc.pid) == {cores[-1]}
    finally:
        node.stop()
    from cloud_node.config import CloudConfig

    os.sched_setaffinity(0, {cores[0]})
    try:
        assert CloudConfig(bundles=(digits_bundle,)).worker_count == 1
    finally:
        os.sched_setaffinity(0, set(cores))
