"""Natural images for the ImageNet example model, from installed packages only.

Source images: the photographs that scikit-image ships inside its wheel (``skimage.data``
samples that need no download; grayscale ones are replicated to RGB) and scikit-learn's
``load_sample_images``. Inputs are deterministic, seeded random-resized crops with
horizontal flips (the standard ImageNet augmentation), as uint8 RGB images — what a
camera produces — so the same crops feed the JPEG cloud-only path and, normalised, the
model. The train and test splits come from **disjoint source images**: calibrating on
one and evaluating on the other measures generalisation to unseen scenes, not to other
crops of the same scene (stereo pairs stay on one side).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np

from collab.codec.image import normalize
from collab.errors import ConfigError
from collab.extras import missing
from collab.models.datasets import Split

try:
    from PIL import Image
except ImportError as _e:
    raise missing(_e, __name__) from _e

# skimage.data samples (files inside the installed package) and sklearn sample images
TRAIN_SOURCES: tuple[str, ...] = (
    "motorcycle_left",
    "motorcycle_right",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "flower",
    "gravel",
    "cell",
    "clock",
    "page",
    "microaneurysms",
)
TEST_SOURCES: tuple[str, ...] = (
    "chelsea",
    "coffee",
    "astronaut",
    "rocket",
    "china",
    "camera",
    "coins",
    "moon",
    "brick",
    "grass",
    "text",
)
SIZE = 224
SCALE = (0.25, 1.0)  # crop area as a fraction of the source image
RATIO = (3 / 4, 4 / 3)
SEED = 0

__all__ = ["TEST_SOURCES", "TRAIN_SOURCES", "crops", "natural_images", "normalize", "source_image"]


@cache
def source_image(name: str) -> np.ndarray:
    """One source photograph as uint8 RGB (H, W, 3)."""
    if name in ("china", "flower"):
        try:
            from sklearn.datasets import load_sample_image
        except ImportError as e:
            raise missing(e, __name__) from e
        img = load_sample_image(f"{name}.jpg")
    else:
        try:
            from skimage import data
        except ImportError as e:
            raise missing(e, __name__) from e
        loader = getattr(data, "stereo_motorcycle" if name.startswith("motorcycle") else name, None)
        if loader is None:
            raise ConfigError(f"unknown source image {name!r}")
        img = loader()
        if name.startswith("motorcycle"):
            img = img[0] if name.endswith("left") else img[1]
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    img = img[:, :, :3]
    if img.dtype != np.uint8:  # a few samples are bool or float in [0, 1]
        img = (
            (np.clip(img.astype(np.float64), 0, 1) * 255).round().astype(np.uint8)
            if img.max() <= 1
            else np.clip(img, 0, 255).astype(np.uint8)
        )
    return np.ascontiguousarray(img)


def _crop_box(rng: np.random.Generator, h: int, w: int) -> tuple[int, int, int, int]:
    """A random-resized-crop box (top, left, height, width), torchvision's recipe."""
    area = h * w
    for _ in range(10):
        target = area * rng.uniform(*SCALE)
        ratio = float(np.exp(rng.uniform(np.log(RATIO[0]), np.log(RATIO[1]))))
        cw, ch = round(np.sqrt(target * ratio)), round(np.sqrt(target / ratio))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw
    # fallback (wide images such as `text`): a random square at a random offset
    s = int(rng.integers(min(h, w) // 2, min(h, w) + 1))
    return int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1)), s, s


def crops(sources: Sequence[str], n: int, *, seed: int = SEED, size: int = SIZE) -> np.ndarray:
    """``n`` crops (uint8, (n, size, size, 3)) cycling over ``sources``, reproducible."""
    if n < 0:
        raise ConfigError(f"number of images must be >= 0 (got {n})")
    rng = np.random.default_rng([seed, len(sources), n])
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        img = source_image(sources[i % len(sources)])
        top, left, ch, cw = _crop_box(rng, *img.shape[:2])
        piece = Image.fromarray(img[top : top + ch, left : left + cw]).resize(
            (size, size), Image.Resampling.BILINEAR, reducing_gap=None
        )
        arr = np.asarray(piece)
        out[i] = arr[:, ::-1] if rng.random() < 0.5 else arr
    return out


def natural_images(
    split: Split = "test", n: int = 400, *, seed: int = SEED, size: int = SIZE
) -> np.ndarray:
    """Seeded crops of the split's source images (train and test share no source)."""
    if split not in ("train", "test"):
        raise ConfigError(f"split must be 'train' or 'test' (got {split!r})")
    return crops(TRAIN_SOURCES if split == "train" else TEST_SOURCES, n, seed=seed, size=size)
