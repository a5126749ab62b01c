"""The real `collab edge` and `collab cloud` daemons join a coordinator's fleet as
processes: the cloud announces its endpoint, the edge follows the coordinator's cloud
list and takes a rollout; killing the cloud node empties the edge's list."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from test_control_support import StatusWatcher, fetch_token_file, revised, wait_until

from collab import codec
from collab.bundle import load_bundle
from collab.cli import main as collab_main
from collab.procs import Broker, collab_process, free_port
from collab.proto import collab_pb2, collab_pb2_grpc
from coordinator.operator_client import CoordinatorClient


@pytest.mark.slow
def test_daemons_join_the_fleet(broker: Broker, tmp_path: Path, digits_bundle: Path) -> None:
    v0 = tmp_path / "v0"
    shutil.copytree(digits_bundle, v0)
    v1 = revised(v0, tmp_path / "v1", rev=11)
    cport, eport, gport, oport = free_port(), free_port(), free_port(), free_port()
    db = tmp_path / "coord" / "registry.db"
    key = tmp_path / "coord" / "coordinator.ed25519.pub"
    x = np.zeros(load_bundle(v0).manifest.input_shape, dtype=np.float32)
    channel = grpc.insecure_channel(f"127.0.0.1:{eport}")
    edge = collab_pb2_grpc.EdgeServiceStub(channel)

    def infer(policy: str) -> collab_pb2.EdgeInferResponse:
        return edge.Infer(
            collab_pb2.EdgeInferRequest(frame=codec.encode(x, "f32"), policy=policy), timeout=10
        )

    with (
        collab_process(
            [
                "coordinator",
                "--broker",
                broker.url,
                "--db",
                str(db),
                "--listen",
                f"127.0.0.1:{gport}",
                "--operator-listen",
                f"127.0.0.1:{oport}",
                "--heartbeat-timeout",
                "3",
                "--status-interval",
                "0.3",
            ],
            port=oport,  # the operator server starts last
            log=tmp_path / "coord.log",
        ),
        StatusWatcher(broker.url) as watch,
    ):
        cloud = collab_process(
            [
                "cloud",
                "--bundle",
                str(v0),
                "--listen",
                f"127.0.0.1:{cport}",
                "--broker",
                broker.url,
                "--node-id",
                "cloud-1",
                "--heartbeat-interval",
                "0.5",
            ],
            port=cport,
            log=tmp_path / "cloud.log",
        )
        cloud_proc = cloud.__enter__()
        try:
            edge_log = tmp_path / "edge.log"
            with collab_process(
                [
                    "edge",
                    "--bundle",
                    str(v0),
                    "--listen",
                    f"127.0.0.1:{eport}",
                    "--broker",
                    broker.url,
                    "--node-id",
                    "edge-1",
                    "--trusted-key",
                    str(key),
                    "--fetch-token-file",
                    str(fetch_token_file(db.parent / "coordinator.fetch-key", tmp_path, "edge-1")),
                    "--heartbeat-interval",
                    "0.5",
                    "--telemetry-interval",
                    "0.5",
                    "--work-dir",
                    str(tmp_path / "edge-work"),
                ],
                port=eport,
                log=edge_log,
            ):
                wait_until(
                    lambda: all((n := watch.node(x)) and n.online for x in ("cloud-1", "edge-1")),
                    20,
                    "both daemons registered",
                )
                assert watch.node("cloud-1").endpoints == (f"127.0.0.1:{cport}",)  # type: ignore[union-attr]
                wait_until(
                    lambda: f"127.0.0.1:{cport}" in edge_log.read_text(),
                    10,
                    "edge follows the cloud list",
                )
                # the edge was started without --cloud: a cloud-only answer proves it uses the coordinator's list
                r = wait_until(
                    lambda: (lambda r: r if r.path == "cloud_only" else None)(infer("cloud_only")),
                    15,
                    "a cloud-only answer through the announced cloud node",
                )
                assert r.model.version == load_bundle(v0).version
                ep = f"127.0.0.1:{oport}"
                assert (
                    collab_main(
                        ["rollout", "--coordinator", ep, "publish", str(v1), "--wait", "30"]
                    )
                    == 0
                )
                with CoordinatorClient(ep) as c:
                    ro = c.status()
                assert ro.state == "completed" and [n.node_id for n in ro.nodes] == ["edge-1"]
                wait_until(
                    lambda: watch.node("edge-1").bundle_version == load_bundle(v1).version,  # type: ignore[union-attr]
                    10,
                    "edge announces the new version",
                )
                assert infer("edge_only").model.version == load_bundle(v1).version  # and serves it
                t0 = time.monotonic()
                cloud_proc.kill()
                wait_until(lambda: not watch.node("cloud-1").online, 5, "cloud offline")  # type: ignore[union-attr]
                assert time.monotonic() - t0 < 5
                wait_until(
                    lambda: "cloud endpoints now none" in edge_log.read_text(),
                    10,
                    "edge drops the dead cloud",
                )
        finally:
            cloud.__exit__(None, None, None)
            channel.close()
