"""The edge SDK: ``collab.Client`` answers every request, choosing the path per request.

Fallback design: the edge holds the full model, every head AND every tail. A cloud
call that fails, or would no longer return in time, is finished locally from what
the edge already computed: a collaborative request runs the local tail on the
uncompressed head output (so the head work is not wasted and the answer is exact);
a cloud-only request runs the full model. Cloud calls get a timeout of
``deadline - elapsed - predicted local finish`` (when the local finish can still make
the deadline at all), so the fallback still fits the deadline. A circuit breaker stops
calling a cloud that keeps failing; the network monitor's probes re-open it. Nothing
here imports torch.

Deadline semantics: ``infer`` always returns a result (``deadline_met`` tells whether
it came in time); with ``strict_deadline=True`` a late result raises DeadlineError.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from collab import codec as codecs
from collab.bundle import Bundle, load_bundle
from collab.decision import (
    DEFAULT_CODEC,
    Candidate,
    CloudState,
    Decision,
    EdgeState,
    Hysteresis,
    NetState,
    PathSpec,
    Policy,
    Profile,
    decide,
    default_codec_stats,
    parse_policy,
)
from collab.errors import ClosedError, CodecError, CollabError, ConfigError, DeadlineError
from collab.log import logger
from collab.net.breaker import CircuitBreaker
from collab.net.estimator import Ewma, LinkEstimator
from collab.net.monitor import NetworkMonitor, ProbeReply
from collab.profile import profile_from_bundle
from collab.proto import collab_pb2, collab_pb2_grpc
from collab.runtime import EdgeRuntime
from collab.transport import (
    DEFAULT_MAX_MESSAGE_BYTES,
    RpcError,
    TlsConfig,
    load_from_proto,
    make_channel,
    rpc_errors,
    wrap_rpc_error,
)

_EDGE_STALE_S = 5.0
_SWAP_JOIN_S = 0.5  # swap_bundle waits this long at most for the old warm-up to stop
# a call this much (and twice) past its predicted answer raises a link-change suspicion
_OVERDUE_MS = 20.0

# Errors that mean "this cloud cannot serve this model", not "the cloud is down".
_MODEL_ERRORS = {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION,
                 grpc.StatusCode.INVALID_ARGUMENT}


@dataclass(frozen=True, kw_only=True)
class ClientConfig:
    cloud: tuple[str, ...] = ()  # "host:port" of every cloud replica (round-robin)
    policy: str = "auto"  # auto | edge_only | cloud_only | split:<name>
    deadline_ms: float | None = None  # per-request deadline (None: no deadline)
    accuracy_budget: float = 0.005  # max top-1 agreement loss allowed for lossy codecs/variants
    probe_interval_s: float = 0.5  # RTT probes (tiny) when no traffic refreshed the estimate
    bandwidth_probe_interval_s: float | None = None  # default 5 x probe_interval_s
    probe_timeout_s: float = 1.0
    max_probe_bytes: int = 262_144
    cloud_timeout_ms: float = 5_000.0  # cap of a cloud call when there is no deadline
    breaker_failures: int = 3  # consecutive failed cloud calls that open the breaker
    breaker_cooldown_s: float = 1.0
    hysteresis: float = 0.10  # switch only if >10 % faster (and > hysteresis_ms)
    hysteresis_ms: float = 0.5
    decision_ttl_ms: float = 50.0  # reuse a decision this long unless reachability changes
    slowdown: float = 1.0  # emulate a weaker edge: pad edge compute to slowdown x measured
    intra_threads: int = 1
    strict_deadline: bool = False
    initial_probe: bool = True  # probe once before returning from the constructor
    warm: bool = True  # load every session in a background thread at start
    codec: str | None = None  # force this codec on every cloud path (default: the codec policy)
    tls: TlsConfig | None = None
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES

    def __post_init__(self) -> None:
        if isinstance(self.cloud, str):
            object.__setattr__(self, "cloud", tuple(a for a in self.cloud.split(",") if a))
        else:
            object.__setattr__(self, "cloud", tuple(self.cloud))
        if self.deadline_ms is not None and self.deadline_ms <= 0:
            raise ConfigError(f"deadline_ms must be > 0 (got {self.deadline_ms})")
        if not 0.0 <= self.accuracy_budget <= 1.0:
            raise ConfigError(f"accuracy_budget must be in [0, 1] (got {self.accuracy_budget})")
        if self.slowdown < 1.0:
            raise ConfigError(f"slowdown must be >= 1.0 (got {self.slowdown})")
        if self.probe_interval_s <= 0 or self.probe_timeout_s <= 0:
            raise ConfigError("probe_interval_s and probe_timeout_s must be > 0")
        if self.breaker_failures < 1:
            raise ConfigError("breaker_failures must be >= 1")
        parse_policy(self.policy)
        if self.codec is not None:
            codecs.Codec.parse(self.codec)  # CodecError names the bad part


@dataclass(frozen=True, kw_only=True)
class InferenceResult:
    output: np.ndarray
    path: str  # edge_only | cloud_only | split
    split_point: str | None
    bytes_sent: int
    timings: dict[str, float]  # stage -> ms (edge, encode, cloud_call, local_finish, total, ...)
    fell_back: bool
    codec: str | None = None
    variant: str | None = None
    deadline_met: bool = True
    fallback_reason: str | None = None
    model_version: str = ""
    predicted_ms: float = math.nan  # the decision engine's prediction for the chosen path

    @property
    def latency_ms(self) -> float:
        return self.timings.get("total_ms", math.nan)


@dataclass
class _Warmer:
    """The background warm-up of one runtime (see ``Client._load``)."""

    thread: threading.Thread
    stop: threading.Event = field(default_factory=threading.Event)


@dataclass
class _Model:
    """Everything tied to one bundle version; swapped atomically as one reference."""

    bundle: Bundle
    runtime: EdgeRuntime
    profile: Profile
    model_id: collab_pb2.ModelId
    served: bool = True  # the cloud serves this version (from probes / call errors)
    specs: dict[str, PathSpec] = field(default_factory=dict)
    warmer: _Warmer | None = None

    def __post_init__(self) -> None:
        self.specs = {p.key: p for p in self.profile.paths}


@dataclass
class _Cloud:
    """One cloud address list with its own estimates; replaced as a whole by set_cloud."""

    addresses: tuple[str, ...]
    link: LinkEstimator
    breaker: CircuitBreaker
    channel: grpc.Channel | None = None
    stub: collab_pb2_grpc.CloudServiceStub | None = None
    monitor: NetworkMonitor | None = None
    # calls out now: token -> (perf_counter at send, predicted RTT ms, predicted rest ms)
    inflight: dict[int, tuple[float, float, float]] = field(default_factory=dict)
    grace: threading.Timer | None = None  # closes the channel of a replaced cloud later

    def close(self, grace_s: float = 0.0) -> None:
        """Stop the monitor (joined) and close the channel, now or after ``grace_s``.

        The grace timer is a daemon thread: it only waits in Python and then closes a
        channel, so interpreter exit need not wait for it (a non-daemon one would hold
        exit for the whole grace period); ``close()`` without grace cancels and joins a
        pending one and closes the channel at once (``Client.close``)."""
        if self.monitor is not None:
            self.monitor.stop()
        ch = self.channel
        if ch is None:
            return
        if grace_s > 0:  # let in-flight calls finish before the channel goes away
            self.grace = threading.Timer(grace_s, ch.close)
            self.grace.name = "collab-channel-grace"
            self.grace.daemon = True
            self.grace.start()
            return
        if self.grace is not None:
            self.grace.cancel()
            self.grace.join(timeout=5.0)  # it may be inside ch.close() right now
            self.grace = None
        ch.close()  # idempotent


@dataclass
class _Stats:
    requests: int = 0
    fallbacks: int = 0
    deadline_misses: int = 0
    bytes_sent: int = 0
    paths: Counter[str] = field(default_factory=Counter)
    fallback_reasons: Counter[str] = field(default_factory=Counter)
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))
    # the current telemetry interval (reset by take_interval)
    interval_start: float = field(default_factory=time.monotonic)
    interval_latencies: list[float] = field(default_factory=list)
    interval_paths: Counter[str] = field(default_factory=Counter)
    interval_fallbacks: int = 0
    interval_bytes: int = 0


def force_codec(profile: Profile, codec: str) -> Profile:
    """Restrict every cloud path to ``codec``; its calibrated stats when the bundle has
    them, else the raw-size estimate (the user forced it, so its accuracy is theirs)."""
    paths = []
    for p in profile.paths:
        if p.uses_cloud:
            row = p.codec_stats.get(codec) or {**default_codec_stats(p.raw_bytes)[DEFAULT_CODEC], "agreement": 1.0}
            p = dataclasses.replace(p, codec_stats={codec: row})
        paths.append(p)
    return dataclasses.replace(profile, paths=tuple(paths))


class Client:
    """``with collab.Client(bundle_dir, cloud=["host:port"]) as c: c.infer(x)``. Thread-safe."""

    def __init__(self, bundle_dir: str | os.PathLike[str], cloud: Sequence[str] | str | None = None, *,
                 config: ClientConfig | None = None, **overrides: Any) -> None:
        if cloud is not None:
            overrides["cloud"] = cloud
        base = config or ClientConfig()
        try:
            self.config = dataclasses.replace(base, **overrides)
        except TypeError as e:
            raise ConfigError(f"unknown Client option: {e}") from e
        cfg = self.config
        self._lock = threading.Lock()
        self._stats = _Stats()
        self._previous: str | None = None
        self._decision_cache: dict[tuple[Any, ...], tuple[float, Decision]] = {}
        self._ids = itertools.count()
        self._id_prefix = os.urandom(4).hex()
        self._edge_scale = Ewma(0.2, jump=2.0)  # one noisy run must not move the edge estimate
        self._edge_scale.update(cfg.slowdown, time.monotonic())
        self._cloud_queue = Ewma(0.3)
        self._cloud_compute: dict[str, Ewma] = {}  # path key -> observed cloud compute ms
        self._closed = False
        self._warmers: list[_Warmer] = []  # started and not yet known to be finished
        self._retired: list[_Cloud] = []  # replaced clouds whose channel may still be open
        self._model = self._load(bundle_dir)
        self._policy = parse_policy(cfg.policy, self._model.profile)
        self._probe_payload = os.urandom(cfg.max_probe_bytes) if cfg.cloud else b""
        self._cloud = self._connect(cfg.cloud)

    # -- the cloud side ------------------------------------------------------------------
    def _connect(self, addresses: Sequence[str]) -> _Cloud:
        """Channel, estimator, breaker and monitor for one list of cloud addresses. An
        unreachable cloud is not an error: paths upgrade once a probe succeeds."""
        cfg = self.config
        cl = _Cloud(addresses=tuple(addresses), link=LinkEstimator(),
                    breaker=CircuitBreaker(failure_threshold=cfg.breaker_failures, cooldown_s=cfg.breaker_cooldown_s))
        if not cl.addresses:
            return cl
        if len(self._probe_payload) < cfg.max_probe_bytes:
            self._probe_payload = os.urandom(cfg.max_probe_bytes)
        # gRPC retries move a failed call to another replica; with a single one they only
        # delay the local fallback (by the retry backoff) while the link is down
        cl.channel = make_channel(list(cl.addresses), tls=cfg.tls, max_message_bytes=cfg.max_message_bytes,
                                  retries=len(cl.addresses) > 1)
        cl.stub = collab_pb2_grpc.CloudServiceStub(cl.channel)
        cl.monitor = NetworkMonitor(
            lambda n, t: self._probe(cl, n, t), cl.link, interval_s=cfg.probe_interval_s,
            bandwidth_interval_s=cfg.bandwidth_probe_interval_s, timeout_s=cfg.probe_timeout_s,
            max_probe_bytes=cfg.max_probe_bytes, on_reply=lambda r: self._on_probe(cl, r))
        if cfg.initial_probe and cl.monitor.connect():
            cl.monitor.refresh(force=True)
        if not cl.link.reachable:
            logger.warning("cloud %s unreachable: serving edge-only until probes succeed", ",".join(cl.addresses))
        cl.monitor.start()
        return cl

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
    def _load(self, bundle_dir: str | os.PathLike[str] | Bundle) -> _Model:
        bundle = bundle_dir if isinstance(bundle_dir, Bundle) else load_bundle(Path(bundle_dir))
        """Verify ``bundle_dir``, load its full model and start warming the rest.

        The warm-up thread is NOT a daemon. The interpreter never joins daemon threads, and
        one still inside ONNX Runtime when the process exits aborts it (SIGABRT, exit code
        134, "terminate called without an active exception"). A non-daemon thread is joined
        by interpreter shutdown, and it notices that shutdown between two sessions or runs
        (EdgeRuntime.warm), so a script that never calls close() exits cleanly too, after
        at most one session load. ``close()`` and ``swap_bundle`` stop it through its Event."""
        bundle = bundle_dir if isinstance(bundle_dir, Bundle) else load_bundle(Path(bundle_dir))
        rt = EdgeRuntime(bundle, intra_threads=self.config.intra_threads, slowdown=self.config.slowdown)
        rt.warm([bundle.manifest.full])  # edge-only must work right away
        profile = profile_from_bundle(bundle)
        if self.config.codec is not None:
            profile = force_codec(profile, self.config.codec)
        model = _Model(bundle=bundle, runtime=rt, profile=profile,
                       model_id=collab_pb2.ModelId(name=bundle.manifest.model_name, version=bundle.version))
        if self.config.warm:
            stop = threading.Event()
            t = threading.Thread(target=self._warm, args=(rt, stop), name="collab-warm", daemon=False)
            model.warmer = _Warmer(thread=t, stop=stop)
            with self._lock:
                if self._closed:
                    return model
                self._warmers = [w for w in self._warmers if w.thread.is_alive()]
                self._warmers.append(model.warmer)
                t.start()
        return model

    @staticmethod
    def _warm(rt: EdgeRuntime, stop: threading.Event) -> None:
        try:
            rt.warm(stop=stop)
        except CollabError as e:  # a broken file surfaces again, with its name, when used
            logger.warning("warming sessions failed: %s", e)

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
            self._cloud_compute.clear()  # other model, other tails
        if old.warmer is not None:  # the old version's sessions are not worth warming any more
            old.warmer.stop.set()
            # waits for at most its current step; a longer one (a big session still
            # loading) goes on in the background and close() joins it
            old.warmer.thread.join(timeout=_SWAP_JOIN_S)
        if self.monitor is not None:
            self.monitor.poke()  # learn whether the cloud serves the new version
        logger.info("switched to bundle %s version %s", model.bundle.name, model.bundle.version[:12])
        return model.bundle.version

    @property
    def bundle(self) -> Bundle:
        return self._model.bundle

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
        deadline = time.monotonic() + timeout_s
        for w in warmers:
            w.thread.join(timeout=max(deadline - time.monotonic(), 0.0))
            if w.thread.is_alive():
                logger.warning("warm-up thread still running %.0f s after close()", timeout_s)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- state for the decision engine ---------------------------------------------------
    def _cloud_state(self, model: _Model, cl: _Cloud) -> CloudState:
        return CloudState(queue_ms=self._cloud_queue.mean if self._cloud_queue.n else 0.0,
                          compute_ms={k: e.mean for k, e in self._cloud_compute.items()},
                          serves_model=model.served, breaker_open=cl.breaker.is_open)

    @staticmethod
    def _net_state(cl: _Cloud) -> NetState:
        net = cl.link.state()
        return net if cl.stub is not None else dataclasses.replace(net, reachable=False)

    def _decide(self, model: _Model, policy: Policy, deadline_ms: float | None) -> Decision:
        """A decision, reused for ``decision_ttl_ms`` while reachability, breaker and
        model stay the same (the estimates move slowly; a failure invalidates at once)."""
        cfg = self.config
        now = time.monotonic()
        cl = self._cloud
        key = (policy.key, id(model), id(cl), deadline_ms, cl.breaker.state, cl.link.reachable, model.served)
        hit = self._decision_cache.get(key)
        if hit is not None and now - hit[0] < cfg.decision_ttl_ms / 1000.0:
            return hit[1]
        if len(self._decision_cache) > 64:
            self._decision_cache.clear()
        self._suspect_overdue(cl, time.perf_counter())
        d = decide(model.profile, policy=policy, net=self._net_state(cl), cloud=self._cloud_state(model, cl),
                   edge=self._edge_state(), accuracy_budget=cfg.accuracy_budget,
                   deadline_ms=deadline_ms, previous=self._previous,
                   hysteresis=Hysteresis(fraction=cfg.hysteresis, min_ms=cfg.hysteresis_ms))
        if policy.mode == "auto":
            self._previous = d.chosen.key
            if cl.monitor is not None:
                cl.monitor.standby = d.chosen.path == "edge_only" and cl.link.reachable
        self._decision_cache[key] = (now, d)
        return d

    @staticmethod
    def _suspect_overdue(cl: _Cloud, now: float) -> None:
        """A call still out long after its predicted answer is news of the link before it
        answers: the RTT is at least what it waited beyond the rest of its prediction. On
        a link that just collapsed the previous request is often still out when the next
        one is decided; without this the next one would be sent on the old estimate too."""
        for start, rtt_ms, rest_ms in list(cl.inflight.values()):
            waited = (now - start) * 1000.0
            if waited > 2.0 * (rtt_ms + rest_ms) and waited - rtt_ms - rest_ms > _OVERDUE_MS:
                cl.link.suspect_rtt(waited - rest_ms, time.monotonic())
                if cl.monitor is not None:
                    cl.monitor.confirm()

    def explain(self, policy: str | None = None, deadline_ms: float | None = None) -> dict[str, Any]:
        """Every candidate's predicted breakdown under the current estimates, and the choice."""
        model = self._model
        pol = parse_policy(policy or "auto", model.profile)
        cl = self._cloud
        net = self._net_state(cl)
        out = decide(model.profile, policy=pol, net=net, cloud=self._cloud_state(model, cl),
                     edge=self._edge_state(),
                     accuracy_budget=self.config.accuracy_budget,
                     deadline_ms=deadline_ms if deadline_ms is not None else self.config.deadline_ms,
                     previous=self._previous).explain()
        out["network"] = dataclasses.asdict(net)
        out["breaker"] = cl.breaker.state
        out["cloud"] = list(cl.addresses)
        return out

    # -- monitor callbacks -------------------------------------------------------------
    def _probe(self, cl: _Cloud, nbytes: int, timeout_s: float) -> ProbeReply:
        assert cl.stub is not None
        req = collab_pb2.ProbeRequest(payload=self._probe_payload[:nbytes], response_bytes=1,
                                      client_send_time=time.time())
        t0 = time.perf_counter()
        with rpc_errors("Probe"):
            resp = cl.stub.Probe(req, timeout=timeout_s)
        wall = (time.perf_counter() - t0) * 1000.0
        return ProbeReply(wall_ms=wall, load=load_from_proto(resp.load),
                          models=tuple((m.name, m.version) for m in resp.models))

    def _on_probe(self, cl: _Cloud, reply: ProbeReply) -> None:
        now = time.monotonic()
        if reply.load is not None and reply.load.queue_ms_ewma >= 0:
            with self._lock:
                self._cloud_queue.update(reply.load.queue_ms_ewma, now)
        model = self._model
        if reply.models:
            mid = model.model_id
            model.served = any(n == mid.name and v in ("", mid.version) for n, v in reply.models)
        cl.breaker.probe_succeeded()

    # -- inference ---------------------------------------------------------------------
    def _check_input(self, x: np.ndarray, model: _Model) -> tuple[np.ndarray, bool]:
        m = model.bundle.manifest
        if (type(x) is np.ndarray and x.dtype == np.float32 and x.shape[1:] == m.input_shape[1:]
                and x.ndim == len(m.input_shape) and x.shape[0] >= 1 and x.flags.c_contiguous):
            return x, False  # the common case, checked cheaply
        arr = np.asarray(x)
        if arr.dtype.kind not in "fiub":
            raise ConfigError(f"input must be numeric, got dtype {arr.dtype}")
        want = tuple(m.input_shape[1:])
        unbatched = arr.shape == want
        if unbatched:
            arr = arr[None]
        if tuple(arr.shape[1:]) != want or arr.shape[0] < 1:
            raise ConfigError(f"input shape {list(np.shape(x))} does not match the model input "
                              f"{list(m.input_shape)} (batch first, or one sample without the batch dim)")
        return np.ascontiguousarray(arr, dtype=np.float32), unbatched

    def infer(self, x: np.ndarray, *, policy: str | None = None, deadline_ms: float | None = None) -> InferenceResult:
        """Answer one request on the path the decision engine picks (or ``policy`` forces)."""
        t0 = time.perf_counter()
        if self._closed:
            raise ClosedError("client is closed")
        model = self._model  # one snapshot: a concurrent swap does not affect this request
        arr, unbatched = self._check_input(x, model)
        pol = self._policy if policy is None else parse_policy(policy, model.profile)
        deadline = deadline_ms if deadline_ms is not None else self.config.deadline_ms
        with self._lock:
            d = self._decide(model, pol, deadline)
        c = d.chosen
        timings: dict[str, float] = {"decide_ms": (time.perf_counter() - t0) * 1000.0}
        fell_back, reason, sent = False, None, 0
        rt = model.runtime
        if c.path == "edge_only":
            y, ms = rt.full(arr, c.variant)
            timings["edge_ms"] = ms
            self._edge_sample(ms, c.key, model)
        else:
            if c.path == "split":
                assert c.split_point is not None
                payload, ms = rt.head(c.split_point, arr, c.variant)
                timings["edge_ms"] = ms
                self._edge_sample(ms, c.key, model)
            else:
                payload = arr
            remote, sent, reason = self._remote(model, c, payload, t0, deadline, timings)
            if remote is not None:
                y = remote
            else:  # finish locally from what the edge already has
                fell_back = True
                if c.path == "split":
                    assert c.split_point is not None
                    y, ms = rt.tail(c.split_point, payload)
                    self._edge_sample(ms, c.key, model, local_finish=True)
                else:
                    y, ms = rt.full(arr)
                    self._edge_sample(ms, "edge_only", model)
                timings["local_finish_ms"] = ms
        total = (time.perf_counter() - t0) * 1000.0
        timings["total_ms"] = total
        met = deadline is None or total <= deadline
        self._record(c, total, sent, fell_back, reason, met)
        if not met and self.config.strict_deadline:
            raise DeadlineError(f"request took {total:.1f} ms > deadline {deadline} ms on {c.key}"
                                + (f" (fell back: {reason})" if fell_back else ""))
        out = y[0] if unbatched else y
        return InferenceResult(output=out, path=c.path, split_point=c.split_point, bytes_sent=sent,
                               timings=timings, fell_back=fell_back, codec=c.codec, variant=c.variant,
                               deadline_met=met, fallback_reason=reason, model_version=model.bundle.version,
                               predicted_ms=c.total_ms)

    def _edge_state(self) -> EdgeState:
        """Edge load relative to the profile. A load spike is assumed to pass: an estimate
        not refreshed for ``_EDGE_STALE_S`` (the engine routed work elsewhere because the
        edge looked slow) relaxes towards the configured slowdown."""
        e = self._edge_scale
        age = e.age(time.monotonic())
        scale = e.mean
        if age > _EDGE_STALE_S:
            w = math.exp(-(age - _EDGE_STALE_S) / _EDGE_STALE_S)
            scale = self.config.slowdown + (scale - self.config.slowdown) * w
        return EdgeState(compute_scale=scale)

    def _edge_sample(self, ms: float, key: str, model: _Model, *, local_finish: bool = False) -> None:
        spec = model.specs.get(key)
        if spec is None:
            return
        profiled = spec.local_finish_ms if local_finish else spec.edge_ms
        if profiled > 0.05:  # tiny models: timer noise, not load
            with self._lock:
                self._edge_scale.update(ms / profiled, time.monotonic())

    def _remote(self, model: _Model, c: Candidate, payload: np.ndarray, t0: float,
                deadline: float | None, timings: dict[str, float]) -> tuple[np.ndarray | None, int, str | None]:
        """The cloud half; (output, bytes sent, None) or (None, bytes sent, why it fell back)."""
        cl = self._cloud  # one snapshot: set_cloud does not affect this request
        stub = cl.stub
        if stub is None:
            return None, 0, "no cloud configured"
        if cl.breaker.is_open:
            return None, 0, "circuit breaker open"
        if not model.served:
            return None, 0, "cloud does not serve this model version"
        codec = self.config.codec or c.codec or DEFAULT_CODEC
        te = time.perf_counter()
        frame = codecs.encode(payload, codec)
        timings["encode_ms"] = (time.perf_counter() - te) * 1000.0
        elapsed = (time.perf_counter() - t0) * 1000.0
        if deadline is None:
            budget_ms = self.config.cloud_timeout_ms
        else:
            # keep room for the local finish (when it can still make the deadline at all)
            # and for timer slack (gRPC deadlines fire late by a few ms on a busy machine)
            slack = max(2.0, 0.05 * deadline)
            remaining = deadline - elapsed - slack
            reserve = c.local_finish_ms * 1.5
            budget_ms = remaining - reserve if reserve < remaining else remaining
            if budget_ms <= 0.5:
                return None, 0, "cloud would miss the deadline"
        token = next(self._ids)
        rid = f"{self._id_prefix}-{token}"
        tc = time.perf_counter()
        cl.inflight[token] = (tc, c.rtt_ms, c.transfer_ms + c.queue_ms + c.cloud_ms)
        try:
            try:
                if c.path == "split":
                    resp = stub.Decode(collab_pb2.DecodeRequest(
                        model=model.model_id, split_point=c.split_point, frame=frame, request_id=rid),
                        timeout=budget_ms / 1000.0)
                else:
                    resp = stub.Infer(collab_pb2.InferRequest(model=model.model_id, frame=frame,
                                                                    request_id=rid), timeout=budget_ms / 1000.0)
            except grpc.RpcError as e:
                raise wrap_rpc_error(e, what="Decode" if c.path == "split" else "Infer") from e
            call_ms = (time.perf_counter() - tc) * 1000.0
            td = time.perf_counter()
            y = codecs.decode(resp.output)
            timings["decode_ms"] = (time.perf_counter() - td) * 1000.0
        except RpcError as e:
            timings["cloud_call_ms"] = (time.perf_counter() - tc) * 1000.0
            if e.code == grpc.StatusCode.DEADLINE_EXCEEDED:
                cl.link.suspect_rtt(timings["cloud_call_ms"], time.monotonic())
            self._cloud_failed(model, cl, e)
            return None, len(frame), f"{e.code.name}: {e.details}"[:200]
        except CodecError as e:
            self._cloud_failed(model, cl, e)
            return None, len(frame), f"bad response frame: {e}"
        finally:
            cl.inflight.pop(token, None)
        timings["cloud_call_ms"] = call_ms
        pt = resp.timing
        queue_ms, compute_ms = pt.queue_ms, pt.compute_ms
        timings["cloud_queue_ms"] = queue_ms
        timings["cloud_compute_ms"] = compute_ms
        now = time.monotonic()
        cl.breaker.record_success()
        cl.link.add_transfer(len(frame), max(call_ms - pt.total_ms, 0.0), now)
        if cl.monitor is not None and cl.link.pending():
            cl.monitor.confirm()  # confirm the suspected change with a probe before the next request
        with self._lock:
            self._cloud_queue.update(queue_ms, now)
            if compute_ms > 0:
                self._cloud_compute.setdefault(c.key.split("@")[0], Ewma(0.2)).update(compute_ms, now)
        return y, len(frame), None

    def _cloud_failed(self, model: _Model, cl: _Cloud, e: CollabError) -> None:
        code = getattr(e, "code", None)
        if code in _MODEL_ERRORS:
            if model.served:
                logger.warning("cloud cannot serve %s@%s: %s", model.model_id.name, model.model_id.version[:12], e)
            model.served = False
        else:
            cl.link.record_failure(time.monotonic(), timeout=code == grpc.StatusCode.DEADLINE_EXCEEDED)
            if cl.breaker.record_failure():
                logger.warning("circuit breaker opened after %d failures (last: %s)",
                               self.config.breaker_failures, e)
        if cl.monitor is not None:
            if cl.link.pending():
                cl.monitor.confirm()
            cl.monitor.poke()

    # -- telemetry -----------------------------------------------------------------------
    def _record(self, c: Candidate, total: float, sent: int, fell_back: bool, reason: str | None,
                met: bool) -> None:
        with self._lock:
            s = self._stats
            s.requests += 1
            s.paths[c.path] += 1
            s.bytes_sent += sent
            s.latencies.append(total)
            s.deadline_misses += int(not met)
            s.interval_paths[c.path] += 1
            s.interval_bytes += sent
            if len(s.interval_latencies) < 100_000:
                s.interval_latencies.append(total)
            if fell_back:
                s.interval_fallbacks += 1
                s.fallbacks += 1
                s.fallback_reasons[(reason or "?").split(":")[0]] += 1

    def stats(self) -> dict[str, Any]:
        """Path mix, fallbacks, latency percentiles (last 10k requests), bytes sent."""
        with self._lock:
            s = self._stats
            lat = np.array(s.latencies, dtype=np.float64)
            pct = ({f"p{q}": float(np.percentile(lat, q)) for q in (50, 95, 99)} if lat.size else
                   {"p50": math.nan, "p95": math.nan, "p99": math.nan})
            return {
                "requests": s.requests, "fallbacks": s.fallbacks, "deadline_misses": s.deadline_misses,
                "bytes_sent": s.bytes_sent, "paths": dict(s.paths),
                "fallback_reasons": dict(s.fallback_reasons),
                "latency_ms": {"mean": float(lat.mean()) if lat.size else math.nan, **pct},
                "breaker": self.breaker.state, "breaker_opened": self.breaker.opened_count,
                "cloud_reachable": self.link.reachable, "probes": self.monitor.probes_sent if self.monitor else 0,
                "cloud": list(self.cloud), "model_version": self._model.bundle.version,
                "link": {**dataclasses.asdict(self._net_state(self._cloud)), "failures": self.link.failures,
                         "timeouts": self.link.timeouts, "level_shifts": self.link.rtt.shifts + self.link.bw.shifts},
            }

    def take_interval(self) -> dict[str, Any]:
        """Statistics since the previous call (for periodic telemetry), then reset."""
        with self._lock:
            s = self._stats
            now = time.monotonic()
            lat = np.array(s.interval_latencies, dtype=np.float64)
            out = {"interval_s": now - s.interval_start, "requests": int(lat.size),
                   "path_mix": dict(s.interval_paths), "fallbacks": s.interval_fallbacks,
                   "bytes_sent": s.interval_bytes,
                   **{f"p{q}_ms": float(np.percentile(lat, q)) if lat.size else 0.0 for q in (50, 95, 99)}}
            s.interval_start, s.interval_latencies, s.interval_paths = now, [], Counter()
            s.interval_fallbacks = s.interval_bytes = 0
            return out
