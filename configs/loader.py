"""Load YAML configs with `base:` inheritance and dotted overrides into the typed schema."""
import dataclasses
import difflib
import math
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


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML would keep the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` keys may be overridden by the mapping's own keys
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:
                continue  # an unhashable key: the base class raises its own error for it
            if duplicate:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}; keep only one of them",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(path, error=ConfigError, what="config file", included_by=None):
    """The parsed YAML at `path` (None for an empty file); a missing, unreadable or malformed file raises
    `error` in one line, with file:line:column (1-based) for syntax errors. `included_by`: the file whose
    `base:` names `path`, named in the error."""
    via = _included(included_by)
    if os.path.isdir(path):
        raise error(f"{path} is a folder, not a {what}{via}; name the YAML file in it")
    if not os.path.isfile(path):
        raise error(f"{what} not found: {path}{via}")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise error(f"cannot read {what} {path}{via}: {e.strerror}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise error(f"{path}:{line}: not UTF-8 text (byte {data[e.start]:#04x}); save the {what} as UTF-8{via}") \
            from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        raise error(f"{_yaml_error_where(path, text, e)}: not valid YAML: {_yaml_problem(e)}{via}") from None


def _included(by):
    return f" (the base: of {by})" if by else ""


def _yaml_error_where(path, text, e):
    """path:line:column of a YAML error (1-based, as editors count), or path:line, or the bare path."""
    mark = getattr(e, "problem_mark", None)
    if mark is not None:
        return f"{path}:{mark.line + 1}:{mark.column + 1}"
    if isinstance(e, yaml.reader.ReaderError):  # a character YAML does not allow, e.g. a control character
        line = text.count("\n", 0, e.position) + 1
        return f"{path}:{line}"
    return path


def _yaml_problem(e):
    if isinstance(e, yaml.MarkedYAMLError) and e.problem:
        context = e.context_mark
        return e.problem + (f" ({e.context}, line {context.line + 1})" if e.context and context else "")
    return str(e).splitlines()[0]


def _read_yaml(path, included_by):
    data = read_yaml(path, included_by=included_by)
    via = _included(included_by)
    if not data:
        raise ConfigError(f"{path}: the config file is empty{via}; a config sets sections such as model:, norm:, "
                          f"batch:, optim: or inherits them with base: other.yaml")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of sections, got {type(data).__name__}{via}")
    return data


def _read_with_bases(path, chain):
    if path in chain:
        raise ConfigError(f"config inheritance cycle: {' -> '.join(chain + (path,))}")
    data = _read_yaml(path, chain[-1] if chain else None)
    if "base" not in data:
        return data
    base = data.pop("base")
    if not isinstance(base, str) or not base.strip():
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


def _as_float(value):
    """float(value), inf for an int beyond the float range, None for text that is no number.

    PyYAML reads 1e-4 (no dot) as a string, so numeric text is a number here."""
    try:
        return float(value)
    except ValueError:
        return None
    except OverflowError:
        return math.inf


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
    if tp is float and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        number = _as_float(value)
        if number is not None and not math.isfinite(number):
            raise ConfigError(f"'{path}' must be a finite number, got {value!r}")
        if number is not None:
            return number
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
