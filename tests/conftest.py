from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from collab.testing.procs import Broker, mosquitto, mosquitto_binary


@pytest.fixture
def broker() -> Iterator[Broker]:
    """A real Mosquitto on a free loopback port (fails in CI when it is missing)."""
    if mosquitto_binary() is None:
        if os.environ.get("CI"):
            pytest.fail("mosquitto is not installed; .ci/run must apt-get install it")
        pytest.skip("mosquitto is not installed (apt-get install -y mosquitto)")
    with mosquitto() as b:
        yield b
