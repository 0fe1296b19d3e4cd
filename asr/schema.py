"""Reading plain mappings (a YAML config, the configs a checkpoint stores) strictly into dataclasses:
an unknown key or a value of the wrong type is an error, and each dataclass then checks its own values."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from asr.errors import ConfigError


def from_dict(cls: type, values: Any, source: str, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and values of the wrong type."""
    where = prefix.rstrip(".") or "the top level"
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: {where} must be a mapping")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{source}: unknown key '{prefix}{key}'")
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            kwargs[key] = from_dict(kind, value, source, f"{prefix}{key}.")
        elif not _matches(value, kind):
            raise ConfigError(f"{source}: '{prefix}{key}' must be {_describe(kind)}, not {value!r}")
        else:
            kwargs[key] = float(value) if kind is float else value
    config = cls(**kwargs)
    for key, problem in config.problems() if hasattr(config, "problems") else ():
        raise ConfigError(f"{source}: '{prefix}{key}' {problem}")
    return config


def _matches(value: Any, kind: Any) -> bool:
    if typing.get_origin(kind) is list:
        (item,) = typing.get_args(kind)
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    if kind is float:  # YAML 1.1 reads 3e-4 (no dot) as a string
        return (isinstance(value, (int, float)) and not isinstance(value, bool)) or _parses_as_float(value)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _parses_as_float(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return isinstance(value, str)


def _describe(kind: Any, plural: bool = False) -> str:
    if typing.get_origin(kind) is list:
        return ("lists" if plural else "a list") + f" of {_describe(typing.get_args(kind)[0], plural=True)}"
    singular, many = {int: ("an integer", "integers"), float: ("a number", "numbers"), str: ("a string", "strings"),
                      bool: ("true or false", "booleans")}[kind]
    return many if plural else singular
