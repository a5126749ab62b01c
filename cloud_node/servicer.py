"""Thin gRPC servicer: proto in, handler call, proto out; errors -> :mod:`collab.rpc_status`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NoReturn

import grpc

from cloud_node.convert import (
    decode_call_from_proto,
    infer_call_from_proto,
    probe_call_from_proto,
    probe_reply_to_proto,
    reply_to_proto,
)
from cloud_node.handler import CloudHandler, TensorCall
from collab.proto import collab_pb2, collab_pb2_grpc
from collab.rpc_status import abort, status_for


class CloudServicer(collab_pb2_grpc.CloudServiceServicer):
    def __init__(self, handler: CloudHandler) -> None:
        self._h = handler
        self._m = handler.metrics

    def Infer(
        self, request: collab_pb2.InferRequest, context: grpc.ServicerContext
    ) -> collab_pb2.InferResponse:
        return self._tensor("Infer", infer_call_from_proto(request, *_caller(context)), context)

    def Decode(
        self, request: collab_pb2.DecodeRequest, context: grpc.ServicerContext
    ) -> collab_pb2.InferResponse:
        return self._tensor("Decode", decode_call_from_proto(request, *_caller(context)), context)

    def Probe(
        self, request: collab_pb2.ProbeRequest, context: grpc.ServicerContext
    ) -> collab_pb2.ProbeResponse:
        self._m.requests.labels("Probe", "", "").inc()
        try:
            return probe_reply_to_proto(self._h.probe(probe_call_from_proto(request)))
        except Exception as e:
            self._abort("Probe", e, context)

    def _tensor(
        self, method: str, call: TensorCall, context: grpc.ServicerContext
    ) -> collab_pb2.InferResponse:
        try:
            return reply_to_proto(self._h.run(call))
        except Exception as e:
            self._abort(method, e, context)

    def _abort(self, method: str, e: Exception, context: grpc.ServicerContext) -> NoReturn:
        self._m.errors.labels(method, status_for(e).name).inc()
        abort(context, e, method)


def _caller(context: grpc.ServicerContext) -> tuple[float | None, Callable[[], bool]]:
    """(monotonic deadline or None, is-the-caller-still-there)."""
    remaining = context.time_remaining()
    deadline = None if remaining is None else time.monotonic() + remaining
    return deadline, context.is_active
