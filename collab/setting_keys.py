"""File sections whose keys are a config dataclass's settings (collab.settings).

A scenario's ``edges:``/``cloud:`` sections (collab.scenario.schema) and a deployment's
``settings:`` (collab.deploy.values) take the settings by name, typed and bounded by the
fields themselves, so no default or limit is copied into a file schema.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, StrictBool, StrictFloat, StrictInt, StrictStr

from collab.settings import Setting

_STRICT: dict[type, Any] = {
    bool: StrictBool,
    int: StrictInt,
    float: StrictFloat,
    str: StrictStr,
    Path: Path,
    tuple: tuple[StrictStr, ...],
}
C = TypeVar("C")


def _within(s: Setting) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        why = s.out_of_bounds(value)
        if why is not None:
            raise ValueError(f"{why}, got {value}")
        return value

    return check


def setting_keys(items: Sequence[Setting]) -> Callable[[type[C]], type[C]]:
    """Add one key per setting to a file section: the setting's kind, never coerced, within
    the field's bounds; absent (or null) means the config's own default, so none is copied."""

    def add(cls: type[C]) -> type[C]:
        for s in items:
            cls.__annotations__[s.name] = Annotated[
                _STRICT[s.kind] | None, AfterValidator(_within(s))
            ]
            setattr(cls, s.name, None)
        return cls

    return add


def given(section: object, items: Sequence[Setting]) -> dict[str, Any]:
    """The settings a section states (its non-null keys), by field name."""
    return {s.name: getattr(section, s.name) for s in items if getattr(section, s.name) is not None}
