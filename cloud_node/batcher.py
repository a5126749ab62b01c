"""Dynamic batching of one (model, split) queue on the asyncio loop.

Requests queue up; a batch starts when ``max_batch_size`` samples wait, or when the
oldest has waited ``max_wait_ms``, and only while one of ``slots`` executor slots is
free — so under load batches grow by themselves while the previous batch computes.
Inputs are concatenated along dim 0 and run once (the bundle graphs have a dynamic
batch dimension); outputs are split back per caller. Requests whose deadline passed
or whose caller went away are dropped before compute: a late answer helps nobody.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from cloud_node.errors import ShuttingDownError
from collab.errors import DeadlineError


@dataclass(frozen=True)
class BatchResult:
    output: np.ndarray  # this caller's rows of the batch output
    queue_ms: float  # enqueue -> batch start
    compute_ms: float  # the whole batch's compute (concatenate + ONNX Runtime)
    batch_size: int  # samples in the batch


class BatchObserver(Protocol):
    def batch(self, size: int, queue_s: Sequence[float], compute_s: float) -> None: ...
    def dropped(self, reason: str, n: int) -> None: ...


@dataclass
class _Item:
    x: np.ndarray
    deadline: float | None  # loop.time() by which the caller needs the answer
    enqueued: float  # loop.time()
    future: asyncio.Future[BatchResult] = field(repr=False)

    @property
    def n(self) -> int:
        return int(self.x.shape[0])


class Batcher:
    def __init__(self, run: Callable[[np.ndarray], np.ndarray], *, executor: Executor,
                 max_batch_size: int, max_wait_ms: float, slots: int,
                 observer: BatchObserver, name: str = "") -> None:
        self._run = run
        self._executor = executor
        self.max_batch_size = max(1, max_batch_size)
        self._max_wait = max(0.0, max_wait_ms) / 1000.0
        self._slots = asyncio.Semaphore(max(1, slots))
        self._observer = observer
        self.name = name
        self._pending: deque[_Item] = deque()
        self._pending_samples = 0
        self._wakeup = asyncio.Event()
        self._running: set[asyncio.Future[tuple[np.ndarray, float]]] = set()
        self._closed = False
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"batcher-{name}")

    @property
    def depth(self) -> int:
        """Samples waiting for a batch."""
        return self._pending_samples

    def submit(self, x: np.ndarray, deadline: float | None) -> asyncio.Future[BatchResult]:
        """Queue ``x`` (batch dim first); the future resolves with this caller's rows."""
        if self._closed:
            raise ShuttingDownError("cloud node is shutting down")
        loop = asyncio.get_running_loop()
        item = _Item(x, deadline, loop.time(), loop.create_future())
        self._pending.append(item)
        self._pending_samples += item.n
        self._wakeup.set()
        return item.future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.acquire()
            try:
                while not self._pending:
                    if self._closed:
                        return
                    self._wakeup.clear()
                    await self._wakeup.wait()
                await self._fill(loop)
                batch = self._take(loop)
            except BaseException:
                self._slots.release()
                raise
            if not batch:
                self._slots.release()
                continue
            self._start(loop, batch)

    async def _fill(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait until the batch is full or the oldest request has waited max_wait."""
        if self._max_wait <= 0:
            return
        until = self._pending[0].enqueued + self._max_wait
        while self._pending_samples < self.max_batch_size and not self._closed:
            if loop.time() >= until:
                return
            self._wakeup.clear()
            timer = loop.call_at(until, self._wakeup.set)
            try:
                await self._wakeup.wait()
            finally:
                timer.cancel()

    def _take(self, loop: asyncio.AbstractEventLoop) -> list[_Item]:
        batch: list[_Item] = []
        size, expired, gone = 0, 0, 0
        now = loop.time()
        while self._pending:
            item = self._pending[0]
            if batch and size + item.n > self.max_batch_size:
                break
            self._pending.popleft()
            self._pending_samples -= item.n
            late = item.deadline is not None and item.deadline <= now
            if late:
                expired += 1
                if not item.future.done():
                    item.future.set_exception(DeadlineError("deadline passed while queued"))
            elif item.future.done():  # the caller went away (cancelled RPC)
                gone += 1
            else:
                batch.append(item)
                size += item.n
        if expired:
            self._observer.dropped("deadline", expired)
        if gone:
            self._observer.dropped("cancelled", gone)
        return batch

    def _start(self, loop: asyncio.AbstractEventLoop, batch: list[_Item]) -> None:
        started = loop.time()
        xs = [it.x for it in batch]
        fut = loop.run_in_executor(self._executor, self._compute, xs)
        self._running.add(fut)
        fut.add_done_callback(lambda f: self._finish(f, batch, started))

    def _compute(self, xs: list[np.ndarray]) -> tuple[np.ndarray, float]:
        t0 = time.perf_counter()
        x = xs[0] if len(xs) == 1 else np.concatenate(xs, axis=0)
        y = self._run(x)
        return y, time.perf_counter() - t0

    def _finish(self, fut: asyncio.Future[tuple[np.ndarray, float]], batch: list[_Item],
                started: float) -> None:
        self._running.discard(fut)
        self._slots.release()
        try:
            y, compute_s = fut.result()
        except BaseException as e:  # handed to every caller of the batch
            for it in batch:
                if not it.future.done():
                    it.future.set_exception(e)
            return
        size = sum(it.n for it in batch)
        queue_s = [started - it.enqueued for it in batch]
        self._observer.batch(size, queue_s, compute_s)
        offset = 0
        for it, q in zip(batch, queue_s, strict=True):
            if not it.future.done():
                it.future.set_result(BatchResult(y[offset:offset + it.n], q * 1000.0,
                                                 compute_s * 1000.0, size))
            offset += it.n

    async def close(self) -> None:
        """Finish everything queued and running, then stop (graceful drain)."""
        self._closed = True
        self._wakeup.set()
        await self._task
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
