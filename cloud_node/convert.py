"""Protobuf <-> domain conversion for the cloud node (the only place that knows both)."""

from __future__ import annotations

from collections.abc import Callable

from cloud_node.handler import ProbeCall, ProbeReply, TensorCall, TensorReply
from collab.proto import collab_pb2
from collab.transport import load_to_proto, timing_to_proto


def infer_call_from_proto(
    req: collab_pb2.InferRequest, deadline: float | None, alive: Callable[[], bool] | None = None
) -> TensorCall:
    return TensorCall(
        model=req.model.name,
        version=req.model.version,
        split=None,
        frame=req.frame,
        images=tuple(req.images),
        request_id=req.request_id,
        deadline=deadline,
        alive=alive,
    )


def decode_call_from_proto(
    req: collab_pb2.DecodeRequest, deadline: float | None, alive: Callable[[], bool] | None = None
) -> TensorCall:
    return TensorCall(
        model=req.model.name,
        version=req.model.version,
        split=req.split_point,
        frame=req.frame,
        request_id=req.request_id,
        deadline=deadline,
        alive=alive,
    )


def reply_to_proto(r: TensorReply) -> collab_pb2.InferResponse:
    return collab_pb2.InferResponse(
        request_id=r.request_id,
        model=collab_pb2.ModelId(name=r.model, version=r.version),
        output=r.output,
        timing=timing_to_proto(r.timing),
        load=load_to_proto(r.load),
    )


def probe_call_from_proto(req: collab_pb2.ProbeRequest) -> ProbeCall:
    return ProbeCall(
        payload=req.payload,
        response_bytes=req.response_bytes,
        client_send_time=req.client_send_time,
    )


def probe_reply_to_proto(r: ProbeReply) -> collab_pb2.ProbeResponse:
    return collab_pb2.ProbeResponse(
        payload=r.payload,
        client_send_time=r.client_send_time,
        received_bytes=r.received_bytes,
        load=load_to_proto(r.load),
        models=[collab_pb2.ModelId(name=n, version=v) for n, v in r.models],
    )
