"""Hostile bundles and files: a manifest that is huge, nests deeply or has fields of the
wrong type is one BundleError; a model whose weights live outside its hashed file never
loads, in a library call or in a real cloud node process; a symlink planted where a key is
written is replaced, never written through; a node refuses to listen off loopback without
client certificates."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from collab.bundle import MANIFEST, MAX_MANIFEST_BYTES, SELF_HASH, load_bundle
from collab.chain import BundleSessions
from collab.errors import BundleError
from tests.helpers.manifests import write_self_checksummed


@pytest.fixture
def bundle_copy(digits_bundle: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "b"
    shutil.copytree(digits_bundle, dst)
    return dst


def _manifest(root: Path) -> dict[str, object]:
    d: dict[str, object] = json.loads((root / MANIFEST).read_text())
    d.pop(SELF_HASH)
    return d


@pytest.mark.parametrize(
    ("field", "value", "where"),
    [
        ("full_ms", "fast", "full_ms"),
        ("input_shape", "1,1,8,8", "input_shape"),
        ("files", {"x.onnx": 7}, "files.x.onnx"),
        ("split_points", [{"name": 3}], "split_points.0"),
        ("segments", "none", "segments"),
        ("unknown_key", 1, "unknown_key"),
        ("input_shape", [1, 1, 0, 8], "non-positive"),
        ("full_ms", float("nan"), "not finite"),
    ],
)
def test_wrong_typed_manifest_fields_are_one_bundle_error(
    bundle_copy: Path, field: str, value: object, where: str
) -> None:
    d = _manifest(bundle_copy)
    d[field] = value
    write_self_checksummed(bundle_copy, d)
    with pytest.raises(BundleError, match="malformed manifest") as e:
        load_bundle(bundle_copy)
    assert where in str(e.value)


def test_a_deeply_nested_manifest_is_a_bundle_error(bundle_copy: Path) -> None:
    (bundle_copy / MANIFEST).write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(BundleError, match="nests too deeply"):
        load_bundle(bundle_copy)


def test_an_oversized_manifest_is_refused_before_parsing(bundle_copy: Path) -> None:
    d = _manifest(bundle_copy)
    d["extra"] = {"pad": "x" * MAX_MANIFEST_BYTES}
    write_self_checksummed(bundle_copy, d)
    with pytest.raises(BundleError, match="larger than"):
        load_bundle(bundle_copy)


def _move_weights_outside(bundle: Path, outside: Path) -> str:
    """Rewrite the last segment so its weights are external data in ``outside``, then
    re-hash the manifest: every listed file still matches its hash."""
    from collab.bundle import write_manifest

    b = load_bundle(bundle)
    seg = b.manifest.segments[-1].path
    model = onnx.load(str(bundle / seg))
    onnx.save(
        model,
        str(bundle / seg),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    outside.mkdir(exist_ok=True)
    shutil.move(str(bundle / seg.rsplit("/", 1)[0] / "weights.bin"), outside / "weights.bin")
    write_manifest(bundle, b.manifest)
    return seg


def test_external_weights_in_the_working_directory_never_load(
    bundle_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = tmp_path / "cwd"
    _move_weights_outside(bundle_copy, cwd)
    monkeypatch.chdir(cwd)  # where ONNX Runtime would look for them
    b = load_bundle(bundle_copy)  # every listed file matches its hash
    with pytest.raises(BundleError, match="external data"):
        BundleSessions(b).full()


def test_a_cloud_node_refuses_a_bundle_with_external_weights(
    bundle_copy: Path, tmp_path: Path
) -> None:
    cwd = tmp_path / "cwd"
    _move_weights_outside(bundle_copy, cwd)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "collab.cli",
            "cloud",
            "--bundle",
            str(bundle_copy),
            "--listen",
            "127.0.0.1:0",
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0, proc.stdout
    assert "external data" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]


def test_fl_keygen_replaces_a_planted_symlink_instead_of_writing_through_it(
    tmp_path: Path,
) -> None:
    """A symlink planted where `collab fl keygen` writes the secret key (pointing at a file
    of the victim's) is replaced by a fresh 0600 key file; the target is untouched."""
    out = tmp_path / "keys"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("the victim's file\n")
    (out / "secret.ctx").symlink_to(victim)
    (out / "public.ctx").symlink_to(victim)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "collab.cli",
            "fl",
            "keygen",
            "--config",
            "example_digits",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert victim.read_text() == "the victim's file\n"
    for name in ("secret.ctx", "public.ctx"):
        p = out / name
        assert not p.is_symlink() and p.stat().st_size > 0
        assert stat.S_IMODE(p.stat().st_mode) == 0o600


@pytest.mark.parametrize("role", ["cloud", "edge"])
def test_a_node_refuses_to_listen_off_loopback_without_client_certificates(
    digits_bundle: Path, role: str
) -> None:
    """`--listen 0.0.0.0:…` without `--tls-client-ca` would let anyone reaching the port use
    the node: the real process refuses to start, with one line naming the way out."""
    bundle = ["--bundle", str(digits_bundle)]
    proc = subprocess.run(
        [sys.executable, "-m", "collab.cli", role, *bundle, "--listen", "0.0.0.0:0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0, proc.stdout
    assert "refusing to listen on 0.0.0.0:0 without client certificates" in proc.stderr
    assert "--insecure" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
