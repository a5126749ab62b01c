"""A bounded queue of messages waiting for the broker: while it is unreachable the oldest
are dropped (and counted) rather than memory growing with the outage."""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class Outbox(Generic[T]):
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"outbox capacity must be >= 1 (got {capacity})")
        self._q: deque[T] = deque(maxlen=capacity)
        self._lock = threading.Lock()
        self.dropped = 0  # messages pushed out by newer ones, since start

    def put(self, item: T) -> None:
        with self._lock:
            if len(self._q) == self._q.maxlen:
                self.dropped += 1
            self._q.append(item)

    def take(self) -> list[T]:
        """Everything queued, oldest first; the queue is empty afterwards."""
        with self._lock:
            items = list(self._q)
            self._q.clear()
            return items

    def __len__(self) -> int:
        return len(self._q)
