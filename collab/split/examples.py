"""Bundles of the example models (collab.models), built once and cached: the bundles of
scenarios that name an example, and of tests and benchmarks.

Cache key: the example name plus a hash of everything that determines the bundle
(partitioner and model sources, committed weights, torch/onnx/onnxruntime versions),
so an edit to any of them rebuilds. Concurrent callers (pytest-xdist workers, several
engineers' test runs) serialise on a file lock; ``split_model`` writes into a temp dir
and renames, so a reader never sees a half-written bundle.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import time
from pathlib import Path

from collab.bundle import load_bundle
from collab.errors import BundleError
from collab.log import logger

_PKG = Path(__file__).resolve().parents[1]  # the collab package
_SOURCES = ("split/*.py", "models/*.py", "bundle.py", "ort.py", "data/*.pt")


def cache_root() -> Path:
    """``$COLLAB_CACHE_DIR/bundles``, else ``<repo>/.cache/bundles`` (or ~/.cache/edgecollab)."""
    env = os.environ.get("COLLAB_CACHE_DIR")
    if env:
        return Path(env) / "bundles"
    repo = _PKG.parent
    if (repo / "pyproject.toml").is_file():
        return repo / ".cache" / "bundles"
    return Path.home() / ".cache" / "edgecollab" / "bundles"


def _key(name: str) -> str:
    import onnx
    import onnxruntime
    import torch

    h = hashlib.sha256(
        f"{name}|{torch.__version__}|{onnx.__version__}|{onnxruntime.__version__}".encode()
    )
    for pattern in _SOURCES:
        for p in sorted(_PKG.glob(pattern)):
            h.update(p.relative_to(_PKG).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def example_bundle(name: str, *, progress: bool = False) -> Path:
    """Path of the verified bundle of example model ``name`` (see collab.models.registry);
    ``progress``: a bar while it is built (the first use only)."""
    from collab.models.registry import spec

    spec(name)  # ConfigError for unknown names, before any work
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    key = _key(name)
    final = root / f"{name}-{key}"
    with open(root / f".{name}-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if final.exists():
            try:
                load_bundle(final)
                return final
            except BundleError as e:
                logger.warning("cached bundle %s is damaged (%s); rebuilding", final, e)
                shutil.rmtree(final)
        build_example_bundle(name, final, progress=progress)
    _prune(root, name, keep=final)
    return final


STALE_S = 3600.0  # an outdated bundle may still be in use by a test session started earlier


def _prune(root: Path, name: str, *, keep: Path) -> None:
    """Remove bundles of ``name`` built from other sources, once they are an hour old."""
    now = time.time()
    for old in root.glob(f"{name}-*"):
        if old == keep or not old.is_dir():
            continue
        try:
            if now - old.stat().st_mtime > STALE_S:
                shutil.rmtree(old, ignore_errors=True)
                (root / f".{old.name}.lock").unlink(missing_ok=True)
        except OSError:
            pass


def build_example_bundle(name: str, out: Path, *, runs: int = 20, progress: bool = False) -> Path:
    """Split example model ``name`` into ``out``; records test accuracy for trained models."""
    import torch

    from collab.models.examples import load_example
    from collab.models.registry import example_inputs, labelled_inputs, spec
    from collab.split import split_model

    s = spec(name)
    model = load_example(name)
    extra: dict[str, object] = {"example": name, "factory": s.factory}
    if s.trained:
        x, y = labelled_inputs(name, None, "test")
        with torch.no_grad():
            pred = model(torch.from_numpy(x)).argmax(dim=1).numpy()
        extra["accuracy"] = {"split": "test", "n": len(y), "top1": float((pred == y).mean())}
    logger.info("building example bundle %s in %s", name, out)
    split_model(
        model,
        example_inputs(name, 3)[0],
        out,
        name=name,
        runs=runs,
        progress=progress,
        extra=extra,
        preprocessing=s.preprocessing,
    )
    return out
