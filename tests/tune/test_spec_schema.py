"""``annealscale schema``: the JSON Schema editors check specs with, and the reference page
generated from the same models."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest

from annealscale.cluster.cli import EXAMPLES, main
from annealscale.core.spec_yaml import load_yaml
from annealscale.tune.spec_schema import spec_json_schema, spec_reference

REPO = Path(__file__).resolve().parents[2]
SPECS = sorted(EXAMPLES.glob("*.yaml")) + sorted((REPO / "k8s").rglob("spec.yaml"))


@pytest.fixture(scope="module")
def validator():
    schema = spec_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("path", SPECS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_every_shipped_spec_validates(validator, path):
    assert list(validator.iter_errors(load_yaml(path))) == []


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda d: d.update(domain_fracton=0.5), "domain_fracton"),
        (lambda d: d["train"].update(seqlen=64), "seqlen"),
        (lambda d: d["sources"][1]["params"].update(usd_per_doc=1.0), "usd_per_doc"),
        (lambda d: d["sources"][0].update(kind="as-is"), "as-is"),
    ],
    ids=["top-level", "section", "params-of-a-kind", "unknown-kind"],
)
def test_a_misspelled_field_is_rejected(validator, mutate, where):
    data = copy.deepcopy(load_yaml(EXAMPLES / "demo.yaml"))
    assert data["sources"][1]["kind"] == "classifier_filter"
    mutate(data)
    errors = list(validator.iter_errors(data))
    assert errors, f"{where} was accepted"
    assert any(where in json.dumps(e.instance) + e.message for e in errors)


def test_cli_prints_the_schema_as_json(capsys):
    assert main(["schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(spec_json_schema()))
    assert printed["properties"]["domain_fraction"]["description"].startswith("Fraction r")


def test_field_docstrings_describe_every_field():
    schema = spec_json_schema(builtin_only=True)
    sections = [schema, *schema["$defs"].values()]
    missing = [
        f"{section.get('title')}.{name}"
        for section in sections
        for name, field in section.get("properties", {}).items()
        if not field.get("description")
    ]
    assert missing == []


def test_docs_spec_reference_is_generated_from_the_models(capsys):
    page = REPO / "docs" / "spec-reference.md"
    assert page.read_text() == spec_reference(), (
        "docs/spec-reference.md is stale: run `annealscale schema --markdown > "
        "docs/spec-reference.md`"
    )
    assert main(["schema", "--markdown"]) == 0
    assert capsys.readouterr().out == spec_reference()
