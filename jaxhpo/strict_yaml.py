"""Config text read strictly: YAML and JSON where a key given twice in one mapping is an error
(the parsers otherwise keep the last one silently, so ``train:`` twice lost a section); config
files and ``key.sub=value`` overrides; values checked against a type annotation with one-line
errors naming the field (:class:`ConfigError`). :mod:`jaxhpo.config` builds its typed sections
with these."""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` refusing a key repeated in one mapping."""


def _mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *anchor` merges may repeat keys on purpose
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:  # an unhashable key: construct_mapping says so
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                problem=f"duplicate key {key!r} at line {key_node.start_mark.line + 1}",
                problem_mark=key_node.start_mark,
            )
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` that refuses a duplicate key (``yaml.YAMLError``)."""
    return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass


def _pairs(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise json.JSONDecodeError(f"duplicate key {k!r}", "", 0)
        out[k] = v
    return out


def load_json(text: str) -> Any:
    """``json.loads`` that refuses a duplicate key (``json.JSONDecodeError``)."""
    return json.loads(text, object_pairs_hook=_pairs)


class ConfigError(ValueError):
    """A bad configuration value; the message is one line and starts with the field path."""


_EXP_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def _numbers(value: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` (no dot) as a string; read such strings as numbers."""
    if isinstance(value, str) and _EXP_NUMBER.match(value.strip()):
        return float(value)
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    return value


_CALL = re.compile(r"[A-Za-z_][A-Za-z_0-9]*\s*\(")


def quote_calls(text: str) -> str:
    """``text`` with every shorthand call outside quotes (``loguniform(3e-3, 3e-1)``) quoted,
    so that a YAML flow mapping or list does not split at the comma inside its parentheses:
    ``{lr: loguniform(3e-3, 3e-1)}`` -> ``{lr: "loguniform(3e-3, 3e-1)"}``. A call whose
    parentheses do not close is left as typed (the dimension's parser names it)."""
    out, i, quote = [], 0, None
    while i < len(text):
        c = text[i]
        if quote:
            quote = None if c == quote else quote
        elif c in "'\"":
            quote = c
        else:
            m = _CALL.match(text, i)
            if m and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] in "_.")):
                depth, j = 0, m.end() - 1
                while j < len(text):
                    depth += {"(": 1, ")": -1}.get(text[j], 0)
                    if depth == 0:
                        break
                    j += 1
                if j < len(text):
                    out.append('"' + text[i : j + 1] + '"')
                    i = j + 1
                    continue
        out.append(c)
        i += 1
    return "".join(out)


@dataclasses.dataclass(frozen=True)
class _Text:
    """An override value exactly as typed; parsed as YAML unless the field is a string."""

    raw: str
    key: str

    def parsed(self) -> Any:
        if not self.raw.strip():
            return ""
        try:
            return _numbers(yaml.safe_load(quote_calls(self.raw)))
        except yaml.YAMLError as e:
            raise ConfigError(f"{self.key}: cannot parse value {self.raw!r}: {e.problem}") from None

    def as_text(self) -> str:
        """For string fields: a quoted YAML string loses its quotes, anything else stays as typed
        (so ``task.operation=-`` is ``"-"`` and ``name=2024`` is ``"2024"``)."""
        try:
            v = yaml.safe_load(self.raw)
        except yaml.YAMLError:
            return self.raw
        return v if isinstance(v, str) else self.raw


def _plain(value: Any) -> Any:
    """An override still as typed (a strategy setting not yet checked), parsed as YAML."""
    if isinstance(value, _Text):
        return value.parsed()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _resolve(value: Any) -> Any:
    """Parses every override leaf inside a free-form value (the space mapping)."""
    if isinstance(value, _Text):
        return value.parsed()
    if isinstance(value, dict):
        return {k: _resolve(v) for k, v in value.items()}
    return value


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Checks ``value`` against the annotation ``tp`` (int/float/bool/str, Optional, dict)."""
    origin = typing.get_origin(tp)
    if isinstance(value, _Text):
        args = typing.get_args(tp) if origin in (typing.Union, types.UnionType) else (tp,)
        if type(None) in args and value.raw.strip() in ("None", "none", "null", "~", ""):
            return None
        value = value.as_text() if str in args else value.parsed()
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args and value is None:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError:
                continue
        names = " or ".join("null" if a is type(None) else _type_name(a) for a in args)
        raise ConfigError(f"{where}: expected {names}, got {value!r}")
    if origin is list or tp is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {tp}")


def parse_override(text: str) -> dict[str, Any]:
    """``a.b.c=value`` -> ``{"a": {"b": {"c": value}}}``.

    The value is parsed as YAML when the field is checked, except for string fields, which take
    the text as typed.
    """
    if "=" not in text:
        raise ConfigError(f"{text}: an override must look like key.sub=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"{text}: empty key in override")
    value = _Text(raw, key)
    out: dict[str, Any] = {}
    node = out
    parts = key.split(".")
    # space.<name>... : the rest of the path is inside the free-form space mapping
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def load_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config: file does not exist: {p}")
    if p.is_dir():
        hint = " (a run directory? use RUN_DIR/config.yaml)" if (p / "config.yaml").exists() else ""
        raise ConfigError(f"config: {p} is a folder, not a config file{hint}")
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config: cannot read {p}: {e}") from None
    try:
        data = load_json(text) if p.suffix == ".json" else load_yaml(text)  # no key twice
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        first = str(e).splitlines()[0]
        raise ConfigError(f"config: cannot parse {p}: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config: {p} must hold a mapping at the top level")
    return _numbers(data)
