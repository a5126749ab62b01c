"""Scenario files: validation errors name field and line; schedule determinism; a tiny run end to end."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from collab.errors import ConfigError
from collab.scenario.cli import scenarios_dir
from collab.scenario.requests import schedule
from collab.scenario.schema import load_scenario, parse_scenario

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
    } <= names
    for f in files:
        sc = load_scenario(f)
        assert "auto" in sc.policies
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


def test_oracle_prices_a_static_path_by_its_local_cost() -> None:
    """A static cloud run that paid 5 ms beyond the network early on and 200 ms (queueing)
    later: the oracle's cloud cost follows that, where a whole-run mean would overprice
    cloud early and underprice it late."""
    from collab.scenario.oracle import (
        calibrate_from_static_runs,
        compute_oracle,
        local_base_costs,
        network_ms,
    )
    from collab.scenario.requests import Record

    sc = parse_scenario(
        GOOD.replace("count: 2", "count: 1")
        .replace("requests: 10", "requests: 40")
        .replace("        - {duration_s: 1, outage: true}\n", "")
        .replace(
            "    events:\n      - {at_s: 1, action: kill_cloud}\n"
            "      - {at_s: 1.5, action: start_cloud}\n",
            "",
        )
        .replace("arrivals: poisson", "arrivals: uniform")
        .replace("[edge_only, auto]", "[edge_only, cloud_only, auto]"),
        source="s.yaml",
    )
    plan = schedule(sc)
    half = plan[len(plan) // 2].at_s
    recs = []
    for a in plan:
        extra = 5.0 if a.at_s < half else 200.0
        lat = network_ms(sc, a.at_s, 3000) + extra
        recs.append(
            Record(
                policy="cloud_only",
                edge=0,
                index=a.index,
                at_s=a.at_s,
                start_s=a.at_s,
                latency_ms=lat,
                path="cloud_only",
                split_point=None,
                codec=None,
                bytes_sent=3000,
                deadline_met=True,
                agree=True,
                fell_back=False,
                lost=False,
            )
        )
        recs.append(
            Record(
                policy="edge_only",
                edge=0,
                index=a.index,
                at_s=a.at_s,
                start_s=a.at_s,
                latency_ms=60.0,
                path="edge_only",
                split_point=None,
                codec=None,
                bytes_sent=0,
                deadline_met=True,
                agree=True,
                fell_back=False,
                lost=False,
            )
        )
    prof = {
        "edge_only": {"base_ms": 60.0, "edge_ms": 60.0},
        "cloud_only": {"base_ms": 5.0, "edge_ms": 0.0, "bytes": 3000.0},
    }
    refined = calibrate_from_static_runs(sc, prof, recs, None)
    assert refined["cloud_only"]["base_ms"] == pytest.approx(102.5, rel=0.05)  # the whole-run mean
    local = local_base_costs(sc, plan, refined, recs, None)
    assert local["cloud_only"][0] == pytest.approx(5.0) and local["cloud_only"][
        -1
    ] == pytest.approx(200.0)
    o = compute_oracle(sc, plan, refined, None, {}, local)
    assert o.path[0] == "cloud_only" and o.path[-1] == "edge_only"
    assert (
        compute_oracle(sc, plan, refined, None, {}).path[0] == "edge_only"
    )  # the mean misprices it


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
