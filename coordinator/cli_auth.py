"""``collab mqtt-auth``: per-node credentials and ACLs for a fleet's Mosquitto.

Each node's MQTT user name is its node id, so the ACL pattern ``%u`` confines a node to
its own ``collab/v1/node/<id>/`` topics: a node cannot publish as another node.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

from collab.control import topics
from collab.errors import ConfigError
from collab.files import read_text
from collab.log import logger

PBKDF2_ITERATIONS = 101  # Mosquitto 2's default for "$7$" (PBKDF2-SHA512) hashes


def configure(parser: argparse.ArgumentParser) -> Any:
    parser.add_argument(
        "--out", type=Path, required=True, help="directory for passwd, acl, credentials/"
    )
    parser.add_argument("--node", action="append", default=[], help="node id (repeatable)")
    parser.add_argument(
        "--nodes-file", type=Path, default=None, help="file with one node id per line"
    )
    parser.add_argument("--coordinator-user", default="coordinator")
    parser.add_argument(
        "--operator-user", default="operator", help="read-only user for `collab status`"
    )
    parser.add_argument(
        "--fl-aggregator-user",
        default="fl-aggregator",
        help="user for `collab fl aggregator` (readwrite collab/v1/fl/#); '' = none",
    )
    parser.add_argument(
        "--fetch-key",
        type=Path,
        default=None,
        help="the coordinator's --fetch-key (created if missing): also write each node's "
        "bundle fetch token to credentials/<node>.fetch",
    )
    parser.add_argument(
        "--python-hash",
        action="store_true",
        help="write hashes in Python even if mosquitto_passwd is installed",
    )
    return run


def mosquitto_hash(
    password: str, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS
) -> str:
    """A password-file entry hash in Mosquitto 2's ``$7$`` PBKDF2-SHA512 format."""
    salt = salt or os.urandom(12)
    dk = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(dk).decode()}"


def acl_text(coordinator: str, operator: str, fl_aggregator: str | None = None) -> str:
    node = f"{topics.PREFIX}/node/%u"
    lines = [
        "# written by `collab mqtt-auth`; see docs/control-plane.md",
        f"user {coordinator}",
        f"topic readwrite {topics.PREFIX}/#",
        "",
        f"user {operator}",
        f"topic read {topics.PREFIX}/#",
        "",
    ]
    if fl_aggregator:
        lines += [f"user {fl_aggregator}", f"topic readwrite {topics.FL_PREFIX}/#", ""]
    return "\n".join(
        [
            *lines,
            "# every other user is a node whose user name is its node id",
            *(
                f"pattern write {node}/{k}"
                for k in (topics.ANNOUNCE, topics.HEARTBEAT, topics.TELEMETRY, topics.ACK)
            ),
            f"pattern read {node}/{topics.ROLLOUT}",
            f"pattern read {topics.CLOUDS}",
            "# federated learning: a node is an FL client under its own id",
            f"pattern write {topics.FL_PREFIX}/+/{topics.FL_CLIENTS}/%u",
            f"pattern read {topics.FL_PREFIX}/#",
            "",
        ]
    )


def write_fleet_auth(
    out: Path,
    nodes: list[str],
    *,
    coordinator: str = "coordinator",
    operator: str = "operator",
    fl_aggregator: str | None = "fl-aggregator",
    use_binary: bool = True,
) -> dict[str, str]:
    """Write ``passwd``, ``acl``, ``credentials/<user>`` (0600) and ``mosquitto.conf``;
    returns user -> password."""
    users = [coordinator, operator, *([fl_aggregator] if fl_aggregator else []), *nodes]
    for n in nodes:
        topics.check_node_id(n)
    if len(set(users)) != len(users):
        raise ConfigError(
            "node ids must be unique and differ from the coordinator/operator user names"
        )
    out.mkdir(parents=True, exist_ok=True)
    creds = out / "credentials"
    creds.mkdir(exist_ok=True)
    passwords = {u: secrets.token_urlsafe(18) for u in users}
    for u, p in passwords.items():
        f = creds / u
        f.write_text(p + "\n")
        f.chmod(0o600)
    passwd = out / "passwd"
    binary = shutil.which("mosquitto_passwd") if use_binary else None
    if binary:
        passwd.write_text("")
        for u, p in passwords.items():
            try:
                subprocess.run(
                    [binary, "-b", str(passwd), u, p], check=True, capture_output=True, timeout=30
                )
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
                raise ConfigError(f"mosquitto_passwd failed for {u}: {e}") from e
    else:
        passwd.write_text("".join(f"{u}:{mosquitto_hash(p)}\n" for u, p in passwords.items()))
    passwd.chmod(0o600)
    (out / "acl").write_text(acl_text(coordinator, operator, fl_aggregator))
    (out / "mosquitto.conf").write_text(
        f"allow_anonymous false\npassword_file {passwd.resolve()}\nacl_file {(out / 'acl').resolve()}\n"
    )
    logger.info(
        "wrote credentials for %d users to %s (hashes by %s)",
        len(users),
        out,
        binary or "python PBKDF2-SHA512",
    )
    return passwords


def run(args: argparse.Namespace) -> int:
    nodes = list(args.node)
    if args.nodes_file is not None:
        text = read_text(args.nodes_file, "--nodes-file")
        nodes += [line.strip() for line in text.splitlines() if line.strip()]
    if not nodes:
        raise ConfigError("give at least one --node or a --nodes-file")
    write_fleet_auth(
        args.out,
        nodes,
        coordinator=args.coordinator_user,
        operator=args.operator_user,
        fl_aggregator=args.fl_aggregator_user or None,
        use_binary=not args.python_hash,
    )
    if args.fetch_key is not None:
        from coordinator.auth import write_fetch_tokens

        write_fetch_tokens(args.fetch_key, args.out / "credentials", nodes)
    print(
        f"wrote {args.out}/passwd, {args.out}/acl, {args.out}/credentials/<user> for {len(nodes)} nodes"
    )
    print(f"add to the broker listener config: include the lines of {args.out}/mosquitto.conf")
    print("nodes connect with --mqtt-username <node-id> --mqtt-password-file credentials/<node-id>")
    if args.fetch_key is not None:
        print("and fetch bundles with --fetch-token-file credentials/<node-id>.fetch")
    return 0
