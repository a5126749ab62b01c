"""collab.Client without a cloud node: edge-only behaviour, validation, threads, swaps."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import collab
from collab.bundle import load_bundle, update_bundle
from collab.edge.client import Client
from collab.edge.config import ClientConfig
from collab.edge.runtime import EdgeRuntime
from collab.errors import CodecError, ConfigError, DeadlineError
from collab.procs import free_port


def sample_inputs(bundle_dir: Path, n: int, seed: int = 0) -> np.ndarray:
    """Real digits images when the model takes them, else Gaussian inputs."""
    shape = tuple(load_bundle(bundle_dir).manifest.input_shape[1:])
    try:
        from collab.models import datasets

        for fn in (datasets.digits, datasets.digits_rgb32, datasets.digits_tokens):
            x, _ = fn("test")
            if tuple(x.shape[1:]) == shape:
                return np.ascontiguousarray(x[:n], dtype=np.float32)
    except Exception:
        pass
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


def test_public_exports() -> None:
    assert collab.Client is Client and collab.ClientConfig is ClientConfig
    assert "InferenceResult" in collab.__all__


def test_edge_only_without_cloud_matches_full_model(digits_bundle: Path) -> None:
    xs = sample_inputs(digits_bundle, 8)
    rt = EdgeRuntime(digits_bundle)
    with Client(digits_bundle) as c:
        for x in xs:
            r = c.infer(x)  # one sample without the batch dimension
            assert r.path == "edge_only" and not r.fell_back and r.bytes_sent == 0
            np.testing.assert_array_equal(r.output, rt.full(x[None])[0][0])
        rb = c.infer(xs[:3])  # a batch
        assert rb.output.shape[0] == 3
        s = c.stats()
    assert s.requests == 9 and s.paths == {"edge_only": 9} and s.fallbacks == 0
    assert s.latency_ms.p50 > 0


def test_unreachable_cloud_at_start_is_not_an_error(digits_bundle: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"
    x = sample_inputs(digits_bundle, 1)[0]
    t0 = time.monotonic()
    with Client(digits_bundle, cloud=[dead], deadline_ms=200, probe_interval_s=0.1) as c:
        assert time.monotonic() - t0 < 5
        assert not c.link.reachable
        for _ in range(20):
            r = c.infer(x)
            assert r.path == "edge_only" and r.deadline_met and r.latency_ms <= 200
        ex = c.explain()
        assert ex["chosen"] == "edge_only"
        assert all(not cand["feasible"] for cand in ex["candidates"] if cand["path"] != "edge_only")


def test_forced_cloud_path_with_dead_cloud_falls_back_exactly(digits_bundle: Path) -> None:
    b = load_bundle(digits_bundle)
    sp = b.manifest.split_points[0].name
    xs = sample_inputs(digits_bundle, 6)
    rt = EdgeRuntime(b)
    with Client(
        digits_bundle,
        cloud=[f"127.0.0.1:{free_port()}"],
        policy=f"split:{sp}",
        breaker_failures=2,
        initial_probe=False,
    ) as c:
        results = [c.infer(x) for x in xs]
        for x, r in zip(xs, results, strict=True):
            assert r.path == "split" and r.split_point == sp and r.fell_back
            head, _ = rt.head(sp, x[None])
            np.testing.assert_array_equal(r.output, rt.tail(sp, head)[0][0])  # head output reused
        assert c.breaker.is_open
        assert results[-1].fallback_reason == "circuit breaker open"
        r = c.infer(xs[0], policy="cloud_only")
        assert r.path == "cloud_only" and r.fell_back
        np.testing.assert_array_equal(r.output, rt.full(xs[:1])[0][0])


def test_a_pinned_policy_without_the_breaker_tries_its_path_every_time(digits_bundle: Path) -> None:
    """A scenario's static baseline (``pinned_breaker=False``) calls the cloud on every
    request: its run measures the path it names, not the device behind an open breaker.
    auto still stops at the breaker."""
    xs = sample_inputs(digits_bundle, 5)
    with Client(
        digits_bundle,
        cloud=[f"127.0.0.1:{free_port()}"],
        policy="cloud_only",
        breaker_failures=2,
        pinned_breaker=False,
        initial_probe=False,
    ) as c:
        results = [c.infer(x) for x in xs]
        assert c.breaker.is_open
        assert all(r.fell_back for r in results)
        assert "circuit breaker open" not in {r.fallback_reason for r in results}
        assert c.infer(xs[0], policy="auto").path == "edge_only"


def test_bad_input_and_config_errors(digits_bundle: Path) -> None:
    with Client(digits_bundle) as c:
        with pytest.raises(ConfigError, match="shape"):
            c.infer(np.zeros((2, 3), np.float32))
        with pytest.raises(ConfigError, match="numeric"):
            c.infer(np.array(["a"]))
        with pytest.raises(ConfigError, match="unknown split point"):
            c.infer(sample_inputs(digits_bundle, 1), policy="split:nope")
        assert c.stats().requests == 0
    for bad in (
        {"policy": "fast"},
        {"deadline_ms": 0},
        {"accuracy_budget": 2},
        {"slowdown": 0.5},
        {"no_such_option": 1},
    ):
        with pytest.raises(ConfigError):
            Client(digits_bundle, **bad)
    with pytest.raises(CodecError):
        Client(digits_bundle, codec="int9")


def test_strict_deadline_raises_typed_error(digits_bundle: Path) -> None:
    x = sample_inputs(digits_bundle, 1)
    with Client(digits_bundle, strict_deadline=True, slowdown=50.0) as c:
        with pytest.raises(DeadlineError):
            c.infer(x, deadline_ms=1e-3)
        assert c.stats().deadline_misses == 1


def _fake_runtime_clock(
    monkeypatch: pytest.MonkeyPatch, run_s: Callable[[Any], float]
) -> list[float]:
    """Deterministic edge timing: the runtime's clock becomes fake, each ONNX run of this
    thread (one per segment session of a chain, and the warm-up's) advances it by
    ``run_s(session)`` seconds and each sleep by its length (runs of other threads, e.g.
    another test's client still warming up, are left alone). Returns the list of sleeps."""
    import types

    import collab.chain as chain_mod
    import collab.edge.runtime as runtime_mod

    clock = {"t": 0.0}
    slept: list[float] = []
    real_run, me = runtime_mod.run, threading.get_ident()

    def fake_run(sess, x):  # type: ignore[no-untyped-def]
        if threading.get_ident() == me:
            clock["t"] += run_s(sess)
        return real_run(sess, x)

    def fake_sleep(s: float) -> None:
        slept.append(s)
        clock["t"] += s

    monkeypatch.setattr(runtime_mod, "run", fake_run)
    monkeypatch.setattr(chain_mod, "run", fake_run)
    monkeypatch.setattr(
        runtime_mod,
        "time",
        types.SimpleNamespace(perf_counter=lambda: clock["t"], sleep=fake_sleep),
    )
    return slept


def test_slowdown_pads_edge_compute(digits_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Deterministic (fake clock): a 1 ms run on a 5x slower device takes 1 ms + 4 x the
    profiled time of the model (the full model: one 1 ms run per segment)."""
    _fake_runtime_clock(monkeypatch, lambda sess: 0.001)
    x = sample_inputs(digits_bundle, 1)
    with (
        Client(digits_bundle, warm=False) as fast,
        Client(digits_bundle, slowdown=5.0, warm=False) as slow,
    ):
        f = fast.infer(x).timings["edge_ms"]
        s_ = slow.infer(x).timings["edge_ms"]
    m = load_bundle(digits_bundle).manifest
    run_ms = 1.0 * len(m.segments)
    assert m.full_ms > 0
    assert f == pytest.approx(run_ms) and s_ == pytest.approx(run_ms + 4 * m.full_ms)


def test_thread_safe_concurrent_infer(digits_bundle: Path) -> None:
    xs = sample_inputs(digits_bundle, 16)
    rt = EdgeRuntime(digits_bundle)
    want = rt.full(xs)[0]
    errors: list[BaseException] = []
    with Client(digits_bundle) as c:

        def worker(k: int) -> None:
            try:
                for i in range(25):
                    j = (k * 25 + i) % len(xs)
                    np.testing.assert_allclose(c.infer(xs[j]).output, want[j], atol=1e-5)
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert c.stats().requests == 150


def test_swap_bundle_is_atomic_and_keeps_serving(digits_bundle: Path, tmp_path: Path) -> None:
    # a second version of the same model: same ONNX files, different manifest metadata
    v2 = tmp_path / "v2"
    shutil.copytree(digits_bundle, v2)
    import dataclasses

    b2 = update_bundle(v2, lambda root, m: dataclasses.replace(m, extra={**m.extra, "rev": 2}))
    b1 = load_bundle(digits_bundle)
    assert b1.version != b2.version
    x = sample_inputs(digits_bundle, 1)
    stop = threading.Event()
    versions: list[str] = []
    with Client(digits_bundle) as c:

        def loop() -> None:
            while not stop.is_set():
                versions.append(c.infer(x).model_version)

        t = threading.Thread(target=loop)
        t.start()
        time.sleep(0.1)
        assert c.swap_bundle(v2) == b2.version
        time.sleep(0.1)
        stop.set()
        t.join()
        assert c.bundle.version == b2.version
    assert set(versions) == {b1.version, b2.version}
    first_new = versions.index(b2.version)
    assert all(v == b2.version for v in versions[first_new:])  # no going back


def test_client_import_does_not_import_torch() -> None:
    code = (
        "import sys, collab; import collab.edge.client, collab.edge.runtime, collab.decision, collab.net, "
        "edge_node.server; assert 'torch' not in sys.modules, 'torch imported'; print('ok')"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def test_head_variant_is_run_when_the_budget_allows(digits_bundle: Path, tmp_path: Path) -> None:
    import dataclasses

    from collab.bundle import Variant

    root = tmp_path / "v"
    shutil.copytree(digits_bundle, root)
    m0 = load_bundle(root).manifest
    sp0 = m0.split_points[0]
    (head0,) = m0.head_paths(sp0.name)  # the first split point's head is one segment

    def add_variant(d: Path, m: collab.Manifest) -> collab.Manifest:
        shutil.copy(d / head0, d / "head_sim8.onnx")  # stands in for a quantized head
        v = Variant(
            name="sim8", path="head_sim8.onnx", ms=sp0.head_ms / 10, size_bytes=1, agreement=0.995
        )
        sps = tuple(
            dataclasses.replace(s, head_variants=(v,)) if s.name == sp0.name else s
            for s in m.split_points
        )
        return dataclasses.replace(m, split_points=sps)

    update_bundle(root, add_variant)
    x = sample_inputs(root, 1)
    for budget, variant in ((0.0, None), (0.01, "sim8")):
        with Client(root, policy=f"split:{sp0.name}", accuracy_budget=budget, warm=False) as c:
            r = c.infer(x)
            assert r.variant == variant and r.split_point == sp0.name
            loaded = c._model.runtime._sessions.loaded()
            assert ("head_sim8.onnx" in loaded) == (variant is not None)


def test_stale_edge_load_spike_relaxes_towards_the_configured_slowdown(digits_bundle: Path) -> None:
    with Client(digits_bundle, slowdown=4.0) as c:
        assert c._loads.edge_state().compute_scale == pytest.approx(4.0)
        now = time.monotonic()
        c._loads.edge_scale.mean, c._loads.edge_scale.updated_at = 40.0, now - 1.0
        assert c._loads.edge_state().compute_scale == pytest.approx(40.0)  # fresh: believed
        c._loads.edge_scale.updated_at = now - 30.0
        assert c._loads.edge_state().compute_scale < 4.5  # old spike: mostly forgotten


def test_slowdown_does_not_multiply_an_os_stall(
    digits_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deterministic: a fake clock; every segment run 'takes' 2 ms, the first one of the
    8th request hits a 30 ms stall instead."""
    n = {"runs": 0}
    segs = len(load_bundle(digits_bundle).manifest.segments)

    def run_s(sess: Any) -> float:
        n["runs"] += 1
        return 0.030 if n["runs"] == 7 * segs + 1 else 0.002

    slept = _fake_runtime_clock(monkeypatch, run_s)
    rt = EdgeRuntime(digits_bundle, slowdown=10.0)
    x = sample_inputs(digits_bundle, 1)
    ms = [rt.full(x)[1] for _ in range(10)]
    pad = 9 * rt.manifest.full_ms  # (slowdown - 1) x the profiled time
    run_ms = 2.0 * segs
    assert ms[0] == pytest.approx(run_ms + pad)
    assert slept[0] == pytest.approx(pad / 1000.0)
    assert ms[7] == pytest.approx(run_ms + 28.0 + pad)  # the stall once, not multiplied
    assert ms[8] == pytest.approx(run_ms + pad)


def test_warm_runs_keep_the_cold_first_run_from_requests(
    digits_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fake clock: a session's first run takes 5 ms, later ones 1 ms. Warmed, the first
    request does not pay the cold run (it happened in warm-up)."""
    runs: dict[int, int] = {}

    def run_s(sess: Any) -> float:
        runs[id(sess)] = runs.get(id(sess), 0) + 1
        return 0.005 if runs[id(sess)] == 1 else 0.001

    _fake_runtime_clock(monkeypatch, run_s)
    x = sample_inputs(digits_bundle, 1)
    cold = EdgeRuntime(digits_bundle, slowdown=10.0)
    pad = 9 * cold.manifest.full_ms
    segs = len(cold.manifest.segments)
    assert cold.full(x)[1] == pytest.approx(
        5.0 * segs + pad
    )  # not warmed: every segment's cold run
    warm = EdgeRuntime(digits_bundle, slowdown=10.0)
    warm.warm(list(warm.manifest.full_paths()))
    assert warm.full(x)[1] == pytest.approx(1.0 * segs + pad)


def test_sessions_loaded_at_start_still_get_their_warm_up_run(
    digits_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client's start only builds the full model's sessions (its first answer comes
    sooner); the warm-up gives each of them, and every other session, its first run."""
    runs: dict[int, int] = {}

    def run_s(sess: Any) -> float:
        runs[id(sess)] = runs.get(id(sess), 0) + 1
        return 0.001

    _fake_runtime_clock(monkeypatch, run_s)
    rt = EdgeRuntime(digits_bundle)
    full = list(rt.manifest.full_paths())
    rt.load(full)
    assert rt.loaded() == len(full) and not runs
    assert rt.warm() is True
    assert sorted(runs) == sorted(id(rt.session(rel)) for rel in rt.all_paths())
    assert set(runs.values()) == {1}
    assert rt.warm() is True and set(runs.values()) == {1}  # warmed once, not again


def test_a_call_long_overdue_makes_the_next_decision_expect_a_slow_link(
    digits_bundle: Path,
) -> None:
    from collab.edge.estimators import suspect_overdue
    from collab.net.estimator import LinkEstimator

    link = LinkEstimator()
    inflight: dict[int, tuple[float, float, float]] = {}  # as CloudLink.inflight
    for i in range(5):
        link.add_rtt(25.0, float(i))
    now = time.perf_counter()
    inflight[1] = (now - 0.030, 25.0, 5.0)  # predicted 30 ms, out for 30 ms: on time
    suspect_overdue(link, inflight, now)
    assert link.state().rtt_ms == pytest.approx(25.0)
    inflight[2] = (now - 0.250, 25.0, 5.0)  # out for 250 ms: the RTT is >= 245 ms
    suspect_overdue(link, inflight, now)
    assert link.rtt.mean == pytest.approx(25.0)  # not confirmed yet ...
    assert link.state().rtt_ms == pytest.approx(245.0)  # ... but the next decision expects it


def test_explain_uses_the_policy_and_hysteresis_of_infer(
    digits_bundle: Path, tmp_path: Path
) -> None:
    """explain() shows the choice infer() makes: after an FP32 edge-only choice, a 20 %
    faster edge variant wins only if the configured hysteresis lets it, in both."""
    import dataclasses

    from collab.bundle import Variant

    root = tmp_path / "v"
    shutil.copytree(digits_bundle, root)

    def add_variant(d: Path, m: collab.Manifest) -> collab.Manifest:
        import onnx

        from collab.split.compose import compose

        # the full model as one file stands in for a quantized model
        onnx.save(compose(load_bundle(d), m.full_paths()), str(d / "full_sim8.onnx"))
        v = Variant(
            name="sim8", path="full_sim8.onnx", ms=m.full_ms * 0.8, size_bytes=1, agreement=0.999
        )
        return dataclasses.replace(m, full_variants=(v,))

    update_bundle(root, add_variant)
    x = sample_inputs(root, 1)
    for hysteresis, variant in ((0.5, None), (0.0, "sim8")):
        with Client(
            root, accuracy_budget=0.01, hysteresis=hysteresis, hysteresis_ms=0.0, warm=False
        ) as c:
            c._previous = "edge_only"  # the last choice of auto
            ex = c.explain()
            assert ex["policy"] == "auto" and ex["chosen"] == (
                "edge_only@sim8" if variant else "edge_only"
            ), ex
            r = c.infer(x)
            assert r.path == "edge_only" and r.variant == variant
    with Client(root, policy="edge_only", accuracy_budget=0.0, warm=False) as c:
        assert c.explain()["policy"] == "edge_only"  # the client's policy, not auto
        assert c.explain(policy="auto")["policy"] == "auto"


def test_warm_loads_every_session_now(digits_bundle: Path) -> None:
    with Client(digits_bundle, warm=False) as c:
        n = c.warm()
    assert n == len(EdgeRuntime(digits_bundle).all_paths()) > 1
