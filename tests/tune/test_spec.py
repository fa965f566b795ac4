"""The experiment spec: the demo loads into frozen typed spec models, and every bad input
fails with one SpecError line naming the exact field path and the problem."""

from __future__ import annotations

import copy
from pathlib import Path

import pydantic
import pytest
import yaml

from annealscale.anneal.run_spec import DataSpec, ScheduleSpec, TrainSpec
from annealscale.anneal.sources import (
    AsIsParams,
    ClassifierFilterParams,
    SourceSpec,
    SyntheticParams,
)
from annealscale.core.errors import AnnealscaleError, SpecError
from annealscale.tune.spec import ExperimentSpec, GridSpec, ResourcesSpec, load_spec, parse_spec

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo.yaml"


@pytest.fixture
def demo_data() -> dict:
    return yaml.safe_load(DEMO.read_text())


def test_demo_spec_loads_into_typed_frozen_models(demo_data):
    # Values are compared with the YAML itself, so the demo may be retuned freely.
    spec = load_spec(DEMO)

    assert isinstance(spec, ExperimentSpec)
    assert spec.name == demo_data["name"]
    assert spec.replay == DataSpec(path=demo_data["replay"]["path"], text_field="text")
    assert spec.eval.domain.path == demo_data["eval"]["domain"]["path"]
    assert spec.eval.max_tokens == demo_data["eval"]["max_tokens"]

    assert isinstance(spec.sources, tuple)
    assert all(isinstance(s, SourceSpec) for s in spec.sources)
    assert [s.name for s in spec.sources] == [s["name"] for s in demo_data["sources"]]
    assert [s.kind for s in spec.sources] == ["as_is", "classifier_filter", "synthetic"]
    raw = [s["params"] for s in demo_data["sources"]]
    textbook, web, synthetic = (s.params for s in spec.sources)
    assert textbook == AsIsParams(**raw[0])
    assert isinstance(web, ClassifierFilterParams)
    assert web.usd_per_doc_scored == raw[1]["usd_per_doc_scored"]
    assert web.raw_path == raw[1]["raw_path"]
    assert web.n_features == 2**18  # the default, filled in
    assert isinstance(synthetic, SyntheticParams)
    assert synthetic.usd_per_token == raw[2]["usd_per_token"]
    assert synthetic.seed == 0

    assert isinstance(spec.grid, GridSpec)
    assert isinstance(spec.grid.curation_spend, tuple)
    assert spec.grid.curation_spend == tuple(demo_data["grid"]["curation_spend"])
    assert all(type(c) is float for c in spec.grid.curation_spend)
    assert isinstance(spec.grid.train_tokens, tuple)
    assert spec.grid.train_tokens == tuple(demo_data["grid"]["train_tokens"])
    assert all(type(t) is int for t in spec.grid.train_tokens)
    assert spec.grid.seeds == tuple(demo_data["grid"]["seeds"])
    assert spec.spends_for(spec.sources[0]) == spec.grid.curation_spend

    assert type(spec.domain_fraction) is float
    assert spec.domain_fraction == demo_data["domain_fraction"]
    assert spec.schedule == ScheduleSpec(**demo_data["schedule"])
    assert isinstance(spec.train, TrainSpec)
    assert spec.train.tokens_per_step == (
        demo_data["train"]["batch_size"] * demo_data["train"]["seq_len"]
    )
    assert spec.resources == ResourcesSpec(**demo_data["resources"])
    assert spec.prices.usd_per_pflop == demo_data["prices"]["usd_per_pflop"]
    assert spec.storage_path == demo_data["storage_path"]


def test_specs_are_frozen():
    spec = load_spec(DEMO)
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        spec.domain_fraction = 0.9  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        spec.sources[0].params.usd_per_token = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.grid.train_tokens[0] = 1  # type: ignore[index]  (a tuple, not a shared list)


def test_load_spec_equals_parse_spec_of_the_same_mapping(demo_data):
    assert load_spec(DEMO) == parse_spec(demo_data)


def test_yaml_exponent_without_dot_is_read_as_a_number(demo_data, tmp_path):
    # PyYAML (YAML 1.1) reads `1e-3` (no dot) as a string; the spec is read as YAML 1.2
    # reads it, as editors checking it against `annealscale schema` do: a number.
    text = DEMO.read_text()
    assert "peak_lr: 1.0e-3" in text and "usd_per_token: 1.0e-5" in text
    text = text.replace("peak_lr: 1.0e-3", "peak_lr: 1e-3")
    text = text.replace("usd_per_token: 1.0e-5", "usd_per_token: 2e-5")
    path = tmp_path / "exponents.yaml"
    path.write_text(text)
    spec = load_spec(path)
    assert spec.schedule.peak_lr == 1e-3
    assert any(getattr(source.params, "usd_per_token", None) == 2e-5 for source in spec.sources)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("name: a\nname: b\n", "line 2: key 'name' appears twice in one mapping; keep one"),
        ("name: a\ntrain:\n  5: 64\n", "line 3: key 5 is not a name; quote it or fix the line"),
    ],
    ids=["repeated-key", "key-not-a-name"],
)
def test_yaml_keys_are_names_given_once(tmp_path, text, problem):
    path = tmp_path / "keys.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(info.value) == f"{path}: {problem}"


