"""Decision engine on synthetic profiles: no network, no models."""

from __future__ import annotations

import itertools
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from collab.bundle import Manifest, Segment, SplitPoint, Variant
from collab.decision import (
    DEFAULT_CODEC,
    NO_HYSTERESIS,
    CloudState,
    EdgeState,
    Hysteresis,
    PathSpec,
    Policy,
    Profile,
    decide,
    parse_policy,
    profile_from_manifest,
)
from collab.errors import ConfigError
from collab.net.estimator import NetState

AUTO = Policy(mode="auto")
E_MS = 20.0  # edge-only compute
IN_BYTES = 100_000  # cloud-only upload
CLOUD_MS = 2.0
# name -> (head_ms, feature_bytes, tail_ms)
SPLITS = {"s1": (5.0, 10_000, 1.5), "s2": (12.0, 1_000, 0.5)}


def _lossless(nbytes: int) -> dict[str, dict[str, float]]:
    return {
        "f32": {
            "bytes": float(nbytes),
            "ratio": 1.0,
            "encode_ms": 0.0,
            "decode_ms": 0.0,
            "rel_l2": 0.0,
            "agreement": 1.0,
        }
    }


def synthetic_profile() -> Profile:
    paths = [
        PathSpec(path="edge_only", edge_ms=E_MS),
        PathSpec(
            path="cloud_only",
            cloud_ms=CLOUD_MS,
            local_finish_ms=E_MS,
            raw_bytes=IN_BYTES,
            codec_stats=_lossless(IN_BYTES),
        ),
    ]
    for name, (h, f, t) in SPLITS.items():
        paths.append(
            PathSpec(
                path="split",
                split_point=name,
                edge_ms=h,
                cloud_ms=t,
                local_finish_ms=t,
                raw_bytes=f,
                codec_stats=_lossless(f),
            )
        )
    return Profile(model_name="synthetic", paths=tuple(paths))


def analytic(bw: float, rtt: float) -> dict[str, float]:
    """The model written out by hand: compute + bits/bandwidth + RTT."""
    out = {"edge_only": E_MS, "cloud_only": IN_BYTES * 8 / bw * 1000 + rtt + CLOUD_MS}
    for name, (h, f, t) in SPLITS.items():
        out[f"split:{name}"] = h + f * 8 / bw * 1000 + rtt + t
    return out


def _decide(bw: float, rtt: float, **kw: object) -> str:
    kw.setdefault("hysteresis", NO_HYSTERESIS)
    d = decide(
        synthetic_profile(),
        policy=AUTO,
        net=NetState(rtt_ms=rtt, bandwidth_bps=bw),
        cloud=CloudState(),
        edge=EdgeState(),
        **kw,
    )  # type: ignore[arg-type]
    return d.chosen.key


def test_grid_choice_is_the_analytic_minimum() -> None:
    prof = synthetic_profile()
    for bw, rtt in itertools.product(np.logspace(4, 10, 31), [0.2, 2.0, 8.0, 30.0]):
        d = decide(
            prof,
            policy=AUTO,
            net=NetState(rtt_ms=rtt, bandwidth_bps=float(bw)),
            cloud=CloudState(),
            edge=EdgeState(),
            hysteresis=NO_HYSTERESIS,
        )
        want = analytic(float(bw), rtt)
        best = min(want, key=want.__getitem__)
        assert d.chosen.key == best, (bw, rtt, d.explain())
        for c in d.candidates:
            assert c.total_ms == pytest.approx(want[c.key], rel=1e-9)


def _crossover(a: str, b: str, rtt: float) -> float:
    """Bandwidth where paths a and b predict the same latency: both are c + k/bw, so
    bw* = (k_a - k_b) / (c_b - c_a)."""
    lo, hi = analytic(1.0, rtt), analytic(2.0, rtt)
    k = {n: (lo[n] - hi[n]) * 2.0 for n in lo}  # coefficient of 1/bw
    c = {n: lo[n] - k[n] for n in lo}
    return (k[a] - k[b]) / (c[b] - c[a])


