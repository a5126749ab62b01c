"""gRPC servicers of the coordinator: thin adapters from protobuf to the coordinator's
operations (:class:`Operations`); errors are answered through :mod:`collab.rpc_status`.

Nodes and operators get a server each (:func:`serve_fetch`, :func:`serve_operator`),
with their own worker pool and concurrency cap, so streams held open on the node-facing
port cannot starve the operator API.
"""

from __future__ import annotations

import shutil
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import grpc

from collab.control import canary as cn
from collab.control import messages as msg
from collab.control.transfer import CHUNK, checked_chunks, iter_bundle_chunks, receive_bundle
from collab.errors import ConfigError, NotFoundError, TooLargeError
from collab.proto import control_pb2 as pb
from collab.proto import control_pb2_grpc as pb_grpc
from collab.rpc_status import abort
from collab.settings import check_bounds, setting
from collab.transport import server_credentials
from coordinator.auth import FetchKey, check_admin, require_operator_auth
from coordinator.store import BundleStore


class Operations(Protocol):
    """What the servicers call: :class:`coordinator.daemon.Coordinator`, which starts
    them (a protocol, so this module does not import the daemon back)."""

    @property
    def store(self) -> BundleStore: ...

    def start_rollout(self, version: str, *, percent: int = 100) -> msg.RolloutStatus: ...

    def rollback(self, to_version: str = "") -> msg.RolloutStatus: ...

    def rollout_status(self) -> msg.RolloutStatus | None: ...

    def start_canary(self, version: str, plan: cn.CanaryPlan) -> cn.CanaryRecord: ...

    def canary_status(self) -> cn.CanaryRecord | None: ...


@dataclass(frozen=True, kw_only=True)
class FetchLimits:
    """How much of the node-facing server one caller, and all of them, may hold."""

    streams: int = setting(
        16,
        help="concurrent bundle fetches (worker threads); more are refused",
        lo=1,
        flag="--fetch-streams",
    )
    per_node: int = setting(
        2, help="concurrent bundle fetches of one node id", lo=1, flag="--fetch-per-node"
    )
    stream_timeout: float = setting(
        300.0,
        help="seconds a bundle fetch may stay open, read or not",
        lo=0,
        lo_open=True,
        flag="--fetch-stream-timeout",
        metavar="S",
    )

    def __post_init__(self) -> None:
        check_bounds(self)


@contextmanager
def _cancel_after(context: grpc.ServicerContext, seconds: float) -> Iterator[None]:
    """Cancel the RPC after ``seconds``: a peer that stops reading (or sending) blocks its
    worker inside gRPC, where only cancelling the call frees it."""
    timer = threading.Timer(seconds, context.cancel)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


class BundleServicer(pb_grpc.BundleServiceServicer):
    def __init__(self, coordinator: Operations, key: FetchKey, limits: FetchLimits) -> None:
        self._c = coordinator
        self._key = key
        self._limits = limits
        self._open: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _admit(self, node_id: str) -> None:
        with self._lock:
            if self._open[node_id] >= self._limits.per_node:
                raise TooLargeError(
                    f"node {node_id!r} already has {self._limits.per_node} fetches open"
                )
            self._open[node_id] += 1

    def _leave(self, node_id: str) -> None:
        with self._lock:
            self._open[node_id] -= 1
            if not self._open[node_id]:
                del self._open[node_id]

    def Fetch(
        self, request: pb.FetchRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.BundleChunk]:
        try:
            self._key.check(context, request.node_id)
            root = self._c.store.path(request.version)
            self._admit(request.node_id)
        except Exception as e:
            abort(context, e, "Fetch")
        try:
            with _cancel_after(context, self._limits.stream_timeout):
                yield from iter_bundle_chunks(root)
        finally:
            self._leave(request.node_id)


UPLOAD_TIMEOUT = 600.0  # seconds an upload stream may take
OPERATOR_WORKERS = 4


