"""Control-plane domain types and their protobuf codecs (``x_to_proto`` / ``x_from_proto``).

Decoding is the trust boundary for MQTT payloads: every ``*_from_bytes`` raises only
:class:`MalformedMessage`, so a receiver can count and drop bad input in one place. The
helpers of that boundary (``parse_message``, ``valid_node_id``, ``finite``) are shared
with the FL messages (collab/fl/messages.py), which travel on the same bus.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from collab.control import canary as cn
from collab.control.topics import NODE_ID_RE
from collab.errors import MalformedMessage
from collab.proto import control_pb2 as pb

ROLES = ("edge", "cloud")
_ROLE_TO_PB = {"edge": pb.ROLE_EDGE, "cloud": pb.ROLE_CLOUD}
_ROLE_FROM_PB = {v: k for k, v in _ROLE_TO_PB.items()}
MAX_LIST = 256  # endpoints / capabilities / path-mix entries a message may carry
MAX_NODE_ENDPOINTS = 16  # gRPC addresses one node may announce
MAX_CLOUDS = 64  # cloud endpoints the coordinator publishes; edges use at most this many
MAX_HEALTH_LEN = 256  # a telemetry's health string
MAX_ENDPOINT_LEN = 261  # a 253-character host name, ':' and a 5-digit port (+ IPv6 brackets)
_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")


@dataclass(frozen=True, kw_only=True)
class Announce:
    node_id: str
    role: str
    online: bool = True
    capabilities: Mapping[str, str] = field(default_factory=dict)
    bundle_version: str = ""
    endpoints: tuple[str, ...] = ()
    model_name: str = ""
    sent_at: float = 0.0


@dataclass(frozen=True, kw_only=True)
class Heartbeat:
    node_id: str
    seq: int
    sent_at: float
    bundle_version: str = ""


@dataclass(frozen=True, kw_only=True)
class Telemetry:
    """One interval of an edge node's serving statistics."""

    node_id: str
    interval_s: float
    requests: int = 0
    path_mix: Mapping[str, int] = field(default_factory=dict)
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    fallbacks: int = 0
    bytes_sent: int = 0
    sent_at: float = 0.0
    versions: tuple[cn.VersionTelemetry, ...] = ()  # per version served (canary rollouts)
    recoveries: Mapping[str, int] = field(default_factory=dict)  # watchdog actions since start
    health: str = ""  # the watchdog's modes now ("ok", "offline", "degraded:<variant>")


@dataclass(frozen=True, kw_only=True)
class RolloutDirective:
    """What the coordinator asks one node to serve; every field is covered by the signature
    of the :class:`SignedDirective` it travels in."""

    rollout_id: str
    version: str
    sequence: int  # strictly increasing per coordinator: a node refuses one <= its mark
    target: str  # the node id this directive is for
    fetch_endpoint: str
    expires_at: float
    model_name: str = ""
    issued_at: float = 0.0
    file_sizes: Mapping[str, int] = field(default_factory=dict)  # manifest + files -> bytes
    shadow_version: str = ""  # canary: also run this version on a sampled shadow share
    shadow_share: float = 0.0


@dataclass(frozen=True, kw_only=True)
class SignedDirective:
    """A directive as it travels: the exact statement bytes that were signed, and the
    signature. ``directive`` is decoded from ``statement`` (trust it only once verified)."""

    statement: bytes
    signature: bytes
    directive: RolloutDirective


@dataclass(frozen=True, kw_only=True)
class RolloutAck:
    node_id: str
    rollout_id: str
    version: str
    ok: bool
    error: str = ""
    sent_at: float = 0.0


@dataclass(frozen=True, kw_only=True)
class NodeRolloutState:
    node_id: str
    state: str  # pending | acked | refused
    error: str = ""


@dataclass(frozen=True, kw_only=True)
class RolloutStatus:
    rollout_id: str
    version: str
    previous_version: str
    percent: int
    state: str  # active | completed | failed | superseded
    created_at: float
    nodes: tuple[NodeRolloutState, ...] = ()
    model_name: str = ""

    def count(self, state: str) -> int:
        return sum(1 for n in self.nodes if n.state == state)


@dataclass(frozen=True, kw_only=True)
class NodeStatus:
    node_id: str
    role: str
    online: bool
    bundle_version: str
    endpoints: tuple[str, ...]
    last_seen: float
    telemetry: Telemetry | None = None


