"""The rollout state machine, persisted transactionally before anything is published.

A rollout targets the nodes that accept rollouts and fall in its staged percentage
(a stable hash of version and node id, so raising the percentage only adds nodes).
Per-node state is pending -> acked | refused; the rollout is ``completed`` when every
target acked, ``failed`` when none is pending but some refused, ``superseded`` when a
newer rollout (or a rollback) replaced it.

Each rollout takes the next value of the ``rollouts.seq`` AUTOINCREMENT column as its
directive *sequence*: SQLite never reuses it, so it only grows across restarts, and a
rollback is a new rollout with a higher sequence. Nodes refuse a directive whose sequence
is not above the last one they applied (collab/control/replay.py). *Drift* is a node
that acked the current rollout but now reports another version (restarted on an old
bundle, or moved by something that is not the coordinator).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from collab.control import messages as msg
from collab.errors import ControlPlaneError
from coordinator.db import Database
from coordinator.registry import NodeRecord


def selected(version: str, node_id: str, percent: int) -> bool:
    h = int.from_bytes(hashlib.sha256(f"{version}:{node_id}".encode()).digest()[:8], "big")
    return h % 100 < percent


@dataclass(kw_only=True)
class Rollout:
    rollout_id: str
    version: str
    previous_version: str
    percent: int
    state: str
    created_at: float
    model_name: str
    sequence: int = 0  # set once committed
    targets: frozenset[str] | None = None  # a canary step's explicit set (None: by percent)
    shadow_version: str = ""  # a canary step: the baseline its nodes also run (sampled)
    shadow_share: float = 0.0
    nodes: dict[str, tuple[str, str]] = field(default_factory=dict)  # node -> (state, error)
    issued: dict[str, float] = field(default_factory=dict)  # node -> when last signed for it
    # nodes per state, kept by mark(): settle() after each ack is O(1), not a scan of every
    # target (which made a rollout to N nodes O(N^2): 23 s at 10k, benchmarks/fleet.py)
    counts: Counter[str] = field(default_factory=Counter)

    def mark(self, node_id: str, state: str, error: str = "") -> None:
        old = self.nodes.get(node_id)
        if old is not None:
            self.counts[old[0]] -= 1
        self.nodes[node_id] = (state, error)
        self.counts[state] += 1

    def status(self) -> msg.RolloutStatus:
        return msg.RolloutStatus(
            rollout_id=self.rollout_id,
            version=self.version,
            previous_version=self.previous_version,
            percent=self.percent,
            state=self.state,
            created_at=self.created_at,
            model_name=self.model_name,
            nodes=tuple(
                msg.NodeRolloutState(node_id=n, state=s, error=e)
                for n, (s, e) in sorted(self.nodes.items())
            ),
        )

    def pending(self) -> list[str]:
        return [n for n, (s, _) in self.nodes.items() if s == "pending"]

    def directive(
        self, node_id: str, *, fetch_endpoint: str, file_sizes: Mapping[str, int], ttl: float
    ) -> msg.RolloutDirective:
        """What to sign for ``node_id`` now (valid for ``ttl`` seconds)."""
        now = time.time()
        self.issued[node_id] = now
        return msg.RolloutDirective(
            rollout_id=self.rollout_id,
            version=self.version,
            sequence=self.sequence,
            target=node_id,
            fetch_endpoint=fetch_endpoint,
            expires_at=now + ttl,
            model_name=self.model_name,
            issued_at=now,
            file_sizes=dict(file_sizes),
            shadow_version=self.shadow_version,
            shadow_share=self.shadow_share,
        )

    def wants(self, node_id: str) -> bool:
        """Whether ``node_id`` falls in this rollout's set."""
        if self.targets is not None:
            return node_id in self.targets
        return selected(self.version, node_id, self.percent)

    def settle(self) -> None:
        if self.state != "active":
            return
        if not self.counts["pending"]:
            self.state = "failed" if self.counts["refused"] else "completed"


