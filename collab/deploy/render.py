"""Kubernetes manifests of a fleet, rendered from checked :class:`Values`.

One function per role returns its objects as plain dicts. The daemons' settings reach
the pods as a ConfigMap holding an argument file (``collab edge @/etc/collab/config/edge.args``),
written by :func:`collab.settings.to_argv` from the same fields the CLI flags come from;
what differs per pod (the node id, its credential) is in the container's args, expanded
by the kubelet from the downward API.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any

from collab.deploy.layout import (
    ADMIN_TOKEN,
    BUNDLE_DIR,
    CONFIG_DIR,
    COORDINATOR_USER,
    FETCH_KEY,
    FETCH_SUFFIX,
    FETCH_TOKEN,
    KEY_FILE,
    MQTT_CREDS_DIR,
    MQTT_PASSWORD,
    PUB_FILE,
    RUN_DIR,
    SECRET_DIR,
    TLS_DIR,
    TRUST_DIR,
    UID,
    WORK_DIR,
)
from collab.deploy.values import (
    CLIENT_KEYS,
    CLOUD_KEYS,
    CLOUD_OWNED_KEYS,
    COORDINATOR_KEYS,
    EDGE_KEYS,
    EDGE_OWNED_KEYS,
    WATCHDOG_KEYS,
    Values,
)
from collab.settings import to_argv
from collab.transport import SERVICE_NAME

Obj = dict[str, Any]


def meta(v: Values, name: str, component: str, **extra: Any) -> Obj:
    return {
        "name": name,
        "namespace": v.namespace,
        "labels": _labels(v, component),
        **extra,
    }


def _labels(v: Values, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": component,
        "app.kubernetes.io/instance": v.name,
        "app.kubernetes.io/part-of": "edgecollab",
    }


def _selector(v: Values, component: str) -> dict[str, str]:
    return {
        k: _labels(v, component)[k]
        for k in ("app.kubernetes.io/name", "app.kubernetes.io/instance")
    }


def _scrape(port: int) -> dict[str, str]:
    return {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(port),
        "prometheus.io/path": "/metrics",
    }


def _resources(cpu: str, memory: str) -> Obj:
    return {"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": memory}}


def _secret_volume(name: str, secret: str, items: Sequence[str] | None = None) -> Obj:
    src: Obj = {"secretName": secret, "defaultMode": 0o400}
    if items is not None:
        src["items"] = [{"key": k, "path": k} for k in items]
    return {"name": name, "secret": src}


def _copy_secrets(
    v: Values,
    image: str,
    copies: Sequence[tuple[str, str]],
    mounts: list[Obj],
    owned: Sequence[str] = (),
) -> Obj:
    """An init container (root, no network use) installing ``(src, name)`` into RUN_DIR,
    and handing the ``owned`` directories (hostPath ones: fsGroup does not reach them) to
    the daemon's user."""
    script = " && ".join(
        [
            *(f"install -o {UID} -g {UID} -m 0600 {src} {RUN_DIR}/{dst}" for src, dst in copies),
            *(f"chown {UID}:{UID} {d}" for d in owned),
        ]
    )
    return {
        "name": "secrets",
        "image": image,
        "imagePullPolicy": v.images.pull_policy,
        "command": ["sh", "-c", script],
        "securityContext": {"runAsUser": 0, "runAsNonRoot": False},
        "volumeMounts": [*mounts, {"name": "run", "mountPath": RUN_DIR}],
    }


_RUN_VOLUME: Obj = {"name": "run", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}
_RUN_MOUNT: Obj = {"name": "run", "mountPath": RUN_DIR, "readOnly": True}


def _args_file(argv: Sequence[str]) -> str:
    """One argument per line: argparse's ``@file`` (collab.cli)."""
    return "".join(f"{a}\n" for a in argv)


def _env_from_field(name: str, path: str) -> Obj:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def _svc_host(v: Values, service: str) -> str:
    return f"{v.name}-{service}.{v.namespace}.svc.cluster.local"


