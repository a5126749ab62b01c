"""Attacks on the edge by its cloud, and on the cloud by its callers (issue 17 items 8, 10).

A hostile cloud (tests/helpers/hostile_cloud.py, a real gRPC process) answers a real
``collab.Client`` with crafted replies; the refusals and limits of a real ``collab
cloud`` process are exercised over the wire."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from test_cloud_support import model_id, sample_inputs

from collab import codec
from collab.bundle import Bundle, load_bundle
from collab.edge import cloud as edge_cloud
from collab.edge.client import Client
from collab.edge.reply import ADMISSION_REFUSED
from collab.edge.runtime import EdgeRuntime
from collab.errors import CodecError
from collab.log import RateLimited
from collab.procs import collab_process, free_port, stop_process, wait_for_port
from collab.proto import collab_pb2, collab_pb2_grpc
from collab.transport import make_channel

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class HostileCloud:
    addr: str
    mode_file: Path

    def mode(self, m: str) -> None:
        self.mode_file.write_text(m)


@pytest.fixture(scope="module")
def bundle(digits_bundle: Path) -> Bundle:
    return load_bundle(digits_bundle)


@pytest.fixture(scope="module")
def hostile(bundle: Bundle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileCloud]:
    d = tmp_path_factory.mktemp("hostile")
    mode_file = d / "mode"
    mode_file.write_text("garbage")
    port = free_port()
    width = str(bundle.manifest.output_shape[1])
    args = ["--port", str(port), "--width", width, "--mode-file", str(mode_file)]
    with open(d / "log.txt", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.helpers.hostile_cloud", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,  # tests.* importable
        )
    try:
        wait_for_port("127.0.0.1", port, proc=proc)
        yield HostileCloud(f"127.0.0.1:{port}", mode_file)
    finally:
        stop_process(proc)


def _client(bundle: Bundle, addr: str, **kw: object) -> Client:
    opts: dict[str, object] = {"warm": False, "accuracy_budget": 0.0, "breaker_failures": 100}
    return Client(bundle.root, cloud=[addr], **{**opts, **kw})


def _local(bundle: Bundle, x: np.ndarray) -> np.ndarray:
    return EdgeRuntime(bundle).full(x)[0]


_RSS_SCRIPT = """
import json, resource, sys
import numpy as np
from collab.edge.client import Client
bundle, addr, mode_file = sys.argv[1:4]
with Client(bundle, cloud=[addr], warm=False, breaker_failures=100) as c:
    x = np.zeros(c.bundle.manifest.input_shape, np.float32)
    open(mode_file, "w").write("garbage")
    for _ in range(3):  # the fallback path, warm: what the bomb reply must not add to
        assert c.infer(x, policy="cloud_only").fell_back
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    open(mode_file, "w").write("bomb")
    r = c.infer(x, policy="cloud_only")
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"fell_back": r.fell_back, "reason": r.fallback_reason,
                  "grew_kib": after - before}))
