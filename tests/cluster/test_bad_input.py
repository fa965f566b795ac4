"""Bad input, as a new user types it: every case ends with one line on stderr naming the
spec field, file or option and what to do, exit code 2, no traceback, and no file of the
user's changed (nor a new one written).

The cases are data (`CASES`). Each runs in a fresh directory holding a valid spec, small
data files, a model directory and a results table; a case edits one of them or passes bad
arguments. They run in-process through `annealscale.cluster.cli.main` (seconds for all);
`test_console_script_behaves_alike` runs a few through the installed ``annealscale``
command to show the real process does the same. All fail before any compute: no Ray.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from annealscale.analysis.table import load_results
from annealscale.cluster.cli import main

REPO = Path(__file__).resolve().parents[2]
DEMO_SPEC = REPO / "examples" / "demo.yaml"
DEMO_RESULTS = REPO / "tests" / "analysis" / "data" / "demo_results.parquet"
DELETE = object()
"""A spec change that removes the field."""
INF, NAN = math.inf, math.nan


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]
    """Arguments after ``annealscale``, in the case's directory."""
    expect: str
    """A regular expression the error line must match (the field, file or option)."""
    spec: dict[str, Any] = field(default_factory=dict)
    """Changes to the valid spec written as ``spec.yaml``: dotted path -> value."""
    spec_text: str | None = None
    """``spec.yaml`` written verbatim instead (YAML-level problems)."""
    table: Callable[[pd.DataFrame], pd.DataFrame] | None = None
    """Rewrites ``results.parquet`` from the demo results."""
    env: dict[str, str | None] = field(default_factory=dict)
    hidden: str | None = None
    """A secret in the input that must not appear in the message."""


def spec(case_id: str, changes: dict, expect: str, **kw) -> Case:
    return Case(case_id, ("validate", "spec.yaml"), expect, spec=changes, **kw)


def yaml_text(case_id: str, text: str, expect: str) -> Case:
    return Case(case_id, ("validate", "spec.yaml"), expect, spec_text=text)


def table(case_id: str, rewrite, expect: str) -> Case:
    return Case(case_id, ("analyze", "results.parquet", "--out", "report"), expect, table=rewrite)


def cli(case_id: str, argv: str, expect: str, **kw) -> Case:
    return Case(case_id, tuple(argv.split()), expect, **kw)


def _valid_yaml(extra: str) -> str:
    return DEMO_SPEC.read_text() + extra


def _twice_nested() -> str:
    text = DEMO_SPEC.read_text()
    return text.replace("  seq_len: 128\n", "  seq_len: 128\n  seq_len: 256\n", 1)


def _with(df: pd.DataFrame, row: int, **values) -> pd.DataFrame:
    df = df.copy()
    for column, value in values.items():
        df[column] = df[column].astype(float)
        df.loc[row, column] = value
    return df


def _conflicting_copy(df: pd.DataFrame) -> pd.DataFrame:
    twin = df.iloc[[3]].copy()
    twin["domain_bpb"] = twin["domain_bpb"] + 0.1
    return pd.concat([df, twin], ignore_index=True)


