"""The cloud tier under load: EDF order, requests refused before compute when they
cannot make their deadline, admission by predicted wait with a retry-after hint (on the
wire, from a real node), the edge honouring that hint, and the execution modes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from test_cloud_support import Recorder, model_id, sample_inputs, stub, wait_ready

from cloud_node.batcher import Batcher
from cloud_node.config import CloudConfig
from cloud_node.cost import BatchCost
from cloud_node.server import serve
from collab import codec
from collab.bundle import Bundle, load_bundle
from collab.edge.client import Client
from collab.errors import ConfigError, LateError, OverloadedError
from collab.proto import collab_pb2, collab_pb2_grpc
from collab.rpc_status import RETRY_AFTER_KEY, abort
from collab.transport import SERVICE_NAME


def _seeded(a: float, b: float) -> BatchCost:
    """A cost model that has seen batches of 1 and 2 costing ``a + b n`` seconds."""
    cost = BatchCost()
    for _ in range(20):
        cost.observe(1, a + b)
        cost.observe(2, a + 2 * b)
    return cost


def _sleeper(
    a: float, b: float, seen: list[float], gate: threading.Event | None = None
) -> Callable[[np.ndarray], np.ndarray]:
    """A model costing ``a + b n`` seconds (GIL released); records each batch's first
    value. A batch starting with 0 waits for ``gate`` first, if given."""

    def run(x: np.ndarray) -> np.ndarray:
        seen.append(float(x[0, 0]))
        if gate is not None and x[0, 0] == 0:
            gate.wait(10)
        time.sleep(a + b * x.shape[0])
        return x + 1.0

    return run


def _submit(
    b: Batcher, x: np.ndarray, deadline: float | None, out: list[object]
) -> threading.Thread:
    def go() -> None:
        try:
            out.append(b.run(x, deadline))
        except Exception as e:
            out.append(e)

    t = threading.Thread(target=go)
    t.start()
    return t


def _queued(b: Batcher, samples: int) -> None:
    until = time.monotonic() + 5
    while b.depth < samples and time.monotonic() < until:
        time.sleep(0.002)
    assert b.depth == samples


def _row(v: float) -> np.ndarray:
    return np.full((1, 2), v, np.float32)


@pytest.mark.parametrize("edf", [True, False])
def test_queued_requests_run_earliest_deadline_first(edf: bool) -> None:
    seen: list[float] = []
    gate = threading.Event()
    b = Batcher(
        _sleeper(0.0, 0.01, seen, gate),
        max_batch_size=1,
        max_wait_ms=0,
        slots=1,
        observer=Recorder(),
        edf=edf,
        cost=_seeded(0.0, 0.01),
    )
    now = time.monotonic()
    out: list[object] = []
    threads = [_submit(b, _row(0), now + 30, out)]  # holds the slot: the others queue
    while not seen:
        time.sleep(0.001)
    # arrival order 1..4, deadlines in the reverse order (and one with none)
    for i, dl in enumerate((None, now + 20, now + 10, now + 5), start=1):
        threads.append(_submit(b, _row(i), dl, out))
        _queued(b, i)
    gate.set()
    for t in threads:
        t.join(10)
    assert all(not isinstance(r, BaseException) for r in out), out
    assert seen == ([0, 4, 3, 2, 1] if edf else [0, 1, 2, 3, 4])


def test_a_batch_stops_growing_before_it_makes_its_most_urgent_request_late() -> None:
    a, per = 0.02, 0.4  # a batch of 1 takes 0.42 s, of 2 0.82 s
    seen: list[float] = []
    rec = Recorder()
    b = Batcher(
        _sleeper(a, per, seen),
        max_batch_size=8,
        max_wait_ms=0,
        slots=1,
        observer=rec,
        edf=True,
        cost=_seeded(a, per),
    )
    out: list[object] = []
    start = time.monotonic()
    threads = [_submit(b, np.zeros((2, 2), np.float32), None, out)]  # busy until ~start+0.82
    while not seen:
        time.sleep(0.001)
    for i in (1, 2, 3):
        threads.append(_submit(b, _row(i), None, out))
        _queued(b, i)
    # 0.6 s left when the slot frees: room for a batch of 1 (0.42 s), not of 2 (0.82 s)
    threads.append(_submit(b, _row(9), start + 2 * per + a + 0.6, out))
    _queued(b, 4)
    for t in threads:
        t.join(10)
    assert all(not isinstance(r, BaseException) for r in out), out
    assert rec.sizes == [2, 1, 3]  # the urgent request alone, then the rest together
    assert seen == [0, 9, 1]


def test_requests_that_cannot_make_their_deadline_are_refused_before_compute() -> None:
    seen: list[float] = []
    rec = Recorder()
    b = Batcher(
        _sleeper(0.0, 0.3, seen),
        max_batch_size=1,
        max_wait_ms=0,
        slots=1,
        observer=rec,
        edf=True,
        cost=_seeded(0.0, 0.3),
    )
    # already past on arrival: refused at once, never computed
    with pytest.raises(LateError, match="on arrival"):
        b.run(_row(7), time.monotonic() - 0.001)
    out: list[object] = []
    threads = [_submit(b, _row(0), None, out)]
    while not seen:
        time.sleep(0.001)
    threads.append(_submit(b, _row(1), None, out))
    _queued(b, 1)
    # behind the computing request (~0.15 s left, predicted) and its own 0.3 s of
    # compute, a 0.1 s deadline cannot be met (EDF puts it before the deadline-free one)
    t0 = time.monotonic()
    with pytest.raises(LateError) as ei:
        b.run(_row(2), t0 + 0.1)
    assert len(seen) == 1 and b.depth == 1  # refused while the first still computes
    assert ei.value.retry_after_ms is not None and ei.value.retry_after_ms > 100
    # the same request with time to spare is served
    threads.append(_submit(b, _row(3), t0 + 5, out))
    for t in threads:
        t.join(10)
    assert all(not isinstance(r, BaseException) for r in out), out
    assert sorted(seen) == [0, 1, 3]
    assert rec.drops == {"deadline": 1, "late": 1}


def test_the_deadline_margin_follows_the_spread_of_actual_compute_times() -> None:
    """The cost line predicts the mean; deadlines use its 95th percentile: exact
    observations keep the floor (1.2), a host where one batch in ten takes 3x the line
    lifts the margin to about that, and stalls cannot lift it past the cap (4)."""
    rng = np.random.default_rng(0)
    exact = _seeded(0.002, 0.001)
    assert exact.margin == pytest.approx(1.2)
    noisy = _seeded(0.002, 0.001)
    for _ in range(400):
        n = int(rng.integers(1, 9))
        slow = 3.0 if rng.random() < 0.1 else 1.0
        noisy.observe(n, (0.002 + 0.001 * n) * slow)
    assert 2.0 < noisy.margin <= 3.5
    stalled = _seeded(0.002, 0.001)
    for i in range(300):  # every fifth batch stalls for a second
        stalled.observe(1, 1.0 if i % 5 == 0 else 0.003)
    assert stalled.margin == pytest.approx(4.0)


@pytest.mark.parametrize("bound_ms", [600.0, 0.0])
def test_admission_is_bounded_by_the_predicted_wait(bound_ms: float) -> None:
    seen: list[float] = []
    rec = Recorder()
    gate = threading.Event()
    b = Batcher(
        _sleeper(0.0, 0.5, seen, gate),
        max_batch_size=1,
        max_wait_ms=0,
        slots=1,
        observer=rec,
        max_queue_ms=bound_ms,
        cost=_seeded(0.0, 0.5),
    )
    out: list[object] = []
    threads = [_submit(b, _row(0), None, out)]
    while not seen:
        time.sleep(0.001)
    for i in (1, 2, 3):  # predicted waits 0.25 s (half the running batch), 0.75, 1.25
        threads.append(_submit(b, _row(i), None, out))
        until = time.monotonic() + 5
        while b.depth + len(out) < i and time.monotonic() < until:
            time.sleep(0.002)
    gate.set()
    for t in threads:
        t.join(10)
    refused = [r for r in out if isinstance(r, OverloadedError)]
    if bound_ms:
        assert len(refused) == 2 and rec.drops == {"admission": 2}
        assert all(r.retry_after_ms > bound_ms for r in refused)
        assert sorted(seen) == [0, 1]
    else:  # unbounded: everything queues and runs
        assert not refused and sorted(seen) == [0, 1, 2, 3]


# ------------------------------------------------------------------ a real cloud node


@pytest.fixture(scope="module")
def bundle(digits_bundle: Path) -> Bundle:
    return load_bundle(digits_bundle)


def test_a_full_queue_refuses_with_a_retry_after_hint_and_health_still_answers(
    bundle: Bundle,
) -> None:
    # one slot, batches of 1 and a bound below any compute time: whatever queues is refused
    cfg = CloudConfig(
        bundles=(bundle.root,),
        listen="127.0.0.1:0",
        max_batch_size=1,
        workers=1,
        max_queue_ms=0.001,
        execution="sessions",
    )
    x = sample_inputs(bundle, 1)
    req = collab_pb2.InferRequest(model=model_id(bundle), frame=codec.encode(x, "f32"))
    with serve(cfg) as (server, port):
        assert server.handler.registry.models[0].execution == "sessions"
        labels = {"model": bundle.name, "version": bundle.version[:12], "mode": "sessions"}
        assert server.metrics.value("collab_cloud_execution_mode", labels) == 1
        ch, st = stub(f"127.0.0.1:{port}")
        wait_ready(ch)
        health = health_pb2_grpc.HealthStub(ch)
        refusals: list[grpc.RpcError] = []
        stop = threading.Event()

        def flood() -> None:
            while not stop.is_set():
                try:
                    st.Infer(req, timeout=10)
                except grpc.RpcError as e:
                    refusals.append(e)

        with futures.ThreadPoolExecutor(12) as pool:
            for _ in range(12):
                pool.submit(flood)
            until = time.monotonic() + 20
            while not refusals and time.monotonic() < until:
                h = health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5)
                assert h.status == health_pb2.HealthCheckResponse.SERVING
                time.sleep(0.01)
            stop.set()
        assert refusals, "the flood never queued a request"
        for e in refusals:
            assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e
            hint = dict(e.trailing_metadata() or ())[RETRY_AFTER_KEY]
            assert int(hint) >= 1
        drops = {"model": bundle.name, "split": "full", "reason": "admission"}
        assert server.metrics.value("collab_cloud_dropped_total", drops) == len(refusals)
        st.Infer(req, timeout=10)  # and serves again
        ch.close()


class _BusyCloud(collab_pb2_grpc.CloudServiceServicer):
    """Refuses every call as a busy node does, through the same
    :func:`collab.rpc_status.abort`: "queue full" (RESOURCE_EXHAUSTED) or "late behind
    the queue" (DEADLINE_EXCEEDED), with a retry-after hint of ``hint_ms``; counts calls."""

    def __init__(self, hint_ms: float, late: bool) -> None:
        self.hint_ms = hint_ms
        self.late = late
        self.calls = 0

    def Infer(self, request: object, context: grpc.ServicerContext) -> collab_pb2.InferResponse:
        self.calls += 1
        e: Exception = (
            LateError("predicted late behind the queue", retry_after_ms=self.hint_ms)
            if self.late
            else OverloadedError("queue full", retry_after_ms=self.hint_ms)
        )
        abort(context, e, "Infer")

    def Probe(self, request: object, context: grpc.ServicerContext) -> collab_pb2.ProbeResponse:
        return collab_pb2.ProbeResponse()


