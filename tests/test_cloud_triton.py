"""``collab export-triton``: the generated Triton repository, parsed back (no Triton
server here) and checked against the bundle's ONNX files, which it must chain into
exactly the model; what Triton cannot express is one clear error."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from test_cloud_support import sample_inputs

from cloud_node.triton import repository
from collab.bundle import Bundle, load_bundle
from collab.chain import BundleSessions
from collab.cli import main
from collab.errors import ConfigError

_TOKEN = re.compile(r'\s*(?:("(?:[^"\\]|\\.)*")|([{}\[\]:,])|([^\s{}\[\]:,"]+))')


def parse_pbtxt(text: str) -> dict[str, list[Any]]:
    """Protobuf text format, the subset config.pbtxt uses: every field maps to the list
    of its values (repeated or not); a message is a dict, a scalar a str/int."""
    toks = [m.group(1) or m.group(2) or m.group(3) for m in _TOKEN.finditer(text)]
    toks = [t for t in toks if t is not None]
    pos = 0

    def scalar(t: str) -> Any:
        if t.startswith('"'):
            return t[1:-1]
        return int(t) if re.fullmatch(r"-?\d+", t) else t

    def value() -> Any:
        nonlocal pos
        t = toks[pos]
        pos += 1
        if t == "{":
            return message("}")
        if t == "[":
            items: list[Any] = []
            while toks[pos] != "]":
                items.append(value())
                if toks[pos] == ",":
                    pos += 1
            pos += 1
            return items
        return scalar(t)

    def message(end: str | None) -> dict[str, list[Any]]:
        nonlocal pos
        fields: dict[str, list[Any]] = {}
        while pos < len(toks) and toks[pos] != end:
            key = toks[pos]
            pos += 1
            if toks[pos] == ":":
                pos += 1
            v = value()
            fields.setdefault(key, []).extend(v if isinstance(v, list) else [v])
        pos += 1
        return fields

    return message(None)


@pytest.fixture(scope="module")
def bundle(digits_bundle: Path) -> Bundle:
    return load_bundle(digits_bundle)


@pytest.fixture(scope="module")
def repo(bundle: Bundle, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("triton") / "repo"
    args = ["export-triton", str(bundle.root), str(out), "--max-queue-delay-us", "1500"]
    assert main(args) == 0
    return out


def _config(repo: Path, name: str) -> dict[str, list[Any]]:
    cfg = parse_pbtxt((repo / name / "config.pbtxt").read_text())
    assert cfg["name"] == [name]
    return cfg


def test_every_segment_is_a_batching_onnx_model_named_after_its_tensors(
    bundle: Bundle, repo: Path
) -> None:
    m = bundle.manifest
    for i, seg in enumerate(m.segments):
        name = f"{m.model_name}_seg{i}"
        cfg = _config(repo, name)
        assert cfg["platform"] == ["onnxruntime_onnx"]
        assert cfg["max_batch_size"] == [16]
        assert cfg["dynamic_batching"][0]["max_queue_delay_microseconds"] == [1500]
        onnx = repo / name / "1" / "model.onnx"
        assert onnx.read_bytes() == (bundle.root / seg.path).read_bytes()
        s = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
        for declared, actual in ((cfg["input"], s.get_inputs()), (cfg["output"], s.get_outputs())):
            assert [t["name"][0] for t in declared] == [a.name for a in actual]
            assert declared[0]["data_type"] == ["TYPE_FP32"]
            assert tuple(declared[0]["dims"]) == tuple(actual[0].shape[1:])
        assert cfg["input"][0]["name"] == [seg.input]
        assert tuple(cfg["input"][0]["dims"]) == seg.input_shape[1:]


def _run_ensemble(repo: Path, name: str, x: np.ndarray) -> np.ndarray:
    """Route ``x`` through the ensemble's steps as Triton would, by tensor name."""
    cfg = _config(repo, name)
    assert cfg["platform"] == ["ensemble"] and "dynamic_batching" not in cfg
    tensors = {cfg["input"][0]["name"][0]: x}
    for step in cfg["ensemble_scheduling"][0]["step"]:
        model = step["model_name"][0]
        onnx = repo / model / "1" / "model.onnx"
        s = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
        (imap,), (omap,) = step["input_map"], step["output_map"]
        out = s.run([omap["key"][0]], {imap["key"][0]: tensors[imap["value"][0]]})[0]
        tensors[omap["value"][0]] = out
    return tensors[cfg["output"][0]["name"][0]]


def test_the_full_model_and_every_tail_are_ensembles_computing_the_bundle(
    bundle: Bundle, repo: Path
) -> None:
    m = bundle.manifest
    names = {p.name for p in repo.iterdir()}
    tails = {f"{m.model_name}_tail_{sp.name}" for sp in m.split_points}
    assert names == {f"{m.model_name}_seg{i}" for i in range(len(m.segments))} | tails | {
        f"{m.model_name}_full"
    }
    x = sample_inputs(bundle, 3)
    sessions = BundleSessions(bundle)
    np.testing.assert_allclose(
        _run_ensemble(repo, f"{m.model_name}_full", x), sessions.full()(x), rtol=1e-5, atol=1e-6
    )
    for sp in m.split_points:
        feature = sessions.head(sp.name)(x)
        cfg = _config(repo, f"{m.model_name}_tail_{sp.name}")
        assert tuple(cfg["input"][0]["dims"]) == sp.feature_shape[1:]
        assert tuple(cfg["output"][0]["dims"]) == m.output_shape[1:]
        y = _run_ensemble(repo, f"{m.model_name}_tail_{sp.name}", feature)
        np.testing.assert_allclose(y, sessions.tail(sp.name)(feature), rtol=1e-5, atol=1e-6)


def test_what_triton_cannot_express_is_one_clear_error(
    bundle: Bundle, repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    m = bundle.manifest
    with pytest.raises(ConfigError, match="batch dimension"):
        repository(dataclasses.replace(m, dynamic_batch=False))
    seg = dataclasses.replace(m.segments[0], input_shape=(1, 0, 28, 28))
    with pytest.raises(ConfigError, match="dynamic or not a positive integer"):
        repository(dataclasses.replace(m, segments=(seg, *m.segments[1:])))
    sp = dataclasses.replace(m.split_points[0], feature_dtype="complex64")
    with pytest.raises(ConfigError, match="no Triton name"):
        repository(dataclasses.replace(m, split_points=(sp, *m.split_points[1:])))
    # an existing repository is never written over
    assert main(["export-triton", str(bundle.root), str(repo)]) == 1
    assert "not an empty directory" in capsys.readouterr().err