SPEC_CASES = [
    # identity and names
    spec("name-escapes-storage", {"name": "../../../tmp/x"}, r"^name: .*directory inside"),
    spec("name-with-separator", {"name": "a/b"}, r"^name: "),
    spec("name-hidden", {"name": ".hidden"}, r"^name: "),
    spec("name-empty", {"name": ""}, r"^name: must not be empty"),
    spec("name-not-a-string", {"name": 123}, r"^name: expected a string"),
    spec("name-backslash", {"name": "a\\b"}, r"^name: "),
    spec("base-model-missing-section", {"base_model": DELETE}, r"^base_model: required"),
    spec("unknown-top-field", {"nmae": "x"}, r"^nmae: unknown field; did you mean 'name'"),
    # prices and spends
    spec("price-inf", {"prices.usd_per_pflop": INF}, r"^prices.usd_per_pflop: must be a finite"),
    spec("price-nan", {"prices.usd_per_pflop": NAN}, r"^prices.usd_per_pflop: must be a finite"),
    spec("price-negative", {"prices.usd_per_pflop": -1.0}, r"^prices.usd_per_pflop: must be pos"),
    spec("price-zero", {"prices.usd_per_pflop": 0.0}, r"^prices.usd_per_pflop: must be positive"),
    spec("price-string", {"prices.usd_per_pflop": "cheap"}, r"^prices.usd_per_pflop: expected a n"),
    spec(
        "token-price-inf",
        {"sources[0].params.usd_per_token": INF},
        r"^sources\[0\].params.usd_per_token: must be a finite",
    ),
    spec(
        "token-price-negative",
        {"sources[0].params.usd_per_token": -1e-5},
        r"^sources\[0\].params.usd_per_token: must be positive",
    ),
    spec(
        "token-price-nan",
        {"sources[0].params.usd_per_token": NAN},
        r"^sources\[0\].params.usd_per_token: must be a finite",
    ),
    spec(
        "doc-price-inf",
        {"sources[1].params.usd_per_doc_scored": INF},
        r"^sources\[1\].params.usd_per_doc_scored: must be a finite",
    ),
    spec(
        "synthetic-price-nan",
        {"sources[2].params.usd_per_token": NAN},
        r"^sources\[2\].params.usd_per_token: must be a finite",
    ),
    spec("spend-inf", {"grid.curation_spend": [INF]}, r"^grid.curation_spend\[0\]: must be a fin"),
    spec("spend-nan", {"grid.curation_spend": [NAN]}, r"^grid.curation_spend\[0\]: must be a fin"),
    spec("spend-negative", {"grid.curation_spend": [-1.0]}, r"^grid.curation_spend: spends must"),
    spec("spend-empty", {"grid.curation_spend": []}, r"^grid.curation_spend: must list"),
    spec("spend-repeated", {"grid.curation_spend": [0.2, 0.2]}, r"^grid.curation_spend: must not"),
    spec(
        "source-spend-negative",
        {"sources[0].curation_spend": [-1.0]},
        r"^sources\[0\].curation_spend: every spend must be positive",
    ),
    spec(
        "source-spend-inf",
        {"sources[0].curation_spend": [INF]},
        r"^sources\[0\].curation_spend\[0\]: must be a finite",
    ),
    spec(
        "source-spend-repeated",
        {"sources[0].curation_spend": [0.5, 0.5]},
        r"^sources\[0\].curation_spend: must not repeat",
    ),
    # grid
    spec("tokens-negative", {"grid.train_tokens": [-5]}, r"^grid.train_tokens: budgets must be"),
    spec("tokens-nan", {"grid.train_tokens": [NAN]}, r"^grid.train_tokens\[0\]: expected an int"),
    spec("tokens-fraction", {"grid.train_tokens": [1.5]}, r"^grid.train_tokens\[0\]: expected an"),
    spec("tokens-below-one-step", {"grid.train_tokens": [100]}, r"^grid.train_tokens\[0\]: 100 "),
    spec(
        "tokens-same-steps",
        {"grid.train_tokens": [16384, 16385]},
        r"^grid.train_tokens\[1\]: .*same number of optimizer steps",
    ),
    spec("tokens-empty", {"grid.train_tokens": []}, r"^grid.train_tokens: must list"),
    spec("seeds-repeated", {"grid.seeds": [0, 0]}, r"^grid.seeds: must not repeat"),
    spec("seeds-empty", {"grid.seeds": []}, r"^grid.seeds: must list"),
    spec("seeds-string", {"grid.seeds": ["a"]}, r"^grid.seeds\[0\]: expected an integer"),
    # mixture and schedule
    spec("fraction-nan", {"domain_fraction": NAN}, r"^domain_fraction: must be a finite"),
    spec("fraction-inf", {"domain_fraction": INF}, r"^domain_fraction: must be a finite"),
    spec("fraction-zero", {"domain_fraction": 0.0}, r"^domain_fraction: must be in \(0, 1\]"),
    spec("fraction-above-one", {"domain_fraction": 1.5}, r"^domain_fraction: must be in"),
    spec("fraction-string", {"domain_fraction": "half"}, r"^domain_fraction: expected a number"),
    spec("lr-nan", {"schedule.peak_lr": NAN}, r"^schedule.peak_lr: must be a finite"),
    spec("lr-too-big", {"schedule.peak_lr": 2.0}, r"^schedule.peak_lr: must be in \(0, 1\)"),
    spec("lr-negative", {"schedule.peak_lr": -1e-3}, r"^schedule.peak_lr: must be in"),
    spec("schedule-kind", {"schedule.kind": "cosine"}, r"^schedule.kind: got 'cosine'"),
    spec("warmup-one", {"schedule.warmup_fraction": 1.0}, r"^schedule.warmup_fraction: must be in"),
    spec("warmup-nan", {"schedule.warmup_fraction": NAN}, r"^schedule.warmup_fraction: must be a"),
    spec(
        "cooldown-inf",
        {"schedule.cooldown_fraction": INF},
        r"^schedule.cooldown_fraction: must be a finite",
    ),
    spec("warmup-steps-linear", {"schedule.warmup_steps": 5}, r"^schedule.warmup_steps: applies"),
    # train
    spec("seq-len-tiny", {"train.seq_len": 4}, r"^train.seq_len: must be at least 8"),
    spec("batch-zero", {"train.batch_size": 0}, r"^train.batch_size: must be a positive"),
    spec("micro-batch-not-divisor", {"train.micro_batch_size": 5}, r"^train.batch_size: must be"),
    spec("micro-batch-zero", {"train.micro_batch_size": 0}, r"^train.micro_batch_size: must be"),
    spec("zero-stage", {"train.zero_stage": 4}, r"^train.zero_stage: must be 0, 1, 2 or 3"),
    spec("weight-decay-negative", {"train.weight_decay": -0.1}, r"^train.weight_decay: must be"),
    spec("weight-decay-nan", {"train.weight_decay": NAN}, r"^train.weight_decay: must be"),
    spec("grad-clip-inf", {"train.grad_clip": INF}, r"^train.grad_clip: must be a finite"),
    spec("grad-clip-negative", {"train.grad_clip": -1.0}, r"^train.grad_clip: must be non-neg"),
    spec("precision", {"train.precision": "fp8"}, r"^train.precision: got 'fp8'"),
    spec(
        "betas-one", {"train.optimizer": {"betas": [0.9]}}, r"^train.optimizer.betas\[1\]: required"
    ),
    spec("betas-nan", {"train.optimizer": {"betas": [0.9, NAN]}}, r"^train.optimizer.betas\[1\]"),
    spec("eps-zero", {"train.optimizer": {"eps": 0.0}}, r"^train.optimizer.eps: must be positive"),
    spec("eps-nan", {"train.optimizer": {"eps": NAN}}, r"^train.optimizer.eps: must be a finite"),
    spec("optimizer", {"train.optimizer": {"name": "lion"}}, r"^train.optimizer.name: got 'lion'"),
    spec("seq-len-string", {"train.seq_len": "16"}, r"^train.seq_len: expected an integer"),
    # resources, retries, tracking, checkpoints
    spec("workers-zero", {"resources.num_workers": 0}, r"^resources.num_workers: must be at least"),
    spec("cpus-negative", {"resources.cpus_per_worker": -1}, r"^resources.cpus_per_worker: must"),
    spec("gpus-negative", {"resources.gpus_per_worker": -1}, r"^resources.gpus_per_worker: must"),
    spec(
        "concurrency-zero",
        {"resources.max_concurrent_trials": 0},
        r"^resources.max_concurrent_trials: must be at least 1",
    ),
    spec(
        "driver-cpu",
        {"resources.driver_resources": {"CPU": 1.0}},
        r"^resources.driver_resources.CPU: must name a custom resource",
    ),
    spec(
        "driver-inf",
        {"resources.driver_resources": {"on_demand": INF}},
        r"^resources.driver_resources.on_demand: must be a finite",
    ),
    spec("backend", {"resources.torch_backend": "mpi"}, r"^resources.torch_backend: got 'mpi'"),
    spec("retries-negative", {"retries.worker_failures": -1}, r"^retries.worker_failures: must be"),
    spec("retries-string", {"retries.trial_failures": "many"}, r"^retries.trial_failures: expect"),
    spec("progress-zero", {"tracking.progress_seconds": 0.0}, r"^tracking.progress_seconds: must"),
    spec("progress-inf", {"tracking.progress_seconds": INF}, r"^tracking.progress_seconds: must"),
    spec(
        "mlflow-credentials",
        {"tracking.mlflow_tracking_uri": "https://alice:s3cret@mlflow.example"},
        r"^tracking.mlflow_tracking_uri: https://\*\*\*@mlflow.example carries credentials",
        hidden="s3cret",
    ),
    spec("checkpoint-zero", {"checkpoint.every_steps": 0}, r"^checkpoint.every_steps: must be"),
    spec("checkpoint-keep", {"checkpoint.keep": 0}, r"^checkpoint.keep: must keep at least one"),
    spec(
        "checkpoint-both",
        {"checkpoint.every_steps": 2, "checkpoint.every_tokens": 4096},
        r"^checkpoint.every_steps: give every_steps or every_tokens",
    ),
    spec("adaptive-threshold", {"adaptive.threshold": 1.5}, r"^adaptive.threshold: must lie in"),
    spec("adaptive-nan", {"adaptive.budget_fraction": NAN}, r"^adaptive.budget_fraction: must be"),
    # eval
    spec("eval-tokens-zero", {"eval.max_tokens": 0}, r"^eval.max_tokens: must be a positive"),
    spec("eval-every-negative", {"eval.every_steps": -1}, r"^eval.every_steps: must be 0"),
    spec(
        "task-name",
        {"eval.tasks": [{"name": "bad name", "path": "tasks.jsonl"}]},
        r"^eval.tasks\[0\].name: must be letters",
    ),
    spec(
        "task-names-repeated",
        {"eval.tasks": [{"name": "a", "path": "tasks.jsonl"}, {"name": "a", "path": "t.jsonl"}]},
        r"^eval.tasks: task names must be unique",
    ),
    spec(
        "task-questions-zero",
        {"eval.tasks": [{"name": "a", "path": "tasks.jsonl", "max_questions": 0}]},
        r"^eval.tasks\[0\].max_questions: must be positive",
    ),
    # sources
    spec("sources-empty", {"sources": []}, r"^sources: list at least one source"),
    spec(
        "sources-same-name",
        {"sources[1].name": "textbook"},
        r"^sources: source names must be unique; repeated: textbook",
    ),
    spec("source-kind", {"sources[0].kind": "nope"}, r"^sources\[0\].kind: unknown source kind"),
    spec(
        "source-param-typo",
        {"sources[0].params.usd_per_tokn": 1.0, "sources[0].params.usd_per_token": DELETE},
        r"^sources\[0\].params.usd_per_tokn: unknown field; did you mean 'usd_per_token'",
    ),
    spec(
        "threshold-above-one",
        {"sources[1].params.threshold": 1.5},
        r"^sources\[1\].params.threshold: must be a probability",
    ),
    spec(
        "actor-cpus-zero",
        {"sources[1].resources": {"cpus_per_actor": 0.0}},
        r"^sources\[1\].resources.cpus_per_actor: must be positive",
    ),
    spec("trust-remote-code", {"base_model.trust_remote_code": "yes"}, r"^base_model.trust_rem"),
    # storage
    spec("storage-empty", {"storage_path": ""}, r"^storage_path: must not be empty"),
    spec(
        "storage-credentials",
        {"storage_path": "s3://AKIA:topsecret@bucket/x"},
        r"^storage_path: s3://\*\*\*@bucket/x carries credentials",
        hidden="topsecret",
    ),
    spec(
        "data-uri-credentials",
        {"replay.path": "s3://AKIA:topsecret@bucket/replay/"},
        r"^replay.path: s3://\*\*\*@bucket/replay/ carries credentials",
        hidden="topsecret",
    ),
    spec(
        "source-uri-credentials",
        {"sources[0].params.path": "gs://u:pw123@bucket/books.parquet"},
        r"^sources\[0\].params.path: gs://\*\*\*@bucket/books.parquet carries",
        hidden="pw123",
    ),
    spec("storage-is-a-file", {"storage_path": "notes.txt"}, r"^storage_path: notes.txt is not a"),
    spec("storage-under-a-file", {"storage_path": "notes.txt/x"}, r"^storage_path: .*is a file"),
]

