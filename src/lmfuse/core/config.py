"""YAML / dict → dataclass, with every problem reported at once by its field path.

``from_dict(Recipe, data)`` checks types recursively (nested dataclasses, ``list[...]``, ``dict[str, ...]``,
``Literal[...]``, ``X | None``), rejects unknown keys with a did-you-mean, and raises one ``ConfigError``
listing every problem as ``slices[1].layers: expected a list of 2 integers, found 'abc'``. Dataclasses may
define ``validate(self) -> list[str]`` for cross-field checks; its messages join the same report. A class
with ``validate_later = True`` is validated by its caller instead (with the models in hand, so that checks
needing them are reported in the same pass).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

import yaml

from lmfuse.core.jsonl import read_text
from lmfuse.errors import ConfigError

T = TypeVar("T")
_MISSING = object()


def load_yaml(path: str | Path) -> Any:
    """Read a YAML file; a missing file or a syntax error becomes a ``ConfigError`` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"file not found: {path}")
    try:
        return yaml.safe_load(read_text(path, "recipe"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", source=str(path)) from None


def load_config(cls: type[T], path: str | Path) -> T:
    """Load a YAML file into dataclass ``cls``; raises ``ConfigError`` listing every problem."""
    data = load_yaml(path)
    return from_dict(cls, data, source=str(path))


def from_dict(cls: type[T], data: Any, source: str | None = None) -> T:
    """Build dataclass ``cls`` from plain data, collecting all problems into one ``ConfigError``."""
    problems: list[str] = []
    value = _convert(cls, data, "", problems)
    if problems:
        raise ConfigError(problems, source=source)
    return value


def to_dict(obj: Any) -> Any:
    """Dataclass → plain data (for writing the resolved recipe next to an output)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def dump_yaml(obj: Any) -> str:
    """Dataclass or plain data → YAML text, keys in declaration order."""
    return yaml.safe_dump(to_dict(obj), sort_keys=False, allow_unicode=True)


def _where(path: str) -> str:
    return path or "<top level>"


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _convert(tp: Any, value: Any, path: str, problems: list[str]) -> Any:
    if dataclasses.is_dataclass(tp):
        return _convert_dataclass(tp, value, path, problems)
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            problems.append(
                f"{_where(path)}: expected one of {', '.join(map(repr, allowed))}, found {_show(value)}"
            )
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        last: list[str] = []
        for arg in (a for a in args if a is not type(None)):
            trial: list[str] = []
            out = _convert(arg, value, path, trial)
            if not trial:
                return out
            last = trial
        problems.extend(last or [f"{_where(path)}: unexpected value {_show(value)}"])
        return value
    if origin in (list, tuple) or tp in (list, tuple):
        (item_tp, *_) = get_args(tp) or (Any,)
        if not isinstance(value, list | tuple):
            problems.append(f"{_where(path)}: expected a list, found {_show(value)}")
            return value
        return [_convert(item_tp, v, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        key_tp, val_tp = get_args(tp) or (Any, Any)
        if not isinstance(value, dict):
            problems.append(f"{_where(path)}: expected a mapping, found {_show(value)}")
            return value
        return {k: _convert(val_tp, v, f"{path}.{k}" if path else str(k), problems) for k, v in value.items()}
    return _convert_scalar(tp, value, path, problems)


def _convert_scalar(tp: Any, value: Any, path: str, problems: list[str]) -> Any:
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is bool and isinstance(value, bool):
        return value
    if tp is str and isinstance(value, str):
        return value
    if tp is Path and isinstance(value, str | Path):
        return Path(value)
    if tp in (int, float, bool, str, Path):
        name = {int: "an integer", float: "a number", bool: "true or false", str: "a string", Path: "a path"}
        problems.append(f"{_where(path)}: expected {name[tp]}, found {_show(value)}")
        return value
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    problems.append(f"{_where(path)}: expected {getattr(tp, '__name__', tp)}, found {_show(value)}")
    return value


def _convert_dataclass(cls: Any, value: Any, path: str, problems: list[str]) -> Any:
    if isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        problems.append(
            f"{_where(path)}: expected a mapping with fields of {cls.__name__}, found {_show(value)}"
        )
        return None
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    before = len(problems)
    for key in value:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; allowed: {', '.join(fields)}"
            problems.append(f"{path + '.' if path else ''}{key}: unknown field{hint}")
    kwargs: dict[str, Any] = {}
    for name, field in fields.items():
        sub = f"{path}.{name}" if path else name
        if name in value:
            kwargs[name] = _convert(hints[name], value[name], sub, problems)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            problems.append(f"{sub}: required field is missing")
    if len(problems) > before:
        return None
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if callable(check) and not getattr(cls, "validate_later", False):
        problems.extend(f"{path + ': ' if path else ''}{msg}" for msg in check())
    return obj
