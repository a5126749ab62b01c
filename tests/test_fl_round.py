"""Bad uploads over real gRPC: each is rejected with a status and a reason, and the
round carries on and aggregates the good ones."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from collab.errors import FLError
from collab.fl import he
from collab.fl import messages as msg
from collab.fl.aggregator import Aggregator, serve
from collab.fl.config import FLConfig, config_from_dict
from collab.fl.participant import AggregatorStub, UploadRefused
from collab.fl.round_sum import UpdateHeader, decode_aggregate, encode_update
from collab.proto import fl_pb2


def _cfg(mode: str) -> FLConfig:
    return config_from_dict(
        {
            "federation": "bad",
            "clients": 3,
            "modes": [mode],
            "model": {"federated": ["fc2"]},
            "round": {"min_clients": 1},
        }
    )


@pytest.fixture(scope="module")
def keys() -> he.KeyPair:
    return he.generate_keys(he.HEParams())


@pytest.fixture
def running(keys: he.KeyPair) -> Iterator[tuple[Aggregator, AggregatorStub]]:
    agg = Aggregator(_cfg("he"), keys.public)
    for c in ("c0", "c1", "c2"):
        agg.roster[c] = msg.ClientHello(client_id=c, num_examples=10)
    with serve(agg, "127.0.0.1:0") as (_, port):
        stub = AggregatorStub(f"127.0.0.1:{port}")
        yield agg, stub
        stub.close()


def _header(agg: Aggregator, cid: str, n_chunks: int = 1, **kw: object) -> UpdateHeader:
    st = agg.current
    assert st is not None
    base = dict(
        federation="bad",
        round=st.spec.round,
        client_id=cid,
        base_version=st.spec.base_version,
        encoding="ckks",
        context_id=st.spec.context_id,
        num_values=st.spec.num_values,
        num_chunks=n_chunks,
    )
    base.update(kw)
    return UpdateHeader(**base)  # type: ignore[arg-type]


def _refused(stub: AggregatorStub, h: UpdateHeader, chunks: list[bytes]) -> UploadRefused:
    with pytest.raises(UploadRefused) as ei:
        stub.upload(h, chunks)
    return ei.value


def test_bad_uploads_are_rejected_and_the_round_continues(running, keys: he.KeyPair) -> None:  # type: ignore[no-untyped-def]
    agg, stub = running
    st = agg.open_round()
    d1 = st.spec.num_values
    assert d1 == 651  # fc2 of the digits CNN + the weight slot
    ctx = he.load_context(keys.secret, require_secret=True)
    rng = np.random.default_rng(0)
    good0, good1 = rng.normal(size=d1), rng.normal(size=d1)
    c0 = encode_update(good0, ctx=ctx)
    assert stub.upload(_header(agg, "c0"), c0) == 1

    e = _refused(stub, _header(agg, "c0"), c0)
    assert e.status == "ALREADY_EXISTS" and "duplicate" in e.detail
    e = _refused(stub, _header(agg, "c1", context_id="0" * 32), c0)
    assert e.status == "FAILED_PRECONDITION" and "context" in e.detail
    other = he.generate_keys(he.HEParams(poly_modulus_degree=4096, coeff_mod_bit_sizes=(60, 49)))
    foreign = encode_update(
        good1, ctx=he.load_context(other.secret)
    )  # another context's ciphertexts
    e = _refused(stub, _header(agg, "c1", n_chunks=len(foreign)), foreign)
    assert e.status == "INVALID_ARGUMENT"
    e = _refused(stub, _header(agg, "c1", n_chunks=1), foreign[:1])
    assert e.status == "INVALID_ARGUMENT"
    e = _refused(stub, _header(agg, "c1", num_values=d1 - 1), encode_update(good1[:-1], ctx=ctx))
    assert e.status == "INVALID_ARGUMENT" and "values" in e.detail
    short = encode_update(good1[:100], ctx=ctx)  # header tells the truth about nothing
    e = _refused(stub, _header(agg, "c1"), short)
    assert e.status == "INVALID_ARGUMENT" and "carries 100 values" in e.detail
    e = _refused(stub, _header(agg, "c1"), [b"\x00garbage" * 100])
    assert e.status == "INVALID_ARGUMENT"
    e = _refused(stub, _header(agg, "c1", n_chunks=2), c0 + c0)
    assert e.status == "INVALID_ARGUMENT"
    e = _refused(stub, _header(agg, "c1", compression="zstd"), [b"not zstd"])
    assert e.status == "INVALID_ARGUMENT"
    e = _refused(stub, _header(agg, "intruder"), c0)
    assert e.status == "PERMISSION_DENIED"
    e = _refused(stub, _header(agg, "c1", base_version="stale"), c0)
    assert e.status == "FAILED_PRECONDITION"
    e = _refused(stub, _header(agg, "c1", round=st.spec.round + 1), c0)
    assert e.status == "FAILED_PRECONDITION"

    # The round is unharmed: a good update still lands and the sum is exactly the good two.
    assert (
        stub.upload(
            _header(agg, "c1", compression="zstd"),
            encode_update(good1, ctx=ctx, compression="zstd"),
        )
        == 2
    )
    out = agg.close_round(st)
    assert out.aggregated and out.reporters == 2
    e = _refused(stub, _header(agg, "c2", round=st.spec.round), c0)
    assert e.status == "FAILED_PRECONDITION" and "closed" in e.detail

    fetched = stub.fetch("bad", st.spec.base_version)
    assert fetched.version == out.version
    total = decode_aggregate(list(fetched.chunks), "ckks", d1, ctx)
    assert np.abs(total - (good0 + good1)).max() < 1e-6
    with pytest.raises(Exception, match="NOT_FOUND"):
        stub.fetch("bad", "nope")


def test_plaintext_round_rejects_nan_and_bad_lengths() -> None:
    agg = Aggregator(_cfg("plain"), None)
    agg.roster["c0"] = msg.ClientHello(client_id="c0", num_examples=1)
    with serve(agg, "127.0.0.1:0") as (_, port):
        stub = AggregatorStub(f"127.0.0.1:{port}")
        st = agg.open_round()
        d1 = st.spec.num_values
        h = _header(agg, "c0", encoding="f32", context_id="")
        bad = np.ones(d1, dtype="<f4")
        bad[3] = np.nan
        assert "NaN" in _refused(stub, h, [bad.tobytes()]).detail
        assert _refused(stub, h, [b"\x01\x02\x03"]).status == "INVALID_ARGUMENT"
        assert (
            _refused(stub, _header(agg, "c0"), [b"x"]).status == "INVALID_ARGUMENT"
        )  # ckks into f32 round
        assert stub.upload(h, encode_update(np.ones(d1), ctx=None)) == 1
        stub.close()


def test_upload_must_start_with_a_header() -> None:
    agg = Aggregator(_cfg("plain"), None)
    with serve(agg, "127.0.0.1:0") as (_, port):
        from collab.proto import fl_pb2_grpc

        ch = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = fl_pb2_grpc.FlAggregatorStub(ch)
        with pytest.raises(grpc.RpcError) as ei:
            stub.UploadUpdate(iter([fl_pb2.FlUpdateChunk(data=b"x")]))
        assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "header" in (ei.value.details() or "")
        ch.close()


def test_aggregator_needs_public_context_in_he_mode() -> None:
    with pytest.raises(FLError, match="public context"):
        Aggregator(_cfg("he"), None)
