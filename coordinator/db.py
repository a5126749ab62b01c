"""SQLite persistence with one writer thread and group commit.

Handlers enqueue small write operations; the writer runs everything queued in one
transaction (each op in its own savepoint, so one bad op cannot undo the others) and
then reports the commit time. At thousands of heartbeats per second this keeps commit
count low while the lag from message to durable row stays in milliseconds.
"""

from __future__ import annotations

import collections
import contextlib
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
  version TEXT PRIMARY KEY, model_name TEXT NOT NULL, stored_at REAL NOT NULL,
  sizes TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rollouts(
  seq INTEGER PRIMARY KEY AUTOINCREMENT, rollout_id TEXT UNIQUE NOT NULL, version TEXT NOT NULL,
  previous_version TEXT NOT NULL, percent INTEGER NOT NULL, state TEXT NOT NULL,
  created_at REAL NOT NULL, model_name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rollout_nodes(
  rollout_id TEXT NOT NULL, node_id TEXT NOT NULL, state TEXT NOT NULL, error TEXT NOT NULL,
  updated_at REAL NOT NULL, PRIMARY KEY(rollout_id, node_id));
CREATE TABLE IF NOT EXISTS rollout_plans(
  rollout_id TEXT PRIMARY KEY, targets TEXT NOT NULL, shadow_version TEXT NOT NULL,
  shadow_share REAL NOT NULL);
CREATE TABLE IF NOT EXISTS canaries(
  canary_id TEXT PRIMARY KEY, started_at REAL NOT NULL, record BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS canary_windows(
  canary_id TEXT NOT NULL, seq INTEGER NOT NULL, step INTEGER NOT NULL, node_id TEXT NOT NULL,
  grp TEXT NOT NULL, received_at REAL NOT NULL, telemetry BLOB NOT NULL,
  PRIMARY KEY(canary_id, seq));
"""

_STOP = object()


def connect(path: Path) -> sqlite3.Connection:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=10)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
        conn.executescript(SCHEMA)
        if "signature" in {r[1] for r in conn.execute("PRAGMA table_info(bundles)")}:
            # a registry from before signed directives (no verified sizes): forget its bundles
            logger.warning("%s predates signed directives: upload its bundles again", path)
            conn.execute("DROP TABLE bundles")
            conn.executescript(SCHEMA)
    except (sqlite3.Error, OSError) as e:
        raise ControlPlaneError(f"cannot open registry database {path}: {e}") from e
    return conn


class Database:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.conn = connect(self.path)
        self._q: collections.deque[Any] = collections.deque()  # append/popleft are atomic
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.commits = 0
        # for rows submitted with (sent_at, received_at): commit time - sender time, and
        # commit time - arrival at the coordinator (its own share of the lag)
        self.lags: collections.deque[float] = collections.deque(maxlen=200_000)
        self.own_lags: collections.deque[float] = collections.deque(maxlen=200_000)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="registry-writer", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self._put(_STOP)
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

    def _put(self, item: Any) -> None:
        self._q.append(item)
        if not self._wake.is_set():
            self._wake.set()

    def submit(self, op: Op, on_commit: OnCommit | None = None) -> None:
        self._put((op, on_commit, None))

    def submit_row(
        self, sql: str, params: tuple[Any, ...], timing: tuple[float, float] | None = None
    ) -> None:
        """A one-statement write; consecutive rows of the same statement run as one
        ``executemany`` (the hot path: heartbeats and telemetry). ``timing`` =
        (sent_at, received_at) records the lags to the commit."""
        self._put((sql, timing, params))

    def call(self, op: Op, timeout: float = 30.0) -> Any:
        """Run ``op`` and return its result once it is committed (durable)."""
        fut: Future[Any] = Future()
        self._put((op, None, fut))
        return fut.result(timeout)

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            batch: list[Any] = []
            stop = False
            while self._q:
                item = self._q.popleft()
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
                if len(batch) >= 5000:
                    self._commit(batch)
                    batch = []
            if batch:
                self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[Any]) -> None:
        done: list[tuple[Future[Any] | None, OnCommit | None, Any, BaseException | None]] = []
        timings: list[tuple[float, float]] = []
        c = self.conn
        run_sql: str | None = None
        run_rows: list[tuple[Any, ...]] = []

        def flush() -> None:
            if run_sql is not None and run_rows:
                c.executemany(run_sql, run_rows)
                run_rows.clear()

        try:
            c.execute("BEGIN")
            for head, extra, tail in batch:
                if isinstance(head, str):  # submit_row: extra = timing
                    if head != run_sql:
                        flush()
                        run_sql = head
                    run_rows.append(tail)
                    if extra is not None:
                        timings.append(extra)
                    continue
                flush()
                run_sql = None
                fut = tail
                c.execute("SAVEPOINT op")
                try:
                    done.append((fut, extra, head(c), None))
                    c.execute("RELEASE op")
                except Exception as e:
                    c.execute("ROLLBACK TO op")
                    c.execute("RELEASE op")
                    if fut is None:
                        logger.exception("registry write failed")
                    done.append((fut, extra, None, e))
            flush()
            c.execute("COMMIT")
        except sqlite3.Error as e:
            logger.exception("registry commit failed")
            with contextlib.suppress(sqlite3.Error):
                c.execute("ROLLBACK")
            err = ControlPlaneError(f"registry commit failed: {e}")
            for head, _, tail in batch:
                if not isinstance(head, str) and tail is not None:
                    tail.set_exception(err)
            return
        self.commits += 1
        now = time.time()
        self.lags.extend([now - s for s, _ in timings])
        self.own_lags.extend([now - r for _, r in timings])
        for fut, on_commit, result, exc in done:
            if fut is not None:
                if exc is not None:
                    fut.set_exception(exc)
                else:
                    fut.set_result(result)
            if on_commit is not None:
                on_commit(now)
