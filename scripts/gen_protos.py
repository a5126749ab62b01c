#!/usr/bin/env python3
"""Regenerate collab/proto/*_pb2*.py(i) from protos/*.proto (the one way to do it).

Usage: python scripts/gen_protos.py [--out DIR]   (default: collab/proto)
tests/test_protos.py regenerates into a temp dir and fails if the committed files differ.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "protos"


def generate(out: Path) -> list[Path]:
    from grpc_tools import protoc

    out.mkdir(parents=True, exist_ok=True)
    protos = sorted(PROTO_DIR.glob("*.proto"))
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *[str(p) for p in protos],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    # protoc emits top-level imports ("import collab_pb2"); make them package-relative.
    names = [p.stem for p in protos]
    written = []
    for f in sorted(out.glob("*_pb2*.py*")):
        text = f.read_text()
        for n in names:
            text = re.sub(
                rf"^import {n}_pb2 as", f"from collab.proto import {n}_pb2 as", text, flags=re.M
            )
            text = re.sub(
                rf"^from {n}_pb2 import", f"from collab.proto.{n}_pb2 import", text, flags=re.M
            )
            text = re.sub(
                rf"^import {n}_pb2$", f"from collab.proto import {n}_pb2", text, flags=re.M
            )
        f.write_text(text)
        written.append(f)
    return written


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=ROOT / "collab" / "proto")
    ns = ap.parse_args()
    for f in generate(ns.out):
        print(f.relative_to(ns.out.parent.parent) if ns.out.is_relative_to(ROOT) else f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