class Rollouts:
    """Current rollout in memory; every change written through the database writer."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.current: Rollout | None = None
        self.completed: list[str] = []  # versions of completed rollouts, oldest first
        rows = db.read("SELECT * FROM rollouts ORDER BY seq")
        self.completed = [r["version"] for r in rows if r["state"] == "completed"]
        if rows:
            r = rows[-1]
            self.current = Rollout(
                rollout_id=r["rollout_id"],
                version=r["version"],
                previous_version=r["previous_version"],
                percent=r["percent"],
                state=r["state"],
                created_at=r["created_at"],
                model_name=r["model_name"],
                sequence=r["seq"],
            )
            for p in db.read(
                "SELECT targets, shadow_version, shadow_share FROM rollout_plans"
                " WHERE rollout_id=?",
                (r["rollout_id"],),
            ):
                self.current.targets = frozenset(json.loads(p["targets"]))
                self.current.shadow_version = p["shadow_version"]
                self.current.shadow_share = p["shadow_share"]
            for n in db.read(
                "SELECT node_id, state, error FROM rollout_nodes WHERE rollout_id=?",
                (r["rollout_id"],),
            ):
                self.current.mark(n["node_id"], n["state"], n["error"])

    @property
    def active(self) -> Rollout | None:
        return self.current if self.current is not None and self.current.state == "active" else None

    def start(
        self,
        version: str,
        model_name: str,
        percent: int,
        nodes: list[NodeRecord],
        *,
        targets: Collection[str] | None = None,
        shadow: tuple[str, float] = ("", 0.0),
    ) -> Rollout:
        """Create a rollout; returns only after it is committed. ``targets``: an explicit
        node set instead of the percentage's (a canary step), ``shadow``: the (version,
        share) its nodes also run."""
        if not 1 <= percent <= 100:
            raise ControlPlaneError(f"percent must be in 1..100, got {percent}")
        prev = self.current
        # what a rollback returns to: the last version rolled out successfully, else what
        # most nodes serve now
        previous_version = next((v for v in reversed(self.completed) if v != version), "")
        if not previous_version:
            served = Counter(
                r.bundle_version for r in nodes if r.bundle_version and r.bundle_version != version
            )
            previous_version = served.most_common(1)[0][0] if served else ""
        ro = Rollout(
            rollout_id=uuid.uuid4().hex[:16],
            version=version,
            previous_version=previous_version,
            percent=percent,
            state="active",
            created_at=time.time(),
            model_name=model_name,
            targets=frozenset(targets) if targets is not None else None,
            shadow_version=shadow[0],
            shadow_share=shadow[1],
        )
        for r in nodes:  # offline nodes join the rollout when they come back (add_target)
            if r.online and r.accepts_rollouts and ro.wants(r.node_id):
                ro.mark(r.node_id, "acked" if r.bundle_version == version else "pending")
        ro.settle()
        superseded = prev.rollout_id if prev is not None and prev.state == "active" else None
        rows = [(ro.rollout_id, n, s, e, ro.created_at) for n, (s, e) in ro.nodes.items()]

        def op(c: sqlite3.Connection) -> int:
            if superseded:
                c.execute(
                    "UPDATE rollouts SET state='superseded' WHERE rollout_id=?", (superseded,)
                )
            cur = c.execute(
                "INSERT INTO rollouts(rollout_id, version, previous_version, percent, state,"
                " created_at, model_name) VALUES (?,?,?,?,?,?,?)",
                (
                    ro.rollout_id,
                    ro.version,
                    ro.previous_version,
                    ro.percent,
                    ro.state,
                    ro.created_at,
                    ro.model_name,
                ),
            )
            c.executemany("INSERT INTO rollout_nodes VALUES (?,?,?,?,?)", rows)
            if ro.targets is not None or ro.shadow_version:
                c.execute(
                    "INSERT INTO rollout_plans VALUES (?,?,?,?)",
                    (
                        ro.rollout_id,
                        json.dumps(sorted(ro.targets or ())),
                        ro.shadow_version,
                        ro.shadow_share,
                    ),
                )
            return int(cur.lastrowid or 0)

        ro.sequence = self._db.call(op)
        if superseded and prev is not None:
            prev.state = "superseded"
        self.current = ro
        self._settled(ro)
        return ro

    def _settled(self, ro: Rollout) -> None:
        if ro.state == "completed":
            self.completed.append(ro.version)

    def stale(self, ttl: float) -> list[str]:
        """Pending targets of the active rollout whose directive is past half its life
        (re-signed so a retained directive never expires while the rollout waits)."""
        ro = self.active
        if ro is None:
            return []
        due = time.time() - ttl / 2
        return [n for n in ro.pending() if ro.issued.get(n, 0.0) < due]

    def drift(self, nodes: Mapping[str, NodeRecord]) -> dict[str, str]:
        """Online nodes that acked the current rollout but report another version ->
        the version they report."""
        ro = self.current
        if ro is None:
            return {}
        out = {}
        for node_id, (state, _) in ro.nodes.items():
            rec = nodes.get(node_id)
            if (
                state == "acked"
                and rec is not None
                and rec.online
                and rec.bundle_version != ro.version
            ):
                out[node_id] = rec.bundle_version
        return out

    def set_node(self, node_id: str, state: str, error: str = "") -> bool:
        """Record a node outcome for the active rollout; True when something changed."""
        ro = self.active
        if ro is None or node_id not in ro.nodes or ro.nodes[node_id] == (state, error):
            return False
        ro.mark(node_id, state, error)
        ro.settle()
        self._settled(ro)
        self._write_node(ro, node_id)
        return True

    def add_target(self, node: NodeRecord) -> bool:
        """A node that joined mid-rollout and falls in the staged set."""
        ro = self.active
        if (
            ro is None
            or node.node_id in ro.nodes
            or not node.accepts_rollouts
            or not ro.wants(node.node_id)
        ):
            return False
        ro.mark(node.node_id, "acked" if node.bundle_version == ro.version else "pending")
        ro.settle()
        self._settled(ro)
        self._write_node(ro, node.node_id)
        return True

    def _write_node(self, ro: Rollout, node_id: str) -> None:
        state, error = ro.nodes[node_id]
        rid, rstate, now = ro.rollout_id, ro.state, time.time()

        def op(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT OR REPLACE INTO rollout_nodes VALUES (?,?,?,?,?)",
                (rid, node_id, state, error, now),
            )
            c.execute("UPDATE rollouts SET state=? WHERE rollout_id=?", (rstate, rid))

        self._db.submit(op)