PATH_CASES = [
    spec("model-missing", {"base_model.path": "./no-model"}, r"^base_model.path: ./no-model does"),
    spec("model-empty-dir", {"base_model.path": "empty"}, r"^base_model.path: empty is an empty"),
    spec("model-is-a-file", {"base_model.path": "notes.txt"}, r"^base_model.path: notes.txt is a"),
    spec("model-no-config", {"base_model.path": "textonly"}, r"^base_model.path: textonly has no"),
    spec("model-demo-typo", {"base_model.path": "demo:bas"}, r"^base_model.path: demo:bas: unkn"),
    spec("replay-missing", {"replay.path": "replay.parquet"}, r"^replay.path: replay.parquet: no"),
    spec("replay-empty-dir", {"replay.path": "empty"}, r"^replay.path: empty is an empty dir"),
    spec("replay-no-documents", {"replay.path": "textonly"}, r"^replay.path: textonly: no .parq"),
    spec("replay-demo-typo", {"replay.path": "demo:general"}, r"^replay.path: demo:general: unk"),
    spec("eval-domain-missing", {"eval.domain.path": "x.jsonl"}, r"^eval.domain.path: x.jsonl"),
    spec("eval-general-glob", {"eval.general.path": "nothing-*.parquet"}, r"^eval.general.path: "),
    spec(
        "source-path-missing",
        {"sources[0].params.path": "/no/such/books.parquet"},
        r"^sources\[0\].params.path: /no/such/books.parquet: no such file",
    ),
    spec(
        "raw-path-missing",
        {"sources[1].params.raw_path": "crawl/"},
        r"^sources\[1\].params.raw_path: crawl/: no such file",
    ),
    spec(
        "seed-path-demo-typo",
        {"sources[2].params.seed_path": "demo:math"},
        r"^sources\[2\].params.seed_path: demo:math: unknown demo asset",
    ),
    spec(
        "task-file-missing",
        {"eval.tasks": [{"name": "arith", "path": "arith.jsonl"}]},
        r"^eval.tasks\[0\].path: arith.jsonl: no such file",
    ),
    spec(
        "task-file-is-dir",
        {"eval.tasks": [{"name": "arith", "path": "empty"}]},
        r"^eval.tasks\[0\].path: empty is a directory",
    ),
    spec(
        "deepspeed-missing",
        {"train.deepspeed_config": "ds.json"},
        r"^train.deepspeed_config: ds.json: no such file",
    ),
]

