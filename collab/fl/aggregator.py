"""The aggregator role: samples clients, announces rounds over MQTT, receives updates
over gRPC streaming, ADDS them, and serves the aggregate. It holds only the public
context under HE, so it never sees a plaintext update, nor the plaintext model."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field

import grpc
from google.protobuf.message import Message

from collab.control import topics
from collab.control.messages import MalformedMessage
from collab.control.mqtt import MqttClient
from collab.errors import (
    AuthError,
    FLError,
    NotFoundError,
    PrivacyBudgetExceeded,
    RoundMismatch,
    UpdateRejected,
)
from collab.fl import he
from collab.fl import messages as msg
from collab.fl.config import FLConfig
from collab.fl.endpoint import AggregatorEndpoint, check_uploader
from collab.fl.round_sum import Aggregate, RoundState, UpdateHeader, make_summer
from collab.fl.rounds import RoundPlanner
from collab.fl.stream import (
    Slots,
    StreamDeadline,
    UploadLimits,
    message_limit,
    read_chunks,
    upload_limits,
)
from collab.fl.wire import aggregate_to_proto, header_from_proto
from collab.log import RateLimited, logger
from collab.proto import fl_pb2, fl_pb2_grpc
from collab.rpc_status import abort
from collab.transport import server_options

# refused uploads and presences: a client (or an attacker) retrying in a loop logs once a
# minute per cause, with the count of the suppressed lines
_ignored = RateLimited()


@dataclass(frozen=True, kw_only=True)
class RoundOutcome:
    round: int
    sampled: int
    reporters: int
    version: str
    epsilon: float | None
    sigma_eff: float | None
    aggregated: bool


def model_shape(cfg: FLConfig) -> tuple[int, str]:
    """(number of federated values, initial version) from the seeded initial model."""
    from collab.fl.model import federated_names, get_flat
    from collab.fl.public import initial_model
    from collab.fl.state import initial_version

    m = initial_model(cfg)
    flat = get_flat(m, federated_names(m, cfg.model.federated))
    return int(flat.size), initial_version(flat)


@dataclass
class Aggregator:
    cfg: FLConfig
    public_context: bytes | None
    advertise: str = ""
    mqtt: MqttClient | None = None
    roster: dict[str, msg.ClientHello] = field(default_factory=dict)
    outcomes: list[RoundOutcome] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.cfg.he_enabled and self.public_context is None:
            raise FLError("HE mode: the aggregator needs the federation's public context")
        if self.public_context is not None and he.load_context(self.public_context).is_private():
            raise FLError(
                "refusing a context that holds the secret key: the aggregator gets the public one only"
            )
        self.dim, self.version = model_shape(self.cfg)
        cid = (
            he.context_id(self.public_context)
            if self.cfg.he_enabled and self.public_context
            else ""
        )
        self.planner = RoundPlanner(self.cfg, self.dim, context_id=cid)
        self.current: RoundState | None = None
        self.aggregates: dict[str, Aggregate] = {}  # base_version -> aggregate
        self._lock = threading.Lock()
        self._roster_changed = threading.Condition(self._lock)

    # ---------------------------------------------------------------- handlers (gRPC side)
    def upload(self, header: UpdateHeader, chunks: list[bytes]) -> int:
        with self._lock:
            st = self.current
        if st is None:
            raise RoundMismatch("no round is open")
        n = st.submit(header, chunks, max_chunk_bytes=self.limits().chunk_bytes)
        logger.info(
            "round %d: accepted update from %s (%d/%d)",
            header.round,
            header.client_id,
            n,
            len(st.spec.sampled),
        )
        return n

    def precheck(self, header: UpdateHeader) -> UploadLimits:
        """Refuse a header before its payload streams in; the limits of its payload."""
        with self._lock:
            st = self.current
        if st is None:
            raise RoundMismatch("no round is open")
        st.check_header(header)
        limits = self.limits()
        if header.num_chunks != limits.chunks:
            raise UpdateRejected(
                f"update announces {header.num_chunks} chunks, the round expects {limits.chunks}"
            )
        return limits

    def limits(self) -> UploadLimits:
        """An upload's limits: from the model size and encoding, never from its header."""
        return upload_limits(
            self.planner.encoding, self.dim + 1, self.cfg.he.params(), self.planner.packing
        )

    def fetch(self, base_version: str) -> Aggregate:
        with self._lock:
            agg = self.aggregates.get(base_version)
        if agg is None:
            raise NotFoundError(f"no aggregate moves the model from version {base_version!r}")
        return agg

    # ---------------------------------------------------------------- MQTT side
    def _on_client(self, topic: str, payload: bytes, retained: bool) -> None:
        parsed = topics.parse_fl_client_topic(topic)
        if parsed is None:  # its id could not be sampled: clients reject announcements naming it
            _ignored.warning(
                "not a client topic", "ignoring client presence on %s: not a client topic", topic
            )
            return
        cid = parsed[1]
        with self._lock:
            if not payload:
                self.roster.pop(cid, None)
            else:
                try:
                    hello = msg.hello_from_bytes(payload)
                except MalformedMessage as e:
                    _ignored.warning(
                        f"malformed:{cid}", "ignoring client presence on %s: %s", topic, e
                    )
                    return
                if hello.client_id != cid:  # one client's credential speaking for another
                    _ignored.warning(
                        f"names another:{cid}",
                        "ignoring client presence on %s: it names client %r",
                        topic,
                        hello.client_id,
                    )
                    return
                self.roster[cid] = hello
            self._roster_changed.notify_all()

    def _publish(self, kind: str, m: Message) -> None:
        if self.mqtt is not None:
            self.mqtt.publish(
                topics.fl_topic(self.cfg.federation, kind),
                m.SerializeToString(),
                qos=1,
                retain=True,
                wait=10.0,
            )

    def _status(self, state: str, detail: str = "") -> None:
        eps = self.planner.accountant.epsilon if self.planner.accountant else None
        self._publish(
            topics.FL_STATUS,
            msg.status_to_proto(
                msg.FederationStatus(
                    federation=self.cfg.federation,
                    state=state,
                    round=self.planner.round,
                    version=self.version,
                    detail=detail,
                    epsilon=eps,
                )
            ),
        )

    def wait_for_clients(self, count: int, timeout: float) -> int:
        end = time.monotonic() + timeout
        with self._lock:
            while len(self.roster) < count and time.monotonic() < end:
                self._roster_changed.wait(0.2)
            return len(self.roster)

    def attach(self, mqtt: MqttClient) -> None:
        self.mqtt = mqtt
        mqtt.subscribe(topics.fl_clients_filter(self.cfg.federation), self._on_client, qos=1)

    # ---------------------------------------------------------------- the round loop
    def open_round(self) -> RoundState:
        """Sample, check the DP budget (PrivacyBudgetExceeded before anything is announced),
        open the round for uploads and announce it."""
        self.planner.check_budget()
        with self._lock:
            roster = dict(self.roster)
        sampled = self.planner.sample(list(roster))
        spec = self.planner.next_spec(
            self.version,
            sampled,
            max_examples=max((roster[c].num_examples for c in sampled), default=1),
        )
        st = RoundState(
            spec, make_summer(spec.encoding, self.public_context), self.cfg.he.params().slots
        )
        with self._lock:
            self.current = st
        self._publish(
            topics.FL_ROUND,
            msg.announcement_to_proto(
                msg.RoundAnnouncement(
                    federation=spec.federation,
                    round=spec.round,
                    base_version=spec.base_version,
                    sampled=spec.sampled,
                    deadline_unix=time.time() + self.cfg.round.deadline_s,
                    aggregator=self.advertise,
                    encoding=spec.encoding,
                    context_id=spec.context_id,
                    num_values=spec.num_values,
                    min_clients=spec.min_clients,
                    fixed_denominator=spec.fixed_denominator,
                    packing=spec.packing,
                )
            ),
        )
        logger.info(
            "round %d announced: %d sampled, base %s", spec.round, len(sampled), spec.base_version
        )
        return st

    def close_round(self, st: RoundState) -> RoundOutcome:
        """Close (late uploads are then rejected), release the aggregate if enough reported."""
        spec = st.spec
        agg = st.close()
        if agg is None:
            logger.warning(
                "round %d: only %d of %d sampled reported (< min_clients=%d); nothing released",
                spec.round,
                len(st.reporters),
                len(spec.sampled),
                spec.min_clients,
            )
            out = RoundOutcome(
                round=spec.round,
                sampled=len(spec.sampled),
                reporters=len(st.reporters),
                version=self.version,
                epsilon=None,
                sigma_eff=None,
                aggregated=False,
            )
        else:
            eps, s_eff = self.planner.account(agg)
            with self._lock:
                self.aggregates[agg.base_version] = agg
                self.version = agg.version
            self._publish(
                topics.FL_MODEL,
                msg.model_to_proto(
                    msg.ModelPublished(
                        federation=spec.federation,
                        round=spec.round,
                        base_version=agg.base_version,
                        version=agg.version,
                        reporters=len(agg.reporters),
                        sampled=len(spec.sampled),
                        epsilon=eps,
                        sigma_eff=s_eff,
                    )
                ),
            )
            logger.info(
                "round %d aggregated: %d/%d reporters, version %s, epsilon=%s",
                spec.round,
                len(agg.reporters),
                len(spec.sampled),
                agg.version,
                eps,
            )
            out = RoundOutcome(
                round=spec.round,
                sampled=len(spec.sampled),
                reporters=len(agg.reporters),
                version=agg.version,
                epsilon=eps,
                sigma_eff=s_eff,
                aggregated=True,
            )
        self.outcomes.append(out)
        return out

    def run_round(self) -> RoundOutcome:
        cpu = time.process_time()
        st = self.open_round()
        st.wait(time.monotonic() + self.cfg.round.deadline_s)
        out = self.close_round(st)
        # CPU seconds of this process over the round (ingest, serving the aggregates the
        # clients catch up with, release): benchmarks/fl_rounds.py reads it
        logger.info("round %d: aggregator cpu %.3fs", out.round, time.process_time() - cpu)
        if not out.aggregated:
            self._status(
                "running",
                f"round {out.round} released nothing: {out.reporters} of "
                f"{out.sampled} reported (< min_clients)",
            )
        return out

    def run(
        self, stop: threading.Event | None = None, wait_clients_s: float = 60.0
    ) -> list[RoundOutcome]:
        n = self.wait_for_clients(self.cfg.clients, wait_clients_s)
        logger.info("federation %s: %d clients present", self.cfg.federation, n)
        self._status("running")
        try:
            for _ in range(self.cfg.rounds):
                if stop is not None and stop.is_set():
                    break
                self.run_round()
        except PrivacyBudgetExceeded as e:
            logger.warning("stopping: %s", e)
            self._status("budget_exhausted", str(e))
            return self.outcomes
        except FLError as e:  # e.g. more clients sampled than the packing sums
            logger.error("stopping: %s", e)
            self._status("failed", str(e))
            raise
        self._status("done")
        return self.outcomes


