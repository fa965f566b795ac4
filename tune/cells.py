"""Cells: the (source, curation spend, training tokens, seed) points of a sweep.

A cell's identity is a short hash of everything that changes its result: the source's
definition (not its display name), the spend, the tokens, the seed, and the experiment
settings shared by all cells (base model, replay and eval data, mixture, schedule,
optimisation). Resources, storage and the experiment name are deliberately left out, so
moving a sweep to another cluster never reruns a finished cell.
"""

from __future__ import annotations

from dataclasses import dataclass

from anneal.config import content_hash
from tune.spec import ExperimentSpec


@dataclass(frozen=True, kw_only=True)
class Cell:
    source: str
    """Source name (display)."""
    source_identity: str
    curation_spend: float
    """USD."""
    train_tokens: int
    """Requested training tokens."""
    seed: int
    identity: str
    """Hash naming this cell's result."""


def shared_identity(spec: ExperimentSpec) -> str:
    """Hash of the settings every cell of ``spec`` shares."""
    return content_hash(
        {
            "base_model": spec.base_model,
            "replay": spec.replay,
            "eval": spec.eval,
            "domain_fraction": spec.domain_fraction,
            "schedule": spec.schedule,
            "train": spec.train,
            "prices": spec.prices,
        }
    )


def expand_grid(spec: ExperimentSpec) -> list[Cell]:
    """All cells of the spec in a stable order: source, spend, tokens, seed."""
    shared = shared_identity(spec)
    cells = []
    for source in spec.sources:
        for spend in spec.spends_for(source):
            for tokens in spec.grid.train_tokens:
                for seed in spec.grid.seeds:
                    identity = content_hash([shared, source.identity, spend, tokens, seed])
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
