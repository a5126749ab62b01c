"""FL round-control messages on the MQTT bus and their protobuf codecs
(``x_to_proto`` / ``x_from_proto``, payloads in protos/fl.proto).

Small control messages go over MQTT under the control plane's topic scheme
(``collab.control.topics.fl_topic``); updates and aggregates (MBs) go over gRPC. Decoding
is the control plane's trust boundary: every ``*_from_bytes`` raises only
:class:`~collab.control.messages.MalformedMessage`. The scheme is documented in docs/fl.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from collab.control.messages import MalformedMessage, finite, parse_message, valid_node_id
from collab.errors import ConfigError
from collab.fl.pack import Packing
from collab.proto import fl_pb2 as pb
from collab.transport import parse_address

ENCODINGS = ("ckks", "f32")
_STATE_TO_PB = {
    "running": pb.FL_STATE_RUNNING,
    "done": pb.FL_STATE_DONE,
    "budget_exhausted": pb.FL_STATE_BUDGET_EXHAUSTED,
    "failed": pb.FL_STATE_FAILED,
}
_STATE_FROM_PB = {v: k for k, v in _STATE_TO_PB.items()}


@dataclass(frozen=True, kw_only=True)
class ClientHello:
    client_id: str
    num_examples: int
    pid: int = 0  # lets a local simulation (and its tests) signal one client process


@dataclass(frozen=True, kw_only=True)
class RoundAnnouncement:
    federation: str
    round: int
    base_version: str
    sampled: tuple[str, ...]
    deadline_unix: float
    aggregator: str  # host:port of the gRPC FlAggregator
    encoding: str
    context_id: str
    num_values: int
    min_clients: int
    fixed_denominator: float
    packing: Packing | None = None


@dataclass(frozen=True, kw_only=True)
class ModelPublished:
    federation: str
    round: int
    base_version: str
    version: str
    reporters: int
    sampled: int
    epsilon: float | None = None
    sigma_eff: float | None = None


@dataclass(frozen=True, kw_only=True)
class FederationStatus:
    federation: str
    state: str  # running | done | budget_exhausted | failed
    round: int
    version: str
    detail: str = ""
    epsilon: float | None = None


# ---------------------------------------------------------------- codecs


def _round(r: int) -> int:
    if r < 1:
        raise MalformedMessage("round must be >= 1")
    return r


def _optional(m: pb.FlModelPublished | pb.FlFederationStatus, name: str) -> float | None:
    return finite(getattr(m, name), name) if m.HasField(name) else None


def packing_to_proto(p: Packing | None) -> pb.FlPacking | None:
    if p is None:
        return None
    return pb.FlPacking(bits=p.bits, per_slot=p.per_slot, headroom=p.headroom, range=p.range)


def packing_from_proto(m: pb.FlPacking) -> Packing:
    """A packing whose fields fit an int64 slot value (else MalformedMessage)."""
    rng = finite(m.range, "packing.range")
    if not (2 <= m.bits <= 30 and 1 <= m.per_slot <= 16 and m.headroom <= 30 and rng > 0):
        raise MalformedMessage(f"packing out of bounds: {m.bits}/{m.per_slot}/{m.headroom}/{rng}")
    if m.per_slot * (m.bits + m.headroom) > 62:
        raise MalformedMessage("packing wider than a 62-bit slot value")
    return Packing(bits=m.bits, per_slot=m.per_slot, headroom=m.headroom, range=rng)


def optional_packing(m: object) -> Packing | None:
    """The ``packing`` field of a header/announcement, None when unset."""
    return packing_from_proto(m.packing) if m.HasField("packing") else None  # type: ignore[attr-defined]


def hello_to_proto(h: ClientHello) -> pb.FlClientHello:
    return pb.FlClientHello(client_id=h.client_id, num_examples=h.num_examples, pid=h.pid)


def hello_from_proto(m: pb.FlClientHello) -> ClientHello:
    return ClientHello(client_id=valid_node_id(m.client_id), num_examples=m.num_examples, pid=m.pid)


def announcement_to_proto(a: RoundAnnouncement) -> pb.FlRoundAnnouncement:
    return pb.FlRoundAnnouncement(
        federation=a.federation,
        round=a.round,
        base_version=a.base_version,
        sampled=list(a.sampled),
        deadline_unix=a.deadline_unix,
        aggregator=a.aggregator,
        encoding=a.encoding,
        context_id=a.context_id,
        num_values=a.num_values,
        min_clients=a.min_clients,
        fixed_denominator=a.fixed_denominator,
        packing=packing_to_proto(a.packing),
    )


def announcement_from_proto(m: pb.FlRoundAnnouncement) -> RoundAnnouncement:
    if m.encoding not in ENCODINGS:
        raise MalformedMessage(f"unknown encoding {m.encoding[:80]!r}")
    if not m.aggregator:
        raise MalformedMessage("round announcement without an aggregator address")
    try:
        parse_address(m.aggregator)  # a client dials it
    except ConfigError as e:
        raise MalformedMessage(f"round announcement: {e}") from e
    return RoundAnnouncement(
        federation=m.federation,
        round=_round(m.round),
        base_version=m.base_version,
        sampled=tuple(valid_node_id(c) for c in m.sampled),
        deadline_unix=finite(m.deadline_unix, "deadline_unix"),
        aggregator=m.aggregator,
        encoding=m.encoding,
        context_id=m.context_id,
        num_values=m.num_values,
        min_clients=m.min_clients,
        fixed_denominator=finite(m.fixed_denominator, "fixed_denominator"),
        packing=optional_packing(m),
    )


def model_to_proto(p: ModelPublished) -> pb.FlModelPublished:
    return pb.FlModelPublished(
        federation=p.federation,
        round=p.round,
        base_version=p.base_version,
        version=p.version,
        reporters=p.reporters,
        sampled=p.sampled,
        epsilon=p.epsilon,
        sigma_eff=p.sigma_eff,
    )


def model_from_proto(m: pb.FlModelPublished) -> ModelPublished:
    if not m.version:
        raise MalformedMessage("model message without a version")
    return ModelPublished(
        federation=m.federation,
        round=_round(m.round),
        base_version=m.base_version,
        version=m.version,
        reporters=m.reporters,
        sampled=m.sampled,
        epsilon=_optional(m, "epsilon"),
        sigma_eff=_optional(m, "sigma_eff"),
    )


def status_to_proto(s: FederationStatus) -> pb.FlFederationStatus:
    return pb.FlFederationStatus(
        federation=s.federation,
        state=_STATE_TO_PB[s.state],
        round=s.round,
        version=s.version,
        detail=s.detail,
        epsilon=s.epsilon,
    )


def status_from_proto(m: pb.FlFederationStatus) -> FederationStatus:
    if m.state not in _STATE_FROM_PB:
        raise MalformedMessage(f"unknown federation state {m.state}")
    return FederationStatus(
        federation=m.federation,
        state=_STATE_FROM_PB[m.state],
        round=m.round,
        version=m.version,
        detail=m.detail,
        epsilon=_optional(m, "epsilon"),
    )


# ---------------------------------------------------------------- wire helpers


def hello_from_bytes(data: bytes) -> ClientHello:
    return hello_from_proto(parse_message(pb.FlClientHello, data))


def announcement_from_bytes(data: bytes) -> RoundAnnouncement:
    return announcement_from_proto(parse_message(pb.FlRoundAnnouncement, data))


def model_from_bytes(data: bytes) -> ModelPublished:
    return model_from_proto(parse_message(pb.FlModelPublished, data))


def status_from_bytes(data: bytes) -> FederationStatus:
    return status_from_proto(parse_message(pb.FlFederationStatus, data))
