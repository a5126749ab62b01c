"""The versioned MQTT topic scheme (documented in docs/control-plane.md).

Every topic a node publishes on starts with ``collab/v1/node/{node_id}/`` so a broker ACL
``pattern write collab/v1/node/%u/...`` stops a node from speaking for another node.
"""

from __future__ import annotations

import re

from collab.errors import ConfigError

PREFIX = "collab/v1"
NODE_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

# node -> coordinator
ANNOUNCE = "announce"  # retained, QoS 1, last-will (state OFFLINE)
HEARTBEAT = "heartbeat"  # QoS 0
TELEMETRY = "telemetry"  # QoS 0
ACK = "ack"  # QoS 1
# coordinator -> node
ROLLOUT = "rollout"  # retained, QoS 1
NODE_KINDS = (ANNOUNCE, HEARTBEAT, TELEMETRY, ACK, ROLLOUT)

CLOUDS = f"{PREFIX}/fleet/clouds"  # retained, QoS 1
FLEET_STATUS = f"{PREFIX}/fleet/status"  # retained, QoS 0
COORDINATOR_STATE = f"{PREFIX}/coordinator/state"  # retained, QoS 1, last-will

# what the coordinator subscribes to
NODE_WILDCARD = f"{PREFIX}/node/+/+"


def check_node_id(node_id: str) -> str:
    if not NODE_ID_RE.match(node_id):
        raise ConfigError(f"invalid node id {node_id!r}: use 1-64 of [A-Za-z0-9_.-]")
    return node_id


def node_topic(node_id: str, kind: str) -> str:
    if kind not in NODE_KINDS:
        raise ValueError(f"unknown node topic kind {kind!r}")
    return f"{PREFIX}/node/{check_node_id(node_id)}/{kind}"


def parse_node_topic(topic: str) -> tuple[str, str] | None:
    """``(node_id, kind)`` of a node topic, or None when the topic is not one."""
    parts = topic.split("/")
    if len(parts) != 5 or f"{parts[0]}/{parts[1]}" != PREFIX or parts[2] != "node":
        return None
    node_id, kind = parts[3], parts[4]
    if kind not in NODE_KINDS or not NODE_ID_RE.match(node_id):
        return None
    return node_id, kind
