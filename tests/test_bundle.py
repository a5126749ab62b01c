"""load_bundle refuses a bundle with any file modified or missing, naming the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from collab.bundle import MANIFEST, load_bundle, update_bundle
from collab.errors import BundleError


@pytest.fixture
def bundle_copy(digits_bundle: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "b"
    shutil.copytree(digits_bundle, dst)
    return dst


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_bundle_lists_every_file(bundle_copy: Path) -> None:
    b = load_bundle(bundle_copy)
    assert sorted([*b.manifest.files, MANIFEST]) == _files(bundle_copy)


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_flipping_one_byte_of_any_file_is_refused(
    bundle_copy: Path, tmp_path: Path, where: str
) -> None:
    files = _files(bundle_copy)
    assert len(files) >= 5
    for rel in files:
        victim = tmp_path / f"v-{where}"
        shutil.rmtree(victim, ignore_errors=True)
        shutil.copytree(bundle_copy, victim)
        data = bytearray((victim / rel).read_bytes())
        i = {"first": 0, "middle": len(data) // 2, "last": len(data) - 1}[where]
        data[i] ^= 0x01
        (victim / rel).write_bytes(bytes(data))
        with pytest.raises(BundleError) as e:
            load_bundle(victim)
        assert Path(rel).name in str(e.value), (rel, str(e.value))


def test_deleting_any_file_is_refused(bundle_copy: Path, tmp_path: Path) -> None:
    for rel in _files(bundle_copy):
        victim = tmp_path / "v"
        shutil.rmtree(victim, ignore_errors=True)
        shutil.copytree(bundle_copy, victim)
        (victim / rel).unlink()
        with pytest.raises(BundleError, match=Path(rel).name.replace(".", r"\.")):
            load_bundle(victim)


def test_editing_a_figure_in_the_manifest_is_refused(bundle_copy: Path) -> None:
    d = json.loads((bundle_copy / MANIFEST).read_text())
    d["split_points"][0]["head_ms"] = 0.000001  # valid JSON, no file hash covers it
    (bundle_copy / MANIFEST).write_text(json.dumps(d, indent=2, sort_keys=True) + "\n")
    with pytest.raises(BundleError, match=r"manifest\.json was modified"):
        load_bundle(bundle_copy)


def test_update_bundle_rehashes_and_changes_version(bundle_copy: Path) -> None:
    before = load_bundle(bundle_copy)

    def add_note(root: Path, m):  # type: ignore[no-untyped-def]
        (root / "note.txt").write_text("calibrated")
        from dataclasses import replace

        return replace(m, files={**m.files, "note.txt": ""}, extra={**m.extra, "note": "note.txt"})

    after = update_bundle(bundle_copy, add_note)
    assert after.version != before.version
    assert "note.txt" in after.manifest.files
    (bundle_copy / "note.txt").write_text("tampered")
    with pytest.raises(BundleError, match=r"note\.txt"):
        load_bundle(bundle_copy)


def test_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"missing manifest\.json"):
        load_bundle(tmp_path)
