"""The node registry: an in-memory view (fast reads, liveness sweeps) backed by SQLite.

Not thread-safe on its own; the coordinator calls it under its lock. Every mutation is
queued to the database writer in order, so the table always reflects a prefix of what
the coordinator has seen. Rows of nodes not heard of for a TTL are deleted (:meth:`expire`),
so ids that announce once and vanish cannot grow the registry without bound; ``version``
counts mutations, so the status snapshot is rebuilt only when something changed.
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
    announced_at: float = 0.0  # its last online announce: orders the cloud list (not persisted)

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
        self.version = 0  # bumped by every change a status snapshot shows
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
                announced_at=row["last_seen"],
            )

    def _persist(self, r: NodeRecord, on_commit: OnCommit | None = None) -> None:
        self.version += 1
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
            r.last_seen = r.announced_at = now
        self._persist(r)
        return r

    def heartbeat(self, h: msg.Heartbeat, now: float) -> bool:
        """Returns True when the node came back online."""
        r = self.nodes[h.node_id]
        self.version += 1
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
        self.version += 1
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

    def expire(self, now: float, ttl: float) -> list[str]:
        """Delete the rows of offline nodes not heard of for ``ttl`` seconds; their ids."""
        gone = [r.node_id for r in self.nodes.values() if not r.online and now - r.last_seen > ttl]
        for node_id in gone:
            del self.nodes[node_id]
        if gone:
            self.version += 1
            self._db.submit(
                lambda c: c.executemany(
                    "DELETE FROM nodes WHERE node_id=?", [(n,) for n in gone]
                ).close()
            )
        return gone

    def cloud_endpoints(self, limit: int) -> tuple[str, ...]:
        """The endpoints of online cloud nodes, the most recently announced first, at most
        ``limit``: edges get a list they can use whole, however many clouds announce."""
        clouds = sorted(
            (r for r in self.nodes.values() if r.role == "cloud" and r.online),
            key=lambda r: (-r.announced_at, r.node_id),
        )
        eps: dict[str, None] = {}
        for r in clouds:
            for e in r.endpoints:
                if len(eps) == limit:
                    return tuple(eps)
                eps.setdefault(e, None)
        return tuple(eps)

    def statuses(self) -> list[msg.NodeStatus]:
        """Every node's status as of now: immutable copies, cheap to take under the
        coordinator's lock; :func:`bounded_snapshot` does the rest outside it."""
        return [r.status() for r in self.nodes.values()]


def bounded_snapshot(
    statuses: list[msg.NodeStatus], max_bytes: int
) -> tuple[tuple[msg.NodeStatus, ...], int]:
    """The nodes whose status fits in ``max_bytes`` (encoded), online ones first, then
    the most recently heard of, listed by id; and how many were left out."""
    order = sorted(statuses, key=lambda n: (not n.online, -n.last_seen, n.node_id))
    kept: list[msg.NodeStatus] = []
    size = 0
    for st in order:
        size += msg.node_status_to_proto(st).ByteSize() + 4  # + tag and length prefix
        if size > max_bytes:
            break
        kept.append(st)
    kept.sort(key=lambda n: n.node_id)
    return tuple(kept), len(order) - len(kept)
