"""The edge runtime: ONNX Runtime sessions for the full model, heads and tails.

Shared by the SDK (collab.Client) and the edge daemon. Every head, tail and the full model
is a chain of the bundle's segment sessions (:mod:`collab.chain`): one session per segment,
shared by every path that runs it, so the weights are in memory once however many paths
are ready. Sessions load lazily and are cached: the full model's segments are loaded first
(:meth:`EdgeRuntime.load`, so edge-only answers are possible as soon as possible), then
:meth:`EdgeRuntime.warm` loads the rest and gives every session its one-time first run
(the client runs it in the background, :class:`Warmer`, the full model's segments first).
Tails are kept on the edge too: when a collaborative call fails, the tail finishes the
request from the head output already computed, so no edge work is wasted (design decision
of the fallback; with shared segments it costs no memory beyond the full model's).

``slowdown`` emulates a weaker device by sleeping (slowdown - 1) x the path's profiled
compute time (the bundle manifest's median, measured when the bundle was built: the sum of
its segments' for a chain) after every run, so a run takes what it took here plus that
padding. Padding by a fixed profile, not by this run's time or by a statistic of recent
runs, keeps host noise out of the factor (an OS stall, a GIL wait or load from another
process is added once, as it would be on the device, not multiplied) and makes the device
equally fast for every policy, whatever mix of paths it ran before.

``device`` emulates a named device tier instead (:mod:`collab.edge.tiers`): a run takes
``factor x`` the profiled time from its start, where the device draws the factor for each
run from its speed relative to this machine, its jitter, throttling episodes and load
bursts. The host's own run is hidden inside that time (it counts in full only when it is
longer): a tier brings its own noise model, and the host's noise is not the device's --
least of all the load of the other emulated devices of a fleet sharing this machine's
cores, which no real device meets (on fleet-8-edges it added 8 ms to every edge-only
request, more than the profile pass, spread over every path, had seen).
The runtime is the only part that knows the device: the decision engine learns the
resulting compute times from measurement.
No torch import anywhere here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from collab.bundle import Bundle, load_bundle
from collab.chain import BundleSessions
from collab.edge.tiers import Device
from collab.errors import BundleError, CollabError, ConfigError
from collab.log import logger
from collab.ort import InferenceError, dummy_inputs, run

_WARM_RUNS = 1  # lean sessions: the first run is as fast as later ones (benchmarks/bundle_v2.py)
_Path = tuple[tuple[str, ...], float]  # the files a path runs in order, its profiled ms


def _cancelled(stop: threading.Event | None) -> bool:
    """Stop requested, or the interpreter is shutting down: ``threading`` marks the main
    thread finished before it joins the remaining non-daemon threads, so a warm-up on
    such a thread ends after its current step instead of delaying exit by a whole bundle."""
    return (stop is not None and stop.is_set()) or not threading.main_thread().is_alive()


class EdgeRuntime:
    def __init__(
        self,
        bundle: Bundle | str | Path,
        *,
        intra_threads: int = 1,
        slowdown: float = 1.0,
        device: Device | None = None,
    ) -> None:
        if slowdown < 1.0:
            raise ConfigError(f"slowdown must be >= 1.0 (got {slowdown})")
        if device is not None and slowdown != 1.0:
            raise ConfigError("give a device tier or a slowdown, not both")
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        self.manifest = m = self.bundle.manifest
        self.intra_threads = intra_threads
        self.slowdown = slowdown
        self.device = device
        self._sessions = BundleSessions(self.bundle, intra_threads=intra_threads)
        self._warmed: set[str] = set()  # files whose warm-up runs are done
        # each path: the files it runs, in order, and its profiled compute ms (the padding unit)
        self._full: _Path = (m.full_paths(), m.full_ms)
        self._heads = {sp.name: (m.head_paths(sp.name), sp.head_ms) for sp in m.split_points}
        self._tails = {sp.name: (m.tail_paths(sp.name), sp.tail_ms) for sp in m.split_points}
        self._head_variants = {
            (sp.name, v.name): ((v.path,), v.ms) for sp in m.split_points for v in sp.head_variants
        }
        self._full_variants = {v.name: ((v.path,), v.ms) for v in m.full_variants}
        self._exits = {e.name: e for e in m.exits}
        # learned files (bottleneck encoders/decoders, exit heads): warmed after the rest
        self._learned = sorted(
            m.model_files()
            - set(m.full_paths())
            - {
                v.path
                for v in (*m.full_variants, *(v for sp in m.split_points for v in sp.head_variants))
            }
        )
        # model file -> shape of its input recorded at build time, batch 1
        self._known_shapes: dict[str, tuple[int, ...]] = {
            s.path: tuple(s.input_shape) for s in m.segments
        }
        self._known_shapes.update(
            {
                paths[0]: tuple(m.input_shape)
                for paths, _ in (*self._head_variants.values(), *self._full_variants.values())
            }
        )

    # -- sessions ---------------------------------------------------------------------
    def session(self, rel: str) -> ort.InferenceSession:
        return self._sessions.session(rel)

    def all_paths(self) -> list[str]:
        """Every model file, the full model's segments first: they are every head and tail too."""
        return [
            *self.manifest.full_paths(),
            *(p for paths, _ in self._head_variants.values() for p in paths),
            *(p for paths, _ in self._full_variants.values() for p in paths),
            *self._learned,
        ]

    def load(self, paths: list[str]) -> None:
        """Build the sessions of ``paths`` now, without running them: what edge-only needs
        before its first answer (the first request itself, or :meth:`warm`, runs them)."""
        for rel in paths:
            self.session(rel)

    def warm(self, paths: list[str] | None = None, stop: threading.Event | None = None) -> bool:
        """Load sessions and run each not yet warmed one on zeros: a session's first run
        does one-time work, which the first requests should not pay.

        Cancellable: ``stop`` (and interpreter shutdown, see :func:`_cancelled`) is checked
        before every session load and every run, so a caller waits for at most one of
        those. Returns False if it stopped early."""
        for rel in paths if paths is not None else self.all_paths():
            if _cancelled(stop):
                return False
            sess = self.session(rel)
            if rel not in self._warmed:
                if not self._warm_runs(rel, sess, stop):
                    return False
                self._warmed.add(rel)
        return True

    def _warm_runs(
        self, rel: str, sess: ort.InferenceSession, stop: threading.Event | None
    ) -> bool:
        """Run ``sess`` on zeros of its own declared inputs (every input, its dtype). A
        symbolic dim takes the bundle's recorded shape when known (the manifest's input or
        cut tensor shape: a tail after a dynamic reshape declares e.g. ``[batch, 'dim_1']``,
        and 1 there makes a Conv fail), else 1."""
        try:
            feeds = dummy_inputs(sess, {0: self._known_shapes.get(rel, ())})
        except InferenceError as e:  # e.g. a string input: warmed by its first request
            logger.debug("warm-up of %s skipped: %s", rel, e)
            return True
        for _ in range(_WARM_RUNS):
            if _cancelled(stop):
                return False
            try:
                run(sess, feeds)
            except InferenceError as e:
                logger.warning("warm-up run of %s failed: %s", rel, e)
                return True
        return True

    def loaded(self) -> int:
        return len(self._sessions.loaded())

    # -- running ------------------------------------------------------------------------
    def _timed(self, path: _Path, x: np.ndarray) -> tuple[np.ndarray, float]:
        files, profiled = path
        chain = self._sessions.chain(files)
        t0 = time.perf_counter()
        y = chain(x)
        ms = (time.perf_counter() - t0) * 1000.0
        base = profiled if profiled > 0 else ms
        # a device: its time from the run's start; a slowdown: padding on top of the run
        pad = (
            base * self.device.factor() - ms
            if self.device is not None
            else base * (self.slowdown - 1.0)
        )
        if pad > 0:
            time.sleep(pad / 1000.0)
            ms += pad
        return y, ms

    def has_full_variant(self, name: str) -> bool:
        return name in self._full_variants

    def full(self, x: np.ndarray, variant: str | None = None) -> tuple[np.ndarray, float]:
        """Edge-only: (output, compute ms including slowdown padding)."""
        if variant is None:
            return self._timed(self._full, x)
        try:
            return self._timed(self._full_variants[variant], x)
        except KeyError:
            raise BundleError(f"unknown edge-only variant {variant!r}") from None

    def head(
        self, split: str, x: np.ndarray, variant: str | None = None
    ) -> tuple[np.ndarray, float]:
        try:
            path = self._heads[split] if variant is None else self._head_variants[(split, variant)]
        except KeyError:
            raise BundleError(f"unknown split point/variant {split!r}/{variant!r}") from None
        return self._timed(path, x)

    def exit(self, name: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """Run to early exit ``name``'s cut, then its head: (cut tensor, exit logits, ms)."""
        try:
            e = self._exits[name]
        except KeyError:
            raise BundleError(f"unknown early exit {name!r}") from None
        feature, ms = self.head(e.split, x)
        logits, ms_exit = self._timed(((e.path,), e.ms), feature)
        return feature, logits, ms + ms_exit

    def resume(self, name: str, feature: np.ndarray, split: str | None) -> tuple[np.ndarray, float]:
        """From early exit ``name``'s cut tensor on: the rest of the head of split point
        ``split`` (its feature), or with ``split`` None the rest of the full model."""
        m = self.manifest
        at = m.split(self._exits[name].split)
        if split is None:
            files, ms = m.full_paths()[at.boundary :], m.full_ms - at.head_ms
        else:
            sp = m.split(split)
            files = m.head_paths(split)[at.boundary :]
            ms = sp.head_ms - at.head_ms
        return self._timed((files, max(ms, 0.0)), feature)

    def tail(self, split: str, feature: np.ndarray) -> tuple[np.ndarray, float]:
        try:
            path = self._tails[split]
        except KeyError:
            raise BundleError(f"unknown split point {split!r}") from None
        return self._timed(path, feature)


@dataclass
class Warmer:
    """The background warm-up of one runtime: created idle, started by its owner (the
    client registers it first, so ``close()`` can always join it).

    The thread is NOT a daemon. The interpreter never joins daemon threads, and one still
    inside ONNX Runtime when the process exits aborts it (SIGABRT, exit code 134,
    "terminate called without an active exception"). A non-daemon thread is joined by
    interpreter shutdown, and it notices that shutdown between two sessions or runs
    (:meth:`EdgeRuntime.warm`), so a script that never calls close() exits cleanly too,
    after at most one session load. ``close()`` and ``swap_bundle`` stop it through
    :attr:`stop`."""

    runtime: EdgeRuntime
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread = field(init=False)
    after: Callable[[], None] | None = None  # run once the sessions are warm

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, name="collab-warm", daemon=False)

    def _run(self) -> None:
        try:
            # dropped before it runs: it may hold the model that holds this warmer, a
            # cycle that kept a swapped-out runtime (and its memory) alive until the next
            # full garbage collection
            after, self.after = self.after, None
            if self.runtime.warm(stop=self.stop) and after is not None:
                after()
        except CollabError as e:  # a broken file surfaces again, with its name, when used
            logger.warning("warming sessions failed: %s", e)
