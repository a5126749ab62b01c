"""``collab edge``'s configuration: one :class:`collab.ClientConfig` (how requests are
served) plus what only the daemon has. Every setting of either is one CLI flag
(edge_node.cli derives them from the fields)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from collab.control.mqtt import MqttConfig
from collab.edge.config import ClientConfig
from collab.settings import check_bounds, setting
from collab.transport import check_listener
from edge_node.watchdog_config import WatchdogConfig


@dataclass(frozen=True, kw_only=True)
class EdgeConfig:
    bundle: Path
    client: ClientConfig = field(default_factory=ClientConfig)
    watchdog: WatchdogConfig = field(default_factory=WatchdogConfig)  # self-healing
    # loopback: a daemon reachable off this host must be asked for (--listen 0.0.0.0:50061)
    listen: str = setting(
        "127.0.0.1:50061", help="gRPC address for device apps (port 0 = any)", metavar="HOST:PORT"
    )
    metrics_port: int | None = setting(
        None,
        help="serve Prometheus /metrics on this port (0 = any free port)",
        lo=0,
        hi=65535,
        metavar="P",
    )
    workers: int = setting(8, help="gRPC handler threads (concurrent requests)", lo=1)
    max_concurrent_rpcs: int = setting(
        64, help="calls in progress at most; more are refused (RESOURCE_EXHAUSTED)", lo=1
    )
    tls_cert: Path | None = setting(None, help="TLS certificate of this daemon's listener")
    tls_key: Path | None = setting(None, help="TLS key of this daemon's listener")
    tls_client_ca: Path | None = setting(
        None, help="require device apps' client certificates signed by this CA (PEM)"
    )
    insecure: bool = setting(
        False, help="listen off loopback without client certificates (anyone may ask it)"
    )
    # fleet membership (collab.control): set mqtt (the --broker flags) to join a coordinator's fleet
    mqtt: MqttConfig | None = None
    node_id: str = setting("", help="fleet node id (empty: edge-<hostname>-<port>)")
    trusted_key: Path | None = setting(
        None, help="coordinator's Ed25519 public key (PEM); without it rollouts are refused"
    )
    fetch_token_file: Path | None = setting(
        None,
        help="this node's bundle fetch token, mode 0600 (collab mqtt-auth --fetch-key writes "
        "credentials/<id>.fetch; None: $COLLAB_FETCH_TOKEN)",
    )
    work_dir: Path | None = setting(
        None,
        help="where rolled-out bundles and the directive mark are kept (None: <tmp>/collab-<id>)",
    )
    heartbeat_interval_s: float = setting(
        5.0,
        help="seconds between heartbeats",
        lo=0,
        lo_open=True,
        flag="--heartbeat-interval",
        metavar="S",
    )
    telemetry_interval_s: float = setting(
        10.0,
        help="seconds between telemetry reports",
        lo=0,
        lo_open=True,
        flag="--telemetry-interval",
        metavar="S",
    )

    def __post_init__(self) -> None:
        check_bounds(self)
        check_listener(
            self.listen,
            tls_cert=self.tls_cert,
            tls_key=self.tls_key,
            tls_client_ca=self.tls_client_ca,
            insecure=self.insecure,
            risk="run inference on this device and read its answers",
        )
