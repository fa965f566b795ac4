"""Typed, validated construction of frozen spec dataclasses from plain mappings.

Specs arrive as YAML. Every spec class is a frozen, keyword-only dataclass whose field
types say what is accepted; `from_mapping` walks the mapping against those types and
fails on the first problem with a message that names the field path (for example
``sources[1].usd_per_token``) and what to do. Semantic checks live in each class's
``__post_init__`` and raise `SpecError` through `check`.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

from anneal.errors import AnnealscaleError

T = TypeVar("T")


class SpecError(AnnealscaleError):
    """A spec field is missing, unknown or out of range; the message names it."""

    def __init__(self, path: str, problem: str):
        self.path = path
        self.problem = problem
        super().__init__(f"{path or 'spec'}: {problem}")


def check(condition: bool, field: str, problem: str) -> None:
    """Raise `SpecError` for ``field`` unless ``condition`` holds."""
    if not condition:
        raise SpecError(field, problem)


def from_mapping(cls: type[T], data: Any, path: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, validating types and names field by field.

    Unknown keys are rejected (with a close-match suggestion) so that a misspelled
    field never silently falls back to its default. Errors raised by a class's
    ``__post_init__`` are re-raised with the full path prefixed.
    """
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise SpecError(path, f"expected a mapping of fields, got {_kind(data)}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise SpecError(_join(path, str(key)), f"unknown field{hint}")
    kwargs: dict[str, Any] = {}
    for name, field in fields.items():
        sub = _join(path, name)
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], sub)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise SpecError(sub, "required field is missing")
    try:
        return cls(**kwargs)
    except SpecError as err:
        raise SpecError(_join(path, err.path), err.problem) from None


def to_plain(obj: Any) -> Any:
    """A JSON-ready copy of a spec: dataclasses to dicts, tuples to lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_plain(v) for v in obj]
    return obj


def content_hash(obj: Any, length: int = 12) -> str:
    """Short stable hash of canonical JSON: the identity of a spec or a derived artefact."""
    blob = json.dumps(to_plain(obj), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = get_origin(tp)
    args = get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _convert(option, value, path)
            except SpecError as err:
                errors.append(err)
        raise errors[0]
    if origin is Literal:
        if value not in args:
            allowed = ", ".join(repr(a) for a in args)
            raise SpecError(path, f"got {value!r}; expected one of {allowed}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise SpecError(path, f"expected a list, got {_kind(value)}")
        item = args[0]
        return tuple(_convert(item, v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise SpecError(path, f"expected a mapping, got {_kind(value)}")
        vt = args[1] if args else Any
        return types.MappingProxyType(
            {str(k): _convert(vt, v, f"{path}.{k}") for k, v in value.items()}
        )
    if dataclasses.is_dataclass(tp):
        return from_mapping(tp, value, path)
    if tp is bool:
        if not isinstance(value, bool):
            raise SpecError(path, f"expected true or false, got {_kind(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not (
            isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        ):
            raise SpecError(path, f"expected an integer, got {_kind(value)}")
        return int(value)
    if tp is float:
        if isinstance(value, str):
            try:
                return float(value)  # YAML reads 1e-3 without a dot as a string
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SpecError(path, f"expected a number, got {_kind(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise SpecError(path, f"expected a string, got {_kind(value)}")
        return value
    raise TypeError(f"spec type {tp!r} at {path} is not supported")  # a bug, not bad input


def _join(path: str, name: str) -> str:
    if not path:
        return name
    if not name:
        return path
    return f"{path}{name}" if name.startswith("[") else f"{path}.{name}"


def _kind(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"{type(value).__name__} {value!r}"