"""


def test_an_8_kb_reply_declaring_256_mib_is_refused_before_allocation(
    bundle: Bundle, hostile: HostileCloud
) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, str(bundle.root), hostile.addr, str(hostile.mode_file)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["fell_back"] and "limit" in r["reason"], r
    assert r["grew_kib"] < 1024, r  # peak RSS: the 256 MiB were never allocated


@pytest.mark.parametrize("mode", ["zero_rows", "wide", "garbage", "nan_output"])
@pytest.mark.parametrize("policy", ["cloud_only", "split:pool1"])
def test_a_malformed_reply_is_finished_locally_with_the_exact_answer(
    bundle: Bundle, hostile: HostileCloud, mode: str, policy: str
) -> None:
    hostile.mode(mode)
    x = sample_inputs(bundle, 2)
    with _client(bundle, hostile.addr) as c:
        for batch in (x[:1], x):
            r = c.infer(batch, policy=policy)
            assert r.fell_back and r.fallback_reason, (mode, r.fallback_reason)
            np.testing.assert_allclose(r.output, _local(bundle, batch), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["wide", "nan_output"])
def test_bad_replies_count_against_that_cloud(
    bundle: Bundle, hostile: HostileCloud, mode: str
) -> None:
    hostile.mode(mode)
    x = sample_inputs(bundle, 1)
    with _client(bundle, hostile.addr, breaker_failures=3) as c:
        for _ in range(3):
            assert c.infer(x, policy="cloud_only").fell_back
        assert c.breaker.state == "open"
        r = c.infer(x, policy="cloud_only")
        assert r.fell_back and r.fallback_reason == "circuit breaker open"


def test_nan_timings_leave_every_estimate_finite(bundle: Bundle, hostile: HostileCloud) -> None:
    hostile.mode("nan_timing")
    x = sample_inputs(bundle, 1)
    with _client(bundle, hostile.addr) as c:
        for _ in range(5):
            r = c.infer(x, policy="cloud_only")
            assert not r.fell_back  # a plausible answer; only its timing is a lie
            assert "cloud_queue_ms" not in r.timings
        c.monitor.refresh(force=True)  # probe replies carry a NaN queue too
        ex = c.explain()
        cloud = [k for k in ex["candidates"] if k["path"] != "edge_only"]
        assert cloud and all(np.isfinite(k["queue_ms"]) for k in cloud), cloud
        assert all(np.isfinite(k["total_ms"]) for k in ex["candidates"])
        net = ex["network"]
        assert all(np.isfinite(v) for v in net.values() if isinstance(v, float)), net


def test_an_encode_failure_is_finished_locally(
    bundle: Bundle, hostile: HostileCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_a: object, **_k: object) -> bytes:
        raise CodecError("cannot encode this")

    hostile.mode("garbage")
    x = sample_inputs(bundle, 1)
    with _client(bundle, hostile.addr, breaker_failures=1) as c:
        monkeypatch.setattr(edge_cloud.codecs, "encode", broken)
        for policy in ("cloud_only", "split:relu2"):
            r = c.infer(x, policy=policy)
            assert r.fell_back and "encode failed" in (r.fallback_reason or "")
            np.testing.assert_allclose(r.output, _local(bundle, x), rtol=1e-5, atol=1e-5)
        assert c.breaker.state == "closed"  # not the cloud's fault


def test_calls_beyond_the_edge_daemons_max_concurrent_rpcs_get_resource_exhausted(
    bundle: Bundle, hostile: HostileCloud
) -> None:
    hostile.mode("slow")  # every cloud call takes 2 s: the admitted request holds its slot
    port = free_port()
    args = ["edge", "--bundle", str(bundle.root), "--cloud", hostile.addr]
    args += ["--listen", f"127.0.0.1:{port}", "--max-concurrent-rpcs", "1", "--no-warm"]
    args += ["--hedge-factor", "0"]  # (a hedge would answer it locally within ms)
    x = sample_inputs(bundle, 1)
    req = collab_pb2.EdgeInferRequest(frame=codec.encode(x, "f32"), policy="cloud_only")
    with collab_process(args, port=port), grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = collab_pb2_grpc.EdgeServiceStub(ch)
        grpc.channel_ready_future(ch).result(timeout=20)
        held = stub.Infer.future(req, timeout=20)
        time.sleep(0.5)
        with pytest.raises(grpc.RpcError) as ei:
            stub.Infer(req, timeout=10)
        assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert ei.value.details() == ADMISSION_REFUSED
        assert held.result(timeout=20).fell_back  # answered (locally: the reply was garbage)


# --------------------------------------------------------------- a real `collab cloud`


def _cloud_args(port: int, bundle: Bundle, *extra: str) -> list[str]:
    return ["cloud", "--bundle", str(bundle.root), "--listen", f"127.0.0.1:{port}", *extra]


@pytest.fixture(scope="module")
def small_batch_cloud(bundle: Bundle) -> Iterator[str]:
    port = free_port()
    with collab_process(_cloud_args(port, bundle, "--max-batch-size", "2"), port=port):
        yield f"127.0.0.1:{port}"


def test_a_callers_oversized_batch_does_not_open_the_breaker_for_another(
    bundle: Bundle, small_batch_cloud: str
) -> None:
    big = sample_inputs(bundle, 5)  # > 2x the cloud's batch: once told apart only as garbage
    one = sample_inputs(bundle, 1, seed=1)
    with _client(bundle, small_batch_cloud, breaker_failures=2) as c:
        for policy in ("cloud_only", "split:pool1", "cloud_only", "split:pool1"):
            r = c.infer(big[:3] if policy == "cloud_only" else big, policy=policy)
            assert r.fell_back and "RESOURCE_EXHAUSTED" in (r.fallback_reason or ""), r
        assert c.breaker.state == "closed"
        results = []
        t = threading.Thread(  # another caller of the same client
            target=lambda: results.extend(
                c.infer(one, policy=p) for p in ("cloud_only", "split:pool1")
            )
        )
        t.start()
        t.join(30)
        assert [r.fell_back for r in results] == [False, False], results
        np.testing.assert_allclose(results[0].output, _local(bundle, one), rtol=1e-4, atol=1e-4)


def test_a_callers_nan_input_does_not_count_against_the_cloud(
    bundle: Bundle, small_batch_cloud: str
) -> None:
    nan = np.full(bundle.manifest.input_shape, np.nan, np.float32)
    with _client(bundle, small_batch_cloud, breaker_failures=1) as c:
        for policy in ("cloud_only", "split:pool1", "cloud_only"):
            r = c.infer(nan, policy=policy)
            assert r.fell_back, r  # a NaN answer is never believed ...
        assert c.breaker.state == "closed"  # ... nor blamed when the exact one is NaN too


@pytest.fixture(scope="module")
def one_rpc_cloud(bundle: Bundle) -> Iterator[str]:
    """A node admitting one call at a time, whose batches stay open 3 s (the held call)."""
    port = free_port()
    extra = ("--max-concurrent-rpcs", "1", "--wait-when-idle", "--max-wait-ms", "3000")
    with collab_process(_cloud_args(port, bundle, *extra), port=port):
        yield f"127.0.0.1:{port}"


def _stub(addr: str) -> tuple[grpc.Channel, collab_pb2_grpc.CloudServiceStub]:
    ch = make_channel(addr, health_check=False, retries=False)
    return ch, collab_pb2_grpc.CloudServiceStub(ch)


def test_a_probe_asking_for_1_mib_is_refused_above_the_64_kib_cap(one_rpc_cloud: str) -> None:
    ch, stub = _stub(one_rpc_cloud)
    with ch:
        with pytest.raises(grpc.RpcError) as ei:
            stub.Probe(collab_pb2.ProbeRequest(payload=b"abcd", response_bytes=1 << 20), timeout=10)
        assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        r = stub.Probe(collab_pb2.ProbeRequest(response_bytes=64 * 1024), timeout=10)
        assert len(r.payload) == 64 * 1024
        r = stub.Probe(collab_pb2.ProbeRequest(payload=b"abcd", response_bytes=1), timeout=10)
        assert len(r.payload) == 1  # what edges ask for


def test_calls_beyond_max_concurrent_rpcs_get_resource_exhausted(
    bundle: Bundle, one_rpc_cloud: str
) -> None:
    ch, stub = _stub(one_rpc_cloud)
    x = sample_inputs(bundle, 1)
    req = collab_pb2.InferRequest(model=model_id(bundle), frame=codec.encode(x, "f32"))
    with ch:
        held = stub.Infer.future(req, timeout=20)  # admitted, then kept 3 s in its batch
        time.sleep(0.5)
        with pytest.raises(grpc.RpcError) as ei:
            stub.Probe(collab_pb2.ProbeRequest(), timeout=5)
        assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert ei.value.details() == ADMISSION_REFUSED
        assert held.result(timeout=20).output  # the admitted call was answered
        stub.Probe(collab_pb2.ProbeRequest(), timeout=5)  # and the node admits again


def test_a_cloud_failing_in_a_loop_logs_its_breaker_flips_once(
    bundle: Bundle,
    hostile: HostileCloud,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Probes succeed, every call gets garbage: the breaker opens, half-opens after its
    cooldown, fails and opens again, many times; the log says so once."""
    monkeypatch.setattr(edge_cloud, "_flips", RateLimited())
    hostile.mode("wide")
    x = sample_inputs(bundle, 1)
    with (
        caplog.at_level(logging.WARNING, logger="collab"),
        _client(bundle, hostile.addr, breaker_failures=1, breaker_cooldown_s=0.05) as c,
    ):
        opened = 0
        deadline = time.monotonic() + 30
        while opened < 5 and time.monotonic() < deadline:
            was = c.breaker.state
            assert c.infer(x, policy="cloud_only").fell_back
            opened += was != "open" and c.breaker.state == "open"
            if c.breaker.state == "open":
                time.sleep(0.06)
                c.monitor.refresh(force=True)  # a probe succeeds: half-open again
    assert opened >= 5
    flips = [r for r in caplog.records if "circuit breaker opened" in r.getMessage()]
    assert len(flips) == 1, [r.getMessage() for r in flips]
