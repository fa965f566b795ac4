"""Evaluation inside a Ray Train worker: held-out bits per byte (at the end and every
``eval.every_steps`` optimizer steps) and the evaluation tasks (at the end, through
lm-evaluation-harness: `anneal.harness`).

Work is shared equally among the data-parallel workers and the sums are all-reduced:
under ZeRO-3 every forward pass gathers parameters collectively, so every rank must run
the same number of forward passes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from annealscale.anneal.evaluate import bits_per_byte, nll_and_bytes


def task_metric_names(job) -> list[str]:
    """Result columns the tasks add: ``task/<task>/<metric>`` (and ``_stderr``, ``bpb``)
    for every task, and ``<name>_accuracy`` and ``<name>_logprob`` for our JSONL tasks."""
    return list(job.tasks.columns) if job.tasks is not None else []


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
        self.suite = job.tasks if job.tasks is not None and not job.tasks.empty else None
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
        """Every task's metrics as result columns; the requests are shared among the
        workers and their scores summed, so every rank computes the same metrics."""
        if self.suite is None:
            return {}
        from annealscale.anneal.harness import evaluate_suite
        from annealscale.anneal.model import load_tokenizer

        started = time.time()
        tokenizer = load_tokenizer(
            self.job.model_path, trust_remote_code=self.job.trust_remote_code
        )
        scores = evaluate_suite(
            model,
            tokenizer,
            self.suite,
            rank=self.rank,
            world=self.world,
            reduce=lambda values: all_reduce_sum(values, self.device),
        )
        self.tokens += scores.tokens
        self.seconds += time.time() - started
        return scores.metrics

    def after_step(self, model, step: int, tokens: int, session) -> None:
        """Every ``eval_every_steps`` steps before the last, evaluate and report
        intermediate metrics (``eval_*``, never the final metric names) to ``session``
        (`anneal.session`)."""
        every = self.job.eval_every_steps
        if not every or step % every or step >= self.job.steps:
            return
        metrics = self.bits_per_byte(model)
        self.curve.append({"step": step, "train_tokens": tokens, **metrics})
        session.report({"eval_step": step, "eval_train_tokens": tokens, **_prefixed(metrics)})

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
