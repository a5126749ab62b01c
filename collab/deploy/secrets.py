"""The Secrets of a fleet, from the directory ``collab mqtt-auth --out DIR`` wrote.

The Mosquitto password file and ACL, each edge node's MQTT password and bundle fetch token
(keys ``<node id>`` and ``<node id>.fetch``), and the coordinator's MQTT password, Ed25519
signing key, fetch key and operator token; the keys and the token are created in DIR on
first use (0600), so rendering again keeps them and the nodes' trust (the public key, a
ConfigMap) and fetch tokens stay valid.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from collab.control.signing import load_or_create_signing_key, public_key_path
from collab.deploy.layout import (
    ADMIN_TOKEN,
    COORDINATOR_USER,
    FETCH_KEY,
    FETCH_SUFFIX,
    KEY_FILE,
    MQTT_PASSWORD,
    PUB_FILE,
)
from collab.deploy.render import Obj, meta
from collab.deploy.values import Values
from collab.errors import ConfigError
from collab.files import read_text, write_private
from coordinator.auth import write_fetch_tokens
from coordinator.cli_auth import NODES_FILE, parse_nodes


def _secret(v: Values, name: str, component: str, data: dict[str, str]) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta(v, name, component),
        "type": "Opaque",
        "stringData": data,
    }


def _admin_token(auth: Path) -> str:
    path = auth / ADMIN_TOKEN
    if not path.exists():
        write_private(path, (secrets.token_urlsafe(32) + "\n").encode())
    return read_text(path, "admin token").strip()


def secret_manifests(v: Values, auth: Path) -> list[Obj]:
    if not (auth / NODES_FILE).is_file():
        raise ConfigError(
            f"--secrets {auth}: no {NODES_FILE} file; run `collab mqtt-auth --out {auth}` first"
        )
    roles = parse_nodes(read_text(auth / NODES_FILE, "nodes file"))

    def cred(user: str) -> str:
        return read_text(auth / "credentials" / user, f"credential of {user!r}").strip()

    load_or_create_signing_key(auth / KEY_FILE)
    pub = read_text(public_key_path(auth / KEY_FILE), "public key")
    edges = sorted(n for n, r in roles.items() if r == "edge")
    write_fetch_tokens(auth / FETCH_KEY, auth / "credentials", edges)
    edge_data = {}
    for n in edges:
        edge_data[n] = cred(n)
        edge_data[n + FETCH_SUFFIX] = cred(n + FETCH_SUFFIX)
    return [
        _secret(
            v,
            v.secrets.mqtt_auth,
            "mosquitto",
            {"passwd": read_text(auth / "passwd", "passwd"), "acl": read_text(auth / "acl", "acl")},
        ),
        _secret(
            v,
            v.secrets.coordinator,
            "coordinator",
            {
                KEY_FILE: read_text(auth / KEY_FILE, "signing key"),
                PUB_FILE: pub,
                ADMIN_TOKEN: _admin_token(auth),
                FETCH_KEY: read_text(auth / FETCH_KEY, "fetch key"),
                MQTT_PASSWORD: cred(COORDINATOR_USER),
            },
        ),
        _secret(v, v.secrets.edge_credentials, "edge", edge_data),
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta(v, v.secrets.trust, "edge"),
            "data": {PUB_FILE: pub},
        },
    ]
