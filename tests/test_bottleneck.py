"""Learned bottlenecks and early exits: trained for a few steps on small models, added to
real bundles, composed by the runtimes, costed and chosen by the decision engine."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from collab import Client
from collab.bundle import load_bundle, update_bundle
from collab.chain import BundleSessions
from collab.codec.calibrate import calibrate_bundle, codec_stats
from collab.decision import CloudState, EdgeState, Policy, Profile, decide
from collab.edge.profile import profile_from_bundle
from collab.edge.runtime import EdgeRuntime
from collab.errors import BundleError, ConfigError
from collab.models.examples import example_inputs, load_example
from collab.net.estimator import NetState
from collab.optimize import bottleneck as bn_mod
from collab.optimize.bottleneck import add_bottleneck, add_exit, calibrate_tau
from collab.optimize.learned import LearnConfig
from collab.optimize.measure import run_batched, top1
from collab.optimize.samples import Samples
from collab.split import split_model

FAST = LearnConfig(steps=40, warmup_steps=10, batch_size=16, budget_s=120.0, threads=1)
CODECS = ("f32+zstd1", "int8+zstd1", "int4+zstd1", "int2+brotli5")


class Wide(nn.Module):
    """A small model with a big input (3x32x32), a cheap head to a big cut (32x16x16)
    and a costly tail: what a bottleneck is for."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1), nn.ReLU())
        self.b1 = nn.Sequential(nn.Conv2d(32, 96, 3, 1, 1), nn.ReLU())
        self.b2 = nn.Sequential(nn.Conv2d(96, 96, 3, 1, 1), nn.ReLU())
        self.b3 = nn.Sequential(nn.Conv2d(96, 96, 3, 1, 1), nn.ReLU())
        self.fc = nn.Linear(96, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.b3(self.b2(self.b1(self.stem(x)))).mean(dim=(2, 3)))


def _wide_inputs(n: int, seed: int) -> np.ndarray:
    g = np.random.default_rng(seed)
    base = g.normal(size=(n, 3, 1, 1)).astype(np.float32)
    return (base + 0.5 * g.normal(size=(n, 3, 32, 32))).astype(np.float32)


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Module]:
    torch.manual_seed(0)
    model = Wide().eval()
    root = tmp_path_factory.mktemp("wide") / "bundle"
    split_model(model, _wide_inputs(4, 0), root, name="wide", runs=5, progress=False)
    calibrate_bundle(root, _wide_inputs(48, 1), codecs=CODECS, progress=False)
    return root, model


@pytest.fixture(scope="module")
def wide_bn(wide: tuple[Path, nn.Module], tmp_path_factory: pytest.TempPathFactory) -> Path:
    src, model = wide
    root = tmp_path_factory.mktemp("wide_bn") / "bundle"
    shutil.copytree(src, root)
    cut = _cut(root)
    add_bottleneck(
        root,
        model,
        cut,
        Samples(x=_wide_inputs(128, 2)),
        Samples(x=_wide_inputs(48, 3)),
        code_channels=4,
        bits=4,
        cfg=FAST,
        progress=False,
    )
    return root


def _cut(root: Path) -> str:
    """The 32x16x16 cut of the wide model (after ``stem``)."""
    m = load_bundle(root).manifest
    return next(sp.name for sp in m.split_points if sp.feature_shape == (1, 32, 16, 16))


def test_bottleneck_composes_and_its_measured_rows_are_in_the_table(wide_bn: Path) -> None:
    b = load_bundle(wide_bn)
    m = b.manifest
    (sp,) = [p for p in m.split_points if p.bottleneck is not None]
    assert sp.name.endswith("~bn4x4") and sp.feature_shape == (1, 4, 16, 16)
    bnk = sp.bottleneck
    assert bnk is not None and bnk.train["steps"] > 0
    assert m.head_paths(sp.name)[-1] == bnk.encoder
    assert m.tail_paths(sp.name)[0] == bnk.decoder
    assert m.head_paths(sp.name)[:-1] == m.head_paths(bnk.base)
    s = BundleSessions(b)
    x = _wide_inputs(48, 3)
    code = s.head(sp.name)(x)
    assert code.shape == (48, 4, 16, 16)
    # the calibration rows are what head + codec + decoder + tail really do on those inputs
    ref = top1(s.full()(x))
    row = codec_stats(code, "int4+zstd1", s.tail(sp.name), ref, None)
    cal = b.calibration()
    assert cal is not None
    stored = cal["points"][sp.name]["int4+zstd1"]
    assert stored["agreement"] == pytest.approx(row["agreement"])
    assert stored["bytes"] == pytest.approx(row["bytes"])
    # the code is far smaller than what the base cut's best codec sends
    base = cal["points"][bnk.base]
    assert stored["bytes"] < min(r["bytes"] for r in base.values())
    # an edge runtime runs it as head and tail like any split point
    rt = EdgeRuntime(b)
    feat, _ = rt.head(sp.name, x[:2])
    out, _ = rt.tail(sp.name, feat)
    np.testing.assert_allclose(out, s.tail(sp.name)(s.head(sp.name)(x[:2])), rtol=1e-5, atol=1e-5)