@pytest.mark.parametrize("rtt", [0.5, 2.0, 5.0])
def test_flips_at_the_analytic_crossovers(rtt: float) -> None:
    # Expected regimes as bandwidth grows: edge-only, the thin late split, the early
    # split, cloud-only (checked by hand for these numbers and rtt <= 5 ms).
    order = ["edge_only", "split:s2", "split:s1", "cloud_only"]
    for a, b in itertools.pairwise(order):
        x = _crossover(a, b, rtt)
        assert x > 0
        assert _decide(x * 0.99, rtt) == a
        assert _decide(x * 1.01, rtt) == b
    # a fine sweep flips exactly three times, each time within 1 % of a crossover
    bws = np.logspace(5, 10, 2000)
    keys = [_decide(float(b), rtt) for b in bws]
    flips = [
        (keys[i], keys[i + 1], bws[i], bws[i + 1])
        for i in range(len(keys) - 1)
        if keys[i] != keys[i + 1]
    ]
    assert [(a, b) for a, b, _, _ in flips] == list(itertools.pairwise(order))
    for a, b, lo, hi in flips:
        assert lo <= _crossover(a, b, rtt) <= hi


def test_rtt_moves_the_edge_crossover() -> None:
    # a larger RTT makes the edge-only region larger: crossover edge->s2 grows
    assert _crossover("edge_only", "split:s2", 5.0) > _crossover("edge_only", "split:s2", 0.5)
    # with RTT above edge compute no cloud path can win at any bandwidth
    assert _decide(1e12, E_MS + 1) == "edge_only"


def test_hysteresis_keeps_previous_near_crossover_and_reduces_flapping() -> None:
    x = _crossover("split:s1", "cloud_only", 2.0)
    assert _decide(x * 1.02, 2.0) == "cloud_only"
    assert (
        _decide(x * 1.02, 2.0, previous="split:s1", hysteresis=Hysteresis(fraction=0.1))
        == "split:s1"
    )
    assert (
        _decide(x * 3, 2.0, previous="split:s1", hysteresis=Hysteresis(fraction=0.1))
        == "cloud_only"
    )
    rng = np.random.default_rng(0)
    noisy = x * (1 + 0.05 * rng.standard_normal(300))

    def switches(h: Hysteresis) -> int:
        prev, n = None, 0
        for b in noisy:
            k = _decide(float(b), 2.0, previous=prev, hysteresis=h)
            n += prev is not None and k != prev
            prev = k
        return n

    assert switches(NO_HYSTERESIS) > 20
    assert switches(Hysteresis(fraction=0.1)) <= 1


def test_hysteresis_never_keeps_a_path_that_misses_the_deadline() -> None:
    prof = synthetic_profile()
    net = NetState(rtt_ms=2.0, bandwidth_bps=1e6)  # cloud_only ~ 804 ms, edge 20 ms
    d = decide(
        prof,
        policy=AUTO,
        net=net,
        cloud=CloudState(),
        edge=EdgeState(),
        deadline_ms=100,
        previous="cloud_only",
        hysteresis=Hysteresis(fraction=100.0),
    )
    assert d.chosen.key == "edge_only"
    assert d.chosen.meets_deadline


def test_a_call_the_client_would_cut_for_the_local_finish_is_not_chosen() -> None:
    """The client gives a cloud call what the deadline leaves after 1.5x the local finish
    (call_budget_ms). On a device 2x slow, cloud-only's 20 ms call fits a 100 ms deadline
    (35 ms left) but not a 75 ms one (11 ms left): there it would be cut and finished
    locally, so auto does not take it, and explain() says why."""
    full = synthetic_profile()
    prof = Profile(model_name=full.model_name, paths=full.paths[:2])  # edge-only, cloud-only

    def cloud_only(deadline: float) -> tuple[str, bool, str]:
        d = decide(
            prof,
            policy=AUTO,
            net=NetState(rtt_ms=2.0, bandwidth_bps=50e6),
            cloud=CloudState(),
            edge=EdgeState(compute_scale=2.0),
            deadline_ms=deadline,
            hysteresis=NO_HYSTERESIS,
        )
        c = next(c for c in d.candidates if c.key == "cloud_only")
        return d.chosen.key, c.feasible, c.note

    chosen, ok, _ = cloud_only(100.0)
    assert ok and chosen == "cloud_only"
    chosen, ok, note = cloud_only(75.0)
    assert not ok and chosen == "edge_only" and "cut to leave time for the local finish" in note


