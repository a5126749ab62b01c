"""The one error tree and its one mapping to gRPC status codes: every project exception is
a CollabError, every CollabError has a status, and every servicer answers through it."""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Iterator
from concurrent import futures
from types import SimpleNamespace
from typing import Any

import grpc
import pytest

from cloud_node.metrics import Metrics
from cloud_node.servicer import CloudServicer
from collab import rpc_status
from collab.errors import (
    BadRequestError,
    CancelledError,
    ClosedError,
    CollabError,
    ConfigError,
    DuplicateUpdate,
    InferenceError,
    NotFoundError,
    NotSampled,
    RoundMismatch,
    TooLargeError,
    UpdateRejected,
)
from collab.extras import MissingExtraError
from collab.fl.aggregator import FlAggregatorServicer
from collab.log import RateLimited
from collab.proto import collab_pb2, control_pb2, fl_pb2
from collab.rpc_status import INTERNAL_MESSAGE, STATUS, abort, status_for
from collab.transport import RpcDeadlineError
from coordinator.auth import FetchKey
from coordinator.service import BundleServicer, CoordinatorServicer, FetchLimits
from edge_node.metrics import EdgeMetrics
from edge_node.server import EdgeServicer

PACKAGES = ("collab", "cloud_node", "coordinator", "edge_node")
S = grpc.StatusCode


def _import_everything() -> None:
    for name in PACKAGES:
        pkg = importlib.import_module(name)
        for m in pkgutil.walk_packages(pkg.__path__, f"{name}."):
            if not m.name.endswith("__main__"):
                importlib.import_module(m.name)


def _subclasses(cls: type) -> Iterator[type]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def test_every_project_exception_is_a_collab_error_with_a_status() -> None:
    _import_everything()
    ours = {c for c in _subclasses(Exception) if c.__module__.split(".")[0] in PACKAGES}
    assert [c.__qualname__ for c in ours if not issubclass(c, CollabError)] == []
    assert CollabError not in STATUS  # so a new branch of the tree must be placed explicitly
    unplaced = [
        c.__qualname__ for c in ours - {CollabError} if not any(k in STATUS for k in c.__mro__)
    ]
    assert unplaced == []


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ConfigError("bad policy"), S.INVALID_ARGUMENT),
        (MissingExtraError("torch", "split"), S.INVALID_ARGUMENT),  # via ConfigError
        (BadRequestError("shape"), S.INVALID_ARGUMENT),
        (UpdateRejected("NaN"), S.INVALID_ARGUMENT),
        (NotFoundError("model"), S.NOT_FOUND),
        (RoundMismatch("closed"), S.FAILED_PRECONDITION),  # subclass beats UpdateRejected
        (NotSampled("c1"), S.PERMISSION_DENIED),
        (DuplicateUpdate("c1"), S.ALREADY_EXISTS),
        (ClosedError("closed"), S.UNAVAILABLE),
        (CancelledError("gone"), S.CANCELLED),
        (RpcDeadlineError("late", code=S.DEADLINE_EXCEEDED, details=""), S.DEADLINE_EXCEEDED),
        (InferenceError("ort"), S.INTERNAL),
        (RuntimeError("bug"), S.INTERNAL),
    ],
)
def test_status_for_takes_the_nearest_listed_class(error: Exception, code: grpc.StatusCode) -> None:
    assert status_for(error) == code


class _Aborted(Exception):
    """What a real ServicerContext.abort raises: a plain Exception."""


