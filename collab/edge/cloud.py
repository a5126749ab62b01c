"""The client's link to one cloud address list: channel, breaker, estimates, monitor and
the remote half of a request.

A cloud call gets a timeout of ``deadline - elapsed - predicted local finish`` (when the
local finish can still make the deadline at all), so the fallback still fits the
deadline; without a deadline it is capped at ``cloud_timeout_ms``. A circuit breaker
stops calling a cloud that keeps failing; the network monitor's probes re-open it.
A cloud that refuses a call with a retry-after hint (its queue is full, or too long for
the call's deadline: collab.rpc_status.RETRY_AFTER_KEY) is busy, not broken: the request
finishes locally, and calls skip that cloud for the hinted time (at most the breaker's
cooldown, so a hostile hint cannot shut the cloud out for good) without counting
towards the breaker.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from collab import codec as codecs
from collab.codec.image import encode_image, is_image_codec
from collab.codec.spec import DEFAULT_CODEC
from collab.decision import Candidate, call_budget_ms
from collab.edge.config import ClientConfig
from collab.edge.estimators import LoadEstimates, plausible_timing, suspect_overdue
from collab.edge.model import LoadedModel
from collab.edge.reply import caller_at_fault, decode_output
from collab.errors import CodecError, CollabError, ConfigError
from collab.log import RateLimited, logger
from collab.net.breaker import CircuitBreaker
from collab.net.estimator import LinkEstimator, NetState
from collab.net.monitor import NetworkMonitor, ProbeResult
from collab.proto import collab_pb2, collab_pb2_grpc
from collab.transport import (
    RpcError,
    load_from_proto,
    make_channel,
    rpc_errors,
    timing_from_proto,
    wrap_rpc_error,
)

# a cloud that fails in a loop flips its breaker every cooldown: one line a minute per cloud
_flips = RateLimited()

# Errors that mean "this cloud cannot serve this model", not "the cloud is down".
_MODEL_ERRORS = {
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.INVALID_ARGUMENT,
}


@dataclass(frozen=True)
class Remote:
    """The cloud half of one request: its output, or None with why it must finish locally."""

    output: np.ndarray | None
    bytes_sent: int
    fallback_reason: str | None
    suspect: bool = False  # a non-finite reply: blamed on the cloud if the local answer is finite


class CallHandle:
    """A cloud call another thread may cancel (collab.edge.hedge): the frame's size once
    encoded, and ``cancel`` ends the RPC (at once, or as soon as it starts), which frees
    the shared uplink of a frame whose answer nobody waits for."""

    def __init__(self) -> None:
        self.sent = 0
        self.cancelled = False
        self._future: Any = None
        self._lock = threading.Lock()

    def attach(self, future: Any) -> None:
        with self._lock:
            self._future = future
            if self.cancelled:
                future.cancel()

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            if self._future is not None:
                self._future.cancel()


class CloudLink:
    """One cloud address list with its own estimates; replaced as a whole by
    ``Client.set_cloud``. ``current`` returns the client's model now (probe replies tell
    whether the cloud serves it)."""

    def __init__(
        self,
        addresses: Sequence[str],
        *,
        cfg: ClientConfig,
        loads: LoadEstimates,
        current: Callable[[], LoadedModel],
    ) -> None:
        self.addresses = tuple(addresses)
        self.link = LinkEstimator()
        self.breaker = CircuitBreaker(
            failure_threshold=cfg.breaker_failures, cooldown_s=cfg.breaker_cooldown_s
        )
        self.channel: grpc.Channel | None = None
        self.stub: collab_pb2_grpc.CloudServiceStub | None = None
        self.monitor: NetworkMonitor | None = None
        # calls out now: token -> (perf_counter at send, predicted RTT ms, predicted rest ms)
        self.inflight: dict[int, tuple[float, float, float]] = {}
        self.grace: threading.Timer | None = None  # closes the channel of a replaced cloud later
        self._cfg, self._loads, self._current = cfg, loads, current
        self._busy_until = 0.0  # time.monotonic() before which calls skip this cloud
        self._ids = itertools.count()
        self._id_prefix = os.urandom(4).hex()
        self._probe_payload = b""

    def start(self) -> CloudLink:
        """Open the channel, probe once (``initial_probe``) and start the monitor. An
        unreachable cloud is not an error: paths upgrade once a probe succeeds."""
        cfg = self._cfg
        if not self.addresses:
            return self
        self._probe_payload = os.urandom(cfg.max_probe_bytes)
        # gRPC retries move a failed call to another replica; with a single one they only
        # delay the local fallback (by the retry backoff) while the link is down
        self.channel = make_channel(
            list(self.addresses),
            tls=cfg.tls,
            max_message_bytes=cfg.max_message_bytes,
            retries=len(self.addresses) > 1,
        )
        self.stub = collab_pb2_grpc.CloudServiceStub(self.channel)
        self.monitor = NetworkMonitor(
            self._probe,
            self.link,
            interval_s=cfg.probe_interval_s,
            bandwidth_interval_s=cfg.bandwidth_probe_interval_s,
            timeout_s=cfg.probe_timeout_s,
            max_probe_bytes=cfg.max_probe_bytes,
            on_reply=self._on_probe,
        )
        if cfg.initial_probe and self.monitor.connect():
            self.monitor.refresh(force=True)
        if not self.link.reachable:
            logger.warning(
                "cloud %s unreachable: serving edge-only until probes succeed",
                ",".join(self.addresses),
            )
        self.monitor.start()
        return self

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

    # -- state for the decision engine ---------------------------------------------------
    def net_state(self) -> NetState:
        net = self.link.state()
        return net if self.stub is not None else dataclasses.replace(net, reachable=False)

    def suspect_overdue(self, now: float) -> None:
        """See :func:`collab.edge.estimators.suspect_overdue`; a suspicion is confirmed by a probe."""
        if suspect_overdue(self.link, self.inflight, now) and self.monitor is not None:
            self.monitor.confirm()

    def standby(self, on: bool) -> None:
        """Reachable but not used (the link made it lose): probe for the link coming back."""
        if self.monitor is not None:
            self.monitor.standby = on

    def poke(self) -> None:
        if self.monitor is not None:
            self.monitor.poke()

    # -- monitor callbacks -------------------------------------------------------------
    def _probe(self, nbytes: int, timeout_s: float) -> ProbeResult:
        assert self.stub is not None
        req = collab_pb2.ProbeRequest(
            payload=self._probe_payload[:nbytes], response_bytes=1, client_send_time=time.time()
        )
        t0 = time.perf_counter()
        with rpc_errors("Probe"):
            resp = self.stub.Probe(req, timeout=timeout_s)
        wall = (time.perf_counter() - t0) * 1000.0
        return ProbeResult(
            wall_ms=wall,
            load=load_from_proto(resp.load),
            models=tuple((m.name, m.version) for m in resp.models),
        )

    def _on_probe(self, reply: ProbeResult) -> None:
        if reply.load is not None and reply.load.queue_ms_ewma >= 0:
            self._loads.cloud_queue_sample(reply.load.queue_ms_ewma, time.monotonic())
        model = self._current()
        if reply.models:
            mid = model.model_id
            model.served = any(n == mid.name and v in ("", mid.version) for n, v in reply.models)
        self.breaker.probe_succeeded()

    # -- the remote half of a request ------------------------------------------------
    def call(
        self,
        model: LoadedModel,
        c: Candidate,
        payload: np.ndarray,
        t0: float,
        deadline: float | None,
        timings: dict[str, float],
        pixels: np.ndarray | None = None,
        *,
        breaker: bool = True,
        handle: CallHandle | None = None,
        reserve_local: bool = True,
    ) -> Remote:
        """Encode ``payload`` and run the rest of ``c`` in the cloud; stage times go to ``timings``.
        ``pixels``: the uint8 camera images behind a cloud-only ``payload``, sent instead
        of it when the chosen codec is an image codec (JPEG, PNG, WebP). ``breaker``:
        an open breaker skips the call (off: the call is tried, and its outcome counted).
        ``handle``: told the frame's size, lets another thread cancel. ``reserve_local``: the
        call's timeout keeps room for the local finish (off: the caller hedges, and the
        call gets what the deadline leaves; collab.edge.hedge)."""
        stub = self.stub
        if stub is None:
            return Remote(None, 0, "no cloud configured")
        if breaker and self.breaker.is_open:
            return Remote(None, 0, "circuit breaker open")
        if not model.served:
            return Remote(None, 0, "cloud does not serve this model version")
        if time.monotonic() < self._busy_until:
            return Remote(None, 0, "cloud busy (backing off as it asked)")
        codec = self._cfg.codec or c.codec or DEFAULT_CODEC
        as_images = is_image_codec(codec)
        if as_images and (pixels is None or c.path != "cloud_only"):
            raise ConfigError(f"image codec {codec} needs a cloud-only request with camera images")
        te = time.perf_counter()
        try:  # a local failure, not the cloud's: finish locally, blame no one
            if as_images:
                assert pixels is not None
                files = [encode_image(img, codec) for img in pixels]
                frame = b""
                sent = sum(map(len, files))
            else:
                files = []
                frame = codecs.encode(payload, codec)
                sent = len(frame)
        except CodecError as e:
            return Remote(None, 0, f"encode failed: {e}"[:200])
        timings["encode_ms"] = (time.perf_counter() - te) * 1000.0
        if handle is not None:
            handle.sent = sent
        budget_ms = call_budget_ms(
            deadline,
            (time.perf_counter() - t0) * 1000.0,
            c.local_finish_ms if reserve_local else 0.0,
            self._cfg.cloud_timeout_ms,
        )
        if budget_ms is None:
            return Remote(None, 0, "cloud would miss the deadline")
        token = next(self._ids)
        rid = f"{self._id_prefix}-{token}"
        what = "Decode" if c.path == "split" else "Infer"
        tc = time.perf_counter()
        self.inflight[token] = (tc, c.rtt_ms, c.call_ms - c.rtt_ms)
        try:
            try:
                if c.path == "split":
                    method: Any = stub.Decode
                    req: Any = collab_pb2.DecodeRequest(
                        model=model.model_id,
                        split_point=c.split_point,
                        frame=frame,
                        request_id=rid,
                    )
                else:
                    method = stub.Infer
                    req = collab_pb2.InferRequest(
                        model=model.model_id, frame=frame, images=files, request_id=rid
                    )
                if handle is None:
                    resp = method(req, timeout=budget_ms / 1000.0)
                else:
                    future = method.future(req, timeout=budget_ms / 1000.0)
                    handle.attach(future)
                    resp = future.result()
            except grpc.FutureCancelledError:
                return self._cancelled(model, c, sent, tc, timings)
            except grpc.RpcError as e:
                if (
                    e.code() == grpc.StatusCode.CANCELLED
                    and handle is not None
                    and handle.cancelled
                ):
                    return self._cancelled(model, c, sent, tc, timings)
                raise wrap_rpc_error(e, what=what) from e
            call_ms = (time.perf_counter() - tc) * 1000.0
            td = time.perf_counter()
            shape = (len(payload), *model.bundle.manifest.output_shape[1:])
            y = decode_output(resp.output, shape)
            timings["decode_ms"] = (time.perf_counter() - td) * 1000.0
        except RpcError as e:
            timings["cloud_call_ms"] = (time.perf_counter() - tc) * 1000.0
            if e.retry_after_ms is not None:  # busy, not broken (and not the link's fault)
                self.back_off(e.retry_after_ms)
                reason = f"cloud busy, retry after {e.retry_after_ms:.0f} ms: {e.code.name}"
                return Remote(None, sent, f"{reason}: {e.details}"[:200])
            if caller_at_fault(e):  # this request's doing: other callers' calls still go
                return Remote(None, sent, f"refused: {e.code.name}: {e.details}"[:200])
            if e.code == grpc.StatusCode.DEADLINE_EXCEEDED:
                self.link.suspect_rtt(timings["cloud_call_ms"], time.monotonic())
            self._failed(model, e)
            return Remote(None, sent, f"{e.code.name}: {e.details}"[:200])
        except CodecError as e:
            reason = f"bad response frame: {e}"[:200]
            self.bad_reply(reason)
            return Remote(None, sent, reason)
        finally:
            self.inflight.pop(token, None)
        timings["cloud_call_ms"] = call_ms
        if not np.isfinite(y).all():  # whose fault: the caller compares the local answer
            return Remote(None, sent, "non-finite output", suspect=True)
        now = time.monotonic()
        self.breaker.record_success()
        pt = timing_from_proto(resp.timing)
        if plausible_timing(pt, call_ms):
            timings["cloud_queue_ms"] = pt.queue_ms
            timings["cloud_compute_ms"] = pt.compute_ms  # the whole batch's
            timings["cloud_decode_ms"] = pt.decode_ms
            timings["cloud_batch_size"] = float(pt.batch_size)
            self.link.add_transfer(sent, max(call_ms - pt.total_ms, 0.0), now)
            self._loads.cloud_sample(c.key, pt.queue_ms, pt.compute_ms, now)
        if self.monitor is not None and self.link.pending():
            self.monitor.confirm()  # confirm the suspected change with a probe before the next request
        return Remote(y, sent, None)

    def _cancelled(
        self, model: LoadedModel, c: Candidate, sent: int, tc: float, timings: dict[str, float]
    ) -> Remote:
        """A call the hedge's local finish made moot. One out longer than predicted
        counts as the timeout it replaced (RTT suspicion, a breaker failure: a hung cloud
        still opens the breaker); one the hedge gave up on early, to keep the deadline on
        a slow device, blames no one."""
        ms = (time.perf_counter() - tc) * 1000.0
        timings["cloud_call_ms"] = ms
        if ms > c.call_ms:
            self.link.suspect_rtt(ms, time.monotonic())
            code = grpc.StatusCode.DEADLINE_EXCEEDED
            self._failed(model, RpcError("hedged call overran", code=code, details="cancelled"))
        return Remote(None, sent, "cancelled: the local finish answered first")

    def back_off(self, ms: float) -> None:
        """Skip this cloud for ``ms`` (capped at the breaker's cooldown)."""
        ms = min(ms, self._cfg.breaker_cooldown_s * 1000.0)
        self._busy_until = max(self._busy_until, time.monotonic() + ms / 1000.0)

    def bad_reply(self, reason: str) -> None:
        """The cloud answered with something that is not an answer: count it against
        this cloud (its breaker), not against the link, which delivered it."""
        if self.breaker.record_failure():
            _flips.warning(
                f"breaker:{','.join(self.addresses)}",
                "circuit breaker opened after %d failures (last: bad reply: %s)",
                self.breaker.failure_threshold,
                reason,
            )

    def _failed(self, model: LoadedModel, e: CollabError) -> None:
        code = getattr(e, "code", None)
        if code in _MODEL_ERRORS:
            if model.served:
                logger.warning(
                    "cloud cannot serve %s@%s: %s",
                    model.model_id.name,
                    model.model_id.version[:12],
                    e,
                )
            model.served = False
        else:
            self.link.record_failure(
                time.monotonic(), timeout=code == grpc.StatusCode.DEADLINE_EXCEEDED
            )
            if self.breaker.record_failure():
                _flips.warning(
                    f"breaker:{','.join(self.addresses)}",
                    "circuit breaker opened after %d failures (last: %s)",
                    self.breaker.failure_threshold,
                    e,
                )
        if self.monitor is not None:
            if self.link.pending():
                self.monitor.confirm()
            self.monitor.poke()
