"""Trace-driven user-space link emulator (bandwidth, delay, jitter, loss, outages)."""

from collab.emulator.control import EmulatorProcess, EmulatorThread
from collab.emulator.proxy import LinkEmulator
from collab.emulator.traces import (
    DirectionTrace,
    LinkTrace,
    MahimahiTrace,
    Segment,
    load_mahimahi,
    parse_mahimahi,
)

__all__ = [
    "DirectionTrace",
    "EmulatorProcess",
    "EmulatorThread",
    "LinkEmulator",
    "LinkTrace",
    "MahimahiTrace",
    "Segment",
    "load_mahimahi",
    "parse_mahimahi",
]