def test_yes_and_no_are_strings_as_in_yaml_1_2(demo_data, tmp_path):
    text = DEMO.read_text().replace(f"name: {demo_data['name']}", "name: no", 1)
    path = tmp_path / "named-no.yaml"
    path.write_text(text)
    assert load_spec(path).name == "no"


def test_a_misspelled_params_key_is_named_with_a_suggestion(demo_data):
    source = demo_data["sources"][0]
    source["parmas"] = source.pop("params")
    with pytest.raises(SpecError) as info:
        parse_spec(demo_data)
    assert str(info.value) == "sources[0].parmas: unknown field; did you mean 'params'?"


def test_a_number_given_as_a_string_is_refused(demo_data):
    demo_data["schedule"]["peak_lr"] = "0.001"
    with pytest.raises(SpecError, match=r"^schedule.peak_lr: expected a number, got str '0.001'$"):
        parse_spec(demo_data)


def test_source_with_its_own_spends_overrides_the_grid(demo_data):
    demo_data["sources"][2]["curation_spend"] = [0.05, 0.1]
    spec = parse_spec(demo_data)
    assert spec.spends_for(spec.sources[2]) == (0.05, 0.1)
    assert spec.spends_for(spec.sources[0]) == spec.grid.curation_spend


# --- bad specs --------------------------------------------------------------------------


def _all(*mutations):
    def mutate(data):
        for m in mutations:
            m(data)

    return mutate


def _one_step_is_2048_tokens(data):
    data["train"].update(seq_len=128, batch_size=16, micro_batch_size=8)


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def mutate(data):
        node = data
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value

    return mutate


def _delete(*keys):
    def mutate(data):
        node = data
        for key in keys[:-1]:
            node = node[key]
        del node[keys[-1]]

    return mutate


def _rename(old, new):
    def mutate(data):
        data[new] = data.pop(old)

    return mutate


def _misspell_param(data):
    params = data["sources"][0]["params"]
    params["usd_per_tokn"] = params.pop("usd_per_token")


BAD_SPECS = [
    # (id, mutation, exact field path, fragment of the problem)
    (
        "misspelled-top-level-field",
        _rename("domain_fraction", "domian_fraction"),
        "domian_fraction",
        "unknown field; did you mean 'domain_fraction'?",
    ),
    (
        "misspelled-source-param",
        _misspell_param,
        "sources[0].params.usd_per_tokn",
        "did you mean 'usd_per_token'?",
    ),
    ("missing-section", _delete("schedule"), "schedule", "required field is missing"),
    (
        "missing-nested-field",
        _delete("schedule", "peak_lr"),
        "schedule.peak_lr",
        "required field is missing",
    ),
    (
        "missing-source-param",
        _delete("sources", 0, "params", "path"),
        "sources[0].params.path",
        "required field is missing",
    ),
    (
        "string-for-number",
        _set("domain_fraction", "half"),
        "domain_fraction",
        "expected a number, got str 'half'",
    ),
    (
        "string-for-integer",
        _set("train", "batch_size", "16"),
        "train.batch_size",
        "expected an integer, got str '16'",
    ),
    (
        "bool-for-integer",
        _set("train", "zero_stage", True),
        "train.zero_stage",
        "expected an integer, got bool True",
    ),
    (
        "fractional-train-tokens",
        _set("grid", "train_tokens", [32768.5, 65536]),
        "grid.train_tokens[0]",
        "expected an integer",
    ),
    (
        "unknown-source-kind",
        _set("sources", 0, "kind", "scraped"),
        "sources[0].kind",
        "unknown source kind 'scraped'; known kinds:",
    ),
    (
        "negative-price",
        _set("sources", 2, "params", "usd_per_token", -2.5e-6),
        "sources[2].params.usd_per_token",
        "must be positive (USD per token)",
    ),
    (
        "zero-scoring-price",
        _set("sources", 1, "params", "usd_per_doc_scored", 0),
        "sources[1].params.usd_per_doc_scored",
        "must be positive",
    ),
    (
        "classifier-threshold-out-of-range",
        _set("sources", 1, "params", "threshold", 1.0),
        "sources[1].params.threshold",
        "must be a probability in (0, 1)",
    ),
    (
        "price-field-of-another-kind",
        _set("sources", 1, "params", "usd_per_token", 1e-5),
        "sources[1].params.usd_per_token",
        "unknown field",
    ),
    (
        "duplicate-source-names",
        _set("sources", 2, "name", "textbook"),
        "sources",
        "source names must be unique; repeated: textbook",
    ),
    (
        "empty-source-spends",
        _set("sources", 0, "curation_spend", []),
        "sources[0].curation_spend",
        "must list at least one spend",
    ),
    (
        "train-tokens-below-one-step",
        _all(_one_step_is_2048_tokens, _set("grid", "train_tokens", [2048, 1000])),
        "grid.train_tokens[1]",
        "1000 tokens is less than one optimizer step",
    ),
    (
        "negative-spend",
        _set("grid", "curation_spend", [0.2, -1.0]),
        "grid.curation_spend",
        "spends must be positive",
    ),
    ("repeated-seeds", _set("grid", "seeds", [0, 1, 0]), "grid.seeds", "must not repeat"),
    (
        "batch-not-multiple-of-micro-batch",
        _all(_set("train", "micro_batch_size", 8), _set("train", "batch_size", 20)),
        "train.batch_size",
        "must be a multiple of micro_batch_size (8), got 20",
    ),
    (
        "batch-not-multiple-of-worker-shards",
        _all(_one_step_is_2048_tokens, _set("resources", "num_workers", 3)),
        "train.batch_size",
        "must be a multiple of micro_batch_size x resources.num_workers (24)",
    ),
    ("zero-workers", _set("resources", "num_workers", 0), "resources.num_workers", "at least 1"),
    ("peak-lr-too-large", _set("schedule", "peak_lr", 2.0), "schedule.peak_lr", "(0, 1), got 2.0"),
    ("peak-lr-zero", _set("schedule", "peak_lr", 0), "schedule.peak_lr", "(0, 1), got 0.0"),
    (
        "unknown-schedule-kind",
        _set("schedule", "kind", "cosine"),
        "schedule.kind",
        "got 'cosine'; expected one of 'linear'",
    ),
    ("domain-fraction-zero", _set("domain_fraction", 0), "domain_fraction", "(0, 1], got 0.0"),
    ("domain-fraction-above-one", _set("domain_fraction", 1.5), "domain_fraction", "got 1.5"),
    ("zero-stage-5", _set("train", "zero_stage", 5), "train.zero_stage", "must be 0, 1, 2 or 3"),
    (
        "section-is-a-list",
        _set("train", [16, 8]),
        "train",
        "expected a mapping of fields, got a list",
    ),
    (
        "section-is-a-scalar",
        _set("eval", "domain", "demo:math_eval"),
        "eval.domain",
        "expected a mapping of fields, got str",
    ),
    ("sources-not-a-list", _set("sources", {"name": "x"}), "sources", "expected a list"),
    (
        "source-entry-not-a-mapping",
        _set("sources", 0, "textbook"),
        "sources[0]",
        "expected a mapping of fields",
    ),
    ("blank-name", _set("name", "   "), "name", "must not be empty"),
    (
        "max-concurrent-trials-zero",
        _set("resources", "max_concurrent_trials", 0),
        "resources.max_concurrent_trials",
        "must be at least 1",
    ),
    (
        "eval-max-tokens-zero",
        _set("eval", "max_tokens", 0),
        "eval.max_tokens",
        "must be a positive number of tokens",
    ),
    ("non-positive-price", _set("prices", "usd_per_pflop", 0), "prices.usd_per_pflop", "positive"),
]


