"""What an edge believes of a cloud's answer: nothing it has not checked.

A cloud may be buggy, out of date or hostile. Its output frame must decode to exactly
the shape the bundle manifest promises for the batch that was sent -- checked in the
frame header before anything is decompressed or allocated, so a small frame declaring
a huge tensor costs nothing -- and hold finite values (a NaN is the cloud's fault only
when the exact local answer is finite: a caller's input may legitimately overflow).
A failed call is the cloud's fault unless it was refused for what the caller asked
(:func:`caller_at_fault`): such a refusal fails that request only (it is finished
locally) and does not count towards the circuit breaker every caller shares.
"""

from __future__ import annotations

import math

import grpc
import numpy as np

from collab import codec as codecs
from collab.errors import CodecError
from collab.transport import RpcError

#: grpc's answer when a server's ``maximum_concurrent_rpcs`` is reached: the cloud is
#: full, which is about the cloud (not the request) and counts against it
ADMISSION_REFUSED = "Concurrent RPC limit exceeded!"


def decode_output(frame: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """The float32 array of ``shape`` in ``frame``, else CodecError. The decode limit is
    the expected size, and the header's shape is compared before the payload is touched.
    Finiteness is the caller's check (whose fault a NaN is depends on the request)."""
    limit = 4 * math.prod(shape)
    hdr = codecs.peek(frame, max_bytes=limit)
    if hdr.shape != shape:
        raise CodecError(f"reply shape {list(hdr.shape)} != expected {list(shape)}")
    return codecs.decode(frame, max_bytes=limit)


def caller_at_fault(e: RpcError) -> bool:
    """The cloud refused what this request asked for -- too many samples, a message
    over a limit -- and would serve another caller's request: RESOURCE_EXHAUSTED other
    than the admission limit or a full queue (a retry-after hint), which say the cloud
    is full."""
    return (
        e.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        and e.details != ADMISSION_REFUSED
        and e.retry_after_ms is None
    )