@pytest.fixture(params=["queue full", "late"])
def busy_cloud(request: pytest.FixtureRequest) -> Iterator[tuple[_BusyCloud, str]]:
    server = grpc.server(futures.ThreadPoolExecutor(4))
    busy = _BusyCloud(hint_ms=600, late=request.param == "late")
    collab_pb2_grpc.add_CloudServiceServicer_to_server(busy, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield busy, f"127.0.0.1:{port}"
    finally:
        server.stop(0)


def test_the_edge_finishes_locally_and_backs_off_for_the_hinted_time(
    bundle: Bundle, busy_cloud: tuple[_BusyCloud, str]
) -> None:
    busy, addr = busy_cloud
    x = sample_inputs(bundle, 1)
    with Client(
        bundle.root, cloud=[addr], warm=False, accuracy_budget=0.0, breaker_failures=1
    ) as c:
        r = c.infer(x, policy="cloud_only")
        assert r.fell_back and "cloud busy, retry after 600 ms" in (r.fallback_reason or "")
        assert r.output.shape[0] == 1
        t_refused = time.monotonic()
        r = c.infer(x, policy="cloud_only")  # within the hint: the cloud is not asked
        assert r.fell_back and "backing off" in (r.fallback_reason or "")
        assert busy.calls == 1
        assert c.breaker.state == "closed"  # busy is not broken, even at 1 failure to open
        time.sleep(max(0.0, t_refused + 0.65 - time.monotonic()))
        r = c.infer(x, policy="cloud_only")  # the hint has run out: asked again
        assert busy.calls == 2 and r.fell_back
        assert c.breaker.state == "closed"


def test_an_unknown_execution_mode_is_a_config_error(bundle: Bundle) -> None:
    with pytest.raises(ConfigError, match="execution 'gpu': one of auto, threads, sessions"):
        CloudConfig(bundles=(bundle.root,), execution="gpu")


@pytest.mark.parametrize("mode", ["threads", "sessions", "auto"])
def test_every_execution_mode_serves_the_same_answer(bundle: Bundle, mode: str) -> None:
    cfg = CloudConfig(bundles=(bundle.root,), listen="127.0.0.1:0", workers=2, execution=mode)
    x = sample_inputs(bundle, 3)
    req = collab_pb2.InferRequest(model=model_id(bundle), frame=codec.encode(x, "f32"))
    with serve(cfg) as (server, port):
        served = server.handler.registry.models[0]
        assert served.execution in ("threads", "sessions")
        if mode != "auto":
            assert served.execution == mode
        assert len(served.full.chains) == (1 if served.execution == "threads" else 2)
        ch, st = stub(f"127.0.0.1:{port}")
        wait_ready(ch)
        y = codec.decode(st.Infer(req, timeout=10).output)
        ch.close()
    np.testing.assert_allclose(y, served.full(x), rtol=1e-5, atol=1e-6)
