"""Joining a fleet from the ``collab cloud`` daemon (the edge daemon wires its own
``NodeAgent`` in ``edge_node/fleet.py``).

Cloud nodes announce the endpoint edges should use; they serve a fixed set of bundles
and take no rollouts, so the coordinator does not target them.
"""

from __future__ import annotations

import argparse
import socket
import tempfile
from collections.abc import Sequence
from pathlib import Path

from collab.control import topics
from collab.control.agent import AgentConfig, NodeAgent
from collab.control.mqtt import add_mqtt_args, mqtt_config_from_args
from collab.log import logger
from collab.transport import advertised


def add_cloud_join_args(parser: argparse.ArgumentParser) -> None:
    """``--broker`` (+ credentials/TLS) and the node's fleet identity."""
    add_mqtt_args(parser)
    g = parser.add_argument_group("fleet membership (with --broker)")
    g.add_argument(
        "--node-id", default="", help="fleet-unique id (default: cloud-<hostname>-<port>)"
    )
    g.add_argument(
        "--advertise",
        default=None,
        metavar="HOST:PORT",
        help="endpoint edges should use (default: the listen address)",
    )
    g.add_argument("--heartbeat-interval", type=float, default=5.0, metavar="S")


def cloud_agent(
    args: argparse.Namespace, *, listen: str, port: int, served: Sequence[tuple[str, str]] = ()
) -> NodeAgent | None:
    """A started agent announcing this cloud node and the (model name, bundle version)
    pairs it ``served``, or None without ``--broker``."""
    if not args.broker:
        return None
    node_id = args.node_id or topics.default_node_id("cloud", port)
    endpoint = args.advertise or advertised(listen, port, wildcard_host=socket.gethostname())
    agent = NodeAgent(
        AgentConfig(
            node_id=node_id,
            role="cloud",
            mqtt=mqtt_config_from_args(args, client_id=node_id),
            work_dir=Path(tempfile.gettempdir()) / f"collab-{node_id}",
            endpoints=(endpoint,),
            bundle_version=served[0][1] if served else "",
            model_name=served[0][0] if served else "",
            capabilities={"models": ",".join(f"{n}@{v[:12]}" for n, v in served)},
            heartbeat_interval=args.heartbeat_interval,
        )
    )
    agent.start()
    logger.info(
        "cloud node joined the fleet at %s as %s, announcing %s", args.broker, node_id, endpoint
    )
    return agent
