"""The lock (constraints.txt) covers every dependency pyproject.toml names.

Every install command uses the lock, so a dependency it does not pin would be resolved
freshly on each new machine: exactly the drift that broke a fresh install before.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the lock is compiled for 3.11
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def _lock(text: str) -> dict[str, str]:
    pins = {}
    for line in text.splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


def _declared(pyproject: dict) -> list[Requirement]:  # type: ignore[type-arg]
    project = pyproject["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for group in project.get("optional-dependencies", {}).values():
        reqs += [Requirement(r) for r in group]
    return [r for r in reqs if canonicalize_name(r.name) != canonicalize_name(project["name"])]


def uncovered(pyproject: dict, lock_text: str) -> list[str]:  # type: ignore[type-arg]
    """Declared requirements the lock does not pin, or pins outside their range."""
    pins = _lock(lock_text)
    bad = []
    for r in _declared(pyproject):
        version = pins.get(canonicalize_name(r.name))
        if version is None:
            bad.append(f"{r.name} is not in constraints.txt")
        elif not r.specifier.contains(version, prereleases=True):
            bad.append(
                f"{r.name}: constraints.txt pins {version}, pyproject.toml wants {r.specifier}"
            )
    return bad


def test_the_lock_pins_every_declared_dependency_in_range() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    bad = uncovered(pyproject, (ROOT / "constraints.txt").read_text())
    assert not bad, "the lock is stale; run scripts/lock.sh:\n" + "\n".join(bad)


def test_a_stale_lock_is_reported_by_package_name() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    lock = (ROOT / "constraints.txt").read_text()
    pyproject["project"]["optional-dependencies"]["dev"].append("left-pad-nonexistent>=1")
    stale = "\n".join(line for line in lock.splitlines() if not line.startswith("zstandard=="))
    assert uncovered(pyproject, stale) == [
        "zstandard is not in constraints.txt",
        "left-pad-nonexistent is not in constraints.txt",
    ]
    narrowed = lock.replace("\nnumpy==", "\nnumpy==1.0.")
    assert any(
        b.startswith("numpy: constraints.txt pins 1.0.") for b in uncovered(pyproject, narrowed)
    )


@pytest.mark.parametrize("script", ["scripts/setup.sh", "scripts/test.sh", ".ci/run"])
def test_every_install_command_uses_the_lock(script: str) -> None:
    text = (ROOT / script).read_text()
    installs = [
        line
        for line in text.splitlines()
        if "pip install" in line and not line.lstrip().startswith("#")
    ]
    assert all("-c constraints.txt" in line for line in installs), installs
    assert installs or "scripts/setup.sh" in text or "scripts/test.sh" in text
