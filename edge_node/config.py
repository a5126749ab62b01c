"""The edge daemon's configuration, shared by the server, its fleet membership and the CLI."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from collab.client import ClientConfig
from collab.control.mqtt import MqttConfig
from collab.errors import ConfigError
from collab.transport import DEFAULT_MAX_MESSAGE_BYTES, TlsConfig


@dataclass(frozen=True, kw_only=True)
class EdgeConfig:
    """Everything ``collab edge`` accepts; each field is one CLI flag."""

    bundle: Path
    cloud: tuple[str, ...] = ()
    listen: str = "127.0.0.1:50061"
    policy: str = "auto"
    deadline_ms: float | None = None
    accuracy_budget: float = 0.005
    probe_interval_s: float = 1.0
    slowdown: float = 1.0
    metrics_port: int | None = None  # None = no /metrics, 0 = any free port
    workers: int = 8  # gRPC handler threads (concurrent requests)
    tls_cert: Path | None = None  # TLS for the daemon's own listener
    tls_key: Path | None = None
    cloud_ca: Path | None = None  # TLS towards the cloud nodes
    cloud_cert: Path | None = None
    cloud_key: Path | None = None
    cloud_server_name: str | None = None
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    # fleet membership (collab.control): set mqtt to join a coordinator's fleet
    mqtt: MqttConfig | None = None
    node_id: str = ""  # default: edge-<hostname>-<port>
    trusted_key: Path | None = None  # coordinator's Ed25519 public key; None = refuse rollouts
    work_dir: Path | None = None  # where rolled-out bundles are kept (default: a temp dir)
    heartbeat_interval_s: float = 5.0
    telemetry_interval_s: float = 10.0

    def __post_init__(self) -> None:
        host, sep, port = self.listen.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ConfigError(f"bad --listen address {self.listen!r}: expected HOST:PORT")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together")
        if self.workers < 1:
            raise ConfigError("workers must be >= 1")

    def client_config(self) -> ClientConfig:
        tls = (TlsConfig(ca_cert=self.cloud_ca, client_cert=self.cloud_cert, client_key=self.cloud_key,
                         server_name=self.cloud_server_name) if self.cloud_ca is not None else None)
        return ClientConfig(cloud=self.cloud, policy=self.policy, deadline_ms=self.deadline_ms,
                            accuracy_budget=self.accuracy_budget, probe_interval_s=self.probe_interval_s,
                            slowdown=self.slowdown, tls=tls, max_message_bytes=self.max_message_bytes)
