"""``collab split`` / ``collab inspect`` end to end, and every bad-input case."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from collab.bundle import load_bundle
from collab.cli import main

USER_MODELS = """
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU())
        self.head = nn.Linear(8, 3)
    def forward(self, x):
        return self.head(self.body(x))

class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 3)
    def forward(self, x):
        if x.mean() > 0:
            return self.fc(x)
        return self.fc(-x)

def net():
    torch.manual_seed(0)
    return Net().eval()

def branchy():
    return Branchy().eval()

def not_a_module():
    return 42

def broken():
    raise RuntimeError("factory bug")
"""


@pytest.fixture
def models_py(tmp_path: Path) -> Path:
    p = tmp_path / "user_models.py"
    p.write_text(USER_MODELS)
    return p


def test_split_file_factory_then_inspect(
    models_py: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bundle"
    rc = main(
        [
            "split",
            f"{models_py}:net",
            "--input-shape",
            "1,6",
            "--out",
            str(out),
            "--runs",
            "3",
            "--no-progress",
        ]
    )
    assert rc == 0
    b = load_bundle(out)
    assert b.manifest.model_name == "net"
    assert [sp.name for sp in b.manifest.split_points] == ["body.1", "body"]
    capsys.readouterr()
    assert main(["inspect", str(out)]) == 0
    table = capsys.readouterr().out
    for word in ("body.1", "head ms", "tail ms", "segments", "KB"):
        assert word in table


def test_split_weights_flag(models_py: Path, tmp_path: Path) -> None:
    import torch

    sys.path.insert(0, str(models_py.parent))
    try:
        import user_models  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(models_py.parent))
    m = user_models.Net()
    torch.nn.init.constant_(m.head.bias, 5.0)
    torch.save(m.state_dict(), tmp_path / "w.pt")
    out = tmp_path / "b"
    assert (
        main(
            [
                "split",
                f"{models_py}:net",
                "--input-shape",
                "2,6",
                "--out",
                str(out),
                "--weights",
                str(tmp_path / "w.pt"),
                "--name",
                "custom",
                "--runs",
                "2",
                "--no-progress",
            ]
        )
        == 0
    )
    b = load_bundle(out)
    assert b.manifest.model_name == "custom"
    assert b.manifest.input_shape == (1, 6)


def _fails(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str], out: Path) -> None:
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc != 0
    assert needle in err, err
    assert not out.exists() or not any(out.iterdir())
    assert not [
        p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")
    ]  # no staging leftovers


@pytest.mark.parametrize(
    ("spec", "shape", "needle"),
    [
        ("no_such_pkg.models:net", "1,6", "cannot import module 'no_such_pkg.models'"),
        ("{file}:missing", "1,6", "unknown factory 'missing'"),
        ("{file}:not_a_module", "1,6", "returned int, not a torch.nn.Module"),
        ("{file}:broken", "1,6", "factory bug"),
        ("{file}:branchy", "1,6", "control flow"),
        ("{file}:net", "1,x", "--input-shape"),
        ("{file}:net", "1,7", "running the model on the example input (1, 7) failed"),
        ("nocolon", "1,6", "expected 'package.module:factory'"),
        ("/no/such/file.py:net", "1,6", "does not exist"),
    ],
)
def test_bad_input_fails_cleanly(
    spec: str,
    shape: str,
    needle: str,
    models_py: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    argv = [
        "split",
        spec.format(file=models_py),
        "--input-shape",
        shape,
        "--out",
        str(out),
        "--no-progress",
    ]
    _fails(argv, needle, capsys, out)


def test_bad_weights_and_nonempty_out(
    models_py: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "w.pt").write_bytes(b"not a checkpoint")
    out = tmp_path / "out"
    _fails(
        [
            "split",
            f"{models_py}:net",
            "--input-shape",
            "1,6",
            "--out",
            str(out),
            "--weights",
            str(tmp_path / "w.pt"),
        ],
        "cannot read weights",
        capsys,
        out,
    )
    out.mkdir()
    (out / "precious").write_text("x")
    assert main(["split", f"{models_py}:net", "--input-shape", "1,6", "--out", str(out)]) != 0
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["precious"]


def test_inspect_refuses_tampered_bundle(
    digits_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    dst = tmp_path / "b"
    shutil.copytree(digits_bundle, dst)
    seg = load_bundle(dst).manifest.segments[-1].path
    (dst / seg).write_bytes((dst / seg).read_bytes() + b"\0")
    assert main(["inspect", str(dst)]) == 1
    assert seg in capsys.readouterr().err


def test_real_process_exit_code(models_py: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "collab.cli",
            "split",
            f"{models_py}:branchy",
            "--input-shape",
            "1,6",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1
    assert "control flow" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()
