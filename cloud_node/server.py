"""Build, run and drain a cloud node.

A thread-pool gRPC server whose handler threads batch among themselves (see
cloud_node.batcher): an unloaded request runs ONNX Runtime on its own handler thread
with no hand-off, and at most ``workers`` batches (one per core by default, one
intra-op thread each) compute at once while the next batches fill. Measured on this
2-core box, grpc.aio cost ~15 % more CPU per RPC than the sync server, and an
asyncio batcher with an executor added two thread hand-offs per request.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from cloud_node.config import CloudConfig
from cloud_node.handler import CloudHandler
from cloud_node.metrics import Metrics
from cloud_node.models import ModelRegistry
from cloud_node.servicer import CloudServicer
from collab.bundle import load_bundle
from collab.errors import ConfigError
from collab.log import logger
from collab.proto import collab_pb2_grpc
from collab.transport import SERVICE_NAME, parse_address, server_credentials, server_options

_MIN_MESSAGE_BYTES = 1 << 20  # room for bandwidth probes even with tiny models
_FRAME_MARGIN = 1.10  # lossless frames of incompressible data grow a little
_FRAME_SLACK = 64 * 1024  # frame header, protobuf fields


class CloudServer:
    """A running node. ``stop`` may be called from any thread (it is idempotent)."""

    def __init__(
        self,
        *,
        grpc_server: grpc.Server,
        handler: CloudHandler,
        health: health.HealthServicer,
        metrics: Metrics,
        pool: ThreadPoolExecutor,
        port: int,
        metrics_port: int | None,
        grace_s: float,
    ) -> None:
        self.grpc_server = grpc_server
        self.handler = handler
        self.health = health
        self.metrics = metrics
        self.port = port
        self.metrics_port = metrics_port
        self._pool = pool
        self._grace = grace_s
        self._stopped = threading.Event()
        self._stopping = threading.Lock()

    @property
    def max_message_bytes(self) -> int:
        return self.handler.max_message_bytes

    def stop(self, grace_s: float | None = None) -> None:
        """Report NOT_SERVING, stop accepting, run queued requests at once and let
        in-flight ones finish (up to the grace period), then release everything."""
        with self._stopping:
            if self._stopped.is_set():
                return
            grace = self._grace if grace_s is None else grace_s
            logger.info("cloud node draining (grace %.1fs)", grace)
            self.health.enter_graceful_shutdown()
            done = self.grpc_server.stop(grace)
            self.handler.close()
            done.wait(grace + 5)
            self._pool.shutdown(wait=False)
            self.metrics.close()
            self._stopped.set()
            logger.info("cloud node stopped")


def message_limit(config: CloudConfig, registry: ModelRegistry) -> int:
    if config.max_message_bytes:
        return config.max_message_bytes
    frame = registry.largest_sample_bytes() * config.max_batch_size * _FRAME_MARGIN + _FRAME_SLACK
    return max(_MIN_MESSAGE_BYTES, int(frame))


def start(config: CloudConfig, registry: ModelRegistry) -> CloudServer:
    limit = message_limit(config, registry)
    workers = config.worker_count
    metrics = Metrics()
    handler = CloudHandler(
        registry,
        metrics=metrics,
        max_batch_size=config.max_batch_size,
        max_wait_ms=config.max_wait_ms,
        max_message_bytes=limit,
        max_probe_response_bytes=config.max_probe_response_bytes,
        wait_when_idle=config.wait_when_idle,
        edf=config.edf,
        max_queue_ms=config.max_queue_ms,
    )
    pool = ThreadPoolExecutor(max_workers=config.threads, thread_name_prefix="collab-rpc")
    server = grpc.server(
        pool,
        options=server_options(max_message_bytes=limit),
        maximum_concurrent_rpcs=config.max_concurrent_rpcs,
    )
    collab_pb2_grpc.add_CloudServiceServicer_to_server(CloudServicer(handler), server)
    hs = health.HealthServicer(
        experimental_non_blocking=True, experimental_thread_pool=ThreadPoolExecutor(max_workers=1)
    )
    health_pb2_grpc.add_HealthServicer_to_server(hs, server)
    try:
        if config.tls_cert is not None and config.tls_key is not None:
            creds = server_credentials(config.tls_cert, config.tls_key, config.tls_client_ca)
            port = server.add_secure_port(config.listen, creds)
        else:
            port = server.add_insecure_port(config.listen)
    except RuntimeError as e:
        port = 0
        logger.debug("bind failed", exc_info=e)
    if not port:
        pool.shutdown(wait=False)
        raise ConfigError(f"cannot listen on {config.listen} (address in use or not local?)")
    server.start()
    for name in ("", SERVICE_NAME, *(f"{SERVICE_NAME}/{m.name}" for m in registry.models)):
        hs.set(name, health_pb2.HealthCheckResponse.SERVING)
    metrics_port = None
    if config.metrics_port is not None:
        host, _ = parse_address(config.listen, allow_zero=True)
        metrics_port = metrics.serve_http(config.metrics_port, host)
    logger.info(
        "cloud node listening on port %d (tls=%s, client_certs=%s, metrics=%s, "
        "max_batch=%d, max_wait_ms=%.1f, workers=%d, edf=%s, max_message=%d, models=%s)",
        port,
        config.tls_cert is not None,
        config.tls_client_ca is not None,
        metrics_port,
        config.max_batch_size,
        config.max_wait_ms,
        workers,
        config.edf,
        limit,
        [f"{m.name}@{m.version[:12]}:{m.execution}" for m in registry.models],
    )
    return CloudServer(
        grpc_server=server,
        handler=handler,
        health=hs,
        metrics=metrics,
        pool=pool,
        port=port,
        metrics_port=metrics_port,
        grace_s=config.grace_s,
    )


@contextmanager
def serve(config: CloudConfig) -> Iterator[tuple[CloudServer, int]]:
    """Run a cloud node; yields ``(server, port)`` and drains it on exit. Bundles are
    verified and every session is created (and warmed up) before listening."""
    # the registry builds every segment session now: hand it the bytes verified here once
    bundles = [load_bundle(p, keep_segments=True) for p in config.bundles]
    registry = ModelRegistry(
        bundles,
        intra_threads=config.intra_threads,
        execution=config.execution,
        workers=config.worker_count,
        batch=config.max_batch_size,
    )
    if config.warmup:
        registry.warmup()
    server = start(config, registry)
    try:
        yield server, server.port
    finally:
        server.stop()
