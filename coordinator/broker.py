"""A broker for demos: when no ``--broker`` is given the coordinator runs Mosquitto itself.

There is no embedded Python broker; without the ``mosquitto`` binary this fails with a
clear error rather than pretending.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from collab.errors import ControlPlaneError
from collab.log import logger
from collab.testing.procs import mosquitto_binary, stop_process, wait_for_port


@contextmanager
def own_broker(host: str = "127.0.0.1", port: int = 1883, extra_config: str = "") -> Iterator[str]:
    """Run Mosquitto on ``host:port``; yields its mqtt:// URL."""
    binary = mosquitto_binary()
    if binary is None:
        raise ControlPlaneError("no --broker given and the mosquitto binary is not installed "
                                "(apt-get install mosquitto) — the embedded Python broker is not "
                                "implemented; start a broker and pass --broker mqtt://HOST:PORT")
    with tempfile.TemporaryDirectory(prefix="collab-broker-") as d:
        conf = Path(d) / "mosquitto.conf"
        anon = "" if "allow_anonymous" in extra_config else "allow_anonymous true\n"
        conf.write_text(f"listener {port} {host}\npersistence false\nlog_dest stderr\n{anon}{extra_config}\n")
        log = open(Path(d) / "mosquitto.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
        try:
            try:
                wait_for_port(host, port, 10.0, proc)
            except (RuntimeError, TimeoutError) as e:
                raise ControlPlaneError(f"own Mosquitto did not start on {host}:{port}: {e} "
                                        f"({(Path(d) / 'mosquitto.log').read_text()[-300:]})") from e
            logger.info("started own broker: mosquitto %s on %s:%d (pid %d)", binary, host, port, proc.pid)
            yield f"mqtt://{host}:{port}"
        finally:
            stop_process(proc)
            log.close()
