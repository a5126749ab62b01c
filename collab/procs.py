"""Start and stop local helper processes (Mosquitto, ``collab`` subcommands) and wait for
their ports: the coordinator's own broker, ``collab fl run`` and the scenario runner need
this, and the tests reuse it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from collab.errors import ControlPlaneError


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (servers should prefer binding port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_port(
    host: str, port: int, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@contextmanager
def collab_process(
    args: Sequence[str],
    *,
    port: int | None = None,
    host: str = "127.0.0.1",
    log: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``python -m collab.cli ARGS`` as a real process; wait for ``port`` if given."""
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "collab.cli", *args],
        stdout=out,
        stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    try:
        if port is not None:
            wait_for_port(host, port, timeout, proc)
        yield proc
    finally:
        stop_process(proc)
        if log:
            out.close()  # type: ignore[union-attr]


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    proc: subprocess.Popen[bytes]
    config: Path

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.path.exists(p)), None
    )


@contextmanager
def mosquitto(
    extra_config: str = "", host: str = "127.0.0.1", port: int | None = None
) -> Iterator[Broker]:
    """A Mosquitto on ``host:port`` (a free port when None) with its own config file;
    anonymous access unless ``extra_config`` sets ``allow_anonymous``."""
    binary = mosquitto_binary()
    if binary is None:
        raise ControlPlaneError(
            "the mosquitto binary is not installed: apt-get install mosquitto "
            "(or pass --broker URL of a running broker)"
        )
    port = free_port(host) if port is None else port
    with tempfile.TemporaryDirectory(prefix="collab-mosq-", ignore_cleanup_errors=True) as tmp:
        d = Path(tmp)
        conf = d / "mosquitto.conf"
        body = (
            extra_config
            if "allow_anonymous" in extra_config
            else "allow_anonymous true\n" + extra_config
        )
        conf.write_text(f"listener {port} {host}\npersistence false\nlog_dest stderr\n{body}\n")
        with open(d / "mosquitto.log", "wb") as log:
            proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
            try:
                try:
                    wait_for_port(host, port, 10.0, proc)
                except (RuntimeError, TimeoutError) as e:
                    raise ControlPlaneError(
                        f"mosquitto did not start on {host}:{port}: {e} "
                        f"({(d / 'mosquitto.log').read_text()[-300:]})"
                    ) from e
                yield Broker(host=host, port=port, proc=proc, config=conf)
            finally:
                stop_process(proc)
