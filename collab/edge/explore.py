"""Bounded exploration: now and then one request takes the best path not tried lately.

Why: what the engine knows of a path beyond the shared link and edge estimates (the
cloud's compute for its tail, the bandwidth its frame size actually gets, a codec's real
cost on this device) is learnt only from requests on that path. A purely greedy engine
never sends a request down a path whose estimate looks worse, so a pessimistic
mis-estimate is never corrected: on a gateway whose split would be faster, auto stayed on
edge-only for a whole run. Exploration is bounded so it cannot cost much: at most one
request per ``interval_s``, only on a feasible candidate predicted within ``max_ratio`` of
the greedy choice (and meeting the deadline when that does), never tried or not tried
for ``stale_s``; the best such candidate by prediction. Its cost is at most
``(max_ratio - 1) x`` the greedy prediction once per interval, and only while such a
candidate exists: paths clearly worse are never explored.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from collab.decision import Candidate, Decision


@dataclass(kw_only=True)
class Explorer:
    """Per client, used under the client's lock; ``interval_s`` 0 disables it."""

    interval_s: float
    max_ratio: float
    stale_s: float
    last_used: dict[str, float] = field(default_factory=dict)  # path key -> monotonic time
    last_explore: float | None = None
    explored: int = 0

    def note(self, key: str, now: float) -> None:
        """A request took path ``key`` at ``now`` (greedy or exploring)."""
        self.last_used[key] = now

    def candidate(self, d: Decision, now: float) -> Candidate | None:
        """The candidate an exploring request would take now (None: none qualifies)."""
        best = d.chosen
        pool = [
            c
            for c in d.candidates
            if c.feasible
            and c.key != best.key
            and (c.meets_deadline or not best.meets_deadline)
            and c.total_ms <= self.max_ratio * best.total_ms
            and now - self.last_used.get(c.key, -float("inf")) >= self.stale_s
        ]
        return min(pool, key=lambda c: (c.total_ms, c.key)) if pool else None

    def due(self, now: float) -> bool:
        return (
            self.interval_s > 0
            and self.last_explore is not None
            and now - self.last_explore >= self.interval_s
        )

    def maybe(self, d: Decision, now: float) -> Decision:
        """``d`` (an auto decision), or once per interval the exploring one."""
        if d.policy != "auto":
            return d
        if self.last_explore is None:  # the first interval starts at the first decision
            self.last_explore = now
        if not self.due(now):
            return d
        c = self.candidate(d, now)
        if c is None:
            return d
        self.last_explore = now
        self.explored += 1
        seen = self.last_used.get(c.key)
        why = "never tried" if seen is None else f"last tried {now - seen:.1f} s ago"
        return dataclasses.replace(
            d,
            chosen=c,
            explored=True,
            reason=(
                f"exploring {c.key} ({why}; predicted {c.total_ms:.2f} ms, "
                f"{c.total_ms / max(d.chosen.total_ms, 1e-9):.2f}x the greedy "
                f"{d.chosen.key})"
            ),
        )

    def state(self, d: Decision, now: float) -> dict[str, Any]:
        """What explain() shows: the bounds, how often it explored, when each path was
        last taken and what the next exploring request would take."""
        nxt = self.candidate(d, now) if d.policy == "auto" else None
        wait = (
            None
            if self.interval_s <= 0
            else self.interval_s
            if self.last_explore is None
            else max(self.interval_s - (now - self.last_explore), 0.0)
        )
        return {
            "interval_s": self.interval_s,
            "max_ratio": self.max_ratio,
            "stale_s": self.stale_s,
            "explored": self.explored,
            "next_in_s": wait,
            "next_candidate": None if nxt is None else nxt.key,
            "last_used_s_ago": {k: round(now - t, 3) for k, t in sorted(self.last_used.items())},
        }
