"""``collab scenario sweep``: the model grid on a synthetic profile, the budget refusal,
the spot-point choice, the phase diagram and the CLI's bad input."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from collab.decision import PathSpec, Profile
from collab.errors import ConfigError
from collab.net.estimator import NetState
from collab.scenario import cli as scenario_cli
from collab.scenario.sweep_model import (
    SweepConfig,
    check_budget,
    estimate_grid_s,
    estimate_spots_s,
    model_cell,
    model_grid,
    nearest_cells,
    path_kind,
    pick_spots,
    predict_path,
    split_region,
    write_table,
)
from collab.scenario.sweep_plots import phase_diagram

FULL_MS, HEAD_MS, TAIL_MS = 10.0, 6.0, 4.0
IMAGE_BYTES, FEATURE_BYTES = 20_000, 2_000


def _codec(nbytes: int) -> dict[str, dict[str, float]]:
    return {
        "int8+zstd1": {
            "bytes": float(nbytes),
            "ratio": 1.0,
            "encode_ms": 0.1,
            "decode_ms": 0.1,
            "rel_l2": 0.0,
            "agreement": 1.0,
        }
    }


def profile() -> Profile:
    """A model whose head shrinks the input tenfold at 60 % of the compute."""
    return Profile(
        model_name="synthetic",
        paths=(
            PathSpec(path="edge_only", edge_ms=FULL_MS),
            PathSpec(
                path="cloud_only",
                cloud_ms=FULL_MS,
                local_finish_ms=FULL_MS,
                raw_bytes=IMAGE_BYTES,
                output_bytes=40,
                codec_stats=_codec(IMAGE_BYTES),
            ),
            PathSpec(
                path="split",
                split_point="mid",
                edge_ms=HEAD_MS,
                cloud_ms=TAIL_MS,
                local_finish_ms=TAIL_MS,
                raw_bytes=FEATURE_BYTES * 4,
                output_bytes=40,
                codec_stats=_codec(FEATURE_BYTES),
            ),
        ),
    )


def _transfer_ms(nbytes: float, mbps: float) -> float:
    return (nbytes + 40) * 8 / (mbps * 1e6) * 1000


def test_model_cell_is_the_decision_engines_prediction() -> None:
    """On a slow uplink to a slow device the split wins: it sends a tenth of the bytes
    and leaves 40 % of the compute to the cloud. The numbers are the engine's formula."""
    p, scale, mbps, rtt = profile(), 8.0, 1.0, 5.0
    c = model_cell(p, "rpi4", scale, mbps, rtt, 0.01)
    split = HEAD_MS * scale + 0.1 + _transfer_ms(FEATURE_BYTES, mbps) + rtt + TAIL_MS + 0.1
    cloud = 0.1 + _transfer_ms(IMAGE_BYTES, mbps) + rtt + FULL_MS + 0.1
    edge = FULL_MS * scale
    assert c.winner == "split:mid" and c.best_split == "split:mid"
    assert c.winner_ms == pytest.approx(split)
    assert c.cloud_only_ms == pytest.approx(cloud) and c.edge_only_ms == pytest.approx(edge)
    assert c.over_cloud == pytest.approx(cloud / split) and c.over_edge == pytest.approx(
        edge / split
    )
    assert c.split_gain == pytest.approx(min(cloud, edge) / split) and c.split_gain > 1
    net = NetState(bandwidth_bps=mbps * 1e6, rtt_ms=rtt)
    assert predict_path(p, "split:mid", net, scale, 0.01).chosen.total_ms == pytest.approx(split)
    # a fast link: cloud-only; a device as fast as the profile and a long RTT: edge-only
    assert model_cell(p, "rpi4", scale, 100.0, 2.0, 0.01).winner == "cloud_only"
    assert model_cell(p, "rpi4", 1.0, 1.0, 200.0, 0.01).winner == "edge_only"