@pytest.mark.parametrize(
    ("mutate", "path", "fragment"),
    [pytest.param(m, p, f, id=i) for i, m, p, f in BAD_SPECS],
)
def test_bad_spec_names_the_field_and_the_problem(demo_data, mutate, path, fragment):
    data = copy.deepcopy(demo_data)
    mutate(data)
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    message = str(info.value)
    assert info.value.path == path
    assert message.startswith(f"{path}: "), message
    assert fragment in message
    assert "\n" not in message


def test_spec_error_is_the_project_error():
    assert issubclass(SpecError, AnnealscaleError)
    with pytest.raises(AnnealscaleError):
        parse_spec({"name": "x"})


def test_spec_that_is_not_a_mapping():
    with pytest.raises(SpecError, match=r"^spec: expected a mapping of fields, got a list$"):
        parse_spec([1, 2])


def test_invalid_yaml_names_the_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: demo\ngrid:\n  train_tokens: [1, 2\nsources: []\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert message == f"{path}: not valid YAML (line 4)"


def test_missing_spec_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(info.value) == f"{path}: spec file not found"


def test_empty_spec_file_is_an_error_not_a_crash(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing yet\n")
    with pytest.raises(SpecError, match="empty.yaml: is empty"):
        load_spec(path)


@pytest.mark.parametrize(
    ("mutate", "path", "fragment"),
    [
        (lambda d: d["grid"].update(curation_spend=[0.2, 0.2]), "grid.curation_spend", "repeat"),
        (
            lambda d: d["grid"].update(curation_spend=[float("inf")]),
            "grid.curation_spend[0]",
            "finite",
        ),
        (lambda d: d["grid"].update(seeds=[]), "grid.seeds", "at least one seed"),
        (
            lambda d: d["grid"].update(train_tokens=[24576, 24577]),
            "grid.train_tokens[1]",
            "same number of optimizer steps",
        ),
    ],
    ids=["repeated-spend", "infinite-spend", "no-seeds", "same-steps"],
)
def test_grid_values_must_make_distinct_finite_cells(demo_data, mutate, path, fragment):
    data = copy.deepcopy(demo_data)
    mutate(data)
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    assert info.value.path == path
    assert fragment in str(info.value)


def test_spec_path_that_is_a_directory_names_it(tmp_path):
    with pytest.raises(SpecError, match="is a directory"):
        load_spec(tmp_path)
