"""``collab deploy render``: Kubernetes manifests from a values file; ``collab deploy
bridge``: a regional Mosquitto's bridge to the central broker (docs/deploy.md)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from collab.files import read_text, write_private


def configure(parser: argparse.ArgumentParser) -> Any:
    sub = parser.add_subparsers(dest="action", required=True)
    r = sub.add_parser("render", help="write the manifests of every role")
    r.add_argument("--values", type=Path, required=True, help="values file (deploy/values.yaml)")
    r.add_argument("--out", type=Path, required=True, help="directory for the YAML files")
    r.add_argument(
        "--secrets",
        type=Path,
        default=None,
        metavar="AUTH_DIR",
        help="also write OUT/secrets.yaml (0600) from `collab mqtt-auth --out AUTH_DIR`; "
        "without it the Secrets are expected to exist",
    )
    b = sub.add_parser("bridge", help="print a regional broker's bridge to the central one")
    b.add_argument("--name", required=True, help="the region (the bridge's client id)")
    b.add_argument("--central", required=True, metavar="HOST:PORT", help="the central broker")
    b.add_argument("--username", default=None, help="the bridge's user on the central broker")
    b.add_argument("--password-file", type=Path, default=None, help="its password (mode 0600)")
    b.add_argument("--cafile", type=Path, default=None, help="CA of the central broker (TLS)")
    return run


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (config files, argument files, keys) as ``|`` blocks; an object
    used twice (a probe) written out twice, not as an anchor and alias."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, s: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None)


_Dumper.add_representer(str, _str)


def dump(objs: list[dict[str, Any]]) -> str:
    return yaml.dump_all(objs, Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def run(args: argparse.Namespace) -> int:
    return bridge(args) if args.action == "bridge" else render(args)


def bridge(args: argparse.Namespace) -> int:
    from collab.deploy.bridge import bridge_config
    from collab.files import read_secret
    from collab.transport import parse_address

    parse_address(args.central)
    password = read_secret(args.password_file, "--password-file") if args.password_file else None
    print(
        bridge_config(
            name=args.name,
            address=args.central,
            username=args.username,
            password=password,
            cafile=args.cafile,
        ),
        end="",
    )
    return 0


KUSTOMIZATION = "kustomization.yaml"


def render(args: argparse.Namespace) -> int:
    from collab.deploy.render import render as render_files
    from collab.deploy.values import parse_values

    values = parse_values(read_text(args.values, "values file"), source=str(args.values))
    files = render_files(values)
    secret_objs = None
    if args.secrets is not None:
        from collab.deploy.secrets import secret_manifests

        secret_objs = secret_manifests(values, args.secrets)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, objs in files.items():
        (args.out / name).write_text(dump(objs))
    if secret_objs is not None:
        write_private(args.out / "secrets.yaml", dump(secret_objs).encode(), replace=True)
    written = [*files, *(["secrets.yaml"] if secret_objs is not None else [])]
    # the directory is also a kustomize base: overlays (a region, a site) patch it
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": written,
    }
    (args.out / KUSTOMIZATION).write_text(dump([kustomization]))
    print(
        f"wrote {', '.join(written)} and {KUSTOMIZATION} to {args.out} "
        f"(apply: kubectl apply -k {args.out})"
    )
    return 0
