"""MQTT topics and JSON messages of the FL control plane (``collab/v1/fl/...``).

Small control messages go over MQTT; updates and aggregates (MBs) go over gRPC
(protos/fl.proto). The scheme is documented in docs/fl.md.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, TypeVar

from collab.errors import FLError

PREFIX = "collab/v1/fl"


def client_topic(federation: str, client_id: str) -> str:
    """Retained client presence {client_id, num_examples}; the last will clears it."""
    return f"{PREFIX}/{federation}/clients/{client_id}"


def clients_filter(federation: str) -> str:
    return f"{PREFIX}/{federation}/clients/+"


def round_topic(federation: str) -> str:
    """Retained round announcement (QoS 1)."""
    return f"{PREFIX}/{federation}/round"


def model_topic(federation: str) -> str:
    """Retained: the newest global model version and its round's ε."""
    return f"{PREFIX}/{federation}/model"


def status_topic(federation: str) -> str:
    """Retained federation state: running / done / budget_exhausted / failed."""
    return f"{PREFIX}/{federation}/status"


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
    sampled: list[str]
    deadline_unix: float
    aggregator: str  # host:port of the gRPC FlAggregator
    encoding: str
    context_id: str
    num_values: int
    min_clients: int
    fixed_denominator: float


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
    state: str
    round: int
    version: str
    detail: str = ""
    epsilon: float | None = None


M = TypeVar("M")


def to_json(msg: Any) -> bytes:
    return json.dumps(dataclasses.asdict(msg), sort_keys=True).encode()


def from_json(cls: type[M], payload: bytes) -> M:
    try:
        data = json.loads(payload)
        if not isinstance(data, dict):
            raise TypeError("not an object")
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in names})
    except (ValueError, TypeError) as e:
        raise FLError(f"malformed {cls.__name__} message: {e}") from e
