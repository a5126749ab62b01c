"""The world a scenario runs in: the cloud node as a real process, the link emulator,
and the events (kill/start the node, cut/restore the link) at their trace times."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from cloud_node.execution import usable_cores
from collab.emulator import EmulatorProcess, LinkTrace
from collab.emulator.traces import DirectionTrace
from collab.errors import CollabError, TransportError
from collab.log import logger
from collab.procs import free_port, stop_process, wait_for_port
from collab.scenario.schema import Scenario


class CloudNode:
    """``collab cloud`` as a real process that events can kill (SIGKILL) and start again.

    The cloud is another machine: on a host with two cores or more it runs on the last
    one alone (:func:`cloud_cores`), so a restarted node loading its sessions, or a
    fleet's batches, do not slow the emulated devices' compute. Unpinned, a restarted
    EfficientNet node made every device 40-60 % slower for 5-8 s, which no oracle
    prices."""

    def __init__(self, bundle: Path, sc: Scenario, log: Path) -> None:
        self.bundle, self.sc, self.log = bundle, sc, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.kills = 0

    def start(self) -> int:
        self.port = free_port()
        cores = cloud_cores()
        out = open(self.log, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "collab.cli",
                "cloud",
                "--bundle",
                str(self.bundle),
                "--listen",
                f"127.0.0.1:{self.port}",
                *self.sc.cloud.argv(),
                "--grace-s",
                "1",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=None if cores is None else partial(os.sched_setaffinity, 0, cores),
        )
        out.close()
        try:
            wait_for_port("127.0.0.1", self.port, 60.0, self.proc)
        except (RuntimeError, TimeoutError) as e:
            self.stop()
            raise TransportError(f"cloud node did not start ({e}); see {self.log}") from e
        return self.port

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)
            self.kills += 1

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 5.0)


def cloud_cores() -> set[int] | None:
    """The cores a scenario's cloud node runs on: the last of this process's when it has
    two or more (None: unpinned)."""
    cores = usable_cores()
    return {cores[-1]} if len(cores) >= 2 and hasattr(os, "sched_setaffinity") else None


def unlimited_link() -> LinkTrace:
    d = DirectionTrace.constant(bandwidth_bps=None)
    return LinkTrace(uplink=d, downlink=d)


class Events:
    """Applies the scenario's events at their trace times in a background thread."""

    def __init__(self, sc: Scenario, t0: float, cloud: CloudNode, emu: EmulatorProcess) -> None:
        self.plan: list[tuple[float, str]] = []
        for e in sc.events:
            self.plan.append((e.at_s, e.action))
            if e.action == "cut_link" and e.duration_s:
                self.plan.append((e.at_s + e.duration_s, "restore_link"))
        self.plan.sort()
        self.t0, self.cloud, self.emu = t0, cloud, emu
        self.log: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scenario-events", daemon=True)

    def __enter__(self) -> Events:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(90)

    def _run(self) -> None:
        for at, action in self.plan:
            if self._stop.wait(max(0.0, self.t0 + at - time.monotonic())):
                return
            try:
                if action == "kill_cloud":
                    self.cloud.kill()
                elif action == "start_cloud":
                    if not self.cloud.alive:
                        port = self.cloud.start()
                        self.emu.set_upstream("127.0.0.1", port)
                elif action == "cut_link":
                    self.emu.cut(True)
                elif action == "restore_link":
                    self.emu.cut(False)
            except CollabError as e:
                logger.warning("event %s at %.1fs failed: %s", action, at, e)
            # when the action took effect (a started node listens), for the oracle
            self.log.append(
                {"at_s": at, "done_s": round(time.monotonic() - self.t0, 3), "action": action}
            )


@contextmanager
def scenario_env(
    sc: Scenario, bundle: Path, logs: Path
) -> Iterator[tuple[CloudNode, EmulatorProcess]]:
    cloud = CloudNode(bundle, sc, logs / "cloud.log")
    cloud.start()
    try:
        with EmulatorProcess(upstream=("127.0.0.1", cloud.port), link=sc.link, seed=sc.seed) as emu:
            yield cloud, emu
    finally:
        cloud.stop()
