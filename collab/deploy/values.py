"""The values file of ``collab deploy render`` (deploy/values.yaml): one strict schema.

Every key is checked before a manifest is written: unknown keys, wrong kinds, and values
that cannot work together (TLS on without a secret, an HPA over zero replicas) are one
:class:`ConfigError` whose lines name the value (collab.yamlcfg). The ``settings:``
sections are the role config dataclasses' settings by name (collab.setting_keys) and are
checked by constructing the dataclass itself, so the file can never hold a setting the
daemon would refuse at start.
"""

from __future__ import annotations

from dataclasses import field
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, StrictBool, StrictInt, StrictStr

from cloud_node.config import CloudConfig
from collab.deploy.layout import (
    BUNDLE_DIR,
    FETCH_TOKEN,
    PUB_FILE,
    RUN_DIR,
    TLS_DIR,
    TRUST_DIR,
    WORK_DIR,
)
from collab.edge.config import ClientConfig
from collab.setting_keys import given, setting_keys
from collab.settings import settings
from collab.yamlcfg import FieldError, config_dataclass, load_yaml, validate
from coordinator.daemon import CoordinatorConfig
from edge_node.config import EdgeConfig
from edge_node.watchdog_config import WatchdogConfig

Port = Annotated[StrictInt, Field(ge=1, le=65535)]
Name = Annotated[StrictStr, Field(pattern=r"^[a-z0-9]([-a-z0-9]{0,51}[a-z0-9])?$")]
Quantity = Annotated[StrictStr, Field(pattern=r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$")]

# what the chart itself decides (ports, paths, identities); the rest is the file's
CLOUD_OWNED = ("listen", "metrics_port", "tls_cert", "tls_key", "tls_client_ca")
EDGE_OWNED = (
    *CLOUD_OWNED,
    *("trusted_key", "work_dir", "fetch_token_file"),
    "node_id",  # per pod: $(NODE_NAME), in the container's args
)
COORDINATOR_OWNED = (
    *("broker_auth", "allow_anonymous_broker", "bundle_store", "signing_key", "fetch_key"),
    *("listen", "operator_listen", "advertise", "grpc_tls_cert", "grpc_tls_key"),
)
CLOUD_KEYS = settings(CloudConfig, skip=CLOUD_OWNED)
CLIENT_KEYS = settings(ClientConfig)
EDGE_KEYS = settings(EdgeConfig, skip=EDGE_OWNED)
# the fault-injection debug switch is no chart setting: a fleet never runs with it
WATCHDOG_KEYS = settings(WatchdogConfig, skip=("fault_injection",))
COORDINATOR_KEYS = settings(CoordinatorConfig, skip=COORDINATOR_OWNED)
CLOUD_OWNED_KEYS = [s for s in settings(CloudConfig) if s.name in CLOUD_OWNED]
EDGE_OWNED_KEYS = [s for s in settings(EdgeConfig) if s.name in EDGE_OWNED[:-1]]


@config_dataclass
class Tls:
    enabled: StrictBool = False
    # a kubernetes.io/tls Secret: tls.crt, tls.key and ca.crt (as cert-manager writes it)
    secret: Name | None = None

    def __post_init__(self) -> None:
        if self.enabled and self.secret is None:
            raise FieldError("secret", "is required when tls.enabled is true")


@config_dataclass
class ServerTls:
    """TLS of a gRPC listener the daemon refuses to open off loopback without client
    certificates (collab.transport.check_listener) unless its settings say ``insecure``."""

    enabled: StrictBool = False
    secret: Name | None = None  # kubernetes.io/tls: tls.crt, tls.key, ca.crt
    client_certs: StrictBool = False  # require client certificates signed by its ca.crt
    # cloud only: the kubernetes.io/tls Secret whose certificate the edges present
    client_secret: Name | None = None

    def __post_init__(self) -> None:
        if self.enabled and self.secret is None:
            raise FieldError("secret", "is required when tls.enabled is true")
        if self.client_certs and not self.enabled:
            raise FieldError("client_certs", "needs tls.enabled: true")

    def owned(self) -> dict[str, Any]:
        """The daemon's TLS settings as the pod mounts them (TLS_DIR)."""
        on = self.enabled
        return {
            "tls_cert": Path(f"{TLS_DIR}/tls.crt") if on else None,
            "tls_key": Path(f"{TLS_DIR}/tls.key") if on else None,
            "tls_client_ca": Path(f"{TLS_DIR}/ca.crt") if on and self.client_certs else None,
        }


@config_dataclass
class Resources:
    cpu: Quantity = "500m"
    memory: Quantity = "512Mi"


@config_dataclass
class Images:
    cloud: StrictStr = "edgecollab-cloud:0.1.0"
    coordinator: StrictStr = "edgecollab-coordinator:0.1.0"
    edge: StrictStr = "edgecollab-edge:0.1.0"
    mosquitto: StrictStr = "eclipse-mosquitto:2.0.18"
    pull_policy: Annotated[StrictStr, Field(pattern=r"^(Always|IfNotPresent|Never)$")] = (
        "IfNotPresent"
    )


@config_dataclass
class Secrets:
    """Secret names; ``collab deploy render --secrets DIR`` writes them from ``collab
    mqtt-auth``'s directory, or an operator creates them with the same keys."""

    mqtt_auth: Name = "collab-mqtt-auth"  # passwd, acl: Mosquitto's
    coordinator: Name = "collab-coordinator"  # signing key, admin token, MQTT password
    edge_credentials: Name = "collab-edge-mqtt"  # one key per edge node id: its MQTT password
    trust: Name = "collab-trust"  # ConfigMap: the coordinator's public key


@config_dataclass
class Mosquitto:
    port: Port = 1883
    tls: Tls = field(default_factory=Tls)
    resources: Resources = field(default_factory=lambda: Resources(cpu="250m", memory="128Mi"))


@config_dataclass
@setting_keys(COORDINATOR_KEYS)
class Coordinator:
    storage: Quantity = "1Gi"
    storage_class: StrictStr | None = None
    port: Port = 50070  # nodes: bundle fetch (gRPC)
    operator_port: Port = 50071  # `collab rollout` (gRPC, admin token)
    # host:port the nodes fetch bundles from (default: the in-cluster Service name)
    advertise: StrictStr | None = None
    metrics_port: Port = 9102
    # status_interval (a setting key): the retained fleet snapshot is rebuilt this often; at
    # 10k nodes every 2 s its cost pushes the heartbeat p99 past 100 ms (benchmarks/fleet.py):
    # large fleets set 30+
    tls: Tls = field(default_factory=Tls)
    resources: Resources = field(default_factory=Resources)

    def argv_settings(self) -> dict[str, Any]:
        return given(self, COORDINATOR_KEYS)


@config_dataclass
class Hpa:
    enabled: StrictBool = True
    min_replicas: Annotated[StrictInt, Field(ge=1)] = 2
    max_replicas: Annotated[StrictInt, Field(ge=1)] = 10
    cpu_percent: Annotated[StrictInt, Field(ge=1, le=100)] | None = 70
    # per-pod average of a custom metric served by a metrics adapter (docs/deploy.md):
    # the cloud node's queue delay, p95 over the last minute, in milliseconds
    queue_delay_ms: Annotated[float, Field(gt=0)] | None = None
    queue_delay_metric: StrictStr = "collab_cloud_queue_delay_p95_ms"

    def __post_init__(self) -> None:
        if self.min_replicas > self.max_replicas:
            raise FieldError("min_replicas", f"must be <= max_replicas ({self.max_replicas})")
        if self.enabled and self.cpu_percent is None and self.queue_delay_ms is None:
            raise FieldError("enabled", "an HPA needs cpu_percent or queue_delay_ms")


@config_dataclass
class BundleVolume:
    """Where the served bundles lie: a PersistentVolumeClaim (ReadOnlyMany) or a host
    directory; ``subdirs`` are the bundle directories in it (``--bundle`` each)."""

    claim: Name | None = None
    host_path: Path | None = None
    subdirs: tuple[StrictStr, ...] = (".",)

    def __post_init__(self) -> None:
        if (self.claim is None) == (self.host_path is None):
            raise FieldError("claim", "give exactly one of claim and host_path")


@config_dataclass
@setting_keys(CLOUD_KEYS)
class Cloud:
    replicas: Annotated[StrictInt, Field(ge=0)] = 2
    port: Port = 50051
    metrics_port: Port = 9100
    bundle: BundleVolume = field(default_factory=lambda: BundleVolume(claim="collab-bundles"))
    hpa: Hpa = field(default_factory=Hpa)
    tls: ServerTls = field(default_factory=ServerTls)
    resources: Resources = field(default_factory=lambda: Resources(cpu="1", memory="1Gi"))

    def __post_init__(self) -> None:
        if self.hpa.enabled and self.replicas == 0:
            raise FieldError("replicas", "is 0 but hpa.enabled is true: an HPA cannot scale from 0")
        if self.tls.client_certs and self.tls.client_secret is None:
            raise FieldError(
                ("tls", "client_secret"),
                "is required when tls.client_certs is true (the certificate the edges present)",
            )
        self.config()

    def owned(self) -> dict[str, Any]:
        return {
            "listen": f"0.0.0.0:{self.port}",
            "metrics_port": self.metrics_port,
            **self.tls.owned(),
        }

    def config(self) -> CloudConfig:
        """The node's config as the pods will build it (its own checks run here)."""
        return CloudConfig(bundles=(Path(BUNDLE_DIR),), **self.owned(), **self.argv_settings())

    def argv_settings(self) -> dict[str, Any]:
        return given(self, CLOUD_KEYS)


@config_dataclass
@setting_keys([*CLIENT_KEYS, *EDGE_KEYS, *WATCHDOG_KEYS])
class Edge:
    # where edges reach the broker and the cloud tier: in-cluster names by default; a
    # regional broker (docs/deploy.md, bridged brokers) or an ingress from outside
    broker: StrictStr | None = None
    port: Port = 50061
    metrics_port: Port = 9101
    bundle_host_path: Path = Path("/var/lib/collab/bundle")
    work_host_path: Path = Path("/var/lib/collab/work")
    node_role_label: StrictStr = "node-role.kubernetes.io/edge"
    tls: ServerTls = field(default_factory=ServerTls)  # the listener device apps call
    resources: Resources = field(default_factory=Resources)

    def __post_init__(self) -> None:
        if self.tls.client_secret is not None:
            raise FieldError(("tls", "client_secret"), "is for cloud.tls only")
        EdgeConfig(
            bundle=Path(BUNDLE_DIR),
            client=ClientConfig(**given(self, CLIENT_KEYS)),
            watchdog=WatchdogConfig(**given(self, WATCHDOG_KEYS)),
            **self.owned(),
            **given(self, EDGE_KEYS),
        )

    def owned(self) -> dict[str, Any]:
        return {
            "listen": f"0.0.0.0:{self.port}",
            "metrics_port": self.metrics_port,
            **self.tls.owned(),
            "trusted_key": Path(f"{TRUST_DIR}/{PUB_FILE}"),
            "work_dir": Path(WORK_DIR),
            "fetch_token_file": Path(f"{RUN_DIR}/{FETCH_TOKEN}"),
        }

    def argv_settings(self) -> dict[str, Any]:
        return given(self, [*CLIENT_KEYS, *EDGE_KEYS, *WATCHDOG_KEYS])


@config_dataclass
class Values:
    namespace: Name = "collab"
    name: Name = "collab"  # prefix of every object's name
    images: Images = field(default_factory=Images)
    secrets: Secrets = field(default_factory=Secrets)
    mosquitto: Mosquitto = field(default_factory=Mosquitto)
    coordinator: Coordinator = field(default_factory=Coordinator)
    # no defaults: the daemons listen off loopback, so each section must say how
    # (tls.client_certs, or insecure: true)
    cloud: Cloud
    edge: Edge


def parse_values(text: str, *, source: str = "<values>") -> Values:
    data, lines = load_yaml(text, source)
    return validate(Values, data if data is not None else {}, source=source, lines=lines)