def test_nothing_meets_deadline_picks_fastest() -> None:
    d = decide(
        synthetic_profile(),
        policy=AUTO,
        net=NetState(rtt_ms=2, bandwidth_bps=1e5),
        cloud=CloudState(),
        edge=EdgeState(),
        deadline_ms=1.0,
    )
    assert d.chosen.key == "edge_only" and not d.chosen.meets_deadline
    assert "no candidate meets" in d.reason


@pytest.mark.parametrize("cloud", [CloudState(breaker_open=True), CloudState(serves_model=False)])
def test_cloud_paths_excluded_when_cloud_cannot_serve(cloud: CloudState) -> None:
    d = decide(
        synthetic_profile(),
        policy=AUTO,
        net=NetState(rtt_ms=0.1, bandwidth_bps=1e10),
        cloud=cloud,
        edge=EdgeState(),
    )
    assert d.chosen.key == "edge_only"
    assert all(not c.feasible for c in d.candidates if c.path != "edge_only")


def test_unreachable_cloud_forced_policy_is_returned_but_marked() -> None:
    d = decide(
        synthetic_profile(),
        policy=Policy(mode="split", split_point="s1"),
        net=NetState(reachable=False),
        cloud=CloudState(),
        edge=EdgeState(),
    )
    assert d.chosen.key == "split:s1" and not d.chosen.feasible
    assert "finish locally" in d.reason
    assert (
        decide(
            synthetic_profile(),
            policy=AUTO,
            net=NetState(reachable=False),
            cloud=CloudState(),
            edge=EdgeState(),
        ).chosen.key
        == "edge_only"
    )


def test_edge_load_and_cloud_queue_shift_the_choice() -> None:
    bw, rtt = 5e6, 2.0  # s2 wins on an idle system (14.5 + 1.6 ms vs 20 ms)
    prof = synthetic_profile()
    base = decide(
        prof,
        policy=AUTO,
        net=NetState(rtt_ms=rtt, bandwidth_bps=bw),
        cloud=CloudState(),
        edge=EdgeState(),
        hysteresis=NO_HYSTERESIS,
    )
    assert base.chosen.key == "split:s2"
    queued = decide(
        prof,
        policy=AUTO,
        net=NetState(rtt_ms=rtt, bandwidth_bps=bw),
        cloud=CloudState(queue_ms=10),
        edge=EdgeState(),
        hysteresis=NO_HYSTERESIS,
    )
    assert queued.chosen.key == "edge_only"
    slow_edge = decide(
        prof,
        policy=AUTO,
        net=NetState(rtt_ms=rtt, bandwidth_bps=bw),
        cloud=CloudState(),
        edge=EdgeState(compute_scale=4.0),
        hysteresis=NO_HYSTERESIS,
    )
    assert slow_edge.chosen.key == "split:s1"  # 4x slower head: smaller head wins
    assert slow_edge.chosen.edge_ms == pytest.approx(20.0)


def test_a_stale_cloud_compute_observation_relaxes_to_the_profile() -> None:
    """s2's tail was seen at 30 ms (a burst of cloud load), so the engine avoided it and
    never saw it again: while fresh the observation rules, and once stale it loses weight
    towards the profile (LoadEstimates) until s2 wins again."""
    import time

    from collab.edge.estimators import LoadEstimates

    prof = synthetic_profile()
    loads = LoadEstimates(1.0)

    def choose() -> str:
        return decide(
            prof,
            policy=AUTO,
            net=NetState(rtt_ms=2.0, bandwidth_bps=5e6),
            cloud=loads.cloud_state(serves_model=True, breaker_open=False),
            edge=EdgeState(),
            hysteresis=NO_HYSTERESIS,
        ).chosen.key

    now = time.monotonic()
    loads.cloud_sample("split:s2", 0.0, 30.0, now)
    assert choose() != "split:s2"  # fresh: 30 ms of tail
    loads.cloud_compute["split:s2"].updated_at = now - 30.0  # the same, 30 s later
    state = loads.cloud_state(serves_model=True, breaker_open=False)
    assert state.compute_weight["split:s2"] == pytest.approx(math.exp(-5), rel=0.01)
    assert choose() == "split:s2"


