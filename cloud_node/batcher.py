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

With ``edf`` the queue is ordered by deadline (earliest first; none = last, in arrival
order) instead of arrival, a request that the work queued ahead of it would make late
is refused on arrival (:class:`LateError`, before it queues, so the caller can still
finish it itself), and a batch stops growing before it would make its most urgent
request late; the predictions come from :class:`cloud_node.cost.BatchCost`. With
``max_queue_ms`` a request whose predicted wait is longer is refused
(:class:`OverloadedError` with a retry-after hint): a bounded queue, by time.

A slot is also an index: slot ``i`` computes with ``runs[i]`` (its own ONNX Runtime
sessions in the "sessions" execution mode) and, if ``cores`` is given, on core
``cores[i]`` (the leading thread pins itself there before it computes).
"""

from __future__ import annotations

import math
import threading
import time
from bisect import insort
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Protocol

import numpy as np

from cloud_node.cost import BatchCost
from cloud_node.execution import pin
from collab.errors import CancelledError, ClosedError, DeadlineError, LateError, OverloadedError

_NO_DEADLINE = math.inf
_KEY = attrgetter("key")
# EDF's deadline decisions: predicted compute x the cost model's margin, plus the
# reply's way out
_REPLY_S = 0.0005


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
        "key",
        "leading",
        "n",
        "promoted",
        "queued",
        "result",
        "slot",
        "x",
    )

    def __init__(
        self,
        x: np.ndarray,
        deadline: float | None,
        alive: Callable[[], bool] | None,
        key: tuple[float, int],
    ) -> None:
        self.x = x
        self.key = key  # queue order: (deadline, arrival) with EDF, (inf, arrival) without
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
        self.slot = -1  # the slot index this item's thread holds while it leads

    @property
    def done(self) -> bool:
        return self.result is not None or self.error is not None


class Batcher:
    def __init__(
        self,
        run: Callable[[np.ndarray], np.ndarray] | Sequence[Callable[[np.ndarray], np.ndarray]],
        *,
        max_batch_size: int,
        max_wait_ms: float,
        observer: BatchObserver,
        slots: int = 0,
        name: str = "",
        wait_when_idle: bool = False,
        edf: bool = False,
        max_queue_ms: float = 0.0,
        cores: Sequence[int] | None = None,
        cost: BatchCost | None = None,
    ) -> None:
        """``run``: one callable shared by ``slots`` slots, or one per slot (``slots``
        0); ``max_queue_ms`` 0 = no bound on the predicted wait."""
        runs = [run] * max(1, slots) if callable(run) else list(run)
        if not runs or (cores is not None and len(cores) != len(runs)):
            raise ValueError("one run (and one core, if pinned) per slot")
        self._runs = tuple(runs)
        self.max_batch_size = max(1, max_batch_size)
        self._max_wait = max(0.0, max_wait_ms) / 1000.0
        self._slots = len(self._runs)
        self._min_leaders = 0 if wait_when_idle else 1  # fill only with more leaders than this
        self._observer = observer
        self.name = name
        self._edf = edf
        self._max_queue = max(0.0, max_queue_ms) / 1000.0
        self._cores = tuple(cores) if cores is not None else None
        self.cost = cost or BatchCost()
        self._lock = threading.Lock()
        self._filled = threading.Condition(self._lock)  # a filling leader waits on this
        self._pending: list[_Item] = []  # sorted by key
        self._pending_samples = 0
        self._leaders = 0  # batch slots in use (filling or computing)
        self._free = list(range(self._slots - 1, -1, -1))  # slot indices not held
        self._computing = 0  # batches computing now
        self._computing_samples = 0
        self._arrivals = 0
        self._closed = False

    @property
    def depth(self) -> int:
        """Samples waiting for a batch."""
        return self._pending_samples

    def run(
        self, x: np.ndarray, deadline: float | None = None, alive: Callable[[], bool] | None = None
    ) -> BatchResult:
        """Compute ``x`` (batch dim first) as part of a batch; blocks the calling thread.
        LateError at once if the deadline has passed or (EDF) the queue makes it late,
        OverloadedError if the predicted wait is over ``max_queue_ms``."""
        with self._lock:
            if self._closed:
                raise ClosedError("cloud node is shutting down")
            self._arrivals += 1
            first = _NO_DEADLINE if deadline is None or not self._edf else deadline
            item = _Item(x, deadline, alive, (first, self._arrivals))
            if deadline is not None and deadline <= item.enqueued:
                self._observer.dropped("deadline", 1)
                raise LateError("deadline passed on arrival")
            if (
                not self._pending
                and self._leaders < self._slots
                and (self._max_wait <= 0 or self._leaders < self._min_leaders)
            ):
                # Idle fast path: nothing queued and no window to hold open, so this
                # request is a batch of its own — no queue, no event, one lock round trip.
                # Never refused for a prediction: no queue is to blame, and it starts now.
                self._leaders += 1
                item.slot = self._free.pop()
                self._computing += 1
                self._computing_samples += item.n
                solo = True
            else:
                solo = False
                self._admit(item)
                insort(self._pending, item, key=_KEY)
                self._pending_samples += item.n
                if self._pending_samples >= self.max_batch_size:
                    self._filled.notify()
                lead = self._leaders < self._slots
                if lead:
                    self._leaders += 1
                    item.slot = self._free.pop()
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

    def _admit(self, item: _Item) -> None:
        """Refuse (lock held) a request the queue cannot serve in time: over the wait
        bound, or (EDF) predicted to finish after its deadline. Predicted: the batches
        of earlier keys, ``slots`` at a time, after a slot frees (half a batch, if every
        slot computes), then the batch of the remainder that this request joins."""
        if not self._max_queue and not (self._edf and item.deadline is not None):
            return
        cost, b = self.cost, self.max_batch_size
        ahead = sum(it.n for it in self._pending if it.key < item.key)
        wait = (ahead // b) * cost(b) / self._slots
        if self._computing >= self._slots:
            wait += 0.5 * cost(-(-self._computing_samples // self._computing))
        if self._max_queue and wait > self._max_queue:
            self._observer.dropped("admission", 1)
            raise OverloadedError(
                f"queue full: predicted wait {wait * 1000:.1f} ms > "
                f"{self._max_queue * 1000:.1f} ms",
                retry_after_ms=wait * 1000.0,
            )
        if self._edf and item.deadline is not None and wait > 0:  # a queue to blame
            finish = item.enqueued + wait + self._finish(min(b, ahead % b + item.n))
            if finish > item.deadline:
                self._observer.dropped("late", 1)
                raise LateError(
                    f"predicted {(finish - item.deadline) * 1000:.1f} ms late behind the queue",
                    retry_after_ms=wait * 1000.0,
                )

    def _drain_ms(self) -> float:
        """Predicted ms until the work queued now is done (lock held): a retry-after hint."""
        b = self.max_batch_size
        return 1000.0 * -(-self._pending_samples // b) * self.cost(b) / self._slots

    def _run_solo(self, item: _Item) -> BatchResult:
        """Compute one request on its own thread (it holds a slot, it was never queued)."""
        item.queued = False
        try:
            self._compute([item], item.slot, solo=True)
        finally:
            with self._lock:
                self._computing -= 1
                self._computing_samples -= item.n
                self._pass_slot(item)
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
                    now = time.monotonic()
                    timeout = self._last_start(item) - now
                    if timeout <= 0:
                        self._unqueue(item)
                        raise self._expired(item, now)
                if item.event is None:
                    item.event = threading.Event()
                else:
                    item.event.clear()
                event = item.event
            event.wait(timeout)

    def _finish(self, n: int) -> float:
        """Predicted seconds from the start of a batch of ``n`` to its answer leaving:
        a high quantile, not the mean (:attr:`BatchCost.margin`), because a late answer
        is worse than an early refusal (the caller can still finish the request itself)."""
        return self.cost.margin * self.cost(n) + _REPLY_S

    def _last_start(self, item: _Item) -> float:
        """When ``item`` (with a deadline) must start computing at the latest."""
        assert item.deadline is not None
        return item.deadline - self._finish(item.n) if self._edf else item.deadline

    def _expired(self, item: _Item, now: float) -> DeadlineError:
        """The error of a request that left the queue uncomputed (lock held): refused
        with time to spare (EDF) or after its deadline passed."""
        assert item.deadline is not None
        self._observer.dropped("deadline", 1)  # in the queue: its deadline's doing
        if now < item.deadline:
            return LateError(
                "cannot start in time to make its deadline", retry_after_ms=self._drain_ms()
            )
        return DeadlineError("deadline passed while queued")

    def _unqueue(self, item: _Item) -> None:
        self._pending.remove(item)  # by identity: _Item defines no equality
        self._pending_samples -= item.n
        item.queued = False

    def _lead(self, me: _Item) -> None:
        """Run batches until our own request left the queue, then pass the slot on."""
        try:
            while me.queued and (me.deadline is None or self._last_start(me) > time.monotonic()):
                with self._lock:
                    self._fill(me)
                    batch = self._take()
                if batch:
                    self._compute(batch, me.slot)
        finally:
            with self._lock:
                if me.queued:  # expired before a batch took it
                    self._unqueue(me)
                    me.error = self._expired(me, time.monotonic())
                me.leading = False
                self._pass_slot(me)

    def _pass_slot(self, me: _Item) -> None:
        """Give our slot to the first waiting request in queue order, or free it (lock
        held). A request whose thread already leads, or was promoted, needs no slot."""
        slot, me.slot = me.slot, -1
        if self._pending:
            nxt = next((it for it in self._pending if not it.promoted and not it.leading), None)
            if nxt is not None:
                nxt.promoted = True
                nxt.slot = slot
                _signal(nxt)
                return
        self._free.append(slot)
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
        head = self._pending[0]
        until = head.enqueued + self._max_wait
        if me.deadline is not None:
            until = min(until, me.deadline)
        if self._edf and head.deadline is not None:  # a full batch must still make it
            until = min(until, head.deadline - self._finish(self.max_batch_size))
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
        """Pop the next batch (lock held), dropping requests nobody waits for any more
        and (EDF) those the batch would make late: a batch grows only while its
        predicted compute still ends before its most urgent (first) deadline."""
        batch: list[_Item] = []
        size, expired, gone, late = 0, 0, 0, 0
        now = time.monotonic()
        urgent = _NO_DEADLINE
        taken = 0
        for item in self._pending:
            if batch and size + item.n > self.max_batch_size:
                break
            if self._edf and batch and now + self._finish(size + item.n) > urgent:
                break  # it would make the batch's first request late: the next batch
            taken += 1
            self._pending_samples -= item.n
            item.queued = False
            if item.deadline is not None and item.deadline <= now:
                expired += 1
                item.error = DeadlineError("deadline passed while queued")
                _signal(item)
            elif (
                self._edf
                and item.deadline is not None
                and now + self._finish(item.n) > item.deadline
            ):
                late += 1
                item.error = LateError(
                    "predicted to finish after its deadline", retry_after_ms=self._drain_ms()
                )
                _signal(item)
            elif item.alive is not None and not item.alive():
                gone += 1
                item.error = CancelledError("caller went away")
                _signal(item)
            else:
                if not batch and item.deadline is not None:
                    urgent = item.deadline
                batch.append(item)
                size += item.n
        del self._pending[:taken]
        if batch:
            self._computing += 1
            self._computing_samples += size
            if self._leaders > 1:
                self._filled.notify_all()  # another filling leader may have lost its request
        if expired or late:  # in the queue: their deadlines' doing
            self._observer.dropped("deadline", expired + late)
        if gone:
            self._observer.dropped("cancelled", gone)
        return batch

    def _compute(self, batch: list[_Item], slot: int, solo: bool = False) -> None:
        """Run ``batch`` on slot ``slot``; ``solo``: it is the calling thread's own
        request alone (nobody to wake). The caller counted it in ``_computing``."""
        n = sum(it.n for it in batch)
        if self._cores is not None:
            pin(self._cores[slot])
        started = time.monotonic()
        try:
            x = batch[0].x if len(batch) == 1 else np.concatenate([it.x for it in batch], axis=0)
            y = self._runs[slot](x)
        except BaseException as e:  # handed to every caller of the batch
            with self._lock:
                if not solo:  # a solo caller's slot release counts it out
                    self._computing -= 1
                    self._computing_samples -= n
                for it in batch:
                    it.error = e
                    _signal(it)
            return
        compute_s = time.monotonic() - started
        size = int(x.shape[0])
        self.cost.observe(size, compute_s)
        queue_s = [started - it.enqueued for it in batch]
        self._observer.batch(size, queue_s, compute_s)
        compute_ms = compute_s * 1000.0
        if solo:  # our own thread reads the result: no lock, no signal
            batch[0].result = BatchResult(y, queue_s[0] * 1000.0, compute_ms, size)
            return
        offset = 0
        with self._lock:
            self._computing -= 1
            self._computing_samples -= n
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
