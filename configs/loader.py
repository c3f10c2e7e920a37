"""Load YAML configs with `base:` inheritance and dotted overrides into the typed schema."""
import dataclasses
import difflib
import os
import typing

import yaml

from .schema import Config


class ConfigError(ValueError):
    """A config problem, with the key path and how to fix it in the message."""


def load_config(path, overrides=()):
    """Read `path` (following `base:` chains; None: the schema defaults), apply `key.sub=value` overrides,
    validate, return a Config."""
    raw = _read_with_bases(os.path.abspath(path), ()) if path is not None else {}
    for item in overrides:
        _apply_override(raw, item)
    return from_dict(Config, raw)


def read_yaml(path, error=ConfigError, what="config file"):
    """The parsed YAML at `path` (None for an empty file); a missing or malformed file raises `error` in one line."""
    if not os.path.isfile(path):
        raise error(f"{what} not found: {path}")
    with open(path) as f:
        try:
            return yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise error(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None


def _read_yaml(path):
    data = read_yaml(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of sections, got {type(data).__name__}")
    return data


def _read_with_bases(path, chain):
    if path in chain:
        raise ConfigError(f"config inheritance cycle: {' -> '.join(chain + (path,))}")
    data = _read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: 'base' must be a path to another config, got {base!r}")
    parent = _read_with_bases(os.path.normpath(os.path.join(os.path.dirname(path), base)), chain + (path,))
    return _merge(parent, data)


def _merge(base, child):
    """Deep merge: mappings merge key by key, anything else (lists included) is replaced."""
    out = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _apply_override(raw, item):
    if "=" not in item:
        raise ConfigError(f"override '{item}' must look like section.key=value (e.g. optim.lr=0.2)")
    dotted, text = item.split("=", 1)
    keys = dotted.strip().split(".")
    if not all(keys):
        raise ConfigError(f"override '{item}': malformed key '{dotted}'")
    node = raw
    for depth, key in enumerate(keys[:-1]):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override '{item}': '{'.'.join(keys[:depth + 1])}' is not a section")
        node = child
    try:
        node[keys[-1]] = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        raise ConfigError(f"override '{item}': the value is not valid YAML; quote it or fix the brackets") from None


def _type_name(tp):
    if typing.get_origin(tp) is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if typing.get_origin(tp) is typing.Union:
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    return tp.__name__


def _convert(value, tp, path):
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"'{path}' must be a section (mapping), got {value!r}")
        return from_dict(tp, value, path)
    if origin is typing.Union:
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], path)
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value in choices and type(value) in {type(c) for c in choices}:
            return value
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"'{path}' must be {_type_name(tp)}, got {value!r}{hint}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"'{path}' must be a {_type_name(tp)}, got {value!r}")
        return [_convert(v, typing.get_args(tp)[0], f"{path}[{i}]") for i, v in enumerate(value)]
    if tp is float and isinstance(value, str):
        try:  # PyYAML reads 1e-4 (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"'{path}' must be {_type_name(tp)}, got {type(value).__name__} {value!r}")


_LIMITS = {"gt": (lambda v, b: v > b, ">"), "ge": (lambda v, b: v >= b, ">="),
           "lt": (lambda v, b: v < b, "<"), "le": (lambda v, b: v <= b, "<=")}


def from_dict(cls, data, prefix=""):
    """Build dataclass `cls` from a mapping, rejecting unknown keys, wrong types and out-of-range values."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            where = f"{prefix}." if prefix else ""
            hint = f"; did you mean '{where}{close[0]}'?" if close else f"; valid keys: {', '.join(fields)}"
            raise ConfigError(f"unknown config key '{path}'{hint}")
        value = _convert(value, hints[key], path)
        for name, bound in fields[key].metadata.items():
            ok, symbol = _LIMITS[name]
            if value is not None and not ok(value, bound):
                raise ConfigError(f"'{path}' must be {symbol} {bound}, got {value!r}")
        kwargs[key] = value
    obj = cls(**kwargs)
    for path, message in (obj.check() if hasattr(obj, "check") else ()):
        raise ConfigError(f"'{path}' {message}")
    return obj


def to_dict(cfg):
    """Plain nested dict of a config (for saving the resolved config next to a run)."""
    return dataclasses.asdict(cfg)