@dataclass(frozen=True, kw_only=True)
class FleetStatus:
    nodes: tuple[NodeStatus, ...]
    rollout: RolloutStatus | None
    updated_at: float
    rejected: Mapping[str, int] = field(default_factory=dict)
    drift: Mapping[str, str] = field(default_factory=dict)  # node -> version it reports instead
    omitted: int = 0  # nodes left out to keep the snapshot within its byte budget
    canary: cn.CanaryRecord | None = None  # the latest canary rollout


# ---------------------------------------------------------------- the decode boundary

M = TypeVar("M", bound=Message)


def parse_message(cls: type[M], data: bytes) -> M:
    """Parse an MQTT payload; any protobuf failure becomes :class:`MalformedMessage`."""
    msg = cls()
    try:
        msg.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as e:  # RuntimeError: recursion limits
        raise MalformedMessage(f"{cls.__name__}: {e}") from e
    return msg


def valid_node_id(node_id: str) -> str:
    if not NODE_ID_RE.match(node_id):
        raise MalformedMessage(f"invalid node id {node_id[:80]!r}")
    return node_id


def finite(x: float, what: str) -> float:
    if not math.isfinite(x):
        raise MalformedMessage(f"{what} is not finite")
    return x


def valid_endpoint(endpoint: str) -> str:
    """``host:port`` or ``[v6]:port`` a gRPC channel can dial: a DNS name or an IP, port
    1-65535; no scheme, path, user info or whitespace. MalformedMessage otherwise."""
    bad = MalformedMessage(f"invalid endpoint {endpoint[:80]!r}: expected HOST:PORT")
    if len(endpoint) > MAX_ENDPOINT_LEN:
        raise bad
    host, sep, port = endpoint.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise bad
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise bad from None
        return endpoint
    labels = host.split(".")
    if len(host) > 253 or not all(_HOST_LABEL.match(label) for label in labels):
        raise bad
    return endpoint


def valid_endpoints(endpoints: Iterable[str], limit: int) -> tuple[tuple[str, ...], int]:
    """The first ``limit`` valid endpoints (in order, without repeats) and how many entries
    were skipped: one bad entry never costs the good ones."""
    good: list[str] = []
    skipped = 0
    for e in endpoints:
        try:
            valid_endpoint(e)
        except MalformedMessage:
            skipped += 1
            continue
        if e in good:
            continue
        if len(good) == limit:
            skipped += 1
            continue
        good.append(e)
    return tuple(good), skipped


def _bounded(items: int, what: str) -> None:
    if items > MAX_LIST:
        raise MalformedMessage(f"too many {what} ({items} > {MAX_LIST})")


# ---------------------------------------------------------------- codecs


def announce_to_proto(a: Announce) -> pb.NodeAnnounce:
    return pb.NodeAnnounce(
        node_id=a.node_id,
        role=_ROLE_TO_PB[a.role],
        state=pb.STATE_ONLINE if a.online else pb.STATE_OFFLINE,
        capabilities=dict(a.capabilities),
        bundle_version=a.bundle_version,
        endpoints=list(a.endpoints),
        sent_at=a.sent_at,
        model_name=a.model_name,
    )


def announce_from_proto(m: pb.NodeAnnounce) -> Announce:
    if m.role not in _ROLE_FROM_PB:
        raise MalformedMessage(f"unknown role {m.role}")
    if m.state not in (pb.STATE_ONLINE, pb.STATE_OFFLINE):
        raise MalformedMessage(f"unknown state {m.state}")
    if len(m.endpoints) > MAX_NODE_ENDPOINTS:
        raise MalformedMessage(f"too many endpoints ({len(m.endpoints)} > {MAX_NODE_ENDPOINTS})")
    _bounded(len(m.capabilities), "capabilities")
    for e in m.endpoints:
        valid_endpoint(e)
    return Announce(
        node_id=valid_node_id(m.node_id),
        role=_ROLE_FROM_PB[m.role],
        online=m.state == pb.STATE_ONLINE,
        capabilities=dict(m.capabilities),
        bundle_version=m.bundle_version,
        endpoints=tuple(m.endpoints),
        model_name=m.model_name,
        sent_at=finite(m.sent_at, "sent_at"),
    )


def heartbeat_to_proto(h: Heartbeat) -> pb.Heartbeat:
    return pb.Heartbeat(
        node_id=h.node_id, seq=h.seq, sent_at=h.sent_at, bundle_version=h.bundle_version
    )


