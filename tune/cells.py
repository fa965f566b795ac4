"""Cells: the (source, curation spend, training tokens, seed) points of a sweep.

A cell's identity is a short hash of what determines its measured metrics: the source's
definition (not its display name), the spend, the training tokens as whole optimizer
steps, the seed, the experiment settings shared by all cells (mixture, schedule,
optimisation with the *resolved* precision, eval size) and the identity of the *resolved*
inputs (base model, data, task and DeepSpeed files, see `tune.prepare.inputs_identity`),
so rebuilt demo assets, an edited task file or a replaced checkpoint never reuse stale
results. Resources, storage, the experiment name and prices are left out, and so are the
ZeRO stage and the micro-batch size (how the fixed global batch is split and sharded, not
what it computes): moving a sweep to another cluster, repricing compute or fitting a
bigger model in memory never reruns a finished cell (costs are recomputed from the stored
FLOPs). ``tests/tune/test_identity_contract.py`` declares the side of every spec field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from annealscale.core.hashing import content_hash, to_plain
from annealscale.tune.spec import ExperimentSpec


@dataclass(frozen=True, kw_only=True)
class Cell:
    source: str
    """Source name (display)."""
    source_identity: str
    """Hash of the source's kind and parameters (`anneal.sources.SourceSpec.identity`)."""
    curation_spend: float
    """USD."""
    train_tokens: int
    """Requested training tokens."""
    seed: int
    identity: str
    """Hash naming this cell's result."""


def resolved_precision(spec: ExperimentSpec) -> str:
    """The precision the anneals train in (`anneal.deepspeed_config.uses_bf16`): ``auto``
    is bf16 on GPU workers and fp32 on CPU ones; ``bf16`` is bf16 on both."""
    from annealscale.anneal.deepspeed_config import uses_bf16

    on_gpu = spec.resources.gpus_per_worker > 0
    return "bf16" if uses_bf16(spec.train, use_gpu=on_gpu) else "fp32"


UNUSED_BY_SCHEDULE = {
    "linear": ("warmup_steps", "cooldown_fraction", "cooldown_shape", "share_trunk"),
    "wsd": ("warmup_fraction",),
}
"""``schedule`` fields the other kind reads; left out of identities under this kind."""


def shared_identity(spec: ExperimentSpec) -> str:
    """Hash of the settings every cell of ``spec`` shares."""
    train = to_plain(spec.train)
    for name in spec.train.EXECUTION_ONLY:
        del train[name]
    train["precision"] = resolved_precision(spec)
    schedule = to_plain(spec.schedule)
    for name in UNUSED_BY_SCHEDULE[spec.schedule.kind]:
        del schedule[name]
    return content_hash(
        {
            "base_model": spec.base_model,
            "replay": spec.replay,
            "eval": spec.eval,
            "domain_fraction": spec.domain_fraction,
            "schedule": schedule,
            "train": train,
        }
    )


def expand_grid(
    spec: ExperimentSpec, inputs: str = "", source_inputs: Mapping[str, str] | None = None
) -> list[Cell]:
    """All cells of the spec in a stable order: source, spend, tokens, seed.

    ``inputs`` and ``source_inputs`` (by source name) are identities of the resolved input
    files (`tune.prepare.inputs_identity`); without them, as in ``annealscale validate``,
    identities reflect the spec alone.
    """
    source_inputs = source_inputs or {}
    shared = content_hash([shared_identity(spec), inputs])
    per_step = spec.train.tokens_per_step
    cells = []
    for source in spec.sources:
        for spend in spec.spends_for(source):
            for tokens in spec.grid.train_tokens:
                for seed in spec.grid.seeds:
                    steps = tokens // per_step
                    source_id = [source.identity, source_inputs.get(source.name, "")]
                    identity = content_hash([shared, source_id, spend, steps, seed])
                    cells.append(
                        Cell(
                            source=source.name,
                            source_identity=source.identity,
                            curation_spend=float(spend),
                            train_tokens=int(tokens),
                            seed=int(seed),
                            identity=identity,
                        )
                    )
    return cells