class FlAggregatorServicer(fl_pb2_grpc.FlAggregatorServicer):
    """Thin: parse the stream within its limits (collab.fl.stream), bind the uploader to
    its certificate (collab.fl.endpoint), call the aggregator; errors go to
    :mod:`collab.rpc_status`."""

    def __init__(self, agg: Aggregator, endpoint: AggregatorEndpoint | None = None) -> None:
        self.agg = agg
        self.endpoint = endpoint or AggregatorEndpoint()
        self.uploads = Slots(self.endpoint.max_uploads, "upload streams")
        self.fetches = Slots(self.endpoint.max_fetches, "aggregate downloads")

    def UploadUpdate(
        self, request_iterator: Iterator[fl_pb2.FlUpdateChunk], context: grpc.ServicerContext
    ) -> fl_pb2.FlUploadAck:
        try:
            with (
                self.uploads.hold(),
                StreamDeadline(context, self.endpoint.stream_timeout_s) as deadline,
            ):
                messages = deadline.received(request_iterator)
                first = next(messages, None)
                if first is None or first.WhichOneof("part") != "header":
                    raise UpdateRejected("upload must start with a header message")
                header = header_from_proto(first.header)
                if self.endpoint.authenticates:
                    check_uploader(context, header.client_id)
                limits = self.agg.precheck(header)  # reject before MBs stream in
                n = self.agg.upload(header, read_chunks(messages, limits))
        except Exception as e:
            if isinstance(e, UpdateRejected | NotFoundError | AuthError):
                _ignored.warning(f"upload:{type(e).__name__}", "upload rejected: %s", e)
            abort(context, e, "UploadUpdate")
        return fl_pb2.FlUploadAck(round=header.round, reporters=n)

    def FetchAggregate(
        self, request: fl_pb2.FlAggregateRequest, context: grpc.ServicerContext
    ) -> Iterator[fl_pb2.FlAggregateChunk]:
        try:
            with self.fetches.hold(), StreamDeadline(context, self.endpoint.stream_timeout_s):
                if request.federation != self.agg.cfg.federation:
                    raise NotFoundError(f"unknown federation {request.federation!r}")
                yield from aggregate_to_proto(self.agg.fetch(request.base_version))
        except Exception as e:
            abort(context, e, "FetchAggregate")


