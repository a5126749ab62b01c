"""The one signal policy of every daemon: SIGTERM and SIGINT both ask the main loop to stop."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator

import pytest

from collab.signals import STOP_SIGNALS, stop_on_signals, stop_on_signals_async


@pytest.fixture(autouse=True)
def _restore_handlers() -> Iterator[None]:
    saved = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


@pytest.mark.parametrize("sig", STOP_SIGNALS)
def test_stop_on_signals_sets_the_stop_event(sig: signal.Signals) -> None:
    stop = stop_on_signals()
    assert not stop.is_set()
    os.kill(os.getpid(), sig)
    assert stop.wait(5)


@pytest.mark.parametrize("sig", STOP_SIGNALS)
def test_stop_on_signals_async_sets_the_stop_event(sig: signal.Signals) -> None:
    async def main() -> bool:
        stop = stop_on_signals_async()
        os.kill(os.getpid(), sig)
        await asyncio.wait_for(stop.wait(), 5)
        return stop.is_set()

    assert asyncio.run(main())