def test_forced_policies_and_parse() -> None:
    prof = synthetic_profile()
    for text in ("edge_only", "cloud_only", "split:s1", "split:s2"):
        p = parse_policy(text, prof)
        d = decide(prof, policy=p, net=NetState(), cloud=CloudState(), edge=EdgeState())
        assert d.chosen.key == text
    for bad in ("split:nope", "fastest", "split:", ""):
        with pytest.raises(ConfigError):
            parse_policy(bad, prof)


def test_explain_lists_every_candidate_and_the_reason() -> None:
    d = decide(
        synthetic_profile(),
        policy=AUTO,
        net=NetState(rtt_ms=2, bandwidth_bps=5e6),
        cloud=CloudState(),
        edge=EdgeState(),
        deadline_ms=50,
    )
    ex = d.explain()
    assert ex["chosen"] == d.chosen.key
    assert {c["key"] for c in ex["candidates"]} == {
        "edge_only",
        "cloud_only",
        "split:s1",
        "split:s2",
    }
    totals = [c["total_ms"] for c in ex["candidates"]]
    assert totals == sorted(totals) and ex["candidates"][0]["key"] == d.chosen.key
    assert "deadline" in ex["reason"] and "slower" in ex["reason"]
    for c in ex["candidates"]:
        parts = sum(
            c[k]
            for k in (
                "edge_ms",
                "encode_ms",
                "transfer_ms",
                "rtt_ms",
                "queue_ms",
                "cloud_ms",
                "decode_ms",
            )
        )
        assert parts == pytest.approx(c["total_ms"])


def _manifest(calibration: bool = False) -> Manifest:
    sps = (
        SplitPoint(
            name="a",
            index=0,
            boundary=1,
            feature_shape=(1, 8, 8, 8),
            feature_dtype="float32",
            feature_bytes=2048,
            head_ms=1.0,
            tail_ms=2.0,
            head_variants=(
                Variant(name="int8", path="a_h8.onnx", ms=0.2, size_bytes=1, agreement=0.99),
            ),
        ),
    )
    return Manifest(
        model_name="m",
        input_name="x",
        input_shape=(1, 1, 8, 8),
        input_dtype="float32",
        output_shape=(1, 10),
        full_ms=10.0,
        input_bytes=256,
        split_points=sps,
        segments=(
            Segment(path="a_h.onnx", input="x", output="a", input_shape=(1, 1, 8, 8), ms=1.0),
            Segment(path="a_t.onnx", input="a", output="y", input_shape=(1, 8, 8, 8), ms=2.0),
        ),
    )


def test_profile_from_manifest_without_calibration_is_lossless() -> None:
    prof = profile_from_manifest(_manifest())
    keys = [p.key for p in prof.paths]
    assert keys == ["edge_only", "cloud_only", "split:a", "split:a@int8"]
    split = prof.paths[2]
    assert set(split.codec_stats) == {DEFAULT_CODEC}
    assert split.codec_stats[DEFAULT_CODEC]["bytes"] == 2048
    assert split.output_bytes == 40
    d = decide(
        prof,
        policy=Policy(mode="split", split_point="a"),
        net=NetState(),
        cloud=CloudState(),
        edge=EdgeState(),
    )
    assert d.chosen.codec == DEFAULT_CODEC and d.chosen.bytes == 2048


def _two_codecs(nbytes: int) -> dict[str, dict[str, float]]:
    return {
        "f32": _lossless(nbytes)["f32"],
        "int8+zstd1": {
            "bytes": nbytes / 10,
            "ratio": 10.0,
            "encode_ms": 0.1,
            "decode_ms": 0.1,
            "rel_l2": 0.01,
            "agreement": 0.995,
        },
    }


