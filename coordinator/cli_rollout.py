"""``collab rollout``: publish a bundle, show the rollout, roll back — one command each."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from collab.control.messages import RolloutStatus
from coordinator.auth import admin_token
from coordinator.operator_client import CoordinatorClient


def configure(parser: argparse.ArgumentParser) -> Any:
    parser.add_argument(
        "--coordinator",
        default="127.0.0.1:50071",
        help="the coordinator's operator API, HOST:PORT of its --operator-listen "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--ca", type=Path, default=None, help="CA certificate when the coordinator uses TLS"
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        default=None,
        help="operator API token, mode 0600 (default: $COLLAB_ADMIN_TOKEN)",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("publish", help="upload a bundle and roll it out")
    p.add_argument("bundle", type=Path, help="bundle directory")
    p.add_argument(
        "--percent", type=int, default=100, help="staged rollout: share of nodes (1..100)"
    )
    p.add_argument("--upload-only", action="store_true", help="store and sign, do not roll out")
    p.add_argument(
        "--wait", type=float, default=0.0, help="wait up to S seconds for the rollout to settle"
    )
    s = sub.add_parser("start", help="roll out an already stored version")
    s.add_argument("version")
    s.add_argument("--percent", type=int, default=100)
    s.add_argument("--wait", type=float, default=0.0)
    st = sub.add_parser("status", help="show the current rollout")
    st.add_argument("--wait", type=float, default=0.0)
    r = sub.add_parser("rollback", help="roll back to the previous version (or --to VERSION)")
    r.add_argument(
        "--to",
        default="",
        help="version to return to (default: the one before the current rollout)",
    )
    r.add_argument("--wait", type=float, default=0.0)
    return run


def print_rollout(ro: RolloutStatus) -> None:
    print(
        f"rollout {ro.rollout_id}  {ro.model_name} {ro.version[:12]}  {ro.percent}%  state={ro.state}  "
        f"previous={ro.previous_version[:12] or '-'}"
    )
    print(
        f"  acked {ro.count('acked')}  refused {ro.count('refused')}  pending {ro.count('pending')}"
    )
    for n in ro.nodes:
        print(f"  {n.node_id:<24} {n.state:<8} {n.error}")


def _wait(c: CoordinatorClient, ro: RolloutStatus, seconds: float) -> RolloutStatus:
    deadline = time.monotonic() + seconds
    while ro.state == "active" and time.monotonic() < deadline:
        time.sleep(0.2)
        ro = c.status()
    return ro


def run(args: argparse.Namespace) -> int:
    with CoordinatorClient(
        args.coordinator, ca_file=args.ca, token=admin_token(args.token_file)
    ) as c:
        if args.action == "publish":
            up = c.upload(args.bundle)
            print(
                f"stored {up.model_name} {up.version}{' (already stored)' if up.already_stored else ''}"
            )
            if args.upload_only:
                return 0
            ro = c.start(up.version, args.percent)
        elif args.action == "start":
            ro = c.start(args.version, args.percent)
        elif args.action == "rollback":
            ro = c.rollback(args.to)
        else:
            ro = c.status()
        ro = _wait(c, ro, args.wait)
    print_rollout(ro)
    sys.stdout.flush()
    return 1 if ro.state == "failed" else 0
