"""Strict YAML configuration files: pydantic validation, errors that name file, field and line.

A config type is a frozen keyword-only dataclass declared with :func:`config_dataclass` (a
pydantic dataclass: unknown keys are errors, field constraints live in the annotations).
:func:`load_yaml` parses a file once into plain data plus the line of every mapping key and
sequence item; :func:`validate` builds the config type from that data and turns every
``pydantic.ValidationError`` into ONE :class:`ConfigError` whose lines read
``file:line: field.path: message``. Constructing a config type in code with bad values
raises :class:`ConfigError` too, so callers only ever catch the project's exception.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import pydantic
import pydantic.dataclasses
import yaml

from collab.errors import ConfigError

if sys.version_info >= (3, 11):
    from typing import dataclass_transform
else:  # pragma: no cover - typing_extensions comes with pydantic
    from typing_extensions import dataclass_transform

T = TypeVar("T")
Place = tuple[str | int, ...]  # in a document: mapping keys and sequence indices

#: no unknown keys; NaN and infinities are never a meaningful setting
_CONFIG = pydantic.ConfigDict(extra="forbid", allow_inf_nan=False)


class FieldError(ConfigError):
    """Raised by a validator or ``__post_init__`` to blame a field below the object being
    checked rather than the object itself: ``FieldError("round.min_clients", ...)`` from the
    top-level config, or ``FieldError(("segments", 2, "up_mbps"), ...)``. A ConfigError, so
    a ValueError to pydantic (which reports it) and in the project's error tree."""

    def __init__(self, path: str | Place, message: str) -> None:
        super().__init__(message)
        self.path: Place = tuple(path.split(".")) if isinstance(path, str) else path


@dataclass_transform(
    kw_only_default=True, frozen_default=True, field_specifiers=(dataclasses.field, pydantic.Field)
)
def config_dataclass(cls: type[T]) -> type[T]:
    """``cls`` as a frozen, keyword-only pydantic dataclass that rejects unknown keys.

    It stays a real dataclass (``dataclasses.replace``/``asdict`` work); a construction that
    fails validation, e.g. ``replace(cfg, broker="tcp://x")``, raises :class:`ConfigError`.
    """
    pcls = pydantic.dataclasses.dataclass(frozen=True, kw_only=True, config=_CONFIG)(cls)
    init = pcls.__init__

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            init(self, *args, **kwargs)
        except pydantic.ValidationError as e:
            raise ConfigError(_describe(e, pcls, kwargs, pcls.__name__, {})) from None

    pcls.__init__ = __init__  # type: ignore[method-assign]
    return typing.cast("type[T]", pcls)


