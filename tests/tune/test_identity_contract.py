"""The identity contract: for every field of the spec, which side it is on, checked by
changing the field and comparing the cells' identities.

- ``ALL``: what every cell measures; a change gives every cell a new identity.
- ``SOURCE``: what one source's pool holds; a change renews that source's cells only.
- ``CELLS``: which cells exist; cells in both grids keep their identities.
- ``NONE``: where, how fast or under which name it runs, what it costs; no identity moves.

The models are walked, so a new spec field without a declared side fails
`test_every_spec_field_has_a_declared_side` until it is added to `CONTRACT` with a change
that shows its side. Identities are computed as a sweep computes them: the resolved input
files' identities (`inputs_identity`) fed into `expand_grid`.
"""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
import yaml

from annealscale.anneal.deepspeed_config import uses_bf16
from annealscale.anneal.sources import SourceSpec
from annealscale.core.spec_model import SpecModel
from annealscale.tune.cells import expand_grid, resolved_precision
from annealscale.tune.prepare import inputs_identity
from annealscale.tune.spec import ExperimentSpec, parse_spec
from tests.helpers import write_math_task

REPO = Path(__file__).resolve().parents[2]
ALL, SOURCE, CELLS, NONE = "all", "source", "cells", "none"
DS_JSON = '{"gradient_clipping": 1.0}\n'
TASKS = '{"question": "1+1", "choices": ["2", "3"], "answer": 0}\n'

# field path -> (side, changes to the spec mapping: dotted path -> value). A callable value
# receives the directory of the spec's task and DeepSpeed files, writes a file there and
# returns the path to set. Changes under BASE apply before and after alike (the setting in
# which the field matters: wsd-only fields under a wsd schedule).
BASE = "__base__"
WSD = {"schedule.kind": "wsd"}


def _harness(directory: Path, questions: int = 4) -> str:
    include = write_math_task(directory, questions=questions)
    write_math_task(directory, name="sums", questions=questions)
    return str(include)


HARNESS = {"eval.harness": lambda d: {"tasks": ["mathqa_local"], "include_path": _harness(d)}}
"""A harness section with local tasks, the setting in which its fields matter."""