YAML_CASES = [
    yaml_text("duplicate-key", _valid_yaml("name: other\n"), r"spec.yaml: line \d+: key 'name'"),
    yaml_text("duplicate-nested-key", _twice_nested(), r"spec.yaml: line \d+: key 'seq_len' app"),
    yaml_text("not-yaml", "name: [unclosed\n", r"spec.yaml: not valid YAML \(line \d+\)"),
    yaml_text("empty-file", "", r"^spec.yaml: is empty; write a spec"),
    yaml_text("a-list", "- 1\n- 2\n", r"^spec: expected a mapping of fields, got a list"),
    yaml_text("number-key", _valid_yaml("5: x\n"), r"spec.yaml: line \d+: key 5 is not a name"),
    yaml_text("tab-indent", "name: x\n\tbase_model: y\n", r"spec.yaml: not valid YAML"),
    cli("spec-missing", "validate nothing.yaml", r"^nothing.yaml: spec file not found"),
    cli("spec-is-dir", "validate empty", r"^empty: is a directory"),
]

SWEEP_CASES = [
    cli("sweep-out-is-file", "sweep spec.yaml --out notes.txt", r"^--out notes.txt: not a dir"),
    cli("sweep-out-under-file", "sweep spec.yaml --out notes.txt/o", r"^--out notes.txt/o: not a"),
    Case(
        "sweep-storage-is-file",
        ("sweep", "spec.yaml", "--out", "out"),
        r"^storage_path: notes.txt is not a directory",
        spec={"storage_path": "notes.txt"},
    ),
    Case(
        "sweep-missing-data",
        ("sweep", "spec.yaml", "--out", "out"),
        r"^replay.path: nope.parquet: no such file",
        spec={"replay.path": "nope.parquet"},
    ),
    Case(
        "sweep-name-escapes",
        ("sweep", "spec.yaml", "--out", "out"),
        r"^name: ",
        spec={"name": "../x"},
    ),
    Case(
        "sweep-empty-model",
        ("sweep", "spec.yaml", "--out", "out"),
        r"^base_model.path: empty is an empty directory",
        spec={"base_model.path": "empty"},
    ),
    cli("sweep-no-out", "sweep spec.yaml", r"the following arguments are required: --out"),
    cli("sweep-spec-missing", "sweep none.yaml --out out", r"^none.yaml: spec file not found"),
    cli("demo-out-is-file", "demo --out notes.txt", r"^--out notes.txt: not a directory"),
]

