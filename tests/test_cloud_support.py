"""Shared helpers of the cloud-node tests (no tests here).

``digits`` bundles come from ``collab.testing.bundles.example_bundle`` when it is
available; otherwise a tiny chain CNN on 8x8 digits inputs is split by hand with
torch.onnx (dynamic batch dim), so the cloud tests do not depend on the partitioner.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import grpc
import numpy as np

from collab.bundle import Bundle
from collab.proto import collab_pb2, collab_pb2_grpc


def digits_bundle_path() -> Path:
    try:
        from collab.testing.bundles import example_bundle
    except ImportError:
        return _fallback_bundle()
    return example_bundle("digits")


_FALLBACK: Path | None = None


def _fallback_bundle() -> Path:
    global _FALLBACK
    if _FALLBACK is None:
        _FALLBACK = build_tiny_bundle(Path(tempfile.mkdtemp(prefix="collab-cloud-test-")) / "b")
    return _FALLBACK


def build_tiny_bundle(out: Path) -> Path:
    import torch
    from torch import nn

    from collab.bundle import Manifest, SplitPoint, write_manifest

    torch.manual_seed(0)
    layers = [nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU()),
              nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU()),
              nn.Sequential(nn.Flatten(), nn.Linear(16 * 64, 10))]
    full = nn.Sequential(*layers).eval()
    out.mkdir(parents=True)
    x = torch.randn(1, 1, 8, 8)

    def export(m: nn.Module, inp: torch.Tensor, name: str) -> None:
        torch.onnx.export(m, (inp,), str(out / name), input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, dynamo=False,
                          opset_version=17)

    export(full, x, "full.onnx")
    sps = []
    for k in (1, 2):
        head, tail = nn.Sequential(*layers[:k]).eval(), nn.Sequential(*layers[k:]).eval()
        with torch.no_grad():
            f = head(x)
        export(head, x, f"head_{k}.onnx")
        export(tail, f, f"tail_{k}.onnx")
        sps.append(SplitPoint(name=f"layer{k}", index=k, head=f"head_{k}.onnx",
                              tail=f"tail_{k}.onnx", feature_shape=tuple(f.shape),
                              feature_dtype="float32", feature_bytes=4 * f.numel(),
                              head_ms=0.1, tail_ms=0.1))
    m = Manifest(model_name="tiny_digits", input_name="x", input_shape=(1, 1, 8, 8),
                 input_dtype="float32", output_shape=(1, 10), full="full.onnx", full_ms=0.1,
                 input_bytes=256, split_points=tuple(sps))
    write_manifest(out, m)
    return out


def head_feature(bundle: Bundle, split: str, x: np.ndarray) -> np.ndarray:
    """The edge's half, computed here with ONNX Runtime from the bundle files."""
    from collab.ort import make_session, run

    return run(make_session(bundle.path(bundle.manifest.split(split).head)), x)


def full_output(bundle: Bundle, x: np.ndarray) -> np.ndarray:
    from collab.ort import make_session, run

    return run(make_session(bundle.path(bundle.manifest.full)), x)


def sample_inputs(bundle: Bundle, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (n, *bundle.manifest.input_shape[1:])
    return rng.standard_normal(shape).astype(np.float32)


def stub(addr: str | list[str], **kw: object) -> tuple[grpc.Channel, collab_pb2_grpc.CloudServiceStub]:
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
