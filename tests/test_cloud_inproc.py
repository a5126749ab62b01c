"""Cloud node behaviours tested on an in-process server (``serve()``): batching,
deadline drops, TLS, config validation, and the shared transport helpers."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from test_cloud_support import (
    full_output,
    head_feature,
    model_id,
    sample_inputs,
    stub,
    wait_ready,
)

from cloud_node.config import CloudConfig
from cloud_node.server import serve
from collab import codec
from collab.bundle import Bundle, load_bundle
from collab.errors import ConfigError, DeadlineError, TransportError
from collab.proto import collab_pb2
from collab.transport import (
    RpcDeadlineError,
    RpcError,
    TlsConfig,
    rpc_errors,
    target_for,
)
from tests.helpers.certs import make_ca


@pytest.fixture(scope="module")
def bundle(digits_bundle: Path) -> Bundle:
    return load_bundle(digits_bundle)


def _req(b: Bundle, x: np.ndarray, split: str) -> collab_pb2.DecodeRequest:
    return collab_pb2.DecodeRequest(
        model=model_id(b), split_point=split, frame=codec.encode(head_feature(b, split, x), "f32")
    )


def test_concurrent_requests_form_real_batches(bundle: Bundle) -> None:
    split = bundle.manifest.split_points[0].name
    x = sample_inputs(bundle, 16)
    want = full_output(bundle, x)
    cfg = CloudConfig(
        bundles=(bundle.root,),
        listen="127.0.0.1:0",
        max_batch_size=8,
        max_wait_ms=100,
        workers=1,
        wait_when_idle=True,
    )
    with serve(cfg) as (server, port):
        ch, st = stub(f"127.0.0.1:{port}")
        wait_ready(ch)
        futs = [st.Decode.future(_req(bundle, x[i : i + 1], split), timeout=20) for i in range(16)]
        replies = [f.result() for f in futs]
        for i, r in enumerate(replies):  # each caller got its own row back
            np.testing.assert_array_equal(codec.decode(r.output), want[i : i + 1])
        sizes = [r.timing.batch_size for r in replies]
        assert max(sizes) > 1, sizes
        labels = {"model": bundle.name, "split": split}
        n_batches = server.metrics.value("collab_cloud_batch_size_count", labels)
        n_samples = server.metrics.value("collab_cloud_batch_size_sum", labels)
        assert n_samples == 16 and n_batches < 16, (n_batches, n_samples)
        assert all(r.timing.queue_ms >= 0 and r.load.compute_ms_ewma > 0 for r in replies)
        ch.close()


def test_batch_size_one_never_batches(bundle: Bundle) -> None:
    split = bundle.manifest.split_points[-1].name
    x = sample_inputs(bundle, 8)
    with serve(
        CloudConfig(bundles=(bundle.root,), listen="127.0.0.1:0", max_batch_size=1, max_wait_ms=50)
    ) as (_, port):
        ch, st = stub(f"127.0.0.1:{port}")
        futs = [st.Decode.future(_req(bundle, x[i : i + 1], split), timeout=20) for i in range(8)]
        assert {f.result().timing.batch_size for f in futs} == {1}
        ch.close()


def test_expired_requests_are_dropped_before_compute(bundle: Bundle) -> None:
    split = bundle.manifest.split_points[0].name
    x = sample_inputs(bundle, 1)
    # a long batching window guarantees the 500 ms deadline passes while queued
    cfg = CloudConfig(
        bundles=(bundle.root,),
        listen="127.0.0.1:0",
        max_batch_size=64,
        max_wait_ms=1000,
        wait_when_idle=True,
    )
    with serve(cfg) as (server, port):
        ch, st = stub(f"127.0.0.1:{port}")
        wait_ready(ch)
        labels = {"model": bundle.name, "split": split}
        req = _req(bundle, x, split)
        drops = {**labels, "reason": "deadline"}
        for i in range(3):
            with pytest.raises(grpc.RpcError) as ei:
                st.Decode(req, timeout=0.5)
            assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            # the server's copy of the deadline is a little later than the client's: wait
            # for its drop, so the next request cannot ride along in a batch taken early
            deadline = time.monotonic() + 5
            while (
                server.metrics.value("collab_cloud_dropped_total", drops) < i + 1
                and time.monotonic() < deadline
            ):
                time.sleep(0.01)
        assert server.metrics.value("collab_cloud_dropped_total", drops) == 3
        assert (
            server.metrics.value("collab_cloud_batch_size_count", labels) == 0
        )  # nothing computed
        # a request with time to spare still runs after the window
        r = st.Decode(req, timeout=10)
        assert r.timing.batch_size == 1 and r.timing.queue_ms >= 900
        assert server.metrics.value("collab_cloud_batch_size_count", labels) == 1
        ch.close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pki")
    ca = make_ca(d / "ca")
    other = make_ca(d / "other", name="other-ca")
    srv = ca.issue("server", hosts=("localhost", "127.0.0.1"))
    cli = ca.issue("edge-1", hosts=())
    rogue = other.issue("rogue", hosts=())
    return {
        "ca": ca.cert,
        "srv_cert": srv.cert,
        "srv_key": srv.key,
        "cli_cert": cli.cert,
        "cli_key": cli.key,
        "rogue_cert": rogue.cert,
        "rogue_key": rogue.key,
        "other_ca": other.cert,
    }


def _infer_ok(b: Bundle, addr: str, tls: TlsConfig) -> None:
    ch, st = stub(addr, tls=tls)
    x = sample_inputs(b, 1)
    try:
        with rpc_errors("Infer"):
            r = st.Infer(
                collab_pb2.InferRequest(model=model_id(b), frame=codec.encode(x, "f32")), timeout=10
            )
    finally:
        ch.close()
    np.testing.assert_array_equal(codec.decode(r.output), full_output(b, x))


def _infer_refused(b: Bundle, addr: str, tls: TlsConfig) -> RpcError:
    with pytest.raises(RpcError) as ei:
        _infer_ok(b, addr, tls)
    assert ei.value.code == grpc.StatusCode.UNAVAILABLE
    return ei.value


def test_tls_server_certificate(bundle: Bundle, pki: dict[str, Path]) -> None:
    cfg = CloudConfig(
        bundles=(bundle.root,),
        listen="127.0.0.1:0",
        tls_cert=pki["srv_cert"],
        tls_key=pki["srv_key"],
    )
    with serve(cfg) as (_, port):
        _infer_ok(bundle, f"127.0.0.1:{port}", TlsConfig(ca_cert=pki["ca"]))
        _infer_ok(bundle, f"localhost:{port}", TlsConfig(ca_cert=pki["ca"]))
        _infer_refused(bundle, f"127.0.0.1:{port}", TlsConfig(ca_cert=pki["other_ca"]))  # untrusted
        ch, st = stub(f"127.0.0.1:{port}")  # plaintext client against a TLS server
        with pytest.raises(grpc.RpcError):
            st.Probe(collab_pb2.ProbeRequest(), timeout=3)
        ch.close()


def test_tls_required_client_certificates(bundle: Bundle, pki: dict[str, Path]) -> None:
    cfg = CloudConfig(
        bundles=(bundle.root,),
        listen="127.0.0.1:0",
        tls_cert=pki["srv_cert"],
        tls_key=pki["srv_key"],
        tls_client_ca=pki["ca"],
    )
    with serve(cfg) as (_, port):
        addr = f"127.0.0.1:{port}"
        _infer_ok(
            bundle,
            addr,
            TlsConfig(ca_cert=pki["ca"], client_cert=pki["cli_cert"], client_key=pki["cli_key"]),
        )
        _infer_refused(bundle, addr, TlsConfig(ca_cert=pki["ca"]))  # no client cert
        _infer_refused(
            bundle,
            addr,
            TlsConfig(
                ca_cert=pki["ca"], client_cert=pki["rogue_cert"], client_key=pki["rogue_key"]
            ),
        )  # wrong CA


def test_config_errors(bundle: Bundle, tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        CloudConfig(bundles=())
    with pytest.raises(ConfigError):
        CloudConfig(bundles=(bundle.root,), max_batch_size=0)
    with pytest.raises(ConfigError):
        CloudConfig(bundles=(bundle.root,), listen="nohost")
    with pytest.raises(ConfigError):
        CloudConfig(bundles=(bundle.root,), tls_cert=tmp_path / "c.pem")
    with (
        serve(CloudConfig(bundles=(bundle.root,), listen="127.0.0.1:0")) as (_, port),
        pytest.raises(ConfigError),
        serve(CloudConfig(bundles=(bundle.root,), listen=f"127.0.0.1:{port}")),
    ):
        pass


def test_transport_targets_and_error_wrapping(bundle: Bundle) -> None:
    assert target_for(["127.0.0.1:1", "127.0.0.1:2"]) == "ipv4:127.0.0.1:1,127.0.0.1:2"
    assert target_for(["localhost:5"]) == "dns:///localhost:5"
    assert target_for(["[::1]:7", "[::1]:8"]) == "ipv6:[::1]:7,[::1]:8"
    for bad in ([], ["x"], ["h:0"], ["h:99999"], ["127.0.0.1:1", "[::1]:2"]):
        with pytest.raises(ConfigError):
            target_for(bad)
    cfg = CloudConfig(
        bundles=(bundle.root,),
        listen="127.0.0.1:0",
        max_wait_ms=300,
        max_batch_size=64,
        wait_when_idle=True,
    )
    with serve(cfg) as (_, port):
        ch, st = stub(f"127.0.0.1:{port}")
        split = bundle.manifest.split_points[0].name
        x = sample_inputs(bundle, 1)
        with pytest.raises(RpcDeadlineError) as ei, rpc_errors("Decode"):
            st.Decode(_req(bundle, x, split), timeout=0.05)
        assert (
            isinstance(ei.value, DeadlineError)
            and ei.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        )
        with pytest.raises(RpcError) as e2, rpc_errors("Decode"):
            st.Decode(
                collab_pb2.DecodeRequest(
                    model=model_id(bundle), split_point="nope", frame=_req(bundle, x, split).frame
                ),
                timeout=5,
            )
        assert isinstance(e2.value, TransportError) and e2.value.code == grpc.StatusCode.NOT_FOUND
        assert "nope" in e2.value.details
        ch.close()


def test_cli_refuses_bad_bundles_and_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from collab.cli import main

    assert main(["cloud", "--bundle", str(tmp_path / "missing"), "--listen", "127.0.0.1:0"]) == 1
    assert "not a bundle" in capsys.readouterr().err
    bad = tmp_path / "b"
    bad.mkdir()
    (bad / "manifest.json").write_text("{")
    assert main(["cloud", "--bundle", str(bad), "--listen", "127.0.0.1:0"]) == 1
    assert "manifest" in capsys.readouterr().err
    assert main(["cloud", "--bundle", str(bad), "--max-batch-size", "0"]) == 1
    assert "max_batch_size" in capsys.readouterr().err


def test_round_robin_skips_a_replica_reporting_not_serving(bundle: Bundle) -> None:
    """Client-side health checking (transport's service config): a draining replica
    gets no new calls while the other replicas take them all."""
    from grpc_health.v1 import health_pb2

    from collab.transport import SERVICE_NAME

    req = collab_pb2.InferRequest(
        model=model_id(bundle), frame=codec.encode(sample_inputs(bundle, 1), "f32")
    )
    labels = {"method": "Infer", "model": bundle.name, "split": "full"}
    cfg = CloudConfig(bundles=(bundle.root,), listen="127.0.0.1:0")
    with serve(cfg) as (s1, p1), serve(cfg) as (s2, p2):
        ch, st = stub([f"127.0.0.1:{p1}", f"127.0.0.1:{p2}"])
        wait_ready(ch)
        for _ in range(20):
            st.Infer(req, timeout=10)
        assert s1.metrics.value("collab_cloud_requests_total", labels) >= 5
        assert s2.metrics.value("collab_cloud_requests_total", labels) >= 5
        s1.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.NOT_SERVING)
        streak, deadline = 0, time.monotonic() + 10
        while streak < 30 and time.monotonic() < deadline:  # until the channel noticed
            before = s1.metrics.value("collab_cloud_requests_total", labels)
            st.Infer(req, timeout=10)
            streak = (
                streak + 1
                if s1.metrics.value("collab_cloud_requests_total", labels) == before
                else 0
            )
        assert streak >= 30, "the NOT_SERVING replica kept receiving calls"
        ch.close()


def test_cloud_path_never_imports_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, cloud_node.cli, cloud_node.server, collab.transport, collab.codec; "
        "sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_tls_file_errors_are_config_errors(
    bundle: Bundle, pki: dict[str, Path], tmp_path: Path
) -> None:
    from collab.transport import channel_credentials

    with pytest.raises(ConfigError, match="CA certificate"):
        channel_credentials(TlsConfig(ca_cert=tmp_path / "nope.crt"))
    with pytest.raises(ConfigError, match="both"):
        channel_credentials(TlsConfig(ca_cert=pki["ca"], client_cert=pki["cli_cert"]))
    cfg = CloudConfig(
        bundles=(bundle.root,), tls_cert=tmp_path / "missing.crt", tls_key=pki["srv_key"]
    )
    with pytest.raises(ConfigError, match="TLS certificate"), serve(cfg):
        pass
