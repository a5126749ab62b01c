"""SIGTERM/SIGINT handling: the daemons' both just ask the main loop to stop; a
foreground job that owns child processes unwinds on SIGTERM as on Ctrl-C."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """While active, SIGTERM raises KeyboardInterrupt in the main thread, so the job's
    context managers stop the processes it started (a scenario's cloud node and link
    emulator) instead of leaving them orphaned, as Python's default SIGTERM does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _on_term(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt("SIGTERM")

    old = signal.signal(signal.SIGTERM, _on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
