"""Fault injection into a running edge daemon, for tests and drills only.

Off unless ``--fault-injection DIR`` is given (a debug switch; nothing listens on the
network for it): the watchdog polls DIR every check and applies what its files say, so a
test injects a fault from outside the process, as an operator with a shell on the device
could. Write files atomically (temp + rename).

- ``leak_mb``: N — the current inference runtime allocates (and touches) N MiB more, each
  time the file's content changes; the memory belongs to that runtime and is freed with it,
  as a leak inside ONNX Runtime would be by a runtime restart.
- ``slowdown``: F >= 1 — every edge run is padded to F x its profiled time (the runtime's
  ``slowdown``, as a throttled CPU would be); removing the file restores the configured one.
"""

from __future__ import annotations

import threading
import weakref
from pathlib import Path

import numpy as np

from collab.edge.client import Client
from collab.edge.runtime import EdgeRuntime
from collab.log import RateLimited, logger

_MIB = 1 << 20


class FaultInjector:
    def __init__(self, root: Path, client: Client, log: RateLimited) -> None:
        self.root = Path(root)
        self._client = client
        self._log = log
        self._leaked: weakref.WeakKeyDictionary[EdgeRuntime, list[np.ndarray]] = (
            weakref.WeakKeyDictionary()
        )
        self._leak_seen = ""
        self._base_slowdown = client.config.slowdown
        logger.warning("fault injection is ON (%s): a debug switch, never for production", root)

    def _read(self, name: str) -> str:
        try:
            return (self.root / name).read_text().strip()
        except FileNotFoundError:
            return ""
        except OSError as e:
            self._log.warning(f"fault:{name}", "fault injection: cannot read %s: %s", name, e)
            return ""

    def _leak(self, rt: EdgeRuntime, mb: int) -> None:
        # np.ones touches every page: resident, not just reserved
        self._leaked.setdefault(rt, []).append(np.ones(max(mb, 0) * _MIB, np.uint8))
        logger.warning("fault injection: the runtime leaked %d MiB", mb)

    def poll(self) -> None:
        rt = self._client.runtime
        leak = self._read("leak_mb")
        if leak and leak != self._leak_seen:
            self._leak_seen = leak
            try:
                mb = int(leak)
            except ValueError:
                self._log.warning("fault:leak_mb", "fault injection: leak_mb %r is no int", leak)
            else:  # off the watchdog's thread: a leak grows while the watchdog watches
                threading.Thread(
                    target=self._leak, args=(rt, mb), name="collab-fault-leak", daemon=True
                ).start()
        text = self._read("slowdown")
        try:
            factor = max(float(text), 1.0) if text else self._base_slowdown
        except ValueError:
            self._log.warning("fault:slowdown", "fault injection: slowdown %r is no number", text)
            return
        if rt.device is None and rt.slowdown != factor:
            rt.slowdown = factor
            logger.warning("fault injection: edge runtime slowdown now %.1fx", factor)
