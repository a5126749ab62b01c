"""``collab rollout``: publish a bundle (at once, staged, or as a canary judged by a
significance test), show the rollout, roll back — one command each."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

from collab.control import canary as cn
from collab.control.messages import RolloutStatus
from collab.errors import ConfigError, ControlPlaneError
from collab.proto import control_pb2 as pb
from collab.settings import add_flags, from_args, settings
from coordinator.auth import admin_token
from coordinator.canary import load_windows
from coordinator.canary_decision import replay
from coordinator.db import Database
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
    p = sub.add_parser(
        "publish",
        help="upload a bundle and roll it out",
        description="Upload a bundle and roll it out: to every edge, to --percent of them, "
        "or as a canary (--canary 5%%): the candidate goes to a seeded random share of the "
        "live edges, which also run the baseline on a sampled shadow share; each step is "
        "judged once its sample is complete (one-sided tests, Holm-corrected) and "
        "promoted to the next step or rolled back automatically, with the reason.",
    )
    p.add_argument("bundle", type=Path, help="bundle directory")
    p.add_argument(
        "--percent", type=int, default=100, help="staged rollout: share of nodes (1..100)"
    )
    p.add_argument("--upload-only", action="store_true", help="store and sign, do not roll out")
    p.add_argument(
        "--wait",
        type=float,
        default=0.0,
        help="wait up to S seconds for the rollout to settle (a canary: for its outcome)",
    )
    _canary_flags(p)
    s = sub.add_parser("start", help="roll out an already stored version (or canary it)")
    s.add_argument("version")
    s.add_argument("--percent", type=int, default=100)
    s.add_argument("--wait", type=float, default=0.0)
    _canary_flags(s)
    rp = sub.add_parser(
        "replay",
        help="recompute a canary's decisions from the telemetry it recorded (offline)",
        description="Read the coordinator's database (no coordinator needed), recompute "
        "every decision of a canary from its recorded telemetry windows and compare them "
        "with the recorded ones; exit 1 when one differs.",
    )
    rp.add_argument("--db", type=Path, required=True, help="the coordinator's registry database")
    rp.add_argument("--canary-id", default="", help="which canary (default: the latest)")
    st = sub.add_parser("status", help="show the current rollout (and the latest canary)")
    st.add_argument("--wait", type=float, default=0.0)
    r = sub.add_parser("rollback", help="roll back to the previous version (or --to VERSION)")
    r.add_argument(
        "--to",
        default="",
        help="version to return to (default: the one before the current rollout)",
    )
    r.add_argument("--wait", type=float, default=0.0)
    return run


def _share(text: str) -> float:
    try:
        return cn.parse_share(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


_PLAN = settings(cn.CanaryPlan, skip=("share",))


def _canary_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("canary (with --canary)")
    g.add_argument(
        "--canary",
        type=_share,
        default=None,
        metavar="P%",
        help="canary rollout: the first step's share of the live edges, in (0, 100]",
    )
    add_flags(g, _PLAN)


def canary_plan(args: argparse.Namespace) -> cn.CanaryPlan | None:
    """The plan the flags ask for (ConfigError for a bad one, before anything is sent)."""
    if getattr(args, "canary", None) is None:
        return None
    return cn.CanaryPlan(share=args.canary, **from_args(args, _PLAN))


def format_canary(c: cn.CanaryRecord) -> list[str]:
    """The canary record as lines: seed, steps, every decision with its tests."""
    steps = " -> ".join(f"{p:g}%" for p in c.steps)
    lines = [
        f"canary {c.canary_id}  {c.model_name} {c.version[:12]} vs baseline "
        f"{c.baseline_version[:12] or '-'}  state={c.state}  step {c.step} of {steps}",
        f"  seed {c.seed}  canary nodes {','.join(c.canary_nodes) or '-'}  "
        f"metrics {','.join(c.plan.metrics)}  min requests {c.plan.min_requests}  "
        f"alpha {c.plan.alpha:g} (Holm)  ignored windows {c.ignored_windows}",
    ]
    for d in c.decisions:
        lines.append(
            f"  step {d.step} ({c.steps[d.step]:g}%): {d.action.upper()}"
            f"{' (timeout)' if d.timeout else ''}: {d.reason}"
        )
        for t in d.tests:
            lines.append(
                f"    {t.metric:<12} {t.test:<16} stat={t.statistic:.4g} p={t.p_value:.4g}"
                f"{' REJECTED' if t.rejected else ''}  n={t.n_candidate}/{t.n_baseline}  "
                f"{t.detail}"
            )
    return lines


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


def _wait_canary(c: CoordinatorClient, rec: cn.CanaryRecord, seconds: float) -> cn.CanaryRecord:
    deadline = time.monotonic() + seconds
    while rec.state == "running" and time.monotonic() < deadline:
        time.sleep(0.3)
        rec = c.canary()
    return rec


def _canary(c: CoordinatorClient, version: str, plan: cn.CanaryPlan, wait: float) -> int:
    rec = _wait_canary(c, c.start_canary(version, plan), wait)
    print("\n".join(format_canary(rec)))
    sys.stdout.flush()
    return 1 if rec.state == "rolled_back" else 0


def replay_record(db_path: Path, canary_id: str = "") -> int:
    """Print a canary's recorded decisions beside the ones its windows give; 1 if any differ."""
    if not db_path.is_file():
        raise ConfigError(f"no database at {db_path}")
    db = Database(db_path)
    try:
        rows = db.read(
            "SELECT canary_id, record FROM canaries WHERE canary_id=? OR ?='' "
            "ORDER BY started_at DESC LIMIT 1",
            (canary_id, canary_id),
        )
        if not rows:
            raise ConfigError(f"no canary {canary_id or '(any)'} recorded in {db_path}")
        rec = cn.record_from_proto(pb.CanaryRecord.FromString(rows[0]["record"]))
        windows = load_windows(db, rec.canary_id)
    finally:
        db.conn.close()
    print("\n".join(format_canary(rec)))
    again = replay(rec, windows)
    same = [dataclasses.replace(a, decided_at=0.0) for a in again] == [
        dataclasses.replace(d, decided_at=0.0) for d in rec.decisions
    ]
    print(
        f"replayed {len(again)} decision(s) from {len(windows)} recorded windows: "
        + ("identical" if same else "DIFFERENT")
    )
    if not same:
        for a in again:
            print(f"  replayed step {a.step}: {a.action}: {a.reason}")
    return 0 if same else 1


def run(args: argparse.Namespace) -> int:
    if args.action == "replay":
        return replay_record(args.db, args.canary_id)
    plan = canary_plan(args)  # refused here, before anything is uploaded
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
            if plan is not None:
                return _canary(c, up.version, plan, args.wait)
            ro = c.start(up.version, args.percent)
        elif args.action == "start":
            if plan is not None:
                return _canary(c, args.version, plan, args.wait)
            ro = c.start(args.version, args.percent)
        elif args.action == "rollback":
            ro = c.rollback(args.to)
        else:
            ro = c.status()
            try:
                canary: cn.CanaryRecord | None = c.canary()
            except ControlPlaneError:  # none yet
                canary = None
        ro = _wait(c, ro, args.wait)
    print_rollout(ro)
    if args.action == "status" and canary is not None:
        print("\n".join(format_canary(canary)))
    sys.stdout.flush()
    return 1 if ro.state == "failed" else 0
