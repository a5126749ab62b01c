"""deploy/: manifests rendered offline, validated against a stated Kubernetes version, and
read back by the daemons' own parsers; bad values fail naming the value; Dockerfiles lint."""

from __future__ import annotations

import argparse
import copy
import os
import re
import shlex
import stat
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import tomllib
import yaml

from collab.cli import COMMANDS, main
from collab.deploy import render as r
from collab.deploy.values import parse_values
from collab.errors import ConfigError
from collab.files import write_private
from coordinator.auth import FetchKey

ROOT = Path(__file__).resolve().parent.parent
# the Kubernetes release the manifests are written for (KubeEdge 1.19+ supports it); the
# newest schema kubernetes-validate ships is checked too, so a removed API shows up early
K8S_VERSION = "1.30.0"
VALUES = ROOT / "deploy" / "values.yaml"

EVERYTHING_ON = """
mosquitto: {tls: {enabled: true, secret: mqtt-tls}}
coordinator:
  tls: {enabled: true, secret: coord-tls}
  storage_class: fast
  advertise: fleet.example.net:443
  node_ttl: 600.0
  status_interval: 30.0
cloud:
  replicas: 3
  bundle: {host_path: /srv/bundles, subdirs: [resnet, digits]}
  hpa: {min_replicas: 3, max_replicas: 30, cpu_percent: null, queue_delay_ms: 25}
  tls: {enabled: true, secret: cloud-tls, client_certs: true, client_secret: cloud-client}
  grace_s: 20.0
edge:
  tls: {enabled: true, secret: edge-tls, client_certs: true}
  broker: mqtts://region-a.example.net:8883
  cloud: [cloud.example.net:443]
  policy: "split:block2"
  workers: 4
  memory_threshold: 0.9
"""


# the smallest file: the daemons listen off loopback, so each section must say how
BASE = {"cloud": {"insecure": True}, "edge": {"insecure": True}}


def _with_base(text: str) -> str:
    """``text`` (YAML) over BASE, section by section."""
    data = yaml.safe_load(text) or {}
    for k, v in BASE.items():
        if isinstance(data.get(k, {}), dict):
            data[k] = {**v, **data.get(k, {})}
    return yaml.safe_dump(data, sort_keys=False)


def _render(tmp: Path, text: str | None = None, *extra: str) -> dict[str, list[dict[str, Any]]]:
    values = VALUES
    if text is not None:
        values = tmp / "values.yaml"
        values.write_text(text)
    out = tmp / "out"
    assert main(["deploy", "render", "--values", str(values), "--out", str(out), *extra]) == 0
    texts = {p.name: p.read_text() for p in sorted(out.glob("*.yaml"))}
    assert not any("&id" in s for s in texts.values())  # plain YAML: no anchors for kubectl diff
    # the output is a kustomize base naming exactly the manifests (not a cluster object)
    kustomization = yaml.safe_load(texts.pop("kustomization.yaml"))
    assert kustomization["kind"] == "Kustomization"
    assert sorted(kustomization["resources"]) == sorted(texts)
    return {name: list(yaml.safe_load_all(s)) for name, s in texts.items()}


def _validate_all(files: dict[str, list[dict[str, Any]]]) -> int:
    n = 0
    for name, docs in files.items():
        for d in docs:
            for version in (K8S_VERSION, kubernetes_validate.latest_version()):
                try:
                    kubernetes_validate.validate(d, version, strict=True)
                except kubernetes_validate.ValidationError as e:
                    raise AssertionError(f"{name} {d['kind']} {version}: {e}") from None
            n += 1
    return n


