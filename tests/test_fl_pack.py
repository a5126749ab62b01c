"""Packed quantized CKKS updates (collab.fl.pack): the documented error bound, exact sums
of n clients through real ciphertexts, refused mismatching uploads (sum untouched, also
over real gRPC), refused oversized rounds, and an ε the packing does not change."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from collab.errors import FLError
from collab.fl import he, pack
from collab.fl import messages as msg
from collab.fl.aggregator import Aggregator, serve
from collab.fl.config import HEParams, config_from_dict
from collab.fl.participant import AggregatorStub, UploadRefused
from collab.fl.round_sum import (
    RoundSpec,
    RoundState,
    UpdateHeader,
    decode_aggregate,
    encode_update,
    make_summer,
    upload_header,
)
from collab.fl.rounds import RoundPlanner
from collab.fl.simulate import simulate

PARAMS = HEParams()


@pytest.fixture(scope="module")
def keys() -> he.KeyPair:
    return he.generate_keys(PARAMS)


def test_automatic_choice_follows_client_count_and_precision() -> None:
    four, twenty = pack.choose(PARAMS, 4, 1.0), pack.choose(PARAMS, 20, 1.0)
    assert (four.per_slot, four.bits, four.headroom) == (4, 8, 2)
    assert (twenty.per_slot, twenty.bits, twenty.headroom) == (3, 8, 5)
    for pk, n in ((four, 4), (twenty, 20)):
        assert pk.per_slot * pk.width <= pack.precision_bits(PARAMS, n)
        assert pk.max_clients >= n
    # explicit values beyond the scheme's precision are refused with the numbers
    with pytest.raises(FLError, match="exceeds the 41 exact bits"):
        pack.choose(PARAMS, 4, 1.0, bits=12, per_slot=4)


def test_pack_unpack_round_trip_within_one_step() -> None:
    pk = pack.choose(PARAMS, 4, 0.5)
    rng = np.random.default_rng(1)
    x = rng.normal(scale=0.2, size=10_001)
    q = pack.quantize(x, pk, rng)
    assert np.abs(q).max() <= pk.levels
    # integer packing is exact, including the padded tail
    assert np.array_equal(pack.unpack_ints(pack.pack_ints(q, pk), pk, 1, len(q)), q)
    clipped = np.clip(x, -pk.range, pk.range)
    assert np.abs(q * pk.step - clipped).max() < pk.step  # the documented bound
    assert pack.clipped_fraction(x, pk) > 0  # N(0, 0.2) exceeds 0.5 sometimes
    # stochastic rounding is unbiased: the mean of many quantizations converges to x
    many = np.mean([pack.quantize(x[:50], pk, rng) for _ in range(4000)], axis=0) * pk.step
    assert np.abs(many - clipped[:50]).max() < 4 * pk.step / np.sqrt(4000)


def test_sum_of_n_clients_through_ckks_is_exact_to_the_bound(keys: he.KeyPair) -> None:
    n, d = 4, 2 * 4 * 4096 + 100  # 3 packed ciphertexts at k = 4 (4096 slots each)
    pk = pack.choose(PARAMS, n, 0.05)
    ctx = he.load_context(keys.secret, require_secret=True)
    rng = np.random.default_rng(2)
    spec = RoundSpec(
        federation="p",
        round=1,
        base_version="v0",
        sampled=tuple(f"c{k}" for k in range(n)),
        encoding="ckks",
        context_id=keys.context_id,
        num_values=d + 1,
        min_clients=1,
        packing=pk,
    )
    st = RoundState(spec, make_summer("ckks", keys.public), PARAMS.slots)
    vecs, ints = [], []
    for k in range(n):
        v = np.concatenate([rng.normal(scale=0.02, size=d), [10.0 + k]])
        v[: 4 * k + 1] = 1.0  # beyond the range: clipped
        # the same draws the upload makes, to compare integer sums exactly
        seed = 100 + k
        ints.append(pack.quantize(v[:-1], pk, np.random.default_rng(seed)))
        chunks = encode_update(
            v, ctx=ctx, packing=pk, params=PARAMS, rng=np.random.default_rng(seed)
        )
        assert len(chunks) == 3
        st.submit(_header(spec, f"c{k}", len(chunks)), chunks)
        vecs.append(v)
    agg = st.close()
    assert agg is not None and agg.packing == pk
    total = decode_aggregate(
        list(agg.chunks), "ckks", d + 1, ctx, packing=pk, params=PARAMS, reporters=n
    )
    # exact: the decoded sum IS the sum of the clients' quantized integers
    assert np.array_equal(np.rint(total[:-1] / pk.step).astype(np.int64), sum(ints))
    clipped = sum(np.clip(v[:-1], -pk.range, pk.range) for v in vecs)
    assert np.abs(total[:-1] - clipped).max() < n * pk.step
    assert total[-1] == pytest.approx(sum(v[-1] for v in vecs), abs=1e-6)  # weight slot


def _header(spec: RoundSpec, cid: str, n_chunks: int, **kw: object) -> UpdateHeader:
    return dataclasses.replace(upload_header(spec, cid, n_chunks), **kw)  # type: ignore[arg-type]


def _cfg(**he_kw: object):  # type: ignore[no-untyped-def]
    return config_from_dict(
        {
            "federation": "pk",
            "clients": 3,
            "modes": ["he"],
            "model": {"federated": ["fc2"]},
            "round": {"min_clients": 1},
            "he": {"pack": True, **he_kw},
        }
    )


def test_mismatching_packing_is_invalid_argument_and_leaves_the_sum(keys: he.KeyPair) -> None:
    agg = Aggregator(_cfg(), keys.public)
    for c in ("c0", "c1", "c2"):
        agg.roster[c] = msg.ClientHello(client_id=c, num_examples=10)
    ctx = he.load_context(keys.secret, require_secret=True)
    with serve(agg, "127.0.0.1:0") as (_, port):
        stub = AggregatorStub(f"127.0.0.1:{port}")
        try:
            st = agg.open_round()
            spec = st.spec
            assert spec.packing is not None and spec.packing.range == pytest.approx(0.5 * 10)
            v = np.full(spec.num_values, 0.1)
            good = encode_update(
                v, ctx=ctx, packing=spec.packing, params=PARAMS, rng=np.random.default_rng(0)
            )
            assert stub.upload(_header(spec, "c0", len(good)), good) == 1
            before = st.summer.payload()
            other = dataclasses.replace(spec.packing, bits=spec.packing.bits - 1)
            bad = encode_update(
                v, ctx=ctx, packing=other, params=PARAMS, rng=np.random.default_rng(0)
            )
            for h in (
                _header(spec, "c1", len(bad), packing=other),  # other bits
                _header(spec, "c1", len(bad), packing=None),  # claims unpacked
                _header(spec, "c1", len(bad), packing=dataclasses.replace(other, range=1.0)),
            ):
                with pytest.raises(UploadRefused) as ei:
                    stub.upload(h, bad)
                assert ei.value.status == "INVALID_ARGUMENT" and "pack" in ei.value.detail
            assert st.summer.payload() == before  # bit-identical
            assert stub.upload(_header(spec, "c1", len(good)), good) == 2
        finally:
            stub.close()


def test_too_many_clients_refuse_the_round_naming_the_limit() -> None:
    # k = 4 at 8 bits leaves 2 headroom bits: sums of at most 4 uploads
    cfg = _cfg(pack_per_slot=4, pack_bits=8)
    planner = RoundPlanner(cfg, 650)
    assert planner.packing is not None and planner.packing.max_clients == 4
    planner.next_spec("v0", [f"c{k}" for k in range(4)])
    with pytest.raises(FLError, match=r"5 clients sampled.*at most 4 uploads"):
        planner.next_spec("v0", [f"c{k}" for k in range(5)])
    assert planner.round == 1  # nothing was announced
    with pytest.raises(FLError, match="exceed the packing's limit of 4"):  # nor decode one
        pack.decode(np.zeros(3), planner.packing, PARAMS, 5, 9)


def test_epsilon_is_unchanged_by_quantization() -> None:
    """DP noise is added before quantization: the accountant sees the same sigma and
    reporters, so ε per round is identical packed or not, and the packed model learns."""
    base = {
        "federation": "eps",
        "clients": 4,
        "rounds": 2,
        "modes": ["dp+he"],
        "model": {"federated": ["fc1", "fc2"]},  # 17,114 values: 5 ciphertexts, 2 packed
        "train": {"local_epochs": 1},
        "round": {"min_clients": 3},
        "dp": {"clip": 1.0, "noise_multiplier": 1.0},
        "simulate": {"evaluate": False},
    }
    plain = simulate(config_from_dict(base), progress=False)
    packed = simulate(config_from_dict({**base, "he": {"pack": True}}), progress=False)
    assert [r.epsilon for r in packed] == [r.epsilon for r in plain]
    assert all(r.epsilon is not None and r.epsilon > 0 for r in packed)
    assert packed[0].upload_bytes * 2 < plain[0].upload_bytes  # fewer ciphertexts
