"""gRPC servicers of the coordinator: thin adapters from protobuf to the coordinator's
operations (:class:`Operations`); errors are answered through :mod:`collab.rpc_status`."""

from __future__ import annotations

import hmac
import shutil
from collections.abc import Iterable, Iterator
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import grpc

from collab.control import messages as msg
from collab.control.transfer import CHUNK, checked_chunks, iter_bundle_chunks, receive_bundle
from collab.errors import AuthError, ConfigError, NotFoundError
from collab.proto import control_pb2 as pb
from collab.proto import control_pb2_grpc as pb_grpc
from collab.rpc_status import abort
from coordinator.store import BundleStore


class Operations(Protocol):
    """What the servicers call: :class:`coordinator.daemon.Coordinator`, which starts
    them (a protocol, so this module does not import the daemon back)."""

    @property
    def store(self) -> BundleStore: ...

    def start_rollout(self, version: str, *, percent: int = 100) -> msg.RolloutStatus: ...

    def rollback(self, to_version: str = "") -> msg.RolloutStatus: ...

    def rollout_status(self) -> msg.RolloutStatus | None: ...


class BundleServicer(pb_grpc.BundleServiceServicer):
    def __init__(self, coordinator: Operations) -> None:
        self._c = coordinator

    def Fetch(
        self, request: pb.FetchRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.BundleChunk]:
        try:
            root = self._c.store.path(request.version)
        except Exception as e:
            abort(context, e, "Fetch")
        yield from iter_bundle_chunks(root)


class CoordinatorServicer(pb_grpc.CoordinatorServiceServicer):
    def __init__(self, coordinator: Operations, admin_token: str | None) -> None:
        self._c = coordinator
        self._expected = f"Bearer {admin_token}".encode() if admin_token else None

    def _authorize(self, context: grpc.ServicerContext) -> None:
        if self._expected is None:
            return
        got = dict(context.invocation_metadata()).get("authorization", "")
        if not hmac.compare_digest(str(got).encode(), self._expected):
            raise AuthError("operator API: missing or wrong admin token")

    def Upload(
        self, request_iterator: Iterable[pb.BundleChunk], context: grpc.ServicerContext
    ) -> pb.UploadReply:
        try:
            self._authorize(context)
            tmp = self._c.store.staging()
            try:
                receive_bundle(checked_chunks(request_iterator), tmp)
                version, name, existed = self._c.store.add(tmp, move=True)
            except Exception:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
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


@contextmanager
def serve(
    coordinator: Operations,
    listen: str,
    *,
    admin_token: str | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
) -> Iterator[tuple[grpc.Server, int]]:
    """The coordinator's gRPC server (bundle fetch + operator API)."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=16),
        options=[("grpc.max_receive_message_length", 8 * CHUNK)],
    )
    pb_grpc.add_BundleServiceServicer_to_server(BundleServicer(coordinator), server)
    pb_grpc.add_CoordinatorServiceServicer_to_server(
        CoordinatorServicer(coordinator, admin_token), server
    )
    try:
        if tls_cert is not None and tls_key is not None:
            creds = grpc.ssl_server_credentials(
                [(Path(tls_key).read_bytes(), Path(tls_cert).read_bytes())]
            )
            port = server.add_secure_port(listen, creds)
        else:
            port = server.add_insecure_port(listen)
    except (RuntimeError, OSError) as e:
        raise ConfigError(f"cannot listen on {listen}: {e}") from e
    if port == 0:
        raise ConfigError(f"cannot listen on {listen}")
    server.start()
    try:
        yield server, port
    finally:
        server.stop(grace=1).wait(5)
