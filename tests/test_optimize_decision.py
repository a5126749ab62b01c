"""The decision engine picks the quantized head variant exactly when the accuracy
budget allows it and its predicted latency is lower (real optimized bundle)."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from collab.bundle import Manifest, load_bundle
from collab.chain import BundleSessions
from collab.decision import (
    NO_HYSTERESIS,
    CloudState,
    EdgeState,
    Policy,
    Profile,
    decide,
    profile_from_manifest,
)
from collab.edge.client import Client
from collab.models.registry import example_inputs
from collab.net.estimator import NetState
from collab.optimize.samples import Samples
from collab.optimize.variants import quantize_bundle, select_splits
from collab.ort import make_session, run


@pytest.fixture(scope="module")
def optimized_root(resnet_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("opt") / "resnet"
    shutil.copytree(resnet_bundle, root)
    calib, held = (Samples(x=example_inputs("resnet", 128, s)[0]) for s in ("train", "test"))
    quantize_bundle(
        root,
        ["int8_static"],
        calib,
        held,
        splits="middle",
        include_full=True,
        runs=15,
        min_agreement=0.95,
        calibrate="minmax",
        progress=False,
    )
    return root


@pytest.fixture(scope="module")
def optimized(optimized_root: Path) -> Manifest:
    return load_bundle(optimized_root).manifest


def _decide(m: Manifest, split: str, budget: float):  # type: ignore[no-untyped-def]
    full = profile_from_manifest(m)
    # the FP32 edge-only path plus every path at the middle split: the choice under test
    paths = tuple(
        p
        for p in full.paths
        if p.split_point == split or (p.path == "edge_only" and p.variant is None)
    )
    # a weak edge device (10x slower than this machine) and a fast link: splitting wins
    return decide(
        Profile(model_name=m.model_name, paths=paths),
        policy=Policy(mode="auto"),
        net=NetState(rtt_ms=1.0, bandwidth_bps=1e9),
        cloud=CloudState(),
        edge=EdgeState(compute_scale=10.0),
        accuracy_budget=budget,
        hysteresis=NO_HYSTERESIS,
    )


def test_engine_uses_int8_head_within_budget_and_fp32_outside(optimized: Manifest) -> None:
    sp = select_splits(optimized, "middle")[0]
    (v,) = sp.head_variants
    d = _decide(optimized, sp.name, budget=0.05)
    by_key = {c.key: c for c in d.candidates}
    int8, fp32 = by_key[f"split:{sp.name}@int8_static"], by_key[f"split:{sp.name}"]
    assert int8.edge_ms == pytest.approx(10.0 * v.ms) and fp32.edge_ms == pytest.approx(
        10.0 * sp.head_ms
    )
    assert int8.accuracy_loss == pytest.approx(1.0 - v.agreement)
    # the measured latencies decide: both were profiled side by side in one interleaved run
    if v.ms < sp.head_ms:
        assert d.chosen.key == int8.key and d.chosen.variant == "int8_static"
    else:  # a noisy run where INT8 did not win: the engine must not pick it
        assert d.chosen.key == fp32.key

    # a budget smaller than the variant's measured loss rules it out
    strict = replace(v, agreement=min(v.agreement, 0.98))
    m2 = replace(
        optimized,
        split_points=tuple(
            replace(s, head_variants=(strict,)) if s.name == sp.name else s
            for s in optimized.split_points
        ),
    )
    d2 = _decide(m2, sp.name, budget=0.01)
    assert d2.chosen.variant is None and d2.chosen.key == f"split:{sp.name}"
    assert not {c.key: c for c in d2.candidates}[int8.key].feasible
    # ... and allowing exactly that loss brings it back (when it is faster)
    d3 = _decide(m2, sp.name, budget=1.0 - strict.agreement)
    assert d3.chosen.variant == ("int8_static" if v.ms < sp.head_ms else None)


def test_client_runs_the_int8_edge_only_variant_when_the_budget_allows(
    optimized_root: Path,
) -> None:
    """End to end through collab.Client (no cloud: edge-only candidates only)."""
    m = load_bundle(optimized_root).manifest
    (v,) = m.full_variants
    x = example_inputs("resnet", 1, "test")[0]
    faster = v.ms < m.full_ms
    with Client(
        optimized_root, accuracy_budget=1.0 - v.agreement + 1e-9, hysteresis=0.0, hysteresis_ms=0.0
    ) as c:
        r = c.infer(x)
    assert r.path == "edge_only" and r.variant == ("int8_static" if faster else None)
    # the output is really the INT8 model's (or the FP32 one's), not a relabelled FP32 run
    b = load_bundle(optimized_root)
    want = run(make_session(optimized_root / v.path), x) if faster else BundleSessions(b).full()(x)
    np.testing.assert_allclose(r.output, want, rtol=1e-5, atol=1e-5)
    if v.agreement < 1.0:  # a budget below the variant's measured loss: FP32
        with Client(optimized_root, accuracy_budget=0.0) as c:
            r0 = c.infer(x)
        assert r0.variant is None
        np.testing.assert_allclose(r0.output, BundleSessions(b).full()(x), rtol=1e-5, atol=1e-5)