TABLE_CASES = [
    cli("results-missing", "analyze none.parquet --out report", r"results table not found"),
    cli("results-not-parquet", "analyze notes.txt --out report", r"cannot read notes.txt as"),
    cli("analyze-out-is-file", "analyze results.parquet --out notes.txt", r"^--out notes.txt: not"),
    table("results-empty", lambda df: df.iloc[:0], r"results table is empty"),
    table("no-bpb-column", lambda df: df.drop(columns="domain_bpb"), r"missing required column"),
    table("no-source-column", lambda df: df.drop(columns="source"), r"'source'"),
    table(
        "bpb-text",
        lambda df: df.assign(domain_bpb=["x"] * len(df)),
        r"results column 'domain_bpb' must be numeric",
    ),
    table(
        "every-bpb-nan",
        lambda df: df.assign(domain_bpb=np.nan),
        r"no finished cells with a positive, finite 'domain_bpb'",
    ),
    table(
        "every-bpb-negative",
        lambda df: df.assign(domain_bpb=-1.0),
        r"no finished cells with a positive, finite 'domain_bpb'",
    ),
    table("none-finished", lambda df: df.assign(status="failed"), r"no finished cells"),
    table(
        "same-cell-and-seed-differ",
        _conflicting_copy,
        r"results rows \w+ spend=[\d.]+ tokens=\d+ seed=\d+ bpb=[\d.]+; .* are the same cell and seed",
    ),
    table(
        "row-tokens-negative",
        lambda df: _with(df, 0, train_tokens=-5.0),
        r"'train_tokens' must be finite and positive",
    ),
    table(
        "row-tokens-inf",
        lambda df: _with(df, 0, train_tokens=np.inf),
        r"'train_tokens' must be finite and positive",
    ),
    table(
        "baseline-varies",
        lambda df: _with(df, 0, base_domain_bpb=9.0),
        r"'base_domain_bpb' must hold the same value",
    ),
    table(
        "row-spend-negative",
        lambda df: _with(df, 0, curation_spend=-1.0),
        r"'curation_spend' must be finite and non-negative",
    ),
]

