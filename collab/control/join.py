"""Joining a fleet from the ``collab edge`` / ``collab cloud`` daemons.

The daemons stay unaware of MQTT: they call :func:`add_join_args` in ``configure`` and
wrap their serving loop with :func:`edge_agent` / :func:`cloud_agent`. An edge follows the
cloud list from the coordinator (``Client.set_cloud``), applies rollouts with
``Client.swap_bundle`` and publishes per-interval telemetry from ``Client.stats()``.
Cloud nodes announce their endpoint; they do not take rollouts (they serve a fixed set
of bundles), so the coordinator does not target them.
"""

from __future__ import annotations

import argparse
import re
import socket
import tempfile
import threading
from pathlib import Path
from typing import Any, Protocol

from collab.control.agent import AgentConfig, NodeAgent
from collab.control.messages import Telemetry
from collab.control.mqtt import add_mqtt_args, mqtt_config_from_args
from collab.log import logger


class _EdgeClient(Protocol):
    def swap_bundle(self, bundle_dir: Any) -> str: ...
    def set_cloud(self, addresses: Any) -> None: ...
    def stats(self) -> dict[str, Any]: ...


def add_join_args(parser: argparse.ArgumentParser) -> None:
    """``--broker`` (+ credentials/TLS) and the node's fleet identity."""
    add_mqtt_args(parser)
    g = parser.add_argument_group("fleet membership (with --broker)")
    g.add_argument("--node-id", default=None, help="fleet-unique id (default: <role>-<hostname>)")
    g.add_argument("--trust-key", type=Path, default=None,
                   help="coordinator's Ed25519 public key (PEM); without it rollouts are refused")
    g.add_argument("--coordinator-ca", type=Path, default=None, help="CA of a TLS coordinator gRPC endpoint")
    g.add_argument("--work-dir", type=Path, default=None, help="where rolled-out bundles are stored")
    g.add_argument("--heartbeat-interval", type=float, default=5.0, metavar="S")
    g.add_argument("--telemetry-interval", type=float, default=10.0, metavar="S")
    g.add_argument("--advertise", default=None, metavar="HOST:PORT",
                   help="cloud: endpoint edges should use (default: the listen address)")


def _node_id(args: argparse.Namespace, role: str) -> str:
    if args.node_id:
        return str(args.node_id)
    return f"{role}-" + re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:50]


def _agent_config(args: argparse.Namespace, role: str, **kw: Any) -> AgentConfig:
    node_id = _node_id(args, role)
    work = args.work_dir or Path(tempfile.gettempdir()) / f"collab-node-{node_id}"
    return AgentConfig(node_id=node_id, role=role, mqtt=mqtt_config_from_args(args), work_dir=work,
                       trusted_key=args.trust_key, fetch_ca=args.coordinator_ca,
                       heartbeat_interval=args.heartbeat_interval, telemetry_interval=args.telemetry_interval,
                       **kw)


class ClientTelemetry:
    """Per-interval telemetry from the cumulative ``Client.stats()`` counters (the latency
    percentiles are the client's recent window)."""

    def __init__(self, client: _EdgeClient, interval_s: float) -> None:
        self._client = client
        self._interval = interval_s
        self._last: dict[str, Any] = {"requests": 0, "fallbacks": 0, "bytes_sent": 0, "paths": {}}

    def __call__(self) -> Telemetry:
        s = self._client.stats()
        last, self._last = self._last, s
        paths = {k: max(0, int(v) - int(last["paths"].get(k, 0))) for k, v in s.get("paths", {}).items()}
        lat = s.get("latency_ms", {})

        def pct(k: str) -> float:
            v = float(lat.get(k, 0.0))
            return v if v == v else 0.0  # NaN (no requests yet) -> 0

        return Telemetry(node_id="", interval_s=self._interval,
                         requests=max(0, int(s["requests"]) - int(last["requests"])), path_mix=paths,
                         p50_ms=pct("p50"), p95_ms=pct("p95"), p99_ms=pct("p99"),
                         fallbacks=max(0, int(s["fallbacks"]) - int(last["fallbacks"])),
                         bytes_sent=max(0, int(s["bytes_sent"]) - int(last["bytes_sent"])))


class EdgeMembership:
    """The agent of an edge daemon; the Client is attached once it exists, so the cloud
    list from the coordinator can be known before the Client is built."""

    def __init__(self, args: argparse.Namespace, *, bundle_version: str = "") -> None:
        self._client: _EdgeClient | None = None
        self._ready = threading.Event()
        self._telemetry: ClientTelemetry | None = None
        self.agent = NodeAgent(_agent_config(args, "edge", bundle_version=bundle_version),
                               on_swap=self._swap, on_clouds=self._clouds, telemetry=self._tel)

    def start(self) -> EdgeMembership:
        self.agent.start()
        return self

    def initial_clouds(self, timeout: float) -> tuple[str, ...]:
        return self.agent.wait_for_clouds(timeout)

    def attach(self, client: _EdgeClient) -> None:
        self._client = client
        self._telemetry = ClientTelemetry(client, self.agent.config.telemetry_interval)
        self._ready.set()
        clouds = self.agent.cloud_endpoints
        if clouds:
            client.set_cloud(clouds)

    def stop(self) -> None:
        self.agent.stop()

    def _swap(self, path: Path) -> None:
        if not self._ready.wait(60):
            raise RuntimeError("edge runtime not ready")
        assert self._client is not None
        self._client.swap_bundle(path)

    def _clouds(self, endpoints: tuple[str, ...]) -> None:
        if self._client is not None:
            self._client.set_cloud(endpoints)

    def _tel(self) -> Telemetry | None:
        return self._telemetry() if self._telemetry is not None else None


def advertised(listen: str, port: int, advertise: str | None) -> str:
    if advertise:
        return advertise
    host = listen.rpartition(":")[0].strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()
    return f"{host}:{port}"


def cloud_agent(args: argparse.Namespace, *, endpoint: str, bundle_version: str = "",
                model_name: str = "") -> NodeAgent:
    """A started agent announcing this cloud node's endpoint."""
    agent = NodeAgent(_agent_config(args, "cloud", endpoints=(endpoint,), bundle_version=bundle_version,
                                    model_name=model_name))
    agent.start()
    logger.info("cloud node joined the fleet as %s, announcing %s", agent.node_id, endpoint)
    return agent
