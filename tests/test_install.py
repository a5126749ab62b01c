"""The wheel, installed bare (no extras) in a fresh venv outside the repository.

This is what an edge device gets: the SDK runs a bundle edge-only, shipped scenarios and
example configs are package data, torch is absent, and a command that needs an extra
says which one in one line (exit code 2). Installs with the lock like every other
install command, so it takes what CI tested (from pip's cache after the dev install).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

EDGE_ONLY = """
import json, sys
import numpy as np
import collab
bundle = sys.argv[1]
shape = collab.load_bundle(bundle).manifest.input_shape
with collab.Client(bundle, policy="edge_only") as c:
    r = c.infer(np.zeros([1, *shape[1:]], np.float32))
print(json.dumps({"path": r.path, "fell_back": r.fell_back, "shape": list(r.output.shape)}))
"""


@pytest.fixture(scope="module")
def base_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("install")
    dist = tmp / "dist"
    # build from a copy of the tracked sources: an in-tree build reuses a stale build/ dir
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    src = tmp / "src"
    for rel in files:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / rel).is_symlink():  # collab/scenario/shipped -> ../../scenarios
            (src / rel).symlink_to(os.readlink(ROOT / rel))
        elif (ROOT / rel).is_file():
            shutil.copy2(ROOT / rel, src / rel)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(dist),
            str(src),
        ],
        check=True,
        capture_output=True,
        cwd=tmp,
    )
    (wheel,) = dist.glob("edgecollab-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [
            str(venv / "bin" / "pip"),
            "install",
            "-q",
            "-c",
            str(ROOT / "constraints.txt"),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        cwd=tmp,
    )
    return venv


def _run(venv: Path, args: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        [str(venv / "bin" / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def test_base_wheel_runs_the_edge_and_ships_its_data(
    base_venv: Path, digits_bundle: Path, tmp_path: Path
) -> None:
    r = _run(base_venv, ["collab", "scenario", "list"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert {"demo", "commute-4g"} <= {
        line.split()[0] for line in r.stdout.splitlines() if line.strip()
    }
    r = _run(base_venv, ["collab", "demo", "--help"], tmp_path)
    assert r.returncode == 0 and "--scenario" in r.stdout, r.stderr
    r = _run(
        base_venv,
        [
            "python",
            "-c",
            "from collab.fl.config import load_config;print(load_config('example_digits').rounds)",
        ],
        tmp_path,
    )
    assert r.returncode == 0 and int(r.stdout) > 0, r.stderr
    # the package comes from the venv, not from the source tree
    r = _run(base_venv, ["python", "-c", "import collab; print(collab.__file__)"], tmp_path)
    assert str(base_venv) in r.stdout, r.stdout

    r = _run(base_venv, ["python", "-c", EDGE_ONLY, str(digits_bundle)], tmp_path)
    assert r.returncode == 0 and "terminate called" not in r.stderr, r.stderr
    out = json.loads(r.stdout.splitlines()[-1])
    assert out == {"path": "edge_only", "fell_back": False, "shape": [1, 10]}

    r = _run(base_venv, ["python", "-c", "import torch"], tmp_path)
    assert r.returncode != 0 and "No module named 'torch'" in r.stderr


@pytest.mark.parametrize(
    ("command", "extra"),
    [
        (
            [
                "split",
                "collab.models.examples:digits_cnn",
                "--input-shape",
                "1,1,32,32",
                "--out",
                "b",
            ],
            "split",
        ),
        (["demo"], "scenario"),
        (["fl", "run", "--config", "example_digits"], "fl"),
    ],
)
def test_a_command_without_its_extra_names_it_in_one_line(
    base_venv: Path, tmp_path: Path, command: list[str], extra: str
) -> None:
    r = _run(base_venv, ["collab", *command], tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"pip install 'edgecollab[{extra}]'" in lines[0]