ARGUMENT_CASES = [
    cli("propose-tokens-negative", "propose results.parquet --target-tokens 1e6 --tokens -5", "-5"),
    cli("propose-tokens-nan", "propose results.parquet --target-tokens 1e6 --tokens nan", "nan"),
    cli("propose-tokens-inf", "propose results.parquet --target-tokens 1e6 --tokens inf", "inf"),
    cli("propose-tokens-zero", "propose results.parquet --target-tokens 1e6 --tokens 0", r"--tok"),
    cli("propose-tokens-word", "propose results.parquet --target-tokens 1e6 --tokens x", r"--tok"),
    cli("propose-n-zero", "propose results.parquet --target-tokens 1e6 -n 0", r"argument -n"),
    cli("propose-n-negative", "propose results.parquet --target-tokens 1e6 -n -3", r"-n"),
    cli("propose-n-fraction", "propose results.parquet --target-tokens 1e6 -n 1.5", r"-n"),
    cli("propose-target-nan", "propose results.parquet --target-tokens nan", r"--target-tokens"),
    cli("propose-spend-zero", "propose results.parquet --target-spend 0", r"--target-spend"),
    cli("propose-cost-inf", "propose results.parquet --target-cost inf", r"--target-cost"),
    cli("propose-no-target", "propose results.parquet", r"propose needs a target"),
    cli("propose-missing", "propose none.parquet --target-tokens 1e6", r"not found"),
    cli("analyze-target-negative", "analyze results.parquet --out r --target-tokens -5", "-5"),
    cli("analyze-target-nan", "analyze results.parquet --out r --target-tokens nan", "nan"),
    cli("analyze-spend-inf", "analyze results.parquet --out r --target-spend inf", r"--target-s"),
    cli("analyze-threshold-big", "analyze results.parquet --out r --threshold 1.5", r"--thresh"),
    cli("analyze-threshold-nan", "analyze results.parquet --out r --threshold nan", r"--thresh"),
    cli("analyze-margin-word", "analyze results.parquet --out r --margin wide", r"--margin"),
    cli("unknown-command", "fly", r"invalid choice: 'fly'"),
    cli("unknown-option", "validate spec.yaml --fast", r"unrecognized arguments: --fast"),
    cli("validate-no-spec", "validate", r"the following arguments are required: spec"),
    cli("schema-argument", "schema extra", r"unrecognized arguments: extra"),
    cli("cluster-config-missing", "cluster up none.yaml", r"none.yaml: cluster config not found"),
]

