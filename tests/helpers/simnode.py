"""A simulated fleet node: a real process running :class:`NodeAgent` around a bare ONNX
Runtime session, for tests of the control plane without the full edge/cloud daemons.

``python -m tests.helpers.simnode --node-id e1 --role edge --broker mqtt://H:P --work-dir D``
(from the repository root)
It writes ``D/state.json`` after every change (version served, cloud list, last output)
so a test can see what the process actually serves.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
from pathlib import Path

import numpy as np

from collab.bundle import load_bundle
from collab.chain import BundleSessions
from collab.control.agent import AgentConfig, NodeAgent
from collab.control.messages import Telemetry
from collab.control.mqtt import add_mqtt_args, mqtt_config_from_args
from collab.control.transfer import fetch_token
from collab.errors import CollabError
from collab.log import logger, setup_logging
from collab.signals import stop_on_signals


class SimNode:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(args.work_dir)
        self.work.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.state: dict[str, object] = {
            "pid": os.getpid(),
            "version": "",
            "clouds": [],
            "output": None,
        }
        version = ""
        if args.bundle:
            version = self.serve(Path(args.bundle))
        self.agent = NodeAgent(
            AgentConfig(
                node_id=args.node_id,
                role=args.role,
                work_dir=self.work,
                mqtt=mqtt_config_from_args(args),
                trusted_key=args.trusted_key,
                fetch_token=fetch_token(args.fetch_token_file),
                endpoints=tuple(args.endpoint),
                bundle_version=version,
                heartbeat_interval=args.heartbeat,
                telemetry_interval=args.telemetry,
            ),
            on_swap=self.swap,
            on_clouds=self.clouds,
            telemetry=self.telemetry,
        )

    def serve(self, bundle_dir: Path) -> str:
        """Load the bundle and run one inference: proof that this version really serves."""
        b = load_bundle(bundle_dir)
        m = b.manifest
        y = BundleSessions(b).full()(np.zeros(m.input_shape, dtype=np.float32))
        self.update(
            version=b.version, output=np.asarray(y).ravel()[:4].tolist(), model=m.model_name
        )
        return b.version

    def swap(self, bundle_dir: Path) -> None:
        if self.args.swap_delay:
            time.sleep(self.args.swap_delay)
        self.serve(bundle_dir)

    def clouds(self, endpoints: tuple[str, ...]) -> None:
        self.update(clouds=list(endpoints))

    def telemetry(self) -> Telemetry:
        n = random.randint(50, 150)
        split = random.randint(0, n)
        return Telemetry(
            node_id=self.args.node_id,
            interval_s=self.args.telemetry,
            requests=n,
            path_mix={"split": split, "edge_only": n - split},
            p50_ms=random.uniform(3, 6),
            p95_ms=random.uniform(6, 12),
            p99_ms=random.uniform(12, 20),
            fallbacks=random.randint(0, 2),
            bytes_sent=split * 2048,
        )

    def update(self, **kw: object) -> None:
        with self.lock:
            self.state.update(kw)
            tmp = self.work / "state.json.tmp"
            tmp.write_text(json.dumps(self.state))
            os.replace(tmp, self.work / "state.json")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.helpers.simnode", description=__doc__)
    add_mqtt_args(ap, broker_required=True)
    ap.add_argument("--node-id", required=True)
    ap.add_argument("--role", choices=("edge", "cloud"), default="edge")
    ap.add_argument("--work-dir", type=Path, required=True)
    ap.add_argument("--trusted-key", type=Path, default=None, help="coordinator public key (PEM)")
    ap.add_argument("--fetch-token-file", type=Path, default=None, help="bundle fetch token")
    ap.add_argument("--bundle", type=Path, default=None, help="bundle served at start")
    ap.add_argument(
        "--endpoint", action="append", default=[], help="cloud: advertised gRPC endpoint"
    )
    ap.add_argument("--heartbeat", type=float, default=1.0)
    ap.add_argument("--telemetry", type=float, default=2.0)
    ap.add_argument("--swap-delay", type=float, default=0.0, help="seconds a swap takes (tests)")
    args = ap.parse_args(argv)
    setup_logging(os.environ.get("COLLAB_LOG", "WARNING"))
    stop = stop_on_signals()
    try:
        node = SimNode(args)
        node.agent.start()
    except CollabError as e:
        print(f"simnode: error: {e}", file=sys.stderr)
        return 1
    node.update(joined=True)
    stop.wait()
    node.agent.stop()
    logger.info("simnode %s stopped", args.node_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
