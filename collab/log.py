"""The library logger. Modules log through ``logger`` with %-style arguments;
only entry points call :func:`setup_logging` (which uses ``logging.basicConfig``)."""

from __future__ import annotations

import logging
import os

logger = logging.getLogger("collab")


def setup_logging(level: str | int | None = None) -> None:
    """Configure root logging for a CLI entry point (never call from library code)."""
    lvl = level if level is not None else os.environ.get("COLLAB_LOG", "INFO")
    logging.basicConfig(
        level=lvl,
        format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s",
    )