def heartbeat_from_proto(m: pb.Heartbeat) -> Heartbeat:
    return Heartbeat(
        node_id=valid_node_id(m.node_id),
        seq=m.seq,
        sent_at=finite(m.sent_at, "sent_at"),
        bundle_version=m.bundle_version,
    )


def telemetry_to_proto(t: Telemetry) -> pb.Telemetry:
    return pb.Telemetry(
        node_id=t.node_id,
        interval_s=t.interval_s,
        requests=t.requests,
        path_mix=dict(t.path_mix),
        p50_ms=t.p50_ms,
        p95_ms=t.p95_ms,
        p99_ms=t.p99_ms,
        fallbacks=t.fallbacks,
        bytes_sent=t.bytes_sent,
        sent_at=t.sent_at,
        versions=[cn.version_telemetry_to_proto(v) for v in t.versions],
        recoveries=dict(t.recoveries),
        health=t.health,
    )


def telemetry_from_proto(m: pb.Telemetry) -> Telemetry:
    _bounded(len(m.path_mix), "path_mix entries")
    _bounded(len(m.recoveries), "recoveries entries")
    if len(m.health) > MAX_HEALTH_LEN:
        raise MalformedMessage(f"health longer than {MAX_HEALTH_LEN} characters")
    for what in ("interval_s", "p50_ms", "p95_ms", "p99_ms", "sent_at"):
        finite(getattr(m, what), what)
    return Telemetry(
        node_id=valid_node_id(m.node_id),
        interval_s=m.interval_s,
        requests=m.requests,
        path_mix=dict(m.path_mix),
        p50_ms=m.p50_ms,
        p95_ms=m.p95_ms,
        p99_ms=m.p99_ms,
        fallbacks=m.fallbacks,
        bytes_sent=m.bytes_sent,
        sent_at=m.sent_at,
        versions=cn.versions_from_proto(list(m.versions)),
        recoveries=dict(m.recoveries),
        health=m.health,
    )


def directive_statement(d: RolloutDirective) -> bytes:
    """The bytes a coordinator signs for ``d``."""
    return pb.DirectiveStatement(
        rollout_id=d.rollout_id,
        version=d.version,
        model_name=d.model_name,
        sequence=d.sequence,
        target=d.target,
        issued_at=d.issued_at,
        expires_at=d.expires_at,
        fetch_endpoint=d.fetch_endpoint,
        file_sizes=dict(d.file_sizes),
        shadow_version=d.shadow_version,
        shadow_share=d.shadow_share,
    ).SerializeToString(deterministic=True)


def directive_to_proto(sd: SignedDirective) -> pb.RolloutDirective:
    return pb.RolloutDirective(statement=sd.statement, signature=sd.signature)


def directive_from_proto(m: pb.RolloutDirective) -> SignedDirective:
    s = parse_message(pb.DirectiveStatement, m.statement)
    if len(s.version) != 64 or not s.rollout_id or not s.fetch_endpoint or not s.sequence:
        raise MalformedMessage(
            "rollout directive lacks version, rollout_id, fetch_endpoint or sequence"
        )
    _bounded(len(s.file_sizes), "file sizes")
    d = RolloutDirective(
        rollout_id=s.rollout_id,
        version=s.version,
        sequence=s.sequence,
        target=valid_node_id(s.target),
        fetch_endpoint=s.fetch_endpoint,
        expires_at=finite(s.expires_at, "expires_at"),
        model_name=s.model_name,
        issued_at=finite(s.issued_at, "issued_at"),
        file_sizes=dict(s.file_sizes),
        shadow_version=s.shadow_version,
        shadow_share=finite(s.shadow_share, "shadow_share"),
    )
    return SignedDirective(statement=m.statement, signature=bytes(m.signature), directive=d)


def ack_to_proto(a: RolloutAck) -> pb.RolloutAck:
    return pb.RolloutAck(
        node_id=a.node_id,
        rollout_id=a.rollout_id,
        version=a.version,
        ok=a.ok,
        error=a.error,
        sent_at=a.sent_at,
    )


def ack_from_proto(m: pb.RolloutAck) -> RolloutAck:
    if not m.rollout_id:
        raise MalformedMessage("ack without rollout_id")
    return RolloutAck(
        node_id=valid_node_id(m.node_id),
        rollout_id=m.rollout_id,
        version=m.version,
        ok=m.ok,
        error=m.error[:1000],
        sent_at=finite(m.sent_at, "sent_at"),
    )


def clouds_to_proto(endpoints: tuple[str, ...], updated_at: float) -> pb.CloudEndpoints:
    return pb.CloudEndpoints(endpoints=list(endpoints), updated_at=updated_at)


