"""Cloud nodes as real processes: three replicas behind one round_robin channel (load
spread, survival of a replica's death) and SIGTERM draining in-flight requests."""

from __future__ import annotations

import signal
import time
from contextlib import ExitStack
from pathlib import Path

import grpc
import numpy as np
import pytest
from test_cloud_support import (
    full_output,
    model_id,
    sample_inputs,
    scrape,
    stub,
    wait_ready,
)

from collab import codec
from collab.bundle import Bundle, load_bundle
from collab.procs import collab_process, free_port
from collab.proto import collab_pb2
from collab.transport import rpc_errors


@pytest.fixture(scope="module")
def bundle(digits_bundle: Path) -> Bundle:
    return load_bundle(digits_bundle)


def _infer(st: object, b: Bundle, x: np.ndarray, timeout: float = 10) -> np.ndarray:
    req = collab_pb2.InferRequest(model=model_id(b), frame=codec.encode(x, "f32"))
    with rpc_errors("Infer"):
        r = st.Infer(req, timeout=timeout)  # type: ignore[attr-defined]
    return codec.decode(r.output)


def _served(mport: int) -> float:
    return scrape(mport, "collab_cloud_requests_total", method="Infer")


@pytest.mark.slow
def test_three_replicas_round_robin_and_replica_death(bundle: Bundle, tmp_path: Path) -> None:
    ports = [(free_port(), free_port()) for _ in range(3)]
    x = sample_inputs(bundle, 1)
    want = full_output(bundle, x)
    with ExitStack() as stack:
        procs = [
            stack.enter_context(
                collab_process(
                    [
                        "cloud",
                        "--bundle",
                        str(bundle.root),
                        "--listen",
                        f"127.0.0.1:{p}",
                        "--metrics-port",
                        str(m),
                        "--max-wait-ms",
                        "0",
                    ],
                    port=p,
                    log=tmp_path / f"r{i}.log",
                )
            )
            for i, (p, m) in enumerate(ports)
        ]
        ch, st = stub([f"127.0.0.1:{p}" for p, _ in ports])
        wait_ready(ch)
        for _ in range(90):
            np.testing.assert_array_equal(_infer(st, bundle, x), want)
        counts = [_served(m) for _, m in ports]
        assert sum(counts) == 90
        assert min(counts) >= 15, f"load not spread over the replicas: {counts}"

        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(10)
        before = [_served(m) for _, m in ports[1:]]
        for _ in range(60):  # every call after the death still succeeds
            np.testing.assert_array_equal(_infer(st, bundle, x), want)
        after = [_served(m) for _, m in ports[1:]]
        gained = [a - b for a, b in zip(after, before, strict=True)]
        assert sum(gained) == 60 and min(gained) >= 10, gained
        ch.close()


def test_sigterm_drains_in_flight_requests(bundle: Bundle, tmp_path: Path) -> None:
    port, mport = free_port(), free_port()
    xs = sample_inputs(bundle, 4, seed=5)
    want = full_output(bundle, xs)
    log = tmp_path / "cloud.log"
    # A long batching window keeps the requests queued when SIGTERM arrives.
    args = [
        "cloud",
        "--bundle",
        str(bundle.root),
        "--listen",
        f"127.0.0.1:{port}",
        "--metrics-port",
        str(mport),
        "--max-batch-size",
        "64",
        "--max-wait-ms",
        "3000",
        "--wait-when-idle",
    ]
    with collab_process(args, port=port, log=log) as proc:
        ch, st = stub(f"127.0.0.1:{port}", retries=False)
        wait_ready(ch)
        reqs = [
            collab_pb2.InferRequest(
                model=model_id(bundle), frame=codec.encode(xs[i : i + 1], "f32")
            )
            for i in range(4)
        ]
        futs = [st.Infer.future(r, timeout=20) for r in reqs]
        deadline = time.monotonic() + 10
        while scrape(mport, "collab_cloud_inflight") < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert scrape(mport, "collab_cloud_inflight") == 4
        assert not any(f.done() for f in futs)
        proc.send_signal(signal.SIGTERM)
        for i, f in enumerate(futs):
            r = f.result()
            np.testing.assert_array_equal(codec.decode(r.output), want[i : i + 1])
            assert r.timing.batch_size == 4
            assert r.timing.queue_ms < 2900  # flushed on SIGTERM, not after the 3 s window
        assert proc.wait(15) == 0, log.read_text()[-2000:]
        with pytest.raises(grpc.RpcError):
            st.Infer(reqs[0], timeout=2)
        ch.close()
    assert "draining" in log.read_text()
