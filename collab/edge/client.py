"""The edge SDK: ``collab.Client`` answers every request, choosing the path per request.

Fallback design: the edge holds the full model, every head AND every tail. A cloud
call that fails, would no longer return in time, or answers with anything but the
output the manifest promises (:mod:`collab.edge.reply`) is finished locally from what
the edge already computed: a collaborative request runs the local tail on the
uncompressed head output (so the head work is not wasted and the answer is exact);
a cloud-only request runs the full model. The cloud side, with the deadline budget of
its calls, is :mod:`collab.edge.cloud`. Nothing here imports torch.

Deadline semantics: ``infer`` always returns a result (``deadline_met`` tells whether
it came in time); with ``strict_deadline=True`` a late result raises DeadlineError.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from collab.bundle import Bundle
from collab.decision import Decision, Hysteresis, Policy, Profile, decide, parse_policy
from collab.edge.cloud import CallHandle, CloudLink, Remote
from collab.edge.config import ClientConfig, InferenceResult
from collab.edge.estimators import LoadEstimates
from collab.edge.explore import Explorer
from collab.edge.hedge import HedgePolicy, hedged
from collab.edge.model import LoadedModel, load_model
from collab.edge.runtime import EdgeRuntime, Warmer
from collab.edge.stats import ClientStats, Interval, LinkStats, StatsRecorder
from collab.edge.tiers import Device
from collab.errors import ClosedError, ConfigError, DeadlineError
from collab.log import logger
from collab.net.breaker import CircuitBreaker
from collab.net.estimator import LinkEstimator
from collab.net.monitor import NetworkMonitor

_SWAP_JOIN_S = 0.5  # swap_bundle waits this long at most for the old warm-up to stop


class Client:
    """``with collab.Client(bundle_dir, cloud=["host:port"]) as c: c.infer(x)``. Thread-safe."""

    def __init__(
        self,
        bundle_dir: str | os.PathLike[str],
        cloud: Sequence[str] | str | None = None,
        *,
        config: ClientConfig | None = None,
        device: Device | None = None,
        **overrides: Any,
    ) -> None:
        """``device``: an emulated device tier (collab.edge.tiers) for the edge runtime
        only; the decision engine is not told and learns its speed from measurement."""
        if cloud is not None:
            overrides["cloud"] = cloud
        base = config or ClientConfig()
        try:
            self.config = dataclasses.replace(base, **overrides)
        except TypeError as e:
            raise ConfigError(f"unknown Client option: {e}") from e
        cfg = self.config
        self._lock = threading.Lock()
        self._stats = StatsRecorder()
        self._loads = LoadEstimates(cfg.slowdown)
        self._hysteresis = Hysteresis(fraction=cfg.hysteresis, min_ms=cfg.hysteresis_ms)
        self._previous: str | None = None  # the last choice of ``auto`` (hysteresis)
        self._explorer = Explorer(
            interval_s=cfg.explore_interval_s,
            max_ratio=cfg.explore_max_ratio,
            stale_s=cfg.explore_stale_s,
        )
        self._decision_cache: dict[tuple[Any, ...], tuple[float, Decision]] = {}
        self._hedge = HedgePolicy(factor=cfg.hedge_factor, slack_ms=cfg.hedge_slack_ms)
        self._hedges: ThreadPoolExecutor | None = None  # cloud calls and hedged local finishes
        self._closed = False
        self._warmers: list[Warmer] = []  # started and not yet known to be finished
        self._retired: list[CloudLink] = []  # replaced clouds whose channel may still be open
        self._device = device  # the same device runs every bundle version
        self._forced: tuple[bool, str | None] = (False, None)  # set_mode: edge-only, variant
        self._model = self._load(bundle_dir, first=True)
        self._policy = parse_policy(cfg.policy, self._model.profile)
        self._cloud = self._connect(cfg.cloud)

    # -- the cloud side ------------------------------------------------------------------
    def _hedge_pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._hedges is None:
                self._hedges = ThreadPoolExecutor(max_workers=32, thread_name_prefix="collab-call")
            return self._hedges

    def _connect(self, addresses: Sequence[str]) -> CloudLink:
        return CloudLink(
            addresses, cfg=self.config, loads=self._loads, current=lambda: self._model
        ).start()

    def set_cloud(self, addresses: Sequence[str]) -> None:
        """Follow a new cloud address list (e.g. from the coordinator). Requests already
        talking to the old list finish there; its channel closes after a grace period."""
        if tuple(addresses) == self._cloud.addresses:
            return
        new = self._connect(tuple(addresses))
        with self._lock:
            old, self._cloud = self._cloud, new
            self._decision_cache.clear()
            self._retired = [c for c in self._retired if c.grace is not None and c.grace.is_alive()]
            self._retired.append(old)
        old.close(grace_s=min(self.config.cloud_timeout_ms / 1000.0, 10.0))
        logger.info("cloud endpoints now %s", ",".join(new.addresses) or "none (edge-only)")

    @property
    def cloud(self) -> tuple[str, ...]:
        return self._cloud.addresses

    @property
    def link(self) -> LinkEstimator:
        return self._cloud.link

    @property
    def breaker(self) -> CircuitBreaker:
        return self._cloud.breaker

    @property
    def monitor(self) -> NetworkMonitor | None:
        return self._cloud.monitor

    # -- lifecycle -------------------------------------------------------------------------
    def _load(self, source: str | os.PathLike[str] | Bundle, *, first: bool = False) -> LoadedModel:
        """Load ``source`` and start its warm-up, registered first so close() joins it
        (none starts once the client is closed). The ``first`` load's warm-up ends by
        timing the device (:meth:`_learn_speed`); a swap or a runtime restart keeps what
        the estimates know."""
        model = load_model(source, self.config, self._device)
        w = model.warmer
        if w is not None:
            if first:
                w.after = lambda: self._learn_speed(model)
            with self._lock:
                if self._closed:
                    return model
                self._warmers = [x for x in self._warmers if x.thread.is_alive()]
                self._warmers.append(w)
                w.thread.start()
        return model

    def warm(self) -> int:
        """Load and warm every session of the current bundle now, in this thread (e.g.
        before a timed run, when the background warm-up may not be done). Returns how
        many sessions are loaded."""
        model = self._model
        rt = model.runtime
        rt.warm()
        self._learn_speed(model)
        return rt.loaded()

    def _learn_speed(self, model: LoadedModel) -> None:
        """Time ``warm_speed_runs`` full-model runs on zeros, padded like requests, into the
        edge estimate: the engine knows the device's speed before the first request (as
        it knows the link from its first probes) instead of routing it as the profiler."""
        spec = model.specs.get("edge_only")
        m = model.bundle.manifest
        arr, _ = model.check_input(np.zeros(m.input_shape, np.dtype(m.input_dtype)))
        for _ in range(self.config.warm_speed_runs if spec is not None else 0):
            _, ms = model.runtime.full(arr)
            self._loads.edge_sample(ms, spec)

    def swap_bundle(self, bundle_dir: str | os.PathLike[str] | Bundle) -> str:
        """Switch to another bundle version atomically; in-flight requests finish on the
        old one (they hold a reference to it). Returns the new version."""
        model = self._load(bundle_dir)
        if self._policy.mode == "split":
            parse_policy(self._policy.key, model.profile)  # forced split must still exist
        with self._lock:
            old, self._model = self._model, model
            self._previous = None
            self._decision_cache.clear()
            self._loads.forget_cloud_compute()
        if old.warmer is not None:  # the old version's sessions are not worth warming any more
            old.warmer.stop.set()
            # waits for at most its current step; a longer one (a big session still
            # loading) goes on in the background and close() joins it
            old.warmer.thread.join(timeout=_SWAP_JOIN_S)
        self._cloud.poke()  # learn whether the cloud serves the new version
        logger.info(
            "switched to bundle %s version %s", model.bundle.name, model.bundle.version[:12]
        )
        return model.bundle.version

    def restart_runtime(self) -> str:
        """Fresh sessions of the current bundle (a leaking runtime's recovery): its files
        are read and hash-checked again; in-flight requests finish on the old sessions,
        which are freed once the last of them returns. BundleError if a file no longer
        matches (nothing changes then)."""
        return self.swap_bundle(self._model.bundle)

    def set_mode(self, *, edge_only: bool = False, variant: str | None = None) -> None:
        """Override every request's path (the edge watchdog's recoveries): ``edge_only``
        while the cloud is unreachable (no request waits for a dead link), ``variant``: the
        edge-only path on this full-model variant whatever the accuracy budget (latency
        over budget on the FP32 model). ``set_mode()`` restores the decision engine's
        choice. Requests already running keep the path they took."""
        if variant is not None and not self._model.runtime.has_full_variant(variant):
            raise ConfigError(f"bundle {self.bundle.name} has no full-model variant {variant!r}")
        with self._lock:
            self._forced = (edge_only or variant is not None, variant)
            self._decision_cache.clear()

    @property
    def bundle(self) -> Bundle:
        return self._model.bundle

    @property
    def runtime(self) -> EdgeRuntime:
        """The current bundle version's runtime (a concurrent swap may replace it)."""
        return self._model.runtime

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop and join every thread this client started: warm-ups (current and of
        swapped-out bundles), the network monitor and its confirming probes, the grace
        timers of replaced clouds (their channels close now). Each wait is bounded; a
        warm-up stops after its current session load or run. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            warmers, self._warmers = self._warmers, []
            retired, self._retired = self._retired, []
        for w in warmers:
            w.stop.set()
        self._cloud.close()
        for cl in retired:
            cl.close()
        if self._hedges is not None:  # the channels are closed: calls still out end now
            self._hedges.shutdown(wait=True)
        deadline = time.monotonic() + timeout_s
        for w in warmers:
            w.thread.join(timeout=max(deadline - time.monotonic(), 0.0))
            if w.thread.is_alive():
                logger.warning("warm-up thread still running %.0f s after close()", timeout_s)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- decisions -----------------------------------------------------------------------
    def _evaluate(
        self,
        model: LoadedModel,
        cl: CloudLink,
        policy: Policy,
        deadline_ms: float | None,
        profile: Profile | None = None,
    ) -> Decision:
        """The decision engine on the current estimates with the configured accuracy
        budget and hysteresis: the one computation behind infer() and explain().
        ``profile``: the model's (default) or its image profile (infer_image)."""
        return decide(
            profile or model.profile,
            policy=policy,
            net=cl.net_state(),
            cloud=self._loads.cloud_state(
                serves_model=model.served, breaker_open=cl.breaker.is_open
            ),
            edge=self._loads.edge_state(),
            accuracy_budget=self.config.accuracy_budget,
            deadline_ms=deadline_ms,
            previous=self._previous,
            hysteresis=self._hysteresis,
        )

    def _decide(
        self, model: LoadedModel, policy: Policy, deadline_ms: float | None, profile: Profile
    ) -> Decision:
        """(lock held) A decision for a request, reused for ``decision_ttl_ms`` while
        reachability, breaker and model stay the same (the estimates move slowly; a
        failure invalidates at once)."""
        now = time.monotonic()
        cl = self._cloud
        key = (
            policy.key,
            id(model),
            id(profile),
            id(cl),
            deadline_ms,
            cl.breaker.state,
            cl.link.reachable,
            model.served,
        )
        hit = self._decision_cache.get(key)
        if hit is not None and now - hit[0] < self.config.decision_ttl_ms / 1000.0:
            d = hit[1]
        else:
            if len(self._decision_cache) > 64:
                self._decision_cache.clear()
            cl.suspect_overdue(time.perf_counter())
            d = self._evaluate(model, cl, policy, deadline_ms, profile)
            if policy.mode == "auto":
                self._previous = d.chosen.key
                cl.standby(d.chosen.path == "edge_only" and cl.link.reachable)
            self._decision_cache[key] = (now, d)
        # an exploring request is one request: neither cached nor the hysteresis' previous
        d = self._explorer.maybe(d, now)
        self._explorer.note(d.chosen.key, now)
        return d

    def explain(
        self, policy: str | None = None, deadline_ms: float | None = None, *, image: bool = False
    ) -> dict[str, Any]:
        """Every candidate's predicted breakdown under the current estimates, and the
        choice the next request would get (same policy, budget and hysteresis; nothing
        is changed). ``image``: for a request given to ``infer_image``."""
        model, cl = self._model, self._cloud
        profile = model.image_profile if image else model.profile
        pol = self._policy if policy is None else parse_policy(policy, profile)
        deadline = deadline_ms if deadline_ms is not None else self.config.deadline_ms
        with self._lock:
            d = self._evaluate(model, cl, pol, deadline, profile)
            exploration = self._explorer.state(d, time.monotonic())
        out = d.explain()
        out["exploration"] = exploration
        out["network"] = dataclasses.asdict(cl.net_state())
        out["breaker"] = cl.breaker.state
        out["cloud"] = list(cl.addresses)
        return out

    # -- inference ---------------------------------------------------------------------
    def infer(
        self, x: np.ndarray, *, policy: str | None = None, deadline_ms: float | None = None
    ) -> InferenceResult:
        """Answer one request on the path the decision engine picks (or ``policy`` forces)."""
        t0 = time.perf_counter()
        if self._closed:
            raise ClosedError("client is closed")
        model = self._model  # one snapshot: a concurrent swap does not affect this request
        arr, unbatched = model.check_input(x)
        return self._serve(model, model.profile, arr, unbatched, None, policy, deadline_ms, t0)

    def infer_image(
        self, img: np.ndarray, *, policy: str | None = None, deadline_ms: float | None = None
    ) -> InferenceResult:
        """Answer one request given as a camera image: uint8 RGB (H, W, 3), or a batch
        (N, H, W, 3), resized to the bundle's preprocessing size if it differs and
        normalised as the bundle records. Cloud-only sends the image itself with the
        calibrated image codec the policy picks (a JPEG quality within the accuracy
        budget); the cloud decodes and preprocesses it the same way. ConfigError for a
        bundle without preprocessing or an image that is not uint8 RGB."""
        t0 = time.perf_counter()
        if self._closed:
            raise ClosedError("client is closed")
        model = self._model
        pixels, arr, unbatched = model.check_image(img)
        return self._serve(
            model, model.image_profile, arr, unbatched, pixels, policy, deadline_ms, t0
        )

    def _serve(
        self,
        model: LoadedModel,
        profile: Profile,
        arr: np.ndarray,
        unbatched: bool,
        pixels: np.ndarray | None,
        policy: str | None,
        deadline_ms: float | None,
        t0: float,
    ) -> InferenceResult:
        """The request on the chosen path, from the checked model input ``arr`` (and the
        camera images it came from, for image codecs)."""
        pol = self._policy if policy is None else parse_policy(policy, profile)
        deadline = deadline_ms if deadline_ms is not None else self.config.deadline_ms
        edge_only, forced_variant = self._forced
        if edge_only:
            pol = Policy(mode="edge_only")
        with self._lock:
            d = self._decide(model, pol, deadline, profile)
        c = d.chosen
        if forced_variant is not None and model.runtime.has_full_variant(forced_variant):
            c = dataclasses.replace(c, variant=forced_variant, key=f"edge_only@{forced_variant}")
        timings: dict[str, float] = {"decide_ms": (time.perf_counter() - t0) * 1000.0}
        rt = model.runtime
        remote = Remote(None, 0, None)
        exited: np.ndarray | None = None  # the exit head's answer, when every row exits
        cut: np.ndarray | None = None  # the exit's cut tensor, when the path runs on
        if c.exit is not None:
            cut, logits, ms = rt.exit(c.exit, arr)
            timings["exit_ms"] = ms
            if bool(model.bundle.manifest.exit(c.exit).takes(logits).all()):
                exited, timings["edge_ms"] = logits, ms
        if exited is not None:
            y = exited
        elif c.path == "edge_only":
            if cut is None:
                y, ms = rt.full(arr, c.variant)
            else:
                y, ms = rt.resume(c.exit or "", cut, None)
                ms += timings["exit_ms"]
            timings["edge_ms"] = ms
            self._loads.edge_sample(ms, model.specs.get(c.key))
        else:
            payload = arr
            if c.path == "split":
                assert c.split_point is not None
                if cut is None:
                    payload, ms = rt.head(c.split_point, arr, c.variant)
                else:
                    payload, ms = rt.resume(c.exit or "", cut, c.split_point)
                    ms += timings["exit_ms"]
                timings["edge_ms"] = ms
                self._loads.edge_sample(ms, model.specs.get(c.key))
            cl = self._cloud  # a snapshot, as model

            after_ms = self._hedge.after_ms(c, deadline, (time.perf_counter() - t0) * 1000.0)

            def call(into: dict[str, float], handle: CallHandle | None) -> Remote:
                return cl.call(
                    model,
                    c,
                    payload,
                    t0,
                    deadline,
                    into,
                    pixels if c.path == "cloud_only" else None,
                    breaker=pol.mode == "auto" or self.config.pinned_breaker,
                    handle=handle,
                    reserve_local=after_ms is None,
                )

            def finish() -> tuple[np.ndarray, float]:  # locally, from what the edge has
                if c.path == "split":
                    assert c.split_point is not None
                    y, ms = rt.tail(c.split_point, payload)
                    self._loads.edge_sample(ms, model.specs.get(c.key), local_finish=True)
                else:
                    y, ms = rt.full(arr)
                    self._loads.edge_sample(ms, model.specs.get("edge_only"))
                return y, ms

            local: tuple[np.ndarray, float] | None = None
            if after_ms is None:
                remote = call(timings, None)
            else:
                remote, local = hedged(self._hedge_pool(), call, finish, after_ms, timings)
            if remote.output is not None and local is None:
                y = remote.output
            else:
                y, timings["local_finish_ms"] = local or finish()
                if remote.suspect and np.isfinite(y).all():
                    cl.bad_reply("non-finite values where the exact answer is finite")
        served = "edge_only" if exited is not None else c.path
        fell_back = served != "edge_only" and remote.output is None
        reason = remote.fallback_reason
        total = (time.perf_counter() - t0) * 1000.0
        timings["total_ms"] = total
        met = deadline is None or total <= deadline
        self._stats.record(
            path=served,
            total_ms=total,
            sent=remote.bytes_sent,
            fell_back=fell_back,
            reason=reason,
            met=met,
        )
        if not met and self.config.strict_deadline:
            raise DeadlineError(
                f"request took {total:.1f} ms > deadline {deadline} ms on {c.key}"
                + (f" (fell back: {reason})" if fell_back else "")
            )
        out = y[0] if unbatched else y
        return InferenceResult(
            output=out,
            path=served,
            split_point=c.split_point,
            bytes_sent=remote.bytes_sent,
            timings=timings,
            fell_back=fell_back,
            codec=c.codec,
            variant=c.variant,
            exit=c.exit if exited is not None else None,
            deadline_met=met,
            fallback_reason=reason,
            model_version=model.bundle.version,
            predicted_ms=c.total_ms,
            explored=d.explored,
        )

    # -- telemetry -----------------------------------------------------------------------
    def stats(self) -> ClientStats:
        """Path mix, fallbacks, latency percentiles (last 10k requests), bytes sent, and the
        cloud link as the client sees it now."""
        cl = self._cloud
        link = cl.link
        return self._stats.snapshot(
            breaker=cl.breaker.state,
            breaker_opened=cl.breaker.opened_count,
            cloud_reachable=link.reachable,
            probes=cl.monitor.probes_sent if cl.monitor else 0,
            cloud=cl.addresses,
            model_version=self._model.bundle.version,
            link=LinkStats(
                net=cl.net_state(),
                failures=link.failures,
                timeouts=link.timeouts,
                level_shifts=link.rtt.shifts + link.bw.shifts,
            ),
        )

    def take_interval(self) -> Interval:
        """Statistics since the previous call (for periodic telemetry), then reset."""
        return self._stats.take_interval()
