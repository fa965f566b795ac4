"""The eval.harness spec section and evaluation tasks in a cell's identity: the section's
fields, the bytes of the task configs and data files, and the harness version change every
cell's identity; a spec without tasks keeps the identities it had before."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from annealscale.core.hashing import content_hash
from annealscale.tune.cells import expand_grid
from annealscale.tune.prepare import inputs_identity
from annealscale.tune.spec import parse_spec
from tests.helpers import write_math_task

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo.yaml"


def _spec(include=None, **harness):
    data = yaml.safe_load(DEMO.read_text())
    if include is not None:
        data["eval"]["harness"] = {"tasks": ["mathqa_local"], "include_path": str(include)}
        data["eval"]["harness"].update(harness)
    return parse_spec(data)


def _ids(spec) -> set[str]:
    inputs = inputs_identity(spec, lambda path: path)  # demo: paths stay names here
    return {c.identity for c in expand_grid(spec, inputs.shared, inputs.per_source)}


def test_a_spec_without_tasks_keeps_its_identities():
    spec = _spec()
    inputs = inputs_identity(spec, lambda path: path)
    paths = (spec.base_model.path, spec.replay.path, spec.eval.domain.path)
    assert inputs.shared == content_hash([*paths, spec.eval.general.path])


def test_task_files_and_settings_change_every_identity(tmp_path):
    include = write_math_task(tmp_path / "tasks")
    first = _ids(_spec(include))
    assert _ids(_spec(include)) == first
    assert first.isdisjoint(_ids(_spec()))
    assert first.isdisjoint(_ids(_spec(include, num_fewshot=2)))
    data = include / "mathqa_local.jsonl"
    data.write_text(data.read_text() + data.read_text().splitlines()[0] + "\n")
    assert _ids(_spec(include)).isdisjoint(first)


def test_the_harness_version_is_part_of_the_identity(tmp_path, monkeypatch):
    import annealscale.anneal.harness as harness

    include = write_math_task(tmp_path / "tasks")
    first = _ids(_spec(include))
    monkeypatch.setattr(harness, "harness_version", lambda: "0.4.99")
    assert _ids(_spec(include)).isdisjoint(first)


@pytest.mark.parametrize(
    ("harness", "fragment"),
    [
        ({"tasks": []}, "eval.harness.tasks: list at least one"),
        ({"tasks": ["a", "a"]}, "eval.harness.tasks: task names must not repeat"),
        ({"tasks": ["a"], "limit": 0}, "eval.harness.limit: must be a positive number"),
        ({"tasks": ["a"], "num_fewshot": -1}, "eval.harness.num_fewshot: must be 0 or more"),
        ({"tasks": ["a"], "batch_sise": 4}, "did you mean 'batch_size'"),
    ],
)
def test_bad_harness_fields_are_one_line(harness, fragment):
    from annealscale.core.errors import SpecError

    data = yaml.safe_load(DEMO.read_text())
    data["eval"]["harness"] = harness
    with pytest.raises(SpecError) as err:
        parse_spec(data)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_a_jsonl_task_may_not_share_a_harness_tasks_name():
    from annealscale.core.errors import SpecError

    data = yaml.safe_load(DEMO.read_text())
    data["eval"]["tasks"] = [{"name": "arith", "path": "arith.jsonl"}]
    data["eval"]["harness"] = {"tasks": ["arith"]}
    with pytest.raises(SpecError, match=r"^eval.tasks: arith: also named in harness.tasks"):
        parse_spec(data)


def test_include_path_is_one_path_or_a_list():
    data = yaml.safe_load(DEMO.read_text())
    data["eval"]["harness"] = {"tasks": ["a"], "include_path": "tasks/"}
    assert parse_spec(data).eval.harness.include_paths == ("tasks/",)
    data["eval"]["harness"]["include_path"] = ["a/", "b/"]
    assert parse_spec(data).eval.harness.include_paths == ("a/", "b/")
