"""The edge daemon: ``collab.v1.EdgeService.Infer`` in front of one :class:`collab.Client`.

A thin servicer decodes the input frame, calls the client (the same runtime as the
SDK) and maps errors to gRPC status codes (:mod:`collab.rpc_status`); the daemon never
loses a request to a cloud failure because the client finishes locally.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from collab import codec as codecs
from collab.edge.client import Client
from collab.edge.config import InferenceResult
from collab.errors import ConfigError
from collab.log import logger
from collab.proto import collab_pb2, collab_pb2_grpc
from collab.rpc_status import abort, status_for
from collab.transport import parse_address, server_credentials, server_options
from edge_node.canary import VersionMonitor
from edge_node.config import EdgeConfig
from edge_node.fleet import join_fleet
from edge_node.metrics import EdgeMetrics
from edge_node.watchdog import Watchdog


def result_to_proto(
    r: InferenceResult, request_id: str, model: collab_pb2.ModelId
) -> collab_pb2.EdgeInferResponse:
    return collab_pb2.EdgeInferResponse(
        request_id=request_id,
        output=codecs.encode(np.asarray(r.output, dtype=np.float32), "f32"),
        path=r.path,
        split_point=r.split_point or "",
        bytes_sent=r.bytes_sent,
        timings=r.timings,
        fell_back=r.fell_back,
        model=model,
    )


class EdgeHandler:
    """Domain side of the daemon: frame in, InferenceResult out."""

    def __init__(
        self,
        client: Client,
        metrics: EdgeMetrics,
        *,
        max_input_bytes: int,
        watchdog: Watchdog | None = None,
        monitor: VersionMonitor | None = None,
    ) -> None:
        self.client = client
        self.metrics = metrics
        self.max_input_bytes = max_input_bytes
        self.watchdog = watchdog
        self.monitor = monitor  # per-version telemetry + canary shadow (fleet members)

    def infer(self, frame: bytes, *, policy: str, deadline_ms: float | None) -> InferenceResult:
        x = codecs.decode(frame, max_bytes=self.max_input_bytes)
        try:
            r = self.client.infer(x, policy=policy or None, deadline_ms=deadline_ms)
        except Exception:
            if self.monitor is not None:
                self.monitor.error(self.client.bundle.version)
            raise
        if self.monitor is not None:
            self.monitor.observe(x, r)
        self.metrics.observe(
            path=r.path,
            seconds=r.latency_ms / 1000.0,
            bytes_sent=r.bytes_sent,
            fell_back=r.fell_back,
            reason=r.fallback_reason,
            deadline_met=r.deadline_met,
        )
        if self.watchdog is not None:
            self.watchdog.observe(r, deadline_ms)
        self.metrics.breaker_open.set(float(self.client.breaker.is_open))
        self.metrics.cloud_reachable.set(float(self.client.link.reachable))
        return r


class EdgeServicer(collab_pb2_grpc.EdgeServiceServicer):
    def __init__(self, handler: EdgeHandler) -> None:
        self.h = handler

    def Infer(
        self, request: collab_pb2.EdgeInferRequest, context: grpc.ServicerContext
    ) -> collab_pb2.EdgeInferResponse:
        deadline = request.deadline_ms or None
        remaining = context.time_remaining()
        if remaining is not None and remaining < 1e6:
            grpc_ms = remaining * 1000.0
            deadline = grpc_ms if deadline is None else min(deadline, grpc_ms)
        try:
            r = self.h.infer(request.frame, policy=request.policy, deadline_ms=deadline)
            model = collab_pb2.ModelId(name=self.h.client.bundle.name, version=r.model_version)
            return result_to_proto(r, request.request_id, model)
        except Exception as e:
            self.h.metrics.errors.labels(status_for(e).name).inc()
            abort(context, e, "Infer")


@dataclass
class EdgeServer:
    grpc_server: grpc.Server
    client: Client
    metrics: EdgeMetrics
    port: int
    metrics_port: int | None
    watchdog: Watchdog
    agent: Any = None  # collab.control.agent.NodeAgent when the node joined a fleet

    def stop(self, grace_s: float = 5.0) -> None:
        self.watchdog.stop()
        if self.agent is not None:
            self.agent.stop()
        self.grpc_server.stop(grace_s).wait()
        self.client.close()
        self.metrics.close()


@contextmanager
def serve(
    config: EdgeConfig, *, escalate: Callable[[str], None] | None = None
) -> Iterator[tuple[EdgeServer, int]]:
    """Run the daemon; yields ``(server, port)``; drains in-flight requests on exit.
    ``escalate``: how the watchdog has the process restarted (edge_node.watchdog)."""
    client = Client(config.bundle, config=config.client)
    metrics = EdgeMetrics()
    try:
        m = client.bundle.manifest
        limit = max(config.client.max_message_bytes, m.input_bytes * 64)
        watchdog = Watchdog(
            config.watchdog,
            client,
            metrics.registry,
            default_deadline_ms=config.client.deadline_ms,
            escalate=escalate,
        )
        monitor = VersionMonitor(client.config) if config.mqtt is not None else None
        handler = EdgeHandler(
            client, metrics, max_input_bytes=limit, watchdog=watchdog, monitor=monitor
        )
        server = grpc.server(
            futures.ThreadPoolExecutor(
                max_workers=config.workers, thread_name_prefix="collab-edge"
            ),
            options=server_options(max_message_bytes=limit),
            maximum_concurrent_rpcs=config.max_concurrent_rpcs,
        )
        collab_pb2_grpc.add_EdgeServiceServicer_to_server(EdgeServicer(handler), server)
        try:
            if config.tls_cert is not None and config.tls_key is not None:
                port = server.add_secure_port(
                    config.listen,
                    server_credentials(config.tls_cert, config.tls_key, config.tls_client_ca),
                )
            else:
                port = server.add_insecure_port(config.listen)
        except RuntimeError as e:
            raise ConfigError(f"cannot listen on {config.listen}: {e}") from e
        if not port:
            raise ConfigError(f"cannot listen on {config.listen} (address in use?)")
        server.start()
        mport = None
        if config.metrics_port is not None:
            mport = metrics.serve_http(
                config.metrics_port, parse_address(config.listen, allow_zero=True)[0]
            )
    except BaseException:
        client.close()
        metrics.close()
        raise
    logger.info(
        "edge node listening on port %d (bundle %s@%s, cloud=%s, policy=%s, metrics=%s)",
        port,
        client.bundle.name,
        client.bundle.version[:12],
        ",".join(client.cloud) or "-",
        client.config.policy,
        mport,
    )
    es = EdgeServer(
        grpc_server=server,
        client=client,
        metrics=metrics,
        port=port,
        metrics_port=mport,
        watchdog=watchdog,
    )
    try:
        if config.mqtt is not None:
            es.agent = join_fleet(config, client, port, watchdog, monitor)
        watchdog.start()
    except BaseException:
        es.stop(0)
        raise
    try:
        yield es, port
    finally:
        es.stop()