CONTRACT: dict[str, tuple[str, dict[str, Any]]] = {
    "name": (NONE, {"name": "renamed"}),
    "base_model.path": (ALL, {"base_model.path": "hub-org/other-model"}),
    "base_model.trust_remote_code": (ALL, {"base_model.trust_remote_code": True}),
    "replay.path": (ALL, {"replay.path": "demo:general_eval"}),
    "replay.text_field": (ALL, {"replay.text_field": "body"}),
    "eval.domain.path": (ALL, {"eval.domain.path": "demo:math_train"}),
    "eval.domain.text_field": (ALL, {"eval.domain.text_field": "body"}),
    "eval.general.path": (ALL, {"eval.general.path": "demo:general_train"}),
    "eval.general.text_field": (ALL, {"eval.general.text_field": "body"}),
    "eval.max_tokens": (ALL, {"eval.max_tokens": 4096}),
    "eval.every_steps": (ALL, {"eval.every_steps": 5}),
    "eval.tasks[].name": (ALL, {"eval.tasks[0].name": "sums"}),
    "eval.tasks[].path": (
        ALL,
        {"eval.tasks[0].path": lambda d: _write(d / "t.jsonl", TASKS.replace("1+1", "2+2"))},
    ),
    "eval.tasks[].max_questions": (ALL, {"eval.tasks[0].max_questions": 1}),
    "eval.harness.tasks": (ALL, {BASE: HARNESS, "eval.harness.tasks": ["mathqa_local", "sums"]}),
    "eval.harness.include_path": (
        ALL,
        {BASE: HARNESS, "eval.harness.include_path": lambda d: _harness(d / "h", questions=6)},
    ),
    "eval.harness.include_defaults": (
        ALL,
        {BASE: HARNESS, "eval.harness.include_defaults": True},
    ),
    "eval.harness.num_fewshot": (ALL, {BASE: HARNESS, "eval.harness.num_fewshot": 1}),
    "eval.harness.limit": (ALL, {BASE: HARNESS, "eval.harness.limit": 2}),
    "eval.harness.batch_size": (ALL, {BASE: HARNESS, "eval.harness.batch_size": 2}),
    "sources[].name": (NONE, {"sources[0].name": "books"}),
    "sources[].kind": (
        SOURCE,
        {"sources[0].kind": "synthetic", "sources[0].params": {"usd_per_token": 1e-5}},
    ),
    "sources[].params": (SOURCE, {"sources[0].params.usd_per_token": 2e-5}),
    "sources[].steps[].kind": (SOURCE, {"sources[0].steps": [{"kind": "dedup"}]}),
    "sources[].steps[].params": (
        SOURCE,
        {"sources[0].steps": [{"kind": "dedup", "params": {"threshold": 0.9}}]},
    ),
    "sources[].curation_spend": (CELLS, {"sources[0].curation_spend": [0.2, 5.4]}),
    "sources[].resources.actors": (NONE, {"sources[0].resources": {"actors": 3}}),
    "sources[].resources.cpus_per_actor": (NONE, {"sources[0].resources": {"cpus_per_actor": 2.0}}),
    "sources[].resources.gpus_per_actor": (NONE, {"sources[0].resources": {"gpus_per_actor": 1.0}}),
    "sources[].resources.batch_size": (NONE, {"sources[0].resources": {"batch_size": 64}}),
    "grid.curation_spend": (CELLS, {"grid.curation_spend": [0.2, 0.6, 5.4]}),
    "grid.train_tokens": (CELLS, {"grid.train_tokens": [16384, 49152, 442368]}),
    "grid.seeds": (CELLS, {"grid.seeds": [0, 1]}),
    "domain_fraction": (ALL, {"domain_fraction": 0.25}),
    "schedule.kind": (ALL, {"schedule.kind": "wsd", "schedule.warmup_fraction": 0.05}),
    "schedule.peak_lr": (ALL, {"schedule.peak_lr": 2e-3}),
    "schedule.warmup_fraction": (ALL, {"schedule.warmup_fraction": 0.2}),
    "schedule.warmup_steps": (ALL, {BASE: WSD, "schedule.warmup_steps": 1}),
    "schedule.cooldown_fraction": (ALL, {BASE: WSD, "schedule.cooldown_fraction": 0.3}),
    "schedule.cooldown_shape": (ALL, {BASE: WSD, "schedule.cooldown_shape": "1-sqrt"}),
    "schedule.share_trunk": (ALL, {BASE: WSD, "schedule.share_trunk": False}),
    "prices.usd_per_pflop": (NONE, {"prices.usd_per_pflop": 900.0}),
    "train.seq_len": (ALL, {"train.seq_len": 64}),
    "train.batch_size": (ALL, {"train.batch_size": 32}),
    "train.micro_batch_size": (NONE, {"train.micro_batch_size": 4}),
    "train.zero_stage": (NONE, {"train.zero_stage": 2}),
    "train.weight_decay": (ALL, {"train.weight_decay": 0.05}),
    "train.grad_clip": (ALL, {"train.grad_clip": 0.5}),
    "train.precision": (ALL, {BASE: {"resources.gpus_per_worker": 1}, "train.precision": "fp32"}),
    "train.optimizer.name": (ALL, {"train.optimizer": {"name": "adam"}}),
    "train.optimizer.betas": (ALL, {"train.optimizer": {"betas": [0.9, 0.99]}}),
    "train.optimizer.eps": (ALL, {"train.optimizer": {"eps": 1e-6}}),
    # How the anneal runs, not what it computes (`TrainSpec.EXECUTION_ONLY`).
    "train.activation_checkpointing": (NONE, {"train.activation_checkpointing": True}),
    "train.offload_optimizer": (NONE, {"train.offload_optimizer": True}),
    "train.deepspeed_config": (
        ALL,
        {"train.deepspeed_config": lambda d: _write(d / "ds.json", DS_JSON.replace("1.0", "0.5"))},
    ),
    # Precision `auto` resolves by GPUs: CPU and GPU results are different measurements.
    "resources.gpus_per_worker": (ALL, {"resources.gpus_per_worker": 1}),
    "resources.num_workers": (
        NONE,
        {BASE: {"train.micro_batch_size": 8}, "resources.num_workers": 2},
    ),
    "resources.cpus_per_worker": (NONE, {"resources.cpus_per_worker": 4}),
    "resources.max_concurrent_trials": (NONE, {"resources.max_concurrent_trials": 2}),
    "resources.driver_resources": (NONE, {"resources.driver_resources": {"on_demand": 0.01}}),
    "resources.torch_backend": (NONE, {"resources.torch_backend": "gloo"}),
    "resources.gpus_per_node": (NONE, {"resources.gpus_per_node": 4}),
    "resources.gpu_kind": (NONE, {"resources.gpu_kind": "h100-80gb"}),
    "resources.gpu_memory_gib": (NONE, {"resources.gpu_memory_gib": 40.0}),
    "resources.peak_flops": (NONE, {"resources.peak_flops": 1e15}),
    "retries.preemption_failures": (NONE, {"retries.preemption_failures": 2}),
    "retention.keep_final": (NONE, {"retention.keep_final": True}),
    "retention.delete_checkpoints": (NONE, {"retention.delete_checkpoints": False}),
    "retention.delete_trunks": (NONE, {"retention.delete_trunks": False}),
    "retries.worker_failures": (NONE, {"retries.worker_failures": 3}),
    "retries.trial_failures": (NONE, {"retries.trial_failures": 0}),
    "tracking.tensorboard": (NONE, {"tracking.tensorboard": True}),
    "tracking.mlflow_tracking_uri": (NONE, {"tracking.mlflow_tracking_uri": "file:///tmp/ml"}),
    "tracking.wandb_project": (NONE, {"tracking.wandb_project": "p"}),
    "tracking.progress_seconds": (NONE, {"tracking.progress_seconds": 5.0}),
    "checkpoint.every_steps": (NONE, {"checkpoint.every_steps": 2}),
    "checkpoint.every_tokens": (NONE, {"checkpoint.every_tokens": 4096}),
    "checkpoint.keep": (NONE, {"checkpoint.keep": 5}),
    "storage_path": (NONE, {"storage_path": "/mnt/shared/elsewhere"}),
    "adaptive.target_tokens": (NONE, {"adaptive.target_tokens": 49152}),
    "adaptive.target_spend": (NONE, {"adaptive.target_spend": 1.0}),
    "adaptive.target_cost": (
        NONE,
        {"adaptive.target_tokens": None, "adaptive.target_cost": 10.0},
    ),
    "adaptive.threshold": (NONE, {"adaptive.threshold": 0.8}),
    "adaptive.budget_fraction": (NONE, {"adaptive.budget_fraction": 0.5}),
    "adaptive.batch_size": (NONE, {"adaptive.batch_size": 2}),
    "adaptive.law": (NONE, {"adaptive.law": "sapl"}),
}


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def spec_fields(model: type[SpecModel], prefix: str = "") -> list[str]:
    """Every leaf field of ``model`` as a dotted path (``[]`` for items of a list)."""
    out = []
    for name, info in model.model_fields.items():
        inner, many = _spec_model_in(info.annotation)
        path = f"{prefix}{name}{'[]' if many else ''}"
        out += spec_fields(inner, path + ".") if inner else [path]
    return out


