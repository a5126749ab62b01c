"""The coordinator's own broker when no ``--broker`` is given: a local Mosquitto, the
same broker the fleet runs (password files, ACLs, TLS and bridges work as in production).

It is never anonymous unless asked: the credentials and ACL of ``collab mqtt-auth`` are
created in (or reused from) an auth directory, and the coordinator logs in as its own
user. Nodes get credentials with ``collab mqtt-auth --out <that directory> --node ID``
(``--cloud ID`` for a cloud node), followed by a coordinator restart.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from collab.control.mqtt import MqttConfig
from collab.files import read_text
from collab.log import logger
from collab.procs import mosquitto
from collab.transport import is_loopback_host
from coordinator.cli_auth import write_fleet_auth

COORDINATOR_USER = "coordinator"


@contextmanager
def own_broker(
    host: str = "127.0.0.1",
    port: int = 1883,
    *,
    auth_dir: Path,
    anonymous: bool = False,
) -> Iterator[MqttConfig]:
    """Run Mosquitto on ``host:port``; yields the coordinator's connection to it
    (ControlPlaneError when not installed). ``anonymous`` lets anyone connect (tests,
    demos): an explicit choice, warned about when the broker listens beyond loopback."""
    url = f"mqtt://{host}:{port}"
    if anonymous:
        if not is_loopback_host(host):
            logger.warning("own broker on %s is ANONYMOUS: anyone reaching it can publish", url)
        conf, mqtt = "allow_anonymous true\n", MqttConfig(url=url)
    else:
        passwords = write_fleet_auth(auth_dir, [], coordinator=COORDINATOR_USER)
        conf = read_text(auth_dir / "mosquitto.conf", "broker auth config")
        if os.geteuid() == 0:  # it would drop to its own user, who cannot read the 0600
            conf += "user root\n"  # files: it keeps the coordinator's user instead
        mqtt = MqttConfig(url=url, username=COORDINATOR_USER, password=passwords[COORDINATOR_USER])
    with mosquitto(conf, host=host, port=port) as b:
        logger.info(
            "started own broker: mosquitto on %s (pid %d, %s)",
            b.url,
            b.proc.pid,
            "anonymous" if anonymous else f"credentials and ACL in {auth_dir}",
        )
        yield mqtt
