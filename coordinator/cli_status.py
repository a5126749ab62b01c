"""``collab status``: the fleet table, from the coordinator's retained status snapshot."""

from __future__ import annotations

import argparse
import json
import math
import threading
import time
from dataclasses import asdict
from typing import Any

from google.protobuf.message import DecodeError

from collab.control import messages as msg
from collab.control import topics
from collab.control.mqtt import MqttClient, add_mqtt_args, mqtt_config_from_args
from collab.errors import ControlPlaneError
from collab.proto import control_pb2 as pb
from coordinator.cli_rollout import format_canary


def configure(parser: argparse.ArgumentParser) -> Any:
    add_mqtt_args(parser, broker_required=True)
    parser.add_argument("--timeout", type=float, default=10.0, help="wait this long for a snapshot")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return run


def coordinator_state(client: MqttClient, timeout: float = 1.0) -> str:
    """'online (fetch HOST:PORT)', 'OFFLINE' or 'unknown' from the retained presence topic."""
    got: list[str] = []
    done = threading.Event()

    def on_state(topic: str, payload: bytes, retained: bool) -> None:
        try:
            st = pb.CoordinatorState.FromString(payload)
        except DecodeError:
            return
        got.append(
            f"online (bundle fetch {st.fetch_endpoint})"
            if st.state == pb.STATE_ONLINE
            else "OFFLINE"
        )
        done.set()

    client.subscribe(topics.COORDINATOR_STATE, on_state, qos=1)
    done.wait(timeout)
    return got[-1] if got else "unknown"


def fetch_status(client: MqttClient, timeout: float) -> msg.FleetStatus:
    got: list[msg.FleetStatus] = []
    done = threading.Event()

    def on_status(topic: str, payload: bytes, retained: bool) -> None:
        try:
            got.append(msg.fleet_status_from_bytes(payload))
            done.set()
        except msg.MalformedMessage:
            pass

    client.subscribe(topics.FLEET_STATUS, on_status, qos=0)
    if not done.wait(timeout):
        raise ControlPlaneError(
            f"no fleet status on {topics.FLEET_STATUS} within {timeout}s: is a coordinator running?"
        )
    return got[-1]


def _ms(x: float) -> str:
    return "-" if x == 0 or math.isnan(x) else f"{x:.1f}"


def format_table(fs: msg.FleetStatus) -> str:
    now = time.time()
    head = (
        f"{'NODE':<20} {'ROLE':<5} {'STATE':<7} {'VERSION':<12} {'SEEN':>6} {'REQ':>6} {'P50ms':>7} "
        f"{'P99ms':>7} {'EDGE/SPLIT/CLOUD %':>19} {'FALLBK':>6} {'SENT':>9} HEALTH"
    )
    lines = [head]
    for n in fs.nodes:
        t = n.telemetry
        mix, req, p50, p99, fb, sent, health = "-", "-", "-", "-", "-", "-", "-"
        if t is not None:
            total = sum(t.path_mix.values()) or 1
            mix = "/".join(
                f"{100 * t.path_mix.get(k, 0) / total:.0f}"
                for k in ("edge_only", "split", "cloud_only")
            )
            req, p50, p99 = str(t.requests), _ms(t.p50_ms), _ms(t.p99_ms)
            fb, sent = str(t.fallbacks), f"{t.bytes_sent / 1024:.0f}KiB"
            health = t.health or "-"
        seen = f"{now - n.last_seen:.0f}s" if n.last_seen else "-"
        lines.append(
            f"{n.node_id:<20} {n.role:<5} {'online' if n.online else 'OFFLINE':<7} "
            f"{n.bundle_version[:12] or '-':<12} {seen:>6} {req:>6} {p50:>7} {p99:>7} {mix:>19} "
            f"{fb:>6} {sent:>9} {health}"
        )
    online = sum(n.online for n in fs.nodes)
    more = f" ({fs.omitted} more left out of the snapshot)" if fs.omitted else ""
    lines.append(
        f"{online}/{len(fs.nodes)} nodes online{more}; snapshot {now - fs.updated_at:.1f}s old"
    )
    if fs.rollout is not None:
        r = fs.rollout
        lines.append(
            f"rollout {r.rollout_id} {r.model_name} {r.version[:12]} {r.percent}% {r.state}: "
            f"{r.count('acked')} acked, {r.count('refused')} refused, {r.count('pending')} pending"
        )
    if fs.canary is not None:
        lines += format_canary(fs.canary)
    for n in fs.nodes:  # the edge watchdog's actions (edge_node.watchdog)
        if n.telemetry is not None and n.telemetry.recoveries:
            done = ", ".join(f"{k}={v}" for k, v in sorted(n.telemetry.recoveries.items()))
            lines.append(f"recoveries: {n.node_id}: {done}")
    for node_id, version in sorted(fs.drift.items()):
        lines.append(f"drift: {node_id} serves {version[:12] or '-'}, not the rolled-out version")
    if fs.rejected:
        lines.append(
            "ignored messages: " + ", ".join(f"{k}={v}" for k, v in sorted(fs.rejected.items()))
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    cfg = mqtt_config_from_args(args, client_id="")
    with MqttClient(cfg) as client:
        fs = fetch_status(client, args.timeout)
        state = coordinator_state(client)
    if args.json:
        print(json.dumps({**asdict(fs), "coordinator": state}, indent=2, default=str))
    else:
        print(format_table(fs))
        print(f"coordinator: {state}")
    return 0
