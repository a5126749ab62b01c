"""``collab coordinator``: run the fleet coordinator until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from collab.control.mqtt import add_mqtt_args, mqtt_config_from_args
from collab.log import logger
from collab.settings import add_flags, from_args, settings
from collab.signals import stop_on_signals


def configure(parser: argparse.ArgumentParser) -> Any:
    add_mqtt_args(parser)
    parser.add_argument(
        "--own-broker",
        default="127.0.0.1:1883",
        metavar="HOST:PORT",
        help="where to run Mosquitto when --broker is not given (default %(default)s)",
    )
    parser.add_argument(
        "--db", type=Path, required=True, help="SQLite registry (created, WAL mode)"
    )
    parser.add_argument(
        "--bundle-store",
        type=Path,
        default=None,
        help="bundle store dir (default: <db dir>/bundles)",
    )
    parser.add_argument(
        "--signing-key",
        type=Path,
        default=None,
        help="Ed25519 key (PEM), created on first start; nodes trust <key>.pub "
        "(default: <db dir>/coordinator.ed25519)",
    )
    parser.add_argument(
        "--listen", default="127.0.0.1:50070", help="gRPC bundle fetch + operator API"
    )
    parser.add_argument(
        "--advertise", default=None, help="host:port nodes fetch bundles from (default: --listen)"
    )
    parser.add_argument(
        "--heartbeat-timeout", type=float, default=15.0, help="seconds without heartbeat -> offline"
    )
    parser.add_argument(
        "--status-interval", type=float, default=2.0, help="fleet status publish period (s)"
    )
    parser.add_argument(
        "--grpc-tls-cert", type=Path, default=None, help="serve gRPC with TLS (cert PEM)"
    )
    parser.add_argument("--grpc-tls-key", type=Path, default=None, help="TLS key PEM")
    parser.add_argument(
        "--admin-token-file",
        type=Path,
        default=None,
        help="require this token from `collab rollout` (operator API); default: none",
    )
    parser.add_argument(
        "--metrics-port", type=int, default=None, help="expose Prometheus metrics on this port"
    )
    from coordinator.daemon import CoordinatorConfig

    add_flags(parser, settings(CoordinatorConfig))
    return run


def run(args: argparse.Namespace) -> int:
    from collab.transport import parse_address
    from coordinator.broker import own_broker
    from coordinator.cli_rollout import read_token
    from coordinator.daemon import Coordinator, CoordinatorConfig

    stop = stop_on_signals()
    with ExitStack() as stack:
        extra = from_args(args, settings(CoordinatorConfig))
        if args.broker is None:
            mqtt = stack.enter_context(
                own_broker(
                    *parse_address(args.own_broker, allow_zero=True),
                    auth_dir=extra["broker_auth"] or Path(args.db).parent / "mqtt-auth",
                    anonymous=extra["allow_anonymous_broker"],
                )
            )
        else:
            logger.info("using external broker %s", args.broker)
            mqtt = mqtt_config_from_args(args)
        cfg = CoordinatorConfig(
            mqtt=mqtt,
            db=args.db,
            bundle_store=args.bundle_store,
            signing_key=args.signing_key,
            listen=args.listen,
            advertise=args.advertise,
            heartbeat_timeout=args.heartbeat_timeout,
            status_interval=args.status_interval,
            grpc_tls_cert=args.grpc_tls_cert,
            grpc_tls_key=args.grpc_tls_key,
            admin_token=read_token(args.admin_token_file) if args.admin_token_file else None,
            **extra,
        )
        coord = stack.enter_context(Coordinator(cfg))
        if args.metrics_port is not None:
            from prometheus_client import start_http_server

            start_http_server(args.metrics_port, registry=coord.metrics)
            logger.info("Prometheus metrics on port %d", args.metrics_port)
        while not stop.wait(0.5):
            pass
        logger.info("coordinator shutting down")
    return 0
