"""The library logger. Modules log through ``logger`` with %-style arguments;
only entry points call :func:`setup_logging` (which uses ``logging.basicConfig``)."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

logger = logging.getLogger("collab")


def setup_logging(level: str | int | None = None) -> None:
    """Configure root logging for a CLI entry point (never call from library code)."""
    lvl = level if level is not None else os.environ.get("COLLAB_LOG", "INFO")
    logging.basicConfig(
        level=lvl,
        format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s",
    )


class RateLimited:
    """Log a repeated cause at most once per ``interval_s``: a peer that sends garbage in a
    loop must not fill the disk. The next line after a quiet period says how many were
    suppressed. At most ``max_causes`` causes are tracked (the oldest is forgotten), so
    hostile input that varies the cause cannot grow memory either."""

    def __init__(
        self,
        log: logging.Logger = logger,
        *,
        interval_s: float = 60.0,
        max_causes: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._interval = interval_s
        self._max = max_causes
        self._clock = clock
        self._state: OrderedDict[str, tuple[float, int]] = OrderedDict()  # last, suppressed
        self._lock = threading.Lock()

    def log(
        self, level: int, cause: str, msg: str, *args: object, exc_info: BaseException | None = None
    ) -> bool:
        """Log ``msg % args`` unless ``cause`` was logged less than ``interval_s`` ago;
        True if it was logged."""
        now = self._clock()
        with self._lock:
            last, suppressed = self._state.pop(cause, (None, 0))
            if last is not None and now - last < self._interval:
                self._state[cause] = (last, suppressed + 1)
                return False
            self._state[cause] = (now, 0)
            while len(self._state) > self._max:
                self._state.popitem(last=False)
        if suppressed:
            msg += " [%d similar suppressed]"
            args = (*args, suppressed)
        self._log.log(level, msg, *args, exc_info=exc_info)
        return True

    def warning(
        self, cause: str, msg: str, *args: object, exc_info: BaseException | None = None
    ) -> bool:
        return self.log(logging.WARNING, cause, msg, *args, exc_info=exc_info)
