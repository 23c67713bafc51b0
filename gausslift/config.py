"""Dataclass configs with YAML in and out, and ``key=value`` overrides.

Every run writes its resolved config next to its outputs (:func:`save_config`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from gausslift.errors import InputError
from gausslift.ioutil import atomic_write_text

T = TypeVar("T")


def to_dict(cfg: Any) -> dict:
    """A plain, YAML-safe dict of a (nested) dataclass."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            v = to_dict(v)
        elif isinstance(v, Path):
            v = str(v)
        elif isinstance(v, tuple):
            v = list(v)
        out[f.name] = v
    return out


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, where) if len(args) == 1 else value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise InputError(None, f"config key '{where}' must be a mapping, got {value!r}")
        return from_dict(tp, value, prefix=where + ".")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise InputError(None, f"config key '{where}' must be a list, got {value!r}")
        return list(value) if origin is list else tuple(value)
    if tp is bool:
        if isinstance(value, str):
            low = value.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise InputError(None, f"config key '{where}' must be a boolean, got {value!r}")
        return bool(value)
    if tp in (int, float, str):
        try:
            if tp is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return tp(value)
        except (TypeError, ValueError):
            raise InputError(None, f"config key '{where}' must be {tp.__name__}, got {value!r}") from None
    if tp is Path:
        return Path(value)
    return value


def from_dict(cls: type[T], data: dict, prefix: str = "") -> T:
    """Build dataclass ``cls`` from a dict; unknown keys are an error that names them."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise InputError(None, f"unknown config key(s): {', '.join(prefix + u for u in unknown)}")
    kwargs = {k: _coerce(hints[k], v, prefix + k) for k, v in data.items()}
    base = cls()
    for k, v in kwargs.items():
        setattr(base, k, v)
    return base


def apply_overrides(cfg: T, overrides: list[str]) -> T:
    """Apply ``a.b=value`` strings (value parsed as YAML) to a dataclass config, returning a new one."""
    data = to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise InputError(None, f"override '{item}' is not of the form key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise InputError(None, f"unknown config key '{key}'")
            node = node[p]
        if parts[-1] not in node:
            raise InputError(None, f"unknown config key '{key}'")
        node[parts[-1]] = yaml.safe_load(raw)
    return from_dict(type(cfg), data)


def load_config(cls: type[T], path: str | Path) -> T:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as e:
        raise InputError(path, f"cannot read config: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise InputError(path, f"not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise InputError(path, "config must be a YAML mapping")
    try:
        return from_dict(cls, data)
    except InputError as e:
        raise InputError(path, e.problem) from None


def config_text(cfg: Any) -> str:
    """The YAML that :func:`save_config` writes."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def save_config(cfg: Any, path: str | Path) -> None:
    atomic_write_text(path, config_text(cfg))
