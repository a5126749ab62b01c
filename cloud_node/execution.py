"""How a model's batches use the cores: the execution mode, chosen per model.

- ``threads``: one set of sessions whose intra-op pool spans every core; one batch
  at a time (each batch uses all cores: the lowest latency per batch).
- ``sessions``: one set of sessions per core, one intra-op thread each, one batch per
  set at a time, the leading thread pinned to that set's core (independent instances:
  on CPUs throughput scales almost linearly with them, and no pool synchronises).

Dynamic batching runs on top of either. ``auto`` times one full batch of the whole
model both ways at start-up (a few runs each, well under a second for the example
models) and keeps the faster in samples per second; the losing sessions are dropped.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from collab.bundle import Bundle
from collab.chain import BundleSessions
from collab.errors import ConfigError
from collab.log import logger

MODES = ("auto", "threads", "sessions")
_BUDGET_S = 0.25  # timing per mode, after one warm-up run
_MAX_RUNS = 20


@dataclass(frozen=True)
class Execution:
    """The sessions of one bundle: one set per slot, and the core of each slot (None:
    not pinned)."""

    mode: str  # "threads" or "sessions"
    sessions: tuple[BundleSessions, ...]
    cores: tuple[int, ...] | None


def usable_cores() -> tuple[int, ...]:
    """The cores this process may run on (all of them where affinity is unknown)."""
    try:
        return tuple(sorted(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return tuple(range(os.cpu_count() or 1))


_pinned = threading.local()  # .core: the core this thread last pinned itself to


def pin(core: int) -> None:
    """Pin the calling thread to ``core`` (Linux); a no-op if it is pinned there already,
    and where affinity cannot be set (the thread then runs where the OS puts it)."""
    if getattr(_pinned, "core", None) == core:
        return
    _pinned.core = core
    try:
        os.sched_setaffinity(0, {core})
    except (AttributeError, OSError) as e:
        logger.debug("cannot pin a thread to core %d: %s", core, e)


def plan(bundle: Bundle, mode: str, *, workers: int, intra_threads: int, batch: int) -> Execution:
    """The sessions of ``bundle`` in ``mode`` (``auto``: the faster of the two on a full
    batch of ``batch`` samples of the whole model)."""
    if mode not in MODES:
        raise ConfigError(f"execution mode {mode!r}: one of {', '.join(MODES)}")
    if mode == "threads":
        return _threads(bundle, workers * intra_threads)
    if mode == "sessions":
        return _sessions(bundle, workers, intra_threads)
    if workers == 1 and intra_threads == 1:  # one core, one thread: the same thing
        return _sessions(bundle, 1, 1)
    a = _threads(bundle, workers * intra_threads)
    b = _sessions(bundle, workers, intra_threads)
    x = np.zeros((batch, *bundle.manifest.input_shape[1:]), dtype=np.float32)
    rate_a, rate_b = _rate(a, x), _rate(b, x)
    best = a if rate_a > rate_b else b
    logger.info(
        "%s: execution %s (threads %.0f samples/s, sessions %.0f samples/s at batch %d)",
        bundle.manifest.model_name,
        best.mode,
        rate_a,
        rate_b,
        batch,
    )
    return best


def _threads(bundle: Bundle, threads: int) -> Execution:
    return Execution("threads", (BundleSessions(bundle, intra_threads=threads, lean=False),), None)


def _sessions(bundle: Bundle, workers: int, intra_threads: int) -> Execution:
    cores = usable_cores()
    sets = tuple(
        BundleSessions(bundle, intra_threads=intra_threads, lean=False) for _ in range(workers)
    )
    # pinned only when several sets each get a core of their own, with one thread:
    # otherwise pinning would stack sets (or a pool) on one core, or keep a lone set
    # off a core the OS would rather use
    pinned = intra_threads == 1 and 1 < workers <= len(cores)
    return Execution("sessions", sets, cores[:workers] if pinned else None)


def _rate(e: Execution, x: np.ndarray) -> float:
    """Samples per second of the whole model on every slot of ``e`` at once."""
    chains = [s.full() for s in e.sessions]
    for chain in chains:
        chain(x)  # warm-up, here: the first run allocates, and a broken model raises now
    counts = [0] * len(chains)
    failed: list[BaseException] = []
    go = threading.Event()

    def loop(i: int, chain: Callable[[np.ndarray], np.ndarray]) -> None:
        if e.cores is not None:
            pin(e.cores[i])
        go.wait()
        until = time.monotonic() + _BUDGET_S
        try:
            while counts[i] < _MAX_RUNS and time.monotonic() < until:
                chain(x)
                counts[i] += 1
        except BaseException as exc:  # re-raised by the caller's thread
            failed.append(exc)

    threads = [
        threading.Thread(target=loop, args=(i, c), name=f"collab-bench-{i}", daemon=True)
        for i, c in enumerate(chains)
    ]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    go.set()
    for t in threads:
        t.join()
    if failed:
        raise failed[0]
    return sum(counts) * len(x) / max(time.monotonic() - t0, 1e-9)
