"""The base of every spec model: frozen pydantic v2 models whose errors are one line.

A spec arrives as YAML. Each section is a `SpecModel`: frozen, unknown keys rejected with
a close-match suggestion, types checked strictly (an integer field does not take
``"16"`` or ``true``), and cross-field rules in `SpecModel.validate_spec`. Whatever goes
wrong, `from_mapping` raises one `SpecError` whose path names the field from the top of
the spec (``sources[1].params.usd_per_doc: unknown field; did you mean
'usd_per_doc_scored'?``), so the CLI prints one line and exits with 2.

Field docstrings (the string literal under each field) are the field's description in
the JSON Schema (``annealscale schema``) and in the generated spec reference.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from annealscale.core.errors import SpecError

M = TypeVar("M", bound="SpecModel")


class SpecModel(BaseModel):
    """A frozen, strictly typed spec section; see the module docstring."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        strict=True,
        # A price, spend or rate of inf or NaN only turns every cost and metric into NaN
        # downstream; refuse it where it is written. A field that needs one opts in.
        allow_inf_nan=False,
        use_attribute_docstrings=True,
        validate_default=False,
    )

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if "__post_init__" in cls.__dict__:
            raise TypeError(
                f"{cls.__name__}: a SpecModel checks fields in validate_spec, not "
                "__post_init__ (pydantic never calls it); rename the method"
            )
        for name, field in cls.model_fields.items():
            if "list[" in str(field.annotation) or field.annotation is list:
                raise TypeError(
                    f"{cls.__name__}.{name}: use tuple[...] for a sequence; spec models "
                    "are immutable and hold YAML lists as tuples"
                )

    def __init__(self, **data: Any):
        # Built in Python (tests, plugins, `replace`): the same one-line error as from YAML.
        try:
            super().__init__(**data)
        except ValidationError as err:
            raise spec_error(err) from None

    @model_validator(mode="before")
    @classmethod
    def _known_fields(cls, data: Any) -> Any:
        if isinstance(data, cls):
            return data
        if not isinstance(data, Mapping):
            raise SpecError("", f"expected a mapping of fields, got {describe(data)}")
        for key in data:
            if key not in cls.model_fields:
                close = difflib.get_close_matches(str(key), list(cls.model_fields), n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise SpecError(str(key), f"unknown field{hint}")
        # YAML gives lists; the models hold tuples (immutable, hashable).
        return {
            key: _integral(cls.model_fields[key].annotation, _tuples(value))
            for key, value in data.items()
        }

    @model_validator(mode="after")
    def _checked(self):
        self.validate_spec()
        return self

    def validate_spec(self) -> None:
        """Rules across fields; raise through `annealscale.core.errors.check` with the
        field's name relative to this section."""

    def replace(self: M, **changes: Any) -> M:
        """A validated copy with ``changes``: the spec models' `dataclasses.replace`."""
        values = {name: getattr(self, name) for name in type(self).model_fields}
        return from_mapping(type(self), {**values, **changes})


def from_mapping(cls: type[M], data: Any, path: str = "") -> M:
    """Validate ``data`` as ``cls``; any problem is one `SpecError` whose path starts at
    ``path`` (the section's place in the whole spec)."""
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise spec_error(err, path) from None


def spec_error(err: ValidationError, path: str = "") -> SpecError:
    """The first problem of a pydantic `ValidationError` as one `SpecError`."""
    first = err.errors(include_url=False)[0]
    where = path
    for part in first["loc"]:
        where = join_path(where, f"[{part}]" if isinstance(part, int) else str(part))
    inner = first.get("ctx", {}).get("error")
    if isinstance(inner, SpecError):
        return SpecError(join_path(where, inner.path), inner.problem)
    if isinstance(inner, Exception):  # a ValueError of a plugin's own check
        return SpecError(where, str(inner))
    return SpecError(where, _problem(first))


def _problem(error: dict) -> str:
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx", {})
    expected = {
        "int_type": "an integer",
        "int_parsing": "an integer",
        "int_from_float": "an integer",
        "float_type": "a number",
        "float_parsing": "a number",
        "bool_type": "true or false",
        "bool_parsing": "true or false",
        "string_type": "a string",
        "tuple_type": "a list",
        "list_type": "a list",
        "dict_type": "a mapping",
        "mapping_type": "a mapping",
        "model_type": "a mapping of fields",
        "model_attributes_type": "a mapping of fields",
    }
    if kind in expected:
        return f"expected {expected[kind]}, got {describe(value)}"
    if kind == "finite_number":
        return f"must be a finite number, got {value!r}"
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "literal_error":
        options = str(ctx.get("expected", "")).replace(" or ", ", ")
        return f"got {value!r}; expected one of {options}"
    if kind in ("too_short", "too_long"):
        wanted = ctx.get("min_length") if kind == "too_short" else ctx.get("max_length")
        return f"expected {wanted} items, got {ctx.get('actual_length', len(value or ()))}"
    return str(error["msg"])


def _integral(annotation: Any, value: Any) -> Any:
    """An integral float as an int where the field holds integers: YAML 1.2 (and JSON
    Schema, which counts 1.0 as an integer) reads ``train_tokens: [1e6]`` as 1000000.0."""
    if isinstance(value, tuple):
        items = [get_args(o) for o in _options(annotation) if get_origin(o) is tuple]
        if items and len(items[0]) == 2 and items[0][1] is Ellipsis:
            return tuple(_integral(items[0][0], v) for v in value)
        return value
    options = _options(annotation)
    if isinstance(value, float) and value.is_integer() and int in options and float not in options:
        return int(value)
    return value


def _options(annotation: Any) -> tuple:
    if get_origin(annotation) in (typing.Union, types.UnionType):
        return get_args(annotation)
    return (annotation,)


def _tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def join_path(path: str, name: str) -> str:
    """``sources`` + ``[1]`` -> ``sources[1]``; ``train`` + ``seq_len`` -> ``train.seq_len``."""
    if not path:
        return name
    if not name:
        return path
    return f"{path}{name}" if name.startswith("[") else f"{path}.{name}"


def describe(value: Any) -> str:
    """How an unexpected value reads in an error: ``a list``, ``str 'half'``."""
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"{type(value).__name__} {value!r}"
