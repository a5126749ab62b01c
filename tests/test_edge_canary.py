"""The edge's per-version telemetry and canary shadow (edge_node.canary) in process, on
real ONNX Runtime bundles: agreement of a candidate with the baseline it shadows."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from test_control_support import tiny_bundle, wait_until

from collab.control.canary import MAX_LATENCY_SAMPLES
from collab.edge.client import Client
from collab.edge.config import ClientConfig
from edge_node.canary import VersionMonitor


def _serve(client: Client, monitor: VersionMonitor, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(n):
        x = rng.normal(size=(1, 4)).astype(np.float32)
        monitor.observe(x, client.infer(x, policy="edge_only"))
        time.sleep(0.001)  # the shadow worker keeps up (dropped ones are counted, not compared)


def test_shadow_measures_agreement_with_the_baseline(tmp_path: Path) -> None:
    base = tiny_bundle(tmp_path / "base", rev=1)
    same = tiny_bundle(tmp_path / "same", rev=2, weights=1, scale=2.0)  # same top-1 answers
    other = tiny_bundle(tmp_path / "other", rev=4)  # other weights
    cfg = ClientConfig()
    mon = VersionMonitor(cfg)
    with Client(base, config=cfg) as client:
        mon.served(client.bundle.version, base)
        v_base = client.bundle.version
        _serve(client, mon, 50)
        (t,) = mon.take()  # no shadow yet: counts and latencies only
        assert (t.version, t.requests, t.shadow_compared) == (v_base, 50, 0)
        assert len(t.latency_ms) == 50 and all(x > 0 for x in t.latency_ms)
        for cand, expect_all in ((same, True), (other, False)):
            v = client.swap_bundle(cand)
            mon.served(v, cand)
            mon.set_shadow(v_base, 1.0)
            _serve(client, mon, 120)
            wait_until(  # every sampled request compared or dropped
                lambda: (
                    (c := mon._counts.get(v)) is not None  # noqa: B023
                    and c.compared + c.dropped == 120
                ),
                10,
                "shadow worker drained",
            )
            (t,) = mon.take()
            assert t.version == v and t.shadow_version == v_base
            assert t.shadow_compared + t.shadow_dropped == 120 and t.shadow_compared >= 60
            if expect_all:
                assert t.shadow_agreed == t.shadow_compared
            else:
                assert t.shadow_agreed < 0.95 * t.shadow_compared
        mon.set_shadow("", 0.0)  # a directive without a shadow unloads it
        assert mon._worker is None
        _serve(client, mon, 10)
        (t,) = mon.take()
        assert t.shadow_compared == 0 and t.shadow_version == ""


def test_latency_sample_is_bounded_and_errors_are_counted() -> None:
    mon = VersionMonitor(ClientConfig())

    class R:  # what observe() reads of an InferenceResult
        model_version = "v"
        output = np.zeros(2, np.float32)

        def __init__(self, ms: float) -> None:
            self.latency_ms = ms

    for i in range(5 * MAX_LATENCY_SAMPLES):
        mon.observe(np.zeros((1, 4), np.float32), R(float(i)))  # type: ignore[arg-type]
    mon.error("v")
    (t,) = mon.take()
    assert t.requests == 5 * MAX_LATENCY_SAMPLES + 1 and t.errors == 1
    assert len(t.latency_ms) == MAX_LATENCY_SAMPLES
    # a uniform reservoir: not just the first ones kept
    assert max(t.latency_ms) > 2 * MAX_LATENCY_SAMPLES
    assert mon.take() == ()
