"""The spec base model: frozen, strict, unknown fields refused with a suggestion, and
every error one `SpecError` line naming the path from the top of the spec."""

from __future__ import annotations

import pydantic
import pytest

from annealscale.core.errors import AnnealscaleError, SpecError, check
from annealscale.core.hashing import content_hash
from annealscale.core.spec_model import SpecModel, from_mapping


class Inner(SpecModel):
    tokens: int = 8
    """Tokens (tokens)."""
    rate: float = 0.5

    def validate_spec(self) -> None:
        check(self.tokens > 0, "tokens", "must be positive (tokens)")


class Outer(SpecModel):
    name: str
    inner: Inner = pydantic.Field(default_factory=Inner)
    items: tuple[Inner, ...] = ()
    flag: bool = False
    budgets: tuple[int, ...] = ()
    limit: int | None = None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"name": "a", "inner": {"tokns": 3}},
            "inner.tokns: unknown field; did you mean 'tokens'?",
        ),
        ({}, "name: required field is missing"),
        (
            {"name": "a", "inner": {"tokens": "16"}},
            "inner.tokens: expected an integer, got str '16'",
        ),
        (
            {"name": "a", "inner": {"tokens": True}},
            "inner.tokens: expected an integer, got bool True",
        ),
        ({"name": "a", "flag": 1}, "flag: expected true or false, got int 1"),
        ({"name": 5}, "name: expected a string, got int 5"),
        ({"name": "a", "items": [{}, {"tokens": 0}]}, "items[1].tokens: must be positive (tokens)"),
        ({"name": "a", "inner": [1]}, "inner: expected a mapping of fields, got a list"),
        ({"name": "a", "items": {"x": 1}}, "items: expected a list, got a mapping"),
        ({"name": "a", "budgets": [1e6, 16.5]}, "budgets[1]: expected an integer, got float 16.5"),
        ({"name": "a", "limit": 2.5}, "limit: expected an integer, got float 2.5"),
    ],
)
def test_errors_are_one_line_naming_the_path(data, message):
    with pytest.raises(SpecError) as info:
        from_mapping(Outer, data)
    assert str(info.value) == message
    assert isinstance(info.value, AnnealscaleError)


def test_integral_numbers_fill_integer_fields():
    # YAML 1.2 reads `1e6` as a float; JSON Schema counts 1000000.0 as an integer too.
    outer = from_mapping(Outer, {"name": "a", "budgets": [1e6, 2048], "limit": 4.0})
    assert outer.budgets == (1_000_000, 2048) and all(type(b) is int for b in outer.budgets)
    assert outer.limit == 4 and type(outer.limit) is int
    assert from_mapping(Inner, {"rate": 1.0}).rate == 1.0  # a float field keeps its float


def test_a_plain_value_error_of_a_check_reads_as_its_message():
    class Checked(SpecModel):
        size: int = 1

        def validate_spec(self) -> None:
            if self.size > 3:
                raise ValueError("too big; at most 3")

    with pytest.raises(SpecError) as info:
        from_mapping(Checked, {"size": 5}, "params")
    assert str(info.value) == "params: too big; at most 3"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("words: list[str] = ()", "use tuple[...]"),
        ("size: int = 1\n    def __post_init__(self): pass", "validate_spec, not __post_init__"),
    ],
)
def test_a_spec_model_that_would_misbehave_is_refused_at_definition(body, fragment):
    with pytest.raises(TypeError, match=fragment.replace("[", r"\[").replace(".", r"\.")):
        exec(f"class Broken(SpecModel):\n    {body}\n", {"SpecModel": SpecModel})


def test_a_section_reports_its_place_in_the_whole_spec():
    with pytest.raises(SpecError, match=r"^train\.tokens: must be positive"):
        from_mapping(Inner, {"tokens": -1}, "train")


def test_built_in_python_the_error_is_the_same_one_line():
    with pytest.raises(SpecError, match=r"^tokens: must be positive"):
        Inner(tokens=0)


def test_models_are_frozen_and_hold_tuples():
    outer = from_mapping(Outer, {"name": "a", "items": [{"tokens": 2}]})
    assert outer.items == (Inner(tokens=2),)
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        outer.name = "b"  # type: ignore[misc]


def test_replace_revalidates_and_leaves_the_original_alone():
    inner = Inner(tokens=4)
    assert inner.replace(tokens=6) == Inner(tokens=6)
    assert inner.tokens == 4
    with pytest.raises(SpecError, match="must be positive"):
        inner.replace(tokens=0)


def test_identity_hash_ignores_whether_a_default_was_written():
    assert content_hash(from_mapping(Inner, {})) == content_hash(from_mapping(Inner, {"rate": 0.5}))
    assert content_hash(Inner(rate=0.25)) != content_hash(Inner())
