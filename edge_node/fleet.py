"""Fleet membership of an edge node: the coordinator's NodeAgent wired to the Client.

Rollouts swap the client's bundle atomically (in-flight requests finish on the old
one), the coordinator's cloud list replaces the client's cloud addresses (``--cloud``
is only the list to start with), and every
telemetry interval publishes the client's path mix, latency percentiles, fallbacks
and bytes sent.
"""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path

from collab.control import messages as msg
from collab.control import topics
from collab.control.agent import AgentConfig, NodeAgent
from collab.control.transfer import fetch_token
from collab.edge.client import Client
from collab.transport import advertised
from edge_node.canary import VersionMonitor
from edge_node.config import EdgeConfig
from edge_node.watchdog import Watchdog


def telemetry(
    client: Client, watchdog: Watchdog | None = None, monitor: VersionMonitor | None = None
) -> msg.Telemetry:
    t = client.take_interval()
    return msg.Telemetry(
        node_id="",
        interval_s=t.interval_s,
        requests=t.requests,
        path_mix=t.path_mix,
        p50_ms=t.p50_ms,
        p95_ms=t.p95_ms,
        p99_ms=t.p99_ms,
        fallbacks=t.fallbacks,
        bytes_sent=t.bytes_sent,
        recoveries=watchdog.recoveries() if watchdog is not None else {},
        health=watchdog.health() if watchdog is not None else "",
        versions=monitor.take() if monitor is not None else (),
    )


def join_fleet(
    config: EdgeConfig,
    client: Client,
    port: int,
    watchdog: Watchdog | None = None,
    monitor: VersionMonitor | None = None,
) -> NodeAgent:
    assert config.mqtt is not None
    node_id = config.node_id or topics.default_node_id("edge", port)
    # a stable default: the directive high-water mark in it must survive restarts
    work = config.work_dir or Path(tempfile.gettempdir()) / f"collab-{node_id}"

    def on_clouds(addresses: tuple[str, ...]) -> None:
        client.set_cloud(addresses)

    def on_swap(bundle_dir: Path) -> None:
        version = client.swap_bundle(bundle_dir)
        if monitor is not None:
            monitor.served(version, bundle_dir)

    def on_applied(d: msg.RolloutDirective) -> None:  # a canary names its shadow baseline
        if monitor is not None:
            monitor.set_shadow(d.shadow_version, d.shadow_share)

    if monitor is not None:
        monitor.served(client.bundle.version, client.bundle.root)

    agent = NodeAgent(
        AgentConfig(
            node_id=node_id,
            role="edge",
            mqtt=config.mqtt,
            work_dir=work,
            trusted_key=config.trusted_key,
            fetch_token=fetch_token(config.fetch_token_file),
            endpoints=(advertised(config.listen, port, wildcard_host=socket.gethostname()),),
            bundle_version=client.bundle.version,
            model_name=client.bundle.name,
            heartbeat_interval=config.heartbeat_interval_s,
            telemetry_interval=config.telemetry_interval_s,
            capabilities={"policy": config.client.policy, "slowdown": str(config.client.slowdown)},
            telemetry_queue=config.watchdog.telemetry_queue,
        ),
        on_swap=on_swap,
        on_clouds=on_clouds,
        on_applied=on_applied,
        telemetry=lambda: telemetry(client, watchdog, monitor),
    )
    if watchdog is not None:
        watchdog.attach_fleet(
            agent.refetch, broker_up=lambda: agent.connected, dropped=lambda: agent.outbox.dropped
        )
    return agent.start()
