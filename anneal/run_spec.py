"""Spec pieces that describe one anneal: model, data, schedule, optimisation, prices.

They are frozen spec models (`annealscale.core.spec_model`) validated on construction; `tune.spec`
composes them into the experiment spec. Where the work runs (workers, CPUs, GPUs) is not
here: it does not change the result and lives in the resources section.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from annealscale.core.errors import check
from annealscale.core.spec_model import SpecModel


class ModelSpec(SpecModel):
    """The base checkpoint every anneal starts from."""

    path: str
    """A directory saved with ``save_pretrained``, a hub id, or ``demo:base`` (built)."""
    trust_remote_code: bool = False
    """Run model code shipped with the checkpoint; only for checkpoints you trust."""


class DataSpec(SpecModel):
    """A set of documents on disk."""

    path: str
    """Parquet/JSONL file, directory or glob, or ``demo:SPLIT`` for the demo corpus."""
    text_field: str = "text"
    """Column (Parquet) or key (JSONL) holding the text."""


class TaskSpec(SpecModel):
    """A multiple-choice task scored by the log-likelihood of each choice.

    JSONL, one question per line: ``{"question": str, "choices": [str, ...], "answer": int}``
    (``answer`` indexes ``choices``). Reported as ``<name>_accuracy`` and
    ``<name>_logprob`` (mean log-probability of the correct choice, nats: smooth in scale,
    so it fits better than accuracy).
    """

    name: str
    """Metric prefix: letters, digits and underscores."""
    path: str
    """JSONL file of questions."""
    max_questions: int | None = None
    """Score only the first this many questions (all when absent)."""

    def validate_spec(self) -> None:
        check(
            self.name.isidentifier() and self.name.isascii(),
            "name",
            f"must be letters, digits and underscores (a metric prefix), got {self.name!r}",
        )
        check(
            self.max_questions is None or self.max_questions > 0,
            "max_questions",
            "must be positive (or omitted for all questions)",
        )


class HarnessSpec(SpecModel):
    """lm-evaluation-harness tasks run on each annealed model (and the base model).

    Offline by default: the team's tasks are lm-eval YAML configs under ``include_path``
    reading local files (``dataset_path: json`` with ``dataset_kwargs.data_files``; a
    relative data file is relative to the working directory, so prefer absolute paths).
    Reported as ``task/<task>/<metric>`` and ``task/<task>/<metric>_stderr`` for every
    metric the harness reports, plus ``task/<task>/bpb``: mean bits per byte of the
    correct answer (the task's loss). Needs the ``tasks`` extra (``lm-eval``).
    """

    tasks: tuple[str, ...]
    """lm-eval task, group or tag names."""
    include_path: str | tuple[str, ...] = ()
    """Directories of the team's own lm-eval task YAML files (one path or a list)."""
    include_defaults: bool = False
    """Also offer lm-eval's built-in tasks (their data come from the Hugging Face hub
    unless already in the local datasets cache); off keeps the sweep offline and quick."""
    num_fewshot: int | None = None
    """Few-shot examples per question; absent: each task's own default (0 if none)."""
    limit: int | None = None
    """Score only the first this many documents of each task (all when absent)."""
    batch_size: int = 8
    """Sequences per forward pass while scoring."""

    @property
    def include_paths(self) -> tuple[str, ...]:
        return (self.include_path,) if isinstance(self.include_path, str) else self.include_path

    def validate_spec(self) -> None:
        check(len(self.tasks) > 0, "tasks", "list at least one lm-eval task name")
        check(len(set(self.tasks)) == len(self.tasks), "tasks", "task names must not repeat")
        check(
            self.num_fewshot is None or self.num_fewshot >= 0,
            "num_fewshot",
            "must be 0 or more (or omitted for each task's default)",
        )
        check(
            self.limit is None or self.limit > 0,
            "limit",
            "must be a positive number of documents (or omitted for all)",
        )
        check(self.batch_size > 0, "batch_size", "must be a positive number of sequences")


class EvalSpec(SpecModel):
    """Held-out sets; neither may overlap any training pool."""

    domain: DataSpec
    """Held-out domain documents: the fitted metric's bits per byte is measured here."""
    general: DataSpec
    """Held-out general documents: forgetting is measured here."""
    max_tokens: int = 32768
    """Tokens evaluated per set (the first windows of the packed set); at least one
    window of ``train.seq_len`` tokens per worker."""
    every_steps: int = 0
    """Also evaluate bits per byte every this many optimizer steps during the anneal
    (reported as intermediate metrics and kept as the cell's ``eval_curve``); 0: only at
    the end."""
    tasks: tuple[TaskSpec, ...] = ()
    """Multiple-choice tasks scored at the end of each anneal (and on the base model)."""
    harness: HarnessSpec | None = None
    """lm-evaluation-harness tasks scored at the end of each anneal (and on the base
    model); our JSONL ``tasks`` run through the same harness."""

    def validate_spec(self) -> None:
        check(self.max_tokens > 0, "max_tokens", "must be a positive number of tokens")
        check(self.every_steps >= 0, "every_steps", "must be 0 (end only) or a step count")
        names = [t.name for t in self.tasks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        check(not dupes, "tasks", f"task names must be unique; repeated: {', '.join(dupes)}")
        both = sorted(set(names) & set(self.harness.tasks if self.harness else ()))
        check(
            not both,
            "tasks",
            f"{', '.join(both)}: also named in harness.tasks; their columns would collide, "
            "rename the JSONL task",
        )


class ScheduleSpec(SpecModel):
    """Learning-rate schedule of the anneal."""

    kind: Literal["linear", "wsd"] = "linear"
    """``linear``: warmup then linear decay to zero (the Llama 3 anneal). ``wsd``:
    warmup, constant, then a cooldown over the last ``cooldown_fraction`` of the run
    (Hägele et al. 2024); cells that differ only in training tokens branch off one
    constant-rate trunk when ``share_trunk`` is on."""
    peak_lr: float
    """Learning rate at the end of warmup."""
    warmup_fraction: float = 0.05
    """``linear`` only: fraction of optimizer steps spent warming up."""
    warmup_steps: int = 0
    """``wsd`` only: warmup length in optimizer steps, the same for every budget so that
    all budgets share the trunk."""
    cooldown_fraction: float = 0.2
    """``wsd`` only: fraction of each run's optimizer steps spent cooling down to zero
    (rounded to whole steps, at least one)."""
    cooldown_shape: Literal["linear", "1-sqrt"] = "linear"
    """``wsd`` only: ``linear`` or ``1-sqrt`` decay from the peak to zero."""
    share_trunk: bool = True
    """``wsd`` only: train the constant-rate trunk once per (source, spend, seed) and run
    each budget's cooldown from its checkpoint; off runs every cell from the base model."""

    def validate_spec(self) -> None:
        check(0 < self.peak_lr < 1, "peak_lr", f"must be in (0, 1), got {self.peak_lr}")
        check(
            0 <= self.warmup_fraction < 1,
            "warmup_fraction",
            f"must be in [0, 1), got {self.warmup_fraction}",
        )
        check(self.warmup_steps >= 0, "warmup_steps", "must be a non-negative number of steps")
        check(
            0 < self.cooldown_fraction < 1,
            "cooldown_fraction",
            f"must be in (0, 1), got {self.cooldown_fraction}",
        )
        if self.kind == "linear":
            check(
                self.warmup_steps == 0,
                "warmup_steps",
                "applies to kind wsd only; use warmup_fraction with kind linear",
            )


class OptimizerSpec(SpecModel):
    """The optimizer built when no DeepSpeed JSON names one; its peak learning rate is
    ``schedule.peak_lr`` and its weight decay ``train.weight_decay``."""

    name: Literal["adamw", "adam"] = "adamw"
    """``adamw``: decoupled weight decay; ``adam``: no weight decay."""
    betas: tuple[float, float] = (0.9, 0.95)
    """Adam moment decay rates (beta1, beta2)."""
    eps: float = 1e-8
    """Adam denominator epsilon."""

    def validate_spec(self) -> None:
        check(
            len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
            "betas",
            f"must be two numbers in [0, 1), got {list(self.betas)}",
        )
        check(self.eps > 0, "eps", f"must be positive, got {self.eps}")


class TrainSpec(SpecModel):
    """Optimisation settings; the global batch is fixed so results do not depend on how
    many workers share it."""

    seq_len: int = 128
    """Context length of training windows (tokens)."""
    batch_size: int = 32
    """Global batch (sequences per optimizer step across all workers)."""
    micro_batch_size: int = 8
    """Sequences per worker per forward pass; gradient accumulation makes up the rest."""
    zero_stage: int = 1
    """DeepSpeed ZeRO stage (0 to 3)."""
    weight_decay: float = Field(0.1, allow_inf_nan=True)
    """AdamW decoupled weight decay (per step, multiplied by the learning rate). Unlike
    other spec numbers it may be ``inf``: such an anneal diverges and its cell is recorded
    as failed (diverged), the documented way to see that path."""
    grad_clip: float = 1.0
    """Gradient-norm clipping threshold (0 disables)."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """``auto``: bf16 on GPUs, fp32 on CPU; ``bf16`` also on CPU (DeepSpeed's CPU backend);
    ``fp32`` casts a bf16 checkpoint's weights to fp32."""
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    """The optimizer built when ``deepspeed_config`` names none."""
    deepspeed_config: str | None = None
    """A DeepSpeed JSON file passed through (validated; batch sizes must agree with this
    section; what it leaves out is filled from this section)."""
    activation_checkpointing: bool | None = None
    """Recompute each decoder layer's activations in the backward pass instead of keeping
    them (about a third more compute, far less memory). Absent: on when the memory planner
    says a GPU run needs it, off otherwise. Not part of any identity (same result)."""
    offload_optimizer: bool = False
    """Keep the optimizer states in host memory (DeepSpeed ``offload_optimizer``, ZeRO 1-3):
    frees 12 bytes per parameter of GPU memory, slows each step. Not part of any identity."""

    EXECUTION_ONLY: ClassVar[tuple[str, ...]] = (
        "zero_stage",
        "micro_batch_size",
        "activation_checkpointing",
        "offload_optimizer",
    )
    """Fields that change how an anneal runs but not its result, left out of identities: the
    ZeRO stage and offload shard or move optimizer state, the micro-batch sets gradient
    accumulation and activation checkpointing recomputes; none changes the optimizer step
    taken on the fixed global batch (up to floating-point summation order)."""

    def validate_spec(self) -> None:
        check(self.seq_len >= 8, "seq_len", f"must be at least 8 tokens, got {self.seq_len}")
        check(self.batch_size > 0, "batch_size", "must be a positive number of sequences")
        check(self.micro_batch_size > 0, "micro_batch_size", "must be positive")
        check(
            self.batch_size % self.micro_batch_size == 0,
            "batch_size",
            f"must be a multiple of micro_batch_size ({self.micro_batch_size}), "
            f"got {self.batch_size}",
        )
        check(self.zero_stage in (0, 1, 2, 3), "zero_stage", "must be 0, 1, 2 or 3")
        check(self.weight_decay >= 0, "weight_decay", "must be non-negative")
        check(self.grad_clip >= 0, "grad_clip", "must be non-negative (0 disables)")

    @property
    def tokens_per_step(self) -> int:
        """Tokens predicted per optimizer step."""
        return self.batch_size * self.seq_len


class CheckpointSpec(SpecModel):
    """Periodic checkpoints of each anneal, for recovery from a lost worker.

    Not part of any cell's identity: checkpoints change where a restarted anneal resumes,
    not its result.
    """

    every_steps: int | None = None
    """Checkpoint every this many optimizer steps (None: see ``every_tokens``)."""
    every_tokens: int | None = None
    """Checkpoint every this many training tokens, rounded down to whole steps (at least
    one). Neither set: no periodic checkpoints, and a lost worker restarts its anneal."""
    keep: int = 2
    """Checkpoints kept per anneal (the newest); trunk branch points are always kept."""

    def validate_spec(self) -> None:
        check(
            self.every_steps is None or self.every_tokens is None,
            "every_steps",
            "give every_steps or every_tokens, not both",
        )
        check(
            self.every_steps is None or self.every_steps > 0,
            "every_steps",
            "must be a positive number of optimizer steps",
        )
        check(
            self.every_tokens is None or self.every_tokens > 0,
            "every_tokens",
            "must be a positive number of tokens",
        )
        check(self.keep >= 1, "keep", "must keep at least one checkpoint")

    def interval_steps(self, tokens_per_step: int) -> int:
        """Steps between checkpoints; 0 when periodic checkpoints are off."""
        if self.every_steps is not None:
            return self.every_steps
        if self.every_tokens is not None:
            return max(1, self.every_tokens // tokens_per_step)
        return 0


class PricesSpec(SpecModel):
    """Prices that turn compute into money, so every cost is reported in both."""

    usd_per_pflop: float
    """Price of 10^15 FLOPs of training or evaluation compute (USD)."""

    def validate_spec(self) -> None:
        check(self.usd_per_pflop > 0, "usd_per_pflop", "must be positive (USD per PFLOP)")