@contextmanager
def serve(
    agg: Aggregator, endpoint: AggregatorEndpoint | str = "127.0.0.1:0"
) -> Iterator[tuple[grpc.Server, int]]:
    """Serve ``agg`` on ``endpoint`` (or on just this listen address, with the defaults).

    The pool has a worker for every upload and download slot and no more RPCs are
    admitted (RESOURCE_EXHAUSTED), so a slot's stream never waits for a worker."""
    ep = (
        endpoint
        if isinstance(endpoint, AggregatorEndpoint)
        else AggregatorEndpoint(listen=endpoint)
    )
    workers = ep.max_uploads + ep.max_fetches
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="collab-fl"),
        options=server_options(max_message_bytes=message_limit(agg.limits())),
        maximum_concurrent_rpcs=workers,
    )
    fl_pb2_grpc.add_FlAggregatorServicer_to_server(FlAggregatorServicer(agg, ep), server)
    creds = ep.credentials()
    try:
        port = (
            server.add_insecure_port(ep.listen)
            if creds is None
            else server.add_secure_port(ep.listen, creds)
        )
    except RuntimeError as e:
        raise FLError(f"cannot listen on {ep.listen}: {e}") from e
    if port == 0:
        raise FLError(f"cannot listen on {ep.listen}")
    server.start()
    if not agg.advertise:
        agg.advertise = ep.advertise or f"{ep.listen.rsplit(':', 1)[0]}:{port}"
    logger.info(
        "FL aggregator gRPC on port %d (tls=%s, client certificates=%s)",
        port,
        creds is not None,
        ep.authenticates,
    )
    try:
        yield server, port
    finally:
        server.stop(grace=1.0).wait()
