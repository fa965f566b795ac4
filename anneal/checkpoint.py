"""Worker-side checkpoints: save and restore everything an anneal needs to continue.

A checkpoint holds the DeepSpeed engine state (model, optimizer and learning-rate
scheduler; under ZeRO each rank writes its own optimizer shard) plus, per rank, the step
reached, the rows each data stream has handed out and the RNG states. Every rank writes
into its own local directory and reports it through ``ray.train.report``; Ray Train
merges the ranks' files into one checkpoint directory in storage (file names carry the
rank, so they never collide).

The data streams are deterministic given the seed (ordered reads, seeded local shuffle),
so a restored worker rebuilds them and skips the rows already consumed: no sequence is
seen twice or skipped.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from annealscale.core.processes import pid_alive

TAG = "state"
"""DeepSpeed checkpoint tag: the engine's files live in ``<checkpoint>/state/``."""


@dataclass(frozen=True, kw_only=True)
class WorkerState:
    """Where one rank stands; written beside the engine state."""

    step: int
    """Optimizer steps completed."""
    domain_rows: int
    """Rows the domain stream has handed out."""
    replay_rows: int
    """Rows the replay stream has handed out."""
    restarts: int = 0
    """Times this anneal was restored from its own checkpoint (worker failures)."""


@dataclass(frozen=True, kw_only=True)
class Start:
    """Where an attempt begins."""

    state: WorkerState
    origin: str
    """``base`` (the base model), ``branch`` (a trunk checkpoint) or ``restore`` (this run's
    own checkpoint, after a failure)."""


def save(engine, state: WorkerState, rank: int) -> Path:
    """Write a checkpoint of ``engine`` and ``state`` into a fresh local directory."""
    import torch

    remove_stale_staging()
    directory = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-{state.step}-"))
    engine.save_checkpoint(str(directory), tag=TAG)
    (directory / f"worker-{rank}.json").write_text(json.dumps(state.__dict__))
    torch.save(
        {
            "torch": torch.get_rng_state(),
            "numpy": np.random.get_state(),
            "python": random.getstate(),
        },
        directory / f"rng-{rank}.pt",
    )
    return directory


def load(engine, directory: str | Path, rank: int, *, restore_rng: bool) -> WorkerState:
    """Load ``engine`` from a checkpoint directory and return this rank's state.

    ``restore_rng``: a restored run continues its own RNG streams; a branch from a trunk
    keeps the RNG its own seed gave it, like an independent run would.
    """
    import torch

    directory = Path(directory)
    path, _ = engine.load_checkpoint(str(directory), tag=TAG)
    if path is None:
        raise FileNotFoundError(f"no DeepSpeed checkpoint under {directory / TAG}")
    state = WorkerState(**json.loads((directory / f"worker-{rank}.json").read_text()))
    if restore_rng:
        rng = torch.load(directory / f"rng-{rank}.pt", weights_only=False)
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
    return state


def discard(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


STAGING_PREFIX = "anneal-ckpt-"
"""Local directories a checkpoint is written to before it is reported, named
``anneal-ckpt-<pid>-<step>-<random>`` in the temporary directory."""


def remove_stale_staging(root: str | Path | None = None) -> list[Path]:
    """Remove the staging directories of processes that no longer run; the removed.

    A worker killed between writing a checkpoint and reporting it (a preemption, the
    out-of-memory killer) leaves its staging directory behind, at real scale a rank's
    share of the model and optimizer state; the next checkpoint on the node removes it.
    A directory whose process id is alive again under another process is kept (never
    another anneal's live checkpoint)."""
    removed = []
    for path in Path(root or tempfile.gettempdir()).glob(f"{STAGING_PREFIX}*"):
        fields = path.name[len(STAGING_PREFIX) :].split("-")
        if len(fields) != 3 or not (fields[0].isdigit() and fields[1].isdigit()):
            continue  # not ours, or named before the process id was in the name
        if pid_alive(int(fields[0])):
            continue
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            removed.append(path)
    return removed


def checkpoint_name(step: int) -> str:
    """Storage directory name of the checkpoint taken after ``step`` steps."""
    return f"step-{step:08d}"
