"""How much storage a sweep's checkpoints take at their peak, before it runs.

A checkpoint of one anneal is what DeepSpeed saves for it, summed over ranks: the model
weights in their training precision, written once unless ZeRO-3 shards them away (ZeRO-3
saves only the partitioned optimizer state), plus the optimizer state (Adam's two moments
and, in mixed precision, an fp32 master copy of the weights). An 8B model is then ~112 GB
with ZeRO-1/2 in bf16 (14 bytes per parameter) and ~96 GB with ZeRO-3 (12).

`checkpoint_bytes` is the one place that sizes a checkpoint; the model's size comes from
the memory planner (`anneal.memory_plan.model_dims`), the one place that counts it.
`sweep_peak` counts the checkpoints that exist at once under the spec's checkpoint and
retention settings (`tune.retention`), an upper bound: running cells each hold ``keep``
checkpoints plus the one being written, finished cells what retention keeps, WSD trunks
every branch point until their last branch finishes.
"""

from __future__ import annotations

from dataclasses import dataclass

GB = 1e9


def checkpoint_bytes(params: int, zero_stage: int, mixed_precision: bool) -> int:
    """Bytes of one anneal's checkpoint (all ranks together) for ``params`` parameters."""
    optimizer = 12 if mixed_precision else 8  # fp32 master + Adam m, v; or m, v only
    weights = 0 if zero_stage == 3 else (2 if mixed_precision else 4)
    return int(params * (weights + optimizer))


def model_params(path: str, trust_remote_code: bool = False) -> int | None:
    """Parameters of the model at ``path`` from its config alone, as the memory planner
    counts them (`anneal.memory_plan.model_dims`: meta device, no weights); None for a
    ``demo:`` model, which is built on first use."""
    if path.startswith("demo:"):
        return None
    from annealscale.anneal.memory_plan import model_dims
    from annealscale.anneal.model import load_model_config

    config = load_model_config(path, trust_remote_code)
    return model_dims(config, trust_remote_code=trust_remote_code).params


@dataclass(frozen=True)
class StoragePeak:
    checkpoints: int
    """Checkpoints on storage at the peak (an upper bound)."""
    running: int
    finished: int
    trunks: int
    checkpoint_bytes: int | None
    """Bytes of one checkpoint; None when the model's size is not known before it runs."""

    @property
    def peak_bytes(self) -> int | None:
        if self.checkpoint_bytes is None:
            return None
        return self.checkpoints * self.checkpoint_bytes

    def line(self) -> str:
        parts = f"{self.running} running + {self.finished} kept by finished cells"
        parts += f" + {self.trunks} trunk branch points" if self.trunks else ""
        if self.checkpoint_bytes is None:
            return f"peak storage: {self.checkpoints} checkpoints ({parts}); size unknown"
        return (
            f"peak storage: {self.peak_bytes / GB:,.1f} GB = {self.checkpoints} checkpoints "
            f"({parts}) x {self.checkpoint_bytes / GB:,.2f} GB"
        )


def sweep_peak(spec, params: int | None) -> StoragePeak:
    """Upper bound on the checkpoints of ``spec``'s sweep that exist at once."""
    from annealscale.tune.cells import expand_grid

    cells = expand_grid(spec)
    n = len(cells)
    concurrency = min(spec.resources.max_concurrent_trials or n, n)
    periodic = spec.checkpoint.interval_steps(spec.train.tokens_per_step) > 0
    keep, retention = spec.checkpoint.keep, spec.retention
    per_running = (keep + 1) if periodic else int(retention.keep_final)
    if retention.keep_final:
        per_finished = 1
    elif retention.delete_checkpoints:
        per_finished = 0
    else:
        per_finished = keep if periodic else 0
    trunks = 0
    schedule = spec.schedule
    if schedule.kind == "wsd" and schedule.share_trunk:
        budgets = len(spec.grid.train_tokens)
        trunks = len({(c.source, c.curation_spend, c.seed) for c in cells}) * budgets
    mixed = spec.train.precision == "bf16" or (
        spec.train.precision == "auto" and spec.resources.gpus_per_worker > 0
    )
    size = None if params is None else checkpoint_bytes(params, spec.train.zero_stage, mixed)
    return StoragePeak(
        checkpoints=concurrency * per_running + n * per_finished + trunks,
        running=concurrency * per_running,
        finished=n * per_finished,
        trunks=trunks,
        checkpoint_bytes=size,
    )
