"""Hostile and broken control messages are ignored, counted per cause and logged once;
the coordinator keeps working."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest
from test_control_support import coordinator_config, wait_until

from collab.control import messages as msg
from collab.control import topics
from collab.control.mqtt import MqttClient, MqttConfig
from collab.procs import Broker
from coordinator.daemon import Coordinator


def _announce(node_id: str, role: str = "edge") -> bytes:
    return msg.announce_to_proto(msg.Announce(node_id=node_id, role=role)).SerializeToString()


def _hb(node_id: str) -> bytes:
    return msg.heartbeat_to_proto(
        msg.Heartbeat(node_id=node_id, seq=1, sent_at=1.0)
    ).SerializeToString()


def test_bad_messages_are_counted_and_ignored(
    broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="collab")
    with (
        Coordinator(coordinator_config(broker.url, tmp_path)) as c,
        MqttClient(MqttConfig(url=broker.url)) as raw,
    ):

        def pub(topic: str, payload: bytes) -> None:
            raw.publish(topic, payload, qos=1, wait=5)

        t = topics.node_topic
        pub(t("e1", topics.ANNOUNCE), _announce("e1"))
        wait_until(lambda: "e1" in c.registry.nodes, 5, "e1 registered")
        pub(t("e1", topics.HEARTBEAT), b"\x01" * (c.config.max_payload + 1))  # oversized
        pub(t("e1", topics.ANNOUNCE), b"\xff\xfe\xfd")  # malformed
        pub(t("e1", topics.HEARTBEAT), b"\xff\xfe\xfd")  # malformed again: logged once
        pub("collab/v1/node/e1/nonsense", b"x")  # not subscribed: never reaches the coordinator
        pub("collab/v1/node/e 1/heartbeat", _hb("e 1"))  # bad id in topic
        pub(t("ghost", topics.HEARTBEAT), _hb("ghost"))  # unknown node
        pub(
            t("ghost", topics.TELEMETRY),
            msg.telemetry_to_proto(
                msg.Telemetry(node_id="ghost", interval_s=1)
            ).SerializeToString(),
        )
        pub(t("e1", topics.HEARTBEAT), _hb("e2"))  # payload claims another node
        pub(t("e2", topics.ANNOUNCE), _announce("e1"))  # ... in an announce
        pub(t("e1", topics.ANNOUNCE), _announce("e1", role="cloud"))  # role flip
        pub(
            t("e1", topics.ACK),
            msg.ack_to_proto(
                msg.RolloutAck(node_id="e1", rollout_id="nope", version="v", ok=True)
            ).SerializeToString(),
        )  # ack w/o rollout
        rng = random.Random(0)
        for _ in range(200):  # fuzz every node topic kind
            kind = rng.choice(topics.NODE_KINDS)
            pub(t("e1", kind), bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 64))))
        pub(t("e3", topics.CLOUD_ANNOUNCE), _announce("e3", role="cloud"))  # still works afterwards
        wait_until(lambda: "e3" in c.registry.nodes, 10, "valid announce after garbage")
        counts = c.rejections.counts
        assert counts["oversized"] == 1
        assert counts["bad_topic"] == 1
        assert counts["unknown_node"] == 2
        assert counts["id_mismatch"] == 2
        assert counts["role_conflict"] >= 1
        assert counts["malformed"] >= 2
        assert "e2" not in c.registry.nodes and "ghost" not in c.registry.nodes
        assert c.registry.nodes["e1"].role == "edge"
        logged = [
            r.getMessage()
            for r in caplog.records
            if "ignoring control message (malformed)" in r.getMessage()
        ]
        assert len(logged) == 1
        metric = c.rejections.metrics.get_sample_value(
            "collab_coordinator_rejected_messages_total", {"cause": "unknown_node"}
        )
        assert metric == 2
        # the status snapshot carries the counts for `collab status`
        assert c.fleet_status().rejected["oversized"] == 1