def broker_url(v: Values) -> str:
    tls = v.mosquitto.tls.enabled
    return f"{'mqtts' if tls else 'mqtt'}://{_svc_host(v, 'mosquitto')}:{v.mosquitto.port}"


def _mqtt_tls_args(v: Values, mount: str) -> list[str]:
    return ["--mqtt-ca", f"{mount}/ca.crt"] if v.mosquitto.tls.enabled else []


def namespace(v: Values) -> list[Obj]:
    return [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": v.namespace}}]


# --- Mosquitto -----------------------------------------------------------------------------
def mosquitto_conf(v: Values) -> str:
    m = v.mosquitto
    lines = [
        "# rendered by `collab deploy render`; credentials + ACL from `collab mqtt-auth`",
        f"listener {m.port}",
        "allow_anonymous false",
        "password_file /mosquitto/auth/passwd",
        "acl_file /mosquitto/auth/acl",
        "persistence false",
        "max_queued_messages 10000",
    ]
    if m.tls.enabled:
        lines += [
            f"cafile {TLS_DIR}/ca.crt",
            f"certfile {TLS_DIR}/tls.crt",
            f"keyfile {TLS_DIR}/tls.key",
        ]
    return "\n".join(lines) + "\n"


def mosquitto(v: Values) -> list[Obj]:
    m, name, comp = v.mosquitto, f"{v.name}-mosquitto", "mosquitto"
    volumes = [
        {"name": "config", "configMap": {"name": name}},
        {"name": "auth", "secret": {"secretName": v.secrets.mqtt_auth, "defaultMode": 0o440}},
    ]
    mounts = [
        {"name": "config", "mountPath": "/mosquitto/config"},
        {"name": "auth", "mountPath": "/mosquitto/auth", "readOnly": True},
    ]
    if m.tls.enabled:
        assert m.tls.secret is not None  # Tls checks it
        volumes.append(
            {"name": "tls", "secret": {"secretName": m.tls.secret, "defaultMode": 0o440}}
        )
        mounts.append({"name": "tls", "mountPath": TLS_DIR, "readOnly": True})
    probe = {"tcpSocket": {"port": "mqtt"}, "periodSeconds": 10}
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta(v, name, comp),
            "data": {"mosquitto.conf": mosquitto_conf(v)},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta(v, name, comp),
            "spec": {
                "replicas": 1,  # Mosquitto has no clustering: scale out with bridges (docs/deploy.md)
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": _selector(v, comp)},
                "template": {
                    "metadata": {"labels": _labels(v, comp)},
                    "spec": {
                        # the image runs as mosquitto (1883): the group may read the secrets
                        "securityContext": {"runAsUser": 1883, "runAsGroup": 1883, "fsGroup": 1883},
                        "containers": [
                            {
                                "name": "mosquitto",
                                "image": v.images.mosquitto,
                                "imagePullPolicy": v.images.pull_policy,
                                "ports": [{"name": "mqtt", "containerPort": m.port}],
                                "volumeMounts": mounts,
                                "readinessProbe": probe,
                                "livenessProbe": {**probe, "initialDelaySeconds": 5},
                                "resources": _resources(m.resources.cpu, m.resources.memory),
                            }
                        ],
                        "volumes": volumes,
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta(v, name, comp),
            "spec": {
                "selector": _selector(v, comp),
                "ports": [{"name": "mqtt", "port": m.port, "targetPort": "mqtt"}],
            },
        },
    ]


# --- coordinator ---------------------------------------------------------------------------
def coordinator_argv(v: Values) -> list[str]:
    c = v.coordinator
    argv = [
        "coordinator",
        "--broker", broker_url(v),
        "--mqtt-username", COORDINATOR_USER,
        "--mqtt-password-file", f"{RUN_DIR}/{MQTT_PASSWORD}",
        *_mqtt_tls_args(v, f"{TLS_DIR}-mqtt"),
        "--db", "/data/fleet.db",
        "--signing-key", f"{RUN_DIR}/{KEY_FILE}",
        "--admin-token-file", f"{RUN_DIR}/{ADMIN_TOKEN}",
        "--fetch-key", f"{RUN_DIR}/{FETCH_KEY}",
        "--listen", f"0.0.0.0:{c.port}",
        "--operator-listen", f"0.0.0.0:{c.operator_port}",
        "--advertise", c.advertise or f"{_svc_host(v, 'coordinator')}:{c.port}",
        "--metrics-port", str(c.metrics_port),
    ]  # fmt: skip
    if c.tls.enabled:
        argv += ["--grpc-tls-cert", f"{TLS_DIR}/tls.crt", "--grpc-tls-key", f"{TLS_DIR}/tls.key"]
    return argv + to_argv(COORDINATOR_KEYS, c.argv_settings())


def coordinator(v: Values) -> list[Obj]:
    c, name, comp = v.coordinator, f"{v.name}-coordinator", "coordinator"
    keys = [KEY_FILE, PUB_FILE, ADMIN_TOKEN, FETCH_KEY, MQTT_PASSWORD]
    volumes: list[Obj] = [_secret_volume("secret", v.secrets.coordinator, keys), _RUN_VOLUME]
    mounts: list[Obj] = [{"name": "data", "mountPath": "/data"}, _RUN_MOUNT]
    secret_mount = [{"name": "secret", "mountPath": SECRET_DIR, "readOnly": True}]
    init = _copy_secrets(
        v, v.images.coordinator, [(f"{SECRET_DIR}/{k}", k) for k in keys], secret_mount
    )
    if c.tls.enabled:
        assert c.tls.secret is not None
        volumes.append(_secret_volume("tls", c.tls.secret))
        mounts.append({"name": "tls", "mountPath": TLS_DIR, "readOnly": True})
    if v.mosquitto.tls.enabled:
        assert v.mosquitto.tls.secret is not None
        volumes.append(_secret_volume("mqtt-tls", v.mosquitto.tls.secret, ["ca.crt"]))
        mounts.append({"name": "mqtt-tls", "mountPath": f"{TLS_DIR}-mqtt", "readOnly": True})
    claim: Obj = {
        "metadata": {"name": "data"},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": c.storage}},
        },
    }
    if c.storage_class is not None:
        claim["spec"]["storageClassName"] = c.storage_class
    probe = {"tcpSocket": {"port": "grpc"}, "periodSeconds": 10}
    ports = [
        {"name": "grpc", "port": c.port, "targetPort": "grpc"},
        {"name": "operator", "port": c.operator_port, "targetPort": "operator"},
    ]
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",  # the StatefulSet's governing Service
            "metadata": meta(v, f"{name}-headless", comp),
            "spec": {"clusterIP": "None", "selector": _selector(v, comp), "ports": ports},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta(v, name, comp),
            "spec": {"selector": _selector(v, comp), "ports": ports},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": meta(v, name, comp),
            "spec": {
                # one writer: SQLite on a ReadWriteOnce volume (docs/deploy.md: past one coordinator)
                "replicas": 1,
                "serviceName": f"{name}-headless",
                "selector": {"matchLabels": _selector(v, comp)},
                "template": {
                    "metadata": {
                        "labels": _labels(v, comp),
                        "annotations": _scrape(c.metrics_port),
                    },
                    "spec": {
                        "securityContext": {
                            "runAsNonRoot": True,
                            "runAsUser": UID,
                            "fsGroup": UID,
                        },
                        "terminationGracePeriodSeconds": 30,
                        "initContainers": [init],
                        "containers": [
                            {
                                "name": "coordinator",
                                "image": v.images.coordinator,
                                "imagePullPolicy": v.images.pull_policy,
                                "args": coordinator_argv(v),
                                "ports": [
                                    {"name": "grpc", "containerPort": c.port},
                                    {"name": "operator", "containerPort": c.operator_port},
                                    {"name": "metrics", "containerPort": c.metrics_port},
                                ],
                                "volumeMounts": mounts,
                                "readinessProbe": probe,
                                "livenessProbe": {**probe, "initialDelaySeconds": 10},
                                "resources": _resources(c.resources.cpu, c.resources.memory),
                            }
                        ],
                        "volumes": volumes,
                    },
                },
                "volumeClaimTemplates": [claim],
            },
        },
    ]


