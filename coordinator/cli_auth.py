"""``collab mqtt-auth``: per-node credentials and ACLs for a fleet's Mosquitto.

Each node's MQTT user name is its node id, so the ACL pattern ``%u`` confines a node to
its own ``collab/v1/node/<id>/`` topics: a node cannot publish as another node. The role
is bound to the credential too: only a user issued as a cloud (``--cloud``) may write its
``cloud-announce`` topic, and the coordinator takes a node's role from the topic, so an
edge credential cannot put an endpoint into every edge's cloud list.

Re-running on the same ``--out`` adds users and keeps the existing ones' passwords (the
directory's ``nodes`` file remembers every node's role); delete ``credentials/<user>`` to
rotate a password. Files holding secrets are created 0600 with ``O_EXCL|O_NOFOLLOW`` and
no password ever appears on a command line (``mosquitto_passwd -U`` reads a file).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import os
import secrets
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from collab.control import topics
from collab.errors import ConfigError
from collab.files import read_text, write_private
from collab.log import logger

PBKDF2_ITERATIONS = 101  # Mosquitto 2's default for "$7$" (PBKDF2-SHA512) hashes
ROLES = ("edge", "cloud")
NODES_FILE = "nodes"  # in --out: "<role> <node id>" per line, every node issued so far


def configure(parser: argparse.ArgumentParser) -> Any:
    parser.add_argument(
        "--out", type=Path, required=True, help="directory for passwd, acl, credentials/"
    )
    parser.add_argument("--node", action="append", default=[], help="edge node id (repeatable)")
    parser.add_argument(
        "--cloud",
        action="append",
        default=[],
        help="cloud node id (repeatable): may announce endpoints for the edges' cloud list",
    )
    parser.add_argument(
        "--nodes-file",
        type=Path,
        default=None,
        help="file with one node per line: ID (an edge) or 'edge ID' / 'cloud ID'",
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


def acl_text(
    coordinator: str,
    operator: str,
    fl_aggregator: str | None = None,
    clouds: Sequence[str] = (),
) -> str:
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
    for c in clouds:  # the role is the credential's: only these may announce an endpoint
        lines += [f"user {c}", f"topic write {topics.node_topic(c, topics.CLOUD_ANNOUNCE)}", ""]
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


def parse_nodes(text: str) -> dict[str, str]:
    """Node id -> role of a nodes file: ``ID`` (an edge) or ``ROLE ID`` per line."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        role, node = ("edge", parts[0]) if len(parts) == 1 else (parts[0], parts[-1])
        if len(parts) > 2 or role not in ROLES:
            raise ConfigError(f"bad nodes-file line {line!r}: expected ID or 'edge|cloud ID'")
        _add_node(out, topics.check_node_id(node), role)
    return out


def _add_node(nodes: dict[str, str], node: str, role: str) -> None:
    if nodes.setdefault(node, role) != role:
        raise ConfigError(
            f"node {node!r} is both {nodes[node]} and {role}: one role per credential"
        )


def passwd_argv(binary: str, path: Path) -> list[str]:
    """``mosquitto_passwd -U FILE``: hashes a file of ``user:password`` lines in place, so
    the passwords never appear on a command line (``ps``, /proc/<pid>/cmdline)."""
    return [binary, "-U", str(path)]


def _passwd_bytes(passwords: Mapping[str, str], out: Path, binary: str | None) -> bytes:
    if binary is None:
        return "".join(f"{u}:{mosquitto_hash(p)}\n" for u, p in passwords.items()).encode()
    plain = out / f".passwd-plain.{secrets.token_hex(4)}"
    write_private(plain, "".join(f"{u}:{p}\n" for u, p in passwords.items()).encode())
    try:
        subprocess.run(passwd_argv(binary, plain), check=True, capture_output=True, timeout=30)
        return plain.read_bytes()
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
        raise ConfigError(f"mosquitto_passwd -U failed: {e}") from e
    finally:
        with contextlib.suppress(FileNotFoundError):
            plain.unlink()


