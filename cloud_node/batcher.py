"""Dynamic batching of one (model, split) queue, leader/follower style.

Every request arrives on its own gRPC handler thread. If one of ``slots`` batch
slots is free, that thread *leads*: while another batch is in progress it waits for
the batch to fill (until ``max_batch_size`` samples queue up or the oldest request
has waited ``max_wait_ms``),
concatenates the queued inputs along dim 0, runs ONNX Runtime itself (which releases
the GIL) and hands every caller its rows. Otherwise it waits; when a leader finishes
and requests are still queued, it promotes the oldest waiting thread to lead the next
batch. An unloaded request therefore costs no thread hand-off at all (as cheap as a
plain gRPC + ORT handler), and under load batches grow while the slots are busy.

Requests whose deadline passes or whose caller went away are dropped before compute:
a late answer helps nobody.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from collab.errors import CancelledError, ClosedError, DeadlineError


@dataclass(slots=True)
class BatchResult:  # not frozen: built once per request on the hot path
    output: np.ndarray  # this caller's rows of the batch output
    queue_ms: float  # enqueue -> batch start
    compute_ms: float  # the whole batch's compute (concatenate + ONNX Runtime)
    batch_size: int  # samples in the batch


class BatchObserver(Protocol):
    def batch(self, size: int, queue_s: Sequence[float], compute_s: float) -> None: ...
    def dropped(self, reason: str, n: int) -> None: ...


class _Item:
    __slots__ = (
        "alive",
        "deadline",
        "enqueued",
        "error",
        "event",
        "leading",
        "n",
        "promoted",
        "queued",
        "result",
        "x",
    )

    def __init__(
        self, x: np.ndarray, deadline: float | None, alive: Callable[[], bool] | None
    ) -> None:
        self.x = x
        self.n = int(x.shape[0])
        self.deadline = deadline  # time.monotonic() by which the caller needs the answer
        self.alive = alive  # False once the caller went away (cancelled RPC)
        self.enqueued = time.monotonic()
        self.event: threading.Event | None = None  # created only if the caller has to wait
        self.result: BatchResult | None = None
        self.error: BaseException | None = None
        self.promoted = False  # this item's thread must lead the next batch
        self.leading = False  # this item's thread holds a slot right now
        self.queued = True  # still in the pending queue

    @property
    def done(self) -> bool:
        return self.result is not None or self.error is not None


class Batcher:
    def __init__(
        self,
        run: Callable[[np.ndarray], np.ndarray],
        *,
        max_batch_size: int,
        max_wait_ms: float,
        slots: int,
        observer: BatchObserver,
        name: str = "",
        wait_when_idle: bool = False,
    ) -> None:
        self._run = run
        self.max_batch_size = max(1, max_batch_size)
        self._max_wait = max(0.0, max_wait_ms) / 1000.0
        self._slots = max(1, slots)
        self._min_leaders = 0 if wait_when_idle else 1  # fill only with more leaders than this
        self._observer = observer
        self.name = name
        self._lock = threading.Lock()
        self._filled = threading.Condition(self._lock)  # a filling leader waits on this
        self._pending: deque[_Item] = deque()
        self._pending_samples = 0
        self._leaders = 0  # batch slots in use (filling or computing)
        self._closed = False

    @property
    def depth(self) -> int:
        """Samples waiting for a batch."""
        return self._pending_samples

    def run(
        self, x: np.ndarray, deadline: float | None = None, alive: Callable[[], bool] | None = None
    ) -> BatchResult:
        """Compute ``x`` (batch dim first) as part of a batch; blocks the calling thread."""
        item = _Item(x, deadline, alive)
        with self._lock:
            if self._closed:
                raise ClosedError("cloud node is shutting down")
            if (
                not self._pending
                and self._leaders < self._slots
                and (self._max_wait <= 0 or self._leaders < self._min_leaders)
            ):
                # Idle fast path: nothing queued and no window to hold open, so this
                # request is a batch of its own — no queue, no event, one lock round trip.
                self._leaders += 1
                solo = True
            else:
                solo = False
                self._pending.append(item)
                self._pending_samples += item.n
                if self._pending_samples >= self.max_batch_size:
                    self._filled.notify()
                lead = self._leaders < self._slots
                if lead:
                    self._leaders += 1
                    item.leading = True
        if solo:
            return self._run_solo(item)
        while True:
            if lead:
                self._lead(item)
            lead = self._wait(item)
            if not lead:
                break
        if item.error is not None:
            raise item.error
        assert item.result is not None
        return item.result

    def _run_solo(self, item: _Item) -> BatchResult:
        """Compute one request on its own thread (it holds a slot, it was never queued)."""
        item.queued = False
        try:
            if item.deadline is not None and item.deadline <= item.enqueued:
                self._observer.dropped("deadline", 1)
                raise DeadlineError("deadline passed while queued")
            self._compute([item], solo=True)
        finally:
            with self._lock:
                self._pass_slot()
        if item.error is not None:
            raise item.error
        assert item.result is not None
        return item.result

    def _wait(self, item: _Item) -> bool:
        """Block until ``item`` is promoted (True: lead now) or answered (False). Every flag
        and event change happens under the lock, so no wake-up is lost; a promotion is
        looked at before completion, because a promoted request may have been answered by
        another batch meanwhile and its slot must still be passed on."""
        while True:
            with self._lock:
                if item.promoted:
                    item.promoted = False
                    item.leading = True
                    return True
                if item.done:
                    return False
                timeout = None
                if item.queued and item.deadline is not None:
                    timeout = item.deadline - time.monotonic()
                    if timeout <= 0:
                        self._unqueue(item)
                        self._observer.dropped("deadline", 1)
                        raise DeadlineError("deadline passed while queued")
                if item.event is None:
                    item.event = threading.Event()
                else:
                    item.event.clear()
                event = item.event
            event.wait(timeout)

    def _unqueue(self, item: _Item) -> None:
        self._pending.remove(item)
        self._pending_samples -= item.n
        item.queued = False

    def _lead(self, me: _Item) -> None:
        """Run batches until our own request left the queue, then pass the slot on."""
        try:
            while me.queued and (me.deadline is None or me.deadline > time.monotonic()):
                with self._lock:
                    self._fill(me)
                    batch = self._take()
                if batch:
                    self._compute(batch)
        finally:
            with self._lock:
                if me.queued:  # expired before a batch took it
                    self._unqueue(me)
                    me.error = DeadlineError("deadline passed while queued")
                    self._observer.dropped("deadline", 1)
                me.leading = False
                self._pass_slot()

    def _pass_slot(self) -> None:
        """Give our slot to the oldest waiting request, or free it (lock held). A request
        whose thread already leads, or was promoted, needs no slot."""
        if self._pending:
            nxt = next((it for it in self._pending if not it.promoted and not it.leading), None)
            if nxt is not None:
                nxt.promoted = True
                _signal(nxt)
                return
        self._leaders -= 1
        if self._leaders:
            self._filled.notify_all()  # a filling leader may now be alone: run

    def _fill(self, me: _Item) -> None:
        """Wait (lock held) until the batch is full or the oldest request waited max_wait —
        but (unless ``wait_when_idle``) only while another batch is in progress: with every
        other slot idle the node has spare capacity and waiting would only add latency, so
        an unloaded request never waits while batches still grow under load."""
        if self._max_wait <= 0 or not self._pending:
            return
        until = self._pending[0].enqueued + self._max_wait
        if me.deadline is not None:
            until = min(until, me.deadline)
        while (
            me.queued
            and self._pending_samples < self.max_batch_size
            and not self._closed
            and self._leaders > self._min_leaders
        ):
            remaining = until - time.monotonic()
            if remaining <= 0:
                return
            self._filled.wait(remaining)

    def _take(self) -> list[_Item]:
        """Pop the next batch (lock held), dropping requests nobody waits for any more."""
        batch: list[_Item] = []
        size, expired, gone = 0, 0, 0
        now = time.monotonic()
        while self._pending:
            item = self._pending[0]
            if batch and size + item.n > self.max_batch_size:
                break
            self._pending.popleft()
            self._pending_samples -= item.n
            item.queued = False
            if item.deadline is not None and item.deadline <= now:
                expired += 1
                item.error = DeadlineError("deadline passed while queued")
                _signal(item)
            elif item.alive is not None and not item.alive():
                gone += 1
                item.error = CancelledError("caller went away")
                _signal(item)
            else:
                batch.append(item)
                size += item.n
        if batch and self._leaders > 1:
            self._filled.notify_all()  # another filling leader may have lost its request
        if expired:
            self._observer.dropped("deadline", expired)
        if gone:
            self._observer.dropped("cancelled", gone)
        return batch

    def _compute(self, batch: list[_Item], solo: bool = False) -> None:
        """``solo``: the batch is the calling thread's own request alone (nobody to wake)."""
        started = time.monotonic()
        try:
            x = batch[0].x if len(batch) == 1 else np.concatenate([it.x for it in batch], axis=0)
            y = self._run(x)
        except BaseException as e:  # handed to every caller of the batch
            with self._lock:
                for it in batch:
                    it.error = e
                    _signal(it)
            return
        compute_s = time.monotonic() - started
        size = int(x.shape[0])
        queue_s = [started - it.enqueued for it in batch]
        self._observer.batch(size, queue_s, compute_s)
        compute_ms = compute_s * 1000.0
        if solo:  # our own thread reads the result: no lock, no signal
            batch[0].result = BatchResult(y, queue_s[0] * 1000.0, compute_ms, size)
            return
        offset = 0
        with self._lock:
            for it, q in zip(batch, queue_s, strict=True):
                it.result = BatchResult(y[offset : offset + it.n], q * 1000.0, compute_ms, size)
                offset += it.n
                _signal(it)

    def close(self) -> None:
        """Refuse new work and cut batching windows short, so queued requests run now."""
        with self._lock:
            self._closed = True
            self._filled.notify_all()


def _signal(item: _Item) -> None:
    """Wake the item's thread if it is (or is about to be) waiting; lock held."""
    if item.event is not None:
        item.event.set()