def clouds_from_proto(m: pb.CloudEndpoints) -> tuple[tuple[str, ...], int]:
    """The valid endpoints of a cloud list (at most :data:`MAX_CLOUDS`, the freshest come
    first) and how many entries were skipped as invalid or beyond the cap."""
    return valid_endpoints(m.endpoints, MAX_CLOUDS)


def rollout_status_to_proto(r: RolloutStatus) -> pb.RolloutStatus:
    return pb.RolloutStatus(
        rollout_id=r.rollout_id,
        version=r.version,
        previous_version=r.previous_version,
        percent=r.percent,
        state=r.state,
        created_at=r.created_at,
        model_name=r.model_name,
        nodes=[
            pb.NodeRolloutState(node_id=n.node_id, state=n.state, error=n.error) for n in r.nodes
        ],
    )


def rollout_status_from_proto(m: pb.RolloutStatus) -> RolloutStatus:
    return RolloutStatus(
        rollout_id=m.rollout_id,
        version=m.version,
        previous_version=m.previous_version,
        percent=m.percent,
        state=m.state,
        created_at=m.created_at,
        model_name=m.model_name,
        nodes=tuple(
            NodeRolloutState(node_id=n.node_id, state=n.state, error=n.error) for n in m.nodes
        ),
    )


def node_status_to_proto(n: NodeStatus) -> pb.NodeStatus:
    return pb.NodeStatus(
        node_id=n.node_id,
        role=_ROLE_TO_PB[n.role],
        state=pb.STATE_ONLINE if n.online else pb.STATE_OFFLINE,
        bundle_version=n.bundle_version,
        endpoints=list(n.endpoints),
        last_seen=n.last_seen,
        telemetry=telemetry_to_proto(n.telemetry) if n.telemetry else None,
    )


def fleet_status_to_proto(f: FleetStatus) -> pb.FleetStatus:
    return pb.FleetStatus(
        nodes=[node_status_to_proto(n) for n in f.nodes],
        rollout=rollout_status_to_proto(f.rollout) if f.rollout else None,
        updated_at=f.updated_at,
        rejected=dict(f.rejected),
        drift=dict(f.drift),
        omitted=f.omitted,
        canary=cn.record_to_proto(f.canary) if f.canary else None,
    )


def fleet_status_from_proto(m: pb.FleetStatus) -> FleetStatus:
    nodes = tuple(
        NodeStatus(
            node_id=n.node_id,
            role=_ROLE_FROM_PB.get(n.role, "edge"),
            online=n.state == pb.STATE_ONLINE,
            bundle_version=n.bundle_version,
            endpoints=tuple(n.endpoints),
            last_seen=n.last_seen,
            telemetry=telemetry_from_proto(n.telemetry) if n.HasField("telemetry") else None,
        )
        for n in m.nodes
    )
    return FleetStatus(
        nodes=nodes,
        rollout=rollout_status_from_proto(m.rollout) if m.HasField("rollout") else None,
        updated_at=m.updated_at,
        rejected=dict(m.rejected),
        drift=dict(m.drift),
        omitted=m.omitted,
        canary=cn.record_from_proto(m.canary) if m.HasField("canary") else None,
    )


# ---------------------------------------------------------------- wire helpers


def announce_from_bytes(data: bytes) -> Announce:
    return announce_from_proto(parse_message(pb.NodeAnnounce, data))


def heartbeat_from_bytes(data: bytes) -> Heartbeat:
    return heartbeat_from_proto(parse_message(pb.Heartbeat, data))


def telemetry_from_bytes(data: bytes) -> Telemetry:
    return telemetry_from_proto(parse_message(pb.Telemetry, data))


def directive_from_bytes(data: bytes) -> SignedDirective:
    return directive_from_proto(parse_message(pb.RolloutDirective, data))


def ack_from_bytes(data: bytes) -> RolloutAck:
    return ack_from_proto(parse_message(pb.RolloutAck, data))


def clouds_from_bytes(data: bytes) -> tuple[tuple[str, ...], int]:
    return clouds_from_proto(parse_message(pb.CloudEndpoints, data))


def fleet_status_from_bytes(data: bytes) -> FleetStatus:
    try:
        return fleet_status_from_proto(parse_message(pb.FleetStatus, data))
    except MalformedMessage:
        raise
    except (KeyError, ValueError) as e:
        raise MalformedMessage(f"FleetStatus: {e}") from e
