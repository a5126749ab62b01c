"""``collab cloud``: run a cloud node until SIGTERM/SIGINT, then drain and exit 0."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from cloud_node.server import CloudConfig, serve
from collab.control.join import add_cloud_join_args, cloud_agent
from collab.signals import stop_on_signals


def configure(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    d = CloudConfig(bundles=(Path("."),))  # defaults, shown in --help
    parser.add_argument("--bundle", action="append", required=True, type=Path, metavar="DIR",
                        help="bundle directory to serve (repeat for several models)")
    parser.add_argument("--listen", default="127.0.0.1:50051", metavar="HOST:PORT",
                        help="gRPC address (port 0 = any free port; default %(default)s)")
    parser.add_argument("--metrics-port", type=int, default=None, metavar="P",
                        help="serve Prometheus /metrics on this port (0 = any free port)")
    parser.add_argument("--max-batch-size", type=int, default=d.max_batch_size, metavar="N",
                        help="samples per batch (1 = no batching; default %(default)s)")
    parser.add_argument("--max-wait-ms", type=float, default=d.max_wait_ms, metavar="T",
                        help="longest a request waits for its batch to fill (default %(default)s)")
    parser.add_argument("--wait-when-idle", action="store_true",
                        help="hold batches open for --max-wait-ms even when no other batch is "
                             "running (default: an unloaded request never waits)")
    parser.add_argument("--workers", type=int, default=d.workers,
                        help="concurrent batches (0 = one per core; default %(default)s)")
    parser.add_argument("--threads", type=int, default=d.threads,
                        help="gRPC handler threads = requests in flight (default %(default)s)")
    parser.add_argument("--intra-threads", type=int, default=d.intra_threads,
                        help="ONNX Runtime threads per batch (default %(default)s)")
    parser.add_argument("--max-message-bytes", type=int, default=d.max_message_bytes,
                        help="gRPC message limit (0 = from the bundles' largest frame)")
    parser.add_argument("--tls-cert", type=Path, default=None, help="server certificate (PEM)")
    parser.add_argument("--tls-key", type=Path, default=None, help="server private key (PEM)")
    parser.add_argument("--tls-client-ca", type=Path, default=None,
                        help="require client certificates signed by this CA (PEM)")
    parser.add_argument("--grace-s", type=float, default=d.grace_s,
                        help="drain time for in-flight requests on shutdown (default %(default)s)")
    add_cloud_join_args(parser)  # --broker ...: announce this node to the fleet coordinator
    return run


def config_from_args(args: argparse.Namespace) -> CloudConfig:
    return CloudConfig(
        bundles=tuple(args.bundle), listen=args.listen, metrics_port=args.metrics_port,
        max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms,
        wait_when_idle=args.wait_when_idle, workers=args.workers,
        threads=args.threads, intra_threads=args.intra_threads, max_message_bytes=args.max_message_bytes,
        tls_cert=args.tls_cert, tls_key=args.tls_key, tls_client_ca=args.tls_client_ca,
        grace_s=args.grace_s)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    # before start-up, as in `collab edge`: installed after serve() the handlers missed a
    # SIGTERM sent as soon as the port listened (the node died by the signal, exit -15);
    # a signal during start-up now stops the node, exit 0, as soon as it is up
    stop = stop_on_signals()
    with serve(config) as (server, port):
        print(f"collab cloud: serving on port {port}"
              + (f", metrics on port {server.metrics_port}" if server.metrics_port else ""),
              flush=True)
        agent = cloud_agent(args, listen=config.listen, port=port, bundles=config.bundles)
        try:
            while not stop.wait(0.5):
                pass
        finally:
            if agent is not None:  # leave the fleet first, so edges stop picking this node
                agent.stop()
    return 0
