"""SIGTERM/SIGINT handling for the daemons: both just ask the main loop to stop."""

from __future__ import annotations

import asyncio
import signal
import threading
from types import FrameType

from collab.log import logger

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def stop_on_signals() -> threading.Event:
    """Install SIGTERM/SIGINT handlers that set (and return) one stop event."""
    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info("received %s", signal.Signals(signum).name)
        stop.set()

    for sig in STOP_SIGNALS:
        signal.signal(sig, _on_signal)
    return stop


def stop_on_signals_async() -> asyncio.Event:
    """The same for an asyncio main: handlers on the running loop set the returned event."""
    stop = asyncio.Event()

    def _on_signal(sig: signal.Signals) -> None:
        logger.info("received %s", sig.name)
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, _on_signal, sig)
    return stop