def _spec_model_in(annotation: Any) -> tuple[type[SpecModel] | None, bool]:
    options = (
        get_args(annotation)
        if get_origin(annotation) in (typing.Union, types.UnionType)
        else (annotation,)
    )
    for option in options:
        many = get_origin(option) is tuple
        item = get_args(option)[0] if many else option
        if isinstance(item, type) and issubclass(item, SpecModel):
            return item, many
    return None, False


def _set(data: Any, dotted: str, value: Any) -> None:
    parts = re.findall(r"[^.\[\]]+|\[\d+\]", dotted)
    for part in parts[:-1]:
        data = data[int(part[1:-1])] if part.startswith("[") else data.setdefault(part, {})
    last = parts[-1]
    data[int(last[1:-1]) if last.startswith("[") else last] = value


@pytest.fixture
def base(tmp_path) -> dict:
    data = yaml.safe_load((REPO / "examples" / "demo.yaml").read_text())
    (tmp_path / "tasks.jsonl").write_text(TASKS)
    (tmp_path / "ds.json").write_text(DS_JSON)
    data["eval"]["tasks"] = [{"name": "arith", "path": str(tmp_path / "tasks.jsonl")}]
    data["train"]["deepspeed_config"] = str(tmp_path / "ds.json")
    return data


def identities(spec: ExperimentSpec) -> dict[tuple, str]:
    inputs = inputs_identity(spec, resolve=lambda path: path)
    return {
        (c.source, c.curation_spend, c.train_tokens, c.seed): c.identity
        for c in expand_grid(spec, inputs.shared, inputs.per_source)
    }


