"""The requests of a scenario run: the seeded schedule every policy replays
(:class:`Arrival`) and what each request did (:class:`Record`). The runner writes them,
the oracle, report and plots read them."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from collab.decision import path_key
from collab.scenario.schema import Scenario


@dataclass(frozen=True, kw_only=True)
class Arrival:
    edge: int
    index: int  # request number of this edge
    at_s: float  # trace time of the request
    input_index: int


def schedule(sc: Scenario) -> list[Arrival]:
    """The request schedule: identical for every policy, a function of the seed only."""
    rng = random.Random(sc.seed)
    out = []
    w = sc.workload
    for e in range(sc.edge.count):
        t = rng.uniform(0, 1.0 / w.rate_hz)  # edges are not in lockstep
        for i in range(w.requests):
            out.append(Arrival(edge=e, index=i, at_s=t, input_index=(e * w.requests + i)))
            t += rng.expovariate(w.rate_hz) if w.arrivals == "poisson" else 1.0 / w.rate_hz
    return sorted(out, key=lambda a: a.at_s)


@dataclass
class Record:
    policy: str
    edge: int
    index: int
    at_s: float  # scheduled trace time
    start_s: float  # actual trace time the request started
    latency_ms: float
    path: str
    split_point: str | None
    codec: str | None
    bytes_sent: int
    deadline_met: bool
    agree: bool
    fell_back: bool
    lost: bool
    error: str = ""
    fallback_reason: str = ""
    explored: bool = False  # auto took this path to explore it
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def path_key(self) -> str:
        return path_key(self.path, self.split_point)
