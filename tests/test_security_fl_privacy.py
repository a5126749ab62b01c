"""Issue 17, FL privacy: attacks on DP noise, the accountant, the plaintext-DP clip bound
and HE aggregation, each against a real aggregator (gRPC server on port 0, MQTT through a
real Mosquitto, `collab fl client` processes) and shown to fail now."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tenseal as ts
import yaml

from collab.control.mqtt import MqttClient, MqttConfig
from collab.fl import he
from collab.fl import messages as msg
from collab.fl.accountant import DEFAULT_ORDERS, compute_rdp, get_privacy_spent
from collab.fl.aggregator import Aggregator, serve
from collab.fl.config import NO_PRIVACY_GUARANTEE, FLConfig, config_from_dict, config_to_dict
from collab.fl.data import member_data
from collab.fl.member import ModelHolder, dp_params, train_params
from collab.fl.participant import AggregatorStub, UploadRefused
from collab.fl.round_sum import (
    Aggregate,
    RoundState,
    UpdateHeader,
    encode_update,
    upload_header,
)
from collab.fl.rounds import RoundPlanner
from collab.fl.train import clip_l2, local_train
from collab.procs import Broker, collab_process


def eps(q: float, sigma: float, steps: int) -> float:
    rdp = compute_rdp(q=q, noise_multiplier=sigma, steps=steps)
    return get_privacy_spent(orders=DEFAULT_ORDERS, rdp=rdp, delta=1e-5)[0]


def _cfg(mode: str, **kw: object) -> FLConfig:
    base: dict[str, object] = {
        "federation": "sec",
        "rounds": 1,
        "clients": 3,
        "modes": [mode],
        "model": {"federated": ["fc2"]},
        "round": {"min_clients": 1, "deadline_s": 40.0},
        "dp": {"clip": 0.5, "noise_multiplier": 1.0},
    }
    base.update(kw)
    return config_from_dict(base)


class RecordingAggregator(Aggregator):
    """The aggregator as an attacker would run it: it keeps every upload it sees."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.seen: dict[str, list[bytes]] = {}

    def upload(self, header: UpdateHeader, chunks: list[bytes]) -> int:
        self.seen[header.client_id] = list(chunks)
        return super().upload(header, chunks)


def _clipped_update(cfg: FLConfig, k: int) -> np.ndarray:
    """Client k's clipped update of round 1, replayed (local training is seeded)."""
    holder = ModelHolder(cfg)
    x, y = member_data(cfg, k)
    seed = (cfg.seed * 1000 + k) * 100_003 + 1  # collab.fl.member.Trainer's training seed
    delta = local_train(
        holder.model, holder.names, holder.state.flat, x, y, train_params(cfg), seed=seed
    )
    return clip_l2(delta, cfg.dp.clip)


def _public_noise(cfg: FLConfig, k: int, share_std: float, d: int) -> np.ndarray:
    """What the issue's attacker regenerated: the share from (config seed, client index, round)."""
    return np.random.default_rng([cfg.seed * 1000 + k, 1, 17]).normal(0.0, share_std, d)


