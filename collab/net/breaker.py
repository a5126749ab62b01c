"""Circuit breaker for the cloud: stop paying for calls that keep failing.

closed --N consecutive failures--> open --cooldown passed and a probe succeeded-->
half_open --first call succeeds--> closed (or fails --> open again). While open the
decision engine treats every cloud path as infeasible; the network monitor keeps
probing, which is how the breaker learns the cloud is back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Literal

State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    def __init__(
        self,
        *,
        failure_threshold: int = 3,
        cooldown_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.clock = clock
        self._state: State = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self.opened_count = 0
        self._lock = threading.Lock()

    @property
    def state(self) -> State:
        return self._state

    @property
    def is_open(self) -> bool:
        return self._state == "open"

    def record_success(self) -> None:
        if self._state == "closed" and self._failures == 0:
            return  # the common case needs no lock
        with self._lock:
            self._failures = 0
            self._state = "closed"

    def record_failure(self) -> bool:
        """Count a failed call; True if this failure opened the breaker."""
        with self._lock:
            self._failures += 1
            if self._state == "half_open" or (
                self._state == "closed" and self._failures >= self.failure_threshold
            ):
                self._state = "open"
                self._opened_at = self.clock()
                self.opened_count += 1
                return True
            return False

    def probe_succeeded(self) -> None:
        """A probe reached the cloud: after the cooldown, let real calls try again."""
        with self._lock:
            if self._state == "open" and self.clock() - self._opened_at >= self.cooldown_s:
                self._state = "half_open"
                self._failures = 0
