"""Typed configs: frozen dataclasses loaded from presets or YAML, with ``key=value`` overrides.

Every component (tokenizers, pipeline, corpus, trainer) declares its config as a dataclass and a
``PRESETS`` mapping of preset name -> zero-argument factory. :func:`load_config` resolves

    preset name | path to a YAML file | mapping   +   ["a.b=3", "name=x", ...]

into a validated instance. Validation happens at load: unknown keys, wrong types and values the
dataclass's ``validate()`` rejects all raise :class:`ConfigError` naming the offending key.

YAML is read with ``yaml.safe_load`` only. A YAML file may name a preset to start from with the
reserved top-level key ``preset:``; its other keys override that preset.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from videopoet.schemas.errors import ConfigError

T = TypeVar("T")

__all__ = [
    "ConfigError",
    "apply_overrides",
    "config_fingerprint",
    "from_dict",
    "load_config",
    "parse_override",
    "to_dict",
]


_EXPONENT_ONLY = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def to_dict(cfg: Any) -> Any:
    """Plain JSON-able view of a config (tuples become lists)."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, Mapping):
        return {str(k): to_dict(v) for k, v in cfg.items()}
    return cfg


def config_fingerprint(cfg: Any) -> str:
    """sha256 over the canonical JSON of a config: equal configs have equal fingerprints."""
    blob = json.dumps(to_dict(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it converted (lists -> tuples etc.)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: {value!r} does not match {_type_name(tp)}")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not one of {list(allowed)}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, where=where)
    if origin in (tuple, list, Sequence, typing.Sequence):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            items = [_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))]
        else:
            inner = args[0] if args else Any
            items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is not list else items
    if origin in (dict, Mapping, typing.Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = get_args(tp) or (Any, Any)
        return {_coerce(k, kt, f"{where}.<key>"): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _EXPONENT_ONLY.fullmatch(value.strip()):
            return float(value)  # 1e-4: YAML 1.1 reads a float without a dot as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{where}: unsupported value {value!r} for {_type_name(tp)}")


def from_dict(cls: type[T], data: Mapping[str, Any], *, where: str = "") -> T:
    """Build and validate a config dataclass from a mapping. Unknown keys are errors."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown config key {prefix}{unknown[0]!s} for {cls.__name__} (known: {', '.join(sorted(fields))})"
        )
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(value, hints[name], f"{where}.{name}" if where else name)
    try:
        obj = cls(**kwargs)
    except TypeError as e:  # a missing required field
        raise ConfigError(f"{where or cls.__name__}: {e}") from None
    _validate(obj, where)
    return obj


def _validate(obj: Any, where: str) -> None:
    for f in dataclasses.fields(obj):
        child = getattr(obj, f.name)
        if dataclasses.is_dataclass(child) and not isinstance(child, type):
            _validate(child, f"{where}.{f.name}" if where else f.name)
    check = getattr(obj, "validate", None)
    if callable(check):
        try:
            check()
        except (ValueError, AssertionError) as e:
            raise ConfigError(f"{where + ': ' if where else ''}{e}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"model.layers=4"`` -> (["model", "layers"], 4). Values are parsed as YAML scalars/lists."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part.isidentifier() for part in key.split(".")):
        raise ConfigError(f"override {text!r}: bad key {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def _set_path(tree: dict, path: list[str], value: Any, cls: type) -> None:
    node = tree
    for i, part in enumerate(path[:-1]):
        if part not in node or not isinstance(node[part], dict):
            raise ConfigError(f"unknown config key {'.'.join(path[: i + 1])} for {cls.__name__}")
        node = node[part]
    if path[-1] not in node:
        raise ConfigError(f"unknown config key {'.'.join(path)} for {cls.__name__}")
    node[path[-1]] = value


def apply_overrides(cfg: T, overrides: Sequence[str]) -> T:
    """Return a new validated config with dotted ``key=value`` overrides applied."""
    tree = to_dict(cfg)
    for text in overrides:
        path, value = parse_override(text)
        _set_path(tree, path, value, type(cfg))
    return from_dict(type(cfg), tree)


def load_config(
    cls: type[T],
    source: str | Mapping[str, Any] | T | None,
    overrides: Sequence[str] = (),
    presets: Mapping[str, Callable[[], T]] | None = None,
    default_preset: str = "small",
) -> T:
    """Resolve a preset name, a YAML path/URI, a mapping or an instance, then apply overrides."""
    presets = presets or {}
    if source is None:
        source = default_preset
    if isinstance(source, cls):
        cfg = source
    elif isinstance(source, Mapping):
        cfg = from_dict(cls, source)
    elif isinstance(source, str) and source in presets:
        cfg = presets[source]()
    elif isinstance(source, str) and (source.endswith((".yaml", ".yml")) or "/" in source):
        cfg = _load_yaml(cls, source, presets)
    else:
        raise ConfigError(
            f"unknown preset {source!r} for {cls.__name__} (presets: {', '.join(presets) or 'none'}; "
            "or give a .yaml path)"
        )
    return apply_overrides(cfg, overrides) if overrides else cfg


def _load_yaml(cls: type[T], path: str, presets: Mapping[str, Callable[[], T]]) -> T:
    import fsspec

    try:
        with fsspec.open(path, "rt", encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at top level")
    base_name = data.pop("preset", None)
    if base_name is None:
        return from_dict(cls, data)
    if base_name not in presets:
        raise ConfigError(f"config file {path}: unknown preset {base_name!r}")
    tree = _deep_merge(to_dict(presets[base_name]()), data)
    return from_dict(cls, tree)


def _deep_merge(base: dict, update: Mapping[str, Any]) -> dict:
    """Merge ``update`` into ``base``; unknown dataclass keys are caught later by from_dict."""
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def dump_yaml(cfg: Any) -> str:
    """YAML text of a config, loadable back with :func:`load_config`."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
