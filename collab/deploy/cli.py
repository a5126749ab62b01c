"""``collab deploy render``: Kubernetes manifests from a values file (docs/deploy.md)."""

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
    return run


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (config files, argument files, keys) as ``|`` blocks."""


def _str(dumper: yaml.SafeDumper, s: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None)


_Dumper.add_representer(str, _str)


def dump(objs: list[dict[str, Any]]) -> str:
    return yaml.dump_all(objs, Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def run(args: argparse.Namespace) -> int:
    from collab.deploy.render import render
    from collab.deploy.values import parse_values

    values = parse_values(read_text(args.values, "values file"), source=str(args.values))
    files = render(values)
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
    print(f"wrote {', '.join(written)} to {args.out} (apply: kubectl apply -f {args.out})")
    return 0
