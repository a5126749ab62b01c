"""CKKS aggregation: exactness against the plaintext weighted mean, and key custody."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tenseal as ts

from collab.errors import ConfigError, FLError
from collab.fl import he
from collab.fl.round_sum import (
    RoundSpec,
    RoundState,
    UpdateHeader,
    decode_aggregate,
    encode_update,
    make_summer,
)
from collab.fl.state import average
from collab.fl.train import prepare_update


@pytest.fixture(scope="module")
def keys() -> he.KeyPair:
    return he.generate_keys(he.HEParams())


def _spec(keys: he.KeyPair, d: int, clients: list[str]) -> RoundSpec:
    return RoundSpec(
        federation="f",
        round=1,
        base_version="v0",
        sampled=tuple(clients),
        encoding="ckks",
        context_id=keys.context_id,
        num_values=d + 1,
        min_clients=1,
    )


def _header(spec: RoundSpec, cid: str, chunks: list[bytes]) -> UpdateHeader:
    return UpdateHeader(
        federation="f",
        round=1,
        client_id=cid,
        base_version="v0",
        encoding="ckks",
        context_id=spec.context_id,
        num_values=spec.num_values,
        num_chunks=len(chunks),
    )


@pytest.mark.slow
def test_encrypted_aggregate_equals_plaintext_weighted_mean_1m(keys: he.KeyPair) -> None:
    d = 1_000_000
    rng = np.random.default_rng(0)
    deltas = [rng.normal(0, 0.05, d) for _ in range(3)]
    counts = [120, 301, 57]
    client_ctx = he.load_context(keys.secret, require_secret=True)
    spec = _spec(keys, d, ["a", "b", "c"])
    st = RoundState(spec, make_summer("ckks", keys.public), he.HEParams().slots)
    for cid, delta, n in zip("abc", deltas, counts, strict=True):
        chunks = encode_update(prepare_update(delta, n, None, rng), ctx=client_ctx)
        st.submit(_header(spec, cid, chunks), chunks)
    agg = st.close()
    assert agg is not None and len(agg.chunks) == -(-(d + 1) // 4096)
    total = decode_aggregate(list(agg.chunks), "ckks", d + 1, client_ctx)
    got = average(total, fixed_denominator=None)
    want = np.average(np.stack(deltas), axis=0, weights=counts)
    assert np.abs(got - want).max() < 1e-6
    assert total[-1] == pytest.approx(sum(counts), abs=1e-4)


_AGGREGATOR_PROBE = r"""
import json, sys
from pathlib import Path
import tenseal as ts
from collab.fl import he
from collab.fl.round_sum import CkksSummer
d = Path(sys.argv[1])
summer = CkksSummer((d / "public.ctx").read_bytes())      # exactly what the aggregator loads
ups = [summer.parse([(d / f"u{i}.bin").read_bytes()], [4096]) for i in range(2)]
for u in ups:
    summer.add(u)
(d / "sum.bin").write_bytes(summer.payload()[0])
out = {"is_private": summer.ctx.is_private(), "errors": []}
try:
    he.decrypt(summer.ctx, summer.payload(), 4096)
    out["errors"].append(None)
except Exception as e:
    out["errors"].append(type(e).__name__ + ": " + str(e))
try:
    ts.ckks_vector_from(summer.ctx, (d / "u0.bin").read_bytes()).decrypt()   # a single client's update
    out["errors"].append(None)
except Exception as e:
    out["errors"].append(type(e).__name__ + ": " + str(e))
print(json.dumps(out))
"""


def test_aggregator_process_cannot_decrypt(keys: he.KeyPair, tmp_path: Path) -> None:
    sec, _pub = he.write_keys(keys, tmp_path)
    assert oct(sec.stat().st_mode & 0o777) == "0o600"
    client_ctx = he.load_context(keys.secret, require_secret=True)
    rng = np.random.default_rng(1)
    vals = [rng.normal(size=4096) for _ in range(2)]
    for i, v in enumerate(vals):
        (tmp_path / f"u{i}.bin").write_bytes(he.encrypt(client_ctx, v)[0])
    r = subprocess.run(
        [sys.executable, "-c", _AGGREGATOR_PROBE, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["is_private"] is False
    assert all(e is not None for e in out["errors"]), out  # neither the sum nor an update decrypts
    assert "secret key" in out["errors"][0]
    # ...while the key holder can decrypt the aggregate the aggregator produced.
    total = he.decrypt(client_ctx, [(tmp_path / "sum.bin").read_bytes()], 4096)
    assert np.abs(total - (vals[0] + vals[1])).max() < 1e-6


def test_public_context_has_no_secret_and_no_galois_keys(keys: he.KeyPair) -> None:
    pub = he.load_context(keys.public)
    assert not pub.is_private()
    assert not pub.has_galois_keys()
    with pytest.raises(FLError, match="no secret key"):
        he.load_context(keys.public, require_secret=True)
    with pytest.raises(Exception):  # noqa: B017 - symmetric mode: the aggregator cannot even encrypt
        ts.ckks_vector(pub, [1.0, 2.0])


def test_public_key_mode_still_works() -> None:
    k = he.generate_keys(he.HEParams(encryption="public_key"))
    pub = he.load_context(k.public)
    assert not pub.is_private()
    chunks = he.encrypt(pub, np.ones(10))  # anyone with the public context can encrypt
    assert np.abs(he.decrypt(he.load_context(k.secret), chunks, 10) - 1).max() < 1e-6


def test_aggregator_refuses_a_secret_context(keys: he.KeyPair) -> None:
    with pytest.raises(FLError, match="secret key"):
        make_summer("ckks", keys.secret)


def test_bad_he_params() -> None:
    with pytest.raises(ConfigError):
        he.HEParams(poly_modulus_degree=1000)
    with pytest.raises(ConfigError):
        he.HEParams(coeff_mod_bit_sizes=(60,))
    with pytest.raises(ConfigError):
        he.HEParams(scale_bits=60)


def test_small_n_context_roundtrip() -> None:
    k = he.generate_keys(he.HEParams(poly_modulus_degree=4096, coeff_mod_bit_sizes=(60, 49)))
    ctx = he.load_context(k.secret, require_secret=True)
    v = np.linspace(-1, 1, 5000)
    chunks = he.encrypt(ctx, v)
    assert len(chunks) == 3  # 2048 slots each
    assert np.abs(he.decrypt(ctx, chunks, 5000) - v).max() < 1e-6