def test_grid_regions_spots_and_table(tmp_path: Path) -> None:
    cfg = SweepConfig(
        bandwidth_points=12, rtt_points=8, tiers=("rpi4", "iot-gateway"), spot_checks=3
    )
    scales = {"rpi4": 4.0, "iot-gateway": 8.0}
    cells = model_grid(cfg, profile(), scales, progress=False)
    assert len(cells) == cfg.cells == 12 * 8 * 2
    assert {c.winner for c in cells} == {"edge_only", "cloud_only", "split:mid"}
    region = split_region([c for c in cells if c.tier == "iot-gateway"])
    assert region is not None and region["splits"] == ["split:mid"]
    assert region["best"]["gain"] > 1.0
    spots = pick_spots(cells, 3)
    kinds = [s.winner for s in spots]
    assert kinds[0] == "split:mid" and sorted(kinds[1:]) == ["cloud_only", "edge_only"]
    region_cells = [c for c in cells if c.tier == spots[0].tier and c.winner == "split:mid"]
    assert spots[0] in region_cells  # inside its region, not at a grid corner
    assert spots[0].mbps not in (cfg.min_mbps, cfg.max_mbps)
    near = nearest_cells(cells, ["iot-gateway:3:40"])[0]
    assert near.tier == "iot-gateway" and 2 < near.mbps < 4.5 and 25 < near.rtt_ms < 60
    with pytest.raises(ConfigError, match="expected TIER:MBPS:RTT_MS"):
        nearest_cells(cells, ["rpi4:fast"])
    with pytest.raises(ConfigError, match="not in the sweep's tiers"):
        nearest_cells(cells, ["phone-midrange:3:40"])
    rows = write_table(cells, tmp_path).read_text().splitlines()
    assert len(rows) == 1 + len(cells) and rows[0].startswith("tier,uplink_mbps,rtt_ms,winner")
    png = phase_diagram(
        [c for c in cells if c.tier == "rpi4"], cfg, "rpi4", 4.0, [], tmp_path / "p.png"
    )
    from PIL import Image

    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > 800
        assert len(np.unique(np.asarray(im.convert("RGB")).reshape(-1, 3), axis=0)) > 20


def test_a_grid_over_budget_is_refused_with_the_estimate() -> None:
    p, scales = profile(), {"rpi4": 4.0}
    small = SweepConfig(bandwidth_points=4, rtt_points=3, tiers=("rpi4",))
    grid_s = estimate_grid_s(small, p, scales)
    assert 0 < check_budget(small, grid_s, "the model grid") < small.budget_s
    huge = SweepConfig(bandwidth_points=2000, rtt_points=2000, tiers=("rpi4",), budget_s=60)
    with pytest.raises(ConfigError, match=r"the model grid estimated at \d+ s > budget 60 s"):
        check_budget(huge, estimate_grid_s(huge, p, scales), "the model grid")
    # measured points at 0.1 Mbit/s: ~1.6 s per cloud-only request, 36 requests per point
    slow = model_grid(small, p, scales, progress=False)
    spots = [c for c in slow if c.mbps == small.min_mbps]
    spots_s = estimate_spots_s(small, spots)
    assert spots_s > len(spots) * 4 * 9 * 1.6
    tight = SweepConfig(bandwidth_points=4, rtt_points=3, tiers=("rpi4",), budget_s=100)
    with pytest.raises(ConfigError, match=r"sweep refused: the sweep estimated at"):
        check_budget(tight, spots_s, "the sweep")


def test_bad_sweep_input_names_the_problem() -> None:
    with pytest.raises(ConfigError, match=r"unknown device tier 'pi9' \(known: iot-gateway"):
        SweepConfig(tiers=("pi9",))
    with pytest.raises(ConfigError, match="min < max"):
        SweepConfig(min_mbps=10.0, max_mbps=1.0)
    with pytest.raises(ConfigError, match=r"bandwidth_points must be >= 2"):
        SweepConfig(bandwidth_points=1)
    parser = argparse.ArgumentParser()
    handler = scenario_cli.configure(parser)
    args = parser.parse_args(["sweep", "--out", "x", "--tiers", "rpi4,pi9"])
    with pytest.raises(ConfigError, match="unknown device tier 'pi9'"):
        handler(args)


def test_an_early_exit_has_its_own_region_in_the_phase_diagram(tmp_path: Path) -> None:
    """An exit answering most requests after a third of the compute wins where edge-only
    did (slow links), and the diagram labels it apart from the path it passes."""
    import dataclasses

    from collab.decision import ExitSpec

    p = profile()
    edge = p.paths[0]
    ex = ExitSpec(name="early", prefix_ms=3.0, ms=0.5, rate=0.7, agreement=0.999)
    p = dataclasses.replace(p, paths=(*p.paths, dataclasses.replace(edge, exit=ex)))
    assert path_kind("edge_only@exit:early") == "edge_only@exit:early"
    assert path_kind("split:mid@int8_static") == "split:mid"
    c = model_cell(p, "rpi4", 1.0, 1.0, 200.0, 0.01)
    assert c.winner == "edge_only@exit:early"
    assert c.winner_ms == pytest.approx(0.5 + 0.7 * 3.0 + 0.3 * FULL_MS)
    cfg = SweepConfig(bandwidth_points=8, rtt_points=6, tiers=("rpi4",), spot_checks=0)
    cells = model_grid(cfg, p, {"rpi4": 4.0}, progress=False)
    assert "edge_only@exit:early" in {c.winner for c in cells}
    png = phase_diagram(cells, cfg, "rpi4", 4.0, [], tmp_path / "p.png")
    assert png.is_file()
