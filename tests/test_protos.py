"""The committed generated code must match protos/ (run scripts/gen_protos.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gen_protos"] = mod
    spec.loader.exec_module(mod)
    fresh = {p.name: p.read_text() for p in mod.generate(tmp_path)}
    committed = {p.name: p.read_text() for p in (ROOT / "collab" / "proto").glob("*_pb2*.py*")}
    assert fresh.keys() == committed.keys(), "generated file set differs; run scripts/gen_protos.py"
    stale = [n for n in fresh if fresh[n] != committed[n]]
    assert not stale, f"stale generated code: {stale}; run scripts/gen_protos.py"


def test_proto_roundtrip() -> None:
    from collab.proto import collab_pb2

    req = collab_pb2.DecodeRequest(
        model=collab_pb2.ModelId(name="m", version="v"), split_point="s", frame=b"x"
    )
    assert collab_pb2.DecodeRequest.FromString(req.SerializeToString()) == req


def test_timing_and_load_convert_both_ways() -> None:
    from collab.transport import (
        LoadReport,
        ServerTiming,
        load_from_proto,
        load_to_proto,
        timing_from_proto,
        timing_to_proto,
    )

    t = ServerTiming(queue_ms=1.5, compute_ms=2.25, decode_ms=0.5, batch_size=3, total_ms=4.25)
    assert timing_from_proto(timing_to_proto(t)) == t
    r = LoadReport(queue_depth=2, inflight=1, queue_ms_ewma=3.5, compute_ms_ewma=0.75)
    assert load_from_proto(load_to_proto(r)) == r