def load_yaml(text: str, source: str) -> tuple[Any, dict[Place, int]]:
    """The document's data and the 1-based line of every mapping key / sequence item in it
    (``()`` is the document itself); one parse, with the safe loader."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(
            f"{source}{where}: invalid YAML: {getattr(e, 'problem', None) or e}"
        ) from None
    finally:
        loader.dispose()
    lines: dict[Place, int] = {(): node.start_mark.line + 1 if node is not None else 1}
    _record_lines(node, (), lines, set())
    return data, lines


def _record_lines(
    node: yaml.Node | None, path: Place, lines: dict[Place, int], seen: set[int]
) -> None:
    if node is None or id(node) in seen:  # an alias cycle
        return
    seen = seen | {id(node)}
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:  # later keys win, as in the constructed mapping
            here = (*path, str(k.value))
            lines[here] = k.start_mark.line + 1
            _record_lines(v, here, lines, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            here = (*path, i)
            lines[here] = v.start_mark.line + 1
            _record_lines(v, here, lines, seen)


def validate(
    tp: type[T],
    data: Any,
    *,
    source: str = "",
    lines: Mapping[Place, int] | None = None,
    context: dict[str, Any] | None = None,
) -> T:
    """``data`` (from :func:`load_yaml` or built in code) as a ``tp``; ``context`` reaches
    validators as ``info.context`` (e.g. the directory relative paths are resolved in)."""
    try:
        return pydantic.TypeAdapter(tp).validate_python(data, context=context)
    except pydantic.ValidationError as e:
        raise ConfigError(_describe(e, tp, data, source, lines or {})) from None


# --- pydantic errors -> "file:line: field: message" ---------------------------------------
#: error types that mean "wrong kind of value": what was expected
_EXPECTED = {
    "int_type": "an integer",
    "float_type": "a number",
    "finite_number": "finite",
    "bool_type": "true or false",
    "string_type": "a string",
    "path_type": "a path",
    "list_type": "a list",
    "tuple_type": "a list",
    "dataclass_type": "a mapping",
}
_BOUNDS = {
    "greater_than": ">",
    "greater_than_equal": ">=",
    "less_than": "<",
    "less_than_equal": "<=",
}


def _describe(
    err: pydantic.ValidationError, tp: Any, data: Any, source: str, lines: Mapping[Place, int]
) -> str:
    """One line per field in error, in the order pydantic found them."""
    by_path: dict[Place, list[tuple[str, str | None]]] = {}
    for e in err.errors():
        path = _place(e["loc"], data, e["type"] == "missing")
        cause = (e.get("ctx") or {}).get("error")
        if isinstance(cause, FieldError):
            path = (*path, *cause.path)
        if e["type"] in ("too_short", "too_long") and any(
            len(o["loc"]) > len(e["loc"]) and o["loc"][: len(e["loc"])] == e["loc"]
            for o in err.errors()
        ):
            continue  # pydantic counts only the valid items: the invalid one is the error
        by_path.setdefault(path, []).append(_message(e, tp, path))
    out = []
    for path, msgs in by_path.items():
        line = next((lines[path[:i]] for i in range(len(path), -1, -1) if path[:i] in lines), None)
        where = f"{source}:{line}: " if source and line else f"{source}: " if source else ""
        out.append(f"{where}{_dotted(path)}: {_join(msgs)}")
    return "\n".join(out)


def _place(loc: tuple[str | int, ...], data: Any, missing: bool) -> Place:
    """The error's place in the document: ``loc`` without the union members pydantic names
    when a value matched none of them (``federated.list[str]``), which are no place in a file."""
    path: list[str | int] = []
    for i, c in enumerate(loc):
        if isinstance(data, Mapping):
            if c in data or (missing and i == len(loc) - 1):
                path.append(str(c))
                data = data.get(c)
        elif isinstance(data, Sequence) and not isinstance(data, str) and isinstance(c, int):
            path.append(c)
            data = data[c] if c < len(data) else None
    return tuple(path)


def _message(e: Any, tp: Any, path: Place) -> tuple[str, str | None]:
    """(message, None), or (what was expected, the value given) for a wrong kind or range."""
    kind, ctx, value = e["type"], e.get("ctx") or {}, e.get("input")
    if kind == "missing":
        return "is required", None
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        allowed = _fields_at(tp, path[:-1])
        return f"unknown key {path[-1]!r}" + (
            f" (allowed: {', '.join(allowed)})" if allowed else ""
        ), None
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error") or e["msg"]), None
    if kind in _EXPECTED:
        expected = _EXPECTED[kind]
        return expected, type(value).__name__ if expected == "a mapping" else _short(value)
    if kind in _BOUNDS:
        bound = next(v for k, v in ctx.items() if k in ("gt", "ge", "lt", "le"))
        return f"{_BOUNDS[kind]} {bound:g}", _short(value)
    if kind == "literal_error":
        return f"one of {ctx['expected']}", _short(value)
    if kind == "too_short":
        return f"a list of at least {ctx['min_length']} item(s)", _short(value)
    if kind == "too_long":
        return f"a list of at most {ctx['max_length']} item(s)", _short(value)
    if kind == "string_pattern_mismatch":
        return f"a string matching {ctx['pattern']}", _short(value)
    return str(e["msg"]), None


def _join(msgs: list[tuple[str, str | None]]) -> str:
    """The messages about one field; a union's alternatives read "must be A or B, got X"."""
    if all(got is not None for _, got in msgs):
        return f"must be {' or '.join(dict.fromkeys(t for t, _ in msgs))}, got {msgs[0][1]}"
    return "; ".join(
        dict.fromkeys(t if got is None else f"must be {t}, got {got}" for t, got in msgs)
    )


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def _dotted(path: Place) -> str:
    return (
        "".join(
            f"[{p}]" if isinstance(p, int) else (f".{p}" if i else p) for i, p in enumerate(path)
        )
        or "<top>"
    )


def _fields_at(tp: Any, path: Place) -> list[str]:
    """The keys the config type accepts at ``path`` (for "unknown key" messages)."""
    for p in path:
        tp = _config_member(tp)
        if dataclasses.is_dataclass(tp):
            tp = typing.get_type_hints(tp).get(str(p))
        else:
            args = [a for a in typing.get_args(tp) if a is not Ellipsis]
            tp = args[0] if args else None
    tp = _config_member(tp)
    return [f.name for f in dataclasses.fields(tp)] if dataclasses.is_dataclass(tp) else []


def _config_member(tp: Any) -> Any:
    """The config type in ``X | None`` (or any union); other types unchanged."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
        return members[0] if members else tp
    return tp


__all__ = ["FieldError", "config_dataclass", "load_yaml", "validate"]
