"""Which example models exist, how to build them and what they eat (no torch import)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from collab.errors import ConfigError
from collab.models import datasets


@dataclass(frozen=True, kw_only=True)
class ExampleSpec:
    name: str
    factory: str  # "package.module:function", usable as ``collab split SPEC``
    input_shape: tuple[int, ...]  # with batch 1 as dim 0
    inputs: Callable[[datasets.Split], tuple[np.ndarray, np.ndarray]]
    description: str
    trained: bool = False  # weights learned on the labels (accuracy is meaningful)

    @property
    def input_shape_arg(self) -> str:
        return ",".join(str(d) for d in self.input_shape)


EXAMPLES: dict[str, ExampleSpec] = {
    s.name: s
    for s in (
        ExampleSpec(
            name="digits",
            factory="collab.models.examples:digits_cnn",
            input_shape=(1, 1, 8, 8),
            inputs=datasets.digits,
            description="small CNN trained on scikit-learn digits",
            trained=True,
        ),
        ExampleSpec(
            name="resnet",
            factory="collab.models.examples:resnet18_style",
            input_shape=(1, 3, 32, 32),
            inputs=datasets.digits_rgb32,
            description="ResNet-18-style, 4 stages x 2 basic blocks, seeded weights",
        ),
        ExampleSpec(
            name="mobilenet",
            factory="collab.models.examples:mobilenetv2_style",
            input_shape=(1, 3, 32, 32),
            inputs=datasets.digits_rgb32,
            description="MobileNetV2-style inverted residuals, seeded weights",
        ),
        ExampleSpec(
            name="transformer",
            factory="collab.models.examples:tiny_transformer",
            input_shape=(1, datasets.TOKENS, datasets.TOKEN_DIM),
            inputs=datasets.digits_tokens,
            description="4-layer pre-norm transformer encoder on 16x32 tokens, seeded weights",
        ),
    )
}


def spec(name: str) -> ExampleSpec:
    try:
        return EXAMPLES[name]
    except KeyError:
        raise ConfigError(f"unknown example model {name!r} (known: {', '.join(EXAMPLES)})") from None


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