def test_engine_chooses_the_bottleneck_when_cheapest_within_budget(wide_bn: Path) -> None:
    b = load_bundle(wide_bn)
    profile = profile_from_bundle(b)
    (sp,) = [p for p in b.manifest.split_points if p.bottleneck is not None]
    key = f"split:{sp.name}"
    assert key in profile.path_keys()
    cal = b.calibration()
    assert cal is not None
    loss = 1.0 - max(r["agreement"] for r in cal["points"][sp.name].values())
    # a weak device (edge compute x 2000) on a slow link: bytes and edge compute both count
    state = dict(
        policy=Policy(mode="auto"),
        net=NetState(rtt_ms=20.0, bandwidth_bps=8e3),
        cloud=CloudState(),
        edge=EdgeState(compute_scale=2000.0),
        accuracy_budget=loss + 1e-9,
    )
    d = decide(profile, **state)  # type: ignore[arg-type]
    assert d.chosen.key == key, d.explain()
    without = Profile(
        model_name=profile.model_name,
        paths=tuple(p for p in profile.paths if p.split_point != sp.name),
    )
    d0 = decide(without, **state)  # type: ignore[arg-type]
    assert d0.chosen.total_ms > d.chosen.total_ms
    # below its measured loss it is no candidate
    strict = decide(profile, **{**state, "accuracy_budget": max(loss - 0.02, 0.0)})  # type: ignore[arg-type]
    if loss > 0.02:
        assert not next(c for c in strict.candidates if c.key == key).feasible


def test_bundle_hashes_cover_the_learned_files(wide_bn: Path, tmp_path: Path) -> None:
    root = tmp_path / "b"
    shutil.copytree(wide_bn, root)
    m = load_bundle(root).manifest
    (sp,) = [p for p in m.split_points if p.bottleneck is not None]
    assert sp.bottleneck is not None
    for rel in (sp.bottleneck.encoder, sp.bottleneck.decoder, m.calibration):
        assert rel is not None and rel in m.files
    p = root / sp.bottleneck.decoder
    data = bytearray(p.read_bytes())
    data[-1] ^= 1
    p.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"decoder\.onnx was modified"):
        load_bundle(root)


def test_cuts_that_cannot_take_a_bottleneck_are_refused(
    digits_bundle: Path, tmp_path: Path
) -> None:
    root = tmp_path / "d"
    shutil.copytree(digits_bundle, root)
    calibrate_bundle(root, example_inputs("digits", 16, "test")[0], codecs=CODECS, progress=False)
    model = load_example("digits")
    s = Samples(x=example_inputs("digits", 16, "train")[0])
    before = load_bundle(root).version
    for cut, why in (
        ("flatten", "not a float32 .N, C, H, W. feature map"),
        ("pool1", "too small to compress"),
        ("conv9", "not a split point .*several tensors"),
    ):
        with pytest.raises(ConfigError, match=why):
            add_bottleneck(root, model, cut, s, s, cfg=FAST, progress=False)
    with pytest.raises(ConfigError, match="code channels"):
        add_bottleneck(root, model, "relu2", s, s, code_channels=32, cfg=FAST, progress=False)
    assert load_bundle(root).version == before


