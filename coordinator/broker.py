"""The coordinator's own broker when no ``--broker`` is given: a local Mosquitto, the
same broker the fleet runs (password files, ACLs, TLS and bridges work as in production)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from collab.log import logger
from collab.procs import mosquitto


@contextmanager
def own_broker(host: str = "127.0.0.1", port: int = 1883) -> Iterator[str]:
    """Run Mosquitto on ``host:port``; yields its URL (ControlPlaneError when not installed)."""
    with mosquitto(host=host, port=port) as b:
        logger.info("started own broker: mosquitto on %s (pid %d)", b.url, b.proc.pid)
        yield b.url
