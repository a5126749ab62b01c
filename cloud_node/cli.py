"""``collab cloud``: run a cloud node until SIGTERM/SIGINT, then drain and exit 0.

The flags are derived from :class:`CloudConfig` (collab.settings): one per field, with
the field's default; ``--bundle`` repeats for ``bundles``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from cloud_node.config import CloudConfig
from cloud_node.server import serve
from collab.control.join import add_cloud_join_args, cloud_agent
from collab.settings import add_flags, from_args, settings
from collab.signals import stop_on_signals

_CLOUD = settings(CloudConfig)


def configure(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    parser.add_argument(
        "--bundle",
        action="append",
        required=True,
        type=Path,
        metavar="DIR",
        help="bundle directory to serve (repeat for several models)",
    )
    add_flags(parser, _CLOUD)
    add_cloud_join_args(parser)  # --broker ...: announce this node to the fleet coordinator
    return run


def config_from_args(args: argparse.Namespace) -> CloudConfig:
    return CloudConfig(bundles=tuple(args.bundle), **from_args(args, _CLOUD))


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    # before start-up, as in `collab edge`: installed after serve() the handlers missed a
    # SIGTERM sent as soon as the port listened (the node died by the signal, exit -15);
    # a signal during start-up now stops the node, exit 0, as soon as it is up
    stop = stop_on_signals()
    with serve(config) as (server, port):
        print(
            f"collab cloud: serving on port {port}"
            + (f", metrics on port {server.metrics_port}" if server.metrics_port else ""),
            flush=True,
        )
        agent = cloud_agent(args, listen=config.listen, port=port, served=server.handler.served())
        try:
            while not stop.wait(0.5):
                pass
        finally:
            if agent is not None:  # leave the fleet first, so edges stop picking this node
                agent.stop()
    return 0