def _changed(base: dict, changes: dict, directory: Path) -> dict:
    data = yaml.safe_load(yaml.safe_dump(base))
    for dotted, value in changes.items():
        _set(data, dotted, value(directory) if callable(value) else value)
    return data


def test_every_spec_field_has_a_declared_side():
    fields = spec_fields(ExperimentSpec)
    assert set(fields) == set(CONTRACT), (
        f"undeclared: {sorted(set(fields) - set(CONTRACT))}; "
        f"declared but gone: {sorted(set(CONTRACT) - set(fields))}"
    )
    assert "sources[].params" in fields and SourceSpec.model_fields["params"]


@pytest.mark.parametrize("field", sorted(CONTRACT))
def test_changing_a_field_moves_identities_as_declared(field, base, tmp_path):
    side, changes = CONTRACT[field]
    changes = dict(changes)
    base = _changed(base, changes.pop(BASE, {}), tmp_path)
    before = identities(parse_spec(base))
    after = identities(parse_spec(_changed(base, changes, tmp_path)))

    if side == NONE:
        assert sorted(after.values()) == sorted(before.values())
    elif side == ALL:
        assert set(after.values()).isdisjoint(before.values())
    elif side == SOURCE:
        name = base["sources"][0]["name"]
        renamed = {k: v for k, v in after.items() if k[0] != name}
        assert renamed == {k: v for k, v in before.items() if k[0] != name}
        mine = [v for k, v in after.items() if k[0] == name]
        assert mine and set(mine).isdisjoint(before.values())
    else:
        assert set(after) != set(before)
        common = set(after) & set(before)
        assert common and all(after[k] == before[k] for k in common)


def test_file_contents_not_their_times_are_the_identity(base, tmp_path):
    """Rewriting a task or DeepSpeed file with the same bytes keeps every identity."""
    before = identities(parse_spec(base))
    (tmp_path / "tasks.jsonl").write_text(TASKS)
    (tmp_path / "ds.json").write_text(DS_JSON)
    assert identities(parse_spec(base)) == before


@pytest.mark.parametrize("precision", ["auto", "fp32", "bf16"])
@pytest.mark.parametrize("gpus", [0, 1])
def test_resolved_precision_is_what_training_uses(base, precision, gpus):
    base["train"]["precision"] = precision
    base["resources"]["gpus_per_worker"] = gpus
    spec = parse_spec(base)
    bf16 = uses_bf16(spec.train, use_gpu=gpus > 0)
    assert resolved_precision(spec) == ("bf16" if bf16 else "fp32")


def test_auto_and_the_precision_it_resolves_to_are_one_measurement(base):
    auto_cpu = identities(parse_spec(base))
    base["train"]["precision"] = "fp32"
    assert identities(parse_spec(base)) == auto_cpu
    base["resources"]["gpus_per_worker"] = 1
    fp32_gpu = identities(parse_spec(base))
    assert fp32_gpu == auto_cpu  # fp32 on a GPU measures what fp32 on a CPU does
    base["train"]["precision"] = "auto"
    assert set(identities(parse_spec(base)).values()).isdisjoint(auto_cpu.values())


@pytest.mark.parametrize(
    "change",
    [
        {"schedule.warmup_steps": 0, "schedule.cooldown_fraction": 0.5},
        {"schedule.cooldown_shape": "1-sqrt", "schedule.share_trunk": False},
    ],
)
def test_wsd_only_settings_do_not_move_a_linear_schedule(base, tmp_path, change):
    assert identities(parse_spec(_changed(base, change, tmp_path))) == identities(parse_spec(base))


def test_warmup_fraction_does_not_move_a_wsd_schedule(base, tmp_path):
    wsd = _changed(base, WSD, tmp_path)
    other = _changed(wsd, {"schedule.warmup_fraction": 0.3}, tmp_path)
    assert identities(parse_spec(other)) == identities(parse_spec(wsd))


# -- the params of every built-in source kind and curation step ----------------------------
# All on the SOURCE side: they decide which documents a spend buys. Each kind is checked
# from a base source of that kind (sources[0] of the demo spec replaced).