def test_an_interrupted_run_leaves_no_half_written_variant(
    wide: tuple[Path, nn.Module], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, model = wide
    root = tmp_path / "b"
    shutil.copytree(src, root)
    before = load_bundle(root).version
    listing = sorted(p.relative_to(root) for p in root.rglob("*"))
    s = Samples(x=_wide_inputs(32, 4))

    def boom(*a: object, **k: object) -> None:
        raise KeyboardInterrupt

    # interrupted while measuring (files exported, nothing installed) ...
    with monkeypatch.context() as mp:
        mp.setattr(bn_mod, "codec_stats", boom)
        with pytest.raises(KeyboardInterrupt):
            add_bottleneck(root, model, _cut(root), s, s, code_channels=4, cfg=FAST, progress=False)
    # ... and while installing (files moved in, manifest not yet switched)
    with monkeypatch.context() as mp:
        mp.setattr(bn_mod, "validate_calibration", boom)
        with pytest.raises(KeyboardInterrupt):
            add_bottleneck(root, model, _cut(root), s, s, code_channels=4, cfg=FAST, progress=False)
    assert load_bundle(root).version == before
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == listing


def test_calibrate_tau_is_the_lowest_threshold_meeting_the_target() -> None:
    g = np.random.default_rng(0)
    for _ in range(200):
        n = int(g.integers(1, 60))
        conf = g.choice(np.linspace(0, 1, 15), n)  # ties on purpose
        agree = g.random(n) < conf + 0.3
        target = float(g.choice([0.8, 0.9, 0.995, 1.0]))
        tau = calibrate_tau(conf, agree, target)
        taken = conf >= tau
        if taken.any():
            assert agree[taken].mean() >= target
        lower = conf[conf < tau]
        if len(lower):  # the next lower threshold takes more and misses the target
            t2 = lower.max()
            assert agree[conf >= t2].mean() < target
    with pytest.raises(ConfigError):
        calibrate_tau(np.ones(3), np.ones(3, bool), 0.0)


@pytest.fixture(scope="module")
def digits_exit(digits_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dexit") / "bundle"
    shutil.copytree(digits_bundle, root)
    train = Samples(x=example_inputs("digits", None, "train")[0])
    held = Samples(x=example_inputs("digits", 200, "test")[0])
    cfg = LearnConfig(steps=600, warmup_steps=0, batch_size=64, lr=3e-3, budget_s=120.0, threads=1)
    add_exit(root, "pool1", train, held, target=0.99, hidden=64, cfg=cfg, progress=False)
    return root


def test_exited_requests_never_exceed_the_calibrated_disagreement(digits_exit: Path) -> None:
    b = load_bundle(digits_exit)
    (e,) = b.manifest.exits
    assert e.path in b.manifest.files and e.num_calibration == 200
    s = BundleSessions(b)
    x = example_inputs("digits", 200, "test")[0]  # the calibration set
    logits = run_batched(b.path(e.path), s.head(e.split)(x))
    taken = e.takes(logits)
    assert taken.mean() == pytest.approx(e.rate)
    assert e.rate > 0.2, "a trained exit on digits answers a good share"
    agree = top1(logits) == top1(s.full()(x))
    assert agree[taken].mean() >= e.target
    assert agree[taken].mean() == pytest.approx(e.agreement)


def test_engine_prediction_and_explain_include_the_exit(digits_exit: Path) -> None:
    b = load_bundle(digits_exit)
    (e,) = b.manifest.exits
    profile = profile_from_bundle(b)
    keys = {p.key for p in profile.paths}
    assert f"edge_only@exit:{e.name}" in keys and "edge_only" in profile.path_keys()
    assert f"split:relu3@exit:{e.name}" in keys and f"split:{e.split}@exit:{e.name}" in keys
    d = decide(
        profile,
        policy=Policy(mode="auto"),
        net=NetState(rtt_ms=5.0, bandwidth_bps=1e6),
        cloud=CloudState(),
        edge=EdgeState(),
        accuracy_budget=0.05,
    )
    rows = {r["key"]: r for r in d.explain()["candidates"]}
    ex, plain = rows[f"edge_only@exit:{e.name}"], rows["edge_only"]
    assert ex["exit"] == e.name and ex["exit_rate"] == pytest.approx(e.rate)
    full, pre = b.manifest.full_ms, b.manifest.split(e.split).head_ms
    assert ex["total_ms"] == pytest.approx(e.ms + e.rate * pre + (1 - e.rate) * full)
    assert ex["exit_saved_ms"] == pytest.approx(plain["total_ms"] - pre)
    assert ex["accuracy_loss"] == pytest.approx(e.rate * (1 - e.agreement))
    sp = rows[f"split:relu3@exit:{e.name}"]
    assert sp["bytes"] == pytest.approx((1 - e.rate) * rows["split:relu3"]["bytes"], abs=1)
    # a budget below the exit's measured loss rules it out
    if e.agreement < 1.0:
        d0 = decide(
            profile,
            policy=Policy(mode="auto"),
            net=NetState(),
            cloud=CloudState(),
            edge=EdgeState(),
            accuracy_budget=0.0,
        )
        assert not next(c for c in d0.candidates if c.key == f"edge_only@exit:{e.name}").feasible


def test_client_answers_confident_requests_from_the_exit(digits_exit: Path, tmp_path: Path) -> None:
    root = tmp_path / "b"
    shutil.copytree(digits_exit, root)
    # a device where the exit head is free: the engine then prefers the exit path
    update_bundle(
        root,
        lambda _r, m: m.__class__(
            **{
                **m.__dict__,
                "exits": tuple(e.__class__(**{**e.__dict__, "ms": 0.0}) for e in m.exits),
            }
        ),
    )
    b = load_bundle(root)
    (e,) = b.manifest.exits
    s = BundleSessions(b)
    x = example_inputs("digits", 40, "test")[0]
    exit_logits = run_batched(b.path(e.path), s.head(e.split)(x))
    full = s.full()(x)
    taken = e.takes(exit_logits)
    assert taken.any() and not taken.all()
    with Client(root, accuracy_budget=0.05, hysteresis=0.0, hysteresis_ms=0.0) as c:
        for i in range(len(x)):
            r = c.infer(x[i : i + 1])
            assert r.path == "edge_only"
            if taken[i]:
                assert r.exit == e.name
                np.testing.assert_allclose(r.output, exit_logits[i : i + 1], rtol=1e-5, atol=1e-5)
            else:
                assert r.exit is None
                np.testing.assert_allclose(r.output, full[i : i + 1], rtol=1e-4, atol=1e-4)
    assert json.loads((root / "manifest.json").read_text())["exits"][0]["ms"] == 0.0


def test_a_real_cloud_node_serves_the_bottleneck_split(wide_bn: Path) -> None:
    """Edge head + encoder, the code over gRPC, decoder + tail on a cloud node process:
    the answer is what the composed bottleneck path computes locally."""
    from collab.procs import collab_process, free_port

    m = load_bundle(wide_bn).manifest
    (sp,) = [p for p in m.split_points if p.bottleneck is not None]
    x = _wide_inputs(3, 5)
    rt = EdgeRuntime(wide_bn)
    port = free_port()
    args = [
        "cloud",
        "--listen",
        f"127.0.0.1:{port}",
        "--max-wait-ms",
        "0.5",
        "--bundle",
        str(wide_bn),
    ]
    with (
        collab_process(args, port=port, timeout=90),
        Client(
            wide_bn,
            cloud=[f"127.0.0.1:{port}"],
            codec="f32+zstd1",
            accuracy_budget=1.0,
            hedge_factor=0.0,
        ) as c,
    ):
        for i in range(len(x)):
            r = c.infer(x[i], policy=f"split:{sp.name}")
            assert not r.fell_back, r.fallback_reason
            assert r.path == "split" and r.split_point == sp.name
            code, _ = rt.head(sp.name, x[i : i + 1])
            assert code.shape == (1, 4, 16, 16)
            np.testing.assert_allclose(r.output, rt.tail(sp.name, code)[0][0], rtol=0, atol=1e-5)
            assert (
                r.bytes_sent
                < m.split(sp.bottleneck.base if sp.bottleneck else "").feature_bytes / 4
            )


def test_the_cli_adds_an_exit_and_refuses_a_bad_cut(digits_bundle: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    root = tmp_path / "d"
    shutil.copytree(digits_bundle, root)
    base = [sys.executable, "-m", "collab.cli", "bottleneck", str(root), "--no-progress"]
    r = subprocess.run([*base, "--cut", "flatten"], capture_output=True, text=True)
    assert r.returncode != 0 and "not a float32 (N, C, H, W) feature map" in r.stderr
    small = ["--n-train", "256", "--n-held-out", "100", "--steps", "100", "--threads", "1"]
    r = subprocess.run([*base, "--exit-cut", "pool1", *small], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "early exit at pool1: tau" in r.stdout
    (e,) = load_bundle(root).manifest.exits
    assert e.num_calibration == 100 and e.train["steps"] == 100
