"""Which example models exist, how to build them and what they eat (no torch import)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from collab.errors import ConfigError
from collab.models import datasets


@dataclass(frozen=True, kw_only=True)
class ExampleSpec:
    name: str
    factory: str  # "package.module:function", usable as ``collab split SPEC``
    input_shape: tuple[int, ...]  # with batch 1 as dim 0
    inputs: Callable[[datasets.Split], tuple[np.ndarray, np.ndarray]]
    # (N, 1, 8, 8) digits -> model inputs; ``inputs`` applied to augmented images in training
    from_digits: Callable[[np.ndarray], np.ndarray]
    description: str
    weights: str | None = None  # trained state_dict in collab/data/, loaded by default

    @property
    def trained(self) -> bool:
        """Weights learned on the labels (accuracy is meaningful)."""
        return self.weights is not None



EXAMPLES: dict[str, ExampleSpec] = {
    s.name: s
    for s in (
        ExampleSpec(
            name="digits",
            factory="collab.models.examples:digits_cnn",
            input_shape=(1, 1, 8, 8),
            inputs=datasets.digits,
            from_digits=lambda x: x,
            description="small CNN trained on scikit-learn digits",
            weights="digits_cnn.pt",
        ),
        ExampleSpec(
            name="resnet",
            factory="collab.models.examples:resnet18_style",
            input_shape=(1, 3, 32, 32),
            inputs=datasets.digits_rgb32,
            from_digits=datasets.rgb32_from_digits,
            description="ResNet-18-style, 4 stages x 2 basic blocks, trained on digits upsampled to 32x32",
            weights="resnet18_style.pt",
        ),
        ExampleSpec(
            name="mobilenet",
            factory="collab.models.examples:mobilenetv2_style",
            input_shape=(1, 3, 32, 32),
            inputs=datasets.digits_rgb32,
            from_digits=datasets.rgb32_from_digits,
            description="MobileNetV2-style inverted residuals, trained on digits upsampled to 32x32",
            weights="mobilenetv2_style.pt",
        ),
        ExampleSpec(
            name="transformer",
            factory="collab.models.examples:tiny_transformer",
            input_shape=(1, datasets.TOKENS, datasets.TOKEN_DIM),
            inputs=datasets.digits_tokens,
            from_digits=datasets.tokens_from_digits,
            description="4-layer pre-norm transformer encoder on 16x32 digit-patch tokens, trained",
            weights="tiny_transformer.pt",
        ),
    )
}


def spec(name: str) -> ExampleSpec:
    try:
        return EXAMPLES[name]
    except KeyError:
        raise ConfigError(f"unknown example model {name!r} (known: {', '.join(EXAMPLES)})") from None


def weights_path(name: str) -> Path:
    """Where the committed trained weights of example ``name`` live (may not exist yet)."""
    file = spec(name).weights
    if file is None:
        raise ConfigError(f"example model {name!r} has no trained weights")
    return Path(__file__).resolve().parents[1] / "data" / file


def example_inputs(
    name: str, n: int | None = None, split: datasets.Split = "test"
) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` realistic inputs of an example model and their digit labels."""
    x, y = spec(name).inputs(split)
    if n is not None:
        x, y = x[:n], y[:n]
    return np.ascontiguousarray(x), y


def example_input(name: str, n: int = 1) -> np.ndarray:
    """``n`` realistic test inputs for an example model, float32 with batch dim ``n``."""
    return example_inputs(name, n, "test")[0]
