"""Data for the example models, built from scikit-learn's bundled digits (no downloads).

numpy only: scenario runners and codec calibration use these inputs without torch.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path
from typing import Literal

import numpy as np

from collab.errors import ConfigError

Split = Literal["train", "test"]

TEST_FRACTION = 0.25
SEED = 0
# Mean/std of the 32x32 upsampled training images, fixed so inputs never depend on the split.
_IMG_MEAN = 0.3057
_IMG_STD = 0.3762
TOKENS, TOKEN_DIM = 16, 32


@cache
def _load() -> tuple[np.ndarray, np.ndarray]:
    """(images (1797, 8, 8) float64 in 0..16, labels). Reads scikit-learn's bundled CSV
    directly: importing sklearn costs seconds, which every edge process would pay."""
    spec = importlib.util.find_spec("sklearn")
    locs = list(spec.submodule_search_locations or []) if spec else []
    for loc in locs:
        path = Path(loc) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            data = np.loadtxt(path, delimiter=",")
            return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images, d.target.astype(np.int64)


@cache
def _split_indices() -> tuple[np.ndarray, np.ndarray]:
    """A fixed stratified split: the same on every machine and numpy version."""
    y = _load()[1]
    rng = np.random.default_rng(SEED)
    test: list[np.ndarray] = []
    for c in range(10):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        test.append(idx[: round(len(idx) * TEST_FRACTION)])
    test_idx = np.sort(np.concatenate(test))
    train_idx = np.setdiff1d(np.arange(len(y)), test_idx)
    return train_idx, test_idx


def digits(split: Split = "train") -> tuple[np.ndarray, np.ndarray]:
    """Digits images scaled to [0, 1]: x float32 (N, 1, 8, 8), y int64 (N,)."""
    if split not in ("train", "test"):
        raise ConfigError(f"split must be 'train' or 'test', not {split!r}")
    images, labels = _load()
    idx = _split_indices()[0 if split == "train" else 1]
    x = (images[idx] / 16.0).astype(np.float32)[:, None, :, :]
    return np.ascontiguousarray(x), labels[idx].copy()


def rgb32_from_digits(x: np.ndarray) -> np.ndarray:
    """(N, 1, 8, 8) digits in [0, 1] -> upsampled 4x to 32x32, 3 channels, normalised.
    Separate from the split so training can augment the 8x8 images first."""
    up = np.repeat(np.repeat(x, 4, axis=2), 4, axis=3)
    up = (up - _IMG_MEAN) / _IMG_STD
    return np.ascontiguousarray(np.repeat(up, 3, axis=1).astype(np.float32))


def digits_rgb32(split: Split = "train") -> tuple[np.ndarray, np.ndarray]:
    """Digits upsampled 4x to 32x32, replicated to 3 channels, normalised: (N, 3, 32, 32)."""
    x, y = digits(split)
    return rgb32_from_digits(x), y


@cache
def _token_projection() -> np.ndarray:
    rng = np.random.default_rng(1234)
    return (rng.standard_normal((4, TOKEN_DIM)) / 2.0).astype(np.float32)


def tokens_from_digits(x: np.ndarray) -> np.ndarray:
    """(N, 1, 8, 8) digits in [0, 1] -> 16 tokens (2x2 pixel patches) embedded to 32 dims
    by a fixed projection: (N, 16, 32) float32."""
    n = x.shape[0]
    patches = x.reshape(n, 4, 2, 4, 2).transpose(0, 1, 3, 2, 4).reshape(n, TOKENS, 4)
    tok = (patches - 0.3) @ _token_projection()
    return np.ascontiguousarray(tok.astype(np.float32))


def digits_tokens(split: Split = "train") -> tuple[np.ndarray, np.ndarray]:
    """Digits as tokens (see ``tokens_from_digits``), the input of the tiny transformer."""
    x, y = digits(split)
    return tokens_from_digits(x), y