# --- cloud tier ----------------------------------------------------------------------------
def cloud_settings_argv(v: Values) -> list[str]:
    return to_argv(CLOUD_KEYS, v.cloud.argv_settings())


def cloud_argv(v: Values) -> list[str]:
    c = v.cloud
    argv = ["cloud", f"@{CONFIG_DIR}/cloud.args"]
    for sub in c.bundle.subdirs:
        argv += ["--bundle", str(PurePosixPath(BUNDLE_DIR) / sub)]
    return argv + to_argv(CLOUD_OWNED_KEYS, c.owned())


def cloud(v: Values) -> list[Obj]:
    c, name, comp = v.cloud, f"{v.name}-cloud", "cloud"
    bundle: Obj = (
        {"name": "bundle", "persistentVolumeClaim": {"claimName": c.bundle.claim, "readOnly": True}}
        if c.bundle.claim is not None
        else {"name": "bundle", "hostPath": {"path": str(c.bundle.host_path), "type": "Directory"}}
    )
    volumes: list[Obj] = [{"name": "config", "configMap": {"name": name}}, bundle]
    mounts: list[Obj] = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "bundle", "mountPath": BUNDLE_DIR, "readOnly": True},
    ]
    if c.tls.enabled:
        assert c.tls.secret is not None
        volumes.append(_secret_volume("tls", c.tls.secret))
        mounts.append({"name": "tls", "mountPath": TLS_DIR, "readOnly": True})
        # kubelet's gRPC probe speaks plaintext only: with TLS the port is probed (the
        # edges' own client-side health checks still see NOT_SERVING while a pod drains)
        ready: Obj = {"tcpSocket": {"port": "grpc"}}
        live: Obj = {"tcpSocket": {"port": "grpc"}}
    else:
        ready = {"grpc": {"port": c.port, "service": SERVICE_NAME}}  # NOT_SERVING while draining
        live = {"grpc": {"port": c.port, "service": ""}}
    grace = int(c.config().grace_s) + 5  # the drain, then SIGKILL
    objs: list[Obj] = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta(v, name, comp),
            "data": {"cloud.args": _args_file(cloud_settings_argv(v))},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta(v, name, comp),
            "spec": {
                "replicas": c.replicas,
                "selector": {"matchLabels": _selector(v, comp)},
                "strategy": {"rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                "template": {
                    "metadata": {
                        "labels": _labels(v, comp),
                        "annotations": _scrape(c.metrics_port),
                    },
                    "spec": {
                        # fsGroup: the TLS Secret's files become readable by the daemon's group
                        "securityContext": {"runAsNonRoot": True, "runAsUser": UID, "fsGroup": UID},
                        "terminationGracePeriodSeconds": grace,
                        "containers": [
                            {
                                "name": "cloud",
                                "image": v.images.cloud,
                                "imagePullPolicy": v.images.pull_policy,
                                "args": cloud_argv(v),
                                "ports": [
                                    {"name": "grpc", "containerPort": c.port},
                                    {"name": "metrics", "containerPort": c.metrics_port},
                                ],
                                "volumeMounts": mounts,
                                "readinessProbe": {**ready, "periodSeconds": 5},
                                "livenessProbe": {
                                    **live,
                                    "periodSeconds": 10,
                                    "initialDelaySeconds": 20,
                                },
                                "startupProbe": {
                                    **live,
                                    "periodSeconds": 5,
                                    "failureThreshold": 60,
                                },
                                "resources": _resources(c.resources.cpu, c.resources.memory),
                            }
                        ],
                        "volumes": volumes,
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",  # headless: one DNS record per ready pod, for gRPC round_robin
            "metadata": meta(v, f"{name}-headless", comp),
            "spec": {
                "clusterIP": "None",
                "selector": _selector(v, comp),
                "ports": [{"name": "grpc", "port": c.port, "targetPort": "grpc"}],
            },
        },
    ]
    if c.hpa.enabled:
        objs.append(hpa(v))
    return objs


def hpa(v: Values) -> Obj:
    h, name = v.cloud.hpa, f"{v.name}-cloud"
    metrics: list[Obj] = []
    if h.cpu_percent is not None:
        metrics.append(
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": h.cpu_percent},
                },
            }
        )
    if h.queue_delay_ms is not None:
        metrics.append(
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": h.queue_delay_metric},
                    "target": {"type": "AverageValue", "averageValue": f"{h.queue_delay_ms:g}"},
                },
            }
        )
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta(v, name, "cloud"),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": h.min_replicas,
            "maxReplicas": h.max_replicas,
            "metrics": metrics,
            # scale down slowly: a removed pod drains its queue, the edges re-balance
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
        },
    }


