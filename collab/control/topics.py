"""The versioned MQTT topic scheme (documented in docs/control-plane.md).

Every topic a node publishes on starts with ``collab/v1/node/{node_id}/`` so a broker ACL
``pattern write collab/v1/node/%u/...`` stops a node from speaking for another node.
Federated learning lives under ``collab/v1/fl/{federation}/``; an FL client's presence
topic ends in its node id, so ``pattern write collab/v1/fl/+/clients/%u`` confines it too.
"""

from __future__ import annotations

import re
import socket

from collab.errors import ConfigError

PREFIX = "collab/v1"
NODE_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

# node -> coordinator
ANNOUNCE = "announce"  # retained, QoS 1, last-will (state OFFLINE)
# a cloud node's announce: the broker ACL lets only cloud credentials write it, and the
# coordinator takes the role from the topic, never from the payload
CLOUD_ANNOUNCE = "cloud-announce"
HEARTBEAT = "heartbeat"  # QoS 0
TELEMETRY = "telemetry"  # QoS 0
ACK = "ack"  # QoS 1
# coordinator -> node
ROLLOUT = "rollout"  # retained, QoS 1
NODE_KINDS = (ANNOUNCE, CLOUD_ANNOUNCE, HEARTBEAT, TELEMETRY, ACK, ROLLOUT)

CLOUDS = f"{PREFIX}/fleet/clouds"  # retained, QoS 1
FLEET_STATUS = f"{PREFIX}/fleet/status"  # retained, QoS 0
COORDINATOR_STATE = f"{PREFIX}/coordinator/state"  # retained, QoS 1, last-will

# what the coordinator subscribes to
NODE_WILDCARD = f"{PREFIX}/node/+/+"

# federated learning, per federation (payloads: protos/fl.proto, collab/fl/messages.py)
FL_PREFIX = f"{PREFIX}/fl"
FL_CLIENTS = (
    "clients"  # clients/{client_id}: retained presence, QoS 1; an empty payload (the will) = gone
)
FL_ROUND = "round"  # aggregator -> clients: retained, QoS 1
FL_MODEL = "model"  # aggregator -> followers: retained, QoS 1, the newest global version and its ε
FL_STATUS = (
    "status"  # aggregator -> all: retained, QoS 1, running / done / budget_exhausted / failed
)
FL_KINDS = (FL_ROUND, FL_MODEL, FL_STATUS)


def check_node_id(node_id: str) -> str:
    if not NODE_ID_RE.match(node_id):
        raise ConfigError(f"invalid node id {node_id!r}: use 1-64 of [A-Za-z0-9_.-]")
    return node_id


def default_node_id(role: str, port: int) -> str:
    """``ROLE-HOSTNAME-PORT``: unique per daemon on a machine, the hostname cut to a node id's alphabet."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:40]
    return f"{role}-{host}-{port}"


def announce_kind(role: str) -> str:
    """The topic kind a node of ``role`` announces on."""
    return CLOUD_ANNOUNCE if role == "cloud" else ANNOUNCE


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


def fl_topic(federation: str, kind: str) -> str:
    """A federation's aggregator-published topic (``round``, ``model`` or ``status``)."""
    if kind not in FL_KINDS:
        raise ValueError(f"unknown FL topic kind {kind!r}")
    return f"{FL_PREFIX}/{federation}/{kind}"


def fl_client_topic(federation: str, client_id: str) -> str:
    return f"{FL_PREFIX}/{federation}/{FL_CLIENTS}/{check_node_id(client_id)}"


def fl_clients_filter(federation: str) -> str:
    return f"{FL_PREFIX}/{federation}/{FL_CLIENTS}/+"


def parse_fl_client_topic(topic: str) -> tuple[str, str] | None:
    """``(federation, client_id)`` of a presence topic, or None when the topic is not one."""
    parts = topic.split("/")
    if len(parts) != 6 or "/".join(parts[:3]) != FL_PREFIX or parts[4] != FL_CLIENTS:
        return None
    if not parts[3] or not NODE_ID_RE.match(parts[5]):
        return None
    return parts[3], parts[5]
