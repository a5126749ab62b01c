"""A hostile cloud node: a real gRPC ``CloudService`` process whose replies are crafted
to break an edge that believes them, for tests/test_security_edge.py.

``python -m tests.helpers.hostile_cloud --port P --width W --mode-file F`` (from the
repository root). Every call reads the mode from ``F`` (the test rewrites it between
requests); ``W`` is the width of an honest output row (the bundle's output shape[1]):

- ``bomb``: an 8 KB frame (f32+zstd of zeros) declaring a 256 MiB float32 tensor
- ``zero_rows``: a well-formed frame of shape (0, W)
- ``wide``: a well-formed frame of shape (N, W + 1) for an N-sample request
- ``garbage``: random bytes
- ``nan_output``: shape (N, W) full of NaN
- ``nan_timing``: shape (N, W) zeros (a plausible answer) with NaN / infinite server
  times, and a NaN queueing delay in every Probe reply
- ``slow``: garbage after 2 s (holds the caller's call)
"""

from __future__ import annotations

import argparse
import math
import os
import time
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import zstandard

from collab import codec
from collab.codec.frame import MAGIC, VERSION, _crc, _varint
from collab.codec.spec import ENTROPIES, QUANTS
from collab.proto import collab_pb2, collab_pb2_grpc

BOMB_BYTES = 256 << 20  # the decoder's default limit: the most an unbounded edge accepts


def bomb_frame(width: int) -> bytes:
    """A valid frame whose zstd payload of zeros inflates to BOMB_BYTES (built in 1 MiB
    chunks, so this process does not hold the bomb either)."""
    rows = BOMB_BYTES // (4 * width)
    raw_len = 4 * rows * width
    zc = zstandard.ZstdCompressor(level=3).compressobj(size=raw_len)
    chunk, parts, left = bytes(1 << 20), [], raw_len
    while left:
        n = min(left, len(chunk))
        parts.append(zc.compress(chunk[:n]))
        left -= n
    parts.append(zc.flush())
    payload = b"".join(parts)
    head = b"".join(
        (
            MAGIC,
            bytes((VERSION, QUANTS.index("f32") << 4 | ENTROPIES.index("zstd"), 3, 0, 2 << 4)),
            _varint(raw_len),
            _varint(len(payload)),
            _varint(rows),
            _varint(width),
        )
    )
    return head + payload + _crc(head, payload).to_bytes(4, "little")


class Hostile(collab_pb2_grpc.CloudServiceServicer):
    def __init__(self, width: int, mode_file: Path) -> None:
        self.width = width
        self.mode_file = mode_file
        self.bomb = bomb_frame(width)

    def mode(self) -> str:
        return self.mode_file.read_text().strip()

    def _reply(self, frame: bytes) -> collab_pb2.InferResponse:
        n = codec.peek(frame).shape[0] if frame else 1
        mode, w = self.mode(), self.width
        timing = collab_pb2.ServerTiming(queue_ms=0.1, compute_ms=0.1, total_ms=0.3)
        if mode == "bomb":
            out = self.bomb
        elif mode == "zero_rows":
            out = codec.encode(np.zeros((0, w), np.float32), "f32")
        elif mode == "wide":
            out = codec.encode(np.ones((n, w + 1), np.float32), "f32")
        elif mode in ("garbage", "slow"):
            time.sleep(2.0 if mode == "slow" else 0.0)
            out = os.urandom(200)
        elif mode == "nan_output":
            out = codec.encode(np.full((n, w), np.nan, np.float32), "f32")
        elif mode == "nan_timing":
            out = codec.encode(np.zeros((n, w), np.float32), "f32")
            timing = collab_pb2.ServerTiming(
                queue_ms=math.nan, compute_ms=math.inf, decode_ms=-1.0, total_ms=math.nan
            )
        else:
            raise ValueError(f"unknown mode {mode!r}")
        return collab_pb2.InferResponse(output=out, timing=timing)

    def Infer(
        self, request: collab_pb2.InferRequest, context: grpc.ServicerContext
    ) -> collab_pb2.InferResponse:
        return self._reply(request.frame)

    def Decode(
        self, request: collab_pb2.DecodeRequest, context: grpc.ServicerContext
    ) -> collab_pb2.InferResponse:
        return self._reply(request.frame)

    def Probe(
        self, request: collab_pb2.ProbeRequest, context: grpc.ServicerContext
    ) -> collab_pb2.ProbeResponse:
        queue = math.nan if self.mode() == "nan_timing" else 0.0
        return collab_pb2.ProbeResponse(
            client_send_time=request.client_send_time,
            received_bytes=len(request.payload),
            load=collab_pb2.LoadReport(queue_ms_ewma=queue, compute_ms_ewma=queue),
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--width", type=int, required=True)
    ap.add_argument("--mode-file", type=Path, required=True)
    args = ap.parse_args()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    collab_pb2_grpc.add_CloudServiceServicer_to_server(Hostile(args.width, args.mode_file), server)
    server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    while True:  # until the test terminates it
        time.sleep(3600)


if __name__ == "__main__":
    main()