# --- edge daemons --------------------------------------------------------------------------
def edge_settings_argv(v: Values) -> list[str]:
    stated = dict(v.edge.argv_settings())
    stated.setdefault("cloud", (f"{_svc_host(v, 'cloud-headless')}:{v.cloud.port}",))
    return to_argv([*CLIENT_KEYS, *EDGE_KEYS, *WATCHDOG_KEYS], stated)


def edge_argv(v: Values) -> list[str]:
    e = v.edge
    argv = [
        "edge", f"@{CONFIG_DIR}/edge.args",
        "--bundle", BUNDLE_DIR,
        *to_argv(EDGE_OWNED_KEYS, e.owned()),
        # the kubelet expands $(NODE_NAME): each node is the MQTT user of its own id
        "--node-id", "$(NODE_NAME)",
        "--broker", e.broker or broker_url(v),
        "--mqtt-username", "$(NODE_NAME)",
        "--mqtt-password-file", f"{RUN_DIR}/{MQTT_PASSWORD}",
        *_mqtt_tls_args(v, f"{TLS_DIR}-mqtt"),
    ]  # fmt: skip
    if v.cloud.tls.enabled:
        argv += ["--cloud-ca", f"{TLS_DIR}-cloud/ca.crt"]
    if v.cloud.tls.client_certs:
        client = f"{TLS_DIR}-cloud-client"
        argv += ["--cloud-cert", f"{client}/tls.crt", "--cloud-key", f"{client}/tls.key"]
    return argv


