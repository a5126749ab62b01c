"""Canary rollouts: the candidate goes to a seeded random share of the live edges, their
per-version telemetry (and the control nodes') is recorded window by window, and each
step is decided by :mod:`coordinator.canary_decision` — promote to the next step, or
roll back with the reason.

The state is persisted before anything is published: the record (seed, order, steps,
every decision with its tests) in ``canaries``, every window the decision may read in
``canary_windows``, so a restarted coordinator resumes the step and a test can replay
the record. What to publish is returned as a :class:`Launch`; the daemon signs it as an
ordinary rollout (one sequence per step).
"""

from __future__ import annotations

import os
import random
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from collab.control import canary as cn
from collab.errors import ConfigError
from collab.proto import control_pb2 as pb
from coordinator.canary_decision import (
    BASELINE,
    CANDIDATE,
    Progress,
    Window,
    decide,
    progress,
    timed_out,
)
from coordinator.db import Database
from coordinator.registry import NodeRecord


@dataclass(frozen=True, kw_only=True)
class Launch:
    """A rollout the daemon starts for the canary: a step (explicit targets, with the
    baseline as shadow) or the end (the whole fleet, no shadow)."""

    version: str
    targets: tuple[str, ...] | None  # None: every node (percent 100)
    shadow: tuple[str, float] = ("", 0.0)
    percent: int = 100


def live_edges(nodes: Mapping[str, NodeRecord]) -> list[NodeRecord]:
    return [r for r in nodes.values() if r.role == "edge" and r.online and r.accepts_rollouts]


def baseline_of(nodes: list[NodeRecord]) -> str:
    """What most live edges serve now."""
    served = Counter(r.bundle_version for r in nodes if r.bundle_version)
    return served.most_common(1)[0][0] if served else ""


