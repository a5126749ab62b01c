"""Protobuf conversion for the FL data plane (gRPC); the MQTT round-control messages
convert in :mod:`collab.fl.messages`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from collab.control.messages import MalformedMessage
from collab.errors import FLError
from collab.fl.messages import optional_packing, packing_to_proto
from collab.fl.pack import Packing
from collab.fl.round_sum import Aggregate, UpdateHeader
from collab.proto import fl_pb2


def header_to_proto(h: UpdateHeader) -> fl_pb2.FlUpdateHeader:
    return fl_pb2.FlUpdateHeader(
        federation=h.federation,
        round=h.round,
        client_id=h.client_id,
        base_version=h.base_version,
        encoding=h.encoding,
        context_id=h.context_id,
        num_values=h.num_values,
        num_chunks=h.num_chunks,
        compression=h.compression,
        packing=packing_to_proto(h.packing),
    )


def header_from_proto(p: fl_pb2.FlUpdateHeader) -> UpdateHeader:
    return UpdateHeader(
        federation=p.federation,
        round=p.round,
        client_id=p.client_id,
        base_version=p.base_version,
        encoding=p.encoding,
        context_id=p.context_id,
        num_values=p.num_values,
        num_chunks=p.num_chunks,
        compression=p.compression,
        packing=optional_packing(p),
    )


def update_to_proto(h: UpdateHeader, chunks: Iterable[bytes]) -> Iterator[fl_pb2.FlUpdateChunk]:
    yield fl_pb2.FlUpdateChunk(header=header_to_proto(h))
    for c in chunks:
        yield fl_pb2.FlUpdateChunk(data=c)


def aggregate_to_proto(a: Aggregate) -> Iterator[fl_pb2.FlAggregateChunk]:
    yield fl_pb2.FlAggregateChunk(
        header=fl_pb2.FlAggregateHeader(
            federation=a.federation,
            round=a.round,
            base_version=a.base_version,
            version=a.version,
            encoding=a.encoding,
            context_id=a.context_id,
            num_values=a.num_values,
            num_chunks=len(a.chunks),
            reporters=len(a.reporters),
            fixed_denominator=a.fixed_denominator,
            packing=packing_to_proto(a.packing),
        )
    )
    for c in a.chunks:
        yield fl_pb2.FlAggregateChunk(data=c)


def aggregate_from_proto(stream: Iterable[fl_pb2.FlAggregateChunk]) -> Aggregate:
    it = iter(stream)
    first = next(it, None)
    if first is None or first.WhichOneof("part") != "header":
        raise FLError("aggregate stream does not start with a header")
    h = first.header
    chunks: list[bytes] = []
    for m in it:
        if m.WhichOneof("part") != "data":
            raise FLError("aggregate stream has a second header")
        if len(chunks) == h.num_chunks:  # stop reading at the first chunk too many
            raise FLError(f"aggregate stream has more than the {h.num_chunks} chunks it announced")
        chunks.append(m.data)
    if len(chunks) != h.num_chunks:
        raise FLError(f"aggregate stream has {len(chunks)} chunks, header says {h.num_chunks}")
    return Aggregate(
        federation=h.federation,
        round=h.round,
        base_version=h.base_version,
        version=h.version,
        encoding=h.encoding,
        context_id=h.context_id,
        num_values=h.num_values,
        reporters=tuple(f"#{i}" for i in range(h.reporters)),
        fixed_denominator=h.fixed_denominator,
        chunks=tuple(chunks),
        packing=_aggregate_packing(h),
    )


def _aggregate_packing(h: fl_pb2.FlAggregateHeader) -> Packing | None:
    try:
        return optional_packing(h)
    except MalformedMessage as e:
        raise FLError(f"aggregate header: {e}") from e