def edge(v: Values) -> list[Obj]:
    e, name, comp = v.edge, f"{v.name}-edge", "edge"
    volumes: list[Obj] = [
        {"name": "config", "configMap": {"name": name}},
        {"name": "trust", "configMap": {"name": v.secrets.trust}},
        _secret_volume("mqtt", v.secrets.edge_credentials),
        _RUN_VOLUME,
        {"name": "bundle", "hostPath": {"path": str(e.bundle_host_path), "type": "Directory"}},
        {"name": "work", "hostPath": {"path": str(e.work_host_path), "type": "DirectoryOrCreate"}},
    ]
    mounts: list[Obj] = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "trust", "mountPath": TRUST_DIR, "readOnly": True},
        _RUN_MOUNT,
        {"name": "bundle", "mountPath": BUNDLE_DIR, "readOnly": True},
        {"name": "work", "mountPath": WORK_DIR},
    ]
    # only this node's credential reaches the daemon (the kubelet expands $(NODE_NAME))
    own = [
        (f"{MQTT_CREDS_DIR}/$(NODE_NAME)", MQTT_PASSWORD),
        (f"{MQTT_CREDS_DIR}/$(NODE_NAME){FETCH_SUFFIX}", FETCH_TOKEN),
    ]
    init = _copy_secrets(
        v,
        v.images.edge,
        own,
        [
            {"name": "mqtt", "mountPath": MQTT_CREDS_DIR, "readOnly": True},
            {"name": "work", "mountPath": WORK_DIR},
        ],
        owned=[WORK_DIR],
    )
    init["env"] = [_env_from_field("NODE_NAME", "spec.nodeName")]
    # (volume, Secret, keys or None = all, mount path)
    tls_mounts: list[tuple[str, str | None, list[str] | None, str]] = [
        ("tls", e.tls.secret if e.tls.enabled else None, None, TLS_DIR),
        (
            "mqtt-tls",
            v.mosquitto.tls.secret if v.mosquitto.tls.enabled else None,
            ["ca.crt"],
            f"{TLS_DIR}-mqtt",
        ),
        (
            "cloud-tls",
            v.cloud.tls.secret if v.cloud.tls.enabled else None,
            ["ca.crt"],
            f"{TLS_DIR}-cloud",
        ),
        (
            "cloud-client",
            v.cloud.tls.client_secret,
            ["tls.crt", "tls.key"],
            f"{TLS_DIR}-cloud-client",
        ),
    ]
    for vol, secret, keys, path in tls_mounts:
        if secret is not None:
            volumes.append(_secret_volume(vol, secret, keys))
            mounts.append({"name": vol, "mountPath": path, "readOnly": True})
    probe = {"tcpSocket": {"port": "grpc"}, "periodSeconds": 10}
    role = e.node_role_label
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta(v, name, comp),
            "data": {"edge.args": _args_file(edge_settings_argv(v))},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": meta(v, name, comp),
            "spec": {
                "selector": {"matchLabels": _selector(v, comp)},
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
                "template": {
                    "metadata": {
                        "labels": _labels(v, comp),
                        "annotations": _scrape(e.metrics_port),
                    },
                    "spec": {
                        "affinity": {
                            "nodeAffinity": {
                                "requiredDuringSchedulingIgnoredDuringExecution": {
                                    "nodeSelectorTerms": [
                                        {"matchExpressions": [{"key": role, "operator": "Exists"}]}
                                    ]
                                }
                            }
                        },
                        # KubeEdge taints its edge nodes; the daemon is meant to run there
                        "tolerations": [
                            {"key": role, "operator": "Exists", "effect": "NoSchedule"}
                        ],
                        "securityContext": {
                            "runAsNonRoot": True,
                            "runAsUser": UID,
                            "fsGroup": UID,
                        },
                        "initContainers": [init],
                        "containers": [
                            {
                                "name": "edge",
                                "image": v.images.edge,
                                "imagePullPolicy": v.images.pull_policy,
                                "args": edge_argv(v),
                                "env": [_env_from_field("NODE_NAME", "spec.nodeName")],
                                "ports": [
                                    # device apps on the node's network reach the daemon here
                                    {"name": "grpc", "containerPort": e.port, "hostPort": e.port},
                                    {"name": "metrics", "containerPort": e.metrics_port},
                                ],
                                "volumeMounts": mounts,
                                "readinessProbe": probe,
                                "livenessProbe": {**probe, "initialDelaySeconds": 15},
                                "resources": _resources(e.resources.cpu, e.resources.memory),
                            }
                        ],
                        "volumes": volumes,
                    },
                },
            },
        },
    ]


def render(v: Values) -> dict[str, list[Obj]]:
    """File name -> the objects in it (one YAML document each)."""
    return {
        "namespace.yaml": namespace(v),
        "mosquitto.yaml": mosquitto(v),
        "coordinator.yaml": coordinator(v),
        "cloud.yaml": cloud(v),
        "edge.yaml": edge(v),
    }


def manifests(files: Mapping[str, list[Obj]]) -> list[Obj]:
    return [o for objs in files.values() for o in objs]