@pytest.mark.parametrize("insecure", [False, True], ids=["os-noise", "insecure-deterministic"])
def test_regenerating_dp_noise_from_public_values_does_not_reveal_updates(
    broker: Broker, tmp_path: Path, insecure: bool
) -> None:
    cfg = _cfg("dp", round={"min_clients": 3, "deadline_s": 90.0}, insecure_deterministic=insecure)
    cfg_path = tmp_path / "fl.yaml"
    cfg_path.write_text(yaml.safe_dump(config_to_dict(cfg)))
    agg = RecordingAggregator(cfg, None)
    with (
        serve(agg) as (_, port),
        MqttClient(MqttConfig(url=broker.url, client_id="sec-aggregator")) as mq,
        collab_process(
            ["fl", "client", "--config", str(cfg_path), "--broker", broker.url, "--index", "0-2"],
            log=tmp_path / "clients.log",
        ),
    ):
        agg.attach(mq)
        (out,) = agg.run(wait_clients_s=60)
        stub = AggregatorStub(f"127.0.0.1:{port}")
        released = stub.fetch("sec", agg.aggregates and next(iter(agg.aggregates)))
        stub.close()
    assert out.aggregated and out.reporters == 3, (tmp_path / "clients.log").read_text()[-2000:]
    dp = dp_params(cfg)
    assert dp is not None
    d = agg.dim
    truth = {k: _clipped_update(cfg, k) for k in range(3)}
    regen = {k: _public_noise(cfg, k, dp.share_std, d) for k in range(3)}
    # one client's upload, as the aggregator sees it, minus the regenerated noise
    for k in range(3):
        upload = np.frombuffer(b"".join(agg.seen[f"c{k:03d}"]), dtype="<f4").astype(np.float64)
        err = upload[:-1] - regen[k] - truth[k]
        if insecure:  # the attack of the issue: recovered to float32 rounding
            assert np.abs(err).max() < 1e-5
        else:  # fresh noise minus an independent guess: sqrt(2) x the share's std, not less
            assert err.std() == pytest.approx(np.sqrt(2) * dp.share_std, rel=0.15)
    # the released aggregate minus all regenerated shares: the sum's noise sigma*S remains
    total = np.frombuffer(b"".join(released.chunks), dtype="<f8")
    err = total[:-1] - sum(regen.values()) - sum(truth.values())
    if insecure:
        assert np.abs(err).max() < 1e-5
    else:
        sigma_s = cfg.dp.noise_multiplier * cfg.dp.clip
        assert err.std() == pytest.approx(np.sqrt(2) * sigma_s, rel=0.15)
    assert total[-1] == 3.0  # the weight slot: the number of reporters (see the accountant)
    assert out.epsilon == pytest.approx(eps(1.0, 1.0, 1), rel=1e-9)


def test_public_sample_gets_no_amplification_in_the_reported_epsilon() -> None:
    # q = 0.1, sigma = 1, 100 rounds: amplification would claim 7.90, but the sample is
    # announced, so a client known to be in 20 rounds has the 20-round Gaussian ε ≈ 30.
    cfg = _cfg(
        "dp", clients=10, round={"sample_rate": 0.1, "min_clients": 1}, dp={"noise_multiplier": 1.0}
    )
    planner = RoundPlanner(cfg, 10)
    for r in range(1, 101):
        reporter = "c000" if r <= 20 else f"c{1 + r % 8:03d}"  # others: 10 rounds each
        eps_r, sigma_eff = planner.account(
            Aggregate(
                federation="sec-dp",
                round=r,
                base_version="v",
                version="v",
                encoding="f32",
                context_id="",
                num_values=11,
                reporters=(reporter,),
                fixed_denominator=1.0,
                chunks=(),
            )
        )
        assert sigma_eff == pytest.approx(1.0)
    assert planner.accountant is not None
    assert eps(0.1, 1.0, 100) == pytest.approx(7.90, abs=0.01)  # what used to be reported
    assert eps_r == pytest.approx(eps(1.0, 1.0, 20), rel=1e-9)
    assert eps_r == pytest.approx(30.13, abs=0.01)
    assert planner.accountant.clients["c001"].epsilon == pytest.approx(eps(1.0, 1.0, 10))
    # the budget check asks about the worst client being in one more round
    assert planner.check_budget() == pytest.approx(eps(1.0, 1.0, 21), rel=1e-9)


def test_round_sample_is_not_reproducible_from_the_config() -> None:
    cfg = _cfg("dp", clients=200, round={"sample_rate": 0.5, "min_clients": 1})
    roster = [f"c{k:03d}" for k in range(200)]
    a, b = RoundPlanner(cfg, 10).sample(roster), RoundPlanner(cfg, 10).sample(roster)
    assert a != b  # equal with probability 2^-200
    insecure = _cfg(
        "dp", clients=200, round={"sample_rate": 0.5, "min_clients": 1}, insecure_deterministic=True
    )
    assert RoundPlanner(insecure, 10).sample(roster) == RoundPlanner(insecure, 10).sample(roster)


def _header(st: RoundState, cid: str, n_chunks: int) -> UpdateHeader:
    return upload_header(st.spec, cid, n_chunks)


def _running(cfg: FLConfig, public: bytes | None):  # type: ignore[no-untyped-def]
    agg = Aggregator(cfg, public)
    for c in ("c000", "c001", "c002"):
        agg.roster[c] = msg.ClientHello(client_id=c, num_examples=10)
    return agg


