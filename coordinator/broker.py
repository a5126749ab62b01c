"""A broker for demos: when no ``--broker`` is given the coordinator runs one itself —
Mosquitto when installed, else the embedded minimal Python broker (``minibroker``)."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from collab.errors import ControlPlaneError
from collab.log import logger
from collab.procs import mosquitto_binary, stop_process, wait_for_port
from coordinator.minibroker import embedded_broker


@contextmanager
def own_broker(host: str = "127.0.0.1", port: int = 1883, kind: str = "auto") -> Iterator[str]:
    """Run a broker on ``host:port`` (kind: auto | mosquitto | embedded); yields its URL."""
    binary = mosquitto_binary()
    if kind == "embedded" or (kind == "auto" and binary is None):
        if binary is None:
            logger.info("mosquitto is not installed: using the embedded broker")
        with embedded_broker(host, port) as url:
            yield url
        return
    if binary is None:
        raise ControlPlaneError("the mosquitto binary is not installed (apt-get install mosquitto)")
    with _mosquitto(binary, host, port) as url:
        yield url


@contextmanager
def _mosquitto(binary: str, host: str, port: int, extra_config: str = "") -> Iterator[str]:
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
