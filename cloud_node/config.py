"""``collab cloud``'s configuration. Every field but ``bundles`` (``--bundle``, repeated)
is one CLI flag (cloud_node.cli derives them), and a scenario's ``cloud:`` section sets
the serving ones by name (collab.scenario.schema); each default is written here once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cloud_node.execution import MODES, usable_cores
from collab.errors import ConfigError
from collab.settings import check_bounds, setting
from collab.transport import check_listener


@dataclass(frozen=True, kw_only=True)
class CloudConfig:
    bundles: tuple[Path, ...]
    # loopback on the conventional gRPC port (the CLI's default; the dataclass used to say
    # port 0): clients must know where a daemon is, and off-loopback must be asked for
    listen: str = setting(
        "127.0.0.1:50051", help="gRPC address (port 0 = any free port)", metavar="HOST:PORT"
    )
    metrics_port: int | None = setting(
        None,
        help="serve Prometheus /metrics on this port (0 = any free port)",
        lo=0,
        hi=65535,
        metavar="P",
    )
    # 16 samples / 2 ms (the daemon's; scenarios used to default to 8 / 1 ms and now state
    # it): the configuration benchmarks/cloud.py measures, a weight-bound tail reads its
    # weights once per batch of 16, and a batch waits only while another one computes
    # (unless wait_when_idle), so an unloaded node never pays the 2 ms
    max_batch_size: int = setting(16, help="samples per batch (1 = no batching)", lo=1, metavar="N")
    max_wait_ms: float = setting(
        2.0, help="longest a batch stays open while another one computes", lo=0, metavar="T"
    )
    wait_when_idle: bool = setting(
        False,
        help="hold batches open for max_wait_ms even when no other batch "
        "is running (off: an unloaded request never waits)",
    )
    workers: int = setting(0, help="concurrent batches (0 = one per core)", lo=0)
    # auto: a start-up micro-benchmark per model (cloud_node.execution); the mode chosen
    # is logged and exported as collab_cloud_execution_mode
    execution: str = setting(
        "auto",
        help="auto, threads (one session set, intra-op threads = workers x intra-threads) "
        "or sessions (one set per worker, pinned to its core)",
        metavar="MODE",
    )
    # earliest deadline first, late work refused before it queues (cloud_node.batcher)
    edf: bool = setting(
        True,
        help="queue by deadline and refuse at once what the queue would make late "
        "(off: FIFO, late requests dropped only once their deadline passed)",
    )
    # a bounded queue, by time: a request predicted to wait longer is refused with
    # RESOURCE_EXHAUSTED and a retry-after hint (the edge finishes it locally and backs
    # off this node meanwhile); 500 ms is far beyond any interactive deadline
    max_queue_ms: float = setting(
        500.0, help="longest predicted queueing a request is admitted to (0 = unbounded)", lo=0
    )
    threads: int = setting(
        64, help="gRPC handler threads = requests in flight (queued ones hold one)", lo=2
    )
    # bounds what a flood of calls can hold (each queued one keeps its request): running
    # plus queued handler calls; health watches do not count (they hold no thread)
    max_concurrent_rpcs: int = setting(
        256, help="calls in progress at most; more are refused (RESOURCE_EXHAUSTED)", lo=1
    )
    intra_threads: int = setting(1, help="ONNX Runtime threads per batch", lo=1)
    max_message_bytes: int = setting(
        0, help="gRPC message limit (0 = from the bundles' largest frame)", lo=0
    )
    # 64 KiB: edges probe with 1-byte replies (they measure the uplink, which carries the
    # features); a larger ask is refused, so a tiny request cannot buy a large reply
    max_probe_response_bytes: int = setting(
        64 * 1024, help="largest Probe reply a caller may ask for (more: RESOURCE_EXHAUSTED)", lo=0
    )
    tls_cert: Path | None = setting(None, help="server certificate (PEM)")
    tls_key: Path | None = setting(None, help="server private key (PEM)")
    tls_client_ca: Path | None = setting(
        None, help="require client certificates signed by this CA (PEM)"
    )
    insecure: bool = setting(
        False, help="listen off loopback without client certificates (anyone may call this node)"
    )
    grace_s: float = setting(
        10.0, help="drain time for in-flight requests on shutdown", lo=0, metavar="S"
    )
    warmup: bool = setting(True, help="run every graph once before listening")

    def __post_init__(self) -> None:
        if not self.bundles:
            raise ConfigError("at least one --bundle is required")
        check_bounds(self)
        if self.execution not in MODES:
            raise ConfigError(f"--execution {self.execution!r}: one of {', '.join(MODES)}")
        check_listener(
            self.listen,
            tls_cert=self.tls_cert,
            tls_key=self.tls_key,
            tls_client_ca=self.tls_client_ca,
            insecure=self.insecure,
            risk="use this node's compute and read its models' outputs",
        )

    @property
    def worker_count(self) -> int:
        # the cores this process may run on (a cpuset, a scenario's pinned node)
        return self.workers or len(usable_cores()) or 1