KIND_BASE = {
    "as_is": {"path": "demo:math_train", "usd_per_token": 1e-5},
    "classifier_filter": {
        "raw_path": "demo:web",
        "usd_per_doc_scored": 3.6e-4,
        "positives_path": "demo:math_seed",
        "negatives_path": "demo:general_seed",
    },
    "synthetic": {"generator": "ngram_lm", "seed_path": "demo:math_seed", "usd_per_token": 2e-6},
    "dedup": {},
}
PARAMS_CONTRACT: dict[str, dict[str, dict[str, Any]]] = {
    "as_is": {
        "path": {"path": "demo:math_seed"},
        "usd_per_token": {"usd_per_token": 2e-5},
        "text_field": {"text_field": "body"},
    },
    "classifier_filter": {
        "raw_path": {"raw_path": "demo:general_train"},
        "usd_per_doc_scored": {"usd_per_doc_scored": 1e-3},
        "positives_path": {"positives_path": "demo:math_train"},
        "negatives_path": {"negatives_path": "demo:general_train"},
        "positives": {"positives": ["a proof"]},
        "negatives": {"negatives": ["a recipe"]},
        "model_path": {
            "model_path": "hub-org/classifier",
            "positives_path": None,
            "negatives_path": None,
        },
        "positive_label": {"positive_label": 0},
        "max_length": {"max_length": 64},
        "threshold": {"threshold": 0.7},
        "top_fraction": {"top_fraction": 0.3},
        "calibration_docs": {"calibration_docs": 50},
        "n_features": {"n_features": 1024},
        "text_field": {"text_field": "body"},
    },
    "synthetic": {
        "generator": {"generator": "math_worked_examples"},
        "usd_per_token": {"usd_per_token": 1e-6},
        "seed_path": {"seed_path": "demo:math_train"},
        "order": {"order": 2},
        "worked_examples_fraction": {"worked_examples_fraction": 0.5},
        "seed": {"seed": 1},
        "text_field": {"text_field": "body"},
        "model_path": {"model_path": "hub-org/generator"},
        "prompts": {"prompts": ["Prove that"]},
        "prompt_chars": {"prompt_chars": 100},
        "max_new_tokens": {"max_new_tokens": 64},
        "temperature": {"temperature": 0.7},
        "top_k": {"top_k": 5},
        "top_p": {"top_p": 0.9},
        "do_sample": {"do_sample": False},
        "keep_prompt": {"keep_prompt": True},
    },
    "dedup": {
        "threshold": {"threshold": 0.9},
        "num_perm": {"num_perm": 64},
        "shingle": {"shingle": 3},
        "seed": {"seed": 1},
        "usd_per_doc": {"usd_per_doc": 1e-4},
    },
}


def _kinds() -> dict[str, type[SpecModel]]:
    from annealscale.anneal.sources import SOURCE_KINDS, STEP_KINDS

    return {
        kind: implementation.Params
        for registry in (SOURCE_KINDS, STEP_KINDS)
        for kind, implementation in registry.items()
        if implementation.__module__.startswith("annealscale.")
    }


def test_every_builtin_params_field_has_a_declared_change():
    declared = {(kind, name) for kind, fields in PARAMS_CONTRACT.items() for name in fields}
    walked = {(kind, name) for kind, params in _kinds().items() for name in spec_fields(params)}
    assert walked == declared, (
        f"undeclared: {sorted(walked - declared)}; gone: {sorted(declared - walked)}"
    )


def _with_kind(base: dict, kind: str, params: dict) -> dict:
    data = yaml.safe_load(yaml.safe_dump(base))
    source = data["sources"][0]
    if kind == "dedup":
        source["steps"] = [{"kind": "dedup", "params": params}]
    else:
        source.update(kind=kind, params=params)
    return data


@pytest.mark.parametrize(
    ("kind", "name"),
    [(kind, name) for kind, fields in PARAMS_CONTRACT.items() for name in fields],
)
def test_changing_a_params_field_renews_only_its_sources_cells(base, kind, name):
    before_data = _with_kind(base, kind, KIND_BASE[kind])
    after_data = _with_kind(base, kind, {**KIND_BASE[kind], **PARAMS_CONTRACT[kind][name]})
    before = identities(parse_spec(before_data))
    after = identities(parse_spec(after_data))

    source = base["sources"][0]["name"]
    assert {k: v for k, v in after.items() if k[0] != source} == {
        k: v for k, v in before.items() if k[0] != source
    }
    mine = [v for k, v in after.items() if k[0] == source]
    assert mine and set(mine).isdisjoint(before.values())
