"""Cloud node against a real `collab cloud` process: exactness of every split point,
Infer, Probe, health, and a garbage burst interleaved with valid calls."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from test_cloud_support import (
    full_output,
    head_feature,
    model_id,
    sample_inputs,
    scrape,
    stub,
    wait_ready,
)

from collab import codec
from collab.bundle import Bundle, load_bundle
from collab.procs import collab_process, free_port
from collab.proto import collab_pb2, collab_pb2_grpc
from collab.transport import SERVICE_NAME


@dataclass(frozen=True)
class Node:
    addr: str
    metrics_port: int
    bundle: Bundle
    proc: object
    channel: grpc.Channel
    stub: collab_pb2_grpc.CloudServiceStub


@pytest.fixture(scope="module")
def bundle(digits_bundle: Path) -> Bundle:
    return load_bundle(digits_bundle)


@pytest.fixture(scope="module")
def node(bundle: Bundle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    port, mport = free_port(), free_port()
    log = tmp_path_factory.mktemp("cloud") / "cloud.log"
    args = [
        "cloud",
        "--bundle",
        str(bundle.root),
        "--listen",
        f"127.0.0.1:{port}",
        "--metrics-port",
        str(mport),
        "--max-batch-size",
        "8",
        "--max-wait-ms",
        "2",
        "--max-probe-response-bytes",
        "262144",  # above the default cap: test_probe_echo_and_sized_reply asks for 200 kB
    ]
    with collab_process(args, port=port, log=log) as proc:
        # A client allowed to send more than the server accepts, to test the server's limit.
        ch, st = stub(f"127.0.0.1:{port}", max_message_bytes=64 << 20)
        wait_ready(ch)
        yield Node(f"127.0.0.1:{port}", mport, bundle, proc, ch, st)
        ch.close()
        assert proc.poll() is None, f"cloud node died; log:\n{Path(log).read_text()[-3000:]}"


def _decode_req(b: Bundle, split: str, frame: bytes) -> collab_pb2.DecodeRequest:
    return collab_pb2.DecodeRequest(model=model_id(b), split_point=split, frame=frame)


def test_decode_every_split_point_equals_full_model(node: Node) -> None:
    b = node.bundle
    x = sample_inputs(b, 4)
    want = full_output(b, x)
    assert b.manifest.split_points
    for sp in b.manifest.split_points:
        feat = head_feature(b, sp.name, x)
        for i in range(len(x)):  # one request per sample, as edges send them
            r = node.stub.Decode(
                _decode_req(b, sp.name, codec.encode(feat[i : i + 1], "f32")), timeout=10
            )
            got = codec.decode(r.output)
            np.testing.assert_array_equal(got, want[i : i + 1], err_msg=sp.name)
            assert r.model.version == b.version
            assert r.timing.batch_size >= 1 and r.timing.total_ms > 0
            assert r.timing.compute_ms > 0


def test_infer_equals_full_model_with_compressed_input(node: Node) -> None:
    b = node.bundle
    x = sample_inputs(b, 2, seed=1)
    for name in ("f32", "f32+zstd1"):
        r = node.stub.Infer(
            collab_pb2.InferRequest(
                model=collab_pb2.ModelId(name=b.name),
                frame=codec.encode(x, name),
                request_id="rid-7",
            ),
            timeout=10,
        )
        np.testing.assert_array_equal(codec.decode(r.output), full_output(b, x))
        assert r.request_id == "rid-7"
        assert codec.peek(r.output).codec_name == "f32"


def test_probe_echo_and_sized_reply(node: Node) -> None:
    r = node.stub.Probe(collab_pb2.ProbeRequest(payload=b"x" * 1000, client_send_time=12.5))
    assert r.payload == b"x" * 1000 and r.received_bytes == 1000 and r.client_send_time == 12.5
    assert [(m.name, m.version) for m in r.models] == [(node.bundle.name, node.bundle.version)]
    r = node.stub.Probe(collab_pb2.ProbeRequest(payload=b"", response_bytes=200_000))
    assert len(r.payload) == 200_000 and r.received_bytes == 0


def test_health_serving_per_model(node: Node) -> None:
    h = health_pb2_grpc.HealthStub(node.channel)
    for service in ("", SERVICE_NAME, f"{SERVICE_NAME}/{node.bundle.name}"):
        resp = h.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING, service
    with pytest.raises(grpc.RpcError) as ei:
        h.Check(health_pb2.HealthCheckRequest(service=f"{SERVICE_NAME}/nope"), timeout=5)
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND


def _garbage(node: Node, rng: np.random.Generator) -> list[tuple[str, object, grpc.StatusCode]]:
    b = node.bundle
    sp = b.manifest.split_points[0]
    feat = head_feature(b, sp.name, sample_inputs(b, 1))
    good = codec.encode(feat, "f32")
    mid = b.manifest.model_name
    wrong_shape = codec.encode(
        np.zeros((1, *feat.shape[1:-1], feat.shape[-1] + 1), np.float32), "f32"
    )
    flipped = bytearray(good)
    flipped[len(flipped) // 2] ^= 0xFF
    too_many = codec.encode(np.repeat(feat, 9, axis=0), "f32")  # > max batch 8
    IA, NF, RE = (
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    )
    D, Inf, P = node.stub.Decode, node.stub.Infer, node.stub.Probe
    mk = collab_pb2.ModelId
    return [
        (
            "random bytes",
            lambda: D(_decode_req(b, sp.name, rng.bytes(int(rng.integers(1, 4000)))), timeout=10),
            IA,
        ),
        ("empty frame", lambda: D(_decode_req(b, sp.name, b""), timeout=10), IA),
        ("truncated", lambda: D(_decode_req(b, sp.name, good[: len(good) // 2]), timeout=10), IA),
        ("bit flip", lambda: D(_decode_req(b, sp.name, bytes(flipped)), timeout=10), IA),
        ("wrong shape", lambda: D(_decode_req(b, sp.name, wrong_shape), timeout=10), IA),
        (
            "feature to Infer",
            lambda: Inf(collab_pb2.InferRequest(model=mk(name=mid), frame=good), timeout=10),
            IA,
        ),
        (
            "unknown model",
            lambda: D(
                collab_pb2.DecodeRequest(model=mk(name="nope"), split_point=sp.name, frame=good),
                timeout=10,
            ),
            NF,
        ),
        ("unknown split", lambda: D(_decode_req(b, "no-such-split", good), timeout=10), NF),
        (
            "wrong version",
            lambda: D(
                collab_pb2.DecodeRequest(
                    model=mk(name=mid, version="0" * 64), split_point=sp.name, frame=good
                ),
                timeout=10,
            ),
            NF,
        ),
        (
            "oversize message",
            lambda: D(_decode_req(b, sp.name, os.urandom(24 << 20)), timeout=20),
            RE,
        ),
        ("too many samples", lambda: D(_decode_req(b, sp.name, too_many), timeout=10), RE),
        (
            "probe reply too big",
            lambda: P(collab_pb2.ProbeRequest(response_bytes=2**31 - 1), timeout=10),
            RE,
        ),
        (
            "probe negative size",
            lambda: P(collab_pb2.ProbeRequest(response_bytes=-5), timeout=10),
            IA,
        ),
    ]


def test_garbage_burst_interleaved_with_valid_calls(node: Node) -> None:
    b = node.bundle
    rng = np.random.default_rng(3)
    x = sample_inputs(b, 1, seed=9)
    want = full_output(b, x)
    cases = _garbage(node, rng)
    errors_before = scrape(node.metrics_port, "collab_cloud_errors_total")
    n_bad = 0
    for round_ in range(3):
        for name, call, code in cases:
            with pytest.raises(grpc.RpcError) as ei:
                call()  # type: ignore[operator]
            assert ei.value.code() == code, f"{name}: {ei.value.code()} {ei.value.details()}"
            assert ei.value.details(), f"{name}: no message"
            n_bad += 1
            # a valid call right after each bad one still succeeds, exactly
            r = node.stub.Infer(
                collab_pb2.InferRequest(model=model_id(b), frame=codec.encode(x, "f32")), timeout=10
            )
            np.testing.assert_array_equal(
                codec.decode(r.output), want, err_msg=f"after {name} #{round_}"
            )
    assert node.proc.poll() is None  # type: ignore[attr-defined]
    # every rejection the server saw is counted (the oversize one is refused by gRPC itself)
    counted = scrape(node.metrics_port, "collab_cloud_errors_total") - errors_before
    assert counted >= n_bad - 3
    h = health_pb2_grpc.HealthStub(node.channel)
    assert (
        h.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
        == health_pb2.HealthCheckResponse.SERVING
    )
