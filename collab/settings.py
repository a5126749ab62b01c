"""Config dataclasses as the one place of every setting.

A field declared with :func:`setting` carries its default, help text and bounds. The
daemons' CLI flags (:func:`add_flags`, :func:`from_args`), the scenario files'
``edges:``/``cloud:`` keys (collab.scenario.schema) and the dataclass's own validation
(:func:`check_bounds`) all read them from the field, so no default or limit is written
twice and none can disagree with another.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collab.errors import ConfigError

_KINDS = (bool, int, float, str, Path, tuple)


def setting(
    default: Any,
    *,
    help: str,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    flag: str | None = None,
    metavar: str | None = None,
) -> Any:
    """A dataclass field with its default, help text and bounds (``lo``, exclusive when
    ``lo_open``; ``hi``). ``flag`` overrides the CLI flag derived from the field name."""
    return dataclasses.field(
        default=default,
        metadata={
            "help": help,
            "lo": lo,
            "hi": hi,
            "lo_open": lo_open,
            "flag": flag,
            "metavar": metavar,
        },
    )


def comma_list(text: str) -> tuple[str, ...]:
    """``"a, b,"`` -> ``("a", "b")``: how an address list is written in a flag."""
    return tuple(a.strip() for a in text.split(",") if a.strip())


@dataclass(frozen=True, kw_only=True)
class Setting:
    """One field declared with :func:`setting`: a CLI flag, a scenario key."""

    name: str
    kind: type  # bool | int | float | str | Path | tuple (of str)
    optional: bool  # None is a valid value
    default: Any
    help: str
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    flag: str = ""
    metavar: str | None = None

    def out_of_bounds(self, value: Any) -> str | None:
        """Why ``value`` breaks the bounds, or None."""
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return f"must be {'>' if self.lo_open else '>='} {self.lo}"
        if self.hi is not None and value > self.hi:
            return f"must be <= {self.hi}"
        return None


def _kind(tp: Any, where: str) -> tuple[type, bool]:
    args = typing.get_args(tp)
    optional = type(None) in args
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        tp = rest[0] if len(rest) == 1 else tp
    if typing.get_origin(tp) is tuple and typing.get_args(tp) == (str, ...):
        return tuple, optional
    if tp in _KINDS:
        return tp, optional
    raise TypeError(
        f"{where}: a setting is bool, int, float, str, Path or tuple[str, ...] (or None), not {tp}"
    )


_BY_CLASS: dict[type, tuple[Setting, ...]] = {}


def _settings(cls: type) -> tuple[Setting, ...]:
    done = _BY_CLASS.get(cls)
    if done is not None:
        return done
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        m = f.metadata
        if "help" not in m:
            continue
        kind, optional = _kind(hints[f.name], f"{cls.__name__}.{f.name}")
        out.append(
            Setting(
                name=f.name,
                kind=kind,
                optional=optional,
                default=f.default,
                help=m["help"],
                lo=m["lo"],
                hi=m["hi"],
                lo_open=m["lo_open"],
                flag=m["flag"] or "--" + f.name.replace("_", "-"),
                metavar=m["metavar"],
            )
        )
    _BY_CLASS[cls] = tuple(out)
    return _BY_CLASS[cls]


def settings(cls: type, *, skip: Collection[str] = ()) -> list[Setting]:
    """The fields of ``cls`` declared with :func:`setting`, in order, minus ``skip``."""
    return [s for s in _settings(cls) if s.name not in skip]


def check_bounds(obj: object) -> None:
    """ConfigError naming the first setting of ``obj`` outside its bounds."""
    for s in _settings(type(obj)):
        value = getattr(obj, s.name)
        why = s.out_of_bounds(value)
        if why is not None:
            raise ConfigError(f"{s.name} {why} (got {value})")


def add_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, items: Iterable[Setting]
) -> None:
    """One flag per setting, its default the field's default (bools: ``--x/--no-x``)."""
    for s in items:
        text = s.help.replace("%", "%%") + " (default: %(default)s)"
        if s.kind is bool:
            parser.add_argument(
                s.flag,
                dest=s.name,
                default=s.default,
                help=text,
                action=argparse.BooleanOptionalAction,
            )
            continue
        kind: Any = comma_list if s.kind is tuple else s.kind
        parser.add_argument(
            s.flag, dest=s.name, default=s.default, type=kind, metavar=s.metavar, help=text
        )


def from_args(args: argparse.Namespace, items: Iterable[Setting]) -> dict[str, Any]:
    """The values of the flags :func:`add_flags` added, by field name."""
    return {s.name: getattr(args, s.name) for s in items}


def to_argv(items: Iterable[Setting], values: Mapping[str, Any]) -> list[str]:
    """The flags that set ``values`` (field name -> value; None = leave the default)."""
    out: list[str] = []
    for s in items:
        v = values.get(s.name)
        if v is None:
            continue
        if s.kind is bool:
            out.append(s.flag if v else "--no-" + s.flag[2:])
        else:
            out += [s.flag, ",".join(v) if s.kind is tuple else str(v)]
    return out