def _kinds(files: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    return {f"{d['kind']}/{d['metadata']['name']}": d for docs in files.values() for d in docs}


def _mqtt_auth(tmp: Path, *edges: str) -> Path:
    auth = tmp / "auth"
    argv = ["mqtt-auth", "--out", str(auth), "--python-hash"]
    for e in edges:
        argv += ["--node", e]
    assert main(argv) == 0
    return auth


def test_default_values_render_and_validate(tmp_path: Path) -> None:
    files = _render(tmp_path)
    assert _validate_all(files) >= 12
    objs = _kinds(files)
    dep = objs["Deployment/collab-cloud"]
    pod = dep["spec"]["template"]
    c = pod["spec"]["containers"][0]
    assert c["readinessProbe"]["grpc"] == {"port": 50051, "service": "collab.v1.CloudService"}
    assert c["livenessProbe"]["grpc"]["service"] == ""
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert objs["Service/collab-cloud-headless"]["spec"]["clusterIP"] == "None"
    hpa = objs["HorizontalPodAutoscaler/collab-cloud"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == "collab-cloud" and hpa["minReplicas"] == 2
    sts = objs["StatefulSet/collab-coordinator"]["spec"]
    assert sts["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "1Gi"
    ds = objs["DaemonSet/collab-edge"]["spec"]["template"]["spec"]
    term = ds["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert (
        term["nodeSelectorTerms"][0]["matchExpressions"][0]["key"] == "node-role.kubernetes.io/edge"
    )
    assert ds["tolerations"][0]["key"] == "node-role.kubernetes.io/edge"


def test_everything_on_renders_and_validates(tmp_path: Path) -> None:
    auth = _mqtt_auth(tmp_path, "edge-a", "edge-b")
    files = _render(tmp_path, EVERYTHING_ON, "--secrets", str(auth))
    assert _validate_all(files) >= 17
    objs = _kinds(files)
    assert [m["type"] for m in objs["HorizontalPodAutoscaler/collab-cloud"]["spec"]["metrics"]] == [
        "Pods"
    ]
    cloud = objs["Deployment/collab-cloud"]["spec"]["template"]["spec"]
    assert cloud["terminationGracePeriodSeconds"] == 25  # grace_s + 5
    assert (
        "tcpSocket" in cloud["containers"][0]["readinessProbe"]
    )  # kubelet gRPC probes are plaintext
    conf = objs["ConfigMap/collab-mosquitto"]["data"]["mosquitto.conf"]
    assert "certfile /etc/collab/tls/tls.crt" in conf
    edge_args = objs["DaemonSet/collab-edge"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert edge_args[edge_args.index("--broker") + 1] == "mqtts://region-a.example.net:8883"
    # the Secrets: what mqtt-auth issued, the key and token created once and kept
    assert stat.S_IMODE(os.stat(tmp_path / "out" / "secrets.yaml").st_mode) == 0o600
    creds = objs["Secret/collab-edge-mqtt"]["stringData"]
    assert sorted(creds) == ["edge-a", "edge-a.fetch", "edge-b", "edge-b.fetch"]
    assert creds["edge-a"] == (auth / "credentials" / "edge-a").read_text().strip()
    coord = objs["Secret/collab-coordinator"]["stringData"]
    assert coord[r.MQTT_PASSWORD] == (auth / "credentials" / "coordinator").read_text().strip()
    # the node's fetch token is the one the coordinator's fetch key derives for it
    key = FetchKey(bytes.fromhex(coord[r.FETCH_KEY].strip()))
    assert creds["edge-b.fetch"] == key.token_for("edge-b")
    # the init containers copy keys the Secrets have (the edge: its own two only)
    for kind, secret in (
        ("DaemonSet/collab-edge", creds),
        ("StatefulSet/collab-coordinator", coord),
    ):
        script = objs[kind]["spec"]["template"]["spec"]["initContainers"][0]["command"][2]
        sources = re.findall(r"-m 0600 (\S+) ", script.replace("$(NODE_NAME)", "edge-a"))
        assert sources and {s.rsplit("/", 1)[1] for s in sources} <= set(secret)
    assert objs["ConfigMap/collab-trust"]["data"][r.PUB_FILE] == coord[r.PUB_FILE]
    again = _kinds(_render(tmp_path, EVERYTHING_ON, "--secrets", str(auth)))
    assert again["Secret/collab-coordinator"]["stringData"] == coord


def test_validator_rejects_a_broken_manifest(tmp_path: Path) -> None:
    """The validation above can fail: a Deployment without a selector, a probe with a typo."""
    dep = copy.deepcopy(_kinds(_render(tmp_path))["Deployment/collab-cloud"])
    del dep["spec"]["selector"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSION, strict=True)
    dep = copy.deepcopy(_kinds(_render(tmp_path))["Deployment/collab-cloud"])
    dep["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSION, strict=True)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("cloud: {tls: {enabled: true}}", "cloud.tls.secret: is required when tls.enabled is true"),
        ("mosquitto: {tls: {enabled: true}}", "mosquitto.tls.secret"),
        ("cloud: {replicas: 0}", "cloud.replicas: is 0 but hpa.enabled is true"),
        (
            "cloud: {hpa: {min_replicas: 5, max_replicas: 2}}",
            "cloud.hpa.min_replicas: must be <= max_replicas",
        ),
        (
            "cloud: {hpa: {cpu_percent: null}}",
            "cloud.hpa.enabled: an HPA needs cpu_percent or queue_delay_ms",
        ),
        ("cloud: {max_batch_size: 0}", "cloud.max_batch_size: must be >= 1"),
        (
            "cloud: {bundle: {subdirs: [a]}}",
            "cloud.bundle.claim: give exactly one of claim and host_path",
        ),
        ("cloud: {listen: 0.0.0.0:1}", "cloud.listen: unknown key"),
        ("edge: {policy: sideways}", "edge"),
        ("edge: {heartbeat_interval_s: 0.0}", "edge.heartbeat_interval_s: must be > 0"),
        ("edge: {node_id: x}", "edge.node_id: unknown key"),
        ("edge: {memory_threshold: 1.5}", "edge.memory_threshold: must be <= 1"),
        ("edge: {fault_injection: /tmp/f}", "edge.fault_injection: unknown key"),
        ("coordinator: {directive_ttl: -1.0}", "coordinator.directive_ttl: must be > 0"),
        ("namespace: Not_A_Name", "namespace: must be a string matching"),
        ("images: {pull_policy: Sometimes}", "images.pull_policy"),
        # the daemon's own listener rule, before any pod starts
        ("cloud: {insecure: false}", "cloud: refusing to listen on 0.0.0.0:50051 without client"),
        ("edge: {insecure: false, port: 7000}", "edge: refusing to listen on 0.0.0.0:7000"),
        (
            "cloud: {tls: {enabled: true, secret: s, client_certs: true}}",
            "cloud.tls.client_secret: is required when tls.client_certs is true",
        ),
        ("edge: {tls: {client_certs: true}}", "edge.tls.client_certs: needs tls.enabled: true"),
        ("edge: {tls: {enabled: true, secret: s, client_secret: c}}", "edge.tls.client_secret"),
        ("namespace: collab2\nedge: null", "edge"),
    ],
)
def test_values_that_cannot_work_name_the_value(tmp_path: Path, text: str, named: str) -> None:
    text = _with_base(text)
    with pytest.raises(ConfigError, match=re.escape(named)):
        parse_values(text, source="values.yaml")
    (tmp_path / "v.yaml").write_text(text)
    assert (
        main(
            ["deploy", "render", "--values", str(tmp_path / "v.yaml"), "--out", str(tmp_path / "o")]
        )
        == 1
    )
    assert not (tmp_path / "o").exists()  # nothing written


def test_secrets_need_an_mqtt_auth_dir(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="run `collab mqtt-auth"):
        from collab.deploy.secrets import secret_manifests

        secret_manifests(parse_values(_with_base("")), tmp_path / "empty")


def _parse(module: str, argv: list[str]) -> argparse.Namespace:
    import importlib

    p = argparse.ArgumentParser(fromfile_prefix_chars="@")
    importlib.import_module(module).configure(p)
    return p.parse_args(argv)


def _container_argv(tmp: Path, obj: dict[str, Any], config: dict[str, Any] | None) -> list[str]:
    """A pod's args as the container sees them: $(NODE_NAME) expanded, the ConfigMap's
    argument file and the node's secrets where they are mounted (here: in ``tmp``)."""
    args = obj["spec"]["template"]["spec"]["containers"][0]["args"]
    run = tmp / "run"  # what the init container leaves
    run.mkdir(exist_ok=True)
    for name, text in ((r.MQTT_PASSWORD, "pw"), ("fetch-token", "tok")):
        write_private(run / name, f"{text}\n".encode(), replace=True)
    out = []
    for a in args[1:]:
        a = a.replace("$(NODE_NAME)", "edge-a").replace(r.RUN_DIR, str(run))
        if a.startswith(f"@{r.CONFIG_DIR}/") and config is not None:
            name = a.rsplit("/", 1)[1]
            (tmp / name).write_text(config["data"][name])
            a = f"@{tmp / name}"
        out.append(a)
    return out


def test_daemons_read_their_configmaps(tmp_path: Path) -> None:
    """Every rendered flag is one the daemon knows, and the ConfigMap's settings arrive as
    the config dataclass fields the values file named."""
    from cloud_node.cli import config_from_args as cloud_config
    from edge_node.cli import config_from_args as edge_config

    objs = _kinds(
        _render(
            tmp_path,
            EVERYTHING_ON.replace("mqtts://region-a.example.net:8883", "mqtt://127.0.0.1:1"),
        )
    )
    edge_argv = _container_argv(
        tmp_path, objs["DaemonSet/collab-edge"], objs["ConfigMap/collab-edge"]
    )
    ec = edge_config(_parse("edge_node.cli", edge_argv))
    assert ec.client.policy == "split:block2" and ec.client.cloud == ("cloud.example.net:443",)
    assert ec.workers == 4 and ec.node_id == "edge-a" and ec.listen == "0.0.0.0:50061"
    assert ec.watchdog.memory_threshold == 0.9 and ec.watchdog.fault_injection is None
    assert ec.mqtt is not None and ec.mqtt.username == "edge-a" and ec.mqtt.password == "pw"
    assert ec.fetch_token_file == tmp_path / "run" / "fetch-token"
    assert ec.client.tls is not None and ec.client.tls.client_cert is not None  # mTLS to the cloud
    assert ec.tls_client_ca == Path("/etc/collab/tls/ca.crt")  # device apps present certificates
    cc = cloud_config(
        _parse(
            "cloud_node.cli",
            _container_argv(
                tmp_path, objs["Deployment/collab-cloud"], objs["ConfigMap/collab-cloud"]
            ),
        )
    )
    assert cc.grace_s == 20.0 and [str(b) for b in cc.bundles] == [
        "/bundle/resnet",
        "/bundle/digits",
    ]
    assert cc.tls_cert == Path("/etc/collab/tls/tls.crt") and cc.max_batch_size == 16  # the default
    assert cc.tls_client_ca == Path("/etc/collab/tls/ca.crt") and not cc.insecure
    ns = _parse(
        "coordinator.cli", _container_argv(tmp_path, objs["StatefulSet/collab-coordinator"], None)
    )
    assert (
        ns.node_ttl == 600.0
        and ns.status_interval == 30.0
        and ns.advertise == "fleet.example.net:443"
        and ns.db == Path("/data/fleet.db")
    )
    # the default edge config: the cloud tier behind its headless Service
    default = _kinds(_render(tmp_path / "d"))
    ec = edge_config(
        _parse(
            "edge_node.cli",
            _container_argv(
                tmp_path, default["DaemonSet/collab-edge"], default["ConfigMap/collab-edge"]
            ),
        )
    )
    assert ec.client.cloud == ("collab-cloud-headless.collab.svc.cluster.local:50051",)
    assert ec.client.deadline_ms == 200.0


def test_cli_reads_an_argument_file(tmp_path: Path) -> None:
    """``collab COMMAND @FILE``: the real console script takes its flags from a file."""
    (tmp_path / "args").write_text(f"--out\n{tmp_path / 'auth'}\n--node\nedge-x\n--python-hash\n")
    assert main(["mqtt-auth", f"@{tmp_path / 'args'}"]) == 0
    assert (tmp_path / "auth" / "credentials" / "edge-x").is_file()


# --- Dockerfiles: parsed and checked against the repository (no image is built here) ---
_INSTRUCTIONS = {
    "FROM",
    "ARG",
    "WORKDIR",
    "COPY",
    "RUN",
    "USER",
    "ENV",
    "EXPOSE",
    "ENTRYPOINT",
    "CMD",
}


def _dockerfile(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        assert word in _INSTRUCTIONS, f"{path.name}: unknown instruction {word}"
        out.append((word, rest.strip()))
    return out


def _extras_closure(extras: set[str]) -> set[str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(deps["dependencies"])
    todo, seen = list(extras), set()
    while todo:
        e = todo.pop()
        if e in seen:
            continue
        seen.add(e)
        for req in deps["optional-dependencies"][e]:
            m = re.match(r"edgecollab\[(.+)\]", req)
            todo += m.group(1).split(",") if m else []
            reqs += [] if m else [req]
    return {re.split(r"[<>=\[ ]", q)[0].lower() for q in reqs}


@pytest.mark.parametrize("role", ["edge", "cloud", "coordinator"])
def test_dockerfiles(role: str) -> None:
    steps = _dockerfile(ROOT / "deploy" / "docker" / f"{role}.Dockerfile")
    words = [w for w, _ in steps]
    assert words[0] in ("FROM", "ARG") and words.count("FROM") == 2  # build stage + runtime
    for word, rest in steps:
        if word == "COPY" and not rest.startswith("--from"):
            *sources, _dest = shlex.split(rest)
            for s in sources:
                assert (ROOT / s).exists(), f"{role}: COPY {s}: not in the repository"
    run = " ".join(rest for w, rest in steps if w == "RUN")
    install = re.search(r"pip install .*-c constraints\.txt \"\.(\[([a-z,]+)\])?\"", run)
    assert install, f"{role}: the install is not the locked one"
    extras = set(install.group(2).split(",")) if install.group(2) else set()
    pins = {q.split("==")[0] for q in (ROOT / "constraints.txt").read_text().split() if "==" in q}
    installed = _extras_closure(extras)
    assert installed <= pins  # every package the image gets is locked
    assert "torch" not in installed  # no image trains or splits
    if role == "edge":
        assert extras == set()  # the base install
    user = next(rest for w, rest in steps if w == "USER")
    assert user not in ("0", "root")
    entry = [rest for w, rest in steps if w in ("ENTRYPOINT", "CMD")]
    assert yaml.safe_load(entry[0]) == ["collab"] and yaml.safe_load(entry[1])[0] in COMMANDS
    assert (ROOT / ".dockerignore").read_text().count(".venv") == 1


def test_the_committed_base_is_the_rendering_of_the_shipped_values(tmp_path: Path) -> None:
    """deploy/base is what `collab deploy render --values deploy/values.yaml` writes: an
    operator without Python can start from it, and it never drifts from the renderer."""
    out = tmp_path / "base"
    assert main(["deploy", "render", "--values", str(VALUES), "--out", str(out)]) == 0
    base = ROOT / "deploy" / "base"
    rendered = {p.name: p.read_text() for p in out.iterdir()}
    committed = {p.name: p.read_text() for p in base.iterdir()}
    stale = sorted(
        n for n in rendered.keys() | committed.keys() if rendered.get(n) != committed.get(n)
    )
    assert not stale, f"deploy/base is stale in {stale}: re-render it into deploy/base"


def _replace(doc: dict[str, Any], path: str, value: object) -> None:
    """JSON-patch ``replace``: the path must exist (kustomize fails otherwise)."""
    *parents, last = [int(p) if p.isdigit() else p for p in path.strip("/").split("/")]
    node: Any = doc
    for p in parents:
        node = node[p]
    node[last]
    node[last] = value


def test_the_overlay_patches_objects_of_the_base_and_stays_valid() -> None:
    overlay = ROOT / "deploy" / "overlays" / "large-fleet"
    k = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    base_dir = (overlay / k["resources"][0]).resolve()
    assert base_dir == ROOT / "deploy" / "base"
    docs = [
        d
        for p in sorted(base_dir.glob("*.yaml"))
        if p.name != "kustomization.yaml"
        for d in yaml.safe_load_all(p.read_text())
    ]
    for patch in k["patches"]:
        t = patch["target"]
        (obj,) = [d for d in docs if d["kind"] == t["kind"] and d["metadata"]["name"] == t["name"]]
        for op in yaml.safe_load(patch["patch"]):
            assert op["op"] == "replace"
            _replace(obj, op["path"], op["value"])
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
