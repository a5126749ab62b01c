from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from collab.procs import Broker, mosquitto, mosquitto_binary


@pytest.fixture
def broker() -> Iterator[Broker]:
    """A real Mosquitto on a free loopback port (fails in CI when it is missing)."""
    if mosquitto_binary() is None:
        if os.environ.get("CI"):
            pytest.fail("mosquitto is not installed; .ci/run must apt-get install it")
        pytest.skip("mosquitto is not installed (apt-get install -y mosquitto)")
    with mosquitto() as b:
        yield b


@pytest.fixture(scope="session")
def digits_bundle() -> Path:
    """The trained digits CNN split into a bundle (built once, cached across runs)."""
    from collab.split.examples import example_bundle

    return example_bundle("digits")


@pytest.fixture(scope="session")
def resnet_bundle() -> Path:
    """The ResNet-18-style example split into a bundle (built once, cached across runs)."""
    from collab.split.examples import example_bundle

    return example_bundle("resnet")
