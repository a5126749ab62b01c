"""Resolve a ``collab split`` SPEC (``pkg.module:factory`` or ``path/file.py:factory``)
into an eval-mode module, with optional weights."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from collab.errors import ConfigError


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(p) for p in text.split(","))
    except ValueError:
        raise ConfigError(
            f"--input-shape {text!r}: expected comma-separated integers like 1,3,32,32"
        ) from None
    if not shape or any(d < 1 for d in shape):
        raise ConfigError(f"--input-shape {text!r}: every dimension must be a positive integer")
    return shape


def _import(target: str) -> ModuleType:
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target)
        if not path.is_file():
            raise ConfigError(f"factory file {path} does not exist")
        modname = "collab_user_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
        spec = importlib.util.spec_from_file_location(modname, path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"cannot load {path} as a Python module")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[modname] = mod
        try:
            spec.loader.exec_module(mod)
        except Exception as e:
            raise ConfigError(f"importing {path} failed: {type(e).__name__}: {e}") from e
        return mod
    try:
        return importlib.import_module(target)
    except ImportError as e:
        raise ConfigError(f"cannot import module {target!r}: {e}") from e
    except Exception as e:
        raise ConfigError(f"importing {target!r} failed: {type(e).__name__}: {e}") from e


def load_factory_model(spec: str, weights: Path | None = None) -> nn.Module:
    target, sep, func_name = spec.rpartition(":")
    if not sep or not target or not func_name.isidentifier():
        raise ConfigError(
            f"model spec {spec!r}: expected 'package.module:factory' or 'path/to/file.py:factory'"
        )
    mod = _import(target)
    factory = getattr(mod, func_name, None)
    if factory is None:
        raise ConfigError(f"unknown factory {func_name!r} in {target}")
    if not callable(factory):
        raise ConfigError(f"{spec} is not callable")
    try:
        model = factory()
    except Exception as e:
        raise ConfigError(f"factory {spec} raised {type(e).__name__}: {e}") from e
    if not isinstance(model, nn.Module):
        raise ConfigError(f"factory {spec} returned {type(model).__name__}, not a torch.nn.Module")
    if weights is not None:
        load_weights(model, weights)
    return model.eval()


def load_weights(model: nn.Module, path: Path) -> None:
    if not path.is_file():
        raise ConfigError(f"weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConfigError(f"cannot read weights {path}: {type(e).__name__}: {e}") from e
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ConfigError(f"weights {path} do not hold a state_dict")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ConfigError(f"weights {path} do not fit the model: {e}") from e