_SUBMIT = "submit spec.yaml --address http://127.0.0.1:1 --out /abs/out"
SUBMIT_CASES = [
    cli("env-hf-token", f"{_SUBMIT} --env HF_TOKEN=x", r"^--env HF_TOKEN: looks like a secret"),
    cli("env-api-key", f"{_SUBMIT} --env WANDB_API_KEY=x", r"^--env WANDB_API_KEY: looks like"),
    cli("env-aws-secret", f"{_SUBMIT} --env AWS_SECRET_ACCESS_KEY=x", r"AWS_SECRET_ACCESS_KEY"),
    cli("env-password", f"{_SUBMIT} --env DB_PASSWORD=x", r"^--env DB_PASSWORD: looks like"),
    cli("env-credentials", f"{_SUBMIT} --env GCP_CREDENTIALS=x", r"^--env GCP_CREDENTIALS"),
    cli(
        "env-ray-token-even-allowed",
        f"{_SUBMIT} --env RAY_AUTH_TOKEN=x --allow-secret-env",
        r"^--env RAY_AUTH_TOKEN: never pass the token",
    ),
    cli("env-no-value", f"{_SUBMIT} --env NOEQUALS", r"^--env NOEQUALS: expected NAME=VALUE"),
    cli("submit-relative-out", "submit spec.yaml --address http://h:1 --out o", r"^--out o: give"),
    cli("submit-cpus-negative", f"{_SUBMIT} --entrypoint-num-cpus -1", r"--entrypoint-num-cpus"),
    cli("submit-memory-zero", f"{_SUBMIT} --entrypoint-memory 0", r"--entrypoint-memory"),
    cli(
        "submit-address-password",
        "submit spec.yaml --address ray://alice:hunter2@head:10001 --out /abs/out",
        r"^--address ray://\*\*\*@head:10001: the Jobs API is the dashboard's HTTP",
        hidden="hunter2",
    ),
    cli(
        "jobs-no-address",
        "jobs status abc",
        r"^--address: give the Ray dashboard address",
        env={"RAY_ADDRESS": None},
    ),
]

CASES = SPEC_CASES + PATH_CASES + YAML_CASES + SWEEP_CASES + TABLE_CASES + ARGUMENT_CASES
CASES += SUBMIT_CASES


def _set(data: Any, dotted: str, value: Any) -> None:
    parts = re.findall(r"[^.\[\]]+|\[\d+\]", dotted)
    for part in parts[:-1]:
        data = data[int(part[1:-1])] if part.startswith("[") else data.setdefault(part, {})
    last = parts[-1]
    key: Any = int(last[1:-1]) if last.startswith("[") else last
    if value is DELETE:
        del data[key]
    else:
        data[key] = value


def _user_files(root: Path) -> None:
    """What a user has in the directory: a valid spec, documents, a model, a table."""
    pd.DataFrame({"text": ["a b c", "d e f"]}).to_parquet(root / "docs.parquet")
    (root / "notes.txt").write_text("not a directory\n")
    (root / "model").mkdir()
    (root / "model" / "config.json").write_text("{}")
    (root / "empty").mkdir()
    (root / "textonly").mkdir()
    (root / "textonly" / "readme.txt").write_text("no documents here\n")
    (root / "tasks.jsonl").write_text('{"question": "1+1", "choices": ["2", "3"], "answer": 0}\n')
    (root / "t.jsonl").write_text((root / "tasks.jsonl").read_text())
    shutil.copy(DEMO_RESULTS, root / "results.parquet")
    (root / "spec.yaml").write_text(DEMO_SPEC.read_text())


