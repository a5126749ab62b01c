"""Sample inputs for calibration and agreement checks, validated against the bundle
before any work starts.

``DATA`` is a ``.npy`` file (inputs only), a ``.npz`` file with ``x`` (and optionally
``y`` labels, which turn agreement into real accuracy), or ``example:NAME[:SPLIT]``
for the built-in datasets of :mod:`collab.models.examples`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from collab.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class Samples:
    x: np.ndarray  # float32, (N, *input_shape[1:])
    y: np.ndarray | None = None  # int labels, (N,)

    def __len__(self) -> int:
        return len(self.x)

    def split(self, n_first: int) -> tuple[Samples, Samples]:
        y1 = None if self.y is None else self.y[:n_first]
        y2 = None if self.y is None else self.y[n_first:]
        return Samples(x=self.x[:n_first], y=y1), Samples(x=self.x[n_first:], y=y2)


def _from_example(spec: str, n: int) -> Samples:
    parts = spec.split(":")
    name = parts[1] if len(parts) > 1 else ""
    split = parts[2] if len(parts) > 2 else "test"
    if split not in ("train", "test"):
        raise ConfigError(f"--calibration {spec}: split must be 'train' or 'test'")
    try:
        from collab.models.examples import example_inputs
    except ImportError as e:
        raise ConfigError(f"--calibration {spec}: example datasets are not available ({e})") from e
    try:
        got = example_inputs(name, n, split)  # type: ignore[arg-type]
    except (KeyError, ValueError) as e:
        raise ConfigError(f"--calibration {spec}: {e}") from e
    if isinstance(got, tuple):
        return Samples(x=np.asarray(got[0]), y=None if got[1] is None else np.asarray(got[1]))
    return Samples(x=np.asarray(got))


def _from_file(path: Path) -> Samples:
    if not path.is_file():
        raise ConfigError(f"--calibration {path}: no such file")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ConfigError(f"--calibration {path}: not a .npy/.npz file ({e})") from e
    if isinstance(data, np.ndarray):
        return Samples(x=data)
    with data:
        if "x" not in data.files:
            raise ConfigError(
                f"--calibration {path}: .npz needs an array named 'x' (has {data.files})"
            )
        return Samples(x=data["x"], y=data["y"] if "y" in data.files else None)


def load_samples(spec: str, input_shape: tuple[int, ...], *, n: int = 256) -> Samples:
    """Load and validate samples for a model whose input is ``input_shape`` (batch first)."""
    s = _from_example(spec, n) if spec.startswith("example:") else _from_file(Path(spec))
    return validate(s, input_shape, source=spec)


def validate(s: Samples, input_shape: tuple[int, ...], *, source: str = "samples") -> Samples:
    want = tuple(input_shape[1:])
    x = np.asarray(s.x)
    if x.ndim != len(want) + 1 or tuple(x.shape[1:]) != want:
        raise ConfigError(
            f"{source}: inputs have shape {list(x.shape)}, the model expects [N, {', '.join(map(str, want))}]"
        )
    if len(x) < 2:
        raise ConfigError(
            f"{source}: need at least 2 inputs (calibration + held-out), got {len(x)}"
        )
    if not np.issubdtype(x.dtype, np.floating) and not np.issubdtype(x.dtype, np.integer):
        raise ConfigError(f"{source}: inputs must be numeric, got {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.all(np.isfinite(x)):
        raise ConfigError(f"{source}: inputs contain NaN or infinity")
    y = None
    if s.y is not None:
        y = np.asarray(s.y).reshape(-1)
        if len(y) != len(x):
            raise ConfigError(f"{source}: {len(y)} labels for {len(x)} inputs")
        y = y.astype(np.int64)
    return Samples(x=x, y=y)
