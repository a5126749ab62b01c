"""Bounds on one FL gRPC stream, so that no peer holds more of the aggregator than one
upload's worth of memory, one worker, for one stream deadline.

- An upload carries exactly the chunks its round expects, each no larger than its
  encoding can produce (:func:`upload_limits`, from the model size and HE parameters, not
  from what the client declares): the first chunk beyond either ends the stream.
- Uploads and downloads hold slots of their own (:class:`Slots`), so a flood of uploads
  never starves the aggregate downloads clients catch up with; one stream over: at once
  RESOURCE_EXHAUSTED, never a queue.
- A stream still open after its deadline is cancelled (:class:`StreamDeadline`): an idle
  or trickling peer frees its worker.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

import grpc

from collab.errors import CancelledError, DeadlineError, TooLargeError, UpdateRejected
from collab.fl.config import HEParams
from collab.fl.pack import Packing
from collab.fl.round_sum import upload_chunk_sizes
from collab.proto import fl_pb2

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class UploadLimits:
    """What one upload of a round may carry: ``chunks`` data messages of at most
    ``chunk_bytes`` each (so at most ``total_bytes``)."""

    chunks: int
    chunk_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.chunks * self.chunk_bytes


def _with_compression(raw: int) -> int:
    # zstd's worst case (ZSTD_compressBound: +1/256 and a frame header), with room to spare
    return raw + raw // 128 + 1024


def upload_limits(
    encoding: str, num_values: int, he: HEParams, packing: Packing | None = None
) -> UploadLimits:
    """The limits of an upload of ``num_values`` values under ``encoding`` (and
    ``packing``): a float32 chunk is 4 bytes a value; a fresh CKKS ciphertext two
    polynomials of N coefficients per prime, 8 bytes each (its serialisation is smaller)."""
    sizes = upload_chunk_sizes(encoding, num_values, he.slots, packing)
    if encoding == "ckks":
        raw = 2 * he.poly_modulus_degree * len(he.coeff_mod_bit_sizes) * 8
    else:
        raw = 4 * max(sizes, default=0)
    return UploadLimits(chunks=len(sizes), chunk_bytes=_with_compression(raw))


def message_limit(limits: UploadLimits) -> int:
    """The server's gRPC message limit: an upload chunk, or an aggregate chunk (float64
    sums of float32 chunks are twice their size; a CKKS sum is a ciphertext)."""
    return 2 * limits.chunk_bytes + (64 << 10)


def read_chunks(messages: Iterable[fl_pb2.FlUpdateChunk], limits: UploadLimits) -> list[bytes]:
    """The data chunks after an upload's header, ending the stream at the first message
    that is not one of the ``limits.chunks`` the round expects, or is too large."""
    chunks: list[bytes] = []
    for m in messages:
        if m.WhichOneof("part") != "data":
            raise UpdateRejected("second header in one upload")
        if len(chunks) == limits.chunks:
            raise UpdateRejected(f"more than the round's {limits.chunks} chunks")
        if len(m.data) > limits.chunk_bytes:
            raise TooLargeError(
                f"chunk {len(chunks)} has {len(m.data)} bytes, the round's chunks "
                f"have at most {limits.chunk_bytes}"
            )
        chunks.append(m.data)
    return chunks


class Slots:
    """At most ``n`` streams of one kind at once; one more is refused, not queued."""

    def __init__(self, n: int, what: str) -> None:
        self.n = n
        self.what = what
        self._free = threading.BoundedSemaphore(n)

    @contextmanager
    def hold(self) -> Iterator[None]:
        if not self._free.acquire(blocking=False):
            raise TooLargeError(f"{self.n} {self.what} are open already: try again later")
        try:
            yield
        finally:
            self._free.release()


class StreamDeadline:
    """Cancels an RPC still open ``seconds`` after it started (the peer sees CANCELLED);
    :meth:`received` turns the broken request stream into DeadlineError for the handler."""

    def __init__(self, context: grpc.ServicerContext, seconds: float) -> None:
        self.seconds = seconds
        self.expired = threading.Event()
        self._context = context
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def _fire(self) -> None:
        self.expired.set()
        self._context.cancel()

    def __enter__(self) -> StreamDeadline:
        self._timer.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._timer.cancel()

    def received(self, requests: Iterator[T]) -> Iterator[T]:
        """``requests``, with grpc's error for a cancelled stream wrapped."""
        try:
            yield from requests
        except grpc.RpcError as e:
            if self.expired.is_set():
                raise DeadlineError(f"stream still open after {self.seconds:g}s: cancelled") from e
            raise CancelledError(
                "the stream broke off (the client left, or sent a message over the limit)"
            ) from e
