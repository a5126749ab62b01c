"""Operator-side client of the coordinator's gRPC API (used by ``collab rollout``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc

from collab.bundle import load_bundle
from collab.control import canary as cn
from collab.control import messages as msg
from collab.control.transfer import channel, iter_bundle_chunks
from collab.errors import ControlPlaneError, TransportError
from collab.proto import control_pb2 as pb
from collab.proto import control_pb2_grpc as pb_grpc


class CoordinatorClient:
    def __init__(
        self,
        endpoint: str,
        *,
        ca_file: Path | None = None,
        timeout: float = 60.0,
        token: str | None = None,
    ) -> None:
        self.endpoint = endpoint
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        self._channel = channel(endpoint, ca_file=ca_file)
        self._stub = pb_grpc.CoordinatorServiceStub(self._channel)
        self._timeout = timeout

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> CoordinatorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args, timeout=self._timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            code = e.code() if isinstance(e, grpc.Call) else None
            details = e.details() if isinstance(e, grpc.Call) else str(e)
            if code == grpc.StatusCode.UNAVAILABLE:
                raise TransportError(f"coordinator {self.endpoint} unavailable: {details}") from e
            raise ControlPlaneError(f"coordinator: {details}") from e

    def upload(self, bundle_dir: Path) -> pb.UploadReply:
        """Verify locally (a clear error before any transfer), then stream it."""
        load_bundle(bundle_dir)
        return self._call(self._stub.Upload, iter_bundle_chunks(Path(bundle_dir)))

    def start(self, version: str, percent: int = 100) -> msg.RolloutStatus:
        r = self._call(
            self._stub.StartRollout, pb.StartRolloutRequest(version=version, percent=percent)
        )
        return msg.rollout_status_from_proto(r)

    def rollback(self, to_version: str = "") -> msg.RolloutStatus:
        return msg.rollout_status_from_proto(
            self._call(self._stub.Rollback, pb.RollbackRequest(to_version=to_version))
        )

    def status(self) -> msg.RolloutStatus:
        return msg.rollout_status_from_proto(
            self._call(self._stub.GetRollout, pb.GetRolloutRequest())
        )

    def start_canary(self, version: str, plan: cn.CanaryPlan) -> cn.CanaryRecord:
        r = self._call(
            self._stub.StartCanary,
            pb.StartCanaryRequest(version=version, plan=cn.plan_to_proto(plan)),
        )
        return cn.record_from_proto(r)

    def canary(self) -> cn.CanaryRecord:
        return cn.record_from_proto(self._call(self._stub.GetCanary, pb.GetCanaryRequest()))
