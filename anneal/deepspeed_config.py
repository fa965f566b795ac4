"""The DeepSpeed configuration of an anneal: built from the spec, or a user's JSON passed
through after validation.

The spec's ``train`` section fixes the global batch, the micro-batch, clipping, the
optimizer and the precision; `deepspeed_config` turns it into DeepSpeed's dictionary for a
given number of data-parallel workers. A user's JSON (``train.deepspeed_config``) is the
starting point when given: its sections are checked against DeepSpeed's own pydantic models
(unknown keys rejected, with a close-match suggestion), its batch sizes must agree with the
spec, and what it leaves out is filled from the spec. Every problem is one line naming the
file and the field.
"""

from __future__ import annotations

import difflib
import json
import logging
from pathlib import Path

from annealscale.anneal.run_spec import TrainSpec
from annealscale.core.errors import AnnealscaleError

log = logging.getLogger(__name__)

KNOWN_TOP_LEVEL = frozenset(
    {
        "train_batch_size",
        "train_micro_batch_size_per_gpu",
        "gradient_accumulation_steps",
        "gradient_clipping",
        "optimizer",
        "zero_optimization",
        "zero_allow_untested_optimizer",
        "zero_force_ds_cpu_optimizer",
        "bf16",
        "bfloat16",
        "fp16",
        "torch_autocast",
        "communication_data_type",
        "prescale_gradients",
        "gradient_predivide_factor",
        "gradient_allreduce_op",
        "steps_per_print",
        "wall_clock_breakdown",
        "memory_breakdown",
        "dump_state",
        "disable_allgather",
        "activation_checkpointing",
        "flops_profiler",
        "comms_logger",
        "tensorboard",
        "wandb",
        "csv_monitor",
        "aio",
        "compile",
        "data_types",
        "checkpoint",
        "seq_parallel_communication_data_type",
        "disable_python_gc",
    }
)
"""Top-level DeepSpeed keys a user JSON may hold. DeepSpeed itself ignores unknown top-level
keys, so a misspelled one would silently fall back to its default; here it is an error."""

OWNED_BY_SPEC = {
    "scheduler": "the learning-rate schedule comes from the spec's schedule section",
}
"""Keys a user JSON may not set, with the reason (the anneal's method depends on them)."""

_SECTION_MODELS = {
    "zero_optimization": ("deepspeed.runtime.zero.config", "DeepSpeedZeroConfig"),
    "bf16": ("deepspeed.runtime.precision_config", "DeepSpeedBF16Config"),
    "bfloat16": ("deepspeed.runtime.precision_config", "DeepSpeedBF16Config"),
    "fp16": ("deepspeed.runtime.precision_config", "DeepSpeedFP16Config"),
}
"""Sections validated against DeepSpeed's own pydantic models (they forbid extra keys)."""

_OPTIMIZER_KEYS = frozenset({"type", "params", "legacy_fusion"})


def uses_bf16(train: TrainSpec, *, use_gpu: bool) -> bool:
    """bf16 when asked for (on GPUs and on CPUs alike: DeepSpeed's CPU backend trains
    bf16 over gloo), and by default on GPUs; fp32 otherwise."""
    if train.precision == "bf16":
        return True
    return use_gpu and train.precision == "auto"


