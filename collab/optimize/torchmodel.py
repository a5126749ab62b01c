"""Getting the PyTorch model behind a bundle, exporting it, and re-splitting it.

``SPEC`` is ``example:NAME`` (a built-in example), ``package.module:factory`` or
``path/to/file.py:factory``, as for ``collab split``.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any

import torch
from torch import nn

from collab.bundle import Bundle, Manifest
from collab.errors import ConfigError


def load_model(spec: str, weights: Path | None = None) -> nn.Module:
    if spec.startswith("example:"):
        from collab.models.examples import load_example

        model = load_example(spec.split(":", 1)[1])
    else:
        mod_name, sep, func = spec.rpartition(":")
        if not sep or not mod_name or not func:
            raise ConfigError(
                f"model spec {spec!r}: expected module:factory, file.py:factory or example:NAME"
            )
        try:
            if mod_name.endswith(".py"):
                s = importlib.util.spec_from_file_location(Path(mod_name).stem, mod_name)
                if s is None or s.loader is None:
                    raise ImportError(f"cannot load {mod_name}")
                module = importlib.util.module_from_spec(s)
                s.loader.exec_module(module)
            else:
                module = importlib.import_module(mod_name)
            model = getattr(module, func)()
        except (ImportError, AttributeError, FileNotFoundError) as e:
            raise ConfigError(f"model spec {spec!r}: {e}") from e
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model spec {spec!r} returned {type(model).__name__}, not an nn.Module")
    if weights is not None:
        try:
            model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        except (OSError, RuntimeError) as e:
            raise ConfigError(f"--weights {weights}: {e}") from e
    return model.eval()


def export_onnx(
    model: nn.Module,
    example: torch.Tensor,
    path: Path,
    *,
    input_name: str = "input",
    opset: int = 17,
) -> Path:
    """A single-input single-output float32 ONNX with a dynamic batch dimension, exported
    and checked the way ``collab split`` does it."""
    from collab.split.export import export_onnx as _export

    path.parent.mkdir(parents=True, exist_ok=True)
    _export(model.eval(), example, path, input_name=input_name, output_name="output", opset=opset)
    return path


def resplit(
    model: nn.Module,
    like: Manifest,
    example: torch.Tensor,
    out: Path,
    *,
    extra: dict[str, Any] | None = None,
    runs: int = 20,
    progress: bool = True,
) -> Bundle:
    """Split a changed model (e.g. pruned) into a bundle at ``out`` the way the original
    bundle was made (same name, opset, cut granularity)."""
    from collab.split.api import split_model

    granularity = like.extra.get("granularity", "block")
    return split_model(
        model,
        example,
        out,
        name=like.model_name,
        opset=like.opset,
        granularity=granularity,
        extra=extra,
        runs=runs,
        progress=progress,
    )
