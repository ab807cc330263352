"""Build typed configs from a preset name or YAML file plus overrides.

A preset is a YAML file in ``configs/presets/`` (or any path) that names a ``base`` preset and
overrides some fields. Overrides are strict: an unknown key or a value of the wrong type is an
error that names the key, never a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

from configs.schema import AgentConfig

T = TypeVar("T")
_MAX_BASE_DEPTH = 8


class ConfigError(ValueError):
    """A preset, YAML file or override that does not fit the typed config."""


def list_presets() -> list[str]:
    folder = resources.files("configs").joinpath("presets")
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _read_preset(name_or_path: str) -> dict[str, Any]:
    path = Path(name_or_path)
    if name_or_path.endswith((".yaml", ".yml")) or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file not found: {name_or_path}")
        text = path.read_text()
    else:
        res = resources.files("configs").joinpath("presets", f"{name_or_path}.yaml")
        if not res.is_file():
            raise ConfigError(f"unknown preset {name_or_path!r}; known: {', '.join(list_presets())}")
        text = res.read_text()
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{name_or_path}: top level must be a mapping")
    return data


def _resolve_chain(name_or_path: str) -> tuple[str, list[dict[str, Any]]]:
    """Return the preset's name and its override layers, base first."""
    layers: list[dict[str, Any]] = []
    current: str | None = name_or_path
    seen: set[str] = set()
    while current is not None:
        if current in seen or len(seen) > _MAX_BASE_DEPTH:
            raise ConfigError(f"preset chain loops or is too deep at {current!r}")
        seen.add(current)
        data = _read_preset(current)
        base = data.pop("base", None)
        layers.append(data)
        # No base means the dataclass defaults, which are the default preset.
        current = base
    layers.reverse()
    name = Path(name_or_path).stem
    return name, layers


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], key)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return apply_overrides(tp(), value, prefix=f"{key}.")  # type: ignore[operator]
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        items = [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def apply_overrides(cfg: T, overrides: Mapping[str, Any], prefix: str = "") -> T:
    """Return a copy of dataclass ``cfg`` with nested ``overrides`` applied (strictly typed)."""
    hints = typing.get_type_hints(type(cfg))
    names = {f.name for f in dataclasses.fields(cfg)}  # type: ignore[arg-type]
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in names:
            raise ConfigError(f"unknown config key '{prefix}{key}'; valid: {', '.join(sorted(names))}")
        tp = hints[key]
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current) and isinstance(value, Mapping):
            changes[key] = apply_overrides(current, value, prefix=f"{prefix}{key}.")
        else:
            changes[key] = _coerce(value, tp, f"{prefix}{key}")
    try:
        return dataclasses.replace(cfg, **changes)  # type: ignore[type-var]
    except ConfigError:
        raise
    except ValueError as exc:  # a config's own __post_init__ check: one line naming where
        raise ConfigError(f"{prefix.rstrip('.') or type(cfg).__name__}: {exc}") from None


def parse_set_args(items: Iterable[str]) -> dict[str, Any]:
    """Turn ``["llm.dtype=bfloat16", "seed=3"]`` into a nested dict (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw.strip() else ""
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with another override")
        node[parts[-1]] = value
    return out


def load_config(preset: str = "default", overrides: Iterable[str] | Mapping[str, Any] = ()) -> AgentConfig:
    """Build the config of ``preset`` (a name or a YAML path), then apply ``overrides``."""
    name, layers = _resolve_chain(preset)
    cfg = AgentConfig()
    for layer in layers:
        cfg = apply_overrides(cfg, layer)
    extra = dict(overrides) if isinstance(overrides, Mapping) else parse_set_args(overrides)
    cfg = apply_overrides(cfg, extra)
    return dataclasses.replace(cfg, preset=name)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
