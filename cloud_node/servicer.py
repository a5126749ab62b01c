"""Thin gRPC servicer: proto in, handler call, proto out; domain errors -> status codes."""

from __future__ import annotations

import asyncio
from typing import Any, NoReturn

import grpc

from cloud_node.convert import (
    decode_call_from_proto,
    infer_call_from_proto,
    probe_call_from_proto,
    probe_reply_to_proto,
    reply_to_proto,
)
from cloud_node.errors import BadRequestError, NotServedError, ShuttingDownError, TooLargeError
from cloud_node.handler import CloudHandler, TensorCall
from collab.errors import CodecError, CollabError, DeadlineError
from collab.log import logger
from collab.ort import InferenceError
from collab.proto import collab_pb2, collab_pb2_grpc

STATUS: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (NotServedError, grpc.StatusCode.NOT_FOUND),
    (BadRequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (CodecError, grpc.StatusCode.INVALID_ARGUMENT),
    (TooLargeError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (DeadlineError, grpc.StatusCode.DEADLINE_EXCEEDED),
    (ShuttingDownError, grpc.StatusCode.UNAVAILABLE),
    (InferenceError, grpc.StatusCode.INTERNAL),
)


def status_for(e: Exception) -> grpc.StatusCode:
    return next((code for cls, code in STATUS if isinstance(e, cls)), grpc.StatusCode.INTERNAL)


class CloudServicer(collab_pb2_grpc.CloudServiceServicer):
    def __init__(self, handler: CloudHandler) -> None:
        self._h = handler
        self._m = handler.metrics

    async def Infer(self, request: collab_pb2.InferRequest,
                    context: grpc.aio.ServicerContext) -> collab_pb2.InferResponse:
        call = infer_call_from_proto(request, _deadline(context))
        return await self._tensor("Infer", call, context)

    async def Decode(self, request: collab_pb2.DecodeRequest,
                     context: grpc.aio.ServicerContext) -> collab_pb2.InferResponse:
        call = decode_call_from_proto(request, _deadline(context))
        return await self._tensor("Decode", call, context)

    async def Probe(self, request: collab_pb2.ProbeRequest,
                    context: grpc.aio.ServicerContext) -> collab_pb2.ProbeResponse:
        self._m.requests.labels("Probe", "", "").inc()
        try:
            return probe_reply_to_proto(self._h.probe(probe_call_from_proto(request)))
        except CollabError as e:
            await self._abort("Probe", e, context)

    async def _tensor(self, method: str, call: TensorCall,
                      context: grpc.aio.ServicerContext) -> collab_pb2.InferResponse:
        try:
            return reply_to_proto(await self._h.run(call))
        except CollabError as e:
            await self._abort(method, e, context)

    async def _abort(self, method: str, e: CollabError, context: Any) -> NoReturn:
        code = status_for(e)
        self._m.errors.labels(method, code.name).inc()
        if code == grpc.StatusCode.INTERNAL:
            logger.warning("%s failed: %s", method, e, exc_info=e)
        else:
            logger.debug("%s rejected (%s): %s", method, code.name, e)
        await context.abort(code, str(e))
        raise AssertionError("unreachable")  # context.abort always raises


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else asyncio.get_running_loop().time() + remaining
