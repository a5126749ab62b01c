"""``collab edge``: run an edge node daemon until SIGTERM/SIGINT, then drain and exit 0."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from collab.control.mqtt import add_mqtt_args, mqtt_config_from_args
from collab.signals import stop_on_signals
from edge_node.config import EdgeConfig
from edge_node.server import serve


def configure(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    d = EdgeConfig(bundle=Path("."))
    parser.add_argument("--bundle", required=True, type=Path, metavar="DIR", help="bundle directory")
    parser.add_argument("--cloud", default="", metavar="HOST:PORT[,HOST:PORT]",
                        help="cloud node addresses (round-robin); empty = edge-only")
    parser.add_argument("--listen", default=d.listen, metavar="HOST:PORT",
                        help="gRPC address for device apps (port 0 = any; default %(default)s)")
    parser.add_argument("--policy", default=d.policy, help="auto | edge_only | cloud_only | split:<name>")
    parser.add_argument("--deadline-ms", type=float, default=None, help="default per-request deadline")
    parser.add_argument("--accuracy-budget", type=float, default=d.accuracy_budget,
                        help="max top-1 agreement loss for lossy codecs/variants (default %(default)s)")
    parser.add_argument("--probe-interval", type=float, default=d.probe_interval_s, metavar="S",
                        help="seconds between network probes (default %(default)s)")
    parser.add_argument("--slowdown", type=float, default=d.slowdown,
                        help="emulate a weaker device: pad edge compute to this factor (default 1)")
    parser.add_argument("--metrics-port", type=int, default=None, metavar="P",
                        help="serve Prometheus /metrics on this port (0 = any free port)")
    parser.add_argument("--workers", type=int, default=d.workers, help="concurrent requests")
    parser.add_argument("--tls-cert", type=Path, default=None, help="TLS certificate of this daemon")
    parser.add_argument("--tls-key", type=Path, default=None, help="TLS key of this daemon")
    parser.add_argument("--cloud-ca", type=Path, default=None, help="CA that signed the cloud nodes (TLS)")
    parser.add_argument("--cloud-cert", type=Path, default=None, help="client certificate towards the cloud")
    parser.add_argument("--cloud-key", type=Path, default=None, help="client key towards the cloud")
    parser.add_argument("--cloud-server-name", default=None, help="name to verify in the cloud certificate")
    add_mqtt_args(parser)
    g = parser.add_argument_group("fleet membership (with --broker)")
    g.add_argument("--node-id", default="", help="fleet node id (default edge-<hostname>-<port>)")
    g.add_argument("--trusted-key", type=Path, default=None,
                   help="coordinator's Ed25519 public key (PEM); without it rollouts are refused")
    g.add_argument("--work-dir", type=Path, default=None, help="where rolled-out bundles are stored")
    g.add_argument("--heartbeat-interval", type=float, default=d.heartbeat_interval_s, metavar="S")
    g.add_argument("--telemetry-interval", type=float, default=d.telemetry_interval_s, metavar="S")
    return run


def config_from_args(args: argparse.Namespace) -> EdgeConfig:
    return EdgeConfig(
        bundle=args.bundle, cloud=tuple(a.strip() for a in args.cloud.split(",") if a.strip()),
        listen=args.listen, policy=args.policy, deadline_ms=args.deadline_ms,
        accuracy_budget=args.accuracy_budget, probe_interval_s=args.probe_interval, slowdown=args.slowdown,
        metrics_port=args.metrics_port, workers=args.workers, tls_cert=args.tls_cert, tls_key=args.tls_key,
        cloud_ca=args.cloud_ca, cloud_cert=args.cloud_cert, cloud_key=args.cloud_key,
        cloud_server_name=args.cloud_server_name,
        mqtt=mqtt_config_from_args(args, client_id=args.node_id) if args.broker else None,
        node_id=args.node_id, trusted_key=args.trusted_key, work_dir=args.work_dir,
        heartbeat_interval_s=args.heartbeat_interval, telemetry_interval_s=args.telemetry_interval)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    stop = stop_on_signals()
    with serve(config) as (_server, port):
        print(f"edge node listening on port {port}", flush=True)
        stop.wait()
    return 0
