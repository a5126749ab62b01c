"""Per-node credentials + ACLs from `collab mqtt-auth` and TLS with a throwaway CA,
against a real Mosquitto."""

from __future__ import annotations

import base64
import hashlib
import os
import time
from pathlib import Path

import pytest
from test_control_support import Swapper, agent_config, coordinator_config, tiny_bundle, wait_until

from collab.cli import main as collab_main
from collab.control import messages as msg
from collab.control import topics
from collab.control.agent import NodeAgent
from collab.control.mqtt import MqttClient, MqttConfig
from collab.errors import AuthError, ControlPlaneError
from collab.procs import mosquitto, mosquitto_binary
from coordinator.cli_auth import mosquitto_hash, write_fleet_auth
from coordinator.daemon import Coordinator
from tests.helpers.certs import make_ca

# mosquitto started as root drops to its own user, which cannot read pytest's 0700 tmp dirs
_ROOT = "user root\n" if os.geteuid() == 0 else ""

pytestmark = pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed")


def test_python_hash_format() -> None:
    h = mosquitto_hash("secret", salt=b"0123456789ab")
    _, seven, iters, salt, dk = h.split("$")
    assert seven == "7" and iters == "101" and base64.b64decode(salt) == b"0123456789ab"
    assert base64.b64decode(dk) == hashlib.pbkdf2_hmac(
        "sha512", b"secret", b"0123456789ab", 101, 64
    )


@pytest.mark.parametrize("use_binary", [False, True], ids=["python-hash", "mosquitto_passwd"])
def test_credentials_and_acls(tmp_path: Path, use_binary: bool) -> None:
    if use_binary:
        assert (
            collab_main(
                ["mqtt-auth", "--out", str(tmp_path / "auth"), "--node", "e1", "--node", "e2"]
            )
            == 0
        )
        pw = {
            u: (tmp_path / "auth" / "credentials" / u).read_text().strip()
            for u in ("coordinator", "fl-aggregator", "e1", "e2")
        }
    else:
        pw = write_fleet_auth(tmp_path / "auth", ["e1", "e2"], use_binary=False)
    conf = (tmp_path / "auth" / "mosquitto.conf").read_text() + _ROOT
    with mosquitto(conf) as b:

        def cfg(user: str, password: str | None = None) -> MqttConfig:
            return MqttConfig(url=b.url, username=user, password=password or pw[user])

        with pytest.raises(AuthError, match="refused"):
            MqttClient(cfg("e1", "wrong")).start(timeout=3)
        with pytest.raises(AuthError, match="refused"):
            MqttClient(MqttConfig(url=b.url)).start(timeout=3)  # anonymous
        with Coordinator(coordinator_config(b.url, tmp_path, mqtt=cfg("coordinator"))) as c:
            a1 = NodeAgent(agent_config(b.url, tmp_path, "e1", mqtt=cfg("e1"))).start()
            try:
                wait_until(
                    lambda: "e1" in c.registry.nodes and c.registry.nodes["e1"].online,
                    5,
                    "e1 registered",
                )
                with MqttClient(
                    cfg("e1", pw["e1"]).__class__(
                        url=b.url, username="e1", password=pw["e1"], client_id="e1-spoofer"
                    )
                ) as raw:
                    # e1's credentials cannot publish under e2's topics: the broker drops it
                    raw.publish(
                        topics.node_topic("e2", topics.ANNOUNCE),
                        msg.announce_to_proto(
                            msg.Announce(node_id="e2", role="edge")
                        ).SerializeToString(),
                        qos=1,
                        wait=5,
                    )
                    # and on its own topic, a payload naming e2 is caught by the coordinator
                    raw.publish(
                        topics.node_topic("e1", topics.HEARTBEAT),
                        msg.heartbeat_to_proto(
                            msg.Heartbeat(node_id="e2", seq=1, sent_at=1)
                        ).SerializeToString(),
                        qos=1,
                        wait=5,
                    )
                    wait_until(
                        lambda: c.rejections.counts.get("id_mismatch") == 1,
                        5,
                        "id mismatch counted",
                    )
                assert "e2" not in c.registry.nodes
                a2 = NodeAgent(agent_config(b.url, tmp_path, "e2", mqtt=cfg("e2"))).start()
                wait_until(lambda: "e2" in c.registry.nodes, 5, "e2 with its own credentials")
                a2.stop()
                # federated learning: a node speaks as an FL client only under its own id
                seen: list[str] = []
                with (
                    MqttClient(cfg("fl-aggregator")) as agg,
                    MqttClient(
                        MqttConfig(url=b.url, username="e1", password=pw["e1"], client_id="e1-fl")
                    ) as fl,
                ):
                    agg.subscribe(
                        "collab/v1/fl/fed/clients/+", lambda t, p, r: seen.append(t), qos=1
                    )
                    time.sleep(0.2)
                    fl.publish("collab/v1/fl/fed/clients/e2", b"{}", qos=1, wait=5)
                    fl.publish("collab/v1/fl/fed/clients/e1", b"{}", qos=1, wait=5)
                    wait_until(lambda: seen, 5, "FL presence")
                assert seen == ["collab/v1/fl/fed/clients/e1"]
            finally:
                a1.stop()


def test_tls_broker_and_grpc(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca")
    server = ca.issue("broker", hosts=("127.0.0.1", "localhost"))
    tls = f"cafile {ca.cert}\ncertfile {server.cert}\nkeyfile {server.key}\n" + _ROOT
    v1 = tiny_bundle(tmp_path / "v1")
    with mosquitto(tls) as b:
        url = f"mqtts://{b.host}:{b.port}"
        mq = MqttConfig(url=url, ca_file=ca.cert)
        with pytest.raises(ControlPlaneError):  # an untrusted server certificate is refused
            MqttClient(MqttConfig(url=url, ca_file=make_ca(tmp_path / "other").cert)).start(
                timeout=3
            )
        grpc_cert = ca.issue("coordinator", hosts=("127.0.0.1",))
        with Coordinator(
            coordinator_config(
                url, tmp_path, mqtt=mq, grpc_tls_cert=grpc_cert.cert, grpc_tls_key=grpc_cert.key
            )
        ) as c:
            swap = Swapper()
            a = NodeAgent(
                agent_config(
                    url,
                    tmp_path,
                    "e1",
                    mqtt=mq,
                    trusted_key=c.public_key_path,
                    fetch_ca=ca.cert,
                    fetch_token=c.fetch_key.token_for("e1"),
                ),
                on_swap=swap,
            ).start()
            try:
                wait_until(lambda: "e1" in c.registry.nodes, 5, "e1 over TLS")
                ro = c.start_rollout(c.upload(v1))
                wait_until(
                    lambda: c.rollout_status().state == "completed", 10, "rollout over TLS gRPC"
                )
                assert swap.loaded == [ro.version]
            finally:
                a.stop()
