"""Getting the PyTorch model behind a bundle, exporting it, and re-splitting it.

``SPEC`` is ``example:NAME`` (a built-in example), ``package.module:factory`` or
``path/to/file.py:factory``, as for ``collab split``.
"""

from __future__ import annotations

import importlib
import importlib.util
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from collab.bundle import Manifest
from collab.errors import ConfigError, SplitError


def load_model(spec: str, weights: Path | None = None) -> nn.Module:
    if spec.startswith("example:"):
        from collab.models.examples import load_example

        model = load_example(spec.split(":", 1)[1])
    else:
        mod_name, sep, func = spec.rpartition(":")
        if not sep or not mod_name or not func:
            raise ConfigError(f"model spec {spec!r}: expected module:factory, file.py:factory or example:NAME")
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


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path, *, input_name: str = "input",
                opset: int = 17) -> Path:
    """A single-input single-output float32 ONNX with a dynamic batch dimension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model.eval(), (example,), str(path), input_names=[input_name], output_names=["output"],
                              dynamic_axes={input_name: {0: "batch"}, "output": {0: "batch"}},
                              opset_version=opset, dynamo=False)
    except Exception as e:
        raise SplitError(f"ONNX export of {type(model).__name__} failed: {e}") from e
    return path


def resplit(model: nn.Module, like: Manifest, out: Path) -> Any:
    """Split a changed model (e.g. pruned) into a bundle at ``out``, the same way the
    original bundle was made."""
    from collab.split import split_model

    return split_model(model, input_shape=tuple(like.input_shape), out=out, model_name=like.model_name)
