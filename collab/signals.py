"""SIGTERM/SIGINT handling for the daemons: both just ask the main loop to stop."""

from __future__ import annotations

import signal
import threading
from types import FrameType

from collab.log import logger


def stop_on_signals() -> threading.Event:
    """Install SIGTERM/SIGINT handlers that set (and return) one stop event."""
    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info("received %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    return stop
