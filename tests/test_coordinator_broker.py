"""The coordinator's own broker: Mosquitto when installed, else the embedded one; the
embedded broker carries the whole control plane (retained, will, QoS 1, wildcards)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from test_control_support import Swapper, agent_config, coordinator_config, tiny_bundle, wait_until

from collab.control import messages as msg
from collab.control import topics
from collab.control.agent import NodeAgent
from collab.procs import collab_process, free_port, mosquitto_binary
from coordinator.daemon import Coordinator
from coordinator.minibroker import _enc_str, _packet, embedded_broker


def _raw_connect_with_will(port: int, node_id: str) -> socket.socket:
    will = msg.announce_to_proto(msg.Announce(node_id=node_id, role="edge", online=False)).SerializeToString()
    body = (_enc_str("MQTT") + bytes([4, 0x04 | 0x08 | 0x20]) + (30).to_bytes(2, "big") + _enc_str(node_id)
            + _enc_str(topics.node_topic(node_id, topics.ANNOUNCE)) + len(will).to_bytes(2, "big") + will)
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(_packet(0x10, body))
    assert s.recv(4) == b"\x20\x02\x00\x00"
    online = msg.announce_to_proto(msg.Announce(node_id=node_id, role="edge")).SerializeToString()
    s.sendall(_packet(0x31, _enc_str(topics.node_topic(node_id, topics.ANNOUNCE)) + online))
    return s


def test_embedded_broker_runs_the_control_plane(tmp_path: Path) -> None:
    with embedded_broker("127.0.0.1", 0) as url:
        port = int(url.rsplit(":", 1)[1])
        with Coordinator(coordinator_config(url, tmp_path)) as c:
            swap = Swapper()
            a = NodeAgent(agent_config(url, tmp_path, "e1", trusted_key=c.public_key_path), on_swap=swap).start()
            cl = NodeAgent(agent_config(url, tmp_path, "c1", role="cloud", endpoints=("h:1",))).start()
            try:
                assert a.wait_for_clouds(10) == ("h:1",)
                ro = c.start_rollout(c.upload(tiny_bundle(tmp_path / "v1")))
                wait_until(lambda: c.rollout_status().state == "completed", 10, "rollout")
                assert swap.loaded == [ro.version]
                # a connection that drops without DISCONNECT fires its last-will
                raw = _raw_connect_with_will(port, "e9")
                wait_until(lambda: "e9" in c.registry.nodes and c.registry.nodes["e9"].online, 5, "e9 online")
                raw.close()
                wait_until(lambda: not c.registry.nodes["e9"].online, 5, "e9 offline by will")
            finally:
                a.stop()
                cl.stop()


@pytest.mark.parametrize("kind", ["mosquitto", "embedded"])
def test_coordinator_cli_starts_its_own_broker(tmp_path: Path, kind: str) -> None:
    if kind == "mosquitto" and mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed")
    mqtt_port, grpc_port = free_port(), free_port()
    log = tmp_path / "coord.log"
    with collab_process(["coordinator", "--db", str(tmp_path / "r.db"), "--listen", f"127.0.0.1:{grpc_port}",
                         "--own-broker", f"127.0.0.1:{mqtt_port}", "--own-broker-kind", kind], port=grpc_port, log=log):
        url = f"mqtt://127.0.0.1:{mqtt_port}"
        with NodeAgent(agent_config(url, tmp_path, "e1", endpoints=())) as a:
            a.set_endpoints(())
        text = log.read_text()
        assert f"started own broker: {'mosquitto' if kind == 'mosquitto' else 'embedded'}" in text
    wait_until(lambda: "node e1 (edge) online" in log.read_text(), 1, "coordinator saw the node")
