"""Where things are inside the pods: the paths the values check (collab.deploy.values)
builds the daemons' configs with and the manifests (collab.deploy.render) mount."""

from __future__ import annotations

CONFIG_DIR = "/etc/collab/config"  # the ConfigMap's argument file
SECRET_DIR = "/etc/collab/secret"  # a Secret volume, read by the init container only
TRUST_DIR = "/etc/collab/trust"  # the coordinator's public key (ConfigMap)
TLS_DIR = "/etc/collab/tls"  # this role's own kubernetes.io/tls Secret; -mqtt, -cloud: peers' CAs
MQTT_CREDS_DIR = "/etc/collab/mqtt"  # the edge credentials Secret (init container only)
# where a pod's secrets are copied to, owned by the daemon's user with mode 0600: a
# Secret volume's files belong to root and get group bits under fsGroup, and the daemons
# refuse token files others may read (collab.files.read_secret)
RUN_DIR = "/run/collab"
WORK_DIR = "/work"  # the edge's rolled-out bundles (hostPath)
BUNDLE_DIR = "/bundle"
UID = 10001  # the images' user (deploy/docker/*.Dockerfile)

KEY_FILE = "coordinator.ed25519"  # the coordinator Secret's keys (collab.deploy.secrets)
PUB_FILE = KEY_FILE + ".pub"
ADMIN_TOKEN = "admin-token"
FETCH_KEY = "fetch-key"
MQTT_PASSWORD = "mqtt-password"
FETCH_TOKEN = "fetch-token"  # in RUN_DIR of an edge pod
FETCH_SUFFIX = ".fetch"  # the edge Secret: <node id> (MQTT password), <node id>.fetch (token)
COORDINATOR_USER = "coordinator"  # `collab mqtt-auth`'s default --coordinator-user
