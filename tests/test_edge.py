"""The edge daemon: `collab edge` as a real process, and serve() in-process."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from test_client import sample_inputs

from collab import codec as codecs
from collab.bundle import load_bundle
from collab.edge.config import ClientConfig
from collab.edge.runtime import EdgeRuntime
from collab.errors import ConfigError
from collab.procs import collab_process, free_port
from collab.proto import collab_pb2, collab_pb2_grpc
from edge_node.config import EdgeConfig
from edge_node.server import serve


def _infer(
    stub: collab_pb2_grpc.EdgeServiceStub, x: np.ndarray, **kw: object
) -> collab_pb2.EdgeInferResponse:
    return stub.Infer(collab_pb2.EdgeInferRequest(frame=codecs.encode(x, "f32"), **kw), timeout=30)  # type: ignore[arg-type]


def test_edge_daemon_process_with_cloud_serves_and_survives_garbage(digits_bundle: Path) -> None:
    cport, eport, mport = free_port(), free_port(), free_port()
    xs = sample_inputs(digits_bundle, 4)
    full = EdgeRuntime(digits_bundle).full(xs)[0]
    sp = load_bundle(digits_bundle).manifest.split_points[-1].name
    with (
        collab_process(
            ["cloud", "--bundle", str(digits_bundle), "--listen", f"127.0.0.1:{cport}"], port=cport
        ),
        collab_process(
            [
                "edge",
                "--bundle",
                str(digits_bundle),
                "--cloud",
                f"127.0.0.1:{cport}",
                "--listen",
                f"127.0.0.1:{eport}",
                "--metrics-port",
                str(mport),
                "--accuracy-budget",
                "0",
                "--probe-interval",
                "0.2",
            ],
            port=eport,
        ),
        grpc.insecure_channel(f"127.0.0.1:{eport}") as ch,
    ):
        stub = collab_pb2_grpc.EdgeServiceStub(ch)
        for pol in ("", "edge_only", "cloud_only", f"split:{sp}"):
            for i, x in enumerate(xs):
                r = _infer(stub, x[None], policy=pol, request_id=f"r{i}")
                assert r.request_id == f"r{i}" and not r.fell_back
                if pol:
                    assert r.path == pol.split(":")[0]
                np.testing.assert_allclose(codecs.decode(r.output), full[i : i + 1], atol=1e-4)
                assert r.model.version == load_bundle(digits_bundle).version
                assert "total_ms" in r.timings
        for bad in (
            collab_pb2.EdgeInferRequest(frame=b"garbage"),
            collab_pb2.EdgeInferRequest(frame=codecs.encode(np.zeros((1, 3), np.float32), "f32")),
            collab_pb2.EdgeInferRequest(frame=codecs.encode(xs[:1], "f32"), policy="split:nope"),
        ):
            with pytest.raises(grpc.RpcError) as ei:
                stub.Infer(bad, timeout=10)
            assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert ei.value.details()
        r = _infer(stub, xs[:1], policy="cloud_only")  # still serving after garbage
        assert r.path == "cloud_only"
        text = (
            urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=10).read().decode()
        )
    assert 'collab_edge_requests_total{path="split"}' in text
    assert 'collab_edge_requests_total{path="cloud_only"}' in text
    assert 'collab_edge_errors_total{code="INVALID_ARGUMENT"} 3.0' in text
    assert "collab_edge_latency_seconds_bucket" in text


def test_edge_serve_in_process_edge_only_and_fallback_metrics(digits_bundle: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"
    sp = load_bundle(digits_bundle).manifest.split_points[0].name
    x = sample_inputs(digits_bundle, 1)
    want = EdgeRuntime(digits_bundle).full(x)[0]
    cfg = EdgeConfig(
        bundle=digits_bundle,
        client=ClientConfig(cloud=(dead,)),
        listen="127.0.0.1:0",
        metrics_port=0,
    )
    with serve(cfg) as (server, port), grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = collab_pb2_grpc.EdgeServiceStub(ch)
        r = _infer(stub, x)
        assert r.path == "edge_only" and not r.fell_back
        np.testing.assert_allclose(codecs.decode(r.output), want, atol=1e-6)
        r = _infer(stub, x, policy=f"split:{sp}", deadline_ms=5000)
        assert r.path == "split" and r.fell_back
        np.testing.assert_allclose(codecs.decode(r.output), want, atol=1e-4)
        assert server.metrics_port
        text = (
            urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10)
            .read()
            .decode()
        )
        assert "collab_edge_fallbacks_total" in text
        assert server.client.stats().fallbacks == 1


def test_edge_config_rejects_bad_flags(digits_bundle: Path) -> None:
    for bad in ({"listen": "nohost"}, {"workers": 0}, {"tls_cert": Path("x")}):
        with pytest.raises(ConfigError):
            EdgeConfig(bundle=digits_bundle, **bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        EdgeConfig(bundle=digits_bundle, client=ClientConfig(policy="bogus"))
