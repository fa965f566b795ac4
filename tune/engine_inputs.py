"""Engine inputs a sweep prepares on the driver, before any anneal: the validated DeepSpeed
configuration, the checked evaluation tasks, and when evaluations happen."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from annealscale.anneal.deepspeed_config import deepspeed_config, load_user_config, uses_bf16
from annealscale.anneal.harness import (
    ChoiceTask,
    SuiteScores,
    TaskSuite,
    check_suite,
    evaluate_suite,
)
from annealscale.anneal.tasks import read_questions
from annealscale.tune.spec import ExperimentSpec


def check_deepspeed(spec: ExperimentSpec, resolve: Callable[[str], str]) -> dict | None:
    """Load and validate the user's DeepSpeed JSON, and build the configuration once as the
    workers will, so a bad field fails here with one line rather than inside a worker."""
    path = spec.train.deepspeed_config
    user = load_user_config(resolve(path)) if path else None
    use_gpu = spec.resources.gpus_per_worker > 0
    deepspeed_config(
        spec.train,
        world_size=spec.resources.num_workers,
        bf16=uses_bf16(spec.train, use_gpu=use_gpu),
        user=user,
        source=path or "train.deepspeed_config",
        peak_lr=spec.schedule.peak_lr,
    )
    return user


def task_suite(
    spec: ExperimentSpec, resolve: Callable[[str], str], cache: Path | None = None
) -> TaskSuite:
    """Every evaluation task of ``spec`` (lm-eval tasks and our JSONL tasks) with its
    paths resolved, its data prepared under ``cache``; its result columns are filled
    once it ran on the base model."""
    harness = spec.eval.harness
    return TaskSuite(
        tasks=harness.tasks if harness else (),
        include_paths=tuple(resolve(p) for p in harness.include_paths) if harness else (),
        include_defaults=harness.include_defaults if harness else False,
        num_fewshot=harness.num_fewshot if harness else None,
        limit=harness.limit if harness else None,
        batch_size=harness.batch_size if harness else spec.train.micro_batch_size,
        choice_tasks=tuple(
            ChoiceTask(name=t.name, path=resolve(t.path), max_questions=t.max_questions)
            for t in spec.eval.tasks
        ),
        max_len=spec.train.seq_len + 1,
        cache_dir=str(Path(cache) / "task-datasets") if cache is not None else None,
    )


def check_tasks(suite: TaskSuite) -> None:
    """Read every JSONL task and build every lm-eval task once on the driver, so an unknown
    task name or missing data is one line before any compute (`anneal.harness.check_suite`)."""
    for task in suite.choice_tasks:
        read_questions(task.path, task.max_questions)
    if not suite.empty:
        check_suite(suite)


def base_task_scores(model, tokenizer, suite: TaskSuite) -> tuple[TaskSuite, SuiteScores]:
    """The base model's task metrics, and ``suite`` with the result columns they name."""
    if suite.empty:
        return suite, SuiteScores()
    scores = evaluate_suite(model, tokenizer, suite)
    return dataclasses.replace(suite, columns=tuple(scores.metrics)), scores


def evaluation_steps(steps: int, every: int) -> list[int]:
    """Optimizer steps after which an intermediate evaluation runs (the final one apart)."""
    return list(range(every, steps, every)) if every else []
