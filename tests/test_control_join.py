"""The real daemons in a fleet: a cloud node announcing itself through
``collab.control.join``, an edge daemon (edge_node) taking its cloud list from the
coordinator, serving a rolled-out bundle and reporting telemetry."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_control_support import coordinator_config, fetch_token_file, revised, wait_until

from collab.bundle import load_bundle
from collab.control.join import add_cloud_join_args, cloud_agent
from collab.control.mqtt import MqttConfig
from collab.procs import Broker
from coordinator.daemon import Coordinator


@pytest.mark.slow
def test_edge_and_cloud_daemons_join(broker: Broker, tmp_path: Path, digits_bundle: Path) -> None:
    from cloud_node.config import CloudConfig
    from cloud_node.server import serve as serve_cloud
    from edge_node.config import EdgeConfig
    from edge_node.server import serve as serve_edge

    v0 = tmp_path / "v0"
    shutil.copytree(digits_bundle, v0)
    v1 = revised(v0, tmp_path / "v1", rev=7)
    ap = argparse.ArgumentParser()
    add_cloud_join_args(ap)
    with (
        Coordinator(coordinator_config(broker.url, tmp_path, heartbeat_timeout=5.0)) as c,
        serve_cloud(CloudConfig(bundles=(v0,), listen="127.0.0.1:0", warmup=False)) as (cs, cport),
    ):
        args = ap.parse_args(
            ["--broker", broker.url, "--node-id", "cloud-a", "--heartbeat-interval", "0.5"]
        )
        cagent = cloud_agent(args, listen="127.0.0.1:0", port=cport, served=cs.handler.served())
        assert cagent is not None
        try:
            edge_cfg = EdgeConfig(
                bundle=v0,
                listen="127.0.0.1:0",
                mqtt=MqttConfig(url=broker.url),
                node_id="edge-a",
                trusted_key=c.public_key_path,
                fetch_token_file=fetch_token_file(c.fetch_key_path, tmp_path, "edge-a"),
                work_dir=tmp_path / "edge-work",
                heartbeat_interval_s=0.5,
                telemetry_interval_s=0.5,
            )
            with serve_edge(edge_cfg) as (es, _port):
                client = es.client
                wait_until(
                    lambda: client.cloud == (f"127.0.0.1:{cport}",),
                    10,
                    "edge follows the coordinator's cloud list",
                )
                x = np.zeros(load_bundle(v0).manifest.input_shape, dtype=np.float32)
                for _ in range(5):
                    client.infer(x)
                tel = wait_until(
                    lambda: (
                        (n := c.registry.nodes.get("edge-a"))
                        and n.telemetry
                        and n.telemetry.requests
                        and n.telemetry
                    ),
                    10,
                    "edge telemetry",
                )
                assert sum(tel.path_mix.values()) >= 1
                ro = c.start_rollout(c.upload(v1))
                assert {n.node_id for n in ro.nodes} == {"edge-a"}  # cloud nodes take no rollouts
                wait_until(
                    lambda: c.rollout_status().state == "completed", 20, "edge acks the rollout"
                )
                assert client.bundle.version == ro.version
                assert client.infer(x).output.shape[0] == 1
                assert c.registry.nodes["edge-a"].bundle_version == ro.version
        finally:
            cagent.stop()
        wait_until(lambda: not c.registry.nodes["cloud-a"].online, 5, "cloud left")
        assert (
            c.registry.nodes["cloud-a"].capabilities["models"]
            == f"digits@{load_bundle(v0).version[:12]}"
        )