class CoordinatorServicer(pb_grpc.CoordinatorServiceServicer):
    """The operator API; ``admin_token`` None only on loopback (see
    :func:`coordinator.auth.require_operator_auth`)."""

    def __init__(self, coordinator: Operations, admin_token: str | None) -> None:
        self._c = coordinator
        self._token = admin_token

    def _authorize(self, context: grpc.ServicerContext) -> None:
        check_admin(context, self._token)

    def Upload(
        self, request_iterator: Iterable[pb.BundleChunk], context: grpc.ServicerContext
    ) -> pb.UploadReply:
        try:
            self._authorize(context)
            tmp = self._c.store.staging()
            try:
                with _cancel_after(context, UPLOAD_TIMEOUT):
                    receive_bundle(checked_chunks(request_iterator), tmp)
                version, name, existed = self._c.store.add(tmp, move=True)
            finally:  # whatever ended the upload (a refusal, a cancelled stream, a bug)
                shutil.rmtree(tmp, ignore_errors=True)  # gone once moved into the store
        except Exception as e:
            abort(context, e, "Upload")
        return pb.UploadReply(version=version, model_name=name, already_stored=existed)

    def StartRollout(
        self, request: pb.StartRolloutRequest, context: grpc.ServicerContext
    ) -> pb.RolloutStatus:
        try:
            self._authorize(context)
            ro = self._c.start_rollout(request.version, percent=request.percent or 100)
        except Exception as e:
            abort(context, e, "StartRollout")
        return msg.rollout_status_to_proto(ro)

    def Rollback(
        self, request: pb.RollbackRequest, context: grpc.ServicerContext
    ) -> pb.RolloutStatus:
        try:
            self._authorize(context)
            ro = self._c.rollback(request.to_version)
        except Exception as e:
            abort(context, e, "Rollback")
        return msg.rollout_status_to_proto(ro)

    def GetRollout(
        self, request: pb.GetRolloutRequest, context: grpc.ServicerContext
    ) -> pb.RolloutStatus:
        try:
            self._authorize(context)
            ro = self._c.rollout_status()
            if ro is None:
                raise NotFoundError("no rollout yet")
        except Exception as e:
            abort(context, e, "GetRollout")
        return msg.rollout_status_to_proto(ro)

    def StartCanary(
        self, request: pb.StartCanaryRequest, context: grpc.ServicerContext
    ) -> pb.CanaryRecord:
        try:
            self._authorize(context)
            rec = self._c.start_canary(request.version, cn.plan_from_proto(request.plan))
        except Exception as e:
            abort(context, e, "StartCanary")
        return cn.record_to_proto(rec)

    def GetCanary(
        self, request: pb.GetCanaryRequest, context: grpc.ServicerContext
    ) -> pb.CanaryRecord:
        try:
            self._authorize(context)
            rec = self._c.canary_status()
            if rec is None:
                raise NotFoundError("no canary yet")
        except Exception as e:
            abort(context, e, "GetCanary")
        return cn.record_to_proto(rec)


@dataclass(frozen=True, kw_only=True)
class Tls:
    cert: Path
    key: Path


@contextmanager
def _server(
    name: str, listen: str, workers: int, tls: Tls | None, register: Callable[[grpc.Server], None]
) -> Iterator[tuple[grpc.Server, int]]:
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"coord-{name}"),
        options=[("grpc.max_receive_message_length", 8 * CHUNK)],
        maximum_concurrent_rpcs=workers,  # beyond: RESOURCE_EXHAUSTED, not a queue
    )
    register(server)
    try:
        if tls is not None:
            port = server.add_secure_port(listen, server_credentials(tls.cert, tls.key))
        else:
            port = server.add_insecure_port(listen)
    except (RuntimeError, OSError) as e:
        raise ConfigError(f"cannot listen on {listen} ({name}): {e}") from e
    if port == 0:
        raise ConfigError(f"cannot listen on {listen} ({name})")
    server.start()
    try:
        yield server, port
    finally:
        server.stop(grace=1).wait(5)


def serve_fetch(
    coordinator: Operations,
    listen: str,
    key: FetchKey,
    *,
    limits: FetchLimits = FetchLimits(),
    tls: Tls | None = None,
) -> AbstractContextManager[tuple[grpc.Server, int]]:
    """The node-facing server (``BundleService``); yields (server, bound port)."""
    servicer = BundleServicer(coordinator, key, limits)
    return _server(
        "fetch",
        listen,
        limits.streams,
        tls,
        lambda s: pb_grpc.add_BundleServiceServicer_to_server(servicer, s),
    )


def serve_operator(
    coordinator: Operations, listen: str, admin_token: str | None, *, tls: Tls | None = None
) -> AbstractContextManager[tuple[grpc.Server, int]]:
    """The operator server (``CoordinatorService``); yields (server, bound port).
    Without ``admin_token`` it only listens on loopback."""
    require_operator_auth(listen, admin_token)
    servicer = CoordinatorServicer(coordinator, admin_token)
    return _server(
        "operator",
        listen,
        OPERATOR_WORKERS,
        tls,
        lambda s: pb_grpc.add_CoordinatorServiceServicer_to_server(servicer, s),
    )
