"""``collab inspect DIR``: verify a bundle and print its split table."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from collab.bundle import load_bundle, manifest_to_dict
from collab.split.table import split_table


def configure(parser: argparse.ArgumentParser):  # type: ignore[no-untyped-def]
    parser.add_argument("bundle", type=Path, help="bundle directory")
    parser.add_argument("--json", action="store_true", help="print the manifest as JSON instead")
    return _run


def _run(args: argparse.Namespace) -> int:
    b = load_bundle(args.bundle)
    if args.json:
        print(json.dumps(manifest_to_dict(b.manifest), indent=2, sort_keys=True))
    else:
        print(split_table(b))
    return 0
