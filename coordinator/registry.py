"""The node registry: an in-memory view (fast reads, liveness sweeps) backed by SQLite.

Not thread-safe on its own; the coordinator calls it under its lock. Every mutation is
queued to the database writer in order, so the table always reflects a prefix of what
the coordinator has seen.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field

from collab.control import messages as msg
from collab.proto import control_pb2 as pb
from coordinator.db import Database, OnCommit


@dataclass(kw_only=True)
class NodeRecord:
    node_id: str
    role: str
    online: bool
    capabilities: dict[str, str] = field(default_factory=dict)
    bundle_version: str = ""
    endpoints: tuple[str, ...] = ()
    model_name: str = ""
    last_seen: float = 0.0
    telemetry: msg.Telemetry | None = None

    def status(self) -> msg.NodeStatus:
        return msg.NodeStatus(
            node_id=self.node_id,
            role=self.role,
            online=self.online,
            bundle_version=self.bundle_version,
            endpoints=self.endpoints,
            last_seen=self.last_seen,
            telemetry=self.telemetry,
        )

    @property
    def accepts_rollouts(self) -> bool:
        return self.capabilities.get("rollout") == "1"


def _save(r: NodeRecord) -> tuple[object, ...]:
    tel = msg.telemetry_to_proto(r.telemetry).SerializeToString() if r.telemetry else None
    return (
        r.node_id,
        r.role,
        int(r.online),
        json.dumps(r.capabilities, sort_keys=True),
        r.bundle_version,
        json.dumps(list(r.endpoints)),
        r.model_name,
        r.last_seen,
        tel,
    )


class Registry:
    def __init__(self, db: Database) -> None:
        self._db = db
        self.nodes: dict[str, NodeRecord] = {}
        for row in db.read("SELECT * FROM nodes"):
            tel = None
            if row["telemetry"]:
                tel = msg.telemetry_from_proto(pb.Telemetry.FromString(row["telemetry"]))
            self.nodes[row["node_id"]] = NodeRecord(
                node_id=row["node_id"],
                role=row["role"],
                online=bool(row["online"]),
                capabilities=json.loads(row["capabilities"]),
                bundle_version=row["bundle_version"],
                endpoints=tuple(json.loads(row["endpoints"])),
                model_name=row["model_name"],
                last_seen=row["last_seen"],
                telemetry=tel,
            )

    def _persist(self, r: NodeRecord, on_commit: OnCommit | None = None) -> None:
        values = _save(r)

        def op(c: sqlite3.Connection) -> None:
            c.execute("INSERT OR REPLACE INTO nodes VALUES (?,?,?,?,?,?,?,?,?)", values)

        self._db.submit(op, on_commit)

    def grace(self, now: float) -> None:
        """After a restart nobody has been heard yet: give online nodes a fresh timeout."""
        for r in self.nodes.values():
            if r.online:
                r.last_seen = now

    def announce(self, a: msg.Announce, now: float) -> NodeRecord:
        r = self.nodes.get(a.node_id)
        if r is None:
            r = NodeRecord(node_id=a.node_id, role=a.role, online=a.online)
            self.nodes[a.node_id] = r
        r.role, r.online = a.role, a.online
        r.capabilities = dict(a.capabilities)
        r.bundle_version, r.endpoints, r.model_name = a.bundle_version, a.endpoints, a.model_name
        if a.online:
            r.last_seen = now
        self._persist(r)
        return r

    def heartbeat(self, h: msg.Heartbeat, now: float) -> bool:
        """Returns True when the node came back online."""
        r = self.nodes[h.node_id]
        revived = not r.online
        r.online, r.last_seen = True, now
        if h.bundle_version and h.bundle_version != r.bundle_version:
            r.bundle_version = h.bundle_version
        if revived:
            self._persist(r)
        else:
            self._db.submit_row(
                "UPDATE nodes SET last_seen=?, online=1, bundle_version=? WHERE node_id=?",
                (now, r.bundle_version, h.node_id),
                (h.sent_at, now),
            )
        return revived

    def telemetry(self, t: msg.Telemetry, now: float) -> None:
        r = self.nodes[t.node_id]
        r.telemetry, r.last_seen = t, now
        blob = msg.telemetry_to_proto(t).SerializeToString()
        self._db.submit_row(
            "UPDATE nodes SET telemetry=?, last_seen=? WHERE node_id=?",
            (blob, now, t.node_id),
            (t.sent_at, now),
        )

    def mark_offline(self, node_id: str) -> None:
        r = self.nodes[node_id]
        r.online = False
        self._persist(r)

    def expired(self, now: float, timeout: float) -> list[str]:
        return [r.node_id for r in self.nodes.values() if r.online and now - r.last_seen > timeout]

    def cloud_endpoints(self) -> tuple[str, ...]:
        eps = {
            e for r in self.nodes.values() if r.role == "cloud" and r.online for e in r.endpoints
        }
        return tuple(sorted(eps))

    def snapshot(self) -> tuple[msg.NodeStatus, ...]:
        return tuple(r.status() for r in sorted(self.nodes.values(), key=lambda r: r.node_id))
