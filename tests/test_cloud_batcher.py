"""The leader/follower batcher under concurrency, without gRPC: every caller gets
exactly its own rows, expired requests are never computed, no slot leaks."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from test_cloud_support import Recorder

from cloud_node.batcher import Batcher
from collab.errors import ClosedError, DeadlineError


def _model(x: np.ndarray) -> np.ndarray:
    time.sleep(0.0005 * x.shape[0])  # releases the GIL like ONNX Runtime
    return x * 2.0 + 1.0


@pytest.mark.parametrize(("max_wait_ms", "idle"), [(0.0, False), (3.0, False), (3.0, True)])
def test_concurrent_callers_get_their_own_rows(max_wait_ms: float, idle: bool) -> None:
    rec = Recorder()
    b = Batcher(
        _model,
        max_batch_size=8,
        max_wait_ms=max_wait_ms,
        slots=2,
        observer=rec,
        wait_when_idle=idle,
    )
    errors: list[BaseException] = []
    outcome = {"ok": 0, "late": 0}
    lock = threading.Lock()

    def caller(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(40):
            n = int(rng.integers(1, 4))
            x = rng.standard_normal((n, 3)).astype(np.float32)
            deadline = time.monotonic() + (0.001 if rng.random() < 0.1 else 5.0)
            try:
                r = b.run(x, deadline)
            except DeadlineError:
                with lock:
                    outcome["late"] += 1
                continue
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)
                return
            if not np.array_equal(r.output, x * 2.0 + 1.0) or r.batch_size < n:
                errors.append(AssertionError(f"wrong rows for caller {seed}"))
            with lock:
                outcome["ok"] += 1

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    assert outcome["ok"] + outcome["late"] == 24 * 40
    assert rec.drops.get("deadline", 0) == outcome["late"]  # every late one counted, none computed
    assert max(rec.sizes) <= 8 and max(rec.sizes) > 1  # real batches formed, never oversize
    assert b.depth == 0 and b._leaders == 0 and not b._pending  # nothing stuck, no slot leaked


def test_close_flushes_the_window_and_refuses_new_work() -> None:
    rec = Recorder()
    b = Batcher(
        _model, max_batch_size=64, max_wait_ms=10_000, slots=1, observer=rec, wait_when_idle=True
    )
    x = np.ones((1, 3), np.float32)
    results: list[np.ndarray] = []
    threads = [threading.Thread(target=lambda: results.append(b.run(x).output)) for _ in range(3)]
    for t in threads:
        t.start()
    while b.depth < 3:
        time.sleep(0.005)
    b.close()
    for t in threads:
        t.join(5)
    assert len(results) == 3 and rec.sizes == [3]
    with pytest.raises(ClosedError):
        b.run(x)


def test_model_errors_reach_every_caller_of_the_batch() -> None:
    def broken(x: np.ndarray) -> np.ndarray:
        raise RuntimeError("boom")

    b = Batcher(broken, max_batch_size=4, max_wait_ms=0, slots=1, observer=Recorder())
    with pytest.raises(RuntimeError, match="boom"):
        b.run(np.ones((1, 2), np.float32))
    assert b._leaders == 0


def test_an_unloaded_request_never_waits_for_its_window() -> None:
    """By default a batch stays open only while another batch is in progress."""
    rec = Recorder()
    b = Batcher(_model, max_batch_size=64, max_wait_ms=10_000, slots=2, observer=rec)
    x = np.ones((1, 3), np.float32)
    for _ in range(3):
        r = b.run(x, time.monotonic() + 5)  # would be a DeadlineError after a 10 s window
        assert r.batch_size == 1
    assert rec.sizes == [1, 1, 1] and b._leaders == 0


def test_an_idle_request_past_its_deadline_is_not_computed() -> None:
    """The idle fast path (no queue) still drops a request that is already late."""
    rec = Recorder()
    calls: list[int] = []

    def model(x: np.ndarray) -> np.ndarray:
        calls.append(x.shape[0])
        return x

    b = Batcher(model, max_batch_size=8, max_wait_ms=0, slots=1, observer=rec)
    with pytest.raises(DeadlineError):
        b.run(np.ones((1, 3), np.float32), time.monotonic() - 0.001)
    assert calls == [] and rec.drops == {"deadline": 1} and b._leaders == 0
    assert b.run(np.ones((2, 3), np.float32)).batch_size == 2  # the slot was given back