class Canaries:
    """The latest canary (in memory) written through the database writer."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.current: cn.CanaryRecord | None = None
        self.windows: list[Window] = []  # of the current canary, in recorded order
        self._progress = Progress()  # of the current step
        rows = db.read("SELECT canary_id, record FROM canaries ORDER BY started_at DESC LIMIT 1")
        if rows:
            self.current = cn.record_from_proto(pb.CanaryRecord.FromString(rows[0]["record"]))
            self.windows = load_windows(db, rows[0]["canary_id"])
            self._progress = progress(self.step_windows(), self.current.baseline_version)

    @property
    def running(self) -> cn.CanaryRecord | None:
        c = self.current
        return c if c is not None and c.state == "running" else None

    # ---------------------------------------------------------------- start
    def start(
        self,
        plan: cn.CanaryPlan,
        version: str,
        model_name: str,
        nodes: Mapping[str, NodeRecord],
        files: Callable[[str], Mapping[str, str] | None],
    ) -> tuple[cn.CanaryRecord, Launch]:
        """Check, draw the canary order and record it (committed before it returns).
        ConfigError, before anything is sent, for what cannot be judged or rolled back.
        ``files``: a stored version's files (path -> sha256; None when not stored): a
        candidate whose model files are the baseline's is refused as identical, and the
        baseline must be stored (a rollback is served from the store)."""
        if self.running is not None:
            raise ConfigError(
                f"canary {self.running.canary_id} is still running; wait for its decision "
                "or end it with `collab rollout rollback`"
            )
        live = live_edges(nodes)
        if not live:
            raise ConfigError("no live edge node accepts rollouts: nothing to canary")
        baseline = baseline_of(live)
        if version == baseline or files(baseline) == files(version):
            raise ConfigError(
                f"candidate {version[:12]} is identical to the baseline {baseline[:12]} the "
                "fleet serves: nothing to compare"
            )
        if files(baseline) is None:
            raise ConfigError(
                f"the baseline {baseline[:12]} the fleet serves is not in the bundle store, so "
                "a rollback could not be served: upload it first (collab rollout publish "
                "BASELINE_DIR --upload-only)"
            )
        seed = plan.seed or int.from_bytes(os.urandom(8), "big") >> 1
        order = sorted(r.node_id for r in live)
        random.Random(seed).shuffle(order)
        steps = plan.percents()
        first = order[: cn.canary_count(steps[0], len(order))]
        judged = [m for m in plan.metrics if m != "agreement"]
        if judged and cn.canary_count(steps[-2], len(order)) == len(order):
            raise ConfigError(
                f"a {steps[-2]:g}% canary step of {len(order)} live edges leaves no control "
                f"node to compare {', '.join(judged)} with: lower the steps or judge "
                "agreement only"
            )
        now = time.time()
        rec = cn.CanaryRecord(
            canary_id=uuid.uuid4().hex[:16],
            version=version,
            baseline_version=baseline,
            model_name=model_name,
            seed=seed,
            order=tuple(order),
            steps=steps,
            plan=plan,
            started_at=now,
            step_started_at=now,
            canary_nodes=tuple(first),
        )
        self.windows = []
        self._progress = Progress()
        self._save(rec)
        return rec, self._step_launch(rec)

    def _step_launch(self, rec: cn.CanaryRecord) -> Launch:
        return Launch(
            version=rec.version,
            targets=rec.canary_nodes,
            shadow=(rec.baseline_version, rec.plan.shadow_share),
            percent=max(1, round(rec.steps[rec.step])),
        )

    # ---------------------------------------------------------------- telemetry
    def on_telemetry(
        self,
        node_id: str,
        versions: tuple[cn.VersionTelemetry, ...],
        nodes: Mapping[str, NodeRecord],
        now: float,
    ) -> tuple[int, tuple[cn.CanaryDecision, Launch] | None]:
        """Record what a node reported; (windows ignored, the decision and what to
        launch when this window completed the step's sample)."""
        rec = self.running
        if rec is None:
            return 0, None
        ignored = 0
        for v in versions:
            if not v.requests:
                continue
            if node_id in rec.canary_nodes and v.version == rec.version:
                group = CANDIDATE
            elif (
                node_id not in rec.canary_nodes
                and v.version == rec.baseline_version
                and (r := nodes.get(node_id)) is not None
                and r.role == "edge"
            ):
                group = BASELINE
            else:  # a node outside the canary reporting the candidate, a pending one, ...
                ignored += 1
                continue
            self._add_window(
                rec,
                Window(step=rec.step, node_id=node_id, group=group, telemetry=v, received_at=now),
            )
        if ignored:
            rec = replace(rec, ignored_windows=rec.ignored_windows + ignored)
            self._save(rec, wait=False)
        if self._progress.missing(rec.plan):
            return ignored, None
        last = rec.step == len(rec.steps) - 2
        d = decide(rec.plan, rec.baseline_version, rec.step, self.step_windows(), last_step=last)
        assert d is not None  # the sample just became complete
        return ignored, self._decided(rec, replace(d, decided_at=now), now)

    def step_windows(self) -> list[Window]:
        rec = self.current
        return [w for w in self.windows if rec is not None and w.step == rec.step]

    def refused(
        self, version: str, targets: frozenset[str] | None, errors: list[str], now: float
    ) -> tuple[cn.CanaryDecision, Launch] | None:
        """The step's rollout ended with every canary node refusing the candidate: roll
        back now rather than wait for a sample that cannot come."""
        rec = self.running
        if rec is None or version != rec.version or targets != frozenset(rec.canary_nodes):
            return None
        d = cn.CanaryDecision(
            step=rec.step,
            action="rollback",
            reason="every canary node refused the candidate: "
            + "; ".join(sorted(set(errors)))[:500],
            windows=len(self.step_windows()),
            refused=True,
            decided_at=now,
        )
        return self._decided(rec, d, now)

    def sweep(self, now: float) -> tuple[cn.CanaryDecision, Launch] | None:
        """A step past its maximum duration rolls back."""
        rec = self.running
        if rec is None or now - rec.step_started_at < rec.plan.max_duration_s:
            return None
        d = timed_out(rec.plan, rec.baseline_version, rec.step, self.step_windows())
        return self._decided(rec, replace(d, decided_at=now), now)

    def _decided(
        self, rec: cn.CanaryRecord, d: cn.CanaryDecision, now: float
    ) -> tuple[cn.CanaryDecision, Launch]:
        decisions = (*rec.decisions, d)
        if d.action == "rollback":
            rec = replace(rec, decisions=decisions, state="rolled_back")
            launch = Launch(version=rec.baseline_version, targets=None)
        elif rec.step + 1 == len(rec.steps) - 1:  # the next step is the whole fleet
            rec = replace(rec, decisions=decisions, state="promoted", step=rec.step + 1)
            launch = Launch(version=rec.version, targets=None)
        else:
            step = rec.step + 1
            nodes = rec.order[: cn.canary_count(rec.steps[step], len(rec.order))]
            rec = replace(
                rec, decisions=decisions, step=step, step_started_at=now, canary_nodes=nodes
            )
            self._progress = Progress()
            launch = self._step_launch(rec)
        self._save(rec)
        return d, launch

    def supersede(self) -> None:
        """An operator's rollout replaced the canary."""
        rec = self.running
        if rec is not None:
            self._save(replace(rec, state="superseded"))

    # ---------------------------------------------------------------- persistence
    def _save(self, rec: cn.CanaryRecord, *, wait: bool = True) -> None:
        """Write the record; ``wait``: return once committed (before what it decided
        is published)."""
        self.current = rec
        row = (rec.canary_id, rec.started_at, cn.record_to_proto(rec).SerializeToString())

        def op(c: sqlite3.Connection) -> None:
            c.execute("INSERT OR REPLACE INTO canaries VALUES (?,?,?)", row)

        if wait:
            self._db.call(op)
        else:
            self._db.submit(op)

    def _add_window(self, rec: cn.CanaryRecord, w: Window) -> None:
        seq = len(self.windows)
        self.windows.append(w)
        self._progress.add(w, rec.baseline_version)
        row = (
            rec.canary_id,
            seq,
            w.step,
            w.node_id,
            w.group,
            w.received_at,
            cn.version_telemetry_to_proto(w.telemetry).SerializeToString(),
        )

        def op(c: sqlite3.Connection) -> None:
            c.execute("INSERT INTO canary_windows VALUES (?,?,?,?,?,?,?)", row)

        self._db.submit(op)


def load_windows(db: Database, canary_id: str) -> list[Window]:
    """The windows a canary recorded, in order (what :func:`replay` reads)."""
    return [
        Window(
            step=r["step"],
            node_id=r["node_id"],
            group=r["grp"],
            received_at=r["received_at"],
            telemetry=cn.version_telemetry_from_proto(
                pb.VersionTelemetry.FromString(r["telemetry"])
            ),
        )
        for r in db.read(
            "SELECT * FROM canary_windows WHERE canary_id=? ORDER BY seq", (canary_id,)
        )
    ]
