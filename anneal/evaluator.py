"""Evaluation inside a Ray Train worker: held-out bits per byte (at the end and every
``eval.every_steps`` optimizer steps) and multiple-choice tasks (at the end).

Work is shared equally among the data-parallel workers and the sums are all-reduced:
under ZeRO-3 every forward pass gathers parameters collectively, so every rank must run
the same number of forward passes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from annealscale.anneal.evaluate import bits_per_byte, choice_metrics, nll_and_bytes, score_choices
from annealscale.anneal.tasks import EncodedTask


def task_metric_names(job) -> list[str]:
    """Result columns the tasks add: ``<name>_accuracy`` and ``<name>_logprob``."""
    return [f"{name}_{kind}" for name, _ in job.tasks for kind in ("accuracy", "logprob")]


class Evaluator:
    """Evaluates ``job``'s held-out sets and tasks on this worker's share."""

    def __init__(self, job, *, rank: int, world: int, device, batch_size: int):
        from annealscale.anneal.packing import read_windows

        self.job = job
        self.rank, self.world = rank, world
        self.device = device
        self.batch_size = batch_size
        self.token_bytes = np.load(job.token_bytes_path)
        self.windows = {}
        for name, path in (("domain", job.domain_eval_dir), ("general", job.general_eval_dir)):
            windows = read_windows(Path(path), job.eval_windows)
            self.windows[name] = windows[: len(windows) - len(windows) % world][rank::world]
        self.tasks = {name: EncodedTask.load(path) for name, path in job.tasks}
        self.curve: list[dict] = []
        self.seconds = 0.0
        self.tokens = 0
        """Tokens this worker ran forward for evaluation (for eval FLOPs)."""

    def bits_per_byte(self, model) -> dict[str, float]:
        """``domain_bpb`` and ``general_bpb`` over the whole evaluation sets."""
        started = time.time()
        metrics = {}
        for name, windows in self.windows.items():
            nll, nbytes = nll_and_bytes(
                model, windows, self.token_bytes, batch_size=self.batch_size
            )
            nll, nbytes = all_reduce_sum([nll, float(nbytes)], self.device)
            metrics[f"{name}_bpb"] = bits_per_byte(nll, int(nbytes))
            self.tokens += int(windows.shape[0] * (windows.shape[1] - 1))
        self.seconds += time.time() - started
        return metrics

    def task_scores(self, model) -> dict[str, float]:
        """Accuracy and mean correct-choice log-probability of every task."""
        started = time.time()
        metrics = {}
        for name, task in self.tasks.items():
            mine = np.arange(self.rank, task.pairs, self.world)
            longest = -(-task.pairs // self.world)
            # pad with a repeat so every rank runs as many batches (results discarded)
            padded = np.concatenate(
                [mine, np.full(longest - len(mine), mine[0] if len(mine) else 0)]
            )
            local = score_choices(model, task, indices=padded, batch_size=self.batch_size)
            scores = np.zeros(task.pairs)
            scores[mine] = local[: len(mine)]
            scores = np.asarray(all_reduce_sum(scores.tolist(), self.device))
            accuracy, logprob = choice_metrics(task, scores)
            metrics[f"{name}_accuracy"] = accuracy
            metrics[f"{name}_logprob"] = logprob
            self.tokens += sum(len(task.sequence(int(i))) - 1 for i in mine)
        self.seconds += time.time() - started
        return metrics

    def after_step(self, model, step: int, tokens: int) -> None:
        """Every ``eval_every_steps`` steps before the last, evaluate and report
        intermediate metrics (``eval_*``, never the final metric names)."""
        every = self.job.eval_every_steps
        if not every or step % every or step >= self.job.steps:
            return
        import ray.train

        metrics = self.bits_per_byte(model)
        self.curve.append({"step": step, "train_tokens": tokens, **metrics})
        ray.train.report({"eval_step": step, "eval_train_tokens": tokens, **_prefixed(metrics)})

    def final(self, model, step: int, tokens: int) -> dict:
        """Final bits per byte, task scores, the curve (JSON) and evaluation totals."""
        metrics = self.bits_per_byte(model)
        self.curve.append({"step": step, "train_tokens": tokens, **metrics})
        metrics.update(self.task_scores(model))
        (eval_tokens,) = all_reduce_sum([float(self.tokens)], self.device)
        metrics["eval_curve"] = json.dumps(self.curve)
        metrics["eval_tokens"] = int(eval_tokens)
        metrics["eval_seconds"] = self.seconds
        return metrics


def _prefixed(metrics: dict) -> dict:
    return {f"eval_{k}": v for k, v in metrics.items()}


def all_reduce_sum(values: list[float], device) -> list[float]:
    """Element-wise sum over the data-parallel workers (identity on one worker)."""
    import torch
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor.tolist()
