"""``collab edge``: run an edge node daemon until SIGTERM/SIGINT, then drain and exit 0 (or
75 when the watchdog asks its supervisor for a fresh process: edge_node.watchdog).

The flags are derived from the config dataclasses (collab.settings): one per
:class:`collab.ClientConfig` field and one per daemon field of :class:`EdgeConfig`,
with the field's default, so the daemon and the SDK cannot disagree on one.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from collab.control.mqtt import add_mqtt_args, mqtt_config_from_args
from collab.edge.config import ClientConfig
from collab.settings import add_flags, from_args, settings
from collab.signals import stop_on_signals
from collab.transport import TlsConfig
from edge_node.config import EdgeConfig
from edge_node.server import serve
from edge_node.watchdog import EXIT_RESTART
from edge_node.watchdog_config import WatchdogConfig

_FLEET = (
    "node_id",
    "trusted_key",
    "fetch_token_file",
    "work_dir",
    "heartbeat_interval_s",
    "telemetry_interval_s",
)
_DAEMON = settings(EdgeConfig, skip=_FLEET)
_MEMBER = [s for s in settings(EdgeConfig) if s.name in _FLEET]
_CLIENT = settings(ClientConfig)
_WATCHDOG = settings(WatchdogConfig)


def configure(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    parser.add_argument(
        "--bundle", required=True, type=Path, metavar="DIR", help="bundle directory"
    )
    add_flags(parser, _DAEMON)
    add_flags(parser.add_argument_group("requests (collab.ClientConfig)"), _CLIENT)
    add_flags(parser.add_argument_group("self-healing (WatchdogConfig)"), _WATCHDOG)
    g = parser.add_argument_group("TLS towards the cloud nodes (ClientConfig.tls)")
    g.add_argument(
        "--cloud-ca", type=Path, default=None, help="CA that signed the cloud nodes (turns TLS on)"
    )
    g.add_argument(
        "--cloud-cert", type=Path, default=None, help="client certificate towards the cloud"
    )
    g.add_argument("--cloud-key", type=Path, default=None, help="client key towards the cloud")
    g.add_argument(
        "--cloud-server-name", default=None, help="name to verify in the cloud certificate"
    )
    add_mqtt_args(parser)
    add_flags(parser.add_argument_group("fleet membership (with --broker)"), _MEMBER)
    return run


def config_from_args(args: argparse.Namespace) -> EdgeConfig:
    tls = (
        TlsConfig(
            ca_cert=args.cloud_ca,
            client_cert=args.cloud_cert,
            client_key=args.cloud_key,
            server_name=args.cloud_server_name,
        )
        if args.cloud_ca is not None
        else None
    )
    return EdgeConfig(
        bundle=args.bundle,
        client=ClientConfig(tls=tls, **from_args(args, _CLIENT)),
        watchdog=WatchdogConfig(**from_args(args, _WATCHDOG)),
        mqtt=mqtt_config_from_args(args, client_id=args.node_id) if args.broker else None,
        **from_args(args, _DAEMON),
        **from_args(args, _MEMBER),
    )


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    stop = stop_on_signals()
    asked: list[str] = []

    def restart_me(why: str) -> None:  # the watchdog gave up curing a leak in-process
        asked.append(why)
        stop.set()

    with serve(config, escalate=restart_me) as (_server, port):
        print(f"edge node listening on port {port}", flush=True)
        stop.wait()
    return EXIT_RESTART if asked else 0
