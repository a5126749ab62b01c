"""Shared helpers of the cloud-node tests (no tests here): the edge's half of a
request computed from the bundle files, channels, and /metrics scraping."""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence

import grpc
import numpy as np

from collab.bundle import Bundle
from collab.proto import collab_pb2, collab_pb2_grpc


def head_feature(bundle: Bundle, split: str, x: np.ndarray) -> np.ndarray:
    """The edge's half, computed here with ONNX Runtime from the bundle files."""
    from collab.chain import BundleSessions

    return BundleSessions(bundle).head(split)(x)


def full_output(bundle: Bundle, x: np.ndarray) -> np.ndarray:
    from collab.chain import BundleSessions

    return BundleSessions(bundle).full()(x)


def sample_inputs(bundle: Bundle, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (n, *bundle.manifest.input_shape[1:])
    return rng.standard_normal(shape).astype(np.float32)


def stub(
    addr: str | list[str], **kw: object
) -> tuple[grpc.Channel, collab_pb2_grpc.CloudServiceStub]:
    from collab.transport import make_channel

    ch = make_channel(addr, **kw)  # type: ignore[arg-type]
    return ch, collab_pb2_grpc.CloudServiceStub(ch)


def model_id(bundle: Bundle) -> collab_pb2.ModelId:
    return collab_pb2.ModelId(name=bundle.name, version=bundle.version)


def wait_ready(ch: grpc.Channel, timeout: float = 20.0) -> None:
    grpc.channel_ready_future(ch).result(timeout=timeout)


_METRIC_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([-+0-9.eEinfNa]+)$")


def scrape(port: int, name: str, **labels: str) -> float:
    """Sum of a metric's samples on a node's /metrics endpoint matching ``labels``."""
    import urllib.request

    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    total = 0.0
    for line in body.splitlines():
        m = _METRIC_RE.match(line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total


class Recorder:
    """Batcher metrics sink: batch sizes and drops by reason, as the tests read them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sizes: list[int] = []
        self.drops: dict[str, int] = {}

    def batch(self, size: int, queue_s: Sequence[float], compute_s: float) -> None:
        with self.lock:
            self.sizes.append(size)

    def dropped(self, reason: str, n: int) -> None:
        with self.lock:
            self.drops[reason] = self.drops.get(reason, 0) + n
