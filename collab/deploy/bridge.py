"""The Mosquitto bridge stanza joining a regional broker to the central one.

Mosquitto has no clustering; a region runs its own broker (its edges connect there, its
ACL confines each node to its own topics) and bridges the ``collab/v1/...`` tree to the
central broker the coordinator uses. The topic names are the same on both sides (node ids
are fleet-unique), so no prefix is remapped and the coordinator needs no change: what a
node publishes reaches the coordinator, and the coordinator's retained directives, cloud
list and status reach the node. docs/deploy.md shows the whole setup.
"""

from __future__ import annotations

from pathlib import Path

from collab.control import topics


def bridge_config(
    *,
    name: str,
    address: str,
    username: str | None = None,
    password: str | None = None,
    cafile: Path | None = None,
    restart_timeout_s: int = 2,
) -> str:
    """The lines to append to the regional broker's mosquitto.conf. ``cleansession false``
    keeps the bridge's subscriptions and queued QoS 1 messages on the central broker while
    the bridge is down, so acks and directives sent meanwhile are delivered when it is back;
    retained messages (announces, directives, the cloud list) are re-sent on resubscribe."""
    lines = [
        f"connection {name}",
        f"address {address}",
        # both directions, QoS 1: announces, acks and directives must not be dropped
        f"topic {topics.PREFIX}/# both 1",
        "cleansession false",
        f"local_clientid {name}-local",
        f"remote_clientid {name}",
        f"restart_timeout {restart_timeout_s}",
        "try_private true",  # Mosquitto-to-Mosquitto loop detection
        "bridge_protocol_version mqttv311",
        "notifications false",
    ]
    if username is not None:
        lines.append(f"remote_username {username}")
    if password is not None:
        lines.append(f"remote_password {password}")
    if cafile is not None:
        lines.append(f"bridge_cafile {cafile}")
    return "\n".join(lines) + "\n"