def test_norm_1e6_update_is_refused_in_plaintext_dp_and_the_sum_is_unchanged() -> None:
    cfg = _cfg("dp")
    agg = _running(cfg, None)
    with serve(agg) as (_, port):
        stub = AggregatorStub(f"127.0.0.1:{port}")
        st = agg.open_round()
        d = st.spec.num_values - 1
        dp = dp_params(cfg)
        assert dp is not None
        rng = np.random.default_rng(0)
        honest = np.append(clip_l2(rng.normal(size=d), dp.clip) + rng.normal(0, dp.share_std, d), 1)
        assert stub.upload(_header(st, "c000", 1), encode_update(honest, ctx=None)) == 1
        before = st.summer.payload()
        huge = np.append(np.full(d, 1e6 / np.sqrt(d)), 1.0)  # norm 10^6
        with pytest.raises(UploadRefused) as ei:
            stub.upload(_header(st, "c001", 1), encode_update(huge, ctx=None))
        assert ei.value.status == "INVALID_ARGUMENT" and "DP bound" in ei.value.detail
        heavy = honest.copy()
        heavy[-1] = 1000.0  # the unnoised weight slot must stay 1
        with pytest.raises(UploadRefused) as ei:
            stub.upload(_header(st, "c001", 1), encode_update(heavy, ctx=None))
        assert ei.value.status == "INVALID_ARGUMENT" and "weight slot" in ei.value.detail
        assert st.summer.payload() == before and st.reporters == ["c000"]
        assert stub.upload(_header(st, "c001", 1), encode_update(honest, ctx=None)) == 2
        stub.close()


@pytest.fixture(scope="module")
def keys() -> he.KeyPair:
    return he.generate_keys(he.HEParams())


def test_he_upload_with_a_bad_chunk_after_good_ones_leaves_the_sum_bit_identical(
    keys: he.KeyPair,
) -> None:
    cfg = _cfg("he", model={"federated": ["fc1", "fc2"]})
    agg = _running(cfg, keys.public)
    ctx = he.load_context(keys.secret, require_secret=True)
    with serve(agg) as (_, port):
        stub = AggregatorStub(f"127.0.0.1:{port}")
        st = agg.open_round()
        n = st.spec.num_values
        rng = np.random.default_rng(1)
        good0, good1 = rng.normal(size=n), rng.normal(size=n)
        c0 = encode_update(good0, ctx=ctx)
        assert len(c0) >= 4
        assert stub.upload(_header(st, "c000", len(c0)), c0) == 1
        before = st.summer.payload()
        bad = encode_update(good1, ctx=ctx)
        k = 2  # chunks 0 and 1 are fine; chunk 2 is at another scale
        bad[k] = ts.ckks_vector(
            ctx, good1[k * 4096 : (k + 1) * 4096].tolist(), scale=2.0**30
        ).serialize()
        with pytest.raises(UploadRefused) as ei:
            stub.upload(_header(st, "c001", len(bad)), bad)
        assert ei.value.status == "INVALID_ARGUMENT" and f"chunk {k}" in ei.value.detail
        assert st.summer.payload() == before and st.reporters == ["c000"]
        c1 = encode_update(good1, ctx=ctx)
        assert stub.upload(_header(st, "c001", len(c1)), c1) == 2
        out = agg.close_round(st)
        total = he.decrypt(ctx, list(agg.fetch(st.spec.base_version).chunks), n)
        assert out.aggregated and np.abs(total - (good0 + good1)).max() < 1e-6
        stub.close()


def test_insecure_deterministic_run_says_no_privacy_guarantee(tmp_path: Path) -> None:
    cfg = _cfg("dp", rounds=1, clients=2, out=str(tmp_path / "out"), simulate={"evaluate": False})
    cfg_path = tmp_path / "fl.yaml"
    cfg_path.write_text(yaml.safe_dump(config_to_dict(cfg)))
    run = [sys.executable, "-m", "collab.cli", "fl", "run", "--config", str(cfg_path)]
    proc = subprocess.run(
        [*run, "--in-process", "--no-progress", "--insecure-deterministic"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert NO_PRIVACY_GUARANTEE in proc.stdout
    (point,) = json.loads((tmp_path / "out" / "dp" / "rounds.json").read_text())
    assert point["privacy"] == NO_PRIVACY_GUARANTEE
