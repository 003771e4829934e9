"""Helpers for the frozen config dataclasses every algorithm declares.

Validation lives in each config's ``__post_init__`` so a bad value is refused wherever a config
is built (CLI, tests, resume), with one sentence naming the flag, the value and what is allowed.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any

from lab.errors import LabError


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def require(condition: bool, message: str) -> None:
    """Raise a LabError with ``message`` unless ``condition`` holds."""
    if not condition:
        raise LabError(message)


def positive(config: Any, *names: str) -> None:
    """Each named field must be a finite number > 0."""
    for name in names:
        value = getattr(config, name)
        require(value is not None and math.isfinite(value) and value > 0,
                f"{_flag(name)} must be > 0, got {value}.")


def non_negative(config: Any, *names: str) -> None:
    """Each named field must be a finite number >= 0."""
    for name in names:
        value = getattr(config, name)
        require(value is not None and math.isfinite(value) and value >= 0,
                f"{_flag(name)} must be >= 0, got {value}.")


def in_range(config: Any, name: str, low: float, high: float) -> None:
    """The named field must lie in the closed interval [low, high]."""
    value = getattr(config, name)
    require(value is not None and low <= value <= high,
            f"{_flag(name)} must be in [{low}, {high}], got {value}.")


def one_of(config: Any, name: str, allowed: typing.Iterable[str]) -> None:
    """The named field must be one of ``allowed``."""
    allowed = list(allowed)
    value = getattr(config, name)
    require(value in allowed, f"{_flag(name)} must be one of {', '.join(map(str, allowed))}; got {value!r}.")


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (possibly nested) config dataclass."""
    def convert(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (tuple, list)):
            return [convert(v) for v in value]
        if isinstance(value, Path):
            return str(value)
        return value
    return convert(config)


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a config dataclass from ``to_dict`` output (tuples, paths and nested configs restored).

    Unknown keys are refused, so a run saved by a different version of an algorithm fails clearly.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise LabError(f"saved config has fields {sorted(unknown)} that {cls.__name__} does not know; "
                       "was the run made by another version of the lab?")
    kwargs = {name: _restore(hints[name], value, name) for name, value in data.items()}
    return cls(**kwargs)


_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string", Path: "a path"}
_FITS = {bool: lambda v: type(v) is bool, int: lambda v: type(v) is int, float: lambda v: type(v) in (int, float),
         str: lambda v: isinstance(v, str), Path: lambda v: isinstance(v, (str, Path))}


def _restore(hint: Any, value: Any, name: str) -> Any:
    """``value`` as the field's type; a value of another type is one sentence naming the field."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if value is None:
        return None
    if dataclasses.is_dataclass(hint):
        _require(isinstance(value, dict), name, "a table of fields", value)
        return from_dict(hint, value)
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        return _restore(non_none[0], value, name) if len(non_none) == 1 else value
    if origin is typing.Literal:
        if value not in args:
            raise LabError(f"{name} must be one of {', '.join(map(repr, args))}; got {value!r}.")
        return value
    if origin is tuple:
        _require(isinstance(value, (list, tuple)), name, "a list", value)
        inner = args[0] if args else Any
        return tuple(_restore(inner, v, name) for v in value)
    if hint in _KINDS:
        _require(_FITS[hint](value), name, _KINDS[hint], value)
        return float(value) if hint is float else Path(value) if hint is Path else value
    return value


def _require(fits: bool, name: str, kind: str, value: Any) -> None:
    if not fits:
        shown = repr(value) if len(repr(value)) <= 60 else f"a {type(value).__name__}"
        raise LabError(f"{name} must be {kind}; got {shown}.")


def differences(old: Any, new: Any) -> list[str]:
    """Human-readable ``field: old -> new`` lines between two configs of the same class."""
    a, b = to_dict(old), to_dict(new)
    return [f"{_flag(k)} {a[k]!r} -> {b.get(k)!r}" for k in a if a[k] != b.get(k)]