class FakeContext:
    def __init__(self, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self.aborts: list[tuple[grpc.StatusCode, str]] = []
        self._metadata = metadata

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.aborts.append((code, details))
        raise _Aborted

    def time_remaining(self) -> float | None:
        return None

    def is_active(self) -> bool:
        return True

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata


def _raiser(e: Exception) -> Any:
    def fn(*args: Any, **kwargs: Any) -> Any:
        raise e

    return fn


def _cloud(e: Exception, ctx: FakeContext) -> None:
    CloudServicer(SimpleNamespace(metrics=Metrics(), run=_raiser(e))).Infer(  # type: ignore[arg-type]
        collab_pb2.InferRequest(model=collab_pb2.ModelId(name="m")), ctx
    )  # type: ignore[arg-type]


def _edge(e: Exception, ctx: FakeContext) -> None:
    EdgeServicer(SimpleNamespace(metrics=EdgeMetrics(), infer=_raiser(e))).Infer(  # type: ignore[arg-type]
        collab_pb2.EdgeInferRequest(), ctx
    )  # type: ignore[arg-type]


def _coordinator(e: Exception, ctx: FakeContext) -> None:
    c = SimpleNamespace(start_rollout=_raiser(e))
    CoordinatorServicer(c, admin_token=None).StartRollout(
        control_pb2.StartRolloutRequest(version="v"), ctx
    )  # type: ignore[arg-type]


def _bundles(e: Exception, ctx: FakeContext) -> None:
    c = SimpleNamespace(store=SimpleNamespace(path=_raiser(e)))
    key = FetchKey(b"k" * 16)
    ctx._metadata = (("authorization", f"Bearer {key.token_for('n')}"),)  # a node's credential
    request = control_pb2.FetchRequest(version="v", node_id="n")
    next(BundleServicer(c, key, FetchLimits()).Fetch(request, ctx))  # type: ignore[arg-type]


def _fl(e: Exception, ctx: FakeContext) -> None:
    agg = SimpleNamespace(cfg=SimpleNamespace(federation="f"), fetch=_raiser(e))
    next(
        FlAggregatorServicer(agg).FetchAggregate(  # type: ignore[arg-type]
            fl_pb2.FlAggregateRequest(federation="f", base_version="v"), ctx
        )
    )  # type: ignore[arg-type]


SERVICERS = {
    "cloud": _cloud,
    "edge": _edge,
    "coordinator": _coordinator,
    "bundles": _bundles,
    "fl": _fl,
}


@pytest.mark.parametrize("call", SERVICERS.values(), ids=SERVICERS.keys())
def test_every_servicer_answers_through_the_one_table(
    call: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rpc_status, "_failures", RateLimited())  # each servicer logs afresh
    for e in (
        NotFoundError("no such model 'm'"),
        ClosedError("shutting down"),
        CancelledError("gone"),
    ):
        ctx = FakeContext()
        with pytest.raises(_Aborted):
            call(e, ctx)
        assert ctx.aborts == [(status_for(e), str(e))]
    ctx = FakeContext()
    with caplog.at_level(logging.ERROR, logger="collab"), pytest.raises(_Aborted):
        call(KeyError("/secret/path"), ctx)
    assert ctx.aborts == [(S.INTERNAL, INTERNAL_MESSAGE)]  # nothing of the bug on the wire
    assert any(
        r.exc_info and r.exc_info[0] is KeyError for r in caplog.records
    )  # all of it in the log


def test_servicer_specific_refusals_go_through_the_table_too() -> None:
    c = SimpleNamespace(rollout_status=lambda: None)
    ctx = FakeContext()
    with pytest.raises(_Aborted):
        CoordinatorServicer(c, admin_token="t").GetRollout(control_pb2.GetRolloutRequest(), ctx)  # type: ignore[arg-type]
    assert ctx.aborts[0][0] == S.UNAUTHENTICATED
    ctx = FakeContext()
    with pytest.raises(_Aborted):
        CoordinatorServicer(c, admin_token=None).GetRollout(control_pb2.GetRolloutRequest(), ctx)  # type: ignore[arg-type]
    assert ctx.aborts == [(S.NOT_FOUND, "no rollout yet")]


def test_abort_on_a_real_server_hides_unexpected_errors() -> None:
    errors = {"known": TooLargeError("too many samples"), "bug": RuntimeError("password=hunter2")}

    def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
        abort(context, errors[request.decode()], "Test")

    handler = grpc.method_handlers_generic_handler(
        "t.T", {"Call": grpc.unary_unary_rpc_method_handler(handle)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1), handlers=(handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            call = ch.unary_unary("/t.T/Call")
            for key, code, details in (
                ("known", S.RESOURCE_EXHAUSTED, "too many samples"),
                ("bug", S.INTERNAL, INTERNAL_MESSAGE),
            ):
                with pytest.raises(grpc.RpcError) as ei:
                    call(key.encode(), timeout=10)
                assert (ei.value.code(), ei.value.details()) == (code, details)  # type: ignore[attr-defined]
    finally:
        server.stop(None)


def test_a_failure_repeated_in_a_loop_logs_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A peer that triggers the same server bug 200 times fills no disk: one line with the
    traceback (then one per minute, counting the suppressed), every call still answered."""
    monkeypatch.setattr(rpc_status, "_failures", RateLimited())
    with caplog.at_level(logging.WARNING, logger="collab"):
        for i in range(200):
            ctx = FakeContext()
            with pytest.raises(_Aborted):
                _cloud(KeyError(f"/secret/{i}"), ctx)
            assert ctx.aborts == [(S.INTERNAL, INTERNAL_MESSAGE)]
    logged = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(logged) == 1 and logged[0].exc_info is not None
