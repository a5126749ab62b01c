"""Shared helpers for the control-plane tests (no tests here): small real bundles, a
fleet of simulated node processes, and a watcher of the coordinator's status topic."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from collab.bundle import Manifest, Segment, SplitPoint, load_bundle, update_bundle, write_manifest
from collab.control import messages as msg
from collab.control import topics
from collab.control.mqtt import MqttClient, MqttConfig
from coordinator.auth import write_fetch_tokens

ROOT = Path(__file__).resolve().parents[1]


def _linear(path: Path, w: np.ndarray, relu: bool, detour: int = 0) -> None:
    """``x @ w`` (+ ReLU). ``detour`` > 0 computes the same product the long way, through
    a 512-wide identity multiplied ``detour`` times (exact, only slower)."""
    k = 512
    inits = [numpy_helper.from_array(w.astype(np.float32), "w")]
    nodes = [helper.make_node("MatMul", ["x", "w" if not detour else "a"], ["m0"])]
    if detour:
        a = np.zeros((w.shape[0], k), np.float32)
        a[:, : w.shape[1]] = w
        b = np.zeros((k, w.shape[1]), np.float32)
        b[: w.shape[1]] = np.eye(w.shape[1])
        inits = [
            numpy_helper.from_array(a, "a"),
            numpy_helper.from_array(np.eye(k, dtype=np.float32), "eye"),
            numpy_helper.from_array(b, "b"),
        ]
        for i in range(detour):
            nodes.append(helper.make_node("MatMul", [f"m{i}", "eye"], [f"m{i + 1}"]))
        nodes.append(helper.make_node("MatMul", [f"m{detour}", "b"], ["mb"]))
    last = "mb" if detour else "m0"
    if relu:
        nodes.append(helper.make_node("Relu", [last], ["y"]))
    else:
        nodes.append(helper.make_node("Identity", [last], ["y"]))
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", w.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", w.shape[1]])],
        inits,
    )
    onnx.save(
        helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(path)
    )


def tiny_bundle(
    out: Path, rev: int = 1, *, weights: int | None = None, scale: float = 1.0, detour: int = 0
) -> Path:
    """A real (ONNX Runtime-servable) 4 -> 3 -> 2 bundle; ``rev`` changes the version.
    The weights are drawn from ``weights`` (default ``rev``) and multiplied by ``scale``
    (> 0 keeps every top-1 answer); ``detour`` makes the head slower, not different."""
    out.mkdir(parents=True)
    rng = np.random.default_rng(rev if weights is None else weights)
    w1, w2 = rng.normal(size=(4, 3)) * scale, rng.normal(size=(3, 2))
    _linear(out / "head.onnx", w1, relu=True, detour=detour)
    _linear(out / "tail.onnx", w2, relu=False)
    m = Manifest(
        model_name="tiny",
        input_name="x",
        input_shape=(1, 4),
        input_dtype="float32",
        output_shape=(1, 2),
        full_ms=0.1,
        input_bytes=16,
        segments=(
            Segment(path="head.onnx", input="x", output="y", input_shape=(1, 4), ms=0.1),
            Segment(path="tail.onnx", input="x", output="y", input_shape=(1, 3), ms=0.1),
        ),
        split_points=(
            SplitPoint(
                name="h",
                index=0,
                boundary=1,
                feature_shape=(1, 3),
                feature_dtype="float32",
                feature_bytes=12,
                head_ms=0.1,
                tail_ms=0.1,
            ),
        ),
        extra={"rev": rev},
    )
    write_manifest(out, m)
    return out


def revised(src: Path, out: Path, rev: int) -> Path:
    """A copy of ``src`` with a different version (manifest metadata changed)."""
    shutil.copytree(src, out)
    update_bundle(out, lambda root, m: replace(m, extra={**m.extra, "rev": rev}))
    return out


def base_bundle(tmp: Path) -> Path:
    """The digits example bundle when available (copied), else the tiny bundle."""
    try:
        from collab.split.examples import example_bundle
    except ImportError:
        return tiny_bundle(tmp / "base")
    dst = tmp / "base"
    shutil.copytree(example_bundle("digits"), dst)
    load_bundle(dst)
    return dst


def wait_until(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class StatusWatcher:
    """Keeps the latest FleetStatus snapshot the coordinator published."""

    def __init__(self, url: str, **mqtt: Any) -> None:
        self.latest: msg.FleetStatus | None = None
        self._lock = threading.Lock()
        self.client = MqttClient(MqttConfig(url=url, **mqtt))
        self.client.subscribe(topics.FLEET_STATUS, self._on, qos=0)

    def _on(self, topic: str, payload: bytes, retained: bool) -> None:
        with self._lock:
            self.latest = msg.fleet_status_from_bytes(payload)

    def __enter__(self) -> StatusWatcher:
        self.client.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.stop()

    def node(self, node_id: str) -> msg.NodeStatus | None:
        with self._lock:
            fs = self.latest
        return next((n for n in fs.nodes if n.node_id == node_id), None) if fs else None


class SimFleet:
    """Simulated node processes (python -m tests.helpers.simnode); killed on exit. Each
    node gets its fetch token from ``fetch_key``, by default the coordinator's beside
    ``trust_key`` (where it keeps both unless told otherwise)."""

    def __init__(
        self, root: Path, broker_url: str, trust_key: Path | None, fetch_key: Path | None = None
    ) -> None:
        if fetch_key is None and trust_key is not None:
            fetch_key = Path(trust_key).parent / "coordinator.fetch-key"
        self.root, self.url, self.key, self.fetch_key = root, broker_url, trust_key, fetch_key
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(self, node_id: str, role: str = "edge", *extra: str) -> subprocess.Popen[bytes]:
        work = self.root / node_id
        work.mkdir(parents=True, exist_ok=True)
        args = [
            sys.executable,
            "-m",
            "tests.helpers.simnode",
            "--broker",
            self.url,
            "--node-id",
            node_id,
            "--role",
            role,
            "--work-dir",
            str(work),
            "--heartbeat",
            "0.3",
            "--telemetry",
            "0.5",
            *extra,
        ]
        if self.key is not None:
            args += ["--trusted-key", str(self.key)]
        if self.fetch_key is not None:
            token = fetch_token_file(self.fetch_key, work, node_id)
            args += ["--fetch-token-file", str(token)]
        log = open(work / "log.txt", "wb")  # noqa: SIM115
        p = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
        )  # tests.* importable
        log.close()
        self.procs[node_id] = p
        return p

    def state(self, node_id: str) -> dict[str, Any]:
        try:
            return dict(json.loads((self.root / node_id / "state.json").read_text()))
        except (OSError, ValueError):
            return {}

    def log(self, node_id: str) -> str:
        return (self.root / node_id / "log.txt").read_text(errors="replace")

    def __enter__(self) -> SimFleet:
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
        for p in self.procs.values():
            p.wait(10)


def coordinator_config(url: str, tmp: Path, **kw: Any) -> Any:
    from coordinator.daemon import CoordinatorConfig

    mqtt = kw.pop("mqtt", None) or MqttConfig(url=url)
    return CoordinatorConfig(
        mqtt=mqtt,
        db=tmp / "coord" / "registry.db",
        heartbeat_timeout=kw.pop("heartbeat_timeout", 1.0),
        status_interval=kw.pop("status_interval", 0.2),
        listen=kw.pop("listen", "127.0.0.1:0"),
        operator_listen=kw.pop("operator_listen", "127.0.0.1:0"),
        **kw,
    )


def agent_config(url: str, tmp: Path, node_id: str, role: str = "edge", **kw: Any) -> Any:
    from collab.control.agent import AgentConfig

    mqtt = kw.pop("mqtt", None) or MqttConfig(url=url)
    return AgentConfig(
        node_id=node_id,
        role=role,
        mqtt=mqtt,
        work_dir=tmp / "nodes" / node_id,
        heartbeat_interval=kw.pop("heartbeat_interval", 0.2),
        telemetry_interval=kw.pop("telemetry_interval", 0.3),
        **kw,
    )


def fetch_token_file(fetch_key: Path, out: Path, node_id: str) -> Path:
    """``node_id``'s fetch token (as `collab mqtt-auth --fetch-key` writes it)."""
    write_fetch_tokens(fetch_key, out, [node_id])
    return out / f"{node_id}.fetch"


class Swapper:
    """A swap callback that really loads the bundle; can be told to fail."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.loaded: list[str] = []

    def __call__(self, path: Path) -> None:
        if self.fail:
            raise RuntimeError("runtime cannot load this bundle")
        self.loaded.append(load_bundle(path).version)
