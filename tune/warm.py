"""Warm single-worker cells: the anneal runs inside the Ray Tune trial's own process.

A cell with one worker needs no Ray Train run: Tune keeps its trial processes across
cells (``reuse_actors=True``), so torch, transformers and DeepSpeed are imported once per
process instead of once per cell, and a fresh Train controller and worker (7.6 s of a
13.8 s fixed cost per cell, measured) are never started. The loop is the same function
(`anneal.loop.anneal`); only who starts the process differs.

What this process keeps for its life: one world-size-1 process group (DeepSpeed reads
``RANK``/``LOCAL_RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT`` and caches group
handles in module globals, so the group is never destroyed and recreated).

Checkpoints are written and found here, under the same run directory a Train run of the
same name would use::

    <storage>/<run name>/step-<8 digits>/     one checkpoint (engine state, rank files)
    <storage>/<run name>/step-.../_complete   written last: the checkpoint is whole

A retried or resumed trial finds its run's latest complete checkpoint by name, as Train
would; ``keep`` newest are kept. What the warm path gives up: Train's in-trial worker
restarts. A lost process is a failed Tune trial, retried (``trial_failures +
worker_failures`` times) from the last checkpoint in a new process.
"""

from __future__ import annotations

import os
import socket
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.fs as pafs

from annealscale.anneal.checkpoint import checkpoint_name
from annealscale.tune.storage import filesystem

COMPLETE = "_complete"
"""Marker written into a checkpoint directory after all its files."""
STEP_PREFIX = "step-"


def ensure_process_group(backend: str) -> None:
    """Start this process's world-size-1 process group once; later calls reuse it."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return
    # DeepSpeed's comm layer requires these, else it tries MPI discovery
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    # An in-process store: a world of one needs no rendezvous and holds no port.
    dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RunCheckpoints:
    """The checkpoints of one run directory (local or URI), by step."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir.rstrip("/")
        self.fs, self._path = filesystem(self.run_dir)

    def _check_directory(self) -> None:
        if self.fs.get_file_info(self._path).type == pafs.FileType.File:
            raise NotADirectoryError(f"checkpoint directory {self.run_dir} is a file")

    def steps(self) -> dict[int, str]:
        """Complete checkpoints: step -> directory path (as the filesystem names it)."""
        self._check_directory()
        selector = pafs.FileSelector(self._path, allow_not_found=True)
        found = {}
        for info in self.fs.get_file_info(selector):
            name = info.base_name
            if info.type != pafs.FileType.Directory or not name.startswith(STEP_PREFIX):
                continue
            marker = self.fs.get_file_info(f"{info.path}/{COMPLETE}")
            if marker.type == pafs.FileType.File:
                found[int(name[len(STEP_PREFIX) :])] = info.path
        return dict(sorted(found.items()))

    def save(self, local: Path, step: int, keep: int | None) -> str:
        """Store the local checkpoint directory ``local`` as step ``step``; keep the
        ``keep`` newest (all when None)."""
        self._check_directory()
        target = f"{self._path}/{checkpoint_name(step)}"
        self.fs.create_dir(target, recursive=True)
        pafs.copy_files(
            str(local),
            target,
            source_filesystem=pafs.LocalFileSystem(),
            destination_filesystem=self.fs,
        )
        with self.fs.open_output_stream(f"{target}/{COMPLETE}") as out:
            out.write(b"")
        if keep is not None:
            for old in list(self.steps().values())[:-keep]:
                self.fs.delete_dir(old)
        return target

    @contextmanager
    def latest(self):
        """The newest complete checkpoint as a local directory, or None."""
        steps = self.steps()
        if not steps:
            yield None
            return
        path = steps[max(steps)]
        if isinstance(self.fs, pafs.LocalFileSystem):
            yield path
            return
        with tempfile.TemporaryDirectory(prefix="warm-restore-") as tmp:
            pafs.copy_files(
                path, tmp, source_filesystem=self.fs, destination_filesystem=pafs.LocalFileSystem()
            )
            yield tmp


@dataclass
class WarmResult:
    """What `fit_in_process` returns, shaped like the parts of a Train `Result` that
    `tune.trial` and `tune.trunks` read."""

    metrics: dict = field(default_factory=dict)
    best_checkpoints: list = field(default_factory=list)
    """``(checkpoint, metrics)`` of every checkpoint kept, oldest first."""


class WarmSession:
    """`anneal.session.Session` of a single-worker anneal in this Tune trial's process."""

    rank = 0
    world_size = 1

    def __init__(
        self, datasets: dict, checkpoints: RunCheckpoints, keep: int | None, forward: bool
    ):
        self._datasets = datasets
        self._checkpoints = checkpoints
        self._keep = keep
        self._forward = forward
        self.last_metrics: dict = {}

    def dataset(self, name: str):
        return self._datasets[name]

    def restored(self):
        return self._checkpoints.latest()

    def report(self, metrics: dict, *, checkpoint: Path | None = None, name: str | None = None):
        if checkpoint is not None:
            self._checkpoints.save(Path(checkpoint), int(metrics["step"]), self._keep)
        self.last_metrics = dict(metrics)
        if self._forward:
            from ray import tune

            tune.report(dict(metrics))


def fit_in_process(
    job, *, run_dir: str, keep: int | None, datasets: dict, backend: str, forward: bool
) -> WarmResult:
    """Run ``job`` in this process, its checkpoints under ``run_dir``; ``forward``:
    report its metrics to the Tune trial as they come (the cell's own run, not a trunk)."""
    from ray import tune

    from annealscale.anneal.loop import anneal

    ensure_process_group(backend)
    checkpoints = RunCheckpoints(run_dir)
    session = WarmSession(datasets, checkpoints, keep, forward)
    anneal(job, session)
    kept = [
        (tune.Checkpoint(path, filesystem=checkpoints.fs), {"step": step})
        for step, path in checkpoints.steps().items()
    ]
    return WarmResult(metrics=session.last_metrics, best_checkpoints=kept)