def write_fleet_auth(
    out: Path,
    nodes: Sequence[str],
    *,
    clouds: Sequence[str] = (),
    coordinator: str = "coordinator",
    operator: str = "operator",
    fl_aggregator: str | None = "fl-aggregator",
    use_binary: bool = True,
) -> dict[str, str]:
    """Write ``passwd``, ``acl``, ``nodes``, ``credentials/<user>`` (0600) and
    ``mosquitto.conf`` for the edge ``nodes`` and the ``clouds`` (added to those ``out``
    already has); returns user -> password of every user."""
    roles = (
        parse_nodes(read_text(out / NODES_FILE, "nodes file"))
        if (out / NODES_FILE).exists()
        else {}
    )
    for n, role in [*((n, "edge") for n in nodes), *((c, "cloud") for c in clouds)]:
        _add_node(roles, topics.check_node_id(n), role)
    service = [coordinator, operator, *([fl_aggregator] if fl_aggregator else [])]
    for u in service:
        topics.check_node_id(u)  # the same alphabet: no ':' or newline in a passwd line
    if len(set(service)) != len(service) or set(service) & set(roles):
        raise ConfigError(
            "node ids must be unique and differ from the coordinator/operator user names"
        )
    creds = out / "credentials"
    creds.mkdir(parents=True, exist_ok=True)
    passwords: dict[str, str] = {}
    for u in [*service, *roles]:
        f = creds / u
        if f.exists() and not f.is_symlink():  # a planted link: write_private refuses it
            passwords[u] = read_text(f, "credential").strip()
        else:
            passwords[u] = secrets.token_urlsafe(18)
            write_private(f, (passwords[u] + "\n").encode())
    binary = shutil.which("mosquitto_passwd") if use_binary else None
    write_private(out / "passwd", _passwd_bytes(passwords, out, binary), replace=True)
    cloud_ids = sorted(n for n, r in roles.items() if r == "cloud")
    acl = acl_text(coordinator, operator, fl_aggregator, cloud_ids)
    write_private(out / "acl", acl.encode(), replace=True)
    nodes_text = "".join(f"{r} {n}\n" for n, r in sorted(roles.items()))
    write_private(out / NODES_FILE, nodes_text.encode(), replace=True)
    write_private(
        out / "mosquitto.conf",
        (
            f"allow_anonymous false\npassword_file {(out / 'passwd').resolve()}\n"
            f"acl_file {(out / 'acl').resolve()}\n"
        ).encode(),
        replace=True,
    )
    logger.info(
        "wrote credentials for %d users (%d cloud) to %s (hashes by %s)",
        len(passwords),
        len(cloud_ids),
        out,
        binary or "python PBKDF2-SHA512",
    )
    return passwords


def run(args: argparse.Namespace) -> int:
    nodes, clouds = list(args.node), list(args.cloud)
    if args.nodes_file is not None:
        for n, role in parse_nodes(read_text(args.nodes_file, "--nodes-file")).items():
            (clouds if role == "cloud" else nodes).append(n)
    if not nodes and not clouds:
        raise ConfigError("give at least one --node, --cloud or a --nodes-file")
    write_fleet_auth(
        args.out,
        nodes,
        clouds=clouds,
        coordinator=args.coordinator_user,
        operator=args.operator_user,
        fl_aggregator=args.fl_aggregator_user or None,
        use_binary=not args.python_hash,
    )
    if args.fetch_key is not None:
        from coordinator.auth import write_fetch_tokens

        write_fetch_tokens(args.fetch_key, args.out / "credentials", nodes)
    print(
        f"wrote {args.out}/passwd, {args.out}/acl, {args.out}/credentials/<user> for "
        f"{len(nodes)} edge and {len(clouds)} cloud nodes"
    )
    print(f"add to the broker listener config: include the lines of {args.out}/mosquitto.conf")
    print("nodes connect with --mqtt-username <node-id> --mqtt-password-file credentials/<node-id>")
    if args.fetch_key is not None:
        print("and fetch bundles with --fetch-token-file credentials/<node-id>.fetch")
    return 0