def test_lossy_codec_and_variant_only_within_accuracy_budget() -> None:
    m = _manifest()
    cal = {
        "schema": 1,
        "num_inputs": 10,
        "codecs": ["f32", "int8+zstd1"],
        "input": _two_codecs(m.input_bytes),
        "points": {"a": _two_codecs(2048)},
    }
    prof = profile_from_manifest(m, cal)
    net = NetState(rtt_ms=0.5, bandwidth_bps=1e6)  # slow link: compression pays
    strict = decide(
        prof, policy=AUTO, net=net, cloud=CloudState(), edge=EdgeState(), accuracy_budget=0.0
    )
    assert strict.chosen.accuracy_loss == 0.0
    assert all(c.codec in (None, "f32") for c in strict.candidates if c.feasible)
    loose = decide(
        prof, policy=AUTO, net=net, cloud=CloudState(), edge=EdgeState(), accuracy_budget=0.02
    )
    assert loose.chosen.key == "split:a@int8" and loose.chosen.codec == "int8+zstd1"
    assert loose.chosen.accuracy_loss == pytest.approx(0.015)
    # budget for the variant alone: the variant keeps the lossless codec
    mid = decide(
        prof, policy=AUTO, net=net, cloud=CloudState(), edge=EdgeState(), accuracy_budget=0.011
    )
    v = next(c for c in mid.candidates if c.key == "split:a@int8")
    assert v.codec == "f32" and v.feasible
    assert math.isclose(v.accuracy_loss, 0.01)


def test_forced_split_uses_a_faster_variant_only_within_budget() -> None:
    prof = profile_from_manifest(_manifest())
    pol = Policy(mode="split", split_point="a")
    strict = decide(
        prof, policy=pol, net=NetState(), cloud=CloudState(), edge=EdgeState(), accuracy_budget=0.0
    )
    assert strict.chosen.key == "split:a" and strict.chosen.variant is None
    loose = decide(
        prof, policy=pol, net=NetState(), cloud=CloudState(), edge=EdgeState(), accuracy_budget=0.02
    )
    assert loose.chosen.key == "split:a@int8" and "variant int8" in loose.reason
    assert {c.key for c in loose.candidates} == {"split:a", "split:a@int8"}


def test_real_calibration_table_drives_the_codec_choice(
    digits_bundle: Path, tmp_path: Path
) -> None:
    from collab.bundle import load_bundle
    from collab.codec.calibrate import calibrate_bundle
    from collab.edge.profile import profile_from_bundle
    from collab.models.datasets import digits

    root = tmp_path / "cal"
    shutil.copytree(digits_bundle, root)
    x, y = digits("test")
    shape = load_bundle(root).manifest.input_shape
    x = x[:64].reshape((-1, *shape[1:])).astype(np.float32)
    calibrate_bundle(
        root, x, y[:64], codecs=("f32+zstd1", "f16+zstd1", "int8+zstd1"), progress=False
    )
    prof = profile_from_bundle(load_bundle(root))
    split = next(p for p in prof.paths if p.path == "split")
    assert set(split.codec_stats) == {"f32+zstd1", "f16+zstd1", "int8+zstd1"}
    pol = Policy(mode="split", split_point=split.split_point)
    for bw in (1e5, 1e6, 1e8, 1e10):
        for budget in (0.0, 0.005, 0.05):
            d = decide(
                prof,
                policy=pol,
                net=NetState(rtt_ms=5, bandwidth_bps=bw),
                cloud=CloudState(),
                edge=EdgeState(),
                accuracy_budget=budget,
            )
            ok = {
                c: st
                for c, st in split.codec_stats.items()
                if c == "f32+zstd1" or 1 - st["agreement"] <= budget
            }
            cost = {
                c: st["encode_ms"] + st["bytes"] * 8000 / bw + st["decode_ms"]
                for c, st in ok.items()
            }
            assert d.chosen.codec == min(cost, key=lambda c: (cost[c], c)), (bw, budget)
            assert d.chosen.accuracy_loss <= budget
    slow = decide(
        prof,
        policy=pol,
        net=NetState(rtt_ms=5, bandwidth_bps=1e5),
        cloud=CloudState(),
        edge=EdgeState(),
        accuracy_budget=1.0,
    )
    assert slow.chosen.codec != "f32+zstd1"  # on a slow link a compressing codec wins


def test_path_keys_are_the_fixed_policies_without_variants() -> None:
    prof = profile_from_manifest(_manifest())
    assert len(prof.paths) == 4  # edge_only, cloud_only, split:a and split:a@int8
    assert prof.path_keys() == ["edge_only", "cloud_only", "split:a"]
    assert all(parse_policy(k, prof).key == k for k in prof.path_keys())
