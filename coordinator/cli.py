"""``collab coordinator``: run the fleet coordinator until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from collab.control.mqtt import add_mqtt_args, mqtt_config_from_args
from collab.errors import ConfigError
from collab.log import logger
from collab.settings import add_flags, from_args, settings
from collab.signals import stop_on_signals
from coordinator.service import FetchLimits


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
        "--admin-token-file",
        type=Path,
        default=None,
        help="operator API token (mode 0600); default: $COLLAB_ADMIN_TOKEN, else none, "
        "which only a loopback --operator-listen allows",
    )
    parser.add_argument(
        "--metrics-port", type=int, default=None, help="expose Prometheus metrics on this port"
    )
    from coordinator.daemon import CoordinatorConfig

    add_flags(parser, settings(CoordinatorConfig))
    add_flags(parser, settings(FetchLimits))
    return run


def run(args: argparse.Namespace) -> int:
    from collab.transport import parse_address
    from coordinator.auth import admin_token, require_operator_auth
    from coordinator.broker import own_broker
    from coordinator.daemon import Coordinator, CoordinatorConfig

    try:  # before anything starts: an open operator API is a refusal to start, not a warning
        token = admin_token(args.admin_token_file)
        require_operator_auth(args.operator_listen, token)
        limits = FetchLimits(**from_args(args, settings(FetchLimits)))
    except ConfigError as e:
        print(f"collab coordinator: error: {e}", file=sys.stderr)
        return 2
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
            mqtt=mqtt, db=args.db, fetch_limits=limits, admin_token=token, **extra
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
