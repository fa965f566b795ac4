"""The plan types a sweep passes from preparation to its trials: what one cell runs
(`CellPlan`), the whole sweep's cells (`SweepPlan`), the identities of the files a spec
names (`InputsIdentity`) and a cell's place on a WSD trunk (`TrunkPlan`).

`tune.prepare` builds them, `tune.trunks` attaches trunks, `tune.trial` runs them; they
live here so that none of those imports another for its types.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from annealscale.anneal.loop import AnnealJob
from annealscale.tune.cells import Cell


@dataclass(frozen=True, kw_only=True)
class TrunkPlan:
    """A cell's place on its trunk."""

    identity: str
    """Hash of everything the trunk depends on: all the cell's identity but its budget."""
    branch_step: int
    """Steps of trunk this cell's cooldown starts from."""
    targets: tuple[int, ...]
    """Branch points the cells of this sweep need on this trunk (sorted)."""
    tokens_per_step: int


@dataclass(frozen=True, kw_only=True)
class CellPlan:
    """One cell, ready to run: the worker's job, its datasets and its static row."""

    cell: Cell
    job: AnnealJob
    domain_dir: str
    replay_dir: str
    replay_rows: int
    """Replay windows the anneal consumes; the replay read stops there."""
    row: dict
    """Columns known before training: source, spend, pool and cost ledger."""
    trunk: TrunkPlan | None = None
    """The WSD trunk this cell branches from (`tune.trunks.attach_trunks`); None: the cell
    trains from the base model."""
    checkpoints_kept: int = 2
    """Newest periodic checkpoints kept in storage for this cell's Train run."""


@dataclass(frozen=True, kw_only=True)
class SweepPlan:
    cells: list[CellPlan]
    failed: dict[str, str] = field(default_factory=dict)
    """Cells whose pool could not be curated or packed: identity -> the one-line error.
    They are recorded as failed; the other cells still run."""


@dataclass(frozen=True)
class InputsIdentity:
    """Identities of the files a spec's paths resolve to (see `tune.cells`)."""

    shared: str
    """Base model, replay and evaluation files."""
    per_source: dict[str, str]
    """Each source's input files, by source name."""
