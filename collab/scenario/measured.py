"""What a scenario run measured besides the judged requests: the profile pass, the RPC
framing, the events as applied and the emulator's byte counters per policy. The model
oracle and the cost report are built from these; ``report.json`` keeps them so that
``collab scenario report`` can rebuild both."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, kw_only=True)
class Framing:
    """Bytes per cloud call: uplink beyond the frame, and the whole downlink answer
    (measured by :func:`collab.scenario.framing.measure_framing`)."""

    request_bytes: float
    answer_bytes: float
    calls: int = 0  # how many calls the medians come from

    def to_dict(self) -> dict[str, float]:
        return {
            "request_bytes": self.request_bytes,
            "answer_bytes": self.answer_bytes,
            "calls": self.calls,
        }


@dataclass(frozen=True, kw_only=True)
class Measured:
    profile: Mapping[str, Mapping[str, float]]  # per path: base_ms, edge_ms, encode_ms, bytes
    framing: Framing
    events: Mapping[str, Any] = field(default_factory=dict)  # per policy: events as applied
    link: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # per policy: counters

    @classmethod
    def from_report(cls, report: Mapping[str, Any]) -> Measured:
        f = report["framing"]
        return cls(
            profile=report["profile"],
            framing=Framing(
                request_bytes=float(f["request_bytes"]),
                answer_bytes=float(f["answer_bytes"]),
                calls=int(f.get("calls", 0)),
            ),
            events=report["events"],
            link=report.get("link", {}),
        )