def _snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` with a hash of its contents (directories as ``dir``)."""
    return {
        str(p.relative_to(root)): "dir"
        if p.is_dir()
        else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
    }


def _prepare(case: Case, root: Path) -> None:
    _user_files(root)
    if case.spec_text is not None:
        (root / "spec.yaml").write_text(case.spec_text)
    elif case.spec:
        data = yaml.safe_load(DEMO_SPEC.read_text())
        for dotted, value in case.spec.items():
            _set(data, dotted, value)
        (root / "spec.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    if case.table is not None:
        case.table(pd.read_parquet(DEMO_RESULTS)).to_parquet(root / "results.parquet")


def _run_in_process(argv, capsys) -> int:
    try:
        return main(list(argv))
    except SystemExit as exc:  # argparse ends with SystemExit
        return exc.code


def test_there_are_at_least_100_cases_with_unique_ids():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(CASES) >= 100


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(
    case, tmp_path, monkeypatch, capsys, caplog
):
    _prepare(case, tmp_path)
    monkeypatch.chdir(tmp_path)
    # the caches too must be untouched: no demo asset is built before the input is checked
    monkeypatch.setenv("ANNEALSCALE_CACHE", str(tmp_path / "cache"))
    for name, value in case.env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    before = _snapshot(tmp_path)
    capsys.readouterr()

    code = _run_in_process(case.argv, capsys)

    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    message = re.sub(r"^annealscale( \w+)*: error: ", "", lines[0])
    assert re.search(case.expect, message), message
    if case.hidden:
        assert case.hidden not in err
    assert _snapshot(tmp_path) == before


CONSOLE_CASES = ["duplicate-key", "name-escapes-storage", "propose-tokens-nan", "sweep-out-is-file"]
CONSOLE_CASES += ["env-hf-token"]


@pytest.mark.parametrize("case_id", CONSOLE_CASES)
def test_console_script_behaves_alike(case_id, tmp_path):
    """The installed ``annealscale`` command: the same line and code as in-process."""
    case = next(c for c in CASES if c.id == case_id)
    _prepare(case, tmp_path)
    before = _snapshot(tmp_path)
    exe = Path(sys.executable).with_name("annealscale")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(
        [str(exe), *case.argv], cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert re.search(case.expect, re.sub(r"^annealscale( \w+)*: error: ", "", lines[0]))
    assert _snapshot(tmp_path) == before


# -- accepted with a warning: bad rows of a results table are named and left out ----------


def test_bad_bpb_rows_are_named_and_dropped():
    df = pd.read_parquet(DEMO_RESULTS)
    df.loc[2, "domain_bpb"] = np.nan
    df.loc[5, "domain_bpb"] = np.inf
    df.loc[7, "domain_bpb"] = -1.0

    table = load_results(df)

    assert len(table.finished) == len(df) - 3
    note = next(n for n in table.notes if "domain_bpb" in n)
    assert note.startswith("dropped 3 finished row(s)")
    for row in (2, 5, 7):
        r = df.loc[row]
        named = f"{r['source']} spend={r['curation_spend']:g} tokens={r['train_tokens']:g}"
        assert f"{named} seed={r['seed']:g} bpb={r['domain_bpb']:g}" in note


def test_repeated_rows_are_dropped_not_counted_as_seeds():
    df = pd.read_parquet(DEMO_RESULTS)
    doubled = pd.concat([df, df.iloc[[0, 4]]], ignore_index=True)

    table = load_results(doubled)
    plain = load_results(df)

    assert len(table.finished) == len(plain.finished)
    pd.testing.assert_frame_equal(table.finished, plain.finished)
    assert any(n.startswith("dropped 2 row(s) repeating an earlier row") for n in table.notes)


def test_repeated_rows_without_a_seed_column_are_not_extra_seeds():
    df = pd.read_parquet(DEMO_RESULTS).drop(columns="seed")
    doubled = pd.concat([df, df], ignore_index=True)

    assert len(load_results(doubled).finished) == len(load_results(df).finished)


def test_dropped_rows_are_named_alike_in_any_row_order():
    df = pd.read_parquet(DEMO_RESULTS)
    df.loc[[2, 9], "domain_bpb"] = [np.nan, -2.0]
    df = pd.concat([df, df.iloc[[4]]], ignore_index=True)
    shuffled = df.sample(frac=1.0, random_state=3).reset_index(drop=True)
    assert load_results(shuffled).notes == load_results(df).notes


def test_a_sweep_started_from_python_names_the_field_too(tmp_path):
    """`run_sweep` identifies the inputs first (`inputs_identity`), which checks the paths:
    an empty model folder is named as such, not as a folder without data files."""
    from annealscale.core.errors import SpecError
    from annealscale.tune.prepare import inputs_identity
    from annealscale.tune.spec import parse_spec

    (tmp_path / "model").mkdir()
    data = yaml.safe_load(DEMO_SPEC.read_text())
    data["base_model"]["path"] = str(tmp_path / "model")
    with pytest.raises(SpecError, match="^base_model.path: .* is an empty directory"):
        inputs_identity(parse_spec(data), resolve=lambda path: path)
