"""The process helpers the tests use: real servers on free loopback ports, cleaned up
(they live in :mod:`collab.procs`, which shipped code imports)."""

from __future__ import annotations

from collab.procs import (
    Broker,
    collab_process,
    free_port,
    mosquitto,
    mosquitto_binary,
    stop_process,
    wait_for_port,
)

__all__ = ["Broker", "collab_process", "free_port", "mosquitto", "mosquitto_binary", "stop_process", "wait_for_port"]
