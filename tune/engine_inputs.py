"""Engine inputs a sweep prepares on the driver, before any anneal: the validated DeepSpeed
configuration, the encoded multiple-choice tasks, and when evaluations happen."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from annealscale.anneal.deepspeed_config import deepspeed_config, load_user_config, uses_bf16
from annealscale.anneal.evaluate import choice_metrics, score_choices
from annealscale.anneal.tasks import EncodedTask, encode_task_file
from annealscale.core.hashing import content_hash
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


def encode_tasks(
    spec: ExperimentSpec, tokenizer, *, resolve, cache: Path, model_path: str
) -> dict[str, tuple[EncodedTask, Path]]:
    """Every task of ``spec`` encoded with the base tokenizer, by task name."""
    tasks = {}
    for task in spec.eval.tasks:
        path = encode_task_file(
            resolve(task.path),
            tokenizer,
            max_len=spec.train.seq_len + 1,
            cache_dir=cache,
            max_questions=task.max_questions,
            key=content_hash(model_path),
        )
        tasks[task.name] = (EncodedTask.load(path), path)
    return tasks


def base_task_scores(model, tasks: dict[str, tuple[EncodedTask, Path]]) -> dict[str, float]:
    """The base model's task metrics (``<name>_accuracy``, ``<name>_logprob``)."""
    scores = {}
    for name, (task, _) in tasks.items():
        accuracy, logprob = choice_metrics(task, score_choices(model, task))
        scores[f"{name}_accuracy"] = accuracy
        scores[f"{name}_logprob"] = logprob
    return scores


def evaluation_steps(steps: int, every: int) -> list[int]:
    """Optimizer steps after which an intermediate evaluation runs (the final one apart)."""
    return list(range(every, steps, every)) if every else []
