"""SQLite persistence with one writer thread and group commit.

Handlers enqueue small write operations; the writer runs everything queued in one
transaction (each op in its own savepoint, so one bad op cannot undo the others) and
then reports the commit time. At thousands of heartbeats per second this keeps commit
count low while the lag from message to durable row stays in milliseconds.
"""

from __future__ import annotations

import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from collab.errors import ControlPlaneError
from collab.log import logger

Op = Callable[[sqlite3.Connection], Any]
OnCommit = Callable[[float], None]

SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes(
  node_id TEXT PRIMARY KEY, role TEXT NOT NULL, online INTEGER NOT NULL,
  capabilities TEXT NOT NULL, bundle_version TEXT NOT NULL, endpoints TEXT NOT NULL,
  model_name TEXT NOT NULL, last_seen REAL NOT NULL, telemetry BLOB);
CREATE TABLE IF NOT EXISTS bundles(
  version TEXT PRIMARY KEY, model_name TEXT NOT NULL, signature BLOB NOT NULL, stored_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS rollouts(
  seq INTEGER PRIMARY KEY AUTOINCREMENT, rollout_id TEXT UNIQUE NOT NULL, version TEXT NOT NULL,
  previous_version TEXT NOT NULL, percent INTEGER NOT NULL, state TEXT NOT NULL,
  created_at REAL NOT NULL, model_name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rollout_nodes(
  rollout_id TEXT NOT NULL, node_id TEXT NOT NULL, state TEXT NOT NULL, error TEXT NOT NULL,
  updated_at REAL NOT NULL, PRIMARY KEY(rollout_id, node_id));
"""

_STOP = object()


def connect(path: Path) -> sqlite3.Connection:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=10)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
        conn.executescript(SCHEMA)
    except (sqlite3.Error, OSError) as e:
        raise ControlPlaneError(f"cannot open registry database {path}: {e}") from e
    return conn


class Database:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.conn = connect(self.path)
        self._q: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.commits = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="registry-writer", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self._q.put(_STOP)
            self._thread.join(10)
            self._thread = None
        self.conn.close()

    def read(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """Reads before start() (loading state at boot) or from tools."""
        self.conn.row_factory = sqlite3.Row
        try:
            return list(self.conn.execute(sql, params))
        finally:
            self.conn.row_factory = None

    def submit(self, op: Op, on_commit: OnCommit | None = None) -> None:
        self._q.put((op, on_commit, None))

    def call(self, op: Op, timeout: float = 30.0) -> Any:
        """Run ``op`` and return its result once it is committed (durable)."""
        fut: Future[Any] = Future()
        self._q.put((op, None, fut))
        return fut.result(timeout)

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is _STOP:
                return
            batch = [item]
            stop = False
            while len(batch) < 5000:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                batch.append(nxt)
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[Any]) -> None:
        results: list[tuple[Future[Any] | None, Any, BaseException | None]] = []
        c = self.conn
        try:
            c.execute("BEGIN")
            for op, _, fut in batch:
                c.execute("SAVEPOINT op")
                try:
                    results.append((fut, op(c), None))
                    c.execute("RELEASE op")
                except Exception as e:
                    c.execute("ROLLBACK TO op")
                    c.execute("RELEASE op")
                    if fut is None:
                        logger.exception("registry write failed")
                    results.append((fut, None, e))
            c.execute("COMMIT")
        except sqlite3.Error as e:
            logger.exception("registry commit failed")
            with contextlib.suppress(sqlite3.Error):
                c.execute("ROLLBACK")
            err = ControlPlaneError(f"registry commit failed: {e}")
            for _, _, fut in batch:
                if fut is not None:
                    fut.set_exception(err)
            return
        self.commits += 1
        now = time.time()
        for (_, on_commit, _), (fut, result, exc) in zip(batch, results, strict=True):
            if fut is not None:
                if exc is not None:
                    fut.set_exception(exc)
                else:
                    fut.set_result(result)
            if on_commit is not None:
                on_commit(now)