def load_user_config(path: str) -> dict:
    """Read and validate the user's DeepSpeed JSON at ``path`` (one-line errors)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise AnnealscaleError(
            f"train.deepspeed_config: '{path}' is not a file; give a DeepSpeed JSON file"
        )
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise AnnealscaleError(f"{path}: not valid JSON (line {err.lineno}): {err.msg}") from None
    if not isinstance(data, dict):
        raise AnnealscaleError(f"{path}: expected a JSON object of DeepSpeed settings")
    validate_user_config(data, path)
    return data


def validate_user_config(data: dict, source: str) -> None:
    """Reject unknown or spec-owned keys and invalid sections of a user DeepSpeed config."""
    for key, value in data.items():
        if key in OWNED_BY_SPEC:
            raise AnnealscaleError(f"{source}: {key}: not allowed here; {OWNED_BY_SPEC[key]}")
        if key not in KNOWN_TOP_LEVEL:
            raise AnnealscaleError(
                f"{source}: {key}: unknown DeepSpeed field{_suggest(key, KNOWN_TOP_LEVEL)}"
            )
        if key in _SECTION_MODELS:
            _validate_section(key, value, source)
    optimizer = data.get("optimizer")
    if optimizer is not None:
        if not isinstance(optimizer, dict) or "type" not in optimizer:
            raise AnnealscaleError(f"{source}: optimizer: expected an object with a 'type'")
        for key in optimizer:
            if key not in _OPTIMIZER_KEYS:
                raise AnnealscaleError(
                    f"{source}: optimizer.{key}: unknown DeepSpeed field"
                    f"{_suggest(key, _OPTIMIZER_KEYS)}"
                )
        if "lr" in optimizer.get("params", {}):
            raise AnnealscaleError(
                f"{source}: optimizer.params.lr: not allowed here; the peak learning rate is "
                "the spec's schedule.peak_lr"
            )


def deepspeed_config(
    train: TrainSpec,
    *,
    world_size: int,
    bf16: bool,
    user: dict | None = None,
    source: str = "train.deepspeed_config",
    peak_lr: float | None = None,
) -> dict:
    """DeepSpeed's dictionary for ``world_size`` data-parallel workers.

    ``user`` (an already validated JSON) is the base; its batch sizes must match the spec's
    ``train.batch_size`` and ``train.micro_batch_size`` with the accumulation they imply.
    ``peak_lr`` is written into a user optimizer section, whose base learning rate the
    schedule then scales.
    """
    shard = train.micro_batch_size * world_size
    if train.batch_size % shard:
        raise AnnealscaleError(
            f"train.batch_size: {train.batch_size} is not a multiple of micro_batch_size x "
            f"workers ({train.micro_batch_size} x {world_size})"
        )
    accum = train.batch_size // shard
    derived = {
        "train_batch_size": train.batch_size,
        "train_micro_batch_size_per_gpu": train.micro_batch_size,
        "gradient_accumulation_steps": accum,
    }
    config = dict(user or {})
    for key, value in derived.items():
        if key in config and config[key] != value:
            raise AnnealscaleError(
                f"{source}: {key}: {config[key]} disagrees with the spec's train section "
                f"({value} with batch_size={train.batch_size}, micro_batch_size="
                f"{train.micro_batch_size}, {world_size} workers); remove it or make them agree"
            )
    config.update(derived)
    config.setdefault("gradient_clipping", train.grad_clip)
    zero = dict(config.get("zero_optimization", {}))
    zero.setdefault("stage", train.zero_stage)
    if train.offload_optimizer:
        # DeepSpeed's CPU Adam steps the offloaded states; it builds it from this section
        zero.setdefault("offload_optimizer", {"device": "cpu"})
        config.setdefault("optimizer", _optimizer_section(train))
    config["zero_optimization"] = zero
    if not any(key in config for key in ("bf16", "bfloat16", "fp16")):
        config["bf16"] = {"enabled": bf16}
    if "optimizer" in config:
        optimizer = dict(config["optimizer"])
        optimizer["params"] = {**optimizer.get("params", {}), "lr": peak_lr}
        config["optimizer"] = optimizer
    else:
        # Our own torch optimizer is handed to DeepSpeed (`build_optimizer`).
        config["zero_allow_untested_optimizer"] = True
    config.setdefault("steps_per_print", 10**9)
    config.setdefault("wall_clock_breakdown", False)
    return config


def _optimizer_section(train: TrainSpec) -> dict:
    """The spec's optimizer as a DeepSpeed ``optimizer`` section (its lr is filled in)."""
    spec = train.optimizer
    adamw = spec.name == "adamw"
    return {
        "type": "AdamW" if adamw else "Adam",
        "params": {
            "betas": list(spec.betas),
            "eps": spec.eps,
            "weight_decay": train.weight_decay if adamw else 0.0,
        },
    }


def build_optimizer(train: TrainSpec, parameters, *, peak_lr: float):
    """The spec's torch optimizer (used when the DeepSpeed config names none)."""
    import torch

    spec = train.optimizer
    if spec.name == "adamw":
        return torch.optim.AdamW(
            parameters,
            lr=peak_lr,
            betas=tuple(spec.betas),
            eps=spec.eps,
            weight_decay=train.weight_decay,
        )
    return torch.optim.Adam(
        parameters, lr=peak_lr, betas=tuple(spec.betas), eps=spec.eps, weight_decay=0.0
    )


def _validate_section(key: str, value, source: str) -> None:
    import importlib

    import pydantic

    if not isinstance(value, dict):
        raise AnnealscaleError(f"{source}: {key}: expected an object")
    module, name = _SECTION_MODELS[key]
    model = getattr(importlib.import_module(module), name)
    try:
        model(**value)
    except pydantic.ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in (key, *first["loc"]))
        if first["type"] == "extra_forbidden":
            known = set(model.model_fields) | {
                f.alias for f in model.model_fields.values() if f.alias
            }
            problem = f"unknown DeepSpeed field{_suggest(str(first['loc'][-1]), known)}"
        else:
            problem = f"{first['msg']} (got {first.get('input')!r})"
        raise AnnealscaleError(f"{source}: {where}: {problem}") from None


def _suggest(key: str, known) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""
